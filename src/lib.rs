//! pgvigil: a PostgreSQL observability sidecar.
//!
//! pgvigil polls each configured source (a PostgreSQL server, a PgBouncer instance) over a
//! connection of its own, exports what it finds as Prometheus metrics, and watches for the
//! problems operators care about (connection exhaustion, transactions left open with
//! uncommitted writes, imports that lost rows, ...). The binary in `main.rs` only parses
//! arguments, loads the configuration with [`app::load`], sets up telemetry and calls [`run`].
//!
//! # Layout
//!
//! * [`app`]: the composition root — [`run`]/[`serve`], loading a configuration, and the
//!   supervisor that starts, replaces and removes sources at runtime.
//! * `hub` (private): per-source state in one place (status, snapshots, observations, up,
//!   alert rules); forgetting a source removes all of it.
//! * `discover` (private): targets from Prometheus file_sd files (`[discovery]`).
//! * [`config`]: TOML in, validated [`Config`] out (plain data); errors carry `FILE:LINE:COL`.
//! * `poll` (private): the poll loop every source runs: schedule (each collector on its own
//!   interval), reconnect with backoff, `pgvigil_up`, recording each collector's outcome.
//! * `target`, `bouncer` (private): how a PostgreSQL session and a PgBouncer admin console
//!   session are opened, and what their collectors see.
//! * `databases` (private): a target's database sessions — every watched database visited
//!   for the database-scope collectors, within the target's connection budget.
//! * [`collect`]: one module per data source and the collector registry
//!   ([`collect::registry`]); each collector produces a metrics snapshot and typed observations.
//! * [`privileges`]: what the role may read per collector and database, and the GRANT for
//!   each missing piece (`pgvigil check-privileges`, and the daemon's report at connect).
//! * [`alert`]: rules over observations, the alert lifecycle, delivery sinks.
//! * [`metrics`]: every exported metric defined once (one catalogue file per source), the
//!   snapshot store `/metrics` reads.
//! * [`exposition`]: OpenMetrics vs. classic text format negotiation.
//! * [`status`]: per-source state for the API and the status page.
//! * [`http`]: `/metrics`, `/healthz`, `/readyz`, `/api/v1/targets`, `/api/v1/alerts`, `/api/v1/locks`,
//!   `/api/v1/imports`, the status page and `/-/reload`, dispatched from one list
//!   ([`http::ROUTES`]); every other method than GET/HEAD is refused with 405 and `Allow`.
//! * [`page`]: the status pages (`/`, `/targets/<name>`, `/imports/<id>`), their charts and
//!   the in-memory history they draw ([`page::history`]).
//! * `tls` (private): the TLS connector of each target and PgBouncer.
//! * [`web`]: HTTPS and basic authentication of the endpoints (exporter-toolkit web config).
//! * [`telemetry`]: logging, and OpenTelemetry span export behind the `otel` feature.
//!
//! Collection is decoupled from scraping: `/metrics` serves the latest published snapshots
//! and never waits on a database.

pub mod advice;
pub mod alert;
pub mod app;
mod bouncer;
pub mod collect;
pub mod config;
mod connect_gate;
mod databases;
pub(crate) mod discover;
pub mod exposition;
pub mod http;
mod hub;
pub mod metrics;
pub mod page;
mod poll;
pub mod privileges;
#[cfg(test)]
mod readme;
pub mod status;
mod target;
pub mod telemetry;
mod tls;
pub mod web;

pub use app::{RunError, SHUTDOWN_GRACE, run, serve};
pub use config::Config;
