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
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::Semaphore;

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

/// A member's client: every call through [`MemberClient::call`] is bounded as a
/// whole, and at most `max_in_flight` run at once.
#[derive(Clone)]
pub struct MemberClient {
    cluster: Arc<str>,
    client: Client,
    deadline: Duration,
    permits: Arc<Semaphore>,
}

impl MemberClient {
    pub fn new(cluster: &str, client: Client, deadline: Duration, max_in_flight: usize) -> Self {
        Self {
            cluster: cluster.into(),
            client,
            deadline,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// The raw client, for building `Api`s; run requests through [`Self::call`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Runs one request under the member's deadline (waiting for a free slot counts).
    pub async fn call<T, F>(&self, request: F) -> Result<T, MemberError>
    where
        F: Future<Output = Result<T, kube::Error>>,
    {
        self.call_within(self.deadline, request).await
    }

    /// As [`Self::call`] with another deadline (probes use a shorter one).
    pub async fn call_within<T, F>(&self, deadline: Duration, request: F) -> Result<T, MemberError>
    where
        F: Future<Output = Result<T, kube::Error>>,
    {
        let bounded = async {
            let _permit = self.permits.acquire().await;
            request.await
        };
        match tokio::time::timeout(deadline, bounded).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source @ kube::Error::Api(_))) => Err(MemberError::Api {
                cluster: self.cluster.to_string(),
                source,
            }),
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

/// A client from the `kubeconfig` key of a member's Secret. Connecting is bounded
/// here; whole requests are bounded by [`MemberClient::call`].
pub async fn client_from_secret(
    secret: &Secret,
    cluster: &str,
    deadline: Duration,
) -> Result<Client, Error> {
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
    let kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|e| Error::Config(format!("the kubeconfig of cluster {cluster}: {e}")))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Config(format!("the kubeconfig of cluster {cluster}: {e}")))?;
    config.connect_timeout = Some(deadline.min(Duration::from_secs(2)));
    config.read_timeout = Some(deadline);
    config.write_timeout = Some(deadline);
    Client::try_from(config).map_err(|e| Error::kube(&format!("connecting to {cluster}"), e))
}
