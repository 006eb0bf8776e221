//! Alert delivery over HTTPS: a real Alertmanager behind its own `--web.config.file` (TLS,
//! client certificates required, basic auth), and webhook receivers over TLS verified with a
//! `ca_file`, skipped only with `insecure_skip_verify`, and refused when not trusted.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pgvigil_testkit::{find_program, free_port};
use serde_json::Value;

use crate::support::{Daemon, one_target};
use crate::support_alerting::wait_async;
use crate::support_certs::Pki;

const WAIT: Duration = crate::support::CEILING;

/// A target nobody listens for: PgvigilTargetDown fires after `for` (1s here).
fn down_target() -> String {
    format!(
        "{}[targets.alerts.PgvigilTargetDown]\nfor = \"1s\"\n",
        one_target(
            "gone",
            &format!(
                "host=127.0.0.1 port={} user=x dbname=x connect_timeout=1",
                free_port()
            ),
            ""
        )
    )
}

/// `curl` against an HTTPS server with a client certificate and basic auth: the body.
async fn curl_json(args: Vec<String>) -> Option<Value> {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(find_program("curl"))
            .args(["-sS", "--fail", "--max-time", "5"])
            .args(&args)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    })
    .await
    .unwrap()
}

struct TlsAlertmanager {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsAlertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn alerts_reach_an_alertmanager_over_mutual_tls_with_basic_auth() {
    let pki = Pki::new("pgvigil alertmanager CA");
    let (server_crt, server_key) = pki.server("am");
    let (client_crt, client_key) = pki.client("pgvigil", "pgvigil");
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("am-secret", 4).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\nbasic_auth_users:\n  pgvigil: {hash}\n",
            server_crt.display(),
            server_key.display(),
            pki.ca().display()
        ),
    )
    .unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(find_program("prometheus-alertmanager"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--web.config.file={}", web.display()))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("am.log")).unwrap())
        .spawn()
        .expect("start prometheus-alertmanager");
    let am = TlsAlertmanager {
        child,
        port,
        _dir: dir,
    };
    let password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password.path(), "am-secret\n").unwrap();
    let client_args = |path: &str| {
        vec![
            "--cacert".to_owned(),
            pki.ca().display().to_string(),
            "--cert".to_owned(),
            client_crt.display().to_string(),
            "--key".to_owned(),
            client_key.display().to_string(),
            "-u".to_owned(),
            "pgvigil:am-secret".to_owned(),
            format!("https://localhost:{}{path}", am.port),
        ]
    };
    wait_async("Alertmanager over TLS to be ready", WAIT, || {
        curl_json(client_args("/api/v2/status"))
    })
    .await;

    let daemon = Daemon::start(&format!(
        "{}[[alerts.alertmanager]]\nurl = \"https://localhost:{port}\"\nbasic_auth_user = \"pgvigil\"\nbasic_auth_password_file = \"{}\"\ntls_config = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}\n",
        down_target(),
        password.path().display(),
        pki.ca().display(),
        client_crt.display(),
        client_key.display()
    ))
    .await;
    let alert = wait_async(
        "PgvigilTargetDown in Alertmanager over mTLS",
        WAIT,
        || async {
            let alerts = curl_json(client_args("/api/v2/alerts")).await?;
            alerts
                .as_array()?
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "PgvigilTargetDown"
                        && a["labels"]["target"] == "gone"
                })
                .cloned()
        },
    )
    .await;
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    let sent = daemon
        .wait_for("a notification counted as sent", WAIT, |m| {
            m.value(
                "pgvigil_notifications_total",
                &[("sink", "alertmanager"), ("result", "sent")],
            )
            .filter(|n| *n >= 1.0)
        })
        .await;
    assert!(sent >= 1.0);
    daemon.stop().await;
}

/// A webhook receiver over TLS with `cert`/`key`: records the JSON bodies it is sent.
struct TlsWebhook {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsWebhook {
    async fn start(cert: &Path, key: &Path) -> TlsWebhook {
        use rustls_pki_types::pem::PemObject;
        let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let store = bodies.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, store) = (acceptor.clone(), store.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            store
                                .lock()
                                .unwrap()
                                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsWebhook { port, bodies, task }
    }

    fn firing(&self) -> usize {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["status"] == "firing")
            .count()
    }
}

#[tokio::test]
async fn webhooks_over_https_are_verified_unless_told_not_to() {
    let trusted = Pki::new("pgvigil webhook CA");
    let (crt, key) = trusted.server("hook");
    let verified = TlsWebhook::start(&crt, &key).await;
    let unknown = Pki::new("a CA pgvigil was not told about");
    let (crt2, key2) = unknown.server("hook2");
    let skipped = TlsWebhook::start(&crt2, &key2).await;
    let refused = TlsWebhook::start(&crt2, &key2).await;
    let daemon = Daemon::start(&format!(
        "{}[[alerts.webhook]]\nurl = \"https://localhost:{}/hook\"\ntls_config = {{ ca_file = \"{}\" }}\n\
         [[alerts.webhook]]\nurl = \"https://localhost:{}/hook\"\ntls_config = {{ insecure_skip_verify = true }}\n\
         [[alerts.webhook]]\nurl = \"https://localhost:{}/hook\"\n",
        down_target(),
        verified.port,
        trusted.ca().display(),
        skipped.port,
        refused.port
    ))
    .await;
    wait_async(
        "the firing alert at the verified and the skipped receivers",
        WAIT,
        || async { (verified.firing() >= 1 && skipped.firing() >= 1).then_some(()) },
    )
    .await;
    // The receiver whose certificate nobody vouches for was tried and never got a body.
    daemon
        .wait_for("a failed webhook delivery", WAIT, |m| {
            m.value(
                "pgvigil_notifications_total",
                &[("sink", "webhook"), ("result", "failed")],
            )
            .filter(|n| *n >= 1.0)
        })
        .await;
    assert!(refused.bodies.lock().unwrap().is_empty());
    daemon.stop().await;
}
