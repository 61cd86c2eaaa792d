//! Builds the three default plugins from source into components and embeds them, so
//! `fedwasm` works with no plugin directory and nothing prebuilt is checked in.

use std::path::{Path, PathBuf};

use fedwasm_pluginbuild::{build_component, PluginCrate};

const BUILT_INS: [&str; 3] = ["label-selector", "weighted-spread", "nearest-healthy"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest.parent().expect("host/ is inside the workspace");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let cargo = PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // A target dir of its own: the outer cargo holds the lock on the main one.
    let target_dir = wasm_target_dir(&out);

    for dir in ["sdk/src", "sdk/wit", "sdk/Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    let mut table = String::from("/// The default plugins, built from `plugins/` during the host build.\npub const BUILT_INS: &[(&str, &[u8])] = &[\n");
    for name in BUILT_INS {
        let dir = workspace.join("plugins").join(name);
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
        let krate = PluginCrate {
            dir,
            package: name.to_string(),
            features: Vec::new(),
        };
        let component = build_component(&cargo, &krate, &target_dir)
            .unwrap_or_else(|e| panic!("building the built-in plugin {name}: {e}"));
        let file = out.join(format!("{name}.wasm"));
        std::fs::write(&file, component).expect("writing into OUT_DIR");
        table.push_str(&format!(
            "    ({name:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.wasm\"))),\n"
        ));
    }
    table.push_str("];\n");
    std::fs::write(out.join("built_ins.rs"), table).expect("writing into OUT_DIR");
}

/// `<target>/wasm-plugins`, found from `OUT_DIR` = `<target>/<profile>/build/<pkg>/out`.
fn wasm_target_dir(out: &Path) -> PathBuf {
    out.ancestors()
        .nth(4)
        .map(|t| t.join("wasm-plugins"))
        .unwrap_or_else(|| out.join("wasm-plugins"))
}
