//! Kubernetes events (`events.k8s.io/v1`) from fedwasm, with repeats folded into a
//! series as `kubectl describe` expects: the same event about the same object within
//! [`SERIES_WINDOW`] patches the first one's `series` (count, last seen) instead of
//! creating another.
//!
//! kube's `Recorder` does the same but keeps a copy of every event it wrote (about
//! 1.5 KB each) for six minutes, and walks the whole cache on every publish. A
//! federation writes an event per object it propagates: at 5,000 objects that cache
//! held thousands of full events. This one remembers, per event, only what a repeat
//! needs: the event's name and namespace, its count and when it was last seen,
//! under a 64-bit hash of what makes two events the same (type, action, reason,
//! note, the object referred to).

use std::collections::hash_map::{DefaultHasher, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::Client;
use serde_json::json;

/// How long a repeat still joins the series of an earlier event.
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// How often forgotten series are dropped (on a publish; an idle host keeps the
/// few it has).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Where events about cluster-scoped objects go: the only namespace every
/// Kubernetes version accepts for them (1.20 refuses `default`).
const CLUSTER_SCOPED_NAMESPACE: &str = "kube-system";

/// An event already written, as much as a repeat needs.
struct Written {
    namespace: Box<str>,
    name: Box<str>,
    count: i32,
    last: Instant,
}

struct Series {
    written: HashMap<u64, Written>,
    swept: Instant,
}

/// Writes events to one cluster (the federation plane) as one controller.
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<Series>,
}

impl Recorder {
    /// Events reported by `controller`, from `instance` (the pod, when known).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            series: Mutex::new(Series {
                written: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `event` about `regarding`: a new event, or the next of its series.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = identity(event, regarding);
        let now = Instant::now();
        let repeat = {
            let mut series = self.lock();
            if now.duration_since(series.swept) >= SWEEP_EVERY {
                series
                    .written
                    .retain(|_, w| now.duration_since(w.last) < SERIES_WINDOW);
                // A burst's table shrinks back once its series are over.
                if series.written.capacity() > 4 * series.written.len() + 64 {
                    series.written.shrink_to_fit();
                }
                series.swept = now;
            }
            series
                .written
                .get(&key)
                .filter(|w| now.duration_since(w.last) < SERIES_WINDOW)
                .map(|w| (w.namespace.clone(), w.name.clone(), w.count + 1))
        };
        if let Some((namespace, name, count)) = repeat {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(Timestamp::now()),
            };
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            let patched = api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "series": series })),
                )
                .await;
            match patched {
                Ok(_) => {
                    let written = Written {
                        namespace,
                        name,
                        count,
                        last: now,
                    };
                    self.lock().written.insert(key, written);
                    return Ok(());
                }
                // Gone (the apiserver's event TTL, or deleted by hand): a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let body = self.event(event, regarding);
        let namespace = body.metadata.namespace.clone().unwrap_or_default();
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let created = api.create(&PostParams::default(), &body).await?;
        let written = Written {
            namespace: namespace.into(),
            name: created.metadata.name.unwrap_or_default().into(),
            count: 1,
            last: now,
        };
        self.lock().written.insert(key, written);
        Ok(())
    }

    /// A new event's body.
    fn event(&self, event: &Event, regarding: &ObjectReference) -> K8sEvent {
        let now = Timestamp::now();
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| CLUSTER_SCOPED_NAMESPACE.to_string());
        K8sEvent {
            metadata: ObjectMeta {
                // Unique per object and instant, like kubectl's own recorders.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace),
                ..Default::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(kind(event.type_).to_string()),
            ..Default::default()
        }
    }
}

fn kind(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// What makes two events the same, hashed. Two different events share a hash with
/// a probability of about n²/2⁶⁵ for n remembered; the worst a collision does is
/// count one as a repeat of the other.
fn identity(event: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = DefaultHasher::new();
    kind(event.type_).hash(&mut h);
    event.action.hash(&mut h);
    event.reason.hash(&mut h);
    event.note.hash(&mut h);
    reference(regarding, &mut h);
    if let Some(related) = &event.secondary {
        reference(related, &mut h);
    }
    h.finish()
}

fn reference(r: &ObjectReference, h: &mut DefaultHasher) {
    r.api_version.hash(h);
    r.kind.hash(h);
    r.namespace.hash(h);
    r.name.hash(h);
    r.uid.hash(h);
    r.field_path.hash(h);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Propagate".into(),
            secondary: None,
        }
    }

    #[test]
    fn the_same_event_about_the_same_object_is_one_series() {
        let a = identity(&event("Propagated", "to 3 clusters"), &about("web"));
        assert_eq!(
            a,
            identity(&event("Propagated", "to 3 clusters"), &about("web"))
        );
        // Any difference is another event.
        assert_ne!(
            a,
            identity(&event("Propagated", "to 2 clusters"), &about("web"))
        );
        assert_ne!(
            a,
            identity(&event("Rejected", "to 3 clusters"), &about("web"))
        );
        assert_ne!(
            a,
            identity(&event("Propagated", "to 3 clusters"), &about("api"))
        );
        let mut warning = event("Propagated", "to 3 clusters");
        warning.type_ = EventType::Warning;
        assert_ne!(a, identity(&warning, &about("web")));
    }
}
