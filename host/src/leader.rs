//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: one
//! of several `fedwasm run` processes against a federation plane reconciles and
//! writes Cluster status; the others stand by (serving the admin API, the ingress
//! and DNS from their own member view) and take over when the lease runs out.
//!
//! - A lease is free when nobody holds it, or when its record has not changed for
//!   `lease_duration` as *this* process observed it (no clock is compared across
//!   hosts).
//! - Taking or renewing is an update with the record's `resourceVersion`: of two
//!   candidates only one succeeds.
//! - The leader renews every `retry_period`; when it could not renew for
//!   `renew_deadline` (every request bounded as a whole), it has lost: [`run`]
//!   returns and the host exits at once, so a supervisor restarts it. Since
//!   `renew_deadline < lease_duration`, a leader cut off from the federation plane
//!   stops before anyone else may start.
//! - On a graceful stop the leader releases the lease, so a standby takes over at
//!   its next try instead of after `lease_duration`.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use serde::Serialize;
use tokio::sync::watch;

use crate::fleet::cluster::SYSTEM_NAMESPACE;

/// The Lease every fedwasm host of a federation competes for.
pub const LEASE_NAME: &str = "fedwasm";

/// Timing and identity of the election (defaults as controller-runtime's).
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// This process, as written in the lease (`holderIdentity`).
    pub identity: String,
    pub namespace: String,
    pub name: String,
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// Time between tries (to take, or to renew).
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// The defaults, with an identity of `$HOSTNAME` (the pod name in a cluster)
    /// plus a random suffix, so two processes on one host differ.
    pub fn new() -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "fedwasm".into());
        let suffix = {
            let mut bytes = [0u8; 4];
            if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
                use std::io::Read as _;
                let _ = f.read_exact(&mut bytes);
            }
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        Self {
            identity: format!("{host}_{suffix}"),
            namespace: SYSTEM_NAMESPACE.into(),
            name: LEASE_NAME.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Refuses timings that would let two leaders overlap.
    pub fn validate(&self) -> Result<(), Error> {
        if self.retry_period.is_zero() || self.renew_deadline <= self.retry_period {
            return Err(Error::Config(format!(
                "the renew deadline ({:?}) must be longer than the retry period ({:?})",
                self.renew_deadline, self.retry_period
            )));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(Error::Config(format!(
                "the lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            )));
        }
        Ok(())
    }
}

impl Default for ElectionConfig {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election: {0}")]
    Config(String),
    #[error("lost the lease {namespace}/{name}: not renewed for {deadline:?} ({last})")]
    Lost {
        namespace: String,
        name: String,
        deadline: Duration,
        last: String,
    },
}

/// Who leads, as this process knows it; `GET /leader` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Leadership {
    /// This process's identity.
    pub identity: String,
    /// The holder of the lease when last read (`None`: free or not read yet).
    pub leader: Option<String>,
    /// Whether this process leads now.
    pub leading: bool,
}

/// Whether this process may write what only the leader writes (Cluster status).
/// Without an election it always may.
#[derive(Clone, Debug, Default)]
pub struct WriteGate(Option<watch::Receiver<Leadership>>);

impl WriteGate {
    /// Open while `leadership` says this process leads.
    pub fn while_leading(leadership: watch::Receiver<Leadership>) -> Self {
        Self(Some(leadership))
    }

    pub fn is_open(&self) -> bool {
        self.0.as_ref().is_none_or(|l| l.borrow().leading)
    }
}

/// What one try found.
enum Outcome {
    /// We hold the lease (taken or renewed).
    Held,
    /// Someone else holds a live lease.
    Other(String),
}

/// The elector's memory of the lease record, for expiry by observed time.
struct Observed {
    record: Option<(Option<String>, Option<String>, Option<i32>)>,
    at: Instant,
}

/// Campaigns, leads and renews until the lease is lost (returns the error) or
/// `stop` fires (releases the lease if held and returns `Ok`). `state` always holds
/// the latest [`Leadership`].
pub async fn run(
    client: Client,
    config: ElectionConfig,
    state: watch::Sender<Leadership>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    config.validate()?;
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut observed = Observed {
        record: None,
        at: Instant::now(),
    };
    let mut last_renew: Option<Instant> = None;
    let mut last_error = String::new();
    loop {
        // A leader's try may take until its renew deadline, a candidate's up to
        // the renew deadline too: a busy federation plane must not cost the
        // lease, but no try waits for ever.
        let bound = match last_renew {
            Some(at) => config
                .renew_deadline
                .saturating_sub(at.elapsed())
                .max(Duration::from_millis(100)),
            None => config.renew_deadline,
        };
        let attempt =
            tokio::time::timeout(bound, try_once(&client, &api, &config, &mut observed)).await;
        let leading_before = last_renew.is_some();
        match attempt {
            Ok(Ok(Outcome::Held)) => {
                if !leading_before {
                    tracing::info!(identity = %config.identity, lease = %config.name, "became the leader");
                }
                last_renew = Some(Instant::now());
                publish(&state, &config, Some(config.identity.clone()), true);
            }
            Ok(Ok(Outcome::Other(holder))) => {
                if leading_before {
                    // Someone else holds it: we lost it, whatever the deadline says.
                    return Err(lost(&config, format!("{holder} holds it now")));
                }
                publish(&state, &config, Some(holder), false);
            }
            Ok(Err(e)) => {
                last_error = e.to_string();
                tracing::warn!(error = %e, leading = leading_before, "leader election: trying the lease");
            }
            Err(_) => {
                last_error = "the federation plane did not answer in time".into();
                tracing::warn!(
                    leading = leading_before,
                    "leader election: the federation plane did not answer in time"
                );
            }
        }
        if let Some(at) = last_renew {
            if at.elapsed() >= config.renew_deadline {
                return Err(lost(&config, last_error));
            }
        }
        let stopping = tokio::select! {
            _ = tokio::time::sleep(config.retry_period) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            if last_renew.is_some() {
                release(&api, &config).await;
            }
            publish(&state, &config, None, false);
            return Ok(());
        }
    }
}

fn lost(config: &ElectionConfig, last: String) -> Error {
    Error::Lost {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        deadline: config.renew_deadline,
        last,
    }
}

fn publish(
    state: &watch::Sender<Leadership>,
    config: &ElectionConfig,
    leader: Option<String>,
    leading: bool,
) {
    let next = Leadership {
        identity: config.identity.clone(),
        leader,
        leading,
    };
    state.send_if_modified(|s| {
        let changed = *s != next;
        *s = next;
        changed
    });
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One read and, when the lease is ours or free, one write.
async fn try_once(
    client: &Client,
    api: &Api<Lease>,
    config: &ElectionConfig,
    observed: &mut Observed,
) -> Result<Outcome, kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        // The namespace may not exist yet in a fresh federation plane.
        let _ = crate::fleet::join::ensure_system_namespace(client).await;
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(secs(config.lease_duration)),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Outcome::Held),
            // Another candidate created it first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Outcome::Other(String::new())),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let record = (
        holder.clone(),
        spec.renew_time.as_ref().map(|t| t.0.to_string()),
        spec.lease_transitions,
    );
    if observed.record.as_ref() != Some(&record) {
        observed.record = Some(record);
        observed.at = Instant::now();
    }
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(config.lease_duration);
    let ours = holder.as_deref() == Some(config.identity.as_str());
    let expired = observed.at.elapsed() >= duration;
    if let (Some(other), false, false) = (&holder, ours, expired) {
        return Ok(Outcome::Other(other.clone()));
    }
    let mut next = spec;
    if !ours {
        next.acquire_time = Some(now());
        next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
    }
    next.holder_identity = Some(config.identity.clone());
    next.lease_duration_seconds = Some(secs(config.lease_duration));
    next.renew_time = Some(now());
    lease.spec = Some(next);
    // The resourceVersion read above makes this a compare-and-swap.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(Outcome::Held),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Outcome::Other(holder.unwrap_or_default())),
        Err(e) => Err(e),
    }
}

fn secs(d: Duration) -> i32 {
    d.as_secs().clamp(1, i32::MAX as u64) as i32
}

/// Gives the lease up: no holder, so the next try of a standby takes it.
async fn release(api: &Api<Lease>, config: &ElectionConfig) {
    let release = async {
        let mut lease = api.get(&config.name).await?;
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        api.replace(&config.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    };
    // Bounded, but not too tightly: a busy federation plane may take a moment,
    // and an unreleased lease costs a standby `lease_duration`.
    let bound = config.renew_deadline.min(Duration::from_secs(4));
    match tokio::time::timeout(bound, release).await {
        Ok(Ok(())) => tracing::info!(identity = %config.identity, "released the lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease"),
        Err(_) => tracing::warn!("releasing the lease: no answer in time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_that_could_overlap_are_refused() {
        let mut c = ElectionConfig::new();
        assert!(c.validate().is_ok());
        c.renew_deadline = c.lease_duration;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lease duration"));
        c = ElectionConfig::new();
        c.retry_period = c.renew_deadline;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retry period"));
    }

    #[test]
    fn identities_differ_between_processes_on_one_host() {
        assert_ne!(
            ElectionConfig::new().identity,
            ElectionConfig::new().identity
        );
    }
}
