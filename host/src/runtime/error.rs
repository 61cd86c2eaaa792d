//! Typed errors of the runtime. Each names the plugin; [`PluginError::kind`] is the
//! metric label.

use std::time::Duration;

use fedwasm_sdk::Hook;

/// A plugin call that did not produce a usable decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("no plugin named `{0}` is loaded")]
    NotFound(String),
    #[error("plugin `{plugin}` does not implement the {hook} hook")]
    Unsupported { plugin: String, hook: Hook },
    #[error("plugin `{plugin}`: {hook} ran past its {} ms deadline and was stopped", deadline.as_millis())]
    Timeout {
        plugin: String,
        hook: Hook,
        deadline: Duration,
    },
    #[error("plugin `{plugin}`: {hook} tried to grow its memory past the {limit} byte limit")]
    MemoryLimit {
        plugin: String,
        hook: Hook,
        limit: usize,
    },
    #[error("plugin `{plugin}`: {hook} trapped: {message}")]
    Trap {
        plugin: String,
        hook: Hook,
        message: String,
    },
    #[error("plugin `{plugin}`: {hook} returned an invalid output: {reason}")]
    InvalidOutput {
        plugin: String,
        hook: Hook,
        reason: String,
    },
    #[error("plugin `{plugin}`: {hook} refused the request: {message}")]
    Refused {
        plugin: String,
        hook: Hook,
        message: String,
    },
    #[error("plugin `{plugin}`: cannot instantiate: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// The host could not run the call (its worker task died).
    #[error("{0}")]
    Internal(String),
}

impl PluginError {
    /// A short, stable label for metrics and events.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::NotFound(_) => "not_found",
            PluginError::Unsupported { .. } => "unsupported",
            PluginError::Timeout { .. } => "timeout",
            PluginError::MemoryLimit { .. } => "memory",
            PluginError::Trap { .. } => "trap",
            PluginError::InvalidOutput { .. } => "invalid_output",
            PluginError::Refused { .. } => "refused",
            PluginError::Instantiate { .. } => "instantiate",
            PluginError::BadRequest(_) => "bad_request",
            PluginError::Internal(_) => "internal",
        }
    }
}

/// The step at which loading a plugin failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStage {
    /// Reading the file.
    Read,
    /// Not a valid component, or it failed to compile.
    Compile,
    /// Imports something, or its exports do not match the contract.
    TypeCheck,
    /// Failed its trial calls under the call limits.
    SmokeTest,
}

impl LoadStage {
    /// A short label for metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadStage::Read => "read",
            LoadStage::Compile => "compile",
            LoadStage::TypeCheck => "type_check",
            LoadStage::SmokeTest => "smoke_test",
        }
    }
}

/// A plugin that was rejected; the previous generation of that name keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin `{plugin}` rejected at {}: {message}", stage.as_str())]
pub struct LoadError {
    pub plugin: String,
    pub stage: LoadStage,
    pub message: String,
}
