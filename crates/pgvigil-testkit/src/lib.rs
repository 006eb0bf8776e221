//! Test support for pgvigil: throwaway PostgreSQL clusters and small helpers for integration
//! tests.
//!
//! pgvigil's integration tests talk to a real PostgreSQL with `pg_stat_statements` preloaded (see
//! `DESIGN.md`, "Tests"). [`TestCluster::start`] gives each test its own server, or reuses the one
//! named by `PGVIGIL_TEST_DSN`; [`find_program`], [`free_port`] and [`wait_until`] help with the
//! other real programs (PgBouncer, Prometheus, Alertmanager) that tests run, and
//! [`TestPgbouncer`] puts a real PgBouncer in front of a cluster.
//!
//! This crate is used only as a dev-dependency and depends on `std` alone: it drives PostgreSQL
//! through its own command-line tools (`initdb`, `pg_ctl`, `psql`), never through a Rust client,
//! so the code under test keeps its client to itself.
//!
//! # Why a template cluster is copied
//!
//! `initdb` bootstraps the catalogs and runs every `CREATE` of the system schema, which takes
//! half a second to a few seconds, and nextest runs every test in its own process, so a fresh
//! `initdb` per test would dominate the suite's run time. Instead, the first test to need a
//! cluster runs `initdb` once per PostgreSQL build into a cache directory (`pgvigil-testkit-<uid>`
//! in `/dev/shm` if that is a tmpfs with 2 GiB free, else in `$TMPDIR`), appends the test
//! settings to its `postgresql.conf`, and renames it into place atomically. Every cluster after
//! that is a `cp -a` of the template plus a small per-cluster include file with its port: about
//! 0.15 s to a server accepting connections on tmpfs. A lock file keeps concurrent test
//! processes from building the template twice; if it is built twice anyway (a stale lock), the
//! atomic rename keeps exactly one.
//!
//! A private cluster is stopped and deleted when its `TestCluster` is dropped. For when that
//! never happens (a `TestCluster` in a `static` shared by a test binary's tests, a test killed
//! by nextest's timeout), each cluster has a watchdog process that does it within a second of
//! the test process exiting, and every cluster start also removes clusters whose test process
//! is gone.
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as in CI), the data directory
//! belongs to the `postgres` OS user and `initdb`, `pg_ctl` and the server run through
//! `runuser -u postgres --`; the directories above it are created `0755` so that user can reach
//! it. `psql` runs as the calling user, over TCP.
//!
//! # Environment
//!
//! | Variable | Effect |
//! |---|---|
//! | `PGVIGIL_TEST_DSN` | [`TestCluster::start`] reuses this server instead of starting one (see [`TestCluster::from_dsn`] for the supported forms) |
//! | `PGVIGIL_PG_BINDIR` | Directory with the PostgreSQL binaries; otherwise `pg_config --bindir` (if it holds `initdb`), else the highest `/usr/lib/postgresql/*/bin` |
//! | `PGVIGIL_TESTKIT_DIR` | Cache directory for the template and the clusters; default `pgvigil-testkit-<uid>` in `/dev/shm` (if a tmpfs with 2 GiB free: copying a thousand files is much faster there) or `$TMPDIR` |
//! | `PGVIGIL_TESTKIT_KEEP` | If set (non-empty), private clusters are stopped but their directory is kept, for post-mortems |
//!
//! # Example
//!
//! ```no_run
//! use pgvigil_testkit::TestCluster;
//!
//! let cluster = TestCluster::start();
//! let db = cluster.create_database("collector_smoke");
//! cluster.psql(&db, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
//! assert_eq!(cluster.psql(&db, "SELECT count(*) FROM t"), "1");
//! // Hand `cluster.dsn(&db)` or `cluster.url(&db)` to the code under test.
//! ```

mod builder;
mod cache;
mod cluster;
mod conninfo;
mod pgbouncer;
mod postmaster;
mod private;
mod programs;
mod replication;
mod util;
mod versions;

pub use builder::ClusterBuilder;
pub use cluster::{PSQL_APPLICATION_NAME, TestCluster};
pub use pgbouncer::TestPgbouncer;
pub use programs::find_program;
pub use util::{free_port, wait_until};
pub use versions::{SUPPORTED_VERSIONS, available_versions};
