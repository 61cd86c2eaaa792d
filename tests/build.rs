//! Builds the misbehaving test plugins from source (never a checked-in blob) and
//! generates a constant per variant.

use std::path::PathBuf;

use fedwasm_pluginbuild::{build_component, PluginCrate};

/// (constant name, features)
const CHAOS_VARIANTS: [(&str, &[&str]); 5] = [
    ("CHAOS", &[]),
    ("CHAOS_ALWAYS_LOOP", &["always-loop"]),
    ("CHAOS_ALWAYS_HOG", &["always-hog"]),
    ("CHAOS_ALWAYS_TRAP", &["always-trap"]),
    ("CHAOS_ALWAYS_INVALID", &["always-invalid"]),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let cargo = PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("wasm-test-plugins"))
        .unwrap_or_else(|| out.join("wasm-test-plugins"));
    let chaos = manifest.join("plugins/chaos");
    for path in [
        "plugins/chaos/src",
        "plugins/chaos/Cargo.toml",
        "../sdk/src",
        "../sdk/wit",
    ] {
        println!("cargo:rerun-if-changed={}", manifest.join(path).display());
    }
    let mut consts = String::new();
    for (name, features) in CHAOS_VARIANTS {
        let krate = PluginCrate {
            dir: chaos.clone(),
            package: "chaos".into(),
            features: features.iter().map(|f| f.to_string()).collect(),
        };
        let bytes = build_component(&cargo, &krate, &target_dir)
            .unwrap_or_else(|e| panic!("building test plugin {name}: {e}"));
        let file = out.join(format!("{name}.wasm"));
        std::fs::write(&file, bytes).expect("writing into OUT_DIR");
        consts.push_str(&format!(
            "/// The chaos test plugin with features {features:?}.\npub const {name}: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.wasm\"));\n"
        ));
    }
    std::fs::write(out.join("test_plugins.rs"), consts).expect("writing into OUT_DIR");
}
