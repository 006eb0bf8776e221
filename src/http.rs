//! The HTTP server: `/metrics`, `/healthz`, `/readyz`, `/api/v1/targets`, `POST /-/reload` and
//! the status pages (rendered by [`crate::page`]).
//!
//! Every handler reads in-memory state only; none waits on a database, so a scrape stays fast
//! while a target is slow, locked or gone.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
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
use crate::page::Page;

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
                    if req.uri().path() == "/-/reload" {
                        return Ok(active.decorate(reload(&req, &shared).await));
                    }
                    Ok(active.decorate(route(&req, &shared)))
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

fn route(req: &Request<Incoming>, shared: &Hub) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are supported\n",
        );
    }
    match req.uri().path() {
        "/metrics" => metrics(req, shared),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if shared.status.ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: some targets have not been polled yet\n",
                )
            }
        }
        "/api/v1/targets" => json(&shared.status.targets()),
        "/api/v1/imports" => json(&imports_api(shared)),
        "/api/v1/alerts" => json(&shared.alerts.view()),
        path => match crate::page::render(path, shared) {
            Some(Page::Found(body)) => html(StatusCode::OK, body),
            Some(Page::NotFound(body)) => html(StatusCode::NOT_FOUND, body),
            None => text(
                StatusCode::NOT_FOUND,
                "not found; try /metrics, /healthz, /readyz, /api/v1/targets, /api/v1/alerts, /api/v1/imports, / (the status page), /targets/<name> or /imports/<id>\n",
            ),
        },
    }
}

/// `POST /-/reload` (Prometheus' lifecycle API): re-read the configuration and say what
/// changed (200) or why it was rejected (500, the same message as `check-config`).
async fn reload(req: &Request<Incoming>, shared: &Hub) -> Response<Body> {
    if req.method() != Method::POST && req.method() != Method::PUT {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use POST /-/reload\n");
    }
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
