//! Alert receivers for tests: a real Alertmanager (Debian's `prometheus-alertmanager`) on a free
//! port, a webhook receiver that records what it is sent, and helpers to read pgvigil's own
//! `/api/v1/alerts`. Use them to test any rule end to end through the engine.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::{Daemon, http_get};

/// Wait for an async check, polling every 100 ms; panics naming `what` after `timeout`.
pub async fn wait_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A real Alertmanager with clustering off, killed on drop.
pub struct Alertmanager {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Start on a free port and wait until it is ready.
    pub async fn start() -> Alertmanager {
        Alertmanager::start_on(pgvigil_testkit::free_port()).await
    }

    /// Start on `port` (e.g. one pgvigil was already told about) and wait until it is ready.
    pub async fn start_on(port: u16) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        // One receiver that sends nowhere: tests read alerts back from the API.
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(pgvigil_testkit::find_program("prometheus-alertmanager"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus-alertmanager");
        let am = Alertmanager {
            port,
            child,
            _dir: dir,
        };
        let addr = am.addr();
        let log = am.log_path();
        wait_async(
            "Alertmanager to become ready",
            crate::support::CEILING,
            || {
                let log = log.clone();
                async move {
                    let ok = tokio::net::TcpStream::connect(addr).await.is_ok()
                        && http_get(addr, "/-/ready", None).await.0 == 200;
                    if !ok && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("level=error"))
                    {
                        panic!(
                            "alertmanager failed:\n{}",
                            std::fs::read_to_string(&log).unwrap()
                        );
                    }
                    ok.then_some(())
                }
            },
        )
        .await;
        am
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self._dir.path().join("alertmanager.log")
    }

    /// The alerts Alertmanager holds as active (resolved ones are not listed).
    pub async fn alerts(&self) -> Vec<Value> {
        let (status, body) = http_get(self.addr(), "/api/v2/alerts", None).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<Value>>(&body).unwrap()
    }

    /// The active alerts whose labels include all of `labels`.
    pub async fn find(&self, labels: &[(&str, &str)]) -> Vec<Value> {
        self.alerts()
            .await
            .into_iter()
            .filter(|a| has_labels(a, labels))
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an alert object (`{labels: {...}}`) has all of `labels`.
pub fn has_labels(alert: &Value, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| alert["labels"][*k].as_str() == Some(*v))
}

/// An HTTP server that answers 200 to every POST and records the JSON bodies.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        WebhookReceiver::start_on(0).await
    }

    /// On a chosen port (0: any), e.g. one pgvigil was already sending to while it was down.
    pub async fn start_on(port: u16) -> WebhookReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let store = bodies.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            let value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                                Value::String(String::from_utf8_lossy(&body).into())
                            });
                            store.lock().unwrap().push(value);
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        WebhookReceiver { addr, bodies, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every body received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Every alert received so far with `status` ("firing"/"resolved") and these labels.
    pub fn alerts(&self, status: &str, labels: &[(&str, &str)]) -> Vec<Value> {
        self.bodies()
            .iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["status"] == status && has_labels(a, labels))
            .collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// pgvigil's `/api/v1/alerts`.
pub async fn api_alerts(daemon: &Daemon) -> Value {
    let (status, body) = daemon.get("/api/v1/alerts").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The active alert in `/api/v1/alerts` with these labels and state, if any.
pub async fn api_active(daemon: &Daemon, state: &str, labels: &[(&str, &str)]) -> Option<Value> {
    let view = api_alerts(daemon).await;
    view["active"]
        .as_array()?
        .iter()
        .find(|a| a["state"] == state && has_labels(a, labels))
        .cloned()
}
