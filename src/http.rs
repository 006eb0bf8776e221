//! The HTTP server: `/metrics`, `/healthz`, `/readyz`, `/api/v1/targets`, `POST /-/reload` and
//! the status page.
//!
//! Every path is in [`ROUTES`], which the router dispatches from. The API is read-only: every
//! route answers GET and HEAD only, except `/-/reload` (POST or PUT, only when
//! `enable_lifecycle` is on, and behind basic auth when the web config has users); any other
//! method gets 405 with an `Allow` header.
//!
//! Every handler reads in-memory state only; none waits on a database, so a scrape stays fast
//! while a target is slow, locked or gone.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::exposition;
use crate::hub::Hub;

type Body = Full<Bytes>;

/// Accept connections until `shutdown`, then let in-flight requests finish. `web` secures
/// them (TLS, basic auth, headers: see [`crate::web`]).
pub(crate) async fn serve(
    listener: TcpListener,
    web: crate::config::WebSettings,
    shared: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let web = crate::web::Web::new(&web);
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let active = web.current();
        connections.spawn(async move {
            let Some(io) = active.handshake(stream, peer).await else {
                return;
            };
            let service = service_fn(move |req| {
                let shared = shared.clone();
                let active = active.clone();
                async move {
                    if let Some(refused) = active.refusal(&req).await {
                        return Ok::<_, Infallible>(refused);
                    }
                    Ok(active.decorate(route(&req, &shared).await))
                }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            // A client that hangs up mid-request is routine for a scrape endpoint.
            if let Err(e) = result {
                debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// What a path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/metrics`: the exposition.
    Metrics,
    /// `/healthz`: the process answers.
    Healthz,
    /// `/readyz`: every source has been polled.
    Readyz,
    /// `/api/v1/targets`.
    Targets,
    /// `/api/v1/imports`.
    Imports,
    /// `/api/v1/alerts`.
    Alerts,
    /// `/`: the status page.
    StatusPage,
    /// `/-/reload`: the lifecycle API (Prometheus'), off unless `enable_lifecycle`.
    Reload,
}

impl Endpoint {
    /// The methods it answers, as the `Allow` header lists them.
    pub fn allow(self) -> &'static str {
        match self {
            // Prometheus' lifecycle API takes both.
            Endpoint::Reload => "POST, PUT",
            _ => "GET, HEAD",
        }
    }

    /// Whether it answers `method`.
    pub fn allows(self, method: &Method) -> bool {
        match self {
            Endpoint::Reload => method == Method::POST || method == Method::PUT,
            _ => method == Method::GET || method == Method::HEAD,
        }
    }
}

/// Every path served, and what it serves: the router dispatches from this list only, so a
/// test iterating it covers every route (and the 404 message lists it).
pub const ROUTES: &[(&str, Endpoint)] = &[
    ("/metrics", Endpoint::Metrics),
    ("/healthz", Endpoint::Healthz),
    ("/readyz", Endpoint::Readyz),
    ("/api/v1/targets", Endpoint::Targets),
    ("/api/v1/imports", Endpoint::Imports),
    ("/api/v1/alerts", Endpoint::Alerts),
    ("/", Endpoint::StatusPage),
    ("/-/reload", Endpoint::Reload),
];

/// Answer `req`: its route from [`ROUTES`], 404 for another path, 405 with `Allow` for a
/// method the route does not take. The API is read-only: only `/-/reload` takes a POST.
async fn route(req: &Request<Incoming>, shared: &Hub) -> Response<Body> {
    let path = req.uri().path();
    let Some(&(_, endpoint)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        let paths: Vec<&str> = ROUTES.iter().map(|(p, _)| *p).collect();
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("not found; try {}\n", paths.join(", ")),
        );
    };
    if !endpoint.allows(req.method()) {
        let mut response = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            format!(
                "{} is not allowed on {path}; it takes {}\n",
                req.method(),
                endpoint.allow()
            ),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(endpoint.allow()));
        return response;
    }
    match endpoint {
        Endpoint::Metrics => metrics(req, shared),
        Endpoint::Healthz => text(StatusCode::OK, "ok\n"),
        Endpoint::Readyz => {
            if shared.status.ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: some targets have not been polled yet\n",
                )
            }
        }
        Endpoint::Targets => json(&shared.status.targets()),
        Endpoint::Imports => json(&imports_api(shared)),
        Endpoint::Alerts => json(&shared.alerts.view()),
        Endpoint::StatusPage => html(status_page(shared)),
        Endpoint::Reload => reload(shared).await,
    }
}

/// `POST /-/reload` (Prometheus' lifecycle API): re-read the configuration and say what
/// changed (200) or why it was rejected (500, the same message as `check-config`).
async fn reload(shared: &Hub) -> Response<Body> {
    if !shared.lifecycle.load(std::sync::atomic::Ordering::Relaxed) {
        return text(
            StatusCode::FORBIDDEN,
            "the lifecycle API is not enabled; set [server] enable_lifecycle = true (or send SIGHUP)\n",
        );
    }
    let Some(trigger) = shared.reload.get() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this daemon has no configuration to re-read\n",
        );
    };
    match trigger.reload().await {
        Ok(summary) => respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            format!("{summary}\n"),
        ),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
    }
}

fn metrics(req: &Request<Incoming>, shared: &Hub) -> Response<Body> {
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let (body, content_type) = if exposition::wants_openmetrics(accept) {
        (
            shared.metrics.encode_openmetrics(),
            exposition::OPENMETRICS_CONTENT_TYPE,
        )
    } else {
        (
            shared.metrics.encode_classic(),
            exposition::CLASSIC_CONTENT_TYPE,
        )
    };
    respond(StatusCode::OK, content_type, body)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => {
            warn!(error = %e, "cannot serialise API response");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

fn html(body: String) -> Response<Body> {
    respond(StatusCode::OK, "text/html; charset=utf-8", body)
}

/// Escape text for HTML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// PgBouncer pools from the latest polls: clients against servers against the pool's limit.
fn pgbouncer_pools(shared: &Hub, page: &mut String) {
    let mut rows = String::new();
    for (target, obs) in shared.latest_observations() {
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
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{} / {size}</td><td>{}</td><td>{:.1}s</td></tr>",
                escape(&target),
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

fn status_page(shared: &Hub) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pgvigil</title>\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
         .up{color:#080}.down{color:#b00;font-weight:bold}.starting{color:#888}code{font-size:90%}</style>\
         </head><body><h1>pgvigil</h1>",
    );
    if let Some((at, error)) = shared.reload_error() {
        let _ = write!(
            page,
            "<p class=\"down\">Configuration reload rejected at {}; the previous configuration still runs:<br><code>{}</code></p>",
            escape(&at),
            escape(&error)
        );
    }
    for error in shared.discovery_errors() {
        let _ = write!(
            page,
            "<p class=\"down\">Discovery file not read (its last good targets keep running): <code>{}</code></p>",
            escape(&error)
        );
    }
    page.push_str("<h2>Targets</h2><table><tr><th>target</th><th>connection</th><th>state</th><th>server</th><th>last poll</th><th>last error</th></tr>");
    for t in shared.status.targets() {
        let state = match t.state {
            crate::status::TargetState::Up => "up",
            crate::status::TargetState::Down => "down",
            crate::status::TargetState::Starting => "starting",
        };
        let _ = write!(
            page,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"{state}\">{state}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.name),
            escape(&t.connection),
            escape(&match (t.kind, t.server_version.as_deref()) {
                (crate::status::SourceKind::Pgbouncer, Some(v)) => format!("PgBouncer {v}"),
                (_, v) => v.unwrap_or("").to_owned(),
            }),
            escape(t.last_poll.as_deref().unwrap_or("never")),
            escape(t.last_error.as_deref().unwrap_or("")),
        );
    }
    page.push_str("</table>");
    pgbouncer_pools(shared, &mut page);

    alerts_section(&mut page, &shared.alerts.view());

    page.push_str("<h2>Open transactions holding uncommitted writes</h2>");
    let mut rows = String::new();
    for (target, obs) in shared.latest_observations() {
        let Some(activity) = &obs.activity else {
            continue;
        };
        for s in activity.open_transactions.iter().filter(|s| s.holds_writes) {
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}s</td><td><code>{}</code></td></tr>",
                escape(&target),
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
    if rows.is_empty() {
        page.push_str("<p>None.</p>");
    } else {
        page.push_str("<table><tr><th>target</th><th>pid</th><th>database</th><th>user</th><th>application</th><th>state</th><th>open for</th><th>last statement</th></tr>");
        page.push_str(&rows);
        page.push_str("</table>");
    }
    imports_section(&mut page, shared);
    page.push_str("<p><a href=\"/metrics\">/metrics</a> · <a href=\"/api/v1/targets\">/api/v1/targets</a> · <a href=\"/api/v1/alerts\">/api/v1/alerts</a> · <a href=\"/api/v1/imports\">/api/v1/imports</a></p></body></html>");
    page
}

/// `/api/v1/imports`: every target's latest import verdicts, with their numbers. Per target:
/// `imports`, `audit_tables` and `problems` over all its databases (each verdict and audit
/// table with its `datname`), and `databases`, each database's own report; `null` while no
/// database has been read.
fn imports_api(shared: &Hub) -> serde_json::Value {
    let mut targets = serde_json::Map::new();
    for (target, obs) in shared.latest_observations() {
        let mut imports = Vec::new();
        let mut audit_tables = Vec::new();
        let mut problems = Vec::new();
        let mut databases = serde_json::Map::new();
        for (datname, report) in obs.each_database() {
            let Some(report) = &report.imports else {
                continue;
            };
            for v in &report.imports {
                let mut v = serde_json::to_value(v).unwrap_or_default();
                if let Some(v) = v.as_object_mut() {
                    v.insert("datname".into(), datname.into());
                }
                imports.push(v);
            }
            audit_tables.extend(
                report
                    .audit_tables
                    .iter()
                    .map(|t| serde_json::json!({ "datname": datname, "table": t })),
            );
            problems.extend(report.problems.iter().map(|p| format!("{datname}: {p}")));
            databases.insert(
                datname.to_owned(),
                serde_json::to_value(report).unwrap_or_default(),
            );
        }
        let value = if databases.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!({
                "imports": imports,
                "audit_tables": audit_tables,
                "problems": problems,
                "databases": databases,
            })
        };
        targets.insert(target, value);
    }
    serde_json::json!({ "targets": targets })
}

/// The status page's imports section: problems first, then each import's verdict.
fn imports_section(page: &mut String, shared: &Hub) {
    use crate::collect::imports::reconcile::Verdict;
    page.push_str("<h2>Imports</h2>");
    let mut rows = String::new();
    let mut problems = String::new();
    for (target, obs) in shared.latest_observations() {
        for report in obs.each_database().filter_map(|(_, d)| d.imports.as_ref()) {
            for p in &report.problems {
                let _ = write!(problems, "<li>{}: {}</li>", escape(&target), escape(p));
            }
            for v in &report.imports {
                let class = match v.verdict {
                    Verdict::Ok | Verdict::Running | Verdict::Failed => "up",
                    Verdict::Confirming | Verdict::Unknown => "starting",
                    _ => "down",
                };
                let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
                let _ = write!(
                    rows,
                    "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&target),
                    escape(&v.import_id),
                    escape(v.target_table.as_deref().unwrap_or("")),
                    escape(v.source_name.as_deref().unwrap_or("")),
                    escape(&v.status),
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
                );
            }
        }
    }
    if !problems.is_empty() {
        let _ = write!(page, "<ul class=\"down\">{problems}</ul>");
    }
    if rows.is_empty() {
        page.push_str("<p>No imports recorded in the audit tables.</p>");
    } else {
        page.push_str("<table><tr><th>target</th><th>import</th><th>table</th><th>source</th><th>audit status</th><th>verdict</th><th>expected</th><th>rejected+skipped</th><th>committed</th><th>missing</th><th>reported</th><th>why</th></tr>");
        page.push_str(&rows);
        page.push_str("</table>");
    }
    page.push_str("<p><a href=\"/api/v1/imports\">/api/v1/imports</a></p>");
}

/// The alerts part of the status page: firing and pending alerts with their annotations, then
/// recent resolutions.
fn alerts_section(page: &mut String, view: &crate::alert::engine::AlertsView) {
    page.push_str("<h2>Alerts</h2>");
    if let Some(error) = &view.state_error {
        let _ = write!(page, "<p class=\"down\">{}</p>", escape(error));
    }
    if view.active.is_empty() {
        page.push_str("<p>None firing or pending.</p>");
    } else {
        page.push_str("<table><tr><th>state</th><th>alert</th><th>labels</th><th>since</th><th>details</th></tr>");
        // Firing before pending, then by name.
        let mut active: Vec<_> = view.active.iter().collect();
        active.sort_by_key(|a| (a.state != "firing", a.labels.get("alertname").cloned()));
        for a in active {
            let class = if a.state == "firing" {
                "down"
            } else {
                "starting"
            };
            let _ = write!(
                page,
                "<tr><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                a.state,
                escape(a.labels.get("alertname").map_or("", String::as_str)),
                labels_html(&a.labels),
                escape(a.firing_since.as_deref().unwrap_or(&a.active_since)),
                annotations_html(&a.annotations),
            );
        }
        page.push_str("</table>");
    }
    if !view.resolved.is_empty() {
        page.push_str("<h3>Recently resolved</h3><table><tr><th>alert</th><th>labels</th><th>firing since</th><th>resolved</th><th>summary</th></tr>");
        for r in view.resolved.iter().take(20) {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(r.labels.get("alertname").map_or("", String::as_str)),
                labels_html(&r.labels),
                escape(r.firing_since.as_deref().unwrap_or("")),
                escape(&r.resolved_at),
                escape(r.annotations.get("summary").map_or("", String::as_str)),
            );
        }
        page.push_str("</table>");
    }
}

fn labels_html(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn annotations_html(annotations: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::new();
    if let Some(summary) = annotations.get("summary") {
        let _ = write!(out, "<b>{}</b><br>", escape(summary));
    }
    if let Some(description) = annotations.get("description") {
        let _ = write!(out, "{}<br>", escape(description));
    }
    if let Some(url) = annotations.get("runbook_url") {
        let _ = write!(out, "<a href=\"{}\">runbook</a> ", escape(url));
    }
    let rest: Vec<String> = annotations
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "summary" | "description" | "runbook_url"))
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    if !rest.is_empty() {
        let _ = write!(out, "<small>{}</small>", rest.join(" · "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_handles_markup() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
