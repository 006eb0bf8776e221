//! The HTTP API is read-only: every route, taken from the router's own list
//! (`pgvigil::http::ROUTES`, so a new route cannot escape this test), refuses every method
//! but GET and HEAD with 405 and an `Allow` header; `/-/reload` takes POST (and PUT) only,
//! only when enabled, and only authenticated when the web config has users.

use std::net::SocketAddr;
use std::path::Path;

use pgvigil::http::{Endpoint, ROUTES};
use pgvigil_testkit::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Daemon, one_target};

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
];

/// One request: (status, lower-cased response head, body).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let (head, body) = crate::support::split_response(&response);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = String::from_utf8_lossy(&body).into_owned();
    (status, head.to_ascii_lowercase(), body)
}

fn allow_header(head: &str) -> Option<&str> {
    head.lines()
        .find_map(|l| l.strip_prefix("allow:"))
        .map(str::trim)
}

#[tokio::test]
async fn every_route_refuses_every_method_it_does_not_take() {
    let cluster = TestCluster::start();
    let daemon = Daemon::start(&one_target("main", &cluster.dsn("postgres"), "")).await;
    assert!(ROUTES.len() >= 8, "the router's list: {ROUTES:?}");
    for &(path, endpoint) in ROUTES {
        for &method in METHODS {
            let (status, head, body) = request(daemon.addr, method, path, None).await;
            let allowed = endpoint.allows(&method.parse().unwrap());
            if allowed {
                assert_ne!(status, 405, "{method} {path} is allowed: {head}");
                if endpoint == Endpoint::Reload {
                    // Off by default.
                    assert_eq!(status, 403, "{method} {path}: {body}");
                    assert!(body.contains("enable_lifecycle"), "{body}");
                }
                if method == "HEAD" {
                    assert!(body.is_empty(), "HEAD {path} has no body: {body}");
                }
            } else {
                assert_eq!(status, 405, "{method} {path} must be refused: {head}");
                assert_eq!(
                    allow_header(&head),
                    Some(endpoint.allow().to_ascii_lowercase().as_str()),
                    "{method} {path}: {head}"
                );
                if method != "HEAD" {
                    assert!(body.contains(endpoint.allow()), "{method} {path}: {body}");
                }
            }
        }
    }
    // An unknown path is a 404 that lists the routes.
    let (status, _, body) = request(daemon.addr, "GET", "/nope", None).await;
    assert_eq!(status, 404);
    for (path, _) in ROUTES {
        assert!(body.contains(path), "{body}");
    }
    daemon.stop().await;
}

#[tokio::test]
async fn reload_takes_a_post_only_when_enabled_and_authenticated() {
    let cluster = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web-config.yml");
    std::fs::write(
        &web,
        format!(
            "basic_auth_users:\n  ops: {}\n",
            bcrypt::hash("s3cret", 4).unwrap()
        ),
    )
    .unwrap();
    let config = dir.path().join("pgvigil.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nenable_lifecycle = true\nweb_config_file = \"{}\"\n{}",
            web.display(),
            one_target("main", &cluster.dsn("postgres"), "")
        ),
    )
    .unwrap();
    let daemon = Daemon::start_file(Path::new(&config)).await;
    let good = format!("Basic {}", base64_encode("ops:s3cret"));
    let bad = format!("Basic {}", base64_encode("ops:wrong"));
    for method in ["POST", "PUT"] {
        let (status, _, _) = request(daemon.addr, method, "/-/reload", None).await;
        assert_eq!(status, 401, "{method} without credentials");
        let (status, _, _) = request(daemon.addr, method, "/-/reload", Some(&bad)).await;
        assert_eq!(status, 401, "{method} with a wrong password");
        let (status, _, body) = request(daemon.addr, method, "/-/reload", Some(&good)).await;
        assert_eq!(status, 200, "{method} authenticated: {body}");
    }
    // Authenticated is not enough for another method, on the reload or on the API.
    for (path, method) in [
        ("/-/reload", "GET"),
        ("/-/reload", "DELETE"),
        ("/api/v1/targets", "POST"),
    ] {
        let (status, head, _) = request(daemon.addr, method, path, Some(&good)).await;
        assert_eq!(status, 405, "{method} {path}: {head}");
        assert!(allow_header(&head).is_some(), "{head}");
    }
    daemon.stop().await;
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
