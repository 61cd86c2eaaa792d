//! Where cloud regions are: the built-in table the host's locality file extends,
//! distances between points, and the region a zone name implies.

use crate::Coordinates;

/// Approximate centres of GCE, AWS and Azure regions (latitude, longitude in
/// degrees).
pub const REGIONS: &[(&str, f64, f64)] = &[
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

/// The built-in position of a cloud region, if the table knows it.
pub fn position(region: &str) -> Option<Coordinates> {
    REGIONS
        .iter()
        .find(|(name, ..)| *name == region)
        .map(|&(_, latitude, longitude)| Coordinates {
            latitude,
            longitude,
        })
}

/// Great-circle distance in km (haversine).
pub fn distance_km(a: Coordinates, b: Coordinates) -> f64 {
    let (lat1, lon1) = (a.latitude.to_radians(), a.longitude.to_radians());
    let (lat2, lon2) = (b.latitude.to_radians(), b.longitude.to_radians());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_regions_and_distances() {
        let taiwan = position("asia-east1").unwrap();
        let iowa = position("us-central1").unwrap();
        assert!(position("us-west1").is_some());
        assert!(position("basement").is_none());
        let km = distance_km(taiwan, iowa);
        assert!((11_000.0..13_000.0).contains(&km), "{km}");
        assert_eq!(distance_km(iowa, iowa), 0.0);
        for (name, lat, lon) in REGIONS {
            assert!(
                (-90.0..=90.0).contains(lat) && (-180.0..=180.0).contains(lon),
                "{name}"
            );
        }
    }

    #[test]
    fn regions_from_zones() {
        assert_eq!(region_of("", "europe-west1-b"), "europe-west1");
        assert_eq!(region_of("", "us-east-1a"), "us-east-1");
        assert_eq!(region_of("x", "europe-west1-b"), "x");
        assert_eq!(region_of("", "weird"), "");
    }
}
