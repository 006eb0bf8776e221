//! Time your tokio-postgres queries as your application experiences them, watch your deadpool
//! pools, and record your bulk imports so [pgvigil] can prove every row arrived.
//!
//! ```no_run
//! use pgvigil_timing::{GenericTimedClient, Recorder};
//! use prometheus_client::registry::Registry;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Once per process: where the metrics go.
//!     let mut registry = Registry::default();
//!     let recorder = Recorder::builder()
//!         .namespace("shop")
//!         .prometheus_client(&mut registry)
//!         .build();
//!
//!     let (client, connection) =
//!         tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=shop", tokio_postgres::NoTls)
//!             .await?;
//!     tokio::spawn(connection);
//!     // The one-line change: wrap the client.
//!     let client = recorder.wrap(client);
//!
//!     // Same methods as tokio-postgres; errors come back unchanged.
//!     let row = client.query_one("SELECT $1::int4 + 1", &[&41]).await?; // summary "SELECT"
//!     assert_eq!(row.get::<_, i32>(0), 42);
//!     client
//!         .named("load_campaign") // a name of your choosing instead of "SELECT campaign"
//!         .query("SELECT id, name FROM campaign WHERE id = $1", &[&7_i64])
//!         .await?;
//!
//!     let mut text = String::new();
//!     prometheus_client::encoding::text::encode(&mut text, &registry)?;
//!     assert!(text.contains("db_client_operation_duration_seconds_bucket"));
//!     Ok(())
//! }
//! ```
//!
//! # What is recorded
//!
//! Every operation records OpenTelemetry's database client conventions:
//!
//! * the `db.client.operation.duration` histogram (seconds, buckets [`DURATION_BUCKETS`]),
//!   exported to Prometheus as `db_client_operation_duration_seconds`, with `db.system.name`,
//!   `db.namespace`, `db.operation.name`, `db.query.summary` and, on failure, `error.type` (the
//!   SQLSTATE, e.g. `23505`; see [`error_type`]);
//! * a `tracing` span (`otel.name` = the query summary, `otel.kind = client`, the same
//!   attributes plus `db.response.returned_rows`) that tracing-opentelemetry exports as an
//!   OpenTelemetry client span;
//! * a `warn!` on target `pgvigil_timing::slow_query` when the operation took longer than
//!   [`RecorderBuilder::slow_query_threshold`], with the statement name, duration and rows.
//!
//! Within a unit of work ([`Recorder::unit_of_work`], or a span marked `unit_of_work` with the
//! `tracing-subscriber` feature), a statement run more than 10 times is an N+1, reported when
//! the unit ends (`db.client.n_plus_one`, a warning, a span event; see [`unit`](mod@unit)). A statement
//! that breaks the SQL rulebook (`SELECT *`, whole-table reads) is logged at debug level and
//! counted once (`db.client.rulebook.violations`; see [`summary`]).
//!
//! A wrapped deadpool pool (feature `deadpool`) adds `db.client.connection.count{state}`,
//! `.max`, `.pending_requests` (sampled at scrape time), `.wait_time`, `.use_time` and
//! `.timeouts`. The metric table is in the [`backend`] module.
//!
//! # Statement names and cardinality
//!
//! The statement name is the caller's ([`GenericTimedClient::named`]) or a summary derived from
//! the SQL text ([`summarize`]: operation + main table, e.g. `SELECT users`), cached. Label values
//! can never grow without bound: at most [`RecorderBuilder::max_statement_names`] distinct names
//! exist per recorder; later ones are recorded as `other`. See the [`summary`] module.
//!
//! # Imports
//!
//! [`ImportAudit`] writes the audit row pgvigil reconciles (status, expected/reported rows,
//! heartbeat, the import transaction's `xact_id`) on its own autocommit connection, hands out
//! the import id to stamp on each imported row, warns when `finish` runs before the COMMIT
//! returned, and NOTIFYs `pgvigil_import` when an import ends.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `prometheus-client` | yes | [`RecorderBuilder::prometheus_client`]: the Prometheus project's client |
//! | `prometheus` | no | `RecorderBuilder::prometheus`: the `prometheus` crate (0.14, no default features) |
//! | `otel` | no | `RecorderBuilder::opentelemetry`: OpenTelemetry metric instruments; `trace_id` exemplars on the prometheus-client histogram from the tracing-opentelemetry span |
//! | `deadpool` | no | `TimedPool` / `TimedObject` and pool metrics for deadpool-postgres |
//! | `tracing-subscriber` | no | `Recorder::unit_of_work_layer`: spans with a `unit_of_work` field are units of work |
//!
//! No feature needs a C toolchain.
//!
//! # Layout
//!
//! * [`client`](GenericTimedClient): the trait generic code is written against,
//!   [`TimedClient`], [`TimedTransaction`], [`Named`], [`TimedStatement`];
//! * `stream`: [`TimedRowStream`], [`TimedCopyOutStream`], [`TimedCopyInSink`], timed until they
//!   finish or are dropped;
//! * `recorder`: [`Recorder`] and its builder; turns a finished operation into a histogram
//!   sample, span attributes and a slow-query warning;
//! * [`backend`]: one module per metrics backend;
//! * [`summary`]: the SQL tokenizer, the statement facts (fingerprint, rulebook lints) and the
//!   bounded label cache;
//! * [`unit`](mod@unit): units of work and N+1 detection;
//! * `pool` (feature `deadpool`): `TimedPool`, `TimedObject`;
//! * [`audit`]: [`ImportAudit`], [`AuditTable`], [`IMPORT_AUDIT_DDL`].
//!
//! Nothing `Deref`s to the wrapped tokio-postgres types (that would silently skip timing); every
//! wrapper has `get_ref` and `into_inner` instead.
//!
//! [pgvigil]: https://github.com/pgvigil/pgvigil

pub mod audit;
pub mod backend;
mod client;
#[cfg(feature = "deadpool")]
mod pool;
mod recorder;
mod stream;
pub mod summary;
pub mod unit;

pub use audit::{
    AsClient, AuditError, AuditTable, IMPORT_AUDIT_DDL, ImportAudit, ImportAuditBuilder,
    MAX_ERROR_MESSAGE_LEN, NOTIFY_CHANNEL,
};
#[doc(hidden)]
pub use client::__private;
pub use client::{
    GenericTimedClient, Named, TimedClient, TimedStatement, TimedTransaction, ToTimedStatement,
};
#[cfg(feature = "deadpool")]
pub use pool::{DEFAULT_POOL_NAME, TimedObject, TimedPool};
pub use recorder::{
    DB_SYSTEM_NAME, DEFAULT_MAX_STATEMENT_NAMES, DEFAULT_SLOW_QUERY_THRESHOLD, DURATION_BUCKETS,
    PoolStatus, Recorder, RecorderBuilder, ServerAddress, error_type,
};
pub use stream::{TimedCopyInSink, TimedCopyOutStream, TimedRowStream};
pub use summary::{Lint, QuerySummary, StatementFacts, summarize};
#[cfg(feature = "tracing-subscriber")]
pub use unit::UnitOfWorkLayer;
pub use unit::{
    DEFAULT_N_PLUS_ONE_THRESHOLD, EnteredUnit, InUnitOfWork, UNIT_OF_WORK_FIELD, UnitOfWork,
};
