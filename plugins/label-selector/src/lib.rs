//! label-selector: the default select plugin.
//!
//! Chooses member clusters from the object's annotations; every annotation given must
//! hold, and an object with none goes to every cluster.
//!
//! | annotation | value |
//! | --- | --- |
//! | `fedwasm.io/cluster-selector` | a Kubernetes label selector over the cluster's labels: `env=prod`, `env==prod`, `tier!=db`, `zone in (a,b)`, `zone notin (c)`, `gpu` (exists), `!legacy` (absent), joined by commas (all must hold) |
//! | `fedwasm.io/regions` | comma-separated regions allowed |
//! | `fedwasm.io/zones` | comma-separated zones allowed |
//! | `fedwasm.io/clusters` | comma-separated cluster names allowed |
//!
//! A placement policy's `select.settings` may give the same four choices, for every
//! object it governs: `{"clusterSelector": "env=prod", "regions": ["europe-west1"],
//! "zones": [...], "clusters": [...]}` (lists may also be comma-separated strings).
//! The object's own annotation wins over the setting of the same name.
//!
//! Clusters that are not ready are still selected (score 50 instead of 100): the
//! federation keeps objects in members that are away, and they converge when the
//! member returns. A malformed annotation is an error naming it, so the host leaves
//! the members as they were rather than guessing.

use fedwasm_sdk::{export_plugin, ClusterInfo, Hook, Plugin, SelectRequest, Selection};

pub const SELECTOR_ANNOTATION: &str = "fedwasm.io/cluster-selector";
pub const REGIONS_ANNOTATION: &str = "fedwasm.io/regions";
pub const ZONES_ANNOTATION: &str = "fedwasm.io/zones";
pub const CLUSTERS_ANNOTATION: &str = "fedwasm.io/clusters";

/// Score of a ready cluster; a cluster that is not ready gets half.
pub const READY_SCORE: u32 = 100;

/// The plugin registered with the host.
pub struct LabelSelector;

impl Plugin for LabelSelector {
    const HOOKS: &'static [Hook] = &[Hook::Select];

    fn select(request: SelectRequest) -> Result<Vec<Selection>, String> {
        select(&request)
    }
}

export_plugin!(LabelSelector);

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut parts) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced `)`".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unclosed `(`".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_set(key: &str, rest: &str, part: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("`{part}`: expected a parenthesised list of values"))?;
    let values: Vec<String> = inner
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect();
    if values.is_empty() {
        return Err(format!("`{part}`: the value list of `{key}` is empty"));
    }
    if let Some(bad) = values.iter().find(|v| !valid_value(v)) {
        return Err(format!("`{part}`: `{bad}` is not a valid label value"));
    }
    Ok(values)
}

/// Parses the Kubernetes label-selector syntax.
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    let mut requirements = Vec::new();
    for part in split_top_level(text)? {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let requirement = if let Some(key) = part.strip_prefix('!') {
            let key = key.trim();
            if !valid_key(key) {
                return Err(format!("`{part}`: `{key}` is not a valid label key"));
            }
            Requirement::NotExists(key.to_string())
        } else if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Equals(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, rest)) = part.split_once(" notin") {
            let k = k.trim();
            Requirement::NotIn(k.to_string(), parse_set(k, rest, part)?)
        } else if let Some((k, rest)) = part.split_once(" in") {
            let k = k.trim();
            Requirement::In(k.to_string(), parse_set(k, rest, part)?)
        } else if valid_key(part) {
            Requirement::Exists(part.to_string())
        } else {
            return Err(format!("`{part}` is not a selector requirement"));
        };
        match &requirement {
            Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => {
                if !valid_key(k) {
                    return Err(format!("`{part}`: `{k}` is not a valid label key"));
                }
                if !valid_value(v) {
                    return Err(format!("`{part}`: `{v}` is not a valid label value"));
                }
            }
            Requirement::In(k, _) | Requirement::NotIn(k, _) if !valid_key(k) => {
                return Err(format!("`{part}`: `{k}` is not a valid label key"));
            }
            _ => {}
        }
        requirements.push(requirement);
    }
    Ok(Selector(requirements))
}

/// A comma-separated list; empty entries are skipped.
fn list(text: &str) -> Vec<&str> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The settings keys, each with the annotation that wins over it.
const SETTINGS: [(&str, &str); 4] = [
    ("clusterSelector", SELECTOR_ANNOTATION),
    ("regions", REGIONS_ANNOTATION),
    ("zones", ZONES_ANNOTATION),
    ("clusters", CLUSTERS_ANNOTATION),
];

/// The policy's settings as annotation values: `annotation -> text`. A list
/// setting becomes the comma-separated text its annotation takes.
pub fn settings(text: &str) -> Result<std::collections::BTreeMap<&'static str, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    if text.trim().is_empty() {
        return Ok(out);
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("settings are not JSON: {e}"))?;
    let object = match value {
        serde_json::Value::Null => return Ok(out),
        serde_json::Value::Object(o) => o,
        other => return Err(format!("settings must be an object, not {other}")),
    };
    for (key, value) in object {
        let Some((_, annotation)) = SETTINGS.iter().find(|(k, _)| *k == key) else {
            let known: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "settings: unknown key `{key}` (expected {})",
                known.join(", ")
            ));
        };
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Array(items) if key != "clusterSelector" => {
                let mut names = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        serde_json::Value::String(s) if !s.contains(',') => names.push(s),
                        other => return Err(format!("settings.{key}: `{other}` is not a name")),
                    }
                }
                names.join(",")
            }
            other => {
                return Err(format!(
                    "settings.{key}: expected {}, got {other}",
                    if key == "clusterSelector" {
                        "a label selector string"
                    } else {
                        "a list of names"
                    }
                ))
            }
        };
        out.insert(*annotation, text);
    }
    Ok(out)
}

/// Applies the object's annotations (over the policy's settings) to the
/// candidates, in their input order.
pub fn select(request: &SelectRequest) -> Result<Vec<Selection>, String> {
    let settings = settings(&request.settings)?;
    let annotations = &request.object.annotations;
    let choice = |annotation: &'static str| {
        annotations
            .get(annotation)
            .or_else(|| settings.get(annotation))
    };
    let selector = choice(SELECTOR_ANNOTATION)
        .map(|s| parse_selector(s).map_err(|e| format!("{SELECTOR_ANNOTATION}: {e}")))
        .transpose()?;
    let regions = choice(REGIONS_ANNOTATION).map(|s| list(s));
    let zones = choice(ZONES_ANNOTATION).map(|s| list(s));
    let names = choice(CLUSTERS_ANNOTATION).map(|s| list(s));
    let allowed = |filter: &Option<Vec<&str>>, value: &str| {
        filter.as_ref().is_none_or(|f| f.contains(&value))
    };
    let keep = |c: &ClusterInfo| {
        selector.as_ref().is_none_or(|s| s.matches(&c.labels))
            && allowed(&regions, &c.region)
            && allowed(&zones, &c.zone)
            && allowed(&names, &c.name)
    };
    Ok(request
        .clusters
        .iter()
        .filter(|c| keep(c))
        .map(|c| Selection {
            cluster: c.name.clone(),
            score: if c.ready {
                READY_SCORE
            } else {
                READY_SCORE / 2
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedwasm_sdk::ObjectRef;
    use std::collections::BTreeMap;

    fn walkthrough() -> Vec<ClusterInfo> {
        fedwasm_sdk::WALKTHROUGH_CLUSTERS
            .iter()
            .map(|(name, region, zone)| {
                let z = &zone[region.len() + 1..];
                ClusterInfo {
                    name: name.to_string(),
                    region: region.to_string(),
                    zone: zone.to_string(),
                    labels: BTreeMap::from([
                        ("env".into(), if z == "c" { "dev" } else { "prod" }.into()),
                        ("tier".into(), z.into()),
                    ]),
                    ready: z != "d",
                }
            })
            .collect()
    }

    fn with(annotations: &[(&str, &str)]) -> SelectRequest {
        SelectRequest {
            object: ObjectRef {
                kind: "ReplicaSet".into(),
                namespace: "default".into(),
                name: "web".into(),
                annotations: annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
            clusters: walkthrough(),
            settings: String::new(),
        }
    }

    #[test]
    fn settings_choose_like_annotations_and_annotations_win() {
        let mut request = with(&[]);
        request.settings =
            r#"{"regions": ["europe-west1", "asia-east1"], "clusterSelector": "env=prod"}"#.into();
        let got = select(&request).unwrap();
        assert_eq!(
            names(&got),
            [
                "gce-asia-east1-a",
                "gce-asia-east1-b",
                "gce-europe-west1-b",
                "gce-europe-west1-d"
            ]
        );
        // The object's own annotation wins, key by key: regions from the
        // annotation, the selector still from the settings.
        let mut request = with(&[(REGIONS_ANNOTATION, "us-central1")]);
        request.settings = r#"{"regions": "europe-west1", "clusterSelector": "env=prod"}"#.into();
        let got = select(&request).unwrap();
        assert_eq!(names(&got), ["gce-us-central1-a", "gce-us-central1-b"]);
        // Empty or null settings are none.
        for none in ["", "null", "{}"] {
            let mut request = with(&[]);
            request.settings = none.into();
            assert_eq!(select(&request).unwrap().len(), 9);
        }
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        for (settings, want) in [
            ("{not json", "settings are not JSON"),
            ("[1]", "settings must be an object"),
            (r#"{"region": ["x"]}"#, "unknown key `region`"),
            (r#"{"regions": [1]}"#, "settings.regions: `1` is not a name"),
            (r#"{"regions": ["a,b"]}"#, "is not a name"),
            (
                r#"{"clusterSelector": ["a"]}"#,
                "expected a label selector string",
            ),
            (r#"{"clusterSelector": "env in ("}"#, SELECTOR_ANNOTATION),
        ] {
            let mut request = with(&[]);
            request.settings = settings.into();
            let e = select(&request).unwrap_err();
            assert!(e.contains(want), "{settings}: {e}");
        }
    }

    fn names(out: &[Selection]) -> Vec<&str> {
        out.iter().map(|s| s.cluster.as_str()).collect()
    }

    #[test]
    fn no_annotation_selects_everything_and_scores_readiness() {
        let out = select(&with(&[])).unwrap();
        assert_eq!(out.len(), 9);
        let d = out
            .iter()
            .find(|s| s.cluster == "gce-europe-west1-d")
            .unwrap();
        assert_eq!(d.score, 50);
        assert!(out
            .iter()
            .filter(|s| s.cluster != "gce-europe-west1-d")
            .all(|s| s.score == 100));
    }

    #[test]
    fn regions_zones_and_names() {
        let out = select(&with(&[(REGIONS_ANNOTATION, "europe-west1, us-central1")])).unwrap();
        assert_eq!(out.len(), 6);
        let out = select(&with(&[(ZONES_ANNOTATION, "asia-east1-a,,europe-west1-b")])).unwrap();
        assert_eq!(names(&out), ["gce-asia-east1-a", "gce-europe-west1-b"]);
        let out = select(&with(&[
            (CLUSTERS_ANNOTATION, "gce-asia-east1-a,gce-us-central1-a"),
            (REGIONS_ANNOTATION, "us-central1"),
        ]))
        .unwrap();
        assert_eq!(names(&out), ["gce-us-central1-a"]);
    }

    #[test]
    fn label_selectors() {
        let cases = [
            ("env=prod", 6),
            ("env==dev", 3),
            ("env!=prod", 3),
            ("tier in (a, b)", 5),
            ("tier notin (a,b)", 4),
            ("env=prod,tier in (b)", 3),
            ("tier", 9),
            ("!gpu", 9),
            ("gpu", 0),
        ];
        for (selector, count) in cases {
            let out = select(&with(&[(SELECTOR_ANNOTATION, selector)])).unwrap();
            assert_eq!(out.len(), count, "{selector}");
        }
    }

    #[test]
    fn malformed_selectors_are_clear_errors() {
        for bad in [
            "tier in (a",
            "tier in ()",
            "=x",
            "a b c",
            "env=pr od",
            "tier in a",
        ] {
            let err = select(&with(&[(SELECTOR_ANNOTATION, bad)])).unwrap_err();
            assert!(err.starts_with(SELECTOR_ANNOTATION), "{bad}: {err}");
        }
    }
}
