//! Shadow plugins: a file `NAME.shadow.wasm` in the plugin directory is loaded like
//! any plugin (compile, type check, smoke test, hot reload) but decides nothing.
//! Each placement the controller makes with `NAME` is made again in the
//! background with the shadow standing in for `NAME`, and the two are compared:
//! `fedwasm_shadow_decisions_total{plugin,result}`, the recent differences on
//! `GET /shadow`, and one event per object whose placement would change.
//!
//! A shadow never delays or fails the real placement: it runs after the decision,
//! on its own task, within its own budget (at most [`BUDGET`] shadow decisions at
//! once, each bounded by [`SHADOW_DEADLINE`], at most [`WAITING`] waiting for a turn,
//! each for at most [`WAIT`]); a slow or broken shadow only shows as
//! `result="error"`. Promoting it is renaming the file to `NAME.wasm`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::core::DynamicObject;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::federation::{Context, Decider, Placement};
use crate::fleet::Snapshot;
use crate::metrics::Metrics;

/// The file stem suffix of a shadow plugin: `NAME.shadow.wasm` shadows `NAME`.
pub const SHADOW_SUFFIX: &str = ".shadow";
/// Shadow decisions running at once at most; more wait for a turn.
pub const BUDGET: usize = 4;
/// Shadow decisions waiting for a turn at most, and how long one waits: beyond
/// either, a placement is not shadowed (counted as an error), so a slow shadow
/// cannot pile up work. (A shadow loaded into a federation of many objects has
/// every one placed again at once: they queue rather than go unshadowed.)
pub const WAITING: usize = 4096;
pub const WAIT: Duration = Duration::from_secs(30);
/// The longest one shadow decision may take, all its plugin calls included.
pub const SHADOW_DEADLINE: Duration = Duration::from_secs(2);
/// How many recent differences `GET /shadow` keeps.
const RECENT: usize = 100;

/// One placement on which a shadow disagreed with the serving plugins, or failed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Difference {
    /// `namespace/name`, or `name` for cluster-scoped objects.
    pub object: String,
    pub kind: String,
    /// The plugins whose shadows stood in (each `NAME` of a `NAME.shadow`).
    pub plugins: Vec<String>,
    /// Per member, the replicas the serving plugins gave it (1 for kinds without
    /// replicas).
    pub active: BTreeMap<String, u32>,
    /// The same as the shadows decided; absent when they failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<BTreeMap<String, u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// What the shadows said; one per host, shared by every clone of the placer.
pub struct Shadows {
    metrics: Arc<Metrics>,
    budget: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    recent: Mutex<VecDeque<Difference>>,
    /// Per object (uid): the placement the last event said the shadow would make,
    /// so an object gets one event per distinct difference, not one per reconcile.
    noted: Mutex<HashMap<String, BTreeMap<String, u32>>>,
}

impl Shadows {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            budget: Arc::new(Semaphore::new(BUDGET)),
            waiting: Arc::new(Semaphore::new(WAITING)),
            recent: Mutex::new(VecDeque::new()),
            noted: Mutex::new(HashMap::new()),
        }
    }

    /// The recent differences and failures, newest first.
    pub fn recent(&self) -> Vec<Difference> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    fn count(&self, plugins: &[String], result: &str) {
        for plugin in plugins {
            self.metrics.observe_shadow(plugin, result);
        }
    }

    fn remember(&self, difference: Difference) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(difference);
    }

    /// Whether `shadow` is news for the object (no event said it yet); forgets the
    /// object when the shadow agrees again.
    fn news(&self, uid: &str, shadow: Option<&BTreeMap<String, u32>>) -> bool {
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        match shadow {
            None => {
                noted.remove(uid);
                false
            }
            Some(s) if noted.get(uid) == Some(s) => false,
            Some(s) => {
                noted.insert(uid.to_string(), s.clone());
                true
            }
        }
    }
}

/// The per-member counts as `m1=2, m2=0`.
pub fn describe(placement: &BTreeMap<String, u32>) -> String {
    if placement.is_empty() {
        return "no cluster".into();
    }
    placement
        .iter()
        .map(|(c, n)| format!("{c}={n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks the shadows of the plugins behind `placement` (if any is loaded) what they
/// would decide, on a task of its own; returns at once.
pub(crate) fn compare_in_background(
    ctx: &Arc<Context>,
    obj: &DynamicObject,
    snapshot: &Snapshot,
    placement: &Placement,
) {
    let serving = ctx.shared.placer.registry().serving();
    if !serving.keys().any(|name| name.ends_with(SHADOW_SUFFIX)) {
        return;
    }
    let ctx = ctx.clone();
    let obj = obj.clone();
    let members = snapshot.members.clone();
    let active = placement.per_cluster();
    tokio::spawn(async move {
        let placer = &ctx.shared.placer;
        let policies = ctx.shared.policies.set();
        let decider = Decider {
            placer,
            federation: &ctx.shared.federation,
            kind: &ctx.kind,
            namespaces: Some(&ctx.shared.namespaces),
            policies: Some(&policies),
        };
        let substitutes: BTreeMap<_, _> = decider
            .plugins_asked(&obj)
            .await
            .into_iter()
            .filter_map(|name| {
                let shadow = serving.get(&format!("{name}{SHADOW_SUFFIX}"))?;
                Some((name, shadow.clone()))
            })
            .collect();
        if substitutes.is_empty() {
            return;
        }
        let shadows = placer.shadows().clone();
        let plugins: Vec<String> = substitutes.keys().cloned().collect();
        let turn = async {
            let _waiting = shadows.waiting.clone().try_acquire_owned().ok()?;
            tokio::time::timeout(WAIT, shadows.budget.clone().acquire_owned())
                .await
                .ok()?
                .ok()
        };
        let outcome = match turn.await {
            None => Err(format!(
                "not shadowed: {WAITING} shadow decisions waiting, or none of the {BUDGET} turns free within {WAIT:?}"
            )),
            Some(_permit) => {
                let shadow_placer = placer.substituting(substitutes);
                let decider = Decider {
                    placer: &shadow_placer,
                    ..decider
                };
                let mut warnings = Vec::new();
                match tokio::time::timeout(
                    SHADOW_DEADLINE,
                    decider.decide(&obj, &members, &mut warnings),
                )
                .await
                {
                    Err(_) => Err(format!(
                        "the shadow decision took longer than {SHADOW_DEADLINE:?}"
                    )),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(p)) => Ok(p.per_cluster()),
                }
            }
        };
        let uid = obj.uid().unwrap_or_else(|| crate::federation::key(&obj));
        let shadow = match outcome {
            Ok(shadow) if shadow == active => {
                shadows.count(&plugins, "same");
                shadows.news(&uid, None);
                return;
            }
            Ok(shadow) => {
                shadows.count(&plugins, "differs");
                Some(shadow)
            }
            Err(error) => {
                shadows.count(&plugins, "error");
                tracing::debug!(object = %crate::federation::key(&obj), %error, "shadow decision failed");
                shadows.remember(Difference {
                    object: crate::federation::key(&obj),
                    kind: ctx.kind.resource.kind.clone(),
                    plugins,
                    active,
                    shadow: None,
                    error: Some(error),
                    at: now(),
                });
                return;
            }
        };
        let news = shadows.news(&uid, shadow.as_ref());
        let shadow_text = shadow.as_ref().map(describe).unwrap_or_default();
        shadows.remember(Difference {
            object: crate::federation::key(&obj),
            kind: ctx.kind.resource.kind.clone(),
            plugins: plugins.clone(),
            active: active.clone(),
            shadow,
            error: None,
            at: now(),
        });
        if news {
            let names: Vec<String> = plugins
                .iter()
                .map(|p| format!("{p}{SHADOW_SUFFIX}"))
                .collect();
            let note = format!(
                "shadow plugin {} would place it on {shadow_text} (now {}); nothing was changed",
                names.join(", "),
                describe(&active)
            );
            crate::federation::events::publish(
                &ctx,
                &obj,
                EventType::Normal,
                "ShadowDiffers",
                note,
            )
            .await;
        }
    });
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_distinct_difference() {
        let shadows = Shadows::new(Arc::new(Metrics::new()));
        let a = BTreeMap::from([("m1".to_string(), 4), ("m2".to_string(), 0)]);
        let b = BTreeMap::from([("m1".to_string(), 3), ("m2".to_string(), 1)]);
        assert!(shadows.news("uid", Some(&a)));
        assert!(!shadows.news("uid", Some(&a)));
        assert!(shadows.news("uid", Some(&b)));
        assert!(!shadows.news("uid", None));
        assert!(shadows.news("uid", Some(&b)), "agreeing again resets");
        assert!(shadows.news("other", Some(&b)));
    }

    #[test]
    fn recent_keeps_the_newest_hundred() {
        let shadows = Shadows::new(Arc::new(Metrics::new()));
        for i in 0..(RECENT + 5) {
            shadows.remember(Difference {
                object: format!("ns/o{i}"),
                kind: "Deployment".into(),
                plugins: vec!["p".into()],
                active: BTreeMap::new(),
                shadow: None,
                error: Some("x".into()),
                at: now(),
            });
        }
        let recent = shadows.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].object, format!("ns/o{}", RECENT + 4));
        assert_eq!(recent[RECENT - 1].object, "ns/o5");
    }

    #[test]
    fn placements_read_as_counts() {
        assert_eq!(describe(&BTreeMap::new()), "no cluster");
        let p = BTreeMap::from([("m1".to_string(), 4), ("m2".to_string(), 0)]);
        assert_eq!(describe(&p), "m1=4, m2=0");
    }
}
