//! The HTTP endpoints, and the exposition checked by the real promtool.

use std::io::{Read as _, Write};
use std::process::{Command, Stdio};

use pgvigil_testkit::{TestCluster, find_program};

use crate::support::{Daemon, connect, http_get, one_target};

#[tokio::test]
async fn promtool_accepts_the_metrics_and_prometheus_gets_openmetrics() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("promtool");
    cluster.psql(&db, "CREATE TABLE t (id int)");
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), "")).await;
    // A writing transaction and a waiting session, so every activity series is present.
    let writer = connect(&cluster.dsn(&db)).await;
    writer
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    daemon
        .wait_for("the writing transaction", crate::support::CEILING, |m| {
            m.value("pgvigil_transactions_with_writes", &[("datname", &db)])
                .map(|_| ())
        })
        .await;
    // The server-health collectors' series are in the checked output too.
    daemon
        .wait_for("the server-health series", crate::support::CEILING, |m| {
            [
                "pgvigil_server_uptime_seconds",
                "pgvigil_setting",
                "pgvigil_database_xact_commits_total",
                "pgvigil_database_conflicts_total",
                "pgvigil_database_size_bytes",
                "pgvigil_database_xid_age",
                "pgvigil_xmin_horizon_age",
            ]
            .iter()
            .all(|name| m.matching(name, &[]).next().is_some())
            .then_some(())
        })
        .await;

    let (status, classic) = http_get(daemon.addr, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(!classic.contains("# EOF"));
    let mut promtool = Command::new(find_program("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(classic.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{classic}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let (status, om) = http_get(
        daemon.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE pgvigil_connection_attempts counter"),
        "{om}"
    );
    // As Prometheus asks: gzip; as curl --compressed may ask: zstd first. Each decodes to a
    // complete exposition in the negotiated format; the classic one still passes promtool.
    let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (head, gz) = raw_get(
        daemon.addr,
        &[("Accept", prometheus), ("Accept-Encoding", "gzip")],
    )
    .await;
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: Accept, Accept-Encoding"), "{head}");
    let mut om = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut om)
        .unwrap();
    assert!(
        om.ends_with("# EOF\n") && om.contains("pgvigil_up{target=\"main\"} 1"),
        "{om}"
    );
    let (head, zst) = raw_get(
        daemon.addr,
        &[("Accept-Encoding", "deflate, gzip, br, zstd")],
    )
    .await;
    assert!(head.contains("content-encoding: zstd"), "{head}");
    let classic = String::from_utf8(zstd::decode_all(&zst[..]).unwrap()).unwrap();
    assert!(!classic.contains("# EOF"), "{classic}");
    assert!(
        classic.contains("# TYPE pgvigil_connection_attempts_total counter"),
        "{classic}"
    );
    // Plain text is streamed (chunked, no Content-Length) and complete.
    let (head, plain) = raw_get(daemon.addr, &[("Accept-Encoding", "br")]).await;
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    let plain = String::from_utf8(plain).unwrap();
    assert!(
        plain.contains("# TYPE pgvigil_connection_attempts_total counter")
            && plain.contains("pgvigil_up{target=\"main\"} 1"),
        "{plain}"
    );

    writer.batch_execute("ROLLBACK").await.unwrap();
    daemon.stop().await;
}

/// GET /metrics with `headers`: the response head (header names lower-cased) and the body
/// (as sent, or decoded from chunked transfer).
async fn raw_get(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let (head, body) = crate::support::split_response(&response);
    let head = head
        .lines()
        .map(|l| match l.split_once(':') {
            Some((k, v)) => format!("{}:{v}", k.to_ascii_lowercase()),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    (head, body)
}

#[tokio::test]
async fn every_exported_metric_is_defined_in_metrics_rs() {
    let cluster = TestCluster::start();
    let daemon = Daemon::start(&one_target("main", &cluster.dsn("postgres"), "")).await;
    let m = daemon
        .wait_for("a poll", crate::support::CEILING, |m| {
            m.value("pgvigil_connections_max", &[]).map(|_| m.clone())
        })
        .await;
    for (name, labels, _) in &m.samples {
        let def = pgvigil::metrics::find(name)
            .unwrap_or_else(|| panic!("{name} is exported but not defined in src/metrics.rs"));
        let mut expected: Vec<&str> = def.labels.to_vec();
        if name.ends_with("_bucket") {
            expected.push("le");
        }
        let mut got: Vec<&str> = labels.keys().map(String::as_str).collect();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected, "labels of {name}");
    }
    daemon.stop().await;
}

#[tokio::test]
async fn health_readiness_api_and_status_page() {
    let cluster = TestCluster::start();
    // A database with pg_stat_statements, so every collector succeeds and last_error is null.
    let db = cluster.create_database("endpoints");
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), "")).await;
    let (status, body) = daemon.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // pgvigil_up turns 1 at connect; last_poll and the collectors' durations asserted below
    // exist only once the first poll finished: wait for that.
    let t = daemon
        .wait_for_target(
            "main",
            "the first finished poll",
            crate::support::CEILING,
            |t| {
                (t["last_poll"].is_string() && t["collectors"]["activity"].is_object())
                    .then(|| t.clone())
            },
        )
        .await;
    let (status, _) = daemon.get("/readyz").await;
    assert_eq!(status, 200);
    let t = &t;
    assert_eq!(t["name"], "main");
    assert_eq!(t["state"], "up");
    assert!(
        t["server_version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric),
        "{t}"
    );
    assert!(t["last_poll"].as_str().is_some(), "{t}");
    assert_eq!(t["last_error"], serde_json::Value::Null);
    assert!(
        t["collectors"]["activity"]["last_duration_seconds"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    let (status, page) = daemon.get("/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<a href=\"/targets/main\">main</a>") && page.contains("class=\"up\""),
        "{page}"
    );
    let (status, _) = daemon.get("/nope").await;
    assert_eq!(status, 404);
    daemon.stop().await;
}
