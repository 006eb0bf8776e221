//! pgvigil's endpoints over HTTPS with basic auth and client certificates, from an
//! exporter-toolkit web config: checked with the real `curl`, and scraped by a real Prometheus.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pgvigil_testkit::{TestCluster, find_program};

use crate::support::{Daemon, one_target};
use crate::support_certs::Pki;
use crate::support_prometheus::Prometheus;

const WAIT: Duration = crate::support::CEILING;

/// One `curl` run: (HTTP status, or 0 when no response; response headers and body).
async fn curl(args: Vec<String>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(find_program("curl"))
            .args(["-sS", "-i", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}; install it (Debian package curl)"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    })
    .await
    .unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// `user:password` hashed with bcrypt at the lowest cost (the cost is the test's CPU).
fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn daemon_with_web(cluster: &TestCluster, web: &Path, server_extra: &str) -> Daemon {
    Daemon::start(&format!(
        "[server]\nweb_config_file = \"{}\"\n{server_extra}\n{}",
        web.display(),
        one_target("main", &cluster.dsn("postgres"), "")
    ))
    .await
}

#[tokio::test]
async fn https_with_basic_auth_checked_with_curl_and_certificates_reloaded() {
    let cluster = TestCluster::start();
    let pki = Pki::new("pgvigil web CA");
    let (crt, key) = pki.server("web");
    let dir = tempfile::tempdir().unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  prometheus: {}\n",
            crt.display(),
            key.display(),
            hash("scrape-me")
        ),
    );
    let daemon = daemon_with_web(&cluster, &web, "").await;
    let url = |path: &str| format!("https://localhost:{}{path}", daemon.addr.port());
    let ca = pki.ca().display().to_string();

    // Good credentials: the metrics, with the configured header.
    let deadline = std::time::Instant::now() + WAIT;
    let body = loop {
        let (code, body) = curl(s(&[
            "--cacert",
            &ca,
            "-u",
            "prometheus:scrape-me",
            &url("/metrics"),
        ]))
        .await;
        assert_eq!(code, 200, "{body}");
        if body.contains("pgvigil_up{target=\"main\"} 1") {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "main never up:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        body.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{body}"
    );

    // Wrong password, unknown user, none at all: 401 with a Basic challenge.
    for creds in [
        vec!["-u", "prometheus:wrong"],
        vec!["-u", "nobody:scrape-me"],
        vec![],
    ] {
        let mut args = s(&["--cacert", &ca]);
        args.extend(s(&creds));
        args.push(url("/api/v1/targets"));
        let (code, body) = curl(args).await;
        assert_eq!(code, 401, "{creds:?}: {body}");
        assert!(
            body.to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{body}"
        );
        assert!(
            !body.contains("\"name\""),
            "no data without credentials: {body}"
        );
    }
    // /healthz stays open by default; TLS still applies.
    let (code, _) = curl(s(&["--cacert", &ca, &url("/healthz")])).await;
    assert_eq!(code, 200);
    // Plain HTTP to the TLS port gets no HTTP answer.
    let (code, _) = curl(s(&[&format!(
        "http://127.0.0.1:{}/healthz",
        daemon.addr.port()
    )]))
    .await;
    assert_eq!(code, 0, "plain HTTP must not be served on the TLS port");
    // An untrusted client gets no answer at all.
    let (code, _) = curl(s(&[&url("/healthz")])).await;
    assert_eq!(code, 0);

    // Certificates are re-read when they change: a certificate of another CA replaces the
    // first; the next connection is served with it.
    let other = Pki::new("pgvigil rotated CA");
    let (crt2, key2) = other.server("web2");
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&crt2, &crt).unwrap();
    let other_ca = other.ca().display().to_string();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (code, _) = curl(s(&["--cacert", &other_ca, &url("/healthz")])).await;
        if code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = curl(s(&["--cacert", &ca, &url("/healthz")])).await;
    assert_eq!(code, 0, "the old CA no longer verifies the server");

    // A broken edit keeps the previous config in force.
    std::fs::write(&web, "tls_server_config:\n  cert_fil: nope\n").unwrap();
    let (code, _) = curl(s(&[
        "--cacert",
        &other_ca,
        "-u",
        "prometheus:scrape-me",
        &url("/metrics"),
    ]))
    .await;
    assert_eq!(code, 200);
    daemon.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_and_verified_when_configured() {
    let cluster = TestCluster::start();
    let pki = Pki::new("pgvigil mTLS CA");
    let (crt, key) = pki.server("web");
    let (client_crt, client_key) = pki.client_with_san("scraper", "prometheus", "prometheus.test");
    let (other_crt, other_key) = pki.client_with_san("intruder", "intruder", "intruder.test");
    let stranger = Pki::new("someone else's CA");
    let (stranger_crt, stranger_key) =
        stranger.client_with_san("stranger", "prometheus", "prometheus.test");
    let dir = tempfile::tempdir().unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n  client_allowed_sans: [prometheus.test]\n  min_version: TLS13\n",
            crt.display(),
            key.display(),
            pki.ca().display()
        ),
    );
    let daemon = daemon_with_web(&cluster, &web, "").await;
    let url = format!("https://localhost:{}/healthz", daemon.addr.port());
    let ca = pki.ca().display().to_string();
    let with = |c: &Path, k: &Path| {
        s(&[
            "--cacert",
            &ca,
            "--cert",
            &c.display().to_string(),
            "--key",
            &k.display().to_string(),
            &url,
        ])
    };
    assert_eq!(curl(with(&client_crt, &client_key)).await.0, 200);
    assert_eq!(
        curl(s(&["--cacert", &ca, &url])).await.0,
        0,
        "no certificate"
    );
    assert_eq!(
        curl(with(&stranger_crt, &stranger_key)).await.0,
        0,
        "another CA"
    );
    assert_eq!(
        curl(with(&other_crt, &other_key)).await.0,
        0,
        "a SAN not allowed"
    );
    // min_version TLS13: a TLS 1.2 client is refused.
    let mut old = with(&client_crt, &client_key);
    old.splice(0..0, s(&["--tls-max", "1.2"]));
    assert_eq!(curl(old).await.0, 0, "TLS 1.2 below min_version");
    daemon.stop().await;
}

#[tokio::test]
async fn a_real_prometheus_scrapes_over_tls_with_basic_auth() {
    let cluster = TestCluster::start();
    let pki = Pki::new("pgvigil scrape CA");
    let (crt, key) = pki.server("web");
    let dir = tempfile::tempdir().unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: {}\n",
            crt.display(),
            key.display(),
            hash("scrape-me")
        ),
    );
    // Everything authenticated: /healthz too.
    let daemon = daemon_with_web(&cluster, &web, "auth_exempt_paths = []").await;
    let port = daemon.addr.port();
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password: {password}\n    static_configs:\n      - targets: [\"localhost:{port}\"]\n",
            pki.ca().display()
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
        job("good", "scrape-me"),
        job("bad", "guess")
    );
    // Prometheus::start waits on a runtime of its own: off this one.
    let prometheus = tokio::task::spawn_blocking(move || {
        Prometheus::start_with_config(tempfile::tempdir().unwrap(), &config)
    })
    .await
    .unwrap();
    prometheus
        .wait_for_data("pgvigil_up{job=\"good\",target=\"main\"} == 1", WAIT)
        .await;
    prometheus
        .wait_for_data("up{job=\"good\"} == 1", WAIT)
        .await;
    // The job with a wrong password is scraped and refused (401): up 0.
    prometheus.wait_for_data("up{job=\"bad\"} == 0", WAIT).await;
    let bad = prometheus.query("pgvigil_up{job=\"bad\"}").await.unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let (code, _) = curl(s(&[
        "--cacert",
        &pki.ca().display().to_string(),
        &format!("https://localhost:{port}/healthz"),
    ]))
    .await;
    assert_eq!(
        code, 401,
        "auth_exempt_paths = [] authenticates /healthz too"
    );
    daemon.stop().await;
}

#[test]
fn the_shipped_example_web_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/web-config.example.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = pgvigil::web::WebConfig::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.tls.is_some());
    assert_eq!(config.users.len(), 1);
}

#[test]
fn check_config_reports_web_config_mistakes_at_their_yaml_position() {
    let dir = tempfile::tempdir().unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: a.crt\n  key_fil: a.key\n",
    );
    let toml = write(
        dir.path(),
        "pgvigil.toml",
        &format!(
            "[server]\nweb_config_file = \"{}\"\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n",
            web.display()
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pgvigil"))
        .arg("check-config")
        .arg(&toml)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{}:3:3: tls_server_config: unknown key `key_fil`; did you mean `key_file`?",
            web.display()
        )),
        "{stderr}"
    );
    // The flag form, with a certificate that is not there.
    let web = write(
        dir.path(),
        "flag.yml",
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    );
    let toml = write(
        dir.path(),
        "plain.toml",
        "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pgvigil"))
        .arg("--web.config.file")
        .arg(&web)
        .arg("check-config")
        .arg(&toml)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{}:2:3: cannot read cert_file {}",
            web.display(),
            dir.path().join("missing.crt").display()
        )),
        "{stderr}"
    );
}
