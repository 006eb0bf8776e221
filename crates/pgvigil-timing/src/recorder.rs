//! The [`Recorder`]: one place that turns a finished database operation into metrics (fanned out to
//! the enabled backends), a tracing span and, above a threshold, a slow-query warning.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Span;
use tracing::field::Empty;

use crate::backend::Backends;
use crate::summary::{QuerySummary, Summarizer};

/// `db.system.name` for everything this crate records.
pub const DB_SYSTEM_NAME: &str = "postgresql";

/// The bucket boundaries (seconds) OpenTelemetry's semantic conventions recommend for
/// `db.client.operation.duration`; used for every duration histogram this crate exports.
pub const DURATION_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// Default label budget: distinct statement names before new ones become `other`.
pub const DEFAULT_MAX_STATEMENT_NAMES: usize = 1000;

/// Default slow-query threshold.
pub const DEFAULT_SLOW_QUERY_THRESHOLD: Duration = Duration::from_secs(1);

/// Records database operations. Cheap to clone (an [`Arc`] inside); share one per process.
///
/// Build it with [`Recorder::builder`], attach the metric backends you use, then wrap clients
/// ([`Recorder::wrap`]) and pools (`Recorder::wrap_pool`, feature `deadpool`).
#[derive(Clone)]
pub struct Recorder {
    pub(crate) shared: Arc<Shared>,
    namespace: Arc<str>,
    server: Option<Arc<ServerAddress>>,
}

/// The server a recorder's clients talk to: OpenTelemetry's `server.address` and `server.port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddress {
    /// Host name, IP address or Unix socket directory, as the app connects to it.
    pub address: Arc<str>,
    /// TCP port.
    pub port: u16,
}

pub(crate) struct Shared {
    pub(crate) summarizer: Summarizer,
    slow_query_threshold: Option<Duration>,
    n_plus_one_threshold: Option<u64>,
    /// Fingerprints of statements already flagged by the rulebook (bounded).
    flagged: Mutex<HashSet<u64>>,
    capture_query_text: bool,
    pub(crate) backends: Backends,
    pub(crate) pools: Arc<Pools>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("namespace", &self.namespace)
            .field("slow_query_threshold", &self.shared.slow_query_threshold)
            .field("capture_query_text", &self.shared.capture_query_text)
            .field("backends", &self.shared.backends)
            .field("statement_names", &self.shared.summarizer.distinct_names())
            .finish()
    }
}

impl Recorder {
    /// Start building a recorder.
    pub fn builder() -> RecorderBuilder {
        RecorderBuilder::new()
    }

    /// A recorder that records spans and slow-query warnings but exports no metrics.
    pub fn without_metrics() -> Recorder {
        RecorderBuilder::new().build()
    }

    /// The same recorder (same metrics, same label budget) reporting `db.namespace` = `namespace`:
    /// use one per database when an app talks to several.
    pub fn with_namespace(&self, namespace: impl AsRef<str>) -> Recorder {
        Recorder {
            shared: self.shared.clone(),
            namespace: Arc::from(namespace.as_ref()),
            server: self.server.clone(),
        }
    }

    /// The same recorder reporting `server.address` and `server.port` (OpenTelemetry's
    /// recommended attributes) on its spans and OpenTelemetry metrics. tokio-postgres does not
    /// tell a `Client`'s peer, so the app says it, e.g. from its `tokio_postgres::Config`
    /// (`get_hosts()`, `get_ports()`). The Prometheus backends leave it out: a scrape target
    /// already says where it runs, and one more label would multiply the series.
    pub fn with_server_address(&self, address: impl AsRef<str>, port: u16) -> Recorder {
        Recorder {
            shared: self.shared.clone(),
            namespace: self.namespace.clone(),
            server: Some(Arc::new(ServerAddress {
                address: Arc::from(address.as_ref()),
                port,
            })),
        }
    }

    /// The server address set with [`with_server_address`](Self::with_server_address).
    pub fn server_address(&self) -> Option<&ServerAddress> {
        self.server.as_deref()
    }

    /// The `db.namespace` this recorder reports (empty if not set).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Wrap a connected client: the one-line adoption.
    pub fn wrap(&self, client: tokio_postgres::Client) -> crate::TimedClient {
        crate::TimedClient::new(client, self.clone())
    }

    /// The bounded statement label the recorder will use for `sql`.
    pub fn summary_for(&self, sql: &str) -> QuerySummary {
        let (label, fresh) = self.shared.summarizer.lookup(sql);
        if fresh {
            self.check_rulebook(&label);
        }
        label
    }

    /// The bounded label for a caller-provided statement name.
    pub(crate) fn named(&self, name: &str, sql: Option<&str>) -> QuerySummary {
        let (label, fresh) = self.shared.summarizer.named(name, sql);
        if fresh {
            self.check_rulebook(&label);
        }
        label
    }

    /// The N+1 threshold, `None` if N+1 detection is off.
    pub fn n_plus_one_threshold(&self) -> Option<u64> {
        self.shared.n_plus_one_threshold
    }

    /// Rulebook lints of a statement seen for the first time (a summary-cache miss, so never on
    /// the hot path): a debug event and `db_client_rulebook_violations_total`, once per
    /// statement fingerprint.
    fn check_rulebook(&self, label: &QuerySummary) {
        const MAX_FLAGGED: usize = 4096;
        let Some(facts) = label.facts().filter(|f| f.has_lints()) else {
            return;
        };
        {
            let mut flagged = self
                .shared
                .flagged
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if flagged.len() >= MAX_FLAGGED {
                flagged.clear();
            }
            if !flagged.insert(facts.fingerprint()) {
                return;
            }
        }
        for lint in facts.lints() {
            self.shared
                .backends
                .rulebook(lint.name(), label.summary_arc());
            let rule = match lint {
                crate::summary::Lint::SelectStar => "rule 6: never SELECT *, name the columns",
                _ => "rule 3: reads whole tables (no WHERE, LIMIT or aggregate)",
            };
            tracing::debug!(
                target: "pgvigil_timing::rulebook",
                rule = lint.name(),
                db.query.summary = label.summary(),
                statement = facts.normalized(),
                "rulebook: {} breaks {rule}: {}",
                label.summary(),
                facts.normalized(),
            );
        }
    }

    /// How many distinct statement names have been handed out (bounded by
    /// [`RecorderBuilder::max_statement_names`]).
    pub fn distinct_statement_names(&self) -> usize {
        self.shared.summarizer.distinct_names()
    }

    /// Register a connection pool of any kind for the `db.client.connection.*` gauges; `status`
    /// is called on every scrape/collection and should return `None` once the pool is gone (it
    /// is then forgotten). `deadpool` pools are registered by `Recorder::wrap_pool`.
    pub fn register_pool(
        &self,
        pool_name: impl AsRef<str>,
        status: impl Fn() -> Option<PoolStatus> + Send + Sync + 'static,
    ) {
        self.shared
            .pools
            .register(pool_name.as_ref(), Box::new(status));
    }

    /// The current status of every registered pool, by pool name (what the gauges report).
    pub fn pool_statuses(&self) -> Vec<(String, PoolStatus)> {
        self.shared
            .pools
            .snapshot()
            .into_iter()
            .map(|(name, status)| (name.to_string(), status))
            .collect()
    }

    /// Record the time a caller waited to check a connection out of `pool_name`
    /// (`db.client.connection.wait_time`).
    pub fn record_pool_wait(&self, pool_name: &str, wait: Duration) {
        self.shared
            .backends
            .pool_wait(pool_name, wait.as_secs_f64());
    }

    /// Record how long a connection of `pool_name` was checked out
    /// (`db.client.connection.use_time`).
    pub fn record_pool_use(&self, pool_name: &str, used: Duration) {
        self.shared.backends.pool_use(pool_name, used.as_secs_f64());
    }

    /// Count a checkout of `pool_name` that timed out (`db.client.connection.timeouts`).
    pub fn record_pool_timeout(&self, pool_name: &str) {
        self.shared.backends.pool_timeout(pool_name);
    }

    /// Start timing one operation; `sql` is attached to the span when query-text capture is on.
    pub(crate) fn start(&self, label: QuerySummary, sql: Option<&str>, on_drop: OnDrop) -> Op {
        let span = tracing::info_span!(
            target: "pgvigil_timing",
            "db.query",
            otel.name = label.summary(),
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = DB_SYSTEM_NAME,
            db.namespace = &*self.namespace,
            db.operation.name = label.operation(),
            db.query.summary = label.summary(),
            db.query.text = Empty,
            db.response.returned_rows = Empty,
            db.response.status_code = Empty,
            error.type = Empty,
            server.address = Empty,
            server.port = Empty,
        );
        if let Some(server) = &self.server {
            if !span.is_disabled() {
                span.record("server.address", &*server.address);
                span.record("server.port", server.port);
            }
        }
        if self.shared.capture_query_text && !span.is_disabled() {
            if let Some(sql) = sql {
                span.record("db.query.text", sql);
            }
        }
        if self.shared.n_plus_one_threshold.is_some() {
            crate::unit::count(&label);
        }
        Op {
            recorder: self.clone(),
            label,
            span,
            rows: 0,
            on_drop,
            finished: false,
            start: Instant::now(),
        }
    }
}

/// What a dropped, unfinished operation means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnDrop {
    /// The future/sink was dropped before the operation completed: record `error.type=cancelled`.
    Cancelled,
    /// A stream the app stopped reading early: record it as a success with the rows seen.
    Complete,
}

/// One in-flight operation. Records exactly once: on `finish_*`, or on drop.
pub(crate) struct Op {
    recorder: Recorder,
    label: QuerySummary,
    span: Span,
    rows: u64,
    on_drop: OnDrop,
    finished: bool,
    start: Instant,
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op")
            .field("summary", &self.label.summary())
            .field("rows", &self.rows)
            .field("elapsed", &self.start.elapsed())
            .finish()
    }
}

impl Op {
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    pub(crate) fn add_rows(&mut self, rows: u64) {
        self.rows += rows;
    }

    pub(crate) fn set_on_drop(&mut self, on_drop: OnDrop) {
        self.on_drop = on_drop;
    }

    /// Finish with the outcome of a call; returns it unchanged.
    pub(crate) fn finish<T>(
        mut self,
        result: Result<T, tokio_postgres::Error>,
        rows: impl FnOnce(&T) -> u64,
    ) -> Result<T, tokio_postgres::Error> {
        match &result {
            Ok(v) => {
                self.rows += rows(v);
                self.record(None);
            }
            Err(e) => self.record(Some(error_type(e))),
        }
        result
    }

    pub(crate) fn finish_ok(mut self) {
        self.record(None);
    }

    pub(crate) fn finish_err(mut self, e: &tokio_postgres::Error) {
        self.record(Some(error_type(e)));
    }

    fn record(&mut self, error: Option<Arc<str>>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let elapsed = self.start.elapsed();
        let seconds = elapsed.as_secs_f64();
        let shared = &self.recorder.shared;
        if !self.span.is_disabled() {
            self.span.record("db.response.returned_rows", self.rows);
            if let Some(e) = &error {
                self.span.record("error.type", &**e);
                self.span.record("otel.status_code", "error");
                if e.len() == 5 {
                    self.span.record("db.response.status_code", &**e);
                }
            }
        }
        shared.backends.operation(&crate::backend::Observation {
            namespace: &self.recorder.namespace,
            server: self.recorder.server.as_deref(),
            summary: &self.label,
            error_type: error.as_ref(),
            seconds,
            span: &self.span,
        });
        if let Some(threshold) = shared.slow_query_threshold {
            if elapsed >= threshold {
                tracing::warn!(
                    target: "pgvigil_timing::slow_query",
                    parent: &self.span,
                    statement = self.label.summary(),
                    operation = self.label.operation(),
                    db.namespace = &*self.recorder.namespace,
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    rows = self.rows,
                    error.type = error.as_deref(),
                    threshold_ms = threshold.as_millis() as u64,
                    "slow query: {} took {:.1} ms",
                    self.label.summary(),
                    elapsed.as_secs_f64() * 1000.0,
                );
            }
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if !self.finished {
            let error = match self.on_drop {
                OnDrop::Cancelled => Some(Arc::from("cancelled")),
                OnDrop::Complete => None,
            };
            self.record(error);
        }
    }
}

/// The `error.type` of a failed operation: the SQLSTATE when the server reported one
/// (`23505`), `connection_closed` when the connection is gone, `_OTHER` otherwise
/// (client-side encoding/decoding errors, I/O).
pub fn error_type(e: &tokio_postgres::Error) -> Arc<str> {
    if let Some(code) = e.code() {
        Arc::from(code.code())
    } else if e.is_closed() {
        Arc::from("connection_closed")
    } else {
        Arc::from("_OTHER")
    }
}

/// A pool's state at one instant, as reported to the `db.client.connection.*` metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Maximum number of connections (`db.client.connection.max`).
    pub max: u64,
    /// Connections currently open and idle in the pool (`state=idle`).
    pub idle: u64,
    /// Connections currently checked out (`state=used`).
    pub used: u64,
    /// Callers waiting for a connection (`db.client.connection.pending_requests`).
    pub pending_requests: u64,
}

type StatusFn = Box<dyn Fn() -> Option<PoolStatus> + Send + Sync>;

/// Registered pools, sampled on every scrape so the gauges are never stale.
#[derive(Default)]
pub(crate) struct Pools {
    entries: Mutex<Vec<(Arc<str>, StatusFn)>>,
}

impl fmt::Debug for Pools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("Pools").field("registered", &n).finish()
    }
}

impl Pools {
    fn register(&self, name: &str, status: StatusFn) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Re-registering a name replaces the old source (e.g. a pool rebuilt after a config reload).
        entries.retain(|(n, _)| &**n != name);
        entries.push((Arc::from(name), status));
    }

    /// Current status of every live pool; pools that are gone are forgotten.
    pub(crate) fn snapshot(&self) -> Vec<(Arc<str>, PoolStatus)> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(entries.len());
        entries.retain(|(name, status)| match status() {
            Some(s) => {
                out.push((name.clone(), s));
                true
            }
            None => false,
        });
        out
    }
}

/// Builder for a [`Recorder`].
#[derive(Debug)]
pub struct RecorderBuilder {
    namespace: String,
    max_statement_names: usize,
    slow_query_threshold: Option<Duration>,
    n_plus_one_threshold: Option<u64>,
    capture_query_text: bool,
    backends: Backends,
    pools: Arc<Pools>,
}

impl RecorderBuilder {
    fn new() -> Self {
        Self {
            namespace: String::new(),
            max_statement_names: DEFAULT_MAX_STATEMENT_NAMES,
            slow_query_threshold: Some(DEFAULT_SLOW_QUERY_THRESHOLD),
            n_plus_one_threshold: Some(crate::unit::DEFAULT_N_PLUS_ONE_THRESHOLD),
            capture_query_text: false,
            backends: Backends::default(),
            pools: Arc::new(Pools::default()),
        }
    }

    /// `db.namespace`: the database name (default empty). See [`Recorder::with_namespace`] for apps
    /// that use several databases.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How many distinct statement names (derived or `.named(..)`) may become label values;
    /// later ones are recorded as `other`. Default [`DEFAULT_MAX_STATEMENT_NAMES`].
    pub fn max_statement_names(mut self, max: usize) -> Self {
        self.max_statement_names = max;
        self
    }

    /// Operations at least this long log a `warn!` (target `pgvigil_timing::slow_query`) with the
    /// statement name, duration and rows. `None` disables it. Default
    /// [`DEFAULT_SLOW_QUERY_THRESHOLD`].
    pub fn slow_query_threshold(mut self, threshold: impl Into<Option<Duration>>) -> Self {
        self.slow_query_threshold = threshold.into();
        self
    }

    /// N+1 detection: a statement that runs more than `threshold` times within one unit of
    /// work ([`Recorder::unit_of_work`], or a span marked `unit_of_work` with the
    /// `tracing-subscriber` feature's layer) is reported when the unit ends. Default
    /// [`DEFAULT_N_PLUS_ONE_THRESHOLD`](crate::DEFAULT_N_PLUS_ONE_THRESHOLD) (10); `None` turns
    /// it off (then no operation even looks for a unit). See the [`unit`](mod@crate::unit) module.
    pub fn n_plus_one_threshold(mut self, threshold: impl Into<Option<u64>>) -> Self {
        self.n_plus_one_threshold = threshold.into();
        self
    }

    /// Attach the SQL text to spans as `db.query.text` (off by default: the text is parameterized
    /// for extended-protocol calls, but `simple_query`/`batch_execute` text may carry literals).
    pub fn capture_query_text(mut self, on: bool) -> Self {
        self.capture_query_text = on;
        self
    }

    /// Export to a `prometheus-client` registry: `db_client_operation_duration_seconds`
    /// (histogram, with `trace_id` exemplars when the `otel` feature is on and a span is being
    /// exported) and the `db_client_connection_*` pool metrics.
    #[cfg(feature = "prometheus-client")]
    pub fn prometheus_client(
        mut self,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Self {
        self.backends.prometheus_client = Some(crate::backend::prom_client::Metrics::register(
            registry,
            self.pools.clone(),
        ));
        self
    }

    /// Export to a `prometheus` crate registry (same metric names as
    /// [`prometheus_client`](Self::prometheus_client)). Fails if the names are already
    /// registered there.
    #[cfg(feature = "prometheus")]
    pub fn prometheus(
        mut self,
        registry: &prometheus::Registry,
    ) -> Result<Self, prometheus::Error> {
        self.backends.prometheus = Some(crate::backend::prom::Metrics::register(
            registry,
            self.pools.clone(),
        )?);
        Ok(self)
    }

    /// Record OpenTelemetry metric instruments (`db.client.operation.duration`,
    /// `db.client.connection.*`) on `meter`.
    #[cfg(feature = "otel")]
    pub fn opentelemetry(mut self, meter: &opentelemetry::metrics::Meter) -> Self {
        self.backends.otel = Some(crate::backend::otel::Metrics::register(
            meter,
            self.pools.clone(),
        ));
        self
    }

    /// Finish.
    pub fn build(self) -> Recorder {
        Recorder {
            shared: Arc::new(Shared {
                summarizer: Summarizer::new(self.max_statement_names),
                slow_query_threshold: self.slow_query_threshold,
                n_plus_one_threshold: self.n_plus_one_threshold,
                flagged: Mutex::new(HashSet::new()),
                capture_query_text: self.capture_query_text,
                backends: self.backends,
                pools: self.pools,
            }),
            namespace: Arc::from(self.namespace),
            server: None,
        }
    }
}
