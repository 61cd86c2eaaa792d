//! `fedwasm plugin new` and `fedwasm plugin build`: from nothing to a component.

pub mod sdk;

use std::path::{Path, PathBuf};

use fedwasm_pluginbuild::{build, PluginCrate, Workspace};
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
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0} defines no package (only a workspace?)")]
    NoPackage(PathBuf),
    #[error(transparent)]
    Build(#[from] fedwasm_pluginbuild::BuildError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |error| ScaffoldError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes a plugin crate for `hook` into `dir` that builds as it is, depending on the
/// SDK crate at `sdk` (see [`sdk::install`] for the one this binary embeds).
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
    let package = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# cdylib: the Wasm component; rlib: native `cargo test`.
crate-type = ["cdylib", "rlib"]

[dependencies]
fedwasm-sdk = {{ path = {sdk:?} }}
"#,
        // Debug quoting escapes quotes and backslashes as TOML basic strings do.
        sdk = sdk.to_string_lossy()
    );
    let files = [
        (PathBuf::from("src/lib.rs"), template(hook, &name)),
        (PathBuf::from(".gitignore"), "/target\n".to_string()),
        (PathBuf::from("Cargo.toml"), package.clone()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    // Written as a member of whatever workspace lists it; if none does, it becomes
    // a workspace of its own.
    let manifest = match enclosing_workspace(dir) {
        Some(root) => format!(
            r#"{package}
# A member of the workspace at {root}: it builds into that workspace's target
# directory with the [profile.release] set there (a plugin is small with
# opt-level = "s" and lto = true).
"#,
            root = root.display()
        ),
        None => format!(
            r#"{package}
[profile.release]
opt-level = "s"
lto = true

# A plugin is its own workspace unless an enclosing workspace lists it as a member.
[workspace]
"#
        ),
    };
    let path = dir.join("Cargo.toml");
    std::fs::write(&path, manifest).map_err(io(&path))?;
    Ok(name)
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into())
}

/// The root directory of the workspace that has the crate in `dir` as a member, when
/// that is not the crate itself. A crate in some workspace's directory tree that is
/// not listed as its member makes cargo fail here, which also means `None`.
fn enclosing_workspace(dir: &Path) -> Option<PathBuf> {
    let out = std::process::Command::new(cargo())
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    let manifest = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let root = manifest.parent()?.canonicalize().ok()?;
    (root != dir.canonicalize().ok()?).then_some(root)
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
            .map(|c| Selection {
                cluster: c.name,
                score: 100,
            })
            .collect())
    }"#,
            r#"    #[test]
    fn selects_ready_clusters() {
        let request = SelectRequest {
            clusters: vec![
                ClusterInfo {
                    name: "a".into(),
                    ready: true,
                    ..Default::default()
                },
                ClusterInfo {
                    name: "b".into(),
                    ready: false,
                    ..Default::default()
                },
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
            r#"    /// Spread replicas evenly; the first clusters get the remainder. A cluster's
    /// `maxReplicas` (replica-set-preferences) caps its share: the host rejects a
    /// plan above it, and what does not fit stays unplaced.
    fn distribute(request: DistributeRequest) -> Result<DistributeResponse, String> {
        let mut out = DistributeResponse::default();
        let n = request.clusters.len() as u32;
        if n == 0 {
            return Ok(out);
        }
        // Each candidate with its preference (its own, else `*`), running
        // replicas and capacity.
        for c in request.candidates() {
            let extra = u32::from((c.index as u32) < request.total_replicas % n);
            let max = c
                .preference
                .and_then(|p| p.max_replicas)
                .unwrap_or(u32::MAX);
            out.plan.insert(
                c.name.to_string(),
                (request.total_replicas / n + extra).min(max),
            );
        }
        Ok(out)
    }"#,
            r#"    #[test]
    fn spreads_evenly() {
        let request = DistributeRequest::new("ns/web", 5, ["a", "b"]);
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
                Backend {
                    cluster: "a".into(),
                    healthy: false,
                    ..Default::default()
                },
                Backend {
                    cluster: "b".into(),
                    healthy: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(PLUGIN::rank(request).unwrap(), vec![1, 0]);
    }"#,
        ),
        Hook::Customize => (
            "CustomizeRequest",
            r##"    /// Label each member's copy with the member's region. fedwasm labels every
    /// copy it makes, so `/metadata/labels` exists; `~1` is `/` in a JSON pointer.
    fn customize(request: CustomizeRequest) -> Result<String, String> {
        if request.cluster.region.is_empty() {
            return Ok("[]".into());
        }
        Ok(format!(
            r#"[{{"op": "add", "path": "/metadata/labels/example.com~1region", "value": "{}"}}]"#,
            request.cluster.region.escape_default()
        ))
    }"##,
            r##"    #[test]
    fn labels_the_region() {
        let mut request = CustomizeRequest::default();
        assert_eq!(PLUGIN::customize(request.clone()).unwrap(), "[]");
        request.cluster.region = "asia-east1".into();
        let patch = PLUGIN::customize(request).unwrap();
        assert!(patch.contains(r#""value": "asia-east1""#), "{patch}");
    }"##,
        ),
    };
    let test = test.replace("PLUGIN", &type_name);
    // In rustfmt's order (the macro, then the types by name), so the new crate
    // passes `cargo fmt --check` as it is.
    let mut types: Vec<&str> = ["Hook", "Plugin"]
        .into_iter()
        .chain(imports.split(", "))
        .collect();
    types.sort_unstable();
    let imports = types.join(", ");
    let hook_variant = match hook {
        Hook::Select => "Select",
        Hook::Distribute => "Distribute",
        Hook::Rank => "Rank",
        Hook::Customize => "Customize",
    };
    format!(
        r#"//! {name}: a fedwasm {hook} plugin.
//!
//! Build: `fedwasm plugin build .` — then copy the printed `.wasm` into the host's
//! plugin directory; it is loaded without a restart.

use fedwasm_sdk::{{export_plugin, {imports}}};

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

/// Builds the plugin crate in `dir` and writes `<target>/fedwasm/<name>.wasm`, where
/// `<target>` is the target directory cargo uses for it: `dir/target` for a plugin
/// that is its own workspace, the workspace's for a member, or `CARGO_TARGET_DIR`.
pub fn build_plugin(dir: &Path) -> Result<PathBuf, ScaffoldError> {
    let dir = dir.canonicalize().map_err(io(dir))?;
    let cargo = cargo();
    let package = Workspace::read(&cargo, &dir, None)?
        .package_in(&dir)
        .ok_or_else(|| ScaffoldError::NoPackage(dir.join("Cargo.toml")))?
        .name
        .clone();
    let krate = PluginCrate {
        dir,
        package: package.clone(),
        features: Vec::new(),
    };
    let built = build(&cargo, &krate, None)?;
    let out_dir = built.target_directory.join("fedwasm");
    std::fs::create_dir_all(&out_dir).map_err(io(&out_dir))?;
    let out_dir = out_dir.canonicalize().map_err(io(&out_dir))?;
    let out = out_dir.join(format!("{package}.wasm"));
    std::fs::write(&out, built.component).map_err(io(&out))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `plugin new` writes is formatted as `cargo fmt` would have it: a
    /// plugin author's own CI may run `cargo fmt --check` on day one.
    #[test]
    fn every_template_is_rustfmt_clean() {
        let dir = tempfile::tempdir().unwrap();
        for hook in Hook::ALL {
            let file = dir.path().join(format!("{hook}.rs"));
            std::fs::write(&file, template(hook, "my-plugin")).unwrap();
            let out = std::process::Command::new("rustfmt")
                .args(["--check", "--edition", "2021"])
                .arg(&file)
                .output()
                .expect("rustfmt runs (rustup component add rustfmt)");
            assert!(
                out.status.success(),
                "the {hook} template is not rustfmt-clean:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
