//! `/targets/<name>`: one source's state, its databases, its alerts, its last hour as charts,
//! and a section per collector (see [`super::sections`]).

use std::fmt::Write as _;

use super::html::{self, escape};
use super::sections::{SECTIONS, TargetView};
use crate::hub::Hub;
use crate::status::{SourceKind, TargetState, TargetStatus};

/// The CSS class and word of a state.
pub(crate) fn state_word(state: TargetState) -> &'static str {
    match state {
        TargetState::Up => "up",
        TargetState::Down => "down",
        TargetState::Starting => "starting",
    }
}

/// The server column: `PgBouncer 1.x` or PostgreSQL's version.
pub(crate) fn server(t: &TargetStatus) -> String {
    match (t.kind, t.server_version.as_deref()) {
        (SourceKind::Pgbouncer, Some(v)) => format!("PgBouncer {v}"),
        (_, v) => v.unwrap_or("").to_owned(),
    }
}

/// The page of target `name`, or `None` if no such source is watched.
pub(crate) fn page(hub: &Hub, name: &str) -> Option<String> {
    let status = hub.status.targets().into_iter().find(|t| t.name == name)?;
    let observations = hub.latest_observations().remove(name);
    let state = state_word(status.state);
    let mut page = html::head(name);
    let _ = write!(
        page,
        "<h1>{} <small class=\"{state}\">{state}</small> <small>{}</small></h1>",
        escape(name),
        escape(&server(&status))
    );
    facts(&mut page, &status);
    html::alerts_section(&mut page, &hub.alerts.view(), |labels| {
        labels.get("target").map(String::as_str) == Some(name)
    });
    if let Some(ring) = hub.history.ring(name) {
        let charts = super::charts::target_charts(&ring);
        if !charts.is_empty() {
            let _ = write!(
                page,
                "<h2 id=\"history\">Last hour</h2><p>One sample every {} s, from pgvigil's own polls.</p>{charts}",
                ring.step_seconds()
            );
        }
    }
    if let Some(observations) = &observations {
        let view = TargetView { observations };
        for section in SECTIONS {
            if let Some(body) = (section.render)(&view) {
                let _ = write!(
                    page,
                    "<h2 id=\"{}\">{}</h2>{body}",
                    section.id,
                    escape(section.title)
                );
            }
        }
    }
    collectors(&mut page, &status);
    page.push_str(html::FOOT);
    Some(page)
}

fn facts(page: &mut String, t: &TargetStatus) {
    let tls = match t.tls {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let _ = write!(
        page,
        "<table><tr><th>connection</th><td><code>{}</code></td></tr><tr><th>TLS</th><td>{tls}</td></tr>\
         <tr><th>last poll</th><td>{}</td></tr><tr><th>last complete success</th><td>{}</td></tr>\
         <tr><th>last error</th><td class=\"{}\">{}</td></tr><tr><th>failed attempts in a row</th><td class=\"num\">{}</td></tr>",
        escape(&t.connection),
        escape(t.last_poll.as_deref().unwrap_or("never")),
        escape(t.last_success.as_deref().unwrap_or("never")),
        if t.last_error.is_some() { "down" } else { "" },
        escape(t.last_error.as_deref().unwrap_or("")),
        t.consecutive_failures,
    );
    if t.kind == SourceKind::Postgres {
        let _ = write!(
            page,
            "<tr><th>database sessions open</th><td class=\"num\">{}</td></tr>",
            t.database_sessions
        );
    }
    page.push_str("</table>");
    if t.databases.is_empty() {
        return;
    }
    page.push_str("<h2 id=\"databases\">Databases</h2><table><tr><th>database</th><th>state</th><th>session open</th><th>last visit</th><th>error (or what does not apply)</th></tr>");
    for (datname, d) in &t.databases {
        // A database whose statistics were read is up, whether or not the session that read
        // it has reported its entry yet.
        let state = match (d.up, &d.last_visit) {
            (Some(false), _) => "down",
            (Some(true), _) | (None, Some(_)) => "up",
            (None, None) => "starting",
        };
        let _ = write!(
            page,
            "<tr><td>{}</td><td class=\"{state}\">{state}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(datname),
            if d.session { "yes" } else { "no" },
            escape(d.last_visit.as_deref().unwrap_or("never")),
            escape(&d.last_error.clone().unwrap_or_else(|| {
                let not_applicable = d.not_applicable.iter();
                let lines: Vec<String> = not_applicable.map(|(c, r)| format!("{c}: {r}")).collect();
                lines.join("; ")
            })),
        );
    }
    page.push_str("</table>");
}

fn collectors(page: &mut String, t: &TargetStatus) {
    if t.collectors.is_empty() {
        return;
    }
    page.push_str("<h2 id=\"collectors\">Collectors</h2><table><tr><th>collector</th><th>last run took</th><th>last success</th><th>last error (or where it does not apply)</th></tr>");
    for (name, c) in &t.collectors {
        let _ = write!(
            page,
            "<tr><td>{}</td><td class=\"num\">{:.1} ms</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            escape(name),
            c.last_duration_seconds * 1e3,
            escape(c.last_success.as_deref().unwrap_or("never")),
            if c.last_error.is_some() { "down" } else { "" },
            escape(
                c.last_error
                    .as_deref()
                    .or(c.not_applicable.as_deref())
                    .unwrap_or("")
            ),
        );
    }
    page.push_str("</table>");
}
