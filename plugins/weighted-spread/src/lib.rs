//! weighted-spread: the default distribute plugin.
//!
//! It is the replica planner of the Kubernetes Federation and KubeFed, so a
//! `federation.kubernetes.io/replica-set-preferences` annotation means here what it
//! meant there:
//!
//! 1. every cluster gets its `minReplicas` first, heaviest weight first;
//! 2. with `rebalance: false`, clusters keep the replicas they already run (up to
//!    their maximum and capacity) before anything moves;
//! 3. the rest is spread by weight, rounding up, capped by `maxReplicas` and by
//!    capacity; repeated while replicas are left and some cluster can take more.
//!
//! Replicas planned beyond a cluster's capacity are reported as overflow (with
//! `rebalance: false`, only as many as could not be placed elsewhere). Ties between
//! equal weights are broken by a hash of the cluster name and the object key, as
//! KubeFed does: deterministic for an object, different between objects, so
//! single-replica objects do not all land in the alphabetically first cluster.
//!
//! Without preferences, replicas are spread evenly over every candidate: counts
//! differ by at most one (10 over 3 is 4/3/3, not KubeFed's 4/4/2), the tie-break
//! order deciding which clusters get one more. See `even_spread` for how this
//! treats capacity and the replicas running now.

use std::collections::BTreeMap;

use fedwasm_sdk::{
    export_plugin, ClusterPreference, DistributeRequest, DistributeResponse, Hook, Plugin,
    Preferences,
};

/// The plugin registered with the host.
pub struct WeightedSpread;

impl Plugin for WeightedSpread {
    const HOOKS: &'static [Hook] = &[Hook::Distribute];

    fn distribute(request: DistributeRequest) -> Result<DistributeResponse, String> {
        Ok(plan(&request))
    }
}

export_plugin!(WeightedSpread);

/// One candidate with the preference, capacity and current count that apply to it.
/// The planner works on a vector of these by index: no map lookups in its loops.
struct Candidate<'a> {
    /// Its position in `request.clusters`.
    index: usize,
    name: &'a str,
    hash: u32,
    min: u64,
    max: Option<u64>,
    weight: u64,
    capacity: Option<u64>,
    current: Option<u64>,
    planned: u64,
    preallocated: u64,
    overflow: u64,
}

/// KubeFed's tie-break, FNV-1 (not 1a) over the cluster name then the object key,
/// followed by a finalising mix. FNV-1 alone lets the last bytes of the key touch
/// only the low bits, so objects named `web-1`, `web-2`, … would all order the
/// clusters the same way; the mix spreads every byte over the whole word.
fn tie_break(cluster: &str, key: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in cluster.bytes().chain(key.bytes()) {
        hash = hash.wrapping_mul(0x0100_0193);
        hash ^= u32::from(b);
    }
    // murmur3's fmix32.
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    let hash = hash ^ (hash >> 16);
    // The scale benchmark's other plugin: the same plans with ties broken the
    // other way, so a swap moves one replica of objects whose replicas do not
    // divide evenly.
    if cfg!(feature = "ties-reversed") {
        !hash
    } else {
        hash
    }
}

/// The preferences that apply when an object has none: every candidate, weight 1,
/// rebalance on, planned by exact shares instead of KubeFed's rounded-up ones
/// (`plan` switches on `request.preferences.is_none()`).
///
/// - **Even**: each round gives every cluster still able to take more
///   `remaining / k` replicas, and the `remaining % k` left over go one each to the
///   clusters with the fewest so far, in tie-break order. With nothing capped, that
///   is `total / n` each plus one for the first `total % n` clusters in tie-break
///   order.
/// - **Capacity**: a cluster whose share exceeds its capacity gets its capacity, the
///   excess is reported as its overflow (as with explicit preferences), and the
///   next round spreads it evenly over the others, which stay within one of each
///   other.
/// - **Running replicas**: rebalance is on, so `current` is not consulted; the
///   spread is even whatever runs now (a cluster that took everything while the
///   others were away gives it back when they return). This moves no more than
///   necessary: the tie-break order is fixed for an object, so scaling by one
///   replica changes exactly one cluster by one, and only a change of candidates
///   or capacities moves replicas between clusters. Keeping running replicas in
///   place (rebalance off) would make the spread depend on history, e.g. leave
///   everything in the one cluster that was up when the object was created.
fn even_spread() -> Preferences {
    Preferences {
        rebalance: true,
        clusters: BTreeMap::from([(
            "*".to_string(),
            ClusterPreference {
                min_replicas: 0,
                max_replicas: None,
                weight: 1,
            },
        )]),
    }
}

/// Plans replicas per cluster. Plain Rust: the host's benchmark calls it natively.
/// Every candidate is in the returned plan; replicas that fit nowhere are left out.
pub fn plan(request: &DistributeRequest) -> DistributeResponse {
    let default;
    // No preferences: exact shares, not rounded up (see `even_spread`).
    let even = request.preferences.is_none();
    let preferences = match &request.preferences {
        Some(p) => p,
        None => {
            default = even_spread();
            &default
        }
    };
    let key = request.object.as_str();
    let mut out = DistributeResponse::default();
    let mut candidates: Vec<Candidate> = Vec::with_capacity(request.clusters.len());
    // Without preferences, the even spread's one `*` entry applies to every cluster.
    let everyone = if even {
        preferences.clusters.get("*")
    } else {
        None
    };
    for c in request.candidates() {
        let preference = if even { everyone } else { c.preference };
        // No entry and no `*`: this cluster gets nothing (zero in the plan).
        let Some(p) = preference else { continue };
        candidates.push(Candidate {
            index: c.index,
            name: c.name,
            hash: tie_break(c.name, key),
            min: u64::from(p.min_replicas),
            max: p.max_replicas.map(u64::from),
            weight: u64::from(p.weight),
            capacity: c.capacity.map(u64::from),
            current: c.current.map(u64::from),
            planned: 0,
            preallocated: 0,
            overflow: 0,
        });
    }
    // `then_with`: names are compared only on a tie, not on every comparison.
    candidates.sort_by(|a, b| {
        b.weight
            .cmp(&a.weight)
            .then(a.hash.cmp(&b.hash))
            .then_with(|| a.name.cmp(b.name))
    });
    // A name listed twice counts once (the sort made duplicates neighbours).
    let listed = candidates.len();
    candidates.dedup_by(|a, b| a.name == b.name);
    let listed_twice = candidates.len() < listed;

    let mut remaining = u64::from(request.total_replicas);
    for c in &mut candidates {
        let mut min = c.min.min(remaining);
        // A minimum above the maximum (a mistake in the annotation) gets the
        // maximum: the host rejects any count above it.
        if let Some(max) = c.max {
            min = min.min(max);
        }
        if let Some(cap) = c.capacity {
            min = min.min(cap);
        }
        remaining -= min;
        c.planned = min;
    }

    // Replicas kept where they run (rebalance off), handed out again first by the
    // weighted loop below so they count against that cluster's share.
    if !preferences.rebalance {
        for c in &mut candidates {
            let Some(count) = c.current else { continue };
            if count <= c.planned {
                continue;
            }
            let mut target = count;
            if let Some(max) = c.max {
                target = target.min(max);
            }
            if let Some(cap) = c.capacity {
                target = target.min(cap);
            }
            let extra = target.saturating_sub(c.planned).min(remaining);
            remaining -= extra;
            c.preallocated = extra;
            c.planned += extra;
        }
    }

    // Each round either places everything, fills at least one cluster, or uses up
    // preallocated replicas, so the loop ends after O(clusters * log(replicas)) rounds.
    let mut active: Vec<usize> = (0..candidates.len()).collect();
    let mut modified = true;
    while modified && remaining > 0 {
        modified = false;
        let weight_sum: u64 = active.iter().map(|&i| candidates[i].weight).sum();
        if weight_sum == 0 {
            break;
        }
        // remaining <= total (a u32) and weights are u32: the product fits in u64.
        let this_round = remaining;
        // Even spread: `base` each, and one more for the `bonus` clusters with the
        // fewest replicas so far, tie-break order among equals (`active` is in
        // tie-break order). Giving the extras to the emptiest clusters keeps the
        // uncapped ones within one of each other from round to round.
        let (base, bonus) = if even {
            let k = active.len() as u64;
            let mut order = active.clone();
            // Stable: equals stay in tie-break order.
            order.sort_by_key(|&i| candidates[i].planned);
            let mut bonus = vec![false; candidates.len()];
            for &i in &order[..(this_round % k) as usize] {
                bonus[i] = true;
            }
            (this_round / k, bonus)
        } else {
            (0, Vec::new())
        };
        active.retain(|&i| {
            let c = &mut candidates[i];
            let start = c.planned;
            // This cluster's share of the round: exact when even, else by weight,
            // rounded up.
            let share = if even {
                base + u64::from(bonus[i])
            } else {
                (this_round * c.weight).div_ceil(weight_sum)
            };
            let mut extra = share.min(remaining);
            let used = extra.min(c.preallocated);
            if used > 0 {
                c.preallocated -= used;
                modified = true;
            }
            extra -= used;
            let mut total = start + extra;
            let mut full = false;
            if let Some(max) = c.max {
                if total > max {
                    total = max;
                    full = true;
                }
            }
            if let Some(cap) = c.capacity {
                if total > cap {
                    c.overflow = total - cap;
                    total = cap;
                    full = true;
                }
            }
            // A maximum below the minimum gives replicas back (as KubeFed does).
            if total >= start {
                remaining -= total - start;
            } else {
                remaining += start - total;
            }
            c.planned = total;
            if total > start {
                modified = true;
            }
            !full
        });
    }

    let narrow = |v: u64| v.min(u64::from(u32::MAX)) as u32;
    // (planned, overflow) per position in the request; `None` for a cluster
    // without a preference (and for the second listing of a name).
    let mut planned: Vec<Option<(u32, u32)>> = vec![None; request.clusters.len()];
    for c in &candidates {
        // With rebalance off, only what could not be placed anywhere is worth
        // reporting.
        let overflow = if preferences.rebalance {
            c.overflow
        } else {
            c.overflow.min(remaining)
        };
        planned[c.index] = Some((narrow(c.planned), narrow(overflow)));
    }
    let entries = request.clusters.iter().zip(&planned);
    if listed_twice {
        for (name, p) in entries {
            let (count, overflow) = p.unwrap_or((0, 0));
            let slot = out.plan.entry(name.clone()).or_insert(0);
            *slot = (*slot).max(count);
            if overflow > 0 {
                out.overflow.insert(name.clone(), overflow);
            }
        }
    } else {
        // In the request's order: built in one pass when that is name order.
        out.plan = entries
            .clone()
            .map(|(name, p)| (name.clone(), p.map_or(0, |p| p.0)))
            .collect();
        out.overflow = entries
            .filter_map(|(name, p)| Some((name.clone(), p.filter(|p| p.1 > 0)?.1)))
            .collect();
    }
    out
}

#[cfg(test)]
mod tests;
