//! The HTTP server: `/metrics`, `/healthz`, `/readyz`, `/api/v1/targets`, `POST /-/reload` and
//! the status pages (rendered by [`crate::page`]).
//!
//! Every path is in [`ROUTES`], which the router dispatches from. The API is read-only: every
//! route answers GET and HEAD only, except `/-/reload` (POST or PUT, only when
//! `enable_lifecycle` is on, and behind basic auth when the web config has users); any other
//! method gets 405 with an `Allow` header.
//!
//! Every handler reads in-memory state only; none waits on a database, so a scrape stays fast
//! while a target is slow, locked or gone.
//!
//! Bodies are whole (`Body::Whole`, with a `Content-Length`) except the plain `/metrics`
//! one, which is written as the client reads it (`Body::Streamed`, sent with
//! `Transfer-Encoding: chunked`; HTTP/1.0 clients get it delimited by the connection's close):
//! at full fidelity it is ~19 MB, which the daemon never holds whole (see `crate::metrics`,
//! module `scrape`). hyper asks for the next chunk only while its write buffer holds less
//! than ~400 KiB, so a slow reader costs a chunk or two, not the body; a HEAD gets the
//! headers and the body is never written.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{
    ACCEPT, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, VARY,
};
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
use crate::metrics::{Scraped, Streamed};
use crate::page::Page;

/// A response body: whole, or the plain `/metrics` text written chunk by chunk as hyper asks
/// for it.
#[derive(Debug)]
pub(crate) enum Body {
    /// Made before the response is sent.
    Whole(Full<Bytes>),
    /// Written as it is read: each frame is the next chunk (~256 KiB) of the exposition.
    Streamed(Streamed),
}

impl From<Scraped> for Body {
    fn from(scraped: Scraped) -> Self {
        match scraped {
            Scraped::Whole(body) => Body::Whole(Full::new(body)),
            Scraped::Streamed(body) => Body::Streamed(body),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Whole(body) => Pin::new(body).poll_frame(cx),
            // Writing a chunk is CPU only (~1 ms): done here, on the connection's task.
            Body::Streamed(body) => Poll::Ready(body.next().map(|chunk| Ok(Frame::data(chunk)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Whole(body) => body.is_end_stream(),
            Body::Streamed(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(body) => body.size_hint(),
            Body::Streamed(_) => SizeHint::default(),
        }
    }
}

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
                        return Ok::<_, Infallible>(refused.map(Body::Whole));
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
    /// `/api/v1/findings`: the schema guard's findings per target and database.
    Findings,
    /// `/api/v1/alerts`.
    Alerts,
    /// `/api/v1/locks`: every target's waiters and blocking chains.
    Locks,
    /// `/`: the status page.
    StatusPage,
    /// `/targets/<name>`, `/imports/<id>`: the pages of one target or import.
    Page,
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
/// test iterating it covers every route (and the 404 message lists it). A path ending in `/`
/// (other than `/`) is a prefix: `/targets/` serves `/targets/<name>`.
pub const ROUTES: &[(&str, Endpoint)] = &[
    ("/metrics", Endpoint::Metrics),
    ("/healthz", Endpoint::Healthz),
    ("/readyz", Endpoint::Readyz),
    ("/api/v1/targets", Endpoint::Targets),
    ("/api/v1/imports", Endpoint::Imports),
    ("/api/v1/findings", Endpoint::Findings),
    ("/api/v1/alerts", Endpoint::Alerts),
    ("/api/v1/locks", Endpoint::Locks),
    ("/", Endpoint::StatusPage),
    ("/targets/", Endpoint::Page),
    ("/imports/", Endpoint::Page),
    ("/-/reload", Endpoint::Reload),
];

/// The route of `path` in [`ROUTES`]: an exact path, or a prefix one.
fn find_route(path: &str) -> Option<Endpoint> {
    ROUTES
        .iter()
        .find(|(p, _)| *p == path || (p.len() > 1 && p.ends_with('/') && path.starts_with(p)))
        .map(|(_, e)| *e)
}

/// 404 with the paths there are.
fn not_found() -> Response<Body> {
    let paths: Vec<String> = ROUTES
        .iter()
        .map(|(p, _)| match *p {
            "/targets/" => "/targets/<name>".to_owned(),
            "/imports/" => "/imports/<id>".to_owned(),
            p => p.to_owned(),
        })
        .collect();
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        format!("not found; try {}\n", paths.join(", ")),
    )
}

/// Answer `req`: its route from [`ROUTES`], 404 for another path, 405 with `Allow` for a
/// method the route does not take. The API is read-only: only `/-/reload` takes a POST.
async fn route(req: &Request<Incoming>, shared: &Hub) -> Response<Body> {
    let path = req.uri().path();
    let Some(endpoint) = find_route(path) else {
        return not_found();
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
        Endpoint::Metrics => metrics(req, shared).await,
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
        Endpoint::Findings => json(&findings_api(shared)),
        Endpoint::Alerts => json(&shared.alerts.view()),
        Endpoint::Locks => json(&locks_api(shared)),
        Endpoint::StatusPage | Endpoint::Page => match crate::page::render(path, shared) {
            Some(Page::Found(body)) => html(StatusCode::OK, body),
            Some(Page::NotFound(body)) => html(StatusCode::NOT_FOUND, body),
            None => not_found(),
        },
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

/// `/metrics`: the format from `Accept`, the coding from `Accept-Encoding`; a compressed body
/// from the cache when nothing changed since the last scrape, the plain one streamed (see
/// `crate::metrics`, module `scrape`).
///
/// Making a compressed body is CPU work that grows with the series (hundreds of milliseconds
/// at hundreds of targets, while a scraper of the same format waits on the cache's lock): it
/// runs on the blocking pool, so the runtime's two workers go on driving polls and connection
/// attempts, whose `connect_timeout` clocks would otherwise run out behind a scrape. A
/// streamed body's chunks (~1 ms each) are written on the connection's task.
async fn metrics(req: &Request<Incoming>, shared: &Hub) -> Response<Body> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let format = exposition::format(header(ACCEPT));
    let encoding = exposition::encoding(header(ACCEPT_ENCODING));
    let metrics = shared.metrics.clone();
    let scraped = match tokio::task::spawn_blocking(move || metrics.scrape(format, encoding)).await
    {
        Ok(scraped) => scraped,
        Err(e) => {
            warn!("/metrics: making the body failed: {e}");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "making the /metrics body failed; the daemon's log says why\n",
            );
        }
    };
    let mut response = Response::new(Body::from(scraped));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(exposition::content_type(format)),
    );
    let headers = response.headers_mut();
    headers.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    if let Some(coding) = encoding.header() {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    response
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Body::Whole(Full::new(body.into())));
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

/// A status page, with a Content-Security-Policy that forbids any script.
fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut response = respond(status, "text/html; charset=utf-8", body);
    response.headers_mut().insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::page::html::CSP),
    );
    response
}

/// HTML escaping, for the tests that check any text is escaped.
#[cfg(test)]
pub(crate) use crate::page::html::escape;

/// `/api/v1/locks`: per target, the locks collector's latest report — `waiting_backends`,
/// `blocked_databases` (waiters and longest wait by database), `waiters` (the examined ones,
/// with `blocked_by`), `sessions` by pid, and `chains`, the blocking forest (each node's
/// `pid`, `waiting`, `session`, `in_cycle`, `also_blocked_by`, `behind`, `children`); `null`
/// while the collector has not reported.
fn locks_api(shared: &Hub) -> serde_json::Value {
    let targets: serde_json::Map<String, serde_json::Value> = shared
        .latest_observations()
        .into_iter()
        .map(|(target, obs)| {
            let value = serde_json::to_value(&obs.locks).unwrap_or_default();
            (target, value)
        })
        .collect();
    serde_json::json!({ "targets": targets })
}

/// `/api/v1/findings`: every target's schema-guard findings by database, most severe first
/// (the migrations, indexes and advice collectors'; `null` for a database none of them has
/// read yet), the same objects `pgvigil advise --json` prints.
fn findings_api(shared: &Hub) -> serde_json::Value {
    let mut targets = serde_json::Map::new();
    for (target, obs) in shared.latest_observations() {
        let mut databases = serde_json::Map::new();
        for (datname, report) in obs.each_database() {
            databases.insert(
                datname.to_owned(),
                serde_json::to_value(report.findings()).unwrap_or_default(),
            );
        }
        targets.insert(target, serde_json::Value::Object(databases));
    }
    serde_json::json!({ "targets": targets })
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
