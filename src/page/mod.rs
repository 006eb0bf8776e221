//! The status pages: `/` (every source at a glance, firing alerts first), `/targets/<name>`
//! (one source: its databases, its last hour as charts, a section per collector) and
//! `/imports/<id>` (one import: numbers, timeline, the SQL to confirm).
//!
//! Pages are rendered on the server from what the daemon holds in memory — the latest
//! observations, the alert engine's view, and the [`history`] ring of each source — so they
//! cost no database query. Charts are inline SVG (`svg`); no page has any script, and the
//! responses forbid scripts (`html::CSP`), so the pages work offline. Every text that came
//! from a server, an application or a configuration is escaped.
//!
//! # Layout
//!
//! * [`history`]: the per-source ring buffer of samples (public, for the bench).
//! * `html`: escaping, links, the layout and its dark mode, the alerts table.
//! * `runbooks`: the runbooks embedded at build time, and their first steps.
//! * `svg`, `charts`: the charts, and which a target gets.
//! * `sections`: a target page's per-collector sections, listed once.
//! * `target`, `import`: the two detail pages.

mod blocking;
mod charts;
pub mod history;
pub(crate) mod html;
mod import;
mod runbooks;
mod sections;
mod svg;
mod target;

use std::fmt::Write as _;

use html::{escape, target_link};

use crate::hub::Hub;

/// A page to serve.
#[derive(Debug)]
pub(crate) enum Page {
    /// 200 with this HTML.
    Found(String),
    /// 404 with this HTML (what was asked for, and where to look instead).
    NotFound(String),
}

/// The page at `path`, or `None` when `path` is not a page's.
pub(crate) fn render(path: &str, hub: &Hub) -> Option<Page> {
    if path == "/" {
        return Some(Page::Found(overview(hub)));
    }
    let (kind, segment) = if let Some(name) = path.strip_prefix("/targets/") {
        ("target", name)
    } else if let Some(id) = path.strip_prefix("/imports/") {
        ("import", id)
    } else {
        return None;
    };
    let Some(key) = html::decode_segment(segment) else {
        return Some(not_found(kind, segment));
    };
    let page = match kind {
        "target" => target::page(hub, &key),
        _ => import::page(hub, &key),
    };
    Some(page.map_or_else(|| not_found(kind, &key), Page::Found))
}

fn not_found(kind: &str, key: &str) -> Page {
    let mut page = html::head("not found");
    let _ = write!(
        page,
        "<h1>No {kind} <code>{}</code></h1><p>It is not watched (or no audit table lists it now). \
         The <a href=\"/\">overview</a> links every target and import pgvigil knows.</p>{}",
        escape(key),
        html::FOOT
    );
    Page::NotFound(page)
}

/// `/`: problems first (alerts, a rejected reload, unreadable discovery files), then every
/// source, imports, and open transactions holding writes.
fn overview(hub: &Hub) -> String {
    let mut page = html::head("status");
    page.push_str("<h1>pgvigil</h1>");
    if let Some((at, error)) = hub.reload_error() {
        let _ = write!(
            page,
            "<p class=\"down\">Configuration reload rejected at {}; the previous configuration still runs:<br><code>{}</code></p>",
            escape(&at),
            escape(&error)
        );
    }
    for error in hub.discovery_errors() {
        let _ = write!(
            page,
            "<p class=\"down\">Discovery file not read (its last good targets keep running): <code>{}</code></p>",
            escape(&error)
        );
    }
    html::alerts_section(&mut page, &hub.alerts.view(), |_| true);
    targets_table(hub, &mut page);
    let latest = hub.latest_observations();
    pgbouncer_pools(&latest, &mut page);
    imports_table(&latest, &mut page);
    let mut writes = String::new();
    for (target, obs) in &latest {
        sections::writes_rows(Some(target), obs, &mut writes);
    }
    page.push_str("<h2 id=\"writes\">Open transactions holding uncommitted writes</h2>");
    if writes.is_empty() {
        page.push_str("<p>None.</p>");
    } else {
        let _ = write!(page, "{}{writes}</table>", sections::writes_header(true));
    }
    page.push_str(html::FOOT);
    page
}

/// Every source, linking to its page, with its watched databases.
fn targets_table(hub: &Hub, page: &mut String) {
    page.push_str("<h2 id=\"targets\">Targets</h2><table><tr><th>target</th><th>state</th><th>server</th><th>databases</th><th>connection</th><th>last poll</th><th>last error</th></tr>");
    for t in hub.status.targets() {
        let state = target::state_word(t.state);
        let databases = if t.databases.is_empty() {
            String::new()
        } else {
            let down = t.databases.values().filter(|d| d.up == Some(false)).count();
            let names: Vec<String> = t.databases.keys().map(|d| escape(d)).collect();
            format!(
                "{}{}",
                names.join(", "),
                if down > 0 {
                    format!(" <span class=\"down\">({down} unreadable)</span>")
                } else {
                    String::new()
                }
            )
        };
        let _ = write!(
            page,
            "<tr><td>{}</td><td class=\"{state}\">{state}</td><td>{}</td><td>{databases}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            target_link(&t.name),
            escape(&target::server(&t)),
            escape(&t.connection),
            escape(t.last_poll.as_deref().unwrap_or("never")),
            escape(t.last_error.as_deref().unwrap_or("")),
        );
    }
    page.push_str("</table>");
}

type Latest = std::collections::BTreeMap<String, std::sync::Arc<crate::collect::Observations>>;

/// Every import's verdict over all targets and databases, audit tables that cannot be read
/// first.
fn imports_table(latest: &Latest, page: &mut String) {
    let mut imports = String::new();
    let mut problems = String::new();
    for (target, obs) in latest {
        for (datname, d) in obs.each_database() {
            let Some(report) = &d.imports else { continue };
            for p in &report.problems {
                let _ = write!(
                    problems,
                    "<li>{} / {}: {}</li>",
                    target_link(target),
                    escape(datname),
                    escape(p)
                );
            }
            for v in &report.imports {
                imports.push_str(&sections::import_row(Some(target), datname, v));
            }
        }
    }
    page.push_str("<h2 id=\"imports\">Imports</h2>");
    if !problems.is_empty() {
        let _ = write!(page, "<ul class=\"down\">{problems}</ul>");
    }
    if imports.is_empty() {
        page.push_str("<p>No imports recorded in the audit tables.</p>");
    } else {
        let _ = write!(page, "{}{imports}</table>", sections::imports_header(true));
    }
}

/// PgBouncer pools from the latest polls: clients against servers against the pool's limit.
fn pgbouncer_pools(latest: &Latest, page: &mut String) {
    let mut rows = String::new();
    for (target, obs) in latest {
        let Some(report) = &obs.pgbouncer else {
            continue;
        };
        for p in report.pools.iter().flatten() {
            let size = report
                .pool_size(&p.datname)
                .map_or_else(|| "?".to_owned(), |n| n.to_string());
            let class = if p.clients_waiting > 0 { "down" } else { "up" };
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num {class}\">{}</td><td class=\"num\">{} / {size}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}s</td></tr>",
                target_link(target),
                escape(&p.datname),
                escape(&p.usename),
                p.clients_active,
                p.clients_waiting,
                p.servers_active,
                p.servers_idle,
                p.max_wait_seconds,
            );
        }
    }
    if !rows.is_empty() {
        page.push_str("<h2>PgBouncer pools</h2><table><tr><th>instance</th><th>datname</th><th>usename</th><th>clients active</th><th>clients waiting</th><th>servers active / pool_size</th><th>servers idle</th><th>max wait</th></tr>");
        page.push_str(&rows);
        page.push_str("</table>");
    }
}
