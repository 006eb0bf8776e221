//! [`TestPgbouncer`]: a real PgBouncer (Debian's package) in front of a [`TestCluster`].

use std::fs;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestCluster;
use crate::programs::{RunAs, find_program, try_find_program};
use crate::util::{free_port, last_lines, salt, scrub_pg_env};

/// How long PgBouncer gets to accept connections after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A PgBouncer on a free port of 127.0.0.1 forwarding every database (`* = ...`) to a
/// [`TestCluster`], in session pooling mode with `auth_type = trust`; the cluster's superuser
/// is its only user and an admin of the console (database `pgbouncer`). Nothing else is
/// configured: in particular `ignore_startup_parameters` is left at its default, as in a
/// PgBouncer nobody tuned for monitoring.
///
/// PgBouncer refuses to run as root: when the tests do, its files belong to `postgres` and the
/// config says `user = postgres`, so it drops privileges after startup. Dropping a
/// `TestPgbouncer` stops the process and deletes its directory; a watchdog does the same if the
/// test process dies first.
#[derive(Debug)]
pub struct TestPgbouncer {
    port: u16,
    user: String,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl TestPgbouncer {
    /// Starts PgBouncer in front of `cluster` with `default_pool_size = pool_size`.
    ///
    /// # Panics
    ///
    /// If `pgbouncer` is not installed, or it does not accept connections within 10 s (the
    /// message has the tail of its log).
    pub fn start(cluster: &TestCluster, pool_size: u32) -> TestPgbouncer {
        TestPgbouncer::start_with(cluster, pool_size, "")
    }

    /// [`start`](Self::start) with `settings` (lines of `key = value`) appended to the
    /// `[pgbouncer]` section, where they override the defaults above them (e.g. `auth_type`,
    /// `client_tls_*`). Files they name must be readable by the `postgres` user when the tests
    /// run as root.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_with(cluster: &TestCluster, pool_size: u32, settings: &str) -> TestPgbouncer {
        let program = find_program("pgbouncer");
        let run_as = RunAs::detect();
        let dir = new_dir();
        let user = cluster.superuser();
        let mut last_log = String::new();
        // A free port can be taken between finding it and PgBouncer binding it: retry.
        for _ in 0..3 {
            let port = free_port();
            write_files(&dir, &user, port, cluster, pool_size, &run_as, settings);
            let mut cmd = Command::new(&program);
            scrub_pg_env(&mut cmd);
            cmd.arg(dir.join("pgbouncer.ini"))
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
            match wait_accepting(&mut child, port) {
                Ok(()) => {
                    let bouncer = TestPgbouncer {
                        port,
                        user,
                        dir,
                        child: Mutex::new(Some(child)),
                    };
                    bouncer.spawn_watchdog();
                    return bouncer;
                }
                Err(()) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
                    if !last_log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!(
            "PgBouncer did not accept connections within {START_TIMEOUT:?}; its log ends:\n{}",
            last_lines(&last_log, 30)
        );
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `key=value` DSN of database `dbname` through PgBouncer, as the cluster's superuser.
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname={dbname}",
            self.port, self.user
        )
    }

    /// DSN of the admin console (database `pgbouncer`).
    pub fn admin_dsn(&self) -> String {
        self.dsn("pgbouncer")
    }

    /// Stops PgBouncer (SIGTERM: immediate shutdown, clients are disconnected). Idempotent.
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    /// Kill PgBouncer and delete its directory once this test process is gone, in case `Drop`
    /// never runs (a test killed by nextest's timeout).
    fn spawn_watchdog(&self) {
        const SCRIPT: &str = r#"
pid=$1 bouncer=$2 dir=$3
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
kill -TERM "$bouncer" 2>/dev/null
[ -n "${PGVIGIL_TESTKIT_KEEP:-}" ] || rm -rf "$dir"
"#;
        let Some(setsid) = try_find_program("setsid") else {
            return;
        };
        let Some(bouncer) = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Child::id)
        else {
            return;
        };
        let spawned = Command::new(setsid)
            .args(["sh", "-c", SCRIPT, "pgvigil-testkit-pgbouncer-watchdog"])
            .arg(process::id().to_string())
            .arg(bouncer.to_string())
            .arg(&self.dir)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!("pgvigil-testkit: cannot start the PgBouncer watchdog: {e}");
        }
    }
}

impl Drop for TestPgbouncer {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("PGVIGIL_TESTKIT_KEEP").is_none_or(|v| v.is_empty()) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh directory for one PgBouncer, reachable by the `postgres` user.
fn new_dir() -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pgvigil-pgbouncer-{}-{}-{}",
        process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        salt() % 1_000_000
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", dir.display()));
    dir
}

fn write_files(
    dir: &Path,
    user: &str,
    port: u16,
    cluster: &TestCluster,
    pool_size: u32,
    run_as: &RunAs,
    settings: &str,
) {
    let drop_to = if run_as.is_postgres() {
        "user = postgres\n"
    } else {
        ""
    };
    let ini = format!(
        "[databases]\n\
         * = host={host} port={backend}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = {localhost}\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {auth}\n\
         admin_users = {user}\n\
         pool_mode = session\n\
         default_pool_size = {pool_size}\n\
         logfile = {log}\n\
         pidfile = {pid}\n\
         {drop_to}{settings}\n",
        host = cluster.host(),
        backend = cluster.port(),
        localhost = Ipv4Addr::LOCALHOST,
        auth = dir.join("users.txt").display(),
        log = dir.join("pgbouncer.log").display(),
        pid = dir.join("pgbouncer.pid").display(),
    );
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    };
    write("pgbouncer.ini", &ini);
    write("users.txt", &format!("\"{user}\" \"\"\n"));
    let _ = fs::remove_file(dir.join("pgbouncer.log"));
    let _ = fs::remove_file(dir.join("pgbouncer.pid"));
    run_as.chown(dir);
}

/// Wait until PgBouncer accepts TCP connections; `Err` if it exited or took too long.
fn wait_accepting(child: &mut Child, port: u16) -> Result<(), ()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return Err(());
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(())
}
