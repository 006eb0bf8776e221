//! The size of the WAL directory (`pg_ls_waldir()`), on a slow schedule of its own.
//!
//! # The poll
//!
//! One statement sums `pg_ls_waldir()`: the server reads the `pg_wal` directory and `stat`s
//! each file in it, so its cost grows with the number of segments (a few hundred
//! microseconds for a few dozen, more when a slot or a failing archiver makes WAL pile up —
//! which is when the number matters). That is why it runs every 5 minutes by default
//! (`[targets.wal_directory] interval`), not every poll; the WAL a slot retains is exported
//! every poll by the slots collector without touching the file system.
//!
//! No lock is taken. The same on PostgreSQL 13 to 18; `pg_monitor` may execute it.

use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::metrics::{self, Snapshot};

const WAL_DIRECTORY_SQL: &str =
    "SELECT count(*)::float8, coalesce(sum(size), 0)::float8 FROM pg_ls_waldir()";

/// The WAL directory collector.
#[derive(Debug, Default)]
pub struct WalDirectory;

/// The series of one reading: `files` files of `bytes` bytes in all.
fn summarise(files: f64, bytes: f64) -> Snapshot {
    let mut snap = Snapshot::default();
    snap.set(&metrics::WAL_DIRECTORY_FILES, files);
    snap.set(&metrics::WAL_DIRECTORY_BYTES, bytes);
    snap
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "wal_directory",
    table: "wal_directory",
    reads: "pg_ls_waldir(): files and bytes in pg_wal (stats every file, hence its own slow schedule)",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::WAL_DIRECTORY_METRICS,
    section: |t| &t.wal_directory,
    build: |_| Box::new(WalDirectory),
    carry: |_, _| {},
};

impl ReportCollector for WalDirectory {
    const NAME: &'static str = SPEC.name;
    type Report = ();

    async fn poll(&mut self, ctx: &PollContext<'_>) -> Result<(Snapshot, ()), CollectError> {
        let row = ctx.query_one(WAL_DIRECTORY_SQL, &[]).await?;
        Ok((summarise(row.try_get(0)?, row.try_get(1)?), ()))
    }

    /// Metrics only: nothing for the rules.
    fn store((): (), _ctx: &PollContext<'_>, _observations: &mut Observations) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_bytes() {
        let snap = summarise(3.0, 48.0 * 1024.0 * 1024.0);
        assert_eq!(snap.get(&metrics::WAL_DIRECTORY_FILES)[0].value, 3.0);
        assert_eq!(
            snap.get(&metrics::WAL_DIRECTORY_BYTES)[0].value,
            50_331_648.0
        );
    }
}
