//! Per-cluster overrides of a member copy: after placement, each member's copy gets
//! RFC 6902 JSON patches applied, first a policy's declarative ones, then the one a
//! plugin's `customize` hook computed.
//!
//! A patch either applies whole or not at all, and so does the list: every patch is
//! applied to a private copy, and any failure returns an error so the caller keeps
//! the member as it was. A member never receives a half-overridden object.
//!
//! Overrides may not touch what identifies the object or what fedwasm itself relies
//! on (see [`PROTECTED_FIELDS`] and [`PROTECTED_PREFIX`]). That is checked by
//! comparing the copy before and after each patch, not by looking at op paths, so a
//! `move`, `copy`, `remove` or `replace` of a parent such as `/metadata` is caught
//! just like a direct write.

use json_patch::{PatchErrorKind, PatchOperation};
use serde_json::Value;

/// Most operations one patch may have. Bounds the work one plugin answer can cause.
pub const MAX_OPS: usize = 1000;

/// Largest patch text a plugin may return, in bytes.
pub const MAX_PATCH_BYTES: usize = 1 << 20;

/// Labels and annotations under this prefix are fedwasm's own (managed-by, template
/// hash…): an override may not change, remove or add them.
pub const PROTECTED_PREFIX: &str = "fedwasm.io/";

/// Fields an override may not change (presence or value), as RFC 6901 pointers with
/// the name used in error messages. `status` belongs to the member.
pub const PROTECTED_FIELDS: [(&str, &str); 9] = [
    ("/apiVersion", "apiVersion"),
    ("/kind", "kind"),
    ("/metadata/name", "metadata.name"),
    ("/metadata/namespace", "metadata.namespace"),
    ("/metadata/uid", "metadata.uid"),
    ("/metadata/resourceVersion", "metadata.resourceVersion"),
    ("/metadata/ownerReferences", "metadata.ownerReferences"),
    ("/metadata/managedFields", "metadata.managedFields"),
    ("/status", "status"),
];

// Caps on the parts of an error message that come from outside, so a message stays
// around 300 characters whatever the patch holds.
const MAX_SOURCE_CHARS: usize = 60;
const MAX_PATH_CHARS: usize = 60;
const MAX_REASON_CHARS: usize = 100;
const MAX_OP_NAME_CHARS: usize = 16;

/// One patch to apply to a member copy.
#[derive(Clone, Debug)]
pub struct Override<'a> {
    /// Where the patch comes from, for error messages: e.g.
    /// `ClusterPlacementPolicy/web overrides[0]` or `plugin region-mirror`.
    pub source: String,
    /// The RFC 6902 operations, each a JSON object.
    pub ops: &'a [Value],
}

/// How an override changes what it may not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A protected field (or a `fedwasm.io/` key's value) changed, appeared or went.
    Changed(String),
    /// A `fedwasm.io/` label or annotation that was not there was added.
    Added(String),
    /// A `fedwasm.io/` label or annotation was removed.
    Removed(String),
    /// The copy is no longer a JSON object; holds what it became.
    NotAnObject(&'static str),
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Changed(field) => write!(f, "changes {field}, which overrides may not change"),
            Self::Added(field) => write!(f, "adds {field}, which only fedwasm may set"),
            Self::Removed(field) => write!(f, "removes {field}, which overrides may not change"),
            Self::NotAnObject(found) => {
                write!(
                    f,
                    "turns the object into {found}; it must stay a JSON object"
                )
            }
        }
    }
}

/// Why overrides could not be applied. Every message names the patch's source and,
/// for a single operation, its index and path; text from the patch is cut short.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// The patch as a whole is unusable: not JSON, not an array, too large.
    #[error("{origin}: not a JSON patch: {reason}")]
    NotAPatch { origin: String, reason: String },
    /// An operation that is not a well-formed RFC 6902 operation.
    #[error("{origin}: op {index} ({op}): not a valid operation: {reason}")]
    InvalidOp {
        origin: String,
        index: usize,
        op: String,
        reason: String,
    },
    /// A well-formed operation that could not be applied (a missing path, a failed
    /// `test`…).
    #[error("{origin}: op {index} ({op}): {reason}")]
    OpFailed {
        origin: String,
        index: usize,
        op: String,
        reason: String,
    },
    /// The patch changes what overrides may not; `index` is the op from which on the
    /// change held.
    #[error("{origin}: op {index} ({op}): the patch {violation}")]
    Protected {
        origin: String,
        index: usize,
        op: String,
        violation: Violation,
    },
}

/// `copy` with `patches` applied in order, or the first failure. `copy` itself is
/// never modified; on an error the caller keeps the member as it was.
pub fn apply_overrides(copy: &Value, patches: &[Override<'_>]) -> Result<Value, OverrideError> {
    let mut doc = copy.clone();
    for patch in patches {
        doc = apply_patch(doc, patch)?;
    }
    Ok(doc)
}

/// The operations of a plugin's patch text: a JSON array of RFC 6902 operation
/// objects, at most [`MAX_OPS`] of them in at most [`MAX_PATCH_BYTES`] bytes. Each
/// operation is checked to be well-formed, so a bad answer is reported before
/// anything is applied.
pub fn parse_patch(text: &str, source: &str) -> Result<Vec<Value>, OverrideError> {
    let not_a_patch = |reason: String| OverrideError::NotAPatch {
        origin: clip(source, MAX_SOURCE_CHARS),
        reason: clip(&reason, MAX_REASON_CHARS),
    };
    if text.len() > MAX_PATCH_BYTES {
        return Err(not_a_patch(format!(
            "{} bytes, more than the {MAX_PATCH_BYTES} allowed",
            text.len()
        )));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| not_a_patch(format!("invalid JSON: {e}")))?;
    let Value::Array(ops) = value else {
        return Err(not_a_patch(format!(
            "expected an array of operations, found {}",
            type_name(&value)
        )));
    };
    decode_ops(source, &ops)?;
    Ok(ops)
}

/// One patch applied to `base`, or why not. The protected fields are compared with
/// `base` after every op so the error can name the op that made the change; a change
/// undone by a later op of the same patch is fine, as only the patch's result counts.
fn apply_patch(base: Value, patch: &Override<'_>) -> Result<Value, OverrideError> {
    let ops = decode_ops(&patch.source, patch.ops)?;
    let mut doc = base.clone();
    // The op since which a protected field has differed from `base`, and how.
    let mut pending: Option<(usize, Violation)> = None;
    for (index, (raw, op)) in patch.ops.iter().zip(&ops).enumerate() {
        apply_op(&mut doc, op).map_err(|reason| OverrideError::OpFailed {
            origin: clip(&patch.source, MAX_SOURCE_CHARS),
            index,
            op: describe(raw),
            reason: reason.to_owned(),
        })?;
        pending =
            violation(&base, &doc).map(|found| (pending.map_or(index, |(since, _)| since), found));
    }
    match pending {
        None => Ok(doc),
        Some((index, violation)) => Err(OverrideError::Protected {
            origin: clip(&patch.source, MAX_SOURCE_CHARS),
            index,
            op: patch.ops.get(index).map(describe).unwrap_or_default(),
            violation,
        }),
    }
}

/// Every op of a patch decoded, or the first that is not a valid operation.
fn decode_ops(source: &str, raw_ops: &[Value]) -> Result<Vec<PatchOperation>, OverrideError> {
    if raw_ops.len() > MAX_OPS {
        return Err(OverrideError::NotAPatch {
            origin: clip(source, MAX_SOURCE_CHARS),
            reason: format!(
                "{} operations, more than the {MAX_OPS} allowed",
                raw_ops.len()
            ),
        });
    }
    raw_ops
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            let invalid = |reason: String| OverrideError::InvalidOp {
                origin: clip(source, MAX_SOURCE_CHARS),
                index,
                op: describe(raw),
                reason: clip(&reason, MAX_REASON_CHARS),
            };
            if !raw.is_object() {
                return Err(invalid(format!(
                    "expected an object, found {}",
                    type_name(raw)
                )));
            }
            serde_json::from_value(raw.clone()).map_err(|e| invalid(e.to_string()))
        })
        .collect()
}

/// One op applied to `doc`. On an error `doc` may be part-changed (a `move` whose
/// target is missing); the caller then drops it.
fn apply_op(doc: &mut Value, op: &PatchOperation) -> Result<(), &'static str> {
    if let PatchOperation::Test(test) = op {
        // Done here rather than by json-patch: RFC 6902 compares numbers by value
        // (`1` equals `1.0`), serde_json's `==` does not.
        let found = doc
            .pointer(test.path.as_str())
            .ok_or("path does not exist")?;
        return if json_equal(found, &test.value) {
            Ok(())
        } else {
            Err("test failed: the value at the path differs")
        };
    }
    json_patch::patch_unsafe(doc, std::slice::from_ref(op)).map_err(|e| match e.kind {
        PatchErrorKind::InvalidPointer => match op {
            PatchOperation::Add(_) | PatchOperation::Move(_) | PatchOperation::Copy(_) => {
                "cannot add at the path: its parent does not exist or the index is out of range"
            }
            _ => "path does not exist",
        },
        PatchErrorKind::InvalidFromPointer => "the from path does not exist",
        PatchErrorKind::CannotMoveInsideItself => "cannot move a value into itself",
        PatchErrorKind::TestFailed => "test failed: the value at the path differs",
        _ => "the operation could not be applied",
    })
}

/// How `after` changes what overrides may not, compared with `before`; `None` when
/// it does not.
fn violation(before: &Value, after: &Value) -> Option<Violation> {
    if !after.is_object() {
        return Some(Violation::NotAnObject(type_name(after)));
    }
    for (pointer, name) in PROTECTED_FIELDS {
        if before.pointer(pointer) != after.pointer(pointer) {
            return Some(Violation::Changed(name.to_owned()));
        }
    }
    for (map, noun) in [
        ("/metadata/labels", "label"),
        ("/metadata/annotations", "annotation"),
    ] {
        let was = fedwasm_keys(before, map);
        let is = fedwasm_keys(after, map);
        for (key, value) in &was {
            let field = || format!("{noun} {}", clip(key, MAX_PATH_CHARS));
            match is.iter().find(|(k, _)| k == key) {
                None => return Some(Violation::Removed(field())),
                Some((_, now)) if now != value => return Some(Violation::Changed(field())),
                Some(_) => {}
            }
        }
        if let Some((key, _)) = is.iter().find(|(k, _)| !was.iter().any(|(w, _)| w == k)) {
            return Some(Violation::Added(format!(
                "{noun} {}",
                clip(key, MAX_PATH_CHARS)
            )));
        }
    }
    None
}

/// The `fedwasm.io/` entries of the labels or annotations at `map`; none when the
/// map is missing or not an object.
fn fedwasm_keys<'v>(doc: &'v Value, map: &str) -> Vec<(&'v str, &'v Value)> {
    doc.pointer(map)
        .and_then(Value::as_object)
        .map(|entries| {
            entries
                .iter()
                .filter(|(key, _)| key.starts_with(PROTECTED_PREFIX))
                .map(|(key, value)| (key.as_str(), value))
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 6902 equality for `test`: like `==`, but numbers compare by value.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                // One negative, one above i64::MAX.
                false
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| json_equal(x, y)))
        }
        _ => a == b,
    }
}

/// A short description of a raw op for messages: `replace /spec/replicas`,
/// `move /b from /a`; whatever it holds, cut short.
fn describe(raw: &Value) -> String {
    let field = |name: &str| raw.get(name).and_then(Value::as_str);
    let name = field("op").map_or_else(|| "?".to_owned(), |op| clip(op, MAX_OP_NAME_CHARS));
    let path = field("path").map_or_else(|| "?".to_owned(), |path| clip(path, MAX_PATH_CHARS));
    match (field("op"), field("from")) {
        (Some("move" | "copy"), Some(from)) => {
            format!("{name} {path} from {}", clip(from, MAX_PATH_CHARS))
        }
        _ => format!("{name} {path}"),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text` cut to at most `max` characters, ending with `…` when it was cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "uid": "0b7c-11",
                "resourceVersion": "42",
                "labels": {"app": "web", "fedwasm.io/managed-by": "fedwasm"},
                "annotations": {
                    "example.com/note": "hello",
                    "fedwasm.io/template-hash": "abc123"
                }
            },
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [{
                    "name": "web",
                    "image": "nginx:1.27",
                    "env": [{"name": "MODE", "value": "prod"}]
                }]}}
            },
            "status": {"replicas": 3, "readyReplicas": 3}
        })
    }

    fn apply(source: &str, ops: &[Value]) -> Result<Value, OverrideError> {
        apply_overrides(
            &deployment(),
            &[Override {
                source: source.to_owned(),
                ops,
            }],
        )
    }

    fn policy(ops: &[Value]) -> Result<Value, OverrideError> {
        apply("ClusterPlacementPolicy/web overrides[0]", ops)
    }

    fn expect_protected(ops: &[Value], field: &str) {
        let err = apply("plugin region-mirror", ops).expect_err("must be rejected");
        let OverrideError::Protected { violation, .. } = &err else {
            panic!("not a protected-field error: {err}");
        };
        let named = match violation {
            Violation::Changed(f) | Violation::Added(f) | Violation::Removed(f) => f.as_str(),
            Violation::NotAnObject(_) => "",
        };
        assert_eq!(named, field, "{err}");
    }

    #[test]
    fn replaces_an_image() {
        let out = policy(&[json!({
            "op": "replace",
            "path": "/spec/template/spec/containers/0/image",
            "value": "mirror.eu/nginx:1.27"
        })])
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "mirror.eu/nginx:1.27"
        );
        let mut expected = deployment();
        expected["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("mirror.eu/nginx:1.27");
        assert_eq!(out, expected);
    }

    #[test]
    fn appends_an_env_var_with_dash() {
        let out = policy(&[json!({
            "op": "add",
            "path": "/spec/template/spec/containers/0/env/-",
            "value": {"name": "REGION", "value": "eu-west"}
        })])
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([
                {"name": "MODE", "value": "prod"},
                {"name": "REGION", "value": "eu-west"}
            ])
        );
    }

    #[test]
    fn removes_a_field() {
        let out = policy(&[
            json!({"op": "remove", "path": "/spec/template/spec/containers/0/env/0"}),
            json!({"op": "remove", "path": "/metadata/labels/app"}),
        ])
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([])
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"fedwasm.io/managed-by": "fedwasm"})
        );
    }

    #[test]
    fn escaped_pointers() {
        let out = policy(&[
            json!({"op": "replace", "path": "/metadata/annotations/example.com~1note", "value": "eu"}),
            json!({"op": "add", "path": "/metadata/annotations/tilde~0key", "value": "t"}),
        ])
        .unwrap();
        assert_eq!(out["metadata"]["annotations"]["example.com/note"], "eu");
        assert_eq!(out["metadata"]["annotations"]["tilde~key"], "t");
    }

    #[test]
    fn failed_test_aborts_the_whole_patch() {
        let err = policy(&[
            json!({"op": "replace", "path": "/spec/replicas", "value": 1}),
            json!({"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "httpd"}),
            json!({"op": "add", "path": "/metadata/labels/tier", "value": "edge"}),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ClusterPlacementPolicy/web overrides[0]: op 1 \
             (test /spec/template/spec/containers/0/image): \
             test failed: the value at the path differs"
        );
    }

    #[test]
    fn test_compares_numbers_by_value() {
        let out = policy(&[
            json!({"op": "test", "path": "/spec/replicas", "value": 3.0}),
            json!({"op": "test", "path": "/metadata/name", "value": "web"}),
            json!({"op": "test", "path": "/spec/template/spec/containers/0/env",
                   "value": [{"value": "prod", "name": "MODE"}]}),
        ])
        .unwrap();
        assert_eq!(out, deployment());
        assert!(!json_equal(&json!(-1), &json!(u64::MAX)));
        assert!(!json_equal(&json!(3), &json!("3")));
        assert!(policy(&[json!({"op": "test", "path": "/spec/replicas", "value": 3.5})]).is_err());
    }

    #[test]
    fn missing_path_is_named_in_the_error() {
        let err = policy(&[
            json!({"op": "test", "path": "/kind", "value": "Deployment"}),
            json!({"op": "add", "path": "/spec/paused", "value": false}),
            json!({"op": "replace", "path": "/spec/template/spec/containers/3/image", "value": "x"}),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ClusterPlacementPolicy/web overrides[0]: op 2 \
             (replace /spec/template/spec/containers/3/image): path does not exist"
        );
        let err = policy(&[json!({"op": "add", "path": "/spec/x/y", "value": 1})]).unwrap_err();
        assert!(
            err.to_string().contains("op 0 (add /spec/x/y): cannot add"),
            "{err}"
        );
        let err =
            policy(&[json!({"op": "move", "from": "/spec/nope", "path": "/spec/x"})]).unwrap_err();
        assert!(
            err.to_string()
                .contains("op 0 (move /spec/x from /spec/nope): the from path does not exist"),
            "{err}"
        );
    }

    #[test]
    fn protected_fields_are_rejected() {
        let set = |path: &str, value: Value| json!({"op": "replace", "path": path, "value": value});
        expect_protected(&[set("/metadata/name", json!("other"))], "metadata.name");
        expect_protected(
            &[set("/metadata/namespace", json!("x"))],
            "metadata.namespace",
        );
        expect_protected(&[set("/kind", json!("StatefulSet"))], "kind");
        expect_protected(&[set("/apiVersion", json!("apps/v2"))], "apiVersion");
        expect_protected(&[set("/metadata/uid", json!("x"))], "metadata.uid");
        expect_protected(
            &[set("/metadata/resourceVersion", json!("1"))],
            "metadata.resourceVersion",
        );
        expect_protected(
            &[json!({"op": "add", "path": "/metadata/ownerReferences", "value": []})],
            "metadata.ownerReferences",
        );
        expect_protected(
            &[json!({"op": "add", "path": "/metadata/managedFields", "value": []})],
            "metadata.managedFields",
        );
        expect_protected(
            &[set(
                "/metadata/labels/fedwasm.io~1managed-by",
                json!("someone"),
            )],
            "label fedwasm.io/managed-by",
        );
        expect_protected(
            &[
                json!({"op": "add", "path": "/metadata/annotations/fedwasm.io~1placement", "value": "{}"}),
            ],
            "annotation fedwasm.io/placement",
        );
        expect_protected(
            &[json!({"op": "remove", "path": "/metadata/annotations/fedwasm.io~1template-hash"})],
            "annotation fedwasm.io/template-hash",
        );
        expect_protected(
            &[json!({"op": "remove", "path": "/metadata/labels"})],
            "label fedwasm.io/managed-by",
        );
        expect_protected(&[set("/status/replicas", json!(0))], "status");
        expect_protected(&[json!({"op": "remove", "path": "/status"})], "status");
        // Through a parent: moving metadata away takes the name with it.
        expect_protected(
            &[json!({"op": "move", "from": "/metadata", "path": "/spec/metadata"})],
            "metadata.name",
        );
        // Copying over a parent: the name is overwritten with another's.
        expect_protected(
            &[json!({"op": "copy", "from": "/spec/template", "path": "/metadata"})],
            "metadata.name",
        );
    }

    #[test]
    fn protected_error_names_source_op_and_field() {
        let err = apply(
            "plugin region-mirror",
            &[
                json!({"op": "add", "path": "/metadata/labels/tier", "value": "edge"}),
                json!({"op": "replace", "path": "/metadata/name", "value": "web-eu"}),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin region-mirror: op 1 (replace /metadata/name): \
             the patch changes metadata.name, which overrides may not change"
        );
        let err = apply(
            "plugin region-mirror",
            &[json!({"op": "add", "path": "/metadata/labels/fedwasm.io~1x", "value": "1"})],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin region-mirror: op 0 (add /metadata/labels/fedwasm.io~1x): \
             the patch adds label fedwasm.io/x, which only fedwasm may set"
        );
    }

    #[test]
    fn the_result_must_be_an_object() {
        let err = policy(&[json!({"op": "replace", "path": "", "value": "gone"})]).unwrap_err();
        assert!(
            matches!(
                err,
                OverrideError::Protected {
                    violation: Violation::NotAnObject("a string"),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn changes_that_change_nothing_are_fine() {
        let out = policy(&[
            json!({"op": "replace", "path": "/metadata/name", "value": "web"}),
            json!({"op": "copy", "from": "/metadata/labels", "path": "/metadata/labels"}),
            // Away and back within one patch: only the patch's result counts.
            json!({"op": "move", "from": "/status", "path": "/parked"}),
            json!({"op": "move", "from": "/parked", "path": "/status"}),
        ])
        .unwrap();
        assert_eq!(out, deployment());
        // An unprotected label may change; a non-fedwasm annotation may be added.
        let out = policy(&[
            json!({"op": "replace", "path": "/metadata/labels/app", "value": "web-eu"}),
            json!({"op": "add", "path": "/metadata/annotations/example.com~1region", "value": "eu"}),
        ])
        .unwrap();
        assert_eq!(out["metadata"]["labels"]["app"], "web-eu");
    }

    #[test]
    fn patches_apply_in_order() {
        let first = [json!({"op": "replace", "path": "/spec/replicas", "value": 5})];
        let second = [
            json!({"op": "test", "path": "/spec/replicas", "value": 5}),
            json!({"op": "add", "path": "/spec/paused", "value": true}),
        ];
        let out = apply_overrides(
            &deployment(),
            &[
                Override {
                    source: "ClusterPlacementPolicy/web overrides[0]".into(),
                    ops: &first,
                },
                Override {
                    source: "plugin region-mirror".into(),
                    ops: &second,
                },
            ],
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(out["spec"]["paused"], true);
    }

    #[test]
    fn a_later_failure_leaves_nothing_applied() {
        let input = deployment();
        let first = [json!({"op": "replace", "path": "/spec/replicas", "value": 5})];
        let second = [
            json!({"op": "add", "path": "/spec/paused", "value": true}),
            json!({"op": "remove", "path": "/spec/nope"}),
        ];
        let err = apply_overrides(
            &input,
            &[
                Override {
                    source: "ClusterPlacementPolicy/web overrides[0]".into(),
                    ops: &first,
                },
                Override {
                    source: "plugin region-mirror".into(),
                    ops: &second,
                },
            ],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin region-mirror: op 1 (remove /spec/nope): path does not exist"
        );
        assert_eq!(input, deployment());
    }

    #[test]
    fn malformed_ops_are_rejected_before_anything_applies() {
        let err = policy(&[
            json!({"op": "replace", "path": "/spec/replicas", "value": 1}),
            json!({"op": "frobnicate", "path": "/spec"}),
        ])
        .unwrap_err();
        assert!(
            matches!(err, OverrideError::InvalidOp { index: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("op 1 (frobnicate /spec)"), "{err}");
        for bad in [
            json!({"op": "add", "path": "/spec/x"}),
            json!({"op": "move", "path": "/spec/x"}),
            json!({"op": "replace", "path": "spec/x", "value": 1}),
            json!({"op": "remove", "path": "/spec/~2"}),
            json!({"path": "/spec"}),
            json!("remove /spec"),
        ] {
            let err = policy(std::slice::from_ref(&bad)).unwrap_err();
            assert!(
                matches!(err, OverrideError::InvalidOp { index: 0, .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn messages_stay_short() {
        let long = "x".repeat(100_000);
        let ops = [json!({"op": long, "path": format!("/{long}"), "from": long, "value": long})];
        let err = apply_overrides(
            &deployment(),
            &[Override {
                source: long.clone(),
                ops: &ops,
            }],
        )
        .unwrap_err();
        assert!(err.to_string().chars().count() <= 320, "{err}");
        let ops = [
            json!({"op": "add", "path": format!("/metadata/labels/fedwasm.io~1{long}"), "value": "1"}),
        ];
        let err = policy(&ops).unwrap_err();
        assert!(err.to_string().chars().count() <= 320, "{err}");
        let err =
            parse_patch(&format!("[{{\"op\": 1, \"path\": \"{long}\"}}]"), &long).unwrap_err();
        assert!(err.to_string().chars().count() <= 320, "{err}");
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("hé", 2), "hé");
    }

    #[test]
    fn parses_a_plugin_patch() {
        let ops = parse_patch(
            r#"[{"op": "replace", "path": "/spec/replicas", "value": 2}]"#,
            "plugin region-mirror",
        )
        .unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(parse_patch("[]", "plugin p").unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn parse_patch_errors() {
        let err = |text: &str| {
            parse_patch(text, "plugin region-mirror")
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("{not json").starts_with("plugin region-mirror: not a JSON patch: invalid JSON:"),
            "{}",
            err("{not json")
        );
        assert_eq!(
            err(r#"{"op": "add"}"#),
            "plugin region-mirror: not a JSON patch: expected an array of operations, \
             found an object"
        );
        assert_eq!(
            err(r#"[{"op": "remove", "path": "/spec/x"}, 7]"#),
            "plugin region-mirror: op 1 (? ?): not a valid operation: \
             expected an object, found a number"
        );
        let many = format!(
            "[{}]",
            vec![r#"{"op": "test", "path": "", "value": 1}"#; MAX_OPS + 1].join(",")
        );
        assert_eq!(
            err(&many),
            "plugin region-mirror: not a JSON patch: 1001 operations, more than the 1000 allowed"
        );
        let exactly = format!(
            "[{}]",
            vec![r#"{"op": "remove", "path": "/x"}"#; MAX_OPS].join(",")
        );
        assert_eq!(parse_patch(&exactly, "p").unwrap().len(), MAX_OPS);
        let huge = format!("[\"{}\"]", "a".repeat(MAX_PATCH_BYTES));
        assert!(
            err(&huge).contains("more than the 1048576 allowed"),
            "{}",
            err(&huge)
        );
        assert!(err(r#"[{"op": "add", "path": "/a"}]"#).contains("op 0 (add /a)"));
    }

    /// Paths over the fixture: mostly ones an override may touch, so that runs also
    /// end in `Ok`, the rest protected, missing or malformed.
    fn paths() -> impl Strategy<Value = String> {
        let open = prop::sample::select(vec![
            "/metadata/labels/app",
            "/metadata/labels/tier",
            "/metadata/annotations/example.com~1note",
            "/spec/replicas",
            "/spec/paused",
            "/spec/template/spec/containers/0/image",
            "/spec/template/spec/containers/0/env/-",
            "/spec/template/spec/containers/0/env/0",
            "/spec/template/spec/containers/-",
        ]);
        let any = prop::sample::select(vec![
            "",
            "/apiVersion",
            "/kind",
            "/metadata",
            "/metadata/name",
            "/metadata/namespace",
            "/metadata/uid",
            "/metadata/labels",
            "/metadata/labels/app",
            "/metadata/labels/fedwasm.io~1managed-by",
            "/metadata/annotations",
            "/metadata/annotations/fedwasm.io~1template-hash",
            "/metadata/annotations/fedwasm.io~1new",
            "/metadata/annotations/example.com~1note",
            "/metadata/ownerReferences",
            "/spec",
            "/spec/replicas",
            "/spec/template/spec/containers",
            "/spec/template/spec/containers/0",
            "/spec/template/spec/containers/-",
            "/spec/template/spec/containers/0/image",
            "/spec/template/spec/containers/0/env/-",
            "/spec/template/spec/containers/0/env/0",
            "/spec/template/spec/containers/07",
            "/spec/template/spec/containers/9",
            "/status",
            "/status/replicas",
            "/nope/deeper",
            "/~01",
            "bad",
        ]);
        prop_oneof![2 => open, 1 => any].prop_map(str::to_owned)
    }

    fn values() -> impl Strategy<Value = Value> {
        prop::sample::select(vec![
            Value::Null,
            json!(3),
            json!(3.0),
            json!("web"),
            json!("fedwasm"),
            json!({}),
            json!([]),
            json!({"name": "web"}),
            json!({"fedwasm.io/managed-by": "fedwasm"}),
        ])
    }

    fn op() -> impl Strategy<Value = Value> {
        // Mostly well-formed ops, so most runs reach the protected-field checks.
        let name = prop_oneof![
            12 => prop::sample::select(vec!["add", "remove", "replace", "move", "copy", "test"]),
            1 => Just("bogus"),
        ];
        prop_oneof![
            20 => (name, paths(), paths(), values(), prop::bool::weighted(0.9)).prop_map(
                |(name, path, from, value, with_value)| {
                    let mut op = json!({"op": name, "path": path, "from": from});
                    if with_value {
                        op["value"] = value;
                    }
                    op
                }
            ),
            1 => values(),
        ]
    }

    fn protected_view(doc: &Value) -> Vec<Option<Value>> {
        let mut view: Vec<Option<Value>> = PROTECTED_FIELDS
            .iter()
            .map(|(pointer, _)| doc.pointer(pointer).cloned())
            .collect();
        for map in ["/metadata/labels", "/metadata/annotations"] {
            let fedwasm: serde_json::Map<String, Value> = doc
                .pointer(map)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("fedwasm.io/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            view.push(Some(Value::Object(fedwasm)));
        }
        view
    }

    proptest! {
        // Most random op lists fail early (a missing path, a failed test): run enough
        // that well over a hundred end in a changed `Ok` or a protected-field refusal.
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_patches_never_break_the_rules(
            patches in prop::collection::vec(prop::collection::vec(op(), 0..6), 0..3)
        ) {
            let input = deployment();
            let overrides: Vec<Override<'_>> = patches
                .iter()
                .enumerate()
                .map(|(i, ops)| Override { source: format!("policy overrides[{i}]"), ops })
                .collect();
            match apply_overrides(&input, &overrides) {
                Ok(out) => {
                    prop_assert!(out.is_object());
                    prop_assert_eq!(protected_view(&out), protected_view(&input));
                }
                Err(err) => prop_assert!(err.to_string().chars().count() <= 320),
            }
            prop_assert_eq!(input, deployment());
        }

        #[test]
        fn parse_patch_never_panics(text in ".{0,200}") {
            let _ = parse_patch(&text, "plugin fuzz");
        }
    }
}
