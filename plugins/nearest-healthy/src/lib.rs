//! nearest-healthy: the default rank plugin for the global ingress.
//!
//! Orders backends for one client, best first:
//!
//! 1. usable backends (healthy and not full) before unusable ones, which stay in
//!    the list, last, so the proxy can still fall back to them;
//! 2. within each group: the client's zone, then its region, then other regions by
//!    great-circle distance between region centres (a built-in table of GCE, AWS and
//!    Azure regions), then regions the table does not know;
//! 3. ties: more spare capacity first (unknown counts as most), then cluster name.
//!
//! An empty region is derived from a zone named like `europe-west1-b` (GCE) or
//! `us-east-1a` (AWS).

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

/// Approximate centres of cloud regions (latitude, longitude in degrees).
const REGIONS: &[(&str, f64, f64)] = &[
    // GCE
    ("asia-east1", 24.05, 120.52),
    ("asia-east2", 22.32, 114.17),
    ("asia-northeast1", 35.69, 139.69),
    ("asia-northeast3", 37.57, 126.98),
    ("asia-south1", 19.08, 72.88),
    ("asia-southeast1", 1.35, 103.82),
    ("australia-southeast1", -33.87, 151.21),
    ("europe-north1", 60.57, 27.19),
    ("europe-west1", 50.45, 3.82),
    ("europe-west2", 51.51, -0.13),
    ("europe-west3", 50.11, 8.68),
    ("europe-west4", 53.44, 6.84),
    ("northamerica-northeast1", 45.50, -73.57),
    ("southamerica-east1", -23.55, -46.63),
    ("us-central1", 41.26, -95.86),
    ("us-east1", 33.20, -80.01),
    ("us-east4", 39.04, -77.49),
    ("us-west1", 45.60, -121.18),
    ("us-west2", 34.05, -118.24),
    // AWS
    ("us-east-1", 38.95, -77.45),
    ("us-east-2", 40.42, -82.91),
    ("us-west-1", 37.35, -121.96),
    ("us-west-2", 45.84, -119.70),
    ("ca-central-1", 45.50, -73.57),
    ("eu-west-1", 53.35, -6.26),
    ("eu-west-2", 51.51, -0.13),
    ("eu-central-1", 50.11, 8.68),
    ("eu-north-1", 59.33, 18.07),
    ("ap-southeast-1", 1.35, 103.82),
    ("ap-southeast-2", -33.87, 151.21),
    ("ap-northeast-1", 35.69, 139.69),
    ("ap-south-1", 19.08, 72.88),
    ("sa-east-1", -23.55, -46.63),
    // Azure
    ("westeurope", 52.37, 4.90),
    ("northeurope", 53.35, -6.26),
    ("eastus", 37.37, -79.82),
    ("eastus2", 36.67, -78.39),
    ("westus", 37.78, -122.42),
    ("westus2", 47.23, -119.85),
    ("centralus", 41.59, -93.60),
    ("southeastasia", 1.28, 103.83),
    ("japaneast", 35.68, 139.77),
];

fn coordinates(region: &str) -> Option<(f64, f64)> {
    REGIONS
        .iter()
        .find(|(name, ..)| *name == region)
        .map(|(_, lat, lon)| (*lat, *lon))
}

/// Great-circle distance in km (haversine).
fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// The region of a location: given, or derived from a GCE or AWS zone name.
pub fn region_of<'a>(region: &'a str, zone: &'a str) -> &'a str {
    if !region.is_empty() {
        return region;
    }
    // GCE: europe-west1-b
    if let Some((r, z)) = zone.rsplit_once('-') {
        if z.len() == 1 && z.chars().all(|c| c.is_ascii_lowercase()) {
            return r;
        }
    }
    // AWS: us-east-1a
    if zone.ends_with(|c: char| c.is_ascii_lowercase())
        && zone[..zone.len() - 1].ends_with(|c: char| c.is_ascii_digit())
    {
        return &zone[..zone.len() - 1];
    }
    ""
}

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
    match (coordinates(client_region), coordinates(region)) {
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

    fn walkthrough() -> Vec<Backend> {
        fedwasm_sdk::WALKTHROUGH_CLUSTERS
            .iter()
            .map(|(name, region, zone)| Backend {
                cluster: name.to_string(),
                region: region.to_string(),
                zone: zone.to_string(),
                healthy: true,
                available: None,
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
    fn regions_from_zones() {
        assert_eq!(region_of("", "europe-west1-b"), "europe-west1");
        assert_eq!(region_of("", "us-east-1a"), "us-east-1");
        assert_eq!(region_of("x", "europe-west1-b"), "x");
        assert_eq!(region_of("", "weird"), "");
    }
}
