//! Builds a plugin crate for `wasm32-unknown-unknown` and encodes the core module as
//! a component.
//!
//! One piece of code serves the host's build script (the built-in plugins), the test
//! suite's build script (the misbehaving test plugins) and `fedwasm plugin build`, so
//! a plugin is built the same way everywhere.
//!
//! Cargo decides where things go (a workspace's target directory, `CARGO_TARGET_DIR`,
//! `build.target-dir`), so nothing here guesses paths: `cargo metadata` names the
//! package and the target directory, and the build's JSON messages name the `.wasm`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The target every plugin is built for: it has no WASI, so a plugin imports nothing.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Why a plugin could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("could not run {program}: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("`rustup target add {WASM_TARGET}` failed; install the target by hand")]
    Target,
    #[error("cargo build of {crate_dir} failed ({status})")]
    Cargo { crate_dir: String, status: String },
    #[error("`cargo metadata` in {dir} failed: {message}")]
    Metadata { dir: String, message: String },
    #[error("no package {package} in the workspace of {dir}")]
    NoPackage { dir: String, package: String },
    #[error(
        "cargo built no cdylib of {package} in {crate_dir}: is the crate's lib crate-type cdylib?"
    )]
    MissingArtifact { crate_dir: String, package: String },
    #[error("reading {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("encoding {path} as a component: {message}")]
    Encode { path: String, message: String },
}

/// One plugin crate to build.
#[derive(Clone, Debug)]
pub struct PluginCrate {
    /// Directory holding the crate's `Cargo.toml` (cargo runs there, so that
    /// directory's workspace and `.cargo/config.toml` apply).
    pub dir: PathBuf,
    /// The package name.
    pub package: String,
    /// Cargo features to enable.
    pub features: Vec<String>,
}

/// A package of a workspace, as `cargo metadata` describes it.
#[derive(Clone, Debug)]
pub struct Package {
    pub name: String,
    /// Cargo's package id; build messages refer to the package by it.
    pub id: String,
    pub manifest_path: PathBuf,
}

/// What `cargo metadata --no-deps` says about the workspace a directory is in.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// Where cargo puts build output for this workspace (absolute), with
    /// `CARGO_TARGET_DIR` and config taken into account.
    pub target_directory: PathBuf,
    pub packages: Vec<Package>,
}

impl Workspace {
    /// Runs `cargo metadata --no-deps` in `dir`. `target_dir` is the one a build
    /// would be given (see [`build`]); `None` leaves it to cargo.
    pub fn read(cargo: &Path, dir: &Path, target_dir: Option<&Path>) -> Result<Self, BuildError> {
        let failed = |message: String| BuildError::Metadata {
            dir: dir.display().to_string(),
            message,
        };
        let out = output(
            cargo,
            cargo_command(cargo, dir, target_dir).args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
            ]),
        )?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(failed(stderr.trim().replace('\n', " ")));
        }
        let json: Value = serde_json::from_slice(&out.stdout).map_err(|e| failed(e.to_string()))?;
        let target_directory = json["target_directory"]
            .as_str()
            .ok_or_else(|| failed("no target_directory in its output".into()))?
            .into();
        let packages = json["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(Package {
                    name: p["name"].as_str()?.to_string(),
                    id: p["id"].as_str()?.to_string(),
                    manifest_path: p["manifest_path"].as_str()?.into(),
                })
            })
            .collect();
        Ok(Workspace {
            target_directory,
            packages,
        })
    }

    /// The package whose manifest is `dir/Cargo.toml`, if `dir` holds one (and not
    /// only a `[workspace]`).
    pub fn package_in(&self, dir: &Path) -> Option<&Package> {
        let manifest = canonical(&dir.join("Cargo.toml"));
        self.packages
            .iter()
            .find(|p| canonical(&p.manifest_path) == manifest)
    }

    /// The package called `name`.
    pub fn package_named(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// `path` made absolute against this process's current directory: cargo runs in the
/// crate's directory and would resolve a relative path from there instead.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A cargo command running in `dir`.
///
/// Variables a parent cargo sets for build scripts (flags, wrappers, jobserver,
/// target) are removed, because they describe the parent's build, not this one. The
/// target directory is `target_dir` when given; otherwise cargo's own choice, with a
/// relative `CARGO_TARGET_DIR` kept meaning what it meant to whoever set it.
fn cargo_command(cargo: &Path, dir: &Path, target_dir: Option<&Path>) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    match target_dir {
        Some(target_dir) => {
            cmd.env("CARGO_TARGET_DIR", absolute(target_dir));
        }
        None => {
            for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"] {
                if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                    cmd.env(var, absolute(Path::new(&value)));
                }
            }
        }
    }
    cmd
}

/// Makes sure rustup has the wasm target; a no-op when it is there already.
pub fn ensure_wasm_target() -> Result<(), BuildError> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(out) = &installed {
        if String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == WASM_TARGET)
        {
            return Ok(());
        }
    }
    // No rustup at all: let cargo report a missing target itself.
    if installed.is_err() {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .map_err(|error| BuildError::Spawn {
            program: "rustup".into(),
            error,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Target)
    }
}

/// A built plugin.
#[derive(Clone, Debug)]
pub struct Built {
    /// The component's bytes.
    pub component: Vec<u8>,
    /// The core module cargo wrote, as cargo reported it.
    pub module: PathBuf,
    /// The target directory cargo used.
    pub target_directory: PathBuf,
}

/// Builds `krate` in release mode for the wasm target and encodes it as a component.
///
/// `cargo` is the cargo binary to run, in `krate.dir`. `target_dir` overrides the
/// target directory; with `None` cargo picks it as for any build there (the
/// workspace's `target/`, `CARGO_TARGET_DIR`, `build.target-dir`).
pub fn build(
    cargo: &Path,
    krate: &PluginCrate,
    target_dir: Option<&Path>,
) -> Result<Built, BuildError> {
    ensure_wasm_target()?;
    let crate_dir = || krate.dir.display().to_string();
    let workspace = Workspace::read(cargo, &krate.dir, target_dir)?;
    let package = workspace
        .package_named(&krate.package)
        .ok_or_else(|| BuildError::NoPackage {
            dir: crate_dir(),
            package: krate.package.clone(),
        })?;
    let mut cmd = cargo_command(cargo, &krate.dir, target_dir);
    cmd.args(["build", "--release", "--target", WASM_TARGET])
        .arg("--message-format=json-render-diagnostics")
        .arg("-p")
        .arg(&krate.package);
    if !krate.features.is_empty() {
        cmd.arg("--features").arg(krate.features.join(","));
    }
    // stdout carries the JSON messages; diagnostics and progress go to stderr.
    let out = output(cargo, cmd.stderr(Stdio::inherit()))?;
    if !out.status.success() {
        return Err(BuildError::Cargo {
            crate_dir: crate_dir(),
            status: out.status.to_string(),
        });
    }
    let module =
        cdylib_artifact(&out.stdout, &package.id).ok_or_else(|| BuildError::MissingArtifact {
            crate_dir: crate_dir(),
            package: krate.package.clone(),
        })?;
    let core = std::fs::read(&module).map_err(|error| BuildError::Io {
        path: module.display().to_string(),
        error,
    })?;
    let component = encode_component(&core).map_err(|message| BuildError::Encode {
        path: module.display().to_string(),
        message,
    })?;
    Ok(Built {
        component,
        module,
        target_directory: workspace.target_directory,
    })
}

/// Builds `krate` into `target_dir` (see [`build`]) and returns the component's bytes.
pub fn build_component(
    cargo: &Path,
    krate: &PluginCrate,
    target_dir: &Path,
) -> Result<Vec<u8>, BuildError> {
    build(cargo, krate, Some(target_dir)).map(|built| built.component)
}

/// The `.wasm` of package `id`'s cdylib among cargo's `--message-format json` lines
/// (the last one reported, should there be several).
fn cdylib_artifact(messages: &[u8], id: &str) -> Option<PathBuf> {
    String::from_utf8_lossy(messages)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["package_id"] == id)
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"))
        })
        .filter_map(|m| {
            m["filenames"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
        })
        .next_back()
}

/// For build scripts: builds `krate` into a component, writes it to
/// `$OUT_DIR/<file>.wasm` and returns the Rust expression that embeds it
/// (`include_bytes!(...)`). The wasm build gets a target directory of its own,
/// `<target>/<target_subdir>`: the outer cargo holds the lock on the main one.
/// Panics with the reason on failure, as a build script should.
pub fn embed(krate: &PluginCrate, file: &str, target_subdir: &str) -> String {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cargo = PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // OUT_DIR = <target>/<profile>/build/<pkg>/out
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join(target_subdir))
        .unwrap_or_else(|| out.join(target_subdir));
    for path in ["src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", krate.dir.join(path).display());
    }
    let bytes = build_component(&cargo, krate, &target_dir)
        .unwrap_or_else(|e| panic!("building the plugin {file}: {e}"));
    std::fs::write(out.join(format!("{file}.wasm")), bytes).expect("writing into OUT_DIR");
    format!("include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{file}.wasm\"))")
}

/// Runs `cmd` (a `cargo` command) with no stdin and collects its output.
fn output(cargo: &Path, cmd: &mut Command) -> Result<std::process::Output, BuildError> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|error| BuildError::Spawn {
            program: cargo.display().to_string(),
            error,
        })
}

/// Encodes a core module built with the SDK (it carries its WIT in a custom section)
/// as a component.
pub fn encode_component(core: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .module(core)
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cdylib_of_the_package_is_picked_from_the_messages() {
        let id = "path+file:///w/plugins/p1#0.1.0";
        let messages = [
            r#"{"reason":"compiler-artifact","package_id":"path+file:///sdk#0.1.0","target":{"kind":["lib"]},"filenames":["/t/libsdk.rlib"]}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///dep#0.1.0","target":{"kind":["cdylib","rlib"]},"filenames":["/t/dep.wasm","/t/libdep.rlib"]}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/plugins/p1#0.1.0","target":{"kind":["cdylib","rlib"]},"filenames":["/t/wasm32-unknown-unknown/release/p1.wasm","/t/libp1.rlib"]}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        assert_eq!(
            cdylib_artifact(messages.as_bytes(), id),
            Some(PathBuf::from("/t/wasm32-unknown-unknown/release/p1.wasm"))
        );
        assert_eq!(cdylib_artifact(messages.as_bytes(), "other"), None);
    }
}
