//! `fedwasm plugin new` and `fedwasm plugin build`: from nothing to a component.

use std::path::{Path, PathBuf};

use fedwasm_pluginbuild::{build_component, PluginCrate};
use fedwasm_sdk::Hook;

/// Errors of scaffolding and building.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0} already exists and is not empty")]
    NotEmpty(PathBuf),
    #[error("`{0}` is not a valid crate name (use lowercase letters, digits and `-`)")]
    BadName(String),
    #[error("the fedwasm SDK was not found at {0}; pass --sdk PATH")]
    NoSdk(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no [package] name in {0}")]
    NoPackage(PathBuf),
    #[error(transparent)]
    Build(#[from] fedwasm_pluginbuild::BuildError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The SDK next to the sources this binary was built from.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// Writes a plugin crate for `hook` into `dir` that builds as it is.
pub fn new_plugin(dir: &Path, hook: Hook, sdk: &Path) -> Result<String, ScaffoldError> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(ScaffoldError::BadName(name));
    }
    let sdk = sdk
        .canonicalize()
        .map_err(|_| ScaffoldError::NoSdk(sdk.to_path_buf()))?;
    if !sdk.join("wit").is_dir() {
        return Err(ScaffoldError::NoSdk(sdk));
    }
    std::fs::create_dir_all(dir.join("src")).map_err(io(dir))?;
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# cdylib: the Wasm component; rlib: native `cargo test`.
crate-type = ["cdylib", "rlib"]

[dependencies]
fedwasm-sdk = {{ path = "{sdk}" }}

[profile.release]
opt-level = "s"
lto = true

# A plugin is its own workspace, wherever it lives.
[workspace]
"#,
        sdk = sdk.display()
    );
    let files = [
        (PathBuf::from("Cargo.toml"), manifest),
        (PathBuf::from("src/lib.rs"), template(hook, &name)),
        (PathBuf::from(".gitignore"), "/target\n".to_string()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(name)
}

fn template(hook: Hook, name: &str) -> String {
    let type_name: String = name
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let (imports, body, test) = match hook {
        Hook::Select => (
            "SelectRequest, Selection",
            r#"    /// Select every ready cluster, with the same score.
    fn select(request: SelectRequest) -> Result<Vec<Selection>, String> {
        Ok(request
            .clusters
            .into_iter()
            .filter(|c| c.ready)
            .map(|c| Selection { cluster: c.name, score: 100 })
            .collect())
    }"#,
            r#"    #[test]
    fn selects_ready_clusters() {
        let request = SelectRequest {
            clusters: vec![
                ClusterInfo { name: "a".into(), ready: true, ..Default::default() },
                ClusterInfo { name: "b".into(), ready: false, ..Default::default() },
            ],
            ..Default::default()
        };
        let out = PLUGIN::select(request).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].cluster, "a");
    }"#,
        ),
        Hook::Distribute => (
            "DistributeRequest, DistributeResponse",
            r#"    /// Spread replicas evenly; the first clusters get the remainder.
    fn distribute(request: DistributeRequest) -> Result<DistributeResponse, String> {
        let mut out = DistributeResponse::default();
        let n = request.clusters.len() as u32;
        if n == 0 {
            return Ok(out);
        }
        for (i, cluster) in request.clusters.iter().enumerate() {
            let extra = u32::from((i as u32) < request.total_replicas % n);
            out.plan.insert(cluster.clone(), request.total_replicas / n + extra);
        }
        Ok(out)
    }"#,
            r#"    #[test]
    fn spreads_evenly() {
        let request = DistributeRequest {
            total_replicas: 5,
            clusters: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let out = PLUGIN::distribute(request).unwrap();
        assert_eq!(out.plan["a"], 3);
        assert_eq!(out.plan["b"], 2);
    }"#,
        ),
        Hook::Rank => (
            "RankRequest",
            r#"    /// Healthy backends first, each group in input order.
    fn rank(request: RankRequest) -> Result<Vec<u32>, String> {
        let mut order: Vec<u32> = (0..request.backends.len() as u32).collect();
        order.sort_by_key(|&i| !request.backends[i as usize].healthy);
        Ok(order)
    }"#,
            r#"    #[test]
    fn healthy_first() {
        let request = RankRequest {
            backends: vec![
                Backend { cluster: "a".into(), healthy: false, ..Default::default() },
                Backend { cluster: "b".into(), healthy: true, ..Default::default() },
            ],
            ..Default::default()
        };
        assert_eq!(PLUGIN::rank(request).unwrap(), vec![1, 0]);
    }"#,
        ),
    };
    let test = test.replace("PLUGIN", &type_name);
    let hook_variant = match hook {
        Hook::Select => "Select",
        Hook::Distribute => "Distribute",
        Hook::Rank => "Rank",
    };
    format!(
        r#"//! {name}: a fedwasm {hook} plugin.
//!
//! Build: `fedwasm plugin build .` — then copy the printed `.wasm` into the host's
//! plugin directory; it is loaded without a restart.

use fedwasm_sdk::{{export_plugin, Hook, Plugin, {imports}}};

pub struct {type_name};

impl Plugin for {type_name} {{
    const HOOKS: &'static [Hook] = &[Hook::{hook_variant}];

{body}
}}

export_plugin!({type_name});

#[cfg(test)]
mod tests {{
    use super::*;
    #[allow(unused_imports)]
    use fedwasm_sdk::*;

{test}
}}
"#
    )
}

/// The `[package] name` of the crate in `dir`, read without a TOML parser: the first
/// `name = "..."` line after `[package]`.
fn package_name(dir: &Path) -> Result<String, ScaffoldError> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(io(&manifest))?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(rest) = line.strip_prefix("name") {
                if let Some(value) = rest.trim_start().strip_prefix('=') {
                    return Ok(value.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    Err(ScaffoldError::NoPackage(manifest))
}

/// Builds the plugin crate in `dir` and writes `<target>/fedwasm/<name>.wasm`.
/// `CARGO_TARGET_DIR` is honoured, so several plugins can share one build cache.
pub fn build_plugin(dir: &Path) -> Result<PathBuf, ScaffoldError> {
    let package = package_name(dir)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into());
    let krate = PluginCrate {
        dir: dir.to_path_buf(),
        package: package.clone(),
        features: Vec::new(),
    };
    let component = build_component(&cargo, &krate, &target_dir)?;
    let out_dir = target_dir.join("fedwasm");
    std::fs::create_dir_all(&out_dir).map_err(io(&out_dir))?;
    let out = out_dir.join(format!("{package}.wasm"));
    std::fs::write(&out, component).map_err(io(&out))?;
    Ok(out)
}
