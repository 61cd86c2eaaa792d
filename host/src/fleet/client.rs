//! One client per member, with a deadline on every whole request and a bound on the
//! requests in flight, so a member that hangs costs its own callers a bounded wait
//! and nobody else anything.
//!
//! Credentials live in Secrets in the federation plane (`fedwasm-system/<name>`, key
//! `kubeconfig`), so any host replica can reach every member and nothing is read from
//! the host's disk.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::config::KubeConfigOptions;
use kube::{Client, Config};
use tokio::sync::Semaphore;

use super::kubeconfig::{self, KubeconfigPolicy};
use super::Error;

/// Why a request to a member failed.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The member answered with an API status (404, 409, 422, ...).
    #[error("cluster {cluster}: {source}")]
    Api {
        cluster: String,
        #[source]
        source: kube::Error,
    },
    /// No answer: connection refused or reset, TLS, or the like.
    #[error("cluster {cluster} unreachable: {source}")]
    Transport {
        cluster: String,
        #[source]
        source: kube::Error,
    },
    /// No complete answer within the deadline.
    #[error("cluster {cluster}: no answer within {} ms", after.as_millis())]
    Timeout { cluster: String, after: Duration },
}

impl MemberError {
    /// The HTTP status of an API answer.
    pub fn code(&self) -> Option<u16> {
        match self {
            MemberError::Api {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }

    /// Whether the member could not be reached at all (as opposed to refusing).
    pub fn is_unreachable(&self) -> bool {
        !matches!(self, MemberError::Api { .. })
    }
}

/// How long a member's watch asks the server to run before it ends it (and the
/// watch resumes from where it was).
pub const WATCH_SECS: u32 = 50;
/// The longest silence on a connection to a member: longer than a watch runs.
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(WATCH_SECS as u64 + 10);

/// How many request deadlines a request may wait for a free slot.
const QUEUE_DEADLINES: u32 = 6;

/// A member's client: every call through [`MemberClient::call`] is bounded as a
/// whole, and at most `max_in_flight` run at once.
#[derive(Clone)]
pub struct MemberClient {
    cluster: Arc<str>,
    client: Client,
    deadline: Duration,
    permits: Arc<Semaphore>,
    /// When the member last answered a request of this client (an API error is an
    /// answer too): a member busy answering the controllers is not away.
    answered: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl MemberClient {
    pub fn new(cluster: &str, client: Client, deadline: Duration, max_in_flight: usize) -> Self {
        Self {
            cluster: cluster.into(),
            client,
            deadline,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            answered: Arc::default(),
        }
    }

    /// When the member last answered a request made through this client.
    pub fn last_answer(&self) -> Option<std::time::Instant> {
        *self.answered.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn answered_now(&self) {
        *self.answered.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    /// The raw client, for building `Api`s; run requests through [`Self::call`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Whether both are the same client (clones of one), not merely to one cluster.
    pub fn same(&self, other: &MemberClient) -> bool {
        Arc::ptr_eq(&self.permits, &other.permits)
    }

    /// Runs one request in one of the member's slots, under the member's deadline.
    /// Waiting for a free slot is queueing here, not the member's slowness: it has
    /// its own, longer bound, so a burst queued behind the member's slots does not
    /// fail as if the member had hung.
    pub async fn call<T, F>(&self, request: F) -> Result<T, MemberError>
    where
        F: Future<Output = Result<T, kube::Error>>,
    {
        let queue = self.deadline * QUEUE_DEADLINES;
        let Ok(_permit) = tokio::time::timeout(queue, self.permits.acquire()).await else {
            return Err(MemberError::Timeout {
                cluster: self.cluster.to_string(),
                after: queue,
            });
        };
        self.call_within(self.deadline, request).await
    }

    /// One request under `deadline`, outside the member's slots: probes, one per
    /// interval, are never queued behind writes.
    pub async fn call_within<T, F>(&self, deadline: Duration, request: F) -> Result<T, MemberError>
    where
        F: Future<Output = Result<T, kube::Error>>,
    {
        match tokio::time::timeout(deadline, request).await {
            Ok(Ok(v)) => {
                self.answered_now();
                Ok(v)
            }
            Ok(Err(source @ kube::Error::Api(_))) => {
                self.answered_now();
                Err(MemberError::Api {
                    cluster: self.cluster.to_string(),
                    source,
                })
            }
            Ok(Err(source)) => Err(MemberError::Transport {
                cluster: self.cluster.to_string(),
                source,
            }),
            Err(_) => Err(MemberError::Timeout {
                cluster: self.cluster.to_string(),
                after: deadline,
            }),
        }
    }
}

/// A client from the `kubeconfig` key of a member's Secret, refused (with no client
/// built) when the kubeconfig is not inline data only, unless `policy` allows it.
/// Connecting is bounded here; whole requests are bounded by [`MemberClient::call`].
pub async fn client_from_secret(
    secret: &Secret,
    cluster: &str,
    deadline: Duration,
    policy: KubeconfigPolicy,
) -> Result<Client, Error> {
    let invalid = |source| Error::Kubeconfig {
        cluster: cluster.to_string(),
        source,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .ok_or_else(|| {
            Error::Config(format!(
                "the Secret of cluster {cluster} has no `kubeconfig` key"
            ))
        })?;
    let text = std::str::from_utf8(&bytes.0)
        .map_err(|_| Error::Config(format!("the kubeconfig of cluster {cluster} is not UTF-8")))?;
    let kubeconfig = kubeconfig::parse_member(text, policy).map_err(invalid)?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| invalid(kubeconfig::describe(&e)))?;
    config.connect_timeout = Some(deadline.min(Duration::from_secs(2)));
    // Requests are bounded as a whole by `MemberClient::call`. Reads are bounded
    // only for the member caches' watches, which stay quiet while nothing changes
    // (the server ends each after `WATCH_SECS`): a member silent for longer is
    // hung, and its cache relists.
    config.read_timeout = Some(deadline.max(WATCH_READ_TIMEOUT));
    config.write_timeout = Some(deadline);
    multiplexed(config).map_err(|e| Error::Config(format!("connecting to {cluster}: {e}")))
}

/// How often an HTTP/2 connection to an apiserver is pinged, and how long a ping
/// may go unanswered before the connection is closed.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A client that speaks HTTP/2 where the server offers it (every kube-apiserver
/// does): one connection carries all of a member's watches and requests. kube's
/// own client speaks HTTP/1.1 only, one connection per request in flight: at 30
/// members under load that was about 1,500 connections, each with its TLS state
/// and buffers. A connection that stops answering (a hung apiserver) fails its
/// pings and is closed, and what ran on it starts again on a new one.
pub fn multiplexed(config: Config) -> Result<Client, String> {
    build(config, Protocol::Http2)
}

/// A client that speaks HTTP/1.1 only, as kube's own does (a connection per request
/// in flight, for as many requests at once as the server takes), but closes a
/// connection left idle for [`IDLE_TIMEOUT`]: kube's never does, and after a burst
/// at 30 members × 1,000 objects about 200 idle connections to the federation plane
/// stayed open. The plane uses it: on one HTTP/2 connection (tried), 5,000 objects
/// converged in 598 s against the direct client's 194 s with the host mostly
/// waiting; not diagnosed, one flow-control window shared by the plane's watches
/// and the host's writes is the suspect.
pub fn pooled(config: Config) -> Result<Client, String> {
    build(config, Protocol::Http1)
}

/// How long an idle HTTP/1.1 connection is kept for the next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
}

fn build(config: Config, protocol: Protocol) -> Result<Client, String> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use kube::client::ConfigExt;
    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let tls = config.rustls_client_config().map_err(|e| e.to_string())?;
    let mut https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls_pki_types::ServerName::try_from(name.clone())
            .map_err(|e| format!("tls-server-name {name}: {e}"))?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let https = match protocol {
        Protocol::Http2 => https.enable_all_versions().wrap_connector(http),
        Protocol::Http1 => https.enable_http1().wrap_connector(http),
    };
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    // The connect timeout covers the TLS handshake: an apiserver that accepts and
    // never answers does not hold a connection attempt open.
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_EVERY)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true);
    // Only HTTP/1.1's idle connections go sooner; a member's HTTP/2 connection
    // keeps hyper-util's default, as before.
    if let Protocol::Http1 = protocol {
        builder.pool_idle_timeout(IDLE_TIMEOUT);
    }
    let client = builder.build(connector);
    let auth = config.auth_layer().map_err(|e| e.to_string())?;
    let headers = config.extra_headers_layer().map_err(|e| e.to_string())?;
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(auth)
        .layer(headers)
        .map_err(BoxError::from)
        .service(client);
    Ok(Client::new(service, config.default_namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    const CANARY: &str = "fedwasm-canary-token-XYZ";

    fn secret(kubeconfig: &str) -> Secret {
        Secret {
            data: Some(
                [("kubeconfig".to_string(), ByteString(kubeconfig.into()))]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn with_user(user: serde_json::Value) -> String {
        json!({"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x"})
        .to_string()
    }

    async fn build(kubeconfig: &str, policy: KubeconfigPolicy) -> Result<Client, Error> {
        client_from_secret(&secret(kubeconfig), "m", Duration::from_secs(1), policy).await
    }

    #[tokio::test]
    async fn no_client_is_built_from_a_refused_kubeconfig() {
        // kube-rs runs an exec plugin while building the client: the marker file
        // shows whether the command ran.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("exec-ran");
        let credential = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}"#;
        let script = format!("touch '{}'; echo '{credential}'", marker.display());
        let exec = with_user(json!({"exec": {"command": "sh", "args": ["-c", script],
            "apiVersion": "client.authentication.k8s.io/v1"}}));
        let e = build(&exec, KubeconfigPolicy::InlineOnly)
            .await
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("users[0].user.exec") && e.to_string().contains("cluster m"),
            "{e}"
        );
        assert!(!marker.exists(), "the refused command ran");
        if let Err(e) = build(&exec, KubeconfigPolicy::AllowUnsafe).await {
            panic!("allowed: {e}");
        }
        assert!(marker.exists(), "the allowed command did not run");
        let token = with_user(json!({"token": CANARY}));
        assert!(build(&token, KubeconfigPolicy::InlineOnly).await.is_ok());
    }

    #[tokio::test]
    async fn errors_never_quote_the_kubeconfig() {
        let bad = [
            with_user(json!({"client-certificate-data": "Q0U=",
                "client-key-data": format!("!!{CANARY}")})),
            with_user(json!({"client-certificate-data": CANARY, "client-key-data": CANARY})),
            with_user(json!({"token": [CANARY]})),
            format!("users:\n- name: u\n  user:\n    token: {CANARY}\n  : : [\n"),
            format!("{{\"users\": [{CANARY}]}}"),
        ];
        for kubeconfig in bad {
            let e = build(&kubeconfig, KubeconfigPolicy::InlineOnly)
                .await
                .err()
                .expect("unusable credentials");
            let chain = anyhow_like(&e);
            assert!(!chain.contains(CANARY), "{chain}");
        }
    }

    /// The error and every source, as `{:#}` of anyhow would print them.
    fn anyhow_like(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}
