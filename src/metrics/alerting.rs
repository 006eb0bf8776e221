//! pgvigil's own alert engine (src/alert/).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    ALERTING_METRICS;

    // Process metrics about pgvigil's own alert engine: they describe pgvigil, not one target,
    // so the first two carry no `target` label (see PROCESS_WIDE).

    NOTIFICATIONS, Counter, "pgvigil_notifications_total", ["sink", "result"],
        "Alert notifications by sink (alertmanager, webhook, log) and result: sent, failed (an attempt that will be retried) or dropped (queue full).";
    ALERTS, Gauge, "pgvigil_alerts", ["alertname", "severity", "state"],
        "Alerts pgvigil currently holds, by alertname, severity and state (pending, firing).";
    ALERT_OBSERVATIONS_DROPPED, Counter, "pgvigil_alert_observations_dropped_total", ["target"],
        "Polls the alert engine could not evaluate because its queue was full; polling never waits for alerting.";
}
