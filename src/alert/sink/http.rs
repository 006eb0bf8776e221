//! Delivery to one HTTP receiver (an Alertmanager or a webhook), with retries.
//!
//! The task keeps an outbox of the latest notification per alert (keyed by its full label
//! set): while a receiver is down, a re-send replaces the older copy of the same alert instead
//! of piling up, and when the receiver is back it gets the current state of every alert in
//! one request. One exception keeps what happened: a firing notification still undelivered
//! when its resolution arrives is kept beside it and delivered first, so a receiver that was
//! down for the whole life of an alert still gets both, in order (a page, then its
//! resolution), rather than a resolution of something it never saw. Failed attempts are retried with capped exponential backoff, indefinitely,
//! because a resolution that never arrives is a page that never stops. Errors the receiver
//! says are ours (4xx other than 408/429) are logged and dropped: repeating them cannot help.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Notification, payload};
use crate::config::{HttpAuth, HttpSinkConfig, read_secret};
use crate::metrics::Metrics;

/// Most alerts an outbox holds while its receiver is down; more are dropped and counted.
pub const OUTBOX_CAPACITY: usize = 10_000;
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);

/// The body format a receiver expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `POST <url>/api/v2/alerts`, Alertmanager's API.
    AlertmanagerV2,
    /// `POST <url>`, Alertmanager's webhook body.
    Webhook,
}

impl Format {
    /// The `sink` label.
    pub fn sink_name(self) -> &'static str {
        match self {
            Format::AlertmanagerV2 => "alertmanager",
            Format::Webhook => "webhook",
        }
    }
}

enum Failure {
    /// Worth retrying: network, timeout, 5xx, 408, 429.
    Transient(String),
    /// The receiver rejected the request itself.
    Permanent(String),
}

/// One receiver's delivery task.
#[derive(Debug)]
pub(crate) struct HttpSink {
    format: Format,
    config: HttpSinkConfig,
    external_url: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    metrics: Arc<Metrics>,
    outbox: BTreeMap<String, Notification>,
    /// Firing notifications superseded in the outbox by their resolution before they could
    /// be delivered: sent before the outbox.
    superseded: BTreeMap<String, Notification>,
}

impl HttpSink {
    pub(crate) fn new(
        format: Format,
        config: HttpSinkConfig,
        external_url: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        connector.enforce_http(false);
        // Checked when the config was loaded; a file changed since then is reported here.
        let tls = crate::web::client::client_config(&config.tls).unwrap_or_else(|e| {
            error!(url = %config.url, "{e}; https deliveries to this receiver will fail until it is fixed and pgvigil restarted");
            crate::web::client::client_config(&crate::config::SinkTlsConfig::default())
                .expect("the default TLS client config builds")
        });
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        HttpSink {
            format,
            config,
            external_url,
            client,
            metrics,
            outbox: BTreeMap::new(),
            superseded: BTreeMap::new(),
        }
    }

    fn add(&mut self, n: Notification) {
        let key = serde_json::to_string(&n.labels).unwrap_or_default();
        if self.outbox.len() >= OUTBOX_CAPACITY && !self.outbox.contains_key(&key) {
            self.metrics
                .notification(self.format.sink_name(), "dropped", 1);
            return;
        }
        let resolves = n.is_resolved();
        if let Some(previous) = self.outbox.insert(key.clone(), n) {
            if resolves && !previous.is_resolved() {
                self.superseded.entry(key).or_insert(previous);
            }
        }
    }

    /// Deliver until `shutdown`.
    pub(crate) async fn run(
        mut self,
        mut queue: mpsc::Receiver<Notification>,
        shutdown: CancellationToken,
    ) {
        let sink = self.format.sink_name();
        let url = self.config.url.clone();
        let mut backoff = INITIAL_BACKOFF;
        let mut failing_since_log = false;
        loop {
            if self.outbox.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = queue.recv() => match n {
                        Some(n) => self.add(n),
                        None => return,
                    },
                }
            }
            while let Ok(n) = queue.try_recv() {
                self.add(n);
            }
            let count = (self.outbox.len() + self.superseded.len()) as u64;
            // A slow receiver must not hold up shutdown.
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = self.deliver() => result,
            };
            match result {
                Ok(()) => {
                    self.metrics.notification(sink, "sent", count);
                    self.outbox.clear();
                    self.superseded.clear();
                    backoff = INITIAL_BACKOFF;
                    if failing_since_log {
                        info!(sink, %url, "alert receiver reachable again; delivered {count} alerts");
                        failing_since_log = false;
                    }
                }
                Err(Failure::Permanent(e)) => {
                    self.metrics.notification(sink, "failed", count);
                    error!(sink, %url, "alert receiver rejected {count} alerts, not retrying: {e}");
                    self.outbox.clear();
                    self.superseded.clear();
                }
                Err(Failure::Transient(e)) => {
                    self.metrics.notification(sink, "failed", count);
                    if failing_since_log {
                        debug!(sink, %url, "alert delivery still failing: {e}");
                    } else {
                        warn!(sink, %url, retry_in = %humantime::format_duration(backoff), "alert delivery failed, will retry until it works: {e}");
                        failing_since_log = true;
                    }
                    let sleep = tokio::time::sleep(backoff);
                    tokio::pin!(sleep);
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = &mut sleep => break,
                            n = queue.recv() => match n {
                                Some(n) => self.add(n),
                                None => return,
                            },
                        }
                    }
                }
            }
        }
    }

    async fn deliver(&mut self) -> Result<(), Failure> {
        // What fired unseen first, then the current state.
        if !self.superseded.is_empty() {
            let earlier: Vec<&Notification> = self.superseded.values().collect();
            self.post_batch(earlier).await?;
            self.superseded.clear();
        }
        let batch: Vec<&Notification> = self.outbox.values().collect();
        self.post_batch(batch).await
    }

    async fn post_batch(&self, batch: Vec<&Notification>) -> Result<(), Failure> {
        match self.format {
            Format::AlertmanagerV2 => {
                let url = format!("{}/api/v2/alerts", self.config.url.trim_end_matches('/'));
                self.post(&url, &payload::alertmanager_v2(&batch)).await
            }
            Format::Webhook => {
                // One body per status, so `status` at the top means what it says.
                let (resolved, firing): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(|n| n.is_resolved());
                for group in [firing, resolved] {
                    if !group.is_empty() {
                        let body = payload::webhook(&group, self.external_url.as_deref());
                        self.post(&self.config.url, &body).await?;
                    }
                }
                Ok(())
            }
        }
    }

    async fn post(&self, url: &str, body: &serde_json::Value) -> Result<(), Failure> {
        let body = serde_json::to_vec(body).map_err(|e| Failure::Permanent(e.to_string()))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("pgvigil/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Permanent(format!("invalid request: {e}")))?;
        if let Some(auth) = authorization(&self.config.auth).map_err(Failure::Transient)? {
            let value = HeaderValue::from_str(&auth)
                .map_err(|_| Failure::Permanent("credentials contain invalid characters".into()))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let attempt = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::Transient(describe(&e)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                return Ok(());
            }
            let text = String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_owned();
            let message = format!("{url} answered {status}: {text}");
            if status.is_client_error()
                && status != StatusCode::REQUEST_TIMEOUT
                && status != StatusCode::TOO_MANY_REQUESTS
                && status != StatusCode::UNAUTHORIZED
                && status != StatusCode::FORBIDDEN
            {
                Err(Failure::Permanent(message))
            } else {
                Err(Failure::Transient(message))
            }
        };
        match tokio::time::timeout(self.config.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Transient(format!(
                "{url} did not answer within {}",
                humantime::format_duration(self.config.timeout)
            ))),
        }
    }
}

/// The `Authorization` header value, secrets read fresh from their files (they may rotate).
fn authorization(auth: &HttpAuth) -> Result<Option<String>, String> {
    Ok(match auth {
        HttpAuth::None => None,
        HttpAuth::Basic {
            user,
            password_file,
        } => {
            let password = read_secret(password_file)?;
            Some(format!(
                "Basic {}",
                base64(format!("{user}:{password}").as_bytes())
            ))
        }
        HttpAuth::Bearer { token_file } => Some(format!("Bearer {}", read_secret(token_file)?)),
    })
}

/// An error with its causes ("client error (Connect): tcp connect error: Connection refused").
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Standard base64 with padding (RFC 4648), for basic auth.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(resolved: bool) -> Notification {
        let now = std::time::SystemTime::now();
        Notification {
            labels: [("alertname".to_owned(), "X".to_owned())]
                .into_iter()
                .collect(),
            annotations: Default::default(),
            starts_at: now,
            resolved_at: resolved.then_some(now),
            valid_until: now,
            generator_url: None,
        }
    }

    #[test]
    fn a_firing_superseded_by_its_resolution_is_kept_to_go_first() {
        let config = HttpSinkConfig {
            url: "http://127.0.0.1:9/hook".to_owned(),
            timeout: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            auth: HttpAuth::None,
            tls: Default::default(),
        };
        let mut sink = HttpSink::new(Format::Webhook, config, None, Arc::new(Metrics::new()));
        sink.add(notification(false));
        sink.add(notification(false));
        assert!(
            sink.superseded.is_empty(),
            "a re-send replaces, nothing to keep"
        );
        sink.add(notification(true));
        assert_eq!(sink.outbox.len(), 1);
        assert!(sink.outbox.values().all(Notification::is_resolved));
        assert_eq!(sink.superseded.len(), 1);
        assert!(!sink.superseded.values().any(Notification::is_resolved));
        // Resolved again (a re-send): still the one firing to deliver first.
        sink.add(notification(true));
        assert_eq!(sink.superseded.len(), 1);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn authorization_reads_secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let basic = HttpAuth::Basic {
            user: "am".into(),
            password_file: file.clone(),
        };
        assert_eq!(
            authorization(&basic).unwrap().unwrap(),
            format!("Basic {}", base64(b"am:s3cret"))
        );
        let bearer = HttpAuth::Bearer { token_file: file };
        assert_eq!(authorization(&bearer).unwrap().unwrap(), "Bearer s3cret");
        let missing = HttpAuth::Bearer {
            token_file: dir.path().join("nope"),
        };
        assert!(authorization(&missing).is_err());
    }
}
