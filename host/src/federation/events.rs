//! Events about federation objects, written to the federation plane only (never to
//! a member's event stream).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::DynamicObject;
use kube::runtime::events::{Event, EventType};
use kube::Resource;

use super::controller::{Context, Shared};
use super::Error;

/// The longest event note: the API refuses notes over 1 KiB (1024 bytes).
const MAX_NOTE: usize = crate::text::MAX_MESSAGE;

/// The event for a failed reconcile: its reason names the kind of failure.
pub(crate) async fn report(ctx: &Context, obj: &DynamicObject, error: &Error) {
    let (reason, note) = match error {
        Error::Plugin(e) => ("PluginError", format!("{e}; members left as they were")),
        Error::InvalidPreferences(_) => (
            "InvalidPreferences",
            format!("{error}; members left as they were"),
        ),
        Error::InvalidPolicy { .. } => (
            "InvalidPolicy",
            format!("{error}; members left as they were"),
        ),
        Error::MembersUnreachable(_) if obj.meta().deletion_timestamp.is_some() => {
            ("DeleteBlocked", format!("{error}; will retry"))
        }
        // Each unreachable member already has its MemberUnreachable event.
        Error::MembersUnreachable(_) => return,
        Error::Member(_) => ("MemberUnreachable", format!("{error}; will retry")),
        Error::Panic(_) => ("InternalError", format!("{error}; will retry")),
        Error::Federation { .. }
        | Error::Fleet(_)
        | Error::ControllerStopped(_)
        | Error::LeadershipLost(_) => ("ReconcileFailed", format!("{error}; will retry")),
    };
    publish(ctx, obj, EventType::Warning, reason, note).await;
}

/// A member namespace stayed because others' objects are in it.
pub(crate) async fn namespace_kept(
    ctx: &Context,
    obj: &DynamicObject,
    cluster: &str,
    foreign: &[String],
) {
    let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
    let more = foreign.len().saturating_sub(shown.len());
    let note = format!(
        "cluster {cluster}: namespace kept, it holds objects fedwasm did not create ({}{}); fedwasm's own objects in it are removed",
        shown.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    );
    publish(ctx, obj, EventType::Normal, "NamespaceKept", note).await;
}

pub(crate) async fn publish(
    ctx: &Context,
    obj: &DynamicObject,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let reference = obj.object_ref(&ctx.kind.resource);
    publish_about(&ctx.shared, reference, type_, reason, note).await;
}

/// An event about any object of the federation plane (a placement policy, say).
pub(crate) async fn publish_about(
    shared: &Shared,
    reference: ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::text::bounded(note, MAX_NOTE)),
        action: "Propagate".into(),
        secondary: None,
    };
    // Cluster-scoped objects' events go to `kube-system` (see `recorder`).
    let result = shared.recorder.publish(&event, &reference).await;
    if let Err(e) = result {
        tracing::warn!(error = %e, reason, "cannot record an event");
    }
}
