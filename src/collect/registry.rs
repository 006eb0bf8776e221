//! Every collector, listed once per kind of source in [`POSTGRES`] and [`PGBOUNCER`], shaped
//! like the alert rules' `RULES`.
//!
//! Each collector module defines one [`CollectorSpec`] (`pub(crate) const SPEC`) that declares
//! what the collector is: its name, its scope, the PostgreSQL versions it supports, the
//! grants it needs, the metrics it publishes, how to find its config table, how to build it,
//! and how its report is carried over a poll it did not run in. The poll loop runs exactly
//! what is listed here, each collector on its own interval (`interval` in its table, else the
//! source's `poll_interval`), switched off by `enabled = false` in its table.
//!
//! Tests below hold every entry to its declarations: its metrics are in the catalogue and the
//! README, its grants in `deploy/sql/monitoring_role.sql`, its table and keys in
//! `config/pgvigil.example.toml`; and the README's collectors reference is generated from here.

use std::time::Duration;

use super::{Collector, Observations, Pgbouncer, Postgres, SourceType};
use crate::config::{Section, TargetConfig};
use crate::metrics::MetricDef;

/// Where a collector reads: once per source, or once per database of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Cluster-wide views (pg_stat_activity, pg_stat_statements, replication, ...), read over
    /// the target's main session.
    Cluster,
    /// Per-database catalogs (pg_stat_user_tables, an audit table, ...). Today they read the
    /// database of the target's DSN over the main session; the every-database work runs them
    /// once per watched database over a second session that visits the databases in turn,
    /// with [`super::PollContext::database`] naming the one being read.
    Database,
}

impl Scope {
    /// The README's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Cluster => "cluster",
            Scope::Database => "database",
        }
    }
}

/// The PostgreSQL releases a collector supports, as `server_version_num` bounds. PgBouncer
/// collectors use [`Versions::ANY`] (they check PgBouncer's columns themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// The oldest supported `server_version_num`, e.g. 130000; `None`: no lower bound.
    pub min: Option<i32>,
    /// The first unsupported `server_version_num`; `None`: no upper bound.
    pub below: Option<i32>,
}

impl Versions {
    /// Every version.
    pub const ANY: Versions = Versions {
        min: None,
        below: None,
    };

    /// From `min` on (e.g. `Versions::from(140000)` for PostgreSQL 14+).
    pub const fn from(min: i32) -> Versions {
        Versions {
            min: Some(min),
            below: None,
        }
    }

    /// Whether a server of `version_num` is supported.
    pub fn supports(self, version_num: i32) -> bool {
        self.min.is_none_or(|min| version_num >= min)
            && self.below.is_none_or(|below| version_num < below)
    }

    /// "13+", "14 to 16", "any".
    pub fn describe(self) -> String {
        let major = |v: i32| v / 10_000;
        match (self.min, self.below) {
            (None, None) => "any".to_owned(),
            (Some(min), None) => format!("{}+", major(min)),
            (None, Some(below)) => format!("up to {}", major(below) - 1),
            (Some(min), Some(below)) => format!("{} to {}", major(min), major(below) - 1),
        }
    }
}

/// PostgreSQL 13: the oldest release pgvigil supports.
pub const PG13: Versions = Versions::from(130000);

/// One collector, as its module declares it.
#[derive(Debug)]
pub struct CollectorSpec<S: SourceType> {
    /// The `collector` label, snapshot key and status key.
    pub name: &'static str,
    /// Its config table under the source (`[targets.<table>]`, `[pgbouncers.<table>]`).
    pub table: &'static str,
    /// One line for the README: what it reads.
    pub reads: &'static str,
    /// Cluster or database.
    pub scope: Scope,
    /// The PostgreSQL versions it runs on; on others it is skipped (logged once per session).
    pub versions: Versions,
    /// What pgvigil's role needs for it, as written in `deploy/sql/monitoring_role.sql`
    /// (`"pg_monitor"`, `"SELECT ON import_audit"`); empty if nothing beyond LOGIN.
    pub grants: &'static [&'static str],
    /// Every metric it may publish; publishing one not listed is a bug a debug build catches.
    pub metrics: &'static [&'static MetricDef],
    /// Its table in the source's config: `enabled`, `interval`, its own settings.
    pub section: fn(&S::Config) -> &dyn Section,
    /// Build it for a source (the config is validated: this cannot fail).
    pub build: fn(&S::Config) -> Box<dyn Collector<S>>,
    /// Copy its part of the observations of the last poll into this one's, for a poll in
    /// which it was not due.
    pub carry: fn(from: &Observations, to: &mut Observations),
}

impl<S: SourceType> CollectorSpec<S> {
    /// Whether the source's config turns it on.
    pub fn enabled(&self, config: &S::Config) -> bool {
        (self.section)(config).enabled()
    }

    /// Time between two runs for this source.
    pub fn interval(&self, config: &S::Config, poll_interval: Duration) -> Duration {
        (self.section)(config).interval().unwrap_or(poll_interval)
    }
}

/// PostgreSQL collectors, in poll order.
pub const POSTGRES: &[CollectorSpec<Postgres>] = &[
    super::activity::SPEC,
    super::statements::SPEC,
    // The data-loss guard: table statistics, then import reconciliation.
    super::tables::SPEC,
    super::imports::SPEC,
    // The server-health layer.
    super::server::SPEC,
    super::database_stats::SPEC,
    super::wraparound::SPEC,
    super::database_sizes::SPEC,
    // Replication, slots, archiver and WAL (issue 12).
    super::replication::SPEC,
    super::slots::SPEC,
    super::archiver::SPEC,
    super::wal_directory::SPEC,
    // The server-health layer: checkpointer, I/O, locks.
    super::checkpointer::SPEC,
    super::io::SPEC,
    super::locks::SPEC,
    // The schema guard (issue 14).
    super::migrations::SPEC,
];

/// PgBouncer collectors, in poll order.
pub const PGBOUNCER: &[CollectorSpec<Pgbouncer>] = &[
    super::pgbouncer::instance::SPEC,
    super::pgbouncer::pools::SPEC,
    super::pgbouncer::databases::SPEC,
    super::pgbouncer::stats::SPEC,
];

/// The enabled collectors of a target, in poll order.
pub fn build_enabled(target: &TargetConfig) -> Vec<Box<dyn Collector<Postgres>>> {
    POSTGRES
        .iter()
        .filter(|spec| spec.enabled(target))
        .map(|spec| (spec.build)(target))
        .collect()
}

/// The spec named `name` among a kind's collectors.
pub fn find<S: SourceType>(name: &str) -> Option<&'static CollectorSpec<S>> {
    S::COLLECTORS.iter().find(|spec| spec.name == name)
}

/// The README's collectors reference: a Markdown table of [`POSTGRES`] and [`PGBOUNCER`].
/// A test keeps the README's copy identical (`PGVIGIL_BLESS=1` rewrites it).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| collector | config table | reads | scope | default interval | on by default | PostgreSQL | grants | metrics |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let target = TargetConfig::new(
        "x",
        crate::config::ConnectionSpec::from_env(&Default::default()),
    );
    let bouncer = crate::config::PgbouncerConfig::new("x", target.connection.clone());
    for spec in POSTGRES {
        row(&mut out, spec, &target, "targets");
    }
    for spec in PGBOUNCER {
        row(&mut out, spec, &bouncer, "pgbouncers");
    }
    out
}

fn row<S: SourceType>(out: &mut String, spec: &CollectorSpec<S>, config: &S::Config, kind: &str) {
    let section = (spec.section)(config);
    let interval = match section.interval() {
        Some(d) => format!("`{}`", humantime::format_duration(d)),
        None => "`poll_interval`".to_owned(),
    };
    let grants = if spec.grants.is_empty() {
        "none".to_owned()
    } else {
        spec.grants
            .iter()
            .map(|g| format!("`{g}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let metrics = spec
        .metrics
        .iter()
        .map(|m| format!("`{}`", m.name))
        .collect::<Vec<_>>()
        .join(", ");
    out.push_str(&format!(
        "| `{}` | `[{kind}.{}]` | {} | {} | {interval} | {} | {} | {grants} | {metrics} |\n",
        spec.name,
        spec.table,
        spec.reads.replace('|', "\\|"),
        spec.scope.as_str(),
        if section.enabled() { "yes" } else { "no" },
        if S::KIND == crate::status::SourceKind::Postgres {
            spec.versions.describe()
        } else {
            "n/a".to_owned()
        },
    ));
}

#[cfg(test)]
mod tests;
