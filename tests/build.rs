//! Builds the misbehaving test plugins and the tutorial plugin from source (never a
//! checked-in blob) and generates a constant per variant.

use std::path::PathBuf;

use fedwasm_pluginbuild::{embed, PluginCrate};

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
    for path in ["../sdk/src", "../sdk/wit", "../host/wit", "plugins/legacy"] {
        println!("cargo:rerun-if-changed={}", manifest.join(path).display());
    }
    let mut consts = String::new();
    for (name, features) in CHAOS_VARIANTS {
        let krate = PluginCrate {
            dir: manifest.join("plugins/chaos"),
            package: "chaos".into(),
            features: features.iter().map(|f| f.to_string()).collect(),
        };
        let bytes = embed(&krate, name, "wasm-test-plugins");
        consts.push_str(&format!(
            "/// The chaos test plugin with features {features:?}.\npub const {name}: &[u8] = {bytes};\n"
        ));
    }
    // The same plugin built for each frozen contract.
    for (name, version, features) in [
        ("LEGACY_V0_1", "0.1.0", Vec::new()),
        ("LEGACY_V0_2", "0.2.0", vec!["v0_2".to_string()]),
        ("LEGACY_V0_3", "0.3.0", vec!["v0_3".to_string()]),
    ] {
        let legacy = PluginCrate {
            dir: manifest.join("plugins/legacy"),
            package: "legacy".into(),
            features,
        };
        let bytes = embed(&legacy, name, "wasm-test-plugins");
        consts.push_str(&format!(
            "/// A plugin built for `fedwasm:placement@{version}`.\npub const {name}: &[u8] = {bytes};\n"
        ));
    }
    // The tutorial plugin, as its README builds it.
    let aggregate = PluginCrate {
        dir: manifest.join("../examples/plugins/aggregate"),
        package: "aggregate".into(),
        features: Vec::new(),
    };
    let bytes = embed(&aggregate, "AGGREGATE", "wasm-test-plugins");
    consts.push_str(&format!(
        "/// The tutorial plugin of `examples/plugins/aggregate`.\npub const AGGREGATE: &[u8] = {bytes};\n"
    ));
    // The customize example, as a policy's `spec.customize` names it.
    let region_mirror = PluginCrate {
        dir: manifest.join("../examples/plugins/region-mirror"),
        package: "region-mirror".into(),
        features: Vec::new(),
    };
    let bytes = embed(&region_mirror, "REGION_MIRROR", "wasm-test-plugins");
    consts.push_str(&format!(
        "/// The example plugin of `examples/plugins/region-mirror`.\npub const REGION_MIRROR: &[u8] = {bytes};\n"
    ));
    std::fs::write(out.join("test_plugins.rs"), consts).expect("writing into OUT_DIR");
}
