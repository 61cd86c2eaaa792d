//! One placement request as JSON, the shape shared by `fedwasm plan`, `POST /plan`
//! and `fedwasm plugin bench`.

use fedwasm_sdk::{CustomizeRequest, DistributeRequest, Hook, RankRequest, SelectRequest};
use serde_json::{json, Value};

use crate::overrides::{apply_overrides, Override};
use crate::runtime::{preference_warnings, Plugin, PluginError, Registry};

/// Deserializes one hook's request, naming the path of a bad field
/// (`preferences.clusters.A.weight: invalid value ...`).
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, PluginError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            PluginError::BadRequest(inner.to_string())
        } else {
            PluginError::BadRequest(format!("{path}: {inner}"))
        }
    })
}

/// The customize hook's patch and the request's object with it applied, as the
/// host would apply it to a member's copy: a patch that does not apply, or that
/// changes what overrides may not, is an invalid answer.
fn customized(plugin: &Plugin, r: &CustomizeRequest) -> Result<(Vec<Value>, Value), PluginError> {
    let object: Value = serde_json::from_str(&r.object)
        .map_err(|e| PluginError::BadRequest(format!("object: not JSON: {e}")))?;
    let patch = plugin.customize(r)?;
    let applied = apply_overrides(
        &object,
        &[Override {
            source: format!("plugin {}", plugin.name()),
            ops: &patch,
        }],
    )
    .map_err(|e| PluginError::InvalidOutput {
        plugin: plugin.name().to_string(),
        hook: Hook::Customize,
        reason: e.to_string(),
    })?;
    Ok((patch, applied))
}

/// A request for one hook, tagged by `"hook"`.
#[derive(Clone, Debug)]
pub enum PlanRequest {
    Select(SelectRequest),
    Distribute(DistributeRequest),
    Rank(RankRequest),
    Customize(CustomizeRequest),
}

impl PlanRequest {
    /// Parses a request; `"plugin"` (which plugin to use) is returned separately.
    pub fn parse(text: &str) -> Result<(Self, Option<String>), PluginError> {
        let mut value: Value = serde_json::from_str(text)
            .map_err(|e| PluginError::BadRequest(format!("not JSON: {e}")))?;
        let plugin = match value.as_object_mut().and_then(|o| o.remove("plugin")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                return Err(PluginError::BadRequest(format!(
                    "\"plugin\" must be a string, got {other}"
                )))
            }
        };
        let hook: Hook = match value.as_object_mut().and_then(|o| o.remove("hook")) {
            Some(Value::String(s)) => s.parse().map_err(PluginError::BadRequest)?,
            Some(other) => {
                return Err(PluginError::BadRequest(format!(
                    "\"hook\" must be one of select, distribute, rank, customize; got {other}"
                )))
            }
            None => {
                return Err(PluginError::BadRequest(
                    "missing \"hook\" (select, distribute, rank or customize)".into(),
                ))
            }
        };
        let request = match hook {
            Hook::Select => PlanRequest::Select(typed(value)?),
            Hook::Distribute => PlanRequest::Distribute(typed(value)?),
            Hook::Rank => PlanRequest::Rank(typed(value)?),
            Hook::Customize => {
                // The copy may be written as JSON itself rather than as its text.
                if let Some(object) = value.get_mut("object").filter(|o| o.is_object()) {
                    *object = Value::String(object.to_string());
                }
                PlanRequest::Customize(typed(value)?)
            }
        };
        Ok((request, plugin))
    }

    /// The hook this request is for.
    pub fn hook(&self) -> Hook {
        match self {
            PlanRequest::Select(_) => Hook::Select,
            PlanRequest::Distribute(_) => Hook::Distribute,
            PlanRequest::Rank(_) => Hook::Rank,
            PlanRequest::Customize(_) => Hook::Customize,
        }
    }

    /// Calls `plugin` with the request, validating the answer as the host does, and
    /// keeps only whether it succeeded (checks and benchmarks).
    pub fn call(&self, plugin: &Plugin) -> Result<(), PluginError> {
        match self {
            PlanRequest::Select(r) => plugin.select(r).map(drop),
            PlanRequest::Distribute(r) => plugin.distribute(r).map(drop),
            PlanRequest::Rank(r) => plugin.rank(r).map(drop),
            PlanRequest::Customize(r) => customized(plugin, r).map(drop),
        }
    }

    /// Evaluates the request with `plugin` (or the hook's default) and returns the
    /// decision as JSON:
    /// - select: `{"selected": [{"cluster", "score"}]}`
    /// - distribute: `{"plan": {...every candidate...}, "overflow": {...}}`
    /// - rank: `{"order": ["cluster", ...], "indices": [n, ...]}`
    /// - customize: `{"patch": [...operations...], "object": <the copy patched>}`
    pub fn evaluate(
        &self,
        registry: &Registry,
        plugin: Option<&str>,
    ) -> Result<Value, PluginError> {
        let plugin = registry.for_hook(self.hook(), plugin)?;
        match self {
            PlanRequest::Select(r) => {
                let selected = plugin.select(r)?;
                Ok(
                    json!({ "selected": selected.iter().map(|s| json!({"cluster": s.cluster, "score": s.score})).collect::<Vec<_>>() }),
                )
            }
            PlanRequest::Distribute(r) => {
                for warning in preference_warnings(r) {
                    tracing::warn!(object = %r.object, "{warning}");
                }
                let out = plugin.distribute(r)?;
                Ok(json!({ "plan": out.plan, "overflow": out.overflow }))
            }
            PlanRequest::Rank(r) => {
                let order = plugin.rank(r)?;
                let names: Vec<&str> = order
                    .iter()
                    .map(|&i| r.backends[i as usize].cluster.as_str())
                    .collect();
                Ok(json!({ "order": names, "indices": order }))
            }
            PlanRequest::Customize(r) => {
                let (patch, object) = customized(&plugin, r)?;
                Ok(json!({ "patch": patch, "object": object }))
            }
        }
    }
}
