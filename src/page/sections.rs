//! The sections of a target's page, one per collector's report, listed once in [`SECTIONS`].
//!
//! A section renders from the target's latest observations and returns `None` when its
//! collector has not reported (disabled, failing, or another kind of source): the page then
//! leaves it out instead of showing an empty placeholder. To give a new collector a section
//! (the schema guard's blocking trees and index advice, issue #14): write a `fn(&TargetView)
//! -> Option<String>` beside the others and add one line to [`SECTIONS`].

use std::fmt::Write as _;

use super::html::{escape, import_link, num, target_link};
use crate::collect::Observations;
use crate::collect::imports::reconcile::ImportVerdict;

/// What a section sees of one target.
#[derive(Debug)]
pub(crate) struct TargetView<'a> {
    /// Its latest observations (a target not polled yet has no sections).
    pub(crate) observations: &'a Observations,
}

/// One section of a target's page.
#[derive(Debug)]
pub(crate) struct Section {
    /// The HTML id (`/targets/<name>#<id>`).
    pub(crate) id: &'static str,
    /// Its heading.
    pub(crate) title: &'static str,
    /// Its body, or `None` to leave it out.
    pub(crate) render: fn(&TargetView<'_>) -> Option<String>,
}

/// Every section, in page order.
pub(crate) const SECTIONS: &[Section] = &[
    Section {
        id: "writes",
        title: "Open transactions holding uncommitted writes",
        render: writes,
    },
    Section {
        id: "blocked",
        title: "Blocked sessions",
        render: super::blocking::render,
    },
    Section {
        id: "imports",
        title: "Imports",
        render: imports,
    },
    Section {
        id: "statements",
        title: "Top statements of the last interval",
        render: statements,
    },
    Section {
        id: "tables",
        title: "Tables",
        render: tables,
    },
    Section {
        id: "findings",
        title: "Schema guard findings",
        render: findings,
    },
    Section {
        id: "pools",
        title: "PgBouncer pools",
        render: pools,
    },
    Section {
        id: "wraparound",
        title: "Transaction ID age",
        render: wraparound,
    },
];

/// The header of the open-writes table; `with_target` adds a target column.
pub(crate) fn writes_header(with_target: bool) -> String {
    format!(
        "<table><tr>{}<th>pid</th><th>database</th><th>user</th><th>application</th><th>state</th><th>open for</th><th>last statement</th></tr>",
        if with_target { "<th>target</th>" } else { "" }
    )
}

/// One row per open transaction holding writes.
pub(crate) fn writes_rows(target: Option<&str>, obs: &Observations, rows: &mut String) {
    let Some(activity) = &obs.activity else {
        return;
    };
    for s in activity.open_transactions.iter().filter(|s| s.holds_writes) {
        let _ = write!(
            rows,
            "<tr>{}<td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.0}s</td><td><code>{}</code></td></tr>",
            target.map_or_else(String::new, |t| format!("<td>{}</td>", target_link(t))),
            s.pid,
            escape(&s.datname),
            escape(&s.usename),
            escape(&s.application_name),
            escape(&s.state),
            s.xact_age_seconds,
            escape(&s.query),
        );
    }
}

fn writes(view: &TargetView<'_>) -> Option<String> {
    let obs = view.observations;
    obs.activity.as_ref()?;
    let mut rows = String::new();
    writes_rows(None, obs, &mut rows);
    Some(if rows.is_empty() {
        "<p>None.</p>".to_owned()
    } else {
        format!("{}{rows}</table>", writes_header(false))
    })
}

/// The header of an imports table; `with_target` adds a target column.
pub(crate) fn imports_header(with_target: bool) -> String {
    format!(
        "<table><tr>{}<th>database</th><th>import</th><th>table</th><th>source</th><th>audit status</th><th>verdict</th><th>expected</th><th>rejected+skipped</th><th>committed</th><th>missing</th><th>reported</th><th>why</th></tr>",
        if with_target { "<th>target</th>" } else { "" }
    )
}

/// One import's row.
pub(crate) fn import_row(target: Option<&str>, datname: &str, v: &ImportVerdict) -> String {
    format!(
        "<tr>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
        target.map_or_else(String::new, |t| format!("<td>{}</td>", target_link(t))),
        escape(datname),
        import_link(&v.import_id),
        escape(v.target_table.as_deref().unwrap_or("")),
        escape(v.source_name.as_deref().unwrap_or("")),
        escape(&v.status),
        super::charts::verdict_class(v.verdict),
        v.verdict.as_str(),
        num(v.expected_rows),
        num(v
            .rejected_rows
            .zip(v.skipped_rows)
            .map(|(r, s)| r.saturating_add(s))),
        num(v.committed_rows),
        num(v.missing_rows),
        num(v.reported_rows),
        escape(v.reason.as_deref().unwrap_or("")),
    )
}

fn imports(view: &TargetView<'_>) -> Option<String> {
    let obs = view.observations;
    let reports: Vec<_> = obs
        .each_database()
        .filter_map(|(datname, d)| Some((datname, d.imports.as_ref()?)))
        .collect();
    if reports.is_empty() {
        return None;
    }
    let mut out = String::new();
    let mut rows = String::new();
    for (datname, report) in reports {
        for p in &report.problems {
            let _ = write!(
                out,
                "<p class=\"down\">{}: {}</p>",
                escape(datname),
                escape(p)
            );
        }
        for v in &report.imports {
            rows.push_str(&import_row(None, datname, v));
        }
    }
    if rows.is_empty() {
        out.push_str("<p>No imports recorded in the audit tables.</p>");
    } else {
        let _ = write!(out, "{}{rows}</table>", imports_header(false));
    }
    Some(out)
}

fn statements(view: &TargetView<'_>) -> Option<String> {
    let report = view.observations.statements.as_ref()?;
    let mut top: Vec<_> = report.statements.iter().collect();
    top.sort_by(|a, b| (b.calls * b.mean_seconds).total_cmp(&(a.calls * a.mean_seconds)));
    if top.is_empty() {
        return Some("<p>No statement ran in the last interval.</p>".to_owned());
    }
    let mut out = String::from(
        "<table><tr><th>database</th><th>user</th><th>queryid</th><th>calls</th><th>mean</th><th>baseline</th><th>query</th></tr>",
    );
    for s in top.into_iter().take(10) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.0}</td><td class=\"num\">{:.2} ms</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            escape(&s.datname),
            escape(&s.usename),
            s.queryid,
            s.calls,
            s.mean_seconds * 1e3,
            s.baseline_seconds
                .map_or_else(String::new, |b| format!("{:.2} ms", b * 1e3)),
            escape(s.query.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</table>");
    Some(out)
}

fn tables(view: &TargetView<'_>) -> Option<String> {
    let obs = view.observations;
    let mut rows = Vec::new();
    for (datname, d) in obs.each_database() {
        let Some(t) = &d.tables else { continue };
        rows.extend(t.tables.iter().map(|s| (datname, s)));
    }
    if rows.is_empty() {
        return None;
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.size_bytes));
    let mut out = String::from(
        "<table><tr><th>database</th><th>table</th><th>live rows</th><th>exact count</th><th>dead rows</th><th>size</th></tr>",
    );
    for (datname, s) in rows.iter().take(25) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1} MB</td></tr>",
            escape(datname),
            escape(&s.table),
            s.live_rows,
            num(s.exact_rows),
            s.dead_rows,
            s.size_bytes as f64 / 1e6,
        );
    }
    out.push_str("</table>");
    if rows.len() > 25 {
        let _ = write!(
            out,
            "<p>{} more on <a href=\"/metrics\">/metrics</a>.</p>",
            rows.len() - 25
        );
    }
    Some(out)
}

/// The most findings listed on the page; `pgvigil advise` and `/api/v1/findings` have all.
const MAX_FINDINGS_SHOWN: usize = 50;

/// The schema guard's findings of every database, most severe first, with their fixes.
fn findings(view: &TargetView<'_>) -> Option<String> {
    let mut rows = Vec::new();
    let mut reported = false;
    for (_, d) in view.observations.each_database() {
        let Some(found) = d.findings() else { continue };
        reported = true;
        rows.extend(found);
    }
    if !reported {
        return None;
    }
    if rows.is_empty() {
        return Some("<p>No findings in any database.</p>".to_owned());
    }
    rows.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let mut out = String::from(
        "<table><tr><th>severity</th><th>database</th><th>check</th><th>object</th><th>finding</th><th>fix</th></tr>",
    );
    for f in rows.iter().take(MAX_FINDINGS_SHOWN) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            f.severity.as_str(),
            escape(&f.database),
            f.check,
            escape(&f.object),
            escape(&f.message),
            escape(f.fix.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</table>");
    if rows.len() > MAX_FINDINGS_SHOWN {
        let _ = write!(
            out,
            "<p>{} more: run <code>pgvigil advise</code>.</p>",
            rows.len() - MAX_FINDINGS_SHOWN
        );
    }
    Some(out)
}

fn pools(view: &TargetView<'_>) -> Option<String> {
    let report = view.observations.pgbouncer.as_ref()?;
    let pools = report.pools.as_ref()?;
    let mut out = String::from(
        "<table><tr><th>datname</th><th>usename</th><th>clients active</th><th>clients waiting</th><th>servers active / pool_size</th><th>servers idle</th><th>max wait</th></tr>",
    );
    for p in pools {
        let size = report
            .pool_size(&p.datname)
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let class = if p.clients_waiting > 0 { "down" } else { "up" };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num {class}\">{}</td><td class=\"num\">{} / {size}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}s</td></tr>",
            escape(&p.datname),
            escape(&p.usename),
            p.clients_active,
            p.clients_waiting,
            p.servers_active,
            p.servers_idle,
            p.max_wait_seconds,
        );
    }
    out.push_str("</table>");
    Some(out)
}

fn wraparound(view: &TargetView<'_>) -> Option<String> {
    let report = view.observations.wraparound.as_ref()?;
    let mut out = String::from(
        "<table><tr><th>database</th><th>xid age</th><th>of autovacuum_freeze_max_age</th><th>multixact age</th></tr>",
    );
    let mut ages: Vec<_> = report.databases.iter().collect();
    ages.sort_by(|a, b| b.1.xid_age.total_cmp(&a.1.xid_age));
    for (datname, age) in ages {
        let share = if report.freeze_max_age > 0.0 {
            format!("{:.0}%", age.xid_age / report.freeze_max_age * 100.0)
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{:.0}</td><td class=\"num\">{share}</td><td class=\"num\">{:.0}</td></tr>",
            escape(datname),
            age.xid_age,
            age.mxid_age,
        );
    }
    out.push_str("</table>");
    if let Some(holder) = report.horizon_holder() {
        let _ = write!(
            out,
            "<p>The oldest xmin is held by {}.</p>",
            escape(&holder.describe())
        );
    }
    Some(out)
}
