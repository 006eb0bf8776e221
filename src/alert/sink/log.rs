//! The log sink: every lifecycle transition, once, as a structured log line.

use tracing::{debug, info, warn};

use crate::alert::state::{Event, EventKind};

/// Log one event; re-sends are not transitions and are not logged.
pub fn log_event(event: &Event) -> bool {
    let alert = &event.alert;
    let alertname = alert.labels.get("alertname").map_or("", String::as_str);
    let target = alert.labels.get("target").map_or("", String::as_str);
    let severity = alert.severity.as_str();
    let labels = serde_json::to_string(&alert.labels).unwrap_or_default();
    let summary = alert.annotations.get("summary").map_or("", String::as_str);
    match event.kind {
        EventKind::Pending => {
            info!(alertname, target, severity, %labels, "alert pending: {summary}")
        }
        EventKind::Firing => {
            let description = alert
                .annotations
                .get("description")
                .map_or("", String::as_str);
            let runbook_url = alert
                .annotations
                .get("runbook_url")
                .map_or("", String::as_str);
            warn!(alertname, target, severity, %labels, runbook_url, description, "alert firing: {summary}")
        }
        EventKind::Resolved => {
            info!(alertname, target, severity, %labels, "alert resolved: {summary}")
        }
        EventKind::Cleared => {
            info!(alertname, target, severity, %labels, "alert cleared before it fired: {summary}")
        }
        EventKind::Resend => {
            debug!(alertname, target, "alert still firing");
            return false;
        }
    }
    true
}
