//! Builds the three default plugins from source into components and embeds them, so
//! `fedwasm` works with no plugin directory and nothing prebuilt is checked in; and
//! embeds the SDK crate's sources with a standalone manifest, so `fedwasm plugin new`
//! works with no checkout of this repository.

use std::path::{Path, PathBuf};

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
    embed_sdk(workspace, &out);
}

/// Dependencies of the SDK pinned to the exact version in the workspace's
/// `Cargo.lock`: wit-bindgen generates the guest side of the contract, so a plugin
/// gets the bindings the built-in plugins and the host's tests were built with.
const PINNED: &[&str] = &["wit-bindgen"];

/// Writes `$OUT_DIR/sdk/Cargo.toml` (the SDK's manifest with every `workspace = true`
/// replaced by the workspace's value) and `$OUT_DIR/sdk_files.rs`: `SDK_VERSION` and
/// `SDK_FILES`, every file of the SDK crate as `(relative path, bytes)`.
fn embed_sdk(workspace: &Path, out: &Path) {
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.toml").display()
    );
    let sdk = workspace.join("sdk");
    let root = read_toml(&workspace.join("Cargo.toml"));
    let lock = read_toml(&workspace.join("Cargo.lock"));
    let mut manifest = read_toml(&sdk.join("Cargo.toml"));
    let inherited = &root["workspace"];
    let package = manifest["package"]
        .as_table_mut()
        .expect("sdk/Cargo.toml has a [package]");
    for (key, value) in package.iter_mut() {
        if is_inherited(value) {
            *value = inherited["package"]
                .get(key.as_str())
                .unwrap_or_else(|| {
                    panic!(
                        "sdk/Cargo.toml inherits package.{key}, which the workspace does not set"
                    )
                })
                .clone();
        }
    }
    let version = package["version"]
        .as_str()
        .expect("the SDK has a version")
        .to_string();
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(deps) = manifest.get_mut(section).and_then(|d| d.as_table_mut()) else {
            continue;
        };
        for (name, spec) in deps.iter_mut() {
            if is_inherited(spec) {
                *spec = standalone_dependency(name, spec, inherited);
            }
            if PINNED.contains(&name.as_str()) {
                let required = spec["version"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} has no version requirement"));
                let locked = locked_version(&lock, name, required);
                spec.as_table_mut()
                    .expect("a dependency table")
                    .insert("version".into(), format!("={locked}").into());
            }
        }
    }
    let text = format!(
        "# The fedwasm SDK {version}, written by the `fedwasm` binary from the sources it\n\
         # embeds. Standalone: every value the repository's workspace sets is spelled out.\n\n{}",
        toml::to_string(&manifest).expect("a TOML table serializes")
    );
    let embedded = out.join("sdk");
    std::fs::create_dir_all(&embedded).expect("creating OUT_DIR/sdk");
    std::fs::write(embedded.join("Cargo.toml"), text).expect("writing into OUT_DIR");

    let mut files = vec![("Cargo.toml".to_string(), embedded.join("Cargo.toml"))];
    for dir in ["src", "wit"] {
        collect(&sdk, &sdk.join(dir), &mut files);
    }
    files.sort();
    let mut code = format!(
        "/// The embedded SDK's package version.\npub const SDK_VERSION: &str = {version:?};\n\
         /// Every file of the SDK crate, by path relative to the crate.\n\
         pub const SDK_FILES: &[(&str, &[u8])] = &[\n"
    );
    for (relative, path) in files {
        code.push_str(&format!(
            "    ({relative:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("sdk_files.rs"), code).expect("writing into OUT_DIR");
}

fn read_toml(path: &Path) -> toml::Table {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// `{ workspace = true, ... }` or `key.workspace = true`.
fn is_inherited(value: &toml::Value) -> bool {
    value
        .get("workspace")
        .and_then(toml::Value::as_bool)
        .unwrap_or(false)
}

/// The workspace's spec of dependency `name`, with the member's own `features`
/// (added) and `optional` (kept), as cargo merges them.
fn standalone_dependency(name: &str, member: &toml::Value, inherited: &toml::Value) -> toml::Value {
    let mut spec = match inherited["dependencies"].get(name) {
        Some(toml::Value::String(version)) => {
            toml::Table::from_iter([("version".to_string(), version.clone().into())])
        }
        Some(toml::Value::Table(table)) => table.clone(),
        _ => {
            panic!("sdk/Cargo.toml inherits dependency {name}, which the workspace does not define")
        }
    };
    assert!(
        !spec.contains_key("path"),
        "the SDK depends on the path dependency {name}: it could not be embedded"
    );
    for (key, value) in member.as_table().into_iter().flatten() {
        match key.as_str() {
            "workspace" => {}
            "features" => {
                let features = spec
                    .entry("features")
                    .or_insert_with(|| toml::Value::Array(Vec::new()))
                    .as_array_mut()
                    .expect("features is a list");
                for f in value.as_array().into_iter().flatten() {
                    if !features.contains(f) {
                        features.push(f.clone());
                    }
                }
            }
            _ => {
                spec.insert(key.clone(), value.clone());
            }
        }
    }
    toml::Value::Table(spec)
}

/// The version of `name` that `Cargo.lock` resolves the caret requirement
/// `required` (`0.63.0`) to. Other versions may be locked for other dependents.
fn locked_version(lock: &toml::Table, name: &str, required: &str) -> String {
    let mut parts = required.trim_start_matches('^').split('.');
    let compatible = match (parts.next(), parts.next()) {
        (Some("0"), Some(minor)) => format!("0.{minor}."),
        (Some(major), _) => format!("{major}."),
        _ => panic!("{name}: cannot read the requirement {required}"),
    };
    let versions: Vec<&str> = lock["package"]
        .as_array()
        .expect("Cargo.lock lists packages")
        .iter()
        .filter(|p| p["name"].as_str() == Some(name))
        .filter_map(|p| p["version"].as_str())
        .filter(|v| v.starts_with(&compatible))
        .collect();
    match versions.as_slice() {
        [one] => one.to_string(),
        _ => panic!(
            "Cargo.lock has {} versions of {name} matching {required}; expected one",
            versions.len()
        ),
    }
}

/// Every file under `dir`, as (path relative to `base` with `/`, absolute path).
fn collect(base: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(base, &path, files);
        } else {
            let relative = path
                .strip_prefix(base)
                .expect("under the SDK")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.push((relative, path));
        }
    }
}
