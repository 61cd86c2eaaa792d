//! The member view: joined clusters, one client per member with its deadlines, the
//! health prober (the only writer of Cluster status), and a read-only [`Snapshot`]
//! that the controller (and later the ingress, DNS and leader) subscribe to.
//!
//! Entry point: [`Fleet::start`]. Each member is probed by its own task, so a member
//! that hangs never delays what is known about the others, and nothing waits for a
//! first probe: the snapshot is published as soon as the Cluster list is read.

pub mod client;
pub mod cluster;
pub mod join;
pub mod kubeconfig;
mod prober;

use std::sync::Arc;
use std::time::Duration;

use kube::{Client, ResourceExt};
use tokio::sync::watch;

pub use client::{MemberClient, MemberError};
use cluster::Cluster;

use crate::metrics::Metrics;

/// Field manager of everything fedwasm writes.
pub const FIELD_MANAGER: &str = "fedwasm";
/// Label on every object fedwasm created in a member; objects without it are never
/// touched (unless the federation object asks for adoption).
pub const MANAGED_BY_LABEL: &str = "fedwasm.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "fedwasm";

/// Errors of the member view.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Config(String),
    /// A member kubeconfig that is malformed or not inline data only; the message
    /// never quotes it.
    #[error("the kubeconfig of cluster {cluster}: {source}")]
    Kubeconfig {
        cluster: String,
        #[source]
        source: kubeconfig::KubeconfigError,
    },
}

impl Error {
    pub(crate) fn kube(context: &str, source: kube::Error) -> Self {
        Error::Kube {
            context: context.to_string(),
            source,
        }
    }
}

/// Runs `call` again (up to 5 times, 200 ms apart) while it fails at the transport
/// level: an apiserver may drop pooled connections, e.g. right after a CRD is
/// installed. API answers (404, 409, 422, ...) are returned at once.
pub(crate) async fn retry_transient<T, F, Fut>(mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e @ (kube::Error::Service(_) | kube::Error::HyperError(_))) if attempt < 4 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "transient API error; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// How members are reached and probed.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Time between probes of one member.
    pub probe_interval: Duration,
    /// Time a member may fail probes before it is marked Offline.
    pub offline_grace: Duration,
    /// Deadline of one probe, the whole request.
    pub probe_timeout: Duration,
    /// Deadline of any one request to a member, the whole request (connect, send,
    /// every byte of the answer): a member that accepts connections and never
    /// answers fails this request, and only this one.
    pub request_timeout: Duration,
    /// Requests in flight to one member at most; more wait (within their deadline).
    pub max_in_flight: usize,
    /// Whether this host writes Cluster status (only the leader does); a standby
    /// probes for its own view and writes nothing.
    pub status_writes: crate::leader::WriteGate,
    /// Whether member kubeconfigs may run commands, read the host's files or skip
    /// TLS verification (`--allow-unsafe-kubeconfig`); by default they may not.
    pub kubeconfig_policy: kubeconfig::KubeconfigPolicy,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(2),
            offline_grace: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_in_flight: 32,
            status_writes: Default::default(),
            kubeconfig_policy: kubeconfig::KubeconfigPolicy::InlineOnly,
        }
    }
}

/// One member as the others see it: its Cluster object (spec, labels, status as last
/// probed) and a client, once its credentials could be read.
#[derive(Clone)]
pub struct Member {
    pub cluster: Cluster,
    pub client: Option<MemberClient>,
}

impl Member {
    pub fn name(&self) -> String {
        self.cluster.name_any()
    }
}

/// Every joined member, sorted by name. `epoch` changes whenever something that
/// placement depends on changes (a member joins or leaves, its phase, labels, region,
/// zone or capacity), not on every probe.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub members: Arc<Vec<Member>>,
    pub epoch: u64,
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.cluster.metadata.name.as_deref() == Some(name))
    }
}

/// The member view. Cheap to share (`Arc`); dropping the last handle does not stop
/// the prober: [`Fleet::start`] returns the task's handle for that.
pub struct Fleet {
    tx: watch::Sender<Snapshot>,
}

impl Fleet {
    /// Starts watching Cluster objects and probing each member on its own task.
    pub fn start(
        federation: Client,
        config: FleetConfig,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let fleet = Arc::new(Self {
            tx: watch::channel(Snapshot::default()).0,
        });
        let task = tokio::spawn(prober::run(fleet.clone(), federation, config, metrics));
        (fleet, task)
    }

    /// The members now.
    pub fn snapshot(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    /// Changes whenever a new snapshot is published.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    pub(crate) fn publish(&self, members: Vec<Member>, placement_changed: bool) {
        self.tx.send_modify(|s| {
            s.members = Arc::new(members);
            if placement_changed {
                s.epoch += 1;
            }
        });
    }
}
