//! Health of backend endpoints: passive (a connection error or a 5xx ejects an
//! endpoint for a while, longer each time) and active (every endpoint in the table
//! is probed; a probe that fails marks it down, one that answers brings it back).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The first ejection; doubled per consecutive failure up to [`MAX_EJECTION`].
pub const BASE_EJECTION: Duration = Duration::from_secs(1);
pub const MAX_EJECTION: Duration = Duration::from_secs(30);
/// Consecutive 5xx answers that eject an endpoint (a connection failure ejects at
/// once): one failing request path must not take a whole cluster out.
pub const EJECT_AFTER_5XX: u32 = 3;

/// Probes that must fail in a row before an endpoint is down: one slow probe on a
/// busy host is not an outage.
pub const PROBE_FAILURES_TO_DOWN: u32 = 2;

#[derive(Default)]
struct Endpoint {
    /// The last active probe's verdict; `None` before the first.
    probe_ok: Option<bool>,
    /// Probes failed in a row.
    probes_failed: u32,
    ejected_until: Option<Instant>,
    failures: u32,
}

/// What is known of every endpoint's health.
pub struct Health {
    endpoints: Mutex<HashMap<String, Endpoint>>,
    /// Endpoints whose last request failed (changed under the lock): while none
    /// has, a success has nothing to reset and takes no lock, which every worker
    /// of the ingress would otherwise take on every request.
    failing: AtomicUsize,
    /// Bumped when an endpoint goes up or down: the routes are re-ranked.
    changed: watch::Sender<u64>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            endpoints: Mutex::default(),
            failing: AtomicUsize::new(0),
            changed: watch::channel(0).0,
        }
    }
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes whenever an endpoint goes up or down.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// `None` when `endpoint` may serve; else why not.
    pub fn verdict(&self, endpoint: &str) -> Option<String> {
        let endpoints = self.lock();
        let e = endpoints.get(endpoint)?;
        if let Some(until) = e.ejected_until.filter(|u| *u > Instant::now()) {
            let left = until.saturating_duration_since(Instant::now());
            return Some(format!(
                "ejected after {} failure(s), {} ms left",
                e.failures,
                left.as_millis()
            ));
        }
        (e.probe_ok == Some(false)).then(|| "its probe fails".to_string())
    }

    /// A request to `endpoint` failed: a connection failure or timeout (`hard`)
    /// ejects it at once, a 5xx after [`EJECT_AFTER_5XX`] in a row; each ejection
    /// lasts twice the one before, up to [`MAX_EJECTION`]. Returns whether it was
    /// ejected.
    pub fn report_failure(&self, endpoint: &str, hard: bool) -> bool {
        let ejected = {
            let mut endpoints = self.lock();
            let e = endpoints.entry(endpoint.to_string()).or_default();
            if e.failures == 0 {
                self.failing.fetch_add(1, Ordering::Relaxed);
            }
            e.failures = e.failures.saturating_add(1);
            let threshold = if hard { 1 } else { EJECT_AFTER_5XX };
            let eject = e.failures >= threshold;
            if eject {
                let backoff = BASE_EJECTION
                    .saturating_mul(1 << (e.failures - threshold).min(8))
                    .min(MAX_EJECTION);
                e.ejected_until = Some(Instant::now() + backoff);
            }
            eject
        };
        if ejected {
            tracing::info!(%endpoint, "backend ejected");
            self.changed.send_modify(|v| *v += 1);
        }
        ejected
    }

    /// A request to `endpoint` succeeded: its failure count starts again.
    pub fn report_success(&self, endpoint: &str) {
        if self.failing.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(e) = self.lock().get_mut(endpoint) {
            if e.failures > 0 {
                e.failures = 0;
                self.failing.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// An active probe's verdict. An answering endpoint whose ejection ran out is
    /// back; one whose probe fails is down until a probe answers.
    pub fn probed(&self, endpoint: &str, ok: bool) {
        let flipped = {
            let mut endpoints = self.lock();
            let e = endpoints.entry(endpoint.to_string()).or_default();
            let before = e.probe_ok;
            e.probes_failed = if ok {
                0
            } else {
                e.probes_failed.saturating_add(1)
            };
            if ok || e.probes_failed >= PROBE_FAILURES_TO_DOWN {
                e.probe_ok = Some(ok);
            }
            let expired = e.ejected_until.is_some_and(|u| u <= Instant::now());
            if ok && expired {
                e.ejected_until = None;
            }
            before != e.probe_ok || (ok && expired)
        };
        if flipped {
            tracing::info!(%endpoint, ok, "backend probe");
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Forgets endpoints no route uses any more.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        let mut endpoints = self.lock();
        endpoints.retain(|k, _| live.contains(k));
        let failing = endpoints.values().filter(|e| e.failures > 0).count();
        self.failing.store(failing, Ordering::Relaxed);
    }
}

/// Probes every endpoint of the current table each `probe_interval`: an endpoint
/// that answers (any status below 500) within `probe_timeout` is up.
pub(crate) async fn probe_loop(router: std::sync::Arc<super::Router>, config: super::RouterConfig) {
    let client = crate::http::http_client();
    loop {
        let endpoints = super::build::endpoints(&router.table());
        let probes = endpoints.iter().map(|endpoint| {
            let client = client.clone();
            async move {
                let ok = probe(&client, endpoint, config.probe_timeout).await;
                (endpoint, ok)
            }
        });
        for (endpoint, ok) in futures::future::join_all(probes).await {
            router.health.probed(endpoint, ok);
        }
        tokio::time::sleep(config.probe_interval).await;
    }
}

async fn probe(client: &crate::http::HttpClient, endpoint: &str, timeout: Duration) -> bool {
    let Ok(request) = hyper::Request::get(format!("{endpoint}/"))
        .header(hyper::header::USER_AGENT, "fedwasm-probe")
        .body(crate::http::empty_body())
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(timeout, client.request(request)).await,
        Ok(Ok(response)) if response.status().as_u16() < 500
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_eject_longer_each_time_and_probes_bring_back() {
        let h = Health::default();
        let ep = "http://127.0.0.1:1";
        assert!(h.verdict(ep).is_none(), "unknown endpoints may serve");
        assert!(h.report_failure(ep, true));
        assert!(h.verdict(ep).unwrap().contains("ejected after 1"));
        assert!(h.report_failure(ep, true));
        let v = h.verdict(ep).unwrap();
        assert!(v.contains("ejected after 2"), "{v}");
        // A probe that answers during the ejection does not cut it short.
        h.probed(ep, true);
        assert!(h.verdict(ep).is_some());
        h.probed("http://other", false);
        assert!(
            h.verdict("http://other").is_none(),
            "one failed probe is not an outage"
        );
        h.probed("http://other", false);
        assert_eq!(
            h.verdict("http://other").as_deref(),
            Some("its probe fails")
        );
        h.probed("http://other", true);
        assert!(h.verdict("http://other").is_none());
        // 5xx answers eject only when they keep coming.
        let flaky = "http://flaky";
        assert!(!h.report_failure(flaky, false) && !h.report_failure(flaky, false));
        assert!(h.verdict(flaky).is_none());
        assert!(h.report_failure(flaky, false));
        assert!(h.verdict(flaky).is_some());
        // A success starts the count of 5xx answers in a row again.
        let healed = "http://healed";
        assert!(!h.report_failure(healed, false) && !h.report_failure(healed, false));
        h.report_success(healed);
        assert!(!h.report_failure(healed, false) && !h.report_failure(healed, false));
        h.report_success(healed);
        h.report_success(flaky);
        h.report_success(ep);
        assert_eq!(h.failing.load(Ordering::Relaxed), 0);
        assert!(!h.report_failure(healed, false));
        h.retain(&Default::default());
        assert_eq!(h.failing.load(Ordering::Relaxed), 0);
        assert!(h.verdict(ep).is_none());
    }
}
