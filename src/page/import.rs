//! `/imports/<id>`: one import's numbers, the timeline of its audit row and of pgvigil's
//! verdicts, its alerts, and the SQL that confirms the count. An id found in several
//! databases (or targets) is shown once for each.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::html::{self, escape, num, target_link};
use crate::collect::imports::reconcile::ImportVerdict;
use crate::hub::Hub;

/// The page of import `id`, or `None` if no watched audit table has it.
pub(crate) fn page(hub: &Hub, id: &str) -> Option<String> {
    let statuses = hub.status.targets();
    let mut found = Vec::new();
    for (target, obs) in hub.latest_observations() {
        for (datname, d) in obs.each_database() {
            let Some(report) = &d.imports else { continue };
            for v in report.imports.iter().filter(|v| v.import_id == id) {
                let visit = statuses
                    .iter()
                    .find(|t| t.name == target)
                    .and_then(|t| t.databases.get(datname))
                    .and_then(|d| d.last_visit.as_deref())
                    .and_then(|at| humantime::parse_rfc3339(at).ok());
                found.push((target.clone(), datname.to_owned(), v.clone(), visit));
            }
        }
    }
    if found.is_empty() {
        return None;
    }
    let mut page = html::head(&format!("import {id}"));
    let _ = write!(page, "<h1>Import <code>{}</code></h1>", escape(id));
    let view = hub.alerts.view();
    html::alerts_section(&mut page, &view, |labels| {
        labels.get("import_id").map(String::as_str) == Some(id)
    });
    for (target, datname, v, visit) in &found {
        let _ = write!(
            page,
            "<h2>In {} of target {}</h2>",
            escape(datname),
            target_link(target)
        );
        numbers(&mut page, v);
        timeline(&mut page, hub, target, datname, v, *visit, &view);
        if let Some(sql) = &v.confirm_sql {
            let _ = write!(
                page,
                "<h3>Confirm it yourself</h3><p>On database <code>{}</code>:</p><pre><code>{}</code></pre>",
                escape(datname),
                escape(sql)
            );
        }
    }
    page.push_str(html::FOOT);
    Some(page)
}

fn numbers(page: &mut String, v: &ImportVerdict) {
    let expected_net = v
        .expected_rows
        .zip(v.rejected_rows)
        .zip(v.skipped_rows)
        .and_then(|((e, r), s)| e.checked_sub(r)?.checked_sub(s));
    let ratio = v
        .committed_ratio()
        .map_or_else(String::new, |r| format!("{:.1}%", r * 100.0));
    let xact = match (v.xact_id, v.xact_status) {
        (Some(id), Some(s)) => format!("{id} ({})", s.as_str()),
        (Some(id), None) => id.to_string(),
        (None, _) => String::new(),
    };
    let at_risk = v.at_risk.as_ref().map_or_else(String::new, |r| {
        format!(
            "pid {} idle in a transaction holding writes for {:.0} s",
            r.pid, r.idle_seconds
        )
    });
    let rows: [(&str, String, &str); 16] = [
        (
            "verdict",
            v.verdict.as_str().to_owned(),
            super::charts::verdict_class(v.verdict),
        ),
        ("why", v.reason.clone().unwrap_or_default(), ""),
        ("audit status", v.status.clone(), ""),
        ("audit table", v.audit_table.clone(), ""),
        (
            "target table",
            v.target_table.clone().unwrap_or_default(),
            "",
        ),
        ("source", v.source_name.clone().unwrap_or_default(), ""),
        ("expected rows", num(v.expected_rows), "num"),
        ("rejected rows", num(v.rejected_rows), "num"),
        ("skipped rows", num(v.skipped_rows), "num"),
        ("expected in the table", num(expected_net), "num"),
        ("committed rows", num(v.committed_rows), "num"),
        ("missing rows", num(v.missing_rows), "num"),
        ("arrived", ratio, "num"),
        ("reported by the app", num(v.reported_rows), "num"),
        ("transaction", xact, ""),
        ("at risk", at_risk, "down"),
    ];
    page.push_str("<table>");
    for (label, value, class) in rows {
        if value.is_empty() {
            continue;
        }
        let _ = write!(
            page,
            "<tr><th>{label}</th><td class=\"{class}\">{}</td></tr>",
            escape(&value)
        );
    }
    if let Some(e) = &v.error_message {
        let _ = write!(
            page,
            "<tr><th>the app's error</th><td><code>{}</code></td></tr>",
            escape(e)
        );
    }
    page.push_str("</table>");
}

fn at(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn timeline(
    page: &mut String,
    hub: &Hub,
    target: &str,
    datname: &str,
    v: &ImportVerdict,
    visit: Option<SystemTime>,
    view: &crate::alert::engine::AlertsView,
) {
    let mut events: Vec<(String, String)> = Vec::new();
    if let Some(visit) = visit {
        let before = |secs: f64| visit.checked_sub(Duration::from_secs_f64(secs.max(0.0)));
        if let Some(t) = v.age_seconds.and_then(before) {
            events.push((at(t), "audit row created".into()));
        }
        if let Some(t) = v.finished_age_seconds.and_then(before) {
            events.push((at(t), format!("audit row finished as {}", v.status)));
        }
        events.push((at(visit), "pgvigil's latest look at this database".into()));
    }
    let ring = hub.history.ring(target);
    if let Some(ring) = &ring {
        for (t, verdict) in super::charts::verdict_changes(ring, datname, &v.import_id) {
            events.push((
                at(SystemTime::UNIX_EPOCH + Duration::from_secs(t)),
                format!("pgvigil's verdict: {}", verdict.as_str()),
            ));
        }
    }
    let mine = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get("import_id").map(String::as_str) == Some(v.import_id.as_str())
            && labels.get("target").map(String::as_str) == Some(target)
    };
    for a in view.active.iter().filter(|a| mine(&a.labels)) {
        let name = a.labels.get("alertname").map_or("", String::as_str);
        events.push((a.active_since.clone(), format!("{name} pending")));
        if let Some(since) = &a.firing_since {
            events.push((since.clone(), format!("{name} firing")));
        }
    }
    for r in view.resolved.iter().filter(|r| mine(&r.labels)) {
        let name = r.labels.get("alertname").map_or("", String::as_str);
        events.push((r.resolved_at.clone(), format!("{name} resolved")));
    }
    // RFC 3339 in UTC sorts as text.
    events.sort();
    page.push_str("<h3>Timeline</h3><table><tr><th>when (UTC)</th><th>what</th></tr>");
    for (when, what) in &events {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(when),
            escape(what)
        );
    }
    page.push_str("</table>");
    if let Some(strip) = ring
        .as_ref()
        .and_then(|r| super::charts::verdict_strip(r, datname, &v.import_id))
    {
        page.push_str(&strip);
    }
}
