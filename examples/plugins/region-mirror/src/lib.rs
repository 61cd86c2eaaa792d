//! region-mirror: a customize plugin that points every container image of a
//! member's copy at the registry mirror of the member's region.
//!
//! Settings (a placement policy's `spec.customize.settings`):
//!
//! ```json
//! {"mirrors": {"asia-east1": "mirror.asia.example", "europe-west1": "mirror.eu.example"}}
//! ```
//!
//! In a member of `asia-east1`, `nginx:1.27` becomes `mirror.asia.example/nginx:1.27`
//! and `gcr.io/shop/web:v2` becomes `mirror.asia.example/shop/web:v2` (the registry
//! host is replaced, the repository path kept). Members of a region with no mirror,
//! and images already on the mirror, are left alone. Containers, init containers and
//! ephemeral containers of a pod template (`spec.template.spec`) and of a bare pod
//! spec (`spec`) are rewritten; a copy with neither gets an empty patch.

use fedwasm_sdk::{export_plugin, CustomizeRequest, Hook, Plugin};
use serde_json::{json, Map, Value};

pub struct RegionMirror;

impl Plugin for RegionMirror {
    const HOOKS: &'static [Hook] = &[Hook::Customize];

    fn customize(request: CustomizeRequest) -> Result<String, String> {
        let mirrors = mirrors(&request.settings)?;
        let Some(mirror) = mirrors.get(&request.cluster.region).and_then(Value::as_str) else {
            return Ok("[]".into());
        };
        let object: Value = serde_json::from_str(&request.object)
            .map_err(|e| format!("the copy is not JSON: {e}"))?;
        Ok(Value::Array(patch(&object, mirror)).to_string())
    }
}

export_plugin!(RegionMirror);

/// The `mirrors` setting: region → registry host. Anything else is an error naming
/// the field, so a typo in a policy is reported rather than ignored.
pub fn mirrors(settings: &str) -> Result<Map<String, Value>, String> {
    if settings.trim().is_empty() {
        return Err("settings: `mirrors` is required (region → registry host)".into());
    }
    let value: Value =
        serde_json::from_str(settings).map_err(|e| format!("settings are not JSON: {e}"))?;
    let Value::Object(mut settings) = value else {
        return Err("settings must be an object with `mirrors`".into());
    };
    if let Some(key) = settings.keys().find(|k| k.as_str() != "mirrors") {
        return Err(format!("settings: unknown key `{key}` (expected mirrors)"));
    }
    let Some(Value::Object(mirrors)) = settings.remove("mirrors") else {
        return Err("settings.mirrors must be an object: region → registry host".into());
    };
    for (region, host) in &mirrors {
        let valid = host.as_str().is_some_and(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        });
        if !valid {
            return Err(format!(
                "settings.mirrors.{region}: {host} is not a registry host"
            ));
        }
    }
    Ok(mirrors)
}

/// `image` on `mirror`: the registry host replaced (or added, for Docker Hub's
/// short names), the repository path and tag or digest kept.
pub fn mirrored(image: &str, mirror: &str) -> String {
    if image.starts_with(&format!("{mirror}/")) {
        return image.to_string();
    }
    let path = match image.split_once('/') {
        // A first part with a dot or a port, or `localhost`, is a registry host.
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => image,
    };
    format!("{mirror}/{path}")
}

/// `replace` operations for every image that changes, under each pod spec the copy
/// has.
pub fn patch(object: &Value, mirror: &str) -> Vec<Value> {
    let mut ops = Vec::new();
    for spec in ["/spec/template/spec", "/spec"] {
        let Some(pod) = object.pointer(spec) else {
            continue;
        };
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            let Some(containers) = pod.get(list).and_then(Value::as_array) else {
                continue;
            };
            for (i, container) in containers.iter().enumerate() {
                let Some(image) = container.get("image").and_then(Value::as_str) else {
                    continue;
                };
                let new = mirrored(image, mirror);
                if new != image {
                    ops.push(json!({"op": "replace", "path": format!("{spec}/{list}/{i}/image"), "value": new}));
                }
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedwasm_sdk::ClusterInfo;

    fn request(region: &str, object: Value) -> CustomizeRequest {
        CustomizeRequest {
            object: object.to_string(),
            cluster: ClusterInfo {
                name: format!("{region}-member"),
                region: region.into(),
                ..Default::default()
            },
            settings: r#"{"mirrors": {"asia-east1": "mirror.asia.example"}}"#.into(),
        }
    }

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [{"name": "web", "image": "nginx:1.27"},
                               {"name": "side", "image": "gcr.io/shop/sidecar@sha256:abc"},
                               {"name": "done", "image": "mirror.asia.example/app:1"}]}}}})
    }

    #[test]
    fn images_move_to_the_regions_mirror() {
        let patch = RegionMirror::customize(request("asia-east1", deployment())).unwrap();
        let patch: Value = serde_json::from_str(&patch).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "replace", "path": "/spec/template/spec/initContainers/0/image", "value": "mirror.asia.example/busybox"},
                {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "mirror.asia.example/nginx:1.27"},
                {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "mirror.asia.example/shop/sidecar@sha256:abc"},
            ])
        );
    }

    #[test]
    fn regions_without_a_mirror_and_objects_without_pods_are_left_alone() {
        assert_eq!(
            RegionMirror::customize(request("europe-west1", deployment())).unwrap(),
            "[]"
        );
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}});
        assert_eq!(
            RegionMirror::customize(request("asia-east1", config)).unwrap(),
            "[]"
        );
    }

    #[test]
    fn registry_hosts_are_replaced_and_short_names_prefixed() {
        let m = "m.example";
        assert_eq!(mirrored("nginx", m), "m.example/nginx");
        assert_eq!(mirrored("library/nginx:1", m), "m.example/library/nginx:1");
        assert_eq!(mirrored("localhost:5000/app", m), "m.example/app");
        assert_eq!(mirrored("localhost/app", m), "m.example/app");
        assert_eq!(mirrored("m.example/app", m), "m.example/app");
    }

    #[test]
    fn bad_settings_say_which_field() {
        for (settings, want) in [
            ("", "`mirrors` is required"),
            ("{not json", "not JSON"),
            ("[]", "must be an object"),
            (r#"{"mirror": {}}"#, "unknown key `mirror`"),
            (r#"{"mirrors": []}"#, "settings.mirrors must be an object"),
            (
                r#"{"mirrors": {"asia-east1": 3}}"#,
                "settings.mirrors.asia-east1",
            ),
            (
                r#"{"mirrors": {"asia-east1": "a/b"}}"#,
                "not a registry host",
            ),
        ] {
            let mut r = request("asia-east1", deployment());
            r.settings = settings.into();
            let e = RegionMirror::customize(r).unwrap_err();
            assert!(e.contains(want), "{settings}: {e}");
        }
    }
}
