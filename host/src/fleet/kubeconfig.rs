//! Member kubeconfigs, read from the `fedwasm-system/<member>` Secrets.
//!
//! Whoever can write such a Secret decides what the host does with it, so by default
//! a member kubeconfig must be *inline data only*. Refused unless the host is started
//! with `--allow-unsafe-kubeconfig`:
//!
//! - `exec` and `auth-provider`: run a command of the Secret writer's choosing as
//!   the host;
//! - `tokenFile`, `client-certificate`, `client-key`, `certificate-authority` (file
//!   paths): make the host read one of its own files and send it to a server of the
//!   Secret writer's choosing;
//! - `insecure-skip-tls-verify: true`: the member's credentials go to whoever
//!   answers on the way.
//!
//! Errors never quote the kubeconfig: it holds tokens and keys, and these messages
//! end up in `Cluster.status.message`, logs and the terminal. A syntax error gives
//! the line and column, a shape error the field's path (known field names only).

use kube::config::{Kubeconfig, KubeconfigError as KubeError, LoadDataError};
use serde_json::Value;

/// Why a member kubeconfig is not usable. The messages never contain its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    #[error("not valid {format} at line {line} column {column}")]
    Syntax {
        format: &'static str,
        line: u64,
        column: u64,
    },
    #[error("not valid {format}")]
    SyntaxSomewhere { format: &'static str },
    #[error("`{path}` has an unexpected type or value")]
    Shape { path: String },
    #[error(
        "`{path}` {why}; a member kubeconfig must hold its credentials inline \
         (start the host with --allow-unsafe-kubeconfig to accept it anyway)"
    )]
    Unsafe { path: String, why: &'static str },
    #[error("{0}")]
    Unusable(String),
}

/// Whether member kubeconfigs may use fields that run commands, read the host's
/// files or turn TLS verification off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KubeconfigPolicy {
    /// Inline credentials only (the default).
    #[default]
    InlineOnly,
    /// Anything kube-rs accepts (`--allow-unsafe-kubeconfig`).
    AllowUnsafe,
}

impl KubeconfigPolicy {
    pub fn from_allow_unsafe(allow: bool) -> Self {
        if allow {
            Self::AllowUnsafe
        } else {
            Self::InlineOnly
        }
    }
}

/// Fields of a user that make the host run something or read its own files.
const UNSAFE_USER_FIELDS: [(&str, &str); 5] = [
    ("exec", "runs a command on the host"),
    (
        "auth-provider",
        "runs a command or reads files on the host (auth providers)",
    ),
    ("tokenFile", "reads a file of the host"),
    ("client-certificate", "reads a file of the host"),
    ("client-key", "reads a file of the host"),
];

/// Parses a kubeconfig (JSON or YAML) without quoting it in errors.
pub fn parse(text: &str) -> Result<Kubeconfig, KubeconfigError> {
    into_kubeconfig(parse_value(text)?)
}

/// Parses a member kubeconfig and refuses, under [`KubeconfigPolicy::InlineOnly`],
/// one that is not inline data only.
pub fn parse_member(text: &str, policy: KubeconfigPolicy) -> Result<Kubeconfig, KubeconfigError> {
    let value = parse_value(text)?;
    if policy == KubeconfigPolicy::InlineOnly {
        check_inline_only(&value)?;
    }
    into_kubeconfig(value)
}

/// The document as a generic value: JSON when it starts with `{`, else YAML.
pub fn parse_value(text: &str) -> Result<Value, KubeconfigError> {
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| KubeconfigError::Syntax {
            format: "JSON",
            line: e.line() as u64,
            column: e.column() as u64,
        })?
    } else {
        serde_saphyr::from_str(text).map_err(|e| match e.location() {
            Some(at) => KubeconfigError::Syntax {
                format: "YAML",
                line: at.line(),
                column: at.column(),
            },
            None => KubeconfigError::SyntaxSomewhere { format: "YAML" },
        })?
    };
    if !value.is_object() {
        return Err(KubeconfigError::Shape {
            path: "(the document)".into(),
        });
    }
    Ok(value)
}

/// Refuses `exec`, `auth-provider`, file paths and `insecure-skip-tls-verify`.
pub fn check_inline_only(value: &Value) -> Result<(), KubeconfigError> {
    let entries = |list: &str, inner: &str| -> Vec<(String, Value)> {
        value[list]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, e)| (format!("{list}[{i}].{inner}"), e[inner].clone()))
            .collect()
    };
    for (at, user) in entries("users", "user") {
        for (field, why) in UNSAFE_USER_FIELDS {
            if user.get(field).is_some_and(|v| !v.is_null()) {
                return Err(KubeconfigError::Unsafe {
                    path: format!("{at}.{field}"),
                    why,
                });
            }
        }
    }
    for (at, cluster) in entries("clusters", "cluster") {
        if cluster
            .get("certificate-authority")
            .is_some_and(|v| !v.is_null())
        {
            return Err(KubeconfigError::Unsafe {
                path: format!("{at}.certificate-authority"),
                why: "reads a file of the host",
            });
        }
        let skip = cluster.get("insecure-skip-tls-verify");
        if skip.is_some_and(|v| v != &Value::Bool(false) && !v.is_null()) {
            return Err(KubeconfigError::Unsafe {
                path: format!("{at}.insecure-skip-tls-verify"),
                why: "turns off TLS verification (whoever answers on the way gets the member's credentials)",
            });
        }
    }
    Ok(())
}

/// The typed kubeconfig; a shape error names the field, never its value.
fn into_kubeconfig(value: Value) -> Result<Kubeconfig, KubeconfigError> {
    serde_path_to_error::deserialize::<_, Kubeconfig>(value).map_err(|e| KubeconfigError::Shape {
        path: safe_path(&e.path().to_string()),
    })
}

/// Field names a kubeconfig has: only these are shown in a path; any other key (a
/// map key may be anything, a token included) is shown as `*`.
const KNOWN_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "preferences",
    "clusters",
    "cluster",
    "users",
    "user",
    "contexts",
    "context",
    "current-context",
    "extensions",
    "extension",
    "name",
    "server",
    "insecure-skip-tls-verify",
    "certificate-authority",
    "certificate-authority-data",
    "proxy-url",
    "disable-compression",
    "tls-server-name",
    "username",
    "password",
    "token",
    "tokenFile",
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "as",
    "as-uid",
    "as-groups",
    "as-user-extra",
    "auth-provider",
    "config",
    "exec",
    "command",
    "args",
    "env",
    "drop_env",
    "installHint",
    "interactiveMode",
    "provideClusterInfo",
    "namespace",
    "colors",
];

fn safe_path(path: &str) -> String {
    path.split('.')
        .map(|segment| {
            let (key, index) = match segment.find('[') {
                Some(i) => segment.split_at(i),
                None => (segment, ""),
            };
            let index_ok = index.is_empty()
                || (index.starts_with('[')
                    && index.ends_with(']')
                    && index[1..index.len() - 1]
                        .bytes()
                        .all(|b| b.is_ascii_digit()));
            if KNOWN_FIELDS.contains(&key) && index_ok {
                segment.to_string()
            } else if key == "?" {
                "?".to_string()
            } else {
                "*".to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// What kube-rs says of a kubeconfig it cannot use, without the parts that may
/// quote it (a base64 error names a byte of the key, a file error its path).
pub fn describe(error: &KubeError) -> KubeconfigError {
    let data = |what: &str, e: &LoadDataError| match e {
        LoadDataError::DecodeBase64(_) => format!("{what}: not valid base64"),
        LoadDataError::ReadFile(..) => format!("{what}: cannot read its file"),
        LoadDataError::NoBase64DataOrFile => format!("{what}: no data"),
    };
    KubeconfigError::Unusable(match error {
        KubeError::CurrentContextNotSet => "no current-context".into(),
        KubeError::LoadContext(_) => "the current context is missing".into(),
        KubeError::LoadClusterOfContext(_) => "the context's cluster is missing".into(),
        KubeError::MissingClusterUrl => "the cluster has no server".into(),
        KubeError::ParseClusterUrl(_) => "the cluster's server is not a URL".into(),
        KubeError::ParseProxyUrl(_) => "the cluster's proxy-url is not a URL".into(),
        KubeError::LoadCertificateAuthority(e) => data("certificate-authority", e),
        KubeError::LoadClientCertificate(e) => data("client-certificate", e),
        KubeError::LoadClientKey(e) => data("client-key", e),
        KubeError::ParseCertificates(_) => "a certificate is not valid PEM".into(),
        KubeError::Parse(_) => "not valid YAML".into(),
        KubeError::ReadConfig(..) | KubeError::FindPath => "cannot be read".into(),
        KubeError::KindMismatch | KubeError::ApiVersionMismatch => "mismatching kubeconfigs".into(),
        #[allow(unreachable_patterns)]
        _ => "not usable".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CANARY: &str = "fedwasm-canary-token-XYZ";

    fn config(user: Value, cluster: Value) -> String {
        json!({"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x"})
        .to_string()
    }

    fn server() -> Value {
        json!({"server": "https://127.0.0.1:6443", "certificate-authority-data": "Q0E="})
    }

    #[test]
    fn inline_credentials_are_accepted() {
        let text = config(json!({"token": CANARY}), server());
        let parsed = parse_member(&text, KubeconfigPolicy::InlineOnly).unwrap();
        assert_eq!(parsed.auth_infos.len(), 1);
        let skip_false = config(
            json!({"client-certificate-data": "Q0U=", "client-key-data": "S0U="}),
            json!({"server": "https://a:1", "insecure-skip-tls-verify": false}),
        );
        parse_member(&skip_false, KubeconfigPolicy::InlineOnly).unwrap();
    }

    #[test]
    fn commands_files_and_skipped_tls_are_refused_unless_allowed() {
        let cases = [
            (
                config(
                    json!({"exec": {"command": "sh", "apiVersion": "client.authentication.k8s.io/v1"}}),
                    server(),
                ),
                "users[0].user.exec",
            ),
            (
                config(
                    json!({"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh"}}}),
                    server(),
                ),
                "users[0].user.auth-provider",
            ),
            (
                config(json!({"tokenFile": "/etc/shadow"}), server()),
                "users[0].user.tokenFile",
            ),
            (
                config(json!({"client-certificate": "/root/c.pem"}), server()),
                "users[0].user.client-certificate",
            ),
            (
                config(json!({"client-key": "/root/k.pem"}), server()),
                "users[0].user.client-key",
            ),
            (
                config(
                    json!({"token": "t"}),
                    json!({"server": "https://a:1", "certificate-authority": "/etc/ca"}),
                ),
                "clusters[0].cluster.certificate-authority",
            ),
            (
                config(
                    json!({"token": "t"}),
                    json!({"server": "https://a:1", "insecure-skip-tls-verify": true}),
                ),
                "clusters[0].cluster.insecure-skip-tls-verify",
            ),
        ];
        for (text, path) in cases {
            let e = parse_member(&text, KubeconfigPolicy::InlineOnly).unwrap_err();
            assert!(
                matches!(&e, KubeconfigError::Unsafe { path: p, .. } if p == path),
                "{e}"
            );
            assert!(e.to_string().contains("--allow-unsafe-kubeconfig"), "{e}");
            parse_member(&text, KubeconfigPolicy::AllowUnsafe)
                .unwrap_or_else(|e| panic!("{path} allowed when asked: {e}"));
        }
    }

    #[test]
    fn syntax_errors_give_a_place_not_the_content() {
        let yaml =
            format!("apiVersion: v1\nusers:\n- name: u\n  user:\n    token: {CANARY}\n  : : [\n");
        let e = parse(&yaml).unwrap_err();
        assert!(
            matches!(
                e,
                KubeconfigError::Syntax {
                    format: "YAML",
                    line: 6,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!e.to_string().contains(CANARY), "{e}");
        assert!(e.to_string().contains("line 6"), "{e}");
        let json = format!("{{\"users\": [{{\"user\": {{\"token\": \"{CANARY}\"}}}}]");
        let e = parse(&json).unwrap_err();
        assert!(
            matches!(e, KubeconfigError::Syntax { format: "JSON", .. }),
            "{e:?}"
        );
        assert!(!e.to_string().contains(CANARY), "{e}");
    }

    #[test]
    fn shape_errors_name_the_field_not_the_value() {
        // A token where a list is expected: serde would quote the string.
        let text = format!("users: {CANARY}\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(
            e,
            KubeconfigError::Shape {
                path: "users".into()
            }
        );
        let text = config(json!({"token": [CANARY]}), server());
        let e = parse(&text).unwrap_err();
        assert!(!e.to_string().contains(CANARY), "{e}");
        assert!(e.to_string().contains("users[0].user.token"), "{e}");
        // A key that is a secret is not shown either.
        let text = format!("users:\n- name: u\n  user:\n    as-user-extra:\n      {CANARY}: 5\n");
        let e = parse(&text).unwrap_err();
        assert!(!e.to_string().contains(CANARY), "{e}");
        let e = parse(&format!("{CANARY}\n")).unwrap_err();
        assert!(!e.to_string().contains(CANARY), "{e}");
    }
}
