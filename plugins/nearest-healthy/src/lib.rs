//! nearest-healthy: the default rank plugin for the global ingress.
//!
//! Orders backends for one client, best first:
//!
//! 1. usable backends (healthy and not full) before unusable ones, which stay in
//!    the list, last, so the proxy can still fall back to them;
//! 2. within each group: the client's zone, then its region, then other regions by
//!    great-circle distance between region centres (the positions the host sends,
//!    from its locality file's `regions` over the SDK's table of GCE, AWS and Azure
//!    regions; the SDK's table when the host sent none), then regions of unknown
//!    position;
//! 3. ties: more spare capacity first (unknown counts as most), then cluster name.
//!
//! An empty region is derived from a zone named like `europe-west1-b` (GCE) or
//! `us-east-1a` (AWS).

use fedwasm_sdk::regions::{distance_km, region_of};
use fedwasm_sdk::{export_plugin, Backend, Hook, Location, Plugin, RankRequest};

/// The plugin registered with the host.
pub struct NearestHealthy;

impl Plugin for NearestHealthy {
    const HOOKS: &'static [Hook] = &[Hook::Rank];

    fn rank(request: RankRequest) -> Result<Vec<u32>, String> {
        Ok(rank(&request))
    }
}

export_plugin!(NearestHealthy);

fn usable(b: &Backend) -> bool {
    b.healthy && b.available != Some(0)
}

/// Locality rank: 0 same zone, 1 same region, 2 other known region (then by
/// distance), 3 unknown.
fn locality(client: &Location, client_region: &str, b: &Backend) -> (u8, u64) {
    let region = region_of(&b.region, &b.zone);
    if !client.zone.is_empty() && b.zone == client.zone {
        return (0, 0);
    }
    if !client_region.is_empty() && region == client_region {
        return (1, 0);
    }
    let here = client
        .position
        .or_else(|| fedwasm_sdk::regions::position(client_region));
    let there = b
        .position
        .or_else(|| fedwasm_sdk::regions::position(region));
    match (here, there) {
        (Some(c), Some(r)) => (2, distance_km(c, r) as u64),
        // No client location: every region is as near as any other.
        (None, Some(_)) if client_region.is_empty() => (2, 0),
        _ => (3, 0),
    }
}

/// Orders `request.backends`, best first, as a permutation of their indices.
pub fn rank(request: &RankRequest) -> Vec<u32> {
    let client = &request.client;
    let client_region = region_of(&client.region, &client.zone);
    let mut keyed: Vec<_> = request
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (tier, km) = locality(client, client_region, b);
            // More spare capacity first; unknown counts as most.
            let spare = std::cmp::Reverse(b.available.map(u64::from).unwrap_or(u64::MAX));
            ((!usable(b), tier, km, spare), b.cluster.as_str(), i as u32)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(.., i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedwasm_sdk::Coordinates;

    fn walkthrough() -> Vec<Backend> {
        fedwasm_sdk::WALKTHROUGH_CLUSTERS
            .iter()
            .map(|(name, region, zone)| Backend {
                cluster: name.to_string(),
                region: region.to_string(),
                zone: zone.to_string(),
                healthy: true,
                ..Default::default()
            })
            .collect()
    }

    fn order(req: &RankRequest) -> Vec<String> {
        let ranked = rank(req);
        let mut seen = ranked.clone();
        seen.sort();
        assert_eq!(
            seen,
            (0..req.backends.len() as u32).collect::<Vec<_>>(),
            "a permutation"
        );
        ranked
            .iter()
            .map(|&i| req.backends[i as usize].cluster.clone())
            .collect()
    }

    fn client(region: &str, zone: &str) -> Location {
        Location {
            region: region.into(),
            zone: zone.into(),
            position: None,
        }
    }

    #[test]
    fn same_zone_then_region_then_nearest_region() {
        let req = RankRequest {
            client: client("europe-west1", "europe-west1-c"),
            backends: walkthrough(),
            ..Default::default()
        };
        let got = order(&req);
        assert_eq!(got[0], "gce-europe-west1-c");
        assert_eq!(&got[1..3], ["gce-europe-west1-b", "gce-europe-west1-d"]);
        assert!(got[3].starts_with("gce-us-central1"), "{got:?}");
        assert!(got[8].starts_with("gce-asia-east1"), "{got:?}");
    }

    #[test]
    fn unhealthy_and_full_go_last() {
        let mut backends = walkthrough();
        backends[4].healthy = false; // gce-europe-west1-c
        backends[3].available = Some(0); // gce-europe-west1-b
        let req = RankRequest {
            client: client("", "europe-west1-c"),
            backends,
            ..Default::default()
        };
        let got = order(&req);
        assert_eq!(got[0], "gce-europe-west1-d");
        // Unusable ones last, in the same locality order among themselves.
        assert_eq!(&got[7..], ["gce-europe-west1-c", "gce-europe-west1-b"]);
    }

    #[test]
    fn capacity_then_name_break_ties() {
        let mut backends = walkthrough();
        backends[6].available = Some(3);
        backends[7].available = Some(9);
        let req = RankRequest {
            client: client("us-central1", ""),
            backends,
            ..Default::default()
        };
        let got = order(&req);
        assert_eq!(
            &got[..3],
            [
                "gce-us-central1-c",
                "gce-us-central1-b",
                "gce-us-central1-a"
            ]
        );
    }

    #[test]
    fn unknown_places_and_empty_lists() {
        assert!(rank(&RankRequest::default()).is_empty());
        let mut backends = walkthrough();
        backends.push(Backend {
            cluster: "onprem".into(),
            region: "basement".into(),
            healthy: true,
            ..Default::default()
        });
        let got = order(&RankRequest {
            client: client("asia-east1", ""),
            backends: backends.clone(),
            ..Default::default()
        });
        assert_eq!(got.last().unwrap(), "onprem");
        // No client location: usable first, then by name.
        let got = order(&RankRequest {
            client: Location::default(),
            backends,
            ..Default::default()
        });
        assert_eq!(got[0], "gce-asia-east1-a");
    }

    #[test]
    fn positions_the_host_sends_win_over_the_table() {
        let berlin = Coordinates {
            latitude: 52.52,
            longitude: 13.40,
        };
        let mut backends = walkthrough();
        backends.push(Backend {
            cluster: "onprem".into(),
            region: "basement".into(),
            position: Some(berlin),
            healthy: true,
            ..Default::default()
        });
        // A client of a region no table knows, placed by the host next to Berlin.
        let got = order(&RankRequest {
            client: Location {
                region: "office-potsdam".into(),
                zone: String::new(),
                position: Some(Coordinates {
                    latitude: 52.39,
                    longitude: 13.06,
                }),
            },
            backends: backends.clone(),
            ..Default::default()
        });
        assert_eq!(got[0], "onprem");
        assert!(got[1].starts_with("gce-europe-west1"), "{got:?}");
        // A position sent for a known region moves it: Europe "in" Taiwan.
        for b in &mut backends[3..6] {
            b.position = fedwasm_sdk::regions::position("asia-east2");
        }
        let got = order(&RankRequest {
            client: client("asia-east1", ""),
            backends,
            ..Default::default()
        });
        assert!(got[3].starts_with("gce-europe-west1"), "{got:?}");
    }
}
