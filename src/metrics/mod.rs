//! Every metric pgvigil exports, defined once: name, help, type and label names.
//!
//! Two kinds of series live here:
//!
//! * **Snapshot metrics** describe a source. A collector fills a [`Snapshot`] during a poll
//!   and publishes it whole to the [`SnapshotStore`]; `/metrics` encodes the latest published
//!   snapshots and therefore never waits on a database, never shows a half-finished poll, and
//!   drops series that a poll no longer reports (a dropped table, a database that went away)
//!   instead of repeating stale values. Encoding walks what the snapshots hold, not a list, so
//!   a metric a collector publishes is exported whether or not some list names it.
//! * **Process metrics** describe pgvigil itself (`pgvigil_up`, poll durations, alerting).
//!   They are ordinary `prometheus-client` families held in [`Metrics`].
//!
//! # Layout
//!
//! One catalogue file per source, each a `catalogue!` block that defines the metrics and the
//! list of them in one go (so a metric cannot be defined without being listed):
//!
//! * [`process`] and [`alerting`]: pgvigil itself (process metrics).
//! * [`activity`], [`tables`], [`imports`], [`statements`]: PostgreSQL targets, one file per
//!   collector family; [`databases`]: the database sessions themselves (which databases are
//!   watched, the connection budget).
//! * [`server`], [`database_stats`], [`wraparound`]: the server-health layer of a PostgreSQL
//!   target (role and settings, pg_stat_database and sizes, wraparound and its horizon).
//! * [`replication`] and [`wal`]: replication (both sides), slots, the archiver, WAL.
//! * [`checkpointer`], [`io`], [`locks`]: the server-health layer (cluster-wide views).
//! * [`migrations`]: the schema guard's migration records and leftovers (per database).
//! * [`indexes`]: the schema guard's index health and sequence exhaustion.
//! * [`pgbouncer`]: PgBouncer instances.
//! * [`store`]: [`Snapshot`] (`snapshot`, private) and the [`SnapshotStore`] `/metrics` reads.
//! * `registry` (private): [`Metrics`] and the process families; `text` (private) writes
//!   snapshot series in both text formats; `scrape` (private) assembles, caches and
//!   compresses the `/metrics` body ([`Metrics::scrape`]) and `stream` (private) writes the
//!   plain one as it is read ([`Streamed`]); `parts` (private) keeps each
//!   snapshot's gzip pieces, reused across polls where the series did not change, `prebuild`
//!   (private) builds them as snapshots are published, and `gzip` (private) splices such
//!   pieces into one gzip member.
//!
//! [`ALL`] is every catalogue in README order: the README's metrics reference and the
//! dashboard/rule checks are tested against it, and every collector in the registry
//! (`crate::collect::registry`) declares which of them it publishes.

pub mod activity;
pub mod alerting;
pub mod databases;
mod gzip;
pub mod imports;
mod parts;
pub mod pgbouncer;
mod polls;
mod prebuild;
pub mod process;
mod registry;
pub mod replication;
mod scrape;
mod snapshot;
pub mod statements;
pub mod store;
mod stream;
pub mod tables;
mod text;
// The server-health layer: server, database_stats/database_sizes, wraparound.
pub mod database_stats;
pub mod server;
pub mod wal;
pub mod wraparound;
// The server-health layer: checkpointer, I/O, locks.
pub mod checkpointer;
pub mod io;
pub mod locks;
// The schema guard: migrations and their leftovers.
pub mod migrations;
// The schema guard (issue 14).
pub mod indexes;
// The schema guard (issue 14).
pub mod advice;

use std::sync::LazyLock;

use prometheus_client::metrics::MetricType;

pub use activity::*;
pub use alerting::*;
pub use databases::*;
pub use imports::*;
pub use pgbouncer::*;
pub use process::*;
pub use registry::Metrics;
pub use replication::*;
pub use scrape::{Encoding, Scraped};
pub use statements::*;
pub use store::{HistogramLines, Labels, Series, Snapshot, SnapshotStore};
pub use stream::Streamed;
pub use tables::*;
pub use text::Format;
// The server-health layer.
pub use database_stats::*;
pub use server::*;
pub use wal::*;
pub use wraparound::*;
// The server-health layer: checkpointer, I/O, locks.
pub use checkpointer::*;
pub use io::*;
pub use locks::*;
// The schema guard.
pub use migrations::*;
// The schema guard (issue 14).
pub use indexes::*;
// The schema guard (issue 14).
pub use advice::*;

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing value; its name ends in `_total`.
    Counter,
    /// A distribution with `_bucket`, `_sum` and `_count` series.
    Histogram,
}

/// One exported metric: what Prometheus sees.
#[derive(Debug)]
pub struct MetricDef {
    /// Full exported name (counters include `_total`).
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// Prometheus type.
    pub kind: Kind,
    /// Label names, in order.
    pub labels: &'static [&'static str],
}

impl MetricDef {
    /// The family name as `prometheus-client` wants it: counters without `_total`, which the
    /// encoder appends.
    pub fn family_name(&self) -> &'static str {
        match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            _ => self.name,
        }
    }

    pub(crate) fn metric_type(&self) -> MetricType {
        match self.kind {
            Kind::Gauge => MetricType::Gauge,
            Kind::Counter => MetricType::Counter,
            Kind::Histogram => MetricType::Histogram,
        }
    }
}

/// Define one catalogue: each entry `IDENT, Kind, "name", ["label", ...], "help";` becomes a
/// `pub const IDENT: MetricDef`, and `LIST` a `pub const LIST: &[&MetricDef]` of them all, in
/// order. Add the list to [`CATALOGUES`] when you add a file.
macro_rules! catalogue {
    (
        $(#[$list_meta:meta])* $list:ident;
        $( $ident:ident, $kind:ident, $name:literal, [$($label:literal),*], $help:literal; )*
    ) => {
        $(
            #[doc = concat!("`", $name, "`: ", $help)]
            pub const $ident: MetricDef = MetricDef {
                name: $name,
                help: $help,
                kind: Kind::$kind,
                labels: &[$($label),*],
            };
        )*
        $(#[$list_meta])*
        pub const $list: &[&MetricDef] = &[$(&$ident),*];
    };
}
pub(crate) use catalogue;

/// Every catalogue, in the order of the README reference.
const CATALOGUES: &[&[&MetricDef]] = &[
    PROCESS_METRICS,
    ACTIVITY_METRICS,
    PGBOUNCER_METRICS,
    DATABASES_METRICS,
    TABLES_METRICS,
    IMPORTS_METRICS,
    ALERTING_METRICS,
    STATEMENTS_METRICS,
    // The server-health layer.
    SERVER_METRICS,
    DATABASE_STATS_METRICS,
    WRAPAROUND_METRICS,
    // Replication, slots, archiver and WAL (issue 12).
    REPLICATION_METRICS,
    SLOT_METRICS,
    ARCHIVER_METRICS,
    WAL_DIRECTORY_METRICS,
    // The server-health layer: checkpointer, I/O, locks.
    CHECKPOINTER_METRICS,
    IO_METRICS,
    LOCKS_METRICS,
    // The schema guard.
    MIGRATIONS_METRICS,
    // The schema guard (issue 14).
    INDEXES_METRICS,
    // The schema guard (issue 14).
    ADVICE_METRICS,
];

/// Catalogues of process metrics, held as families in [`Metrics`] rather than published in
/// snapshots.
const PROCESS_CATALOGUES: &[&[&MetricDef]] = &[PROCESS_METRICS, ALERTING_METRICS];

/// Every metric pgvigil can export. Order is the order of the README reference.
pub static ALL: LazyLock<Vec<&'static MetricDef>> =
    LazyLock::new(|| CATALOGUES.iter().flat_map(|c| c.iter().copied()).collect());

/// Whether a metric is a process metric (held in [`Metrics`], not published in snapshots).
pub fn is_process_metric(def: &MetricDef) -> bool {
    PROCESS_CATALOGUES
        .iter()
        .flat_map(|c| c.iter())
        .any(|d| d.name == def.name)
}

/// Process metrics that describe the whole daemon rather than one target, and so carry no
/// `target` label. Keep this list short: everything about a database carries `target`.
pub const PROCESS_WIDE: &[&MetricDef] = &[
    &BUILD_INFO,
    &CONFIG_RELOAD_SUCCESSFUL,
    &CONFIG_RELOAD_TIMESTAMP,
    // The connect line is one for the whole process (`[server] max_concurrent_connects`).
    &CONNECT_WAITING,
    &CONNECT_IN_PROGRESS,
    &CONNECT_WAIT,
    &NOTIFICATIONS,
    &ALERTS,
];

/// Where a metric stands in [`ALL`] (the exposition order); unknown metrics go last.
pub(crate) fn position(def: &MetricDef) -> usize {
    ALL.iter()
        .position(|d| d.name == def.name)
        .unwrap_or(usize::MAX)
}

/// Look a metric up by its exported name (including `_total`; histogram series suffixes are
/// resolved to their family).
pub fn find(name: &str) -> Option<&'static MetricDef> {
    ALL.iter()
        .copied()
        .find(|def| def.name == name)
        .or_else(|| {
            ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                ALL.iter()
                    .copied()
                    .find(|def| def.name == base && def.kind == Kind::Histogram)
            })
        })
}

/// The README's metrics reference: a Markdown table of [`ALL`]. A test keeps the README's copy
/// identical (run it with `PGVIGIL_BLESS=1` to rewrite the README after adding a metric).
pub fn reference_markdown() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for def in ALL.iter() {
        let kind = match def.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {} | {} |\n",
            def.name,
            def.labels.join(", "),
            def.help.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for def in ALL.iter().copied() {
            assert!(def.name.starts_with("pgvigil_"), "{}", def.name);
            assert!(seen.insert(def.name), "{} defined twice", def.name);
            assert_eq!(
                def.kind == Kind::Counter,
                def.name.ends_with("_total"),
                "{}: _total is for counters only",
                def.name
            );
            assert!(!def.name.ends_with("_milliseconds"), "{}", def.name);
            if PROCESS_WIDE.iter().any(|d| d.name == def.name) {
                assert!(
                    is_process_metric(def),
                    "{} has no target: process only",
                    def.name
                );
                assert!(!def.labels.contains(&"target"), "{}", def.name);
            } else {
                assert_eq!(def.labels.first(), Some(&"target"), "{}", def.name);
            }
            assert!(def.help.len() > 10, "{} needs a real help text", def.name);
            // HELP is written unescaped by the encoder: keep it to characters both text formats
            // read the same way.
            assert!(
                !def.help.contains(['"', '\\', '\n']),
                "{}: help must not contain quotes, backslashes or newlines",
                def.name
            );
        }
    }

    #[test]
    fn snapshot_series_are_encoded_with_target_and_replaced_whole() {
        let metrics = Metrics::new();
        let mut snap = Snapshot::default();
        snap.set(&MAX_CONNECTIONS, 100.0);
        snap.push(&WRITING_XACTS, vec!["app".into()], 2.0);
        metrics.store().publish("main", "activity", snap);
        let text = metrics.encode_openmetrics();
        assert!(
            text.contains("pgvigil_connections_max{target=\"main\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("pgvigil_transactions_with_writes{target=\"main\",datname=\"app\"} 2"),
            "{text}"
        );

        let mut snap = Snapshot::default();
        snap.set(&MAX_CONNECTIONS, 50.0);
        metrics.store().publish("main", "activity", snap);
        let text = metrics.encode_openmetrics();
        assert!(
            text.contains("pgvigil_connections_max{target=\"main\"} 50"),
            "{text}"
        );
        assert!(!text.contains("pgvigil_transactions_with_writes"), "{text}");

        metrics.store().clear_target("main");
        assert!(
            !metrics
                .encode_openmetrics()
                .contains("pgvigil_connections_max")
        );
    }

    #[test]
    fn whatever_a_snapshot_holds_is_exported_listed_or_not() {
        // The bug this guards against shipped once: a metric defined, published, and missing
        // from the list the encoder walked, so it exported nothing.
        static UNLISTED: MetricDef = MetricDef {
            name: "pgvigil_test_unlisted",
            help: "A metric in no catalogue.",
            kind: Kind::Gauge,
            labels: &["target", "x"],
        };
        let metrics = Metrics::new();
        let mut snap = Snapshot::default();
        snap.push(&UNLISTED, vec!["y".into()], 3.0);
        snap.set(&POSTGRES_INFO_PROBE, 1.0);
        metrics.store().publish("main", "probe", snap);
        let text = metrics.encode_classic();
        assert!(
            text.contains("pgvigil_test_unlisted{target=\"main\",x=\"y\"} 3"),
            "{text}"
        );
        metrics.forget("main");
        assert!(!metrics.encode_classic().contains("pgvigil_test_unlisted"));
    }

    static POSTGRES_INFO_PROBE: MetricDef = MetricDef {
        name: "pgvigil_test_probe",
        help: "Another metric in no catalogue.",
        kind: Kind::Gauge,
        labels: &["target"],
    };

    #[test]
    fn forget_removes_every_process_series_of_a_source() {
        let metrics = Metrics::new();
        for target in ["gone", "kept"] {
            metrics.set_up(target, true);
            metrics.connect_attempt(target, "main", true);
            metrics.connect_attempt(target, "main", false);
            metrics.poll_finished(target, "activity", 0.01, false);
            metrics.publish_polls(target);
            metrics.alert_observations_dropped(target);
        }
        assert!(
            metrics
                .encode_classic()
                .contains("pgvigil_poll_errors_total{target=\"gone\",collector=\"activity\"} 1")
        );
        metrics.forget("gone");
        let text = metrics.encode_classic();
        assert!(!text.contains("target=\"gone\""), "{text}");
        assert!(text.contains("pgvigil_up{target=\"kept\"} 1"), "{text}");
        assert!(
            text.contains("pgvigil_poll_errors_total{target=\"kept\",collector=\"activity\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn poll_series_show_when_the_poll_ends_and_outlive_a_reconnect() {
        let metrics = Metrics::new();
        let count = "pgvigil_poll_duration_seconds_count{target=\"main\",collector=\"tables\"}";
        metrics.poll_finished("main", "tables", 0.01, true);
        assert!(
            !metrics.encode_classic().contains(count),
            "not before the poll ends"
        );
        metrics.publish_polls("main");
        assert!(metrics.encode_classic().contains(&format!("{count} 1\n")));
        metrics.poll_finished("main", "tables", 0.02, true);
        metrics.publish_polls("main");
        // A reconnect drops what was collected, not pgvigil's own series.
        let mut snap = Snapshot::default();
        snap.set(&MAX_CONNECTIONS, 100.0);
        metrics.store().publish("main", "activity", snap);
        metrics.store().clear_target("main");
        let text = metrics.encode_classic();
        assert!(text.contains(&format!("{count} 2\n")), "{text}");
        assert!(!text.contains("pgvigil_connections_max"), "{text}");
        // A dropped collector's series go with the next publish.
        metrics.forget_collector("main", "tables");
        metrics.publish_polls("main");
        assert!(!metrics.encode_classic().contains("collector=\"tables\""));
    }

    #[test]
    fn process_metrics_are_registered_under_their_defined_names() {
        let metrics = Metrics::new();
        metrics.set_up("main", true);
        metrics.poll_finished("main", "activity", 0.002, false);
        metrics.publish_polls("main");
        metrics.connect_attempt("main", "main", true);
        let text = metrics.encode_classic();
        for def in [&UP, &POLL_ERRORS, &CONNECT_ATTEMPTS, &BUILD_INFO] {
            assert!(
                text.contains(&format!("# TYPE {} ", def.name)),
                "{} missing in\n{text}",
                def.name
            );
        }
        assert!(
            text.contains("pgvigil_poll_duration_seconds_bucket{"),
            "{text}"
        );
    }

    #[test]
    fn readme_metrics_reference_is_current() {
        crate::readme::assert_generated_block(
            "metrics-reference",
            &reference_markdown(),
            "src/metrics/",
        );
    }

    #[test]
    fn find_resolves_histogram_series() {
        assert_eq!(
            find("pgvigil_poll_duration_seconds_bucket").map(|d| d.name),
            Some(POLL_DURATION.name)
        );
        assert!(find("pgvigil_nope").is_none());
    }
}
