//! Builds the three default plugins from source into components and embeds them, so
//! `fedwasm` works with no plugin directory and nothing prebuilt is checked in.

use std::path::PathBuf;

use fedwasm_pluginbuild::{embed, PluginCrate};

const BUILT_INS: [&str; 3] = ["label-selector", "weighted-spread", "nearest-healthy"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest.parent().expect("host/ is inside the workspace");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    for dir in ["sdk/src", "sdk/wit", "sdk/Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    let mut table = String::from("/// The default plugins, built from `plugins/` during the host build.\npub const BUILT_INS: &[(&str, &[u8])] = &[\n");
    for name in BUILT_INS {
        let krate = PluginCrate {
            dir: workspace.join("plugins").join(name),
            package: name.to_string(),
            features: Vec::new(),
        };
        let bytes = embed(&krate, name, "wasm-plugins");
        table.push_str(&format!("    ({name:?}, {bytes}),\n"));
    }
    table.push_str("];\n");
    std::fs::write(out.join("built_ins.rs"), table).expect("writing into OUT_DIR");
}
