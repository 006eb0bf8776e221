//! [`TestCluster`]: the PostgreSQL server a test talks to, private or shared.

use std::env;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{self, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use crate::builder::ClusterBuilder;
use crate::conninfo::ConnInfo;
use crate::private::{ClusterSpec, PrivateCluster};
use crate::replication::StandbyOf;
use crate::util::{base36, salt, scrub_pg_env};
use crate::versions::{default_bindir, default_bindir_result, parse_major, psql_for};

/// Environment variable naming a server to reuse instead of starting one.
const TEST_DSN_VAR: &str = "PGVIGIL_TEST_DSN";

/// `application_name` of the `psql` sessions this crate runs, so tests can tell them apart from
/// the daemon's connections in `pg_stat_activity`.
pub const PSQL_APPLICATION_NAME: &str = "pgvigil-testkit";

/// A throwaway PostgreSQL cluster for one test (or the one named by `PGVIGIL_TEST_DSN`).
///
/// A *private* cluster ([`start_private`](Self::start_private),
/// [`start_version`](Self::start_version), [`builder`](Self::builder)) is a copy of a cached
/// template (see the crate docs) running on a free port on 127.0.0.1 with `pg_stat_statements`
/// preloaded, trust authentication and superuser `postgres`; dropping it stops the server and
/// deletes its directory. A *standby* ([`start_standby`](Self::start_standby)) is a private
/// cluster streaming from another. A *shared* one ([`from_dsn`](Self::from_dsn)) is an existing
/// server: tests must work in databases from [`create_database`](Self::create_database), which
/// are dropped again when the `TestCluster` is.
///
/// `TestCluster` is `Send + Sync`; share it between tasks with an `Arc` or a reference.
#[derive(Debug)]
pub struct TestCluster {
    pub(crate) conn: ConnInfo,
    bindir: PathBuf,
    /// The `psql` run against this server (the build's own, or Debian's for a build without).
    psql: PathBuf,
    pub(crate) private: Option<PrivateCluster>,
    /// Set for a standby: what it streams from.
    pub(crate) standby: Option<StandbyOf>,
    /// Databases created on a shared server, to drop on drop.
    created: Mutex<Vec<String>>,
}

impl TestCluster {
    /// Starts a private cluster, unless `PGVIGIL_TEST_DSN` is set (and not empty), in which case
    /// that server is reused (see [`from_dsn`](Self::from_dsn)).
    ///
    /// # Panics
    ///
    /// If the cluster cannot be started or the server reached, with the reason (and the tail of
    /// the server log for a start failure).
    pub fn start() -> TestCluster {
        match env::var(TEST_DSN_VAR) {
            Ok(dsn) if !dsn.trim().is_empty() => TestCluster::from_dsn(&dsn),
            _ => TestCluster::start_private(),
        }
    }

    /// Always starts a private cluster of the default PostgreSQL version (see the crate docs:
    /// `PGVIGIL_TEST_PG_VERSION`, else Debian's), for tests that stop or restart the server or
    /// change its configuration.
    ///
    /// # Panics
    ///
    /// If the PostgreSQL binaries are missing or the server does not start; the message
    /// includes the last 30 lines of the server log.
    pub fn start_private() -> TestCluster {
        TestCluster::from_private(PrivateCluster::create(
            default_bindir(),
            ClusterSpec::default(),
        ))
    }

    /// Starts a private cluster of PostgreSQL major version `major` (e.g. `13`), whatever
    /// `PGVIGIL_TEST_PG_VERSION` says. Short for `TestCluster::builder().version(major).start()`.
    ///
    /// # Panics
    ///
    /// If that version is not installed, with a message saying where it was looked for and to
    /// run `scripts/install-test-deps.sh` (which installs every version of
    /// [`SUPPORTED_VERSIONS`](crate::SUPPORTED_VERSIONS)); or if the server does not start.
    pub fn start_version(major: u32) -> TestCluster {
        TestCluster::builder().version(major).start()
    }

    /// A [`ClusterBuilder`] for a private cluster with a chosen version, extra
    /// `postgresql.conf` settings, `pg_hba.conf` lines or TLS files.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Wraps a started private cluster.
    pub(crate) fn from_private(private: PrivateCluster) -> TestCluster {
        TestCluster {
            conn: ConnInfo::new("127.0.0.1", private.port(), "postgres"),
            psql: psql_for(private.bindir()),
            bindir: private.bindir().to_path_buf(),
            private: Some(private),
            standby: None,
            created: Mutex::new(Vec::new()),
        }
    }

    /// Uses the existing server named by `dsn` (what [`start`](Self::start) does with
    /// `PGVIGIL_TEST_DSN`).
    ///
    /// `dsn` is a libpq `key=value` string (`host=db port=5433 user=postgres password=x`) or a
    /// `postgres://user:password@host:port/dbname?sslmode=disable` URL. `host` (a name, an IP
    /// address or a Unix socket directory), `port`, `user`, `password` and `dbname` are
    /// understood; other keywords are passed on unchanged. Missing values default to
    /// `localhost`, `5432`, `$PGUSER` (else `$USER`, else `postgres`). `dbname` names the
    /// maintenance database `CREATE DATABASE` runs in (default `postgres`). Not supported:
    /// several hosts, `service=`.
    ///
    /// The server must have `pg_stat_statements` in `shared_preload_libraries`, must be
    /// PostgreSQL 13 or later, and the user must be allowed to create databases.
    ///
    /// # Panics
    ///
    /// If `dsn` cannot be parsed, the server cannot be reached, or it does not preload
    /// `pg_stat_statements`.
    pub fn from_dsn(dsn: &str) -> TestCluster {
        let default_user = ["PGUSER", "USER"]
            .iter()
            .find_map(|var| env::var(var).ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "postgres".to_owned());
        let conn = ConnInfo::parse(dsn, &default_user)
            .unwrap_or_else(|e| panic!("cannot parse the test DSN {dsn:?}: {e}"));
        let psql = match default_bindir_result() {
            Ok(dir) => psql_for(dir),
            Err(_) => crate::programs::find_program("psql"),
        };
        let bindir = psql
            .parent()
            .expect("a program path has a parent")
            .to_path_buf();
        let cluster = TestCluster {
            conn,
            bindir,
            psql,
            private: None,
            standby: None,
            created: Mutex::new(Vec::new()),
        };
        let preload = cluster
            .try_psql(cluster.maintenance_db(), "SHOW shared_preload_libraries")
            .unwrap_or_else(|e| panic!("cannot reach the test server {dsn:?}: {e}"));
        assert!(
            preload.contains("pg_stat_statements"),
            "the test server {dsn:?} must preload pg_stat_statements (shared_preload_libraries \
             is {preload:?})"
        );
        cluster
    }

    /// Host to connect to: `127.0.0.1` for a private cluster.
    pub fn host(&self) -> String {
        self.conn.host.clone()
    }

    /// TCP port of the server.
    pub fn port(&self) -> u16 {
        self.conn.port
    }

    /// The user tests connect as: `postgres` for a private cluster, the DSN's user otherwise.
    pub fn superuser(&self) -> String {
        self.conn.user.clone()
    }

    /// `key=value` connection string for database `dbname` as [`superuser`](Self::superuser),
    /// e.g. `host=127.0.0.1 port=54021 user=postgres dbname=postgres`. For a shared server it
    /// also carries the DSN's password and other keywords.
    pub fn dsn(&self, dbname: &str) -> String {
        self.conn.to_dsn(dbname)
    }

    /// `postgres://` URL form of [`dsn`](Self::dsn), e.g.
    /// `postgres://postgres@127.0.0.1:54021/postgres`.
    pub fn url(&self, dbname: &str) -> String {
        self.conn.to_url(dbname)
    }

    /// Creates a database with a unique name derived from `prefix` and returns the name, then
    /// runs `CREATE EXTENSION IF NOT EXISTS pg_stat_statements` in it.
    ///
    /// The name is `prefix` reduced to `[a-z0-9_]` (at most 24 characters) plus the process id,
    /// a counter and a per-run salt, so tests sharing `PGVIGIL_TEST_DSN` never collide.
    ///
    /// # Panics
    ///
    /// If a statement fails.
    pub fn create_database(&self, prefix: &str) -> String {
        self.create_database_with(prefix, true)
    }

    /// Like [`create_database`](Self::create_database) but without any extension: the database
    /// is a copy of `template0`, so it lacks `pg_stat_statements` even on a shared server whose
    /// `template1` has it.
    pub fn create_database_without_extensions(&self, prefix: &str) -> String {
        self.create_database_with(prefix, false)
    }

    fn create_database_with(&self, prefix: &str, extensions: bool) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = unique_database_name(
            prefix,
            process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            salt(),
        );
        let template = if extensions {
            ""
        } else {
            " TEMPLATE template0"
        };
        // FILE_COPY (PostgreSQL 15+) is about twice as fast as the default WAL_LOG for a small
        // template; it is not available before 15, hence the \if.
        let mut sql = format!(
            "SELECT current_setting('server_version_num')::int >= 150000 AS file_copy \\gset\n\
             \\if :file_copy\n\
             CREATE DATABASE \"{name}\"{template} STRATEGY FILE_COPY;\n\
             \\else\n\
             CREATE DATABASE \"{name}\"{template};\n\
             \\endif\n"
        );
        if extensions {
            // Same psql run: \connect reuses the connection parameters with the new database.
            let _ = write!(
                sql,
                "\\connect {name}\nCREATE EXTENSION IF NOT EXISTS pg_stat_statements;\n"
            );
        }
        if self.private.is_none() {
            self.created
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(name.clone());
        }
        self.psql(self.maintenance_db(), &sql);
        name
    }

    /// Runs `sql` (one or more statements, or psql meta-commands) in database `dbname` with
    /// [`psql_program`](Self::psql_program) (`-X -v ON_ERROR_STOP=1 -qAt`, script on stdin) and
    /// returns its stdout without the trailing newline: rows one per line, columns separated
    /// by `|`.
    ///
    /// On a private cluster the session connects to 127.0.0.1 without TLS (`sslmode=disable`),
    /// whatever `ssl` and `pg_hba.conf` lines a test sets up for the code under test.
    ///
    /// # Panics
    ///
    /// If psql fails, with its stderr.
    pub fn psql(&self, dbname: &str, sql: &str) -> String {
        self.try_psql(dbname, sql)
            .unwrap_or_else(|e| panic!("psql on database {dbname:?} failed: {e}\nSQL:\n{sql}"))
    }

    /// Like [`psql`](Self::psql), but returns psql's exit status and stderr as `Err` instead of
    /// panicking; for tests that expect a statement (or the connection) to fail.
    pub fn try_psql(&self, dbname: &str, sql: &str) -> Result<String, String> {
        self.try_psql_at(&self.conn, dbname, sql)
    }

    /// [`try_psql`](Self::try_psql) against the server `conn` (for a standby: its primary),
    /// with this cluster's `psql` and environment.
    pub(crate) fn try_psql_at(
        &self,
        conn: &ConnInfo,
        dbname: &str,
        sql: &str,
    ) -> Result<String, String> {
        let mut conninfo = conn.to_dsn(dbname);
        if !conn.options.iter().any(|(k, _)| k == "application_name") {
            let _ = write!(conninfo, " application_name={PSQL_APPLICATION_NAME}");
        }
        let mut cmd = Command::new(&self.psql);
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-d"])
            .arg(&conninfo)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.private.is_some() {
            scrub_pg_env(&mut cmd);
            // Our own sessions never depend on the TLS set-up under test (a `hostssl ... cert`
            // line would turn away a psql that tried TLS without a client certificate).
            cmd.env("PGSSLMODE", "disable");
        }
        if self.private.is_some() || env::var_os("PGCONNECT_TIMEOUT").is_none() {
            cmd.env("PGCONNECT_TIMEOUT", "10");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.psql.display()))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let script = sql.to_owned();
        // Written from another thread so a large script cannot deadlock against psql's output.
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(script.as_bytes());
        });
        let output = child
            .wait_with_output()
            .map_err(|e| format!("waiting for psql: {e}"))?;
        let _ = writer.join();
        if output.status.success() {
            let stdout = String::from_utf8_lossy(&output.stdout);
            Ok(stdout.trim_end_matches('\n').to_owned())
        } else {
            Err(format!(
                "psql exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            ))
        }
    }

    /// `server_version_num` of the server, e.g. `150020`.
    pub fn server_version_num(&self) -> u32 {
        let v = self.psql(self.maintenance_db(), "SHOW server_version_num");
        v.parse()
            .unwrap_or_else(|_| panic!("unexpected server_version_num {v:?}"))
    }

    /// The server's major version, e.g. `15`: known without a query for a private cluster,
    /// asked of the server otherwise.
    pub fn major_version(&self) -> u32 {
        self.private
            .as_ref()
            .and_then(|p| parse_major(p.version()))
            .unwrap_or_else(|| self.server_version_num() / 10_000)
    }

    /// Makes the server re-read its configuration files (`pg_reload_conf()`) and waits until
    /// new sessions see the result, for tests that edit `postgresql.conf`, `pg_hba.conf` or
    /// run `ALTER SYSTEM`: it returns once a new session's `pg_conf_load_time()` is later than
    /// before the reload.
    ///
    /// # Panics
    ///
    /// If a statement fails or the reload is not seen within 30 s.
    pub fn reload(&self) {
        let db = self.maintenance_db();
        let before = self.psql(db, "SELECT pg_conf_load_time()");
        self.psql(db, "SELECT pg_reload_conf()");
        let check = format!("SELECT pg_conf_load_time() > '{before}'::timestamptz");
        crate::wait_until(
            "the server to reload its configuration",
            std::time::Duration::from_secs(30),
            || (self.psql(db, &check) == "t").then_some(()),
        );
    }

    /// Stops the server (`pg_ctl stop -m fast`) and waits until it is down.
    ///
    /// # Panics
    ///
    /// If the cluster is not private, is not running, or does not stop within 60 s.
    pub fn stop(&self) {
        self.private_cluster("stop").stop("fast");
    }

    /// Starts the server again on the same port and data directory, stopping it first
    /// (`-m fast`) if it is running, and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// If the cluster is not private, or the server does not start (e.g. another process took
    /// the port meanwhile), with the tail of the server log.
    pub fn restart(&self) {
        let private = self.private_cluster("restart");
        if private.is_running() {
            private.stop("fast");
        }
        private.start();
    }

    /// Whether the server is running. Always `true` for a shared server.
    pub fn is_running(&self) -> bool {
        self.private.as_ref().is_none_or(PrivateCluster::is_running)
    }

    /// Whether this is a private cluster (so [`stop`](Self::stop) and
    /// [`restart`](Self::restart) are allowed).
    pub fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// Directory of the server's PostgreSQL build (`initdb`, `pg_ctl`, `postgres`, and for
    /// Debian's builds `psql` and the other client programs; the npm builds have none) for a
    /// private cluster; the directory of [`psql_program`](Self::psql_program) for a shared one.
    pub fn bindir(&self) -> PathBuf {
        self.bindir.clone()
    }

    /// The `psql` [`psql`](Self::psql) runs: the build's own, else Debian's (psql works
    /// against servers of other major versions).
    pub fn psql_program(&self) -> PathBuf {
        self.psql.clone()
    }

    /// Data directory of a private cluster; `None` for a shared server.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.private.as_ref().map(|p| p.data_dir().to_path_buf())
    }

    /// Directory of the server's Unix socket (the data directory) for a private cluster, unless
    /// that path is too long for a socket, in which case the server listens on TCP only.
    pub fn socket_dir(&self) -> Option<PathBuf> {
        self.private
            .as_ref()
            .and_then(|p| p.socket_dir().map(PathBuf::from))
    }

    /// Path of the server log of a private cluster (in the data directory).
    pub fn log_file(&self) -> Option<PathBuf> {
        self.private.as_ref().map(PrivateCluster::log_file)
    }

    /// Contents of the server log of a private cluster; empty for a shared server.
    pub fn server_log(&self) -> String {
        self.log_file()
            .and_then(|path| std::fs::read(path).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    pub(crate) fn private_cluster(&self, action: &str) -> &PrivateCluster {
        self.private.as_ref().unwrap_or_else(|| {
            panic!(
                "TestCluster::{action} needs a private cluster (TestCluster::start_private), \
                 not the shared server from {TEST_DSN_VAR}"
            )
        })
    }

    /// Database to run `CREATE DATABASE` in.
    pub(crate) fn maintenance_db(&self) -> &str {
        self.conn.dbname.as_deref().unwrap_or("postgres")
    }
}

impl Drop for TestCluster {
    /// A private cluster is stopped (`-m immediate`) and its directory removed; on a shared
    /// server the databases this value created are dropped. Never panics.
    fn drop(&mut self) {
        let created = std::mem::take(self.created.get_mut().unwrap_or_else(|e| e.into_inner()));
        for name in created {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = self.try_psql(self.maintenance_db(), &sql) {
                eprintln!("pgvigil-testkit: cannot drop test database {name}: {e}");
            }
        }
        // `self.private`, if any, stops and removes the cluster in its own Drop.
    }
}

/// `<prefix>_<pid>_<seq>_<salt>`, with `prefix` reduced to at most 24 characters of
/// `[a-z0-9_]` and starting with a letter or underscore; always a valid unquoted identifier of
/// at most 63 bytes.
fn unique_database_name(prefix: &str, pid: u32, seq: u64, salt: u64) -> String {
    let mut name: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        name.insert_str(0, "db_");
    }
    // 36^5 values: enough to tell runs apart, short enough to keep names readable.
    let _ = write!(name, "_{pid}_{seq}_{}", base36(salt % 60_466_176));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        assert_eq!(
            unique_database_name("Slow-Queries", 42, 0, 35),
            "slow_queries_42_0_z"
        );
        assert_eq!(unique_database_name("", 1, 2, 0), "db__1_2_0");
        assert_eq!(unique_database_name("9lives", 1, 2, 0), "db_9lives_1_2_0");
        assert_eq!(unique_database_name("é", 1, 2, 0), "__1_2_0");
        let long = unique_database_name(&"x".repeat(100), 4_194_304, u64::MAX, u64::MAX);
        assert!(long.len() <= 63, "{long} is {} bytes", long.len());
        assert!(long.starts_with(&"x".repeat(24)));
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TestCluster>();
    }
}
