//! Delivery: [`Notification`]s to Alertmanager and webhooks over HTTP, transitions to the log.
//!
//! The engine never waits for a sink. Each HTTP receiver has its own bounded queue and task
//! ([`http`]); a slow or dead receiver only fills its own queue (overflow is counted as
//! `pgvigil_notifications_total{result="dropped"}`) while polling and every other sink go on.

pub mod http;
pub mod log;
pub mod payload;

use std::time::SystemTime;

use super::state::Labels;

/// One alert as a receiver should see it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// All labels, `severity` included: the receiver's identity of the alert.
    pub labels: Labels,
    /// Details, `runbook_url` included.
    pub annotations: Labels,
    /// When the alert started firing.
    pub starts_at: SystemTime,
    /// Resolved at this time, or still firing.
    pub resolved_at: Option<SystemTime>,
    /// For a firing alert: until when Alertmanager should consider it firing without hearing
    /// from pgvigil again (a few resend intervals, as Prometheus does).
    pub valid_until: SystemTime,
    /// Link back to pgvigil (`[alerts] external_url`).
    pub generator_url: Option<String>,
}

impl Notification {
    /// Whether this notification resolves the alert.
    pub fn is_resolved(&self) -> bool {
        self.resolved_at.is_some()
    }
}
