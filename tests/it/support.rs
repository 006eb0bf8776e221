//! Shared helpers: an in-process daemon on port 0, a tiny HTTP client, and a parser for the
//! metrics text so tests assert on values rather than on substrings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use pgvigil::Config;
use pgvigil::config::LibpqEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The one ceiling of every wait on a condition. It costs nothing when the condition comes
/// early, and it is generous because the suite runs on machines loaded far beyond their
/// cores (`scripts/stress-tests.sh`): a wait that times out must mean the condition never
/// came, not that the machine was busy. Well below nextest's 5-minute kill.
pub const CEILING: Duration = Duration::from_secs(120);

/// A pgvigil daemon running inside the test process.
pub struct Daemon {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), pgvigil::RunError>>>,
    trigger: Option<pgvigil::app::ReloadTrigger>,
}

impl Daemon {
    /// Start a daemon from config text (TOML).
    pub async fn start(toml: &str) -> Daemon {
        let config = Config::parse(Path::new("test.toml"), toml, &LibpqEnv::default())
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml}"));
        Daemon::start_with(config).await
    }

    pub async fn start_with(config: Config) -> Daemon {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(pgvigil::serve(config, listener, async {
            let _ = rx.await;
        }));
        Daemon {
            addr,
            stop: Some(tx),
            task: Some(task),
            trigger: None,
        }
    }

    /// Start a daemon from a config file (or directory of fragments) it can re-read: reload
    /// with [`Daemon::post`]`("/-/reload")` (needs `[server] enable_lifecycle = true`) or
    /// [`Daemon::reload`].
    pub async fn start_file(path: &Path) -> Daemon {
        let source = pgvigil::app::ConfigSource {
            path: Some(path.to_owned()),
            listen: None,
            web_config_file: None,
        };
        let config = source
            .load()
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        let reloader = pgvigil::app::Reloader::new(source);
        let trigger = reloader.trigger();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(pgvigil::app::serve_with(
            config,
            Some(reloader),
            listener,
            async {
                let _ = rx.await;
            },
        ));
        Daemon {
            addr,
            stop: Some(tx),
            task: Some(task),
            trigger: Some(trigger),
        }
    }

    /// Reload the daemon's config (as SIGHUP does); what changed, or why it was rejected.
    pub async fn reload(&self) -> Result<String, String> {
        self.trigger
            .as_ref()
            .expect("a daemon started with start_file")
            .reload()
            .await
    }

    /// POST to a path; returns (status, body).
    pub async fn post(&self, path: &str) -> (u16, String) {
        http_request(self.addr, "POST", path, None).await
    }

    /// GET a path; returns (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path, None).await
    }

    /// The classic-format metrics text.
    pub async fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Poll /metrics until `check` returns Some, or panic after `timeout`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Metrics) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            let metrics = self.metrics().await;
            if let Some(v) = check(&metrics) {
                return v;
            }
            if Instant::now() > deadline {
                let text = last.map(|m: Metrics| m.text).unwrap_or_default();
                panic!("timed out after {timeout:?} waiting for {what}; last metrics:\n{text}");
            }
            last = Some(metrics);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Poll `/api/v1/targets` until `check` returns Some for the entry of target `name`, or
    /// panic after `timeout`. For assertions on the API (last_poll, last_error, collectors):
    /// `pgvigil_up` turns 1 at connect, before the first poll, and starts at 0 before the
    /// first connection attempt has failed, so it is no signal for those.
    pub async fn wait_for_target<T>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&serde_json::Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, body) = self.get("/api/v1/targets").await;
            let targets: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let target = targets
                .as_array()
                .and_then(|all| all.iter().find(|t| t["name"] == name))
                .cloned()
                .unwrap_or_default();
            if let Some(v) = check(&target) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last /api/v1/targets entry of {name}: {target}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop the daemon and wait for it; returns how long shutdown took.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        started.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Wait until a server started as a child process answers `path` with 200 (it may not be
/// listening yet), from a synchronous test: `what` names the wait.
pub fn wait_for_200(runtime: &tokio::runtime::Runtime, addr: SocketAddr, path: &str, what: &str) {
    pgvigil_testkit::wait_until(what, CEILING, || {
        runtime
            .block_on(async {
                match TcpStream::connect(addr).await {
                    Ok(_) => Some(http_get(addr, path, None).await.0),
                    Err(_) => None,
                }
            })
            .filter(|status| *status == 200)
    });
}

/// A minimal HTTP/1.1 GET (Connection: close) — enough for our own server.
pub async fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String) {
    http_request(addr, "GET", path, accept).await
}

/// A minimal HTTP/1.1 request without a body (Connection: close).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{accept}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let (head, body) = split_response(&response);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, String::from_utf8(body).unwrap())
}

/// A raw HTTP/1.1 response: its head (as sent) and its body, decoded from
/// `Transfer-Encoding: chunked` when it was sent so (pgvigil streams the plain `/metrics` body,
/// Prometheus sends large answers so).
pub fn split_response(response: &[u8]) -> (String, Vec<u8>) {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (String::from_utf8_lossy(response).into_owned(), Vec::new());
    };
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let body = &response[end + 4..];
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (head, body)
}

/// The data of a chunked body; panics if it is not well formed (a broken stream must fail the
/// test that reads it, not parse as a short exposition).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len());
    loop {
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = std::str::from_utf8(&rest[..line]).expect("an ASCII chunk size");
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).expect("a hexadecimal chunk size");
        rest = &rest[line + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest[size..]
            .strip_prefix(b"\r\n")
            .expect("CRLF after a chunk");
    }
}

/// Parsed classic-format exposition.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match name_labels.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
                None => (name_labels, BTreeMap::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            samples.push((name.to_owned(), labels, value));
        }
        Metrics {
            text: text.to_owned(),
            samples,
        }
    }

    /// Value of the single series of `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self.matching(name, labels).map(|(_, v)| v).collect();
        assert!(
            matching.len() <= 1,
            "{name}{labels:?} matches {} series",
            matching.len()
        );
        matching.first().copied()
    }

    /// Sum over all series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|(_, v)| v).sum()
    }

    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| (l, *v))
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// A TOML config with one target on `dsn`, polling fast.
pub fn one_target(name: &str, dsn: &str, extra: &str) -> String {
    format!(
        "[[targets]]\nname = \"{name}\"\ndsn = \"{dsn}\"\npoll_interval = \"200ms\"\nreconnect_max_backoff = \"1s\"\n{extra}\n"
    )
}

/// A tokio-postgres client for the test's own sessions.
pub async fn connect(dsn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {dsn}: {e}"));
    tokio::spawn(connection);
    client
}

/// Path of the pgvigil binary built for these tests.
pub fn pgvigil_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgvigil")
}

/// Drives collectors directly on a connection of its own, one poll per call, so tests can put
/// database events exactly between polls and evaluate alert rules on what the collectors saw.
pub struct Poller {
    pub client: tokio_postgres::Client,
    /// The session's prepared statements, kept across polls as the daemon keeps them.
    pub prepared: pgvigil::collect::prepared::Prepared,
    pub target: pgvigil::config::TargetConfig,
    server: pgvigil::collect::ServerInfo,
    collectors: Vec<Box<dyn pgvigil::collect::Collector<pgvigil::collect::Postgres>>>,
}

impl Poller {
    /// Collectors for `target` (name "main"), configured by `configure`.
    pub async fn new(
        dsn: &str,
        configure: impl FnOnce(&mut pgvigil::config::TargetConfig),
    ) -> Poller {
        let connection = pgvigil::config::ConnectionSpec::parse(dsn, &LibpqEnv::default()).unwrap();
        let mut target = pgvigil::config::TargetConfig::new("main", connection);
        configure(&mut target);
        let client = connect(dsn).await;
        client
            .batch_execute("SET statement_timeout = 5000; SET lock_timeout = 1000")
            .await
            .unwrap();
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_setting('server_version'), pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        let server = pgvigil::collect::ServerInfo {
            version_num: row.get(0),
            version: row.get(1),
            backend_pid: row.get(2),
        };
        // As the poll loop does, only the collectors this server's version supports.
        let collectors = pgvigil::collect::registry::POSTGRES
            .iter()
            .filter(|spec| spec.enabled(&target) && spec.versions.supports(server.version_num))
            .map(|spec| (spec.build)(&target))
            .collect();
        Poller {
            collectors,
            client,
            prepared: Default::default(),
            target,
            server,
        }
    }

    /// Poll every collector once; panics if one fails.
    pub async fn poll(&mut self) -> pgvigil::collect::Observations {
        let ctx = pgvigil::collect::PollContext {
            client: &self.client,
            prepared: &self.prepared,
            target: &self.target,
            server: &self.server,
            database: self.target.connection.dbname(),
            own_backends: vec![self.server.backend_pid],
            max_tables: None,
        };
        let mut observations = pgvigil::collect::Observations {
            up: true,
            ..Default::default()
        };
        for c in &mut self.collectors {
            if let Err(e) = c.collect(&ctx, &mut observations).await {
                panic!("collector {} failed: {e}", c.name());
            }
        }
        observations
    }
}

/// The tables report of the one database a [`Poller`] reads.
pub fn tables_of(
    observations: &pgvigil::collect::Observations,
) -> &pgvigil::collect::tables::TablesReport {
    let (_, report) = observations
        .each_database()
        .next()
        .expect("a database report");
    report.tables.as_ref().expect("a tables report")
}

/// The imports report of the one database a [`Poller`] reads.
pub fn imports_of(
    observations: &pgvigil::collect::Observations,
) -> Option<&pgvigil::collect::imports::ImportsReport> {
    let (_, report) = observations.each_database().next()?;
    report.imports.as_ref()
}

/// Evaluate the rule `alertname` (default parameters) on one poll's observations.
pub fn conditions(
    alertname: &str,
    observations: &pgvigil::collect::Observations,
) -> Vec<pgvigil::alert::Condition> {
    evaluate_with(alertname, &toml::Table::new(), observations)
}

/// Evaluate the rule `alertname` with parameters on one poll's observations.
pub fn evaluate_with(
    alertname: &str,
    params: &toml::Table,
    observations: &pgvigil::collect::Observations,
) -> Vec<pgvigil::alert::Condition> {
    let spec = pgvigil::alert::rules::RULES
        .iter()
        .find(|s| s.alertname == alertname)
        .unwrap_or_else(|| panic!("no rule {alertname}"));
    let rule = (spec.build)(params).unwrap();
    match rule.evaluate("main", observations) {
        // Imports still being confirmed are unknown (their alerts keep their state): the
        // conditions are what holds of the others.
        pgvigil::alert::Evaluation::Holds(c)
        | pgvigil::alert::Evaluation::HoldsExcept { conditions: c, .. } => c,
        other => panic!("{alertname} evaluated to {other:?}"),
    }
}
