//! Private clusters: the template cache, copying and starting a cluster, stopping it, and
//! cleaning up after test processes that died.
//!
//! Layout of the cache directory (`PGVIGIL_TESTKIT_DIR`, else `pgvigil-testkit-<uid>` in
//! `/dev/shm` or `$TMPDIR`, see [`default_cache_parent`]):
//!
//! ```text
//! template-<version>-<key>/        initdb output plus TEST_SETTINGS; never started
//! template-<version>-<key>.lock    held while one process builds that template
//! .building-<pid>-<salt>/          a template being built (renamed into place when done)
//! clusters/<pid>-<seq>-<salt>/data one running test cluster, owned by test process <pid>
//! ```

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fs::{self, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{self, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::programs::{RunAs, effective_uid, parse_postgres_version, pg_bindir, try_find_program};
use crate::util::{base36, free_port, last_lines, pid_alive, run, salt};

/// Bump when [`TEST_SETTINGS`] or the `initdb` options change in a way the cache key would
/// not notice.
const TEMPLATE_FORMAT: u32 = 1;

/// Appended to the template's `postgresql.conf`.
const TEST_SETTINGS: &str = "
# Added by pgvigil-testkit (crates/pgvigil-testkit/src/private.rs).
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = 'all'
track_io_timing = on
# Durability is worthless for a throwaway cluster; these make it much faster.
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 60
# The server's stderr goes to server.log in the data directory (pg_ctl -l).
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
lc_messages = 'C'
# Port and socket directory differ per copy of this template.
include_if_exists = 'pgvigil-testkit.conf'
";

/// The per-cluster settings file included by [`TEST_SETTINGS`].
const CLUSTER_CONF: &str = "pgvigil-testkit.conf";

/// The server log, in the data directory.
const LOG_FILE: &str = "server.log";

/// How often a cluster start is tried when the port turns out to be taken.
const START_ATTEMPTS: u32 = 3;

/// How long a server may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a starting or stopping server is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long to wait for another process building the template.
const TEMPLATE_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// A template lock older than this is considered abandoned (`initdb` takes seconds).
const STALE_LOCK_AGE: Duration = Duration::from_secs(120);

/// Longest Unix socket path (`sun_path` is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Free space `/dev/shm` needs for the cache to go there (the template is about 40 MB and
/// each cluster as much plus what its test writes; PostgreSQL's own shared memory lives there
/// too).
const MIN_SHM_FREE: u64 = 2 << 30;

/// Lines of the server log shown when it fails to start.
const LOG_TAIL_LINES: usize = 30;

/// A cluster this process created from the template; stopped and removed on drop.
#[derive(Debug)]
pub(crate) struct PrivateCluster {
    bindir: PathBuf,
    run_as: RunAs,
    /// Directory holding `data`; removed on drop.
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    socket_dir: Option<PathBuf>,
}

impl PrivateCluster {
    /// Copies the template (building it first if needed) and starts a server on a free port.
    pub(crate) fn create() -> PrivateCluster {
        let bindir = pg_bindir();
        let run_as = RunAs::detect();
        let root = cache_root(&run_as);
        reap_dead_clusters(&root, &bindir, &run_as);
        let template = ensure_template(&root, &bindir, &run_as);
        let dir = new_cluster_dir(&root, &run_as);
        let data = dir.join("data");
        // From here on `Drop` cleans up if anything panics.
        let mut cluster = PrivateCluster {
            bindir,
            run_as,
            socket_dir: socket_dir_for(&data),
            dir,
            data,
            port: 0,
        };
        cluster.spawn_watchdog();
        run(
            Command::new("cp")
                .arg("-a")
                .arg(&template)
                .arg(&cluster.data),
            "copying the template cluster",
        );
        for attempt in 1..=START_ATTEMPTS {
            cluster.port = free_port();
            cluster.write_cluster_conf();
            if attempt == 1 {
                // cp -a kept the template's owner; this covers the file we just wrote.
                cluster.run_as.chown(&cluster.data);
            }
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(failure) if failure.port_taken && attempt < START_ATTEMPTS => continue,
                Err(failure) => panic!("{}", failure.message),
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    /// Starts a small shell process that stops the server and removes the cluster directory
    /// once this test process has exited, whether or not `Drop` ran.
    ///
    /// `Drop` does not run for a `TestCluster` in a `static` (a `OnceLock` shared by the tests
    /// of one binary), nor for a test nextest kills on timeout; without the watchdog those
    /// servers would run until the next test's [`reap_dead_clusters`]. It runs in its own
    /// session (`setsid`), so a signal to the test's process group does not reach it, and with
    /// null stdio, so nextest does not see it as a leaked handle. Best effort: without
    /// `setsid`, the reaper remains.
    fn spawn_watchdog(&self) {
        const SCRIPT: &str = r#"
pid=$1 dir=$2; shift 2
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
"$@" >/dev/null 2>&1
[ -n "${PGVIGIL_TESTKIT_KEEP:-}" ] || rm -rf "$dir"
"#;
        let Some(setsid) = try_find_program("setsid") else {
            return;
        };
        let mut stop = self.run_as.argv(&self.bindir.join("pg_ctl"));
        stop.extend(
            ["stop", "-s", "-w", "-t", "30", "-m", "immediate", "-D"].map(std::ffi::OsString::from),
        );
        stop.push(self.data.clone().into_os_string());
        let spawned = Command::new(setsid)
            .args(["sh", "-c", SCRIPT, "pgvigil-testkit-watchdog"])
            .arg(process::id().to_string())
            .arg(&self.dir)
            .args(stop)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!("pgvigil-testkit: cannot start the cluster watchdog: {e}");
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn bindir(&self) -> &Path {
        &self.bindir
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data
    }

    pub(crate) fn socket_dir(&self) -> Option<&Path> {
        self.socket_dir.as_deref()
    }

    pub(crate) fn log_file(&self) -> PathBuf {
        self.data.join(LOG_FILE)
    }

    /// Starts the server on its port, panicking with the log on failure.
    pub(crate) fn start(&self) {
        if let Err(failure) = self.try_start() {
            panic!("{}", failure.message);
        }
    }

    /// Stops the server with the given `pg_ctl` shutdown mode (`fast`, `immediate`, `smart`)
    /// and waits until it is gone.
    ///
    /// # Panics
    ///
    /// If it is not running, or does not stop in time.
    pub(crate) fn stop(&self, mode: &str) {
        assert!(
            self.is_running(),
            "cannot stop the test cluster in {}: it is not running",
            self.data.display()
        );
        if let Err(e) = stop_server(&self.run_as, &self.bindir, &self.data, mode, STOP_TIMEOUT) {
            panic!("{e}");
        }
    }

    /// Whether the server is running: what `pg_ctl status` checks, except that a zombie
    /// postmaster (killed, not yet reaped) counts as stopped.
    pub(crate) fn is_running(&self) -> bool {
        live_postmaster(&self.data).is_some()
    }

    fn write_cluster_conf(&self) {
        let socket_dir = self
            .socket_dir
            .as_deref()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let conf = format!(
            "# Written by pgvigil-testkit for this cluster.\nport = {}\nunix_socket_directories = {}\n",
            self.port,
            conf_string(&socket_dir)
        );
        let path = self.data.join(CLUSTER_CONF);
        fs::write(&path, conf).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Starts the server and waits until it accepts connections.
    ///
    /// `pg_ctl start -w` polls every 100 ms, while a cluster is ready in about 30, so we start
    /// with `-W` and watch `postmaster.pid` (the server writes `ready` into it, which is what
    /// pg_ctl checks too) and the log every 10 ms.
    fn try_start(&self) -> Result<(), StartFailure> {
        let log = self.log_file();
        let log_offset = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.run_as.command(&self.bindir.join("pg_ctl"));
        cmd.args(["start", "-s", "-W", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&log);
        let failure = |why: String| {
            let log_text = read_from(&log, log_offset);
            StartFailure {
                port_taken: port_taken(&log_text),
                message: format!(
                    "PostgreSQL test cluster in {} failed to start on port {}: {why}\n\
                     last {LOG_TAIL_LINES} lines of {}:\n{}",
                    self.data.display(),
                    self.port,
                    log.display(),
                    last_lines(&log_text, LOG_TAIL_LINES),
                ),
            }
        };
        let pid_file = self.data.join("postmaster.pid");
        if live_postmaster(&self.data).is_none() {
            self.remove_stale_lock_files();
        }
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        if !output.status.success() {
            return Err(failure(format!(
                "{cmd:?} exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            )));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen_pid_file = false;
        loop {
            let contents = fs::read_to_string(&pid_file).ok();
            seen_pid_file |= contents.is_some();
            // The log only matters before postmaster.pid appears; don't re-read it needlessly.
            let log_text = match contents {
                None => read_from(&log, log_offset),
                Some(_) => String::new(),
            };
            match startup_state(contents.as_deref(), seen_pid_file, &log_text, pid_alive) {
                Startup::Ready => return Ok(()),
                Startup::Failed => {
                    // Let the postmaster finish exiting, so the port is free for a retry.
                    let gone_by = Instant::now() + Duration::from_secs(10);
                    while live_postmaster(&self.data).is_some() && Instant::now() < gone_by {
                        thread::sleep(POLL_INTERVAL);
                    }
                    return Err(failure("the server exited".to_owned()));
                }
                Startup::Starting if Instant::now() >= deadline => {
                    return Err(failure(format!("not ready after {START_TIMEOUT:?}")));
                }
                Startup::Starting => thread::sleep(POLL_INTERVAL),
            }
        }
    }

    /// Removes the lock files of a server that was killed (say, by a test simulating a crash).
    ///
    /// The server would remove them itself, except while the killed postmaster is a zombie,
    /// which it takes for alive; and a left-over `postmaster.pid` would look to [`try_start`]
    /// like a server that died while starting.
    ///
    /// [`try_start`]: PrivateCluster::try_start
    fn remove_stale_lock_files(&self) {
        let pid_file = self.data.join("postmaster.pid");
        // The killed postmaster's children notice and exit within moments; a new server must
        // not share the data directory with them. They are gone when nothing is attached to
        // the old shared memory segment any more (what the server checks, with the key we are
        // about to delete).
        let shmid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|contents| parse_shmid(&contents));
        if let Some(shmid) = shmid {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while shm_attachments(shmid).is_some_and(|n| n > 0) && Instant::now() < deadline {
                thread::sleep(POLL_INTERVAL);
            }
        }
        let _ = fs::remove_file(&pid_file);
        if let Some(socket_dir) = &self.socket_dir {
            let socket_locks = fs::read_dir(socket_dir).into_iter().flatten().flatten();
            for entry in socket_locks {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".s.PGSQL.") && name.ends_with(".lock") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

impl Drop for PrivateCluster {
    /// Stops the server (`-m immediate`: nothing in it is worth a checkpoint) and removes the
    /// cluster directory, unless `PGVIGIL_TESTKIT_KEEP` is set. Never panics.
    fn drop(&mut self) {
        if self.is_running() {
            let stopped = stop_server(
                &self.run_as,
                &self.bindir,
                &self.data,
                "immediate",
                STOP_TIMEOUT,
            );
            if let Err(e) = stopped {
                eprintln!("pgvigil-testkit: {e}");
            }
        }
        if env::var_os("PGVIGIL_TESTKIT_KEEP").is_some_and(|v| !v.is_empty()) {
            eprintln!(
                "pgvigil-testkit: PGVIGIL_TESTKIT_KEEP is set, keeping {}",
                self.dir.display()
            );
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("pgvigil-testkit: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// The pid in `<data>/postmaster.pid`, if that process is alive (and not a zombie).
fn live_postmaster(data: &Path) -> Option<u32> {
    let contents = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    parse_pid_file(&contents)
        .map(|(pid, _)| pid)
        .filter(|pid| pid_alive(*pid))
}

/// `pg_ctl stop -W -m <mode>`, then waits until the postmaster is gone.
///
/// We poll rather than let pg_ctl wait (`-w`): pg_ctl looks every 100 ms, an immediate stop
/// takes about 10; and pg_ctl would wait out its whole timeout for a zombie postmaster.
fn stop_server(
    run_as: &RunAs,
    bindir: &Path,
    data: &Path,
    mode: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut cmd = run_as.command(&bindir.join("pg_ctl"));
    cmd.args(["stop", "-s", "-W", "-m", mode, "-D"]).arg(data);
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    // pg_ctl fails if the server exited meanwhile; only a live server is an error.
    if !output.status.success() && live_postmaster(data).is_some() {
        return Err(format!(
            "{cmd:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    let deadline = Instant::now() + timeout;
    while live_postmaster(data).is_some() {
        if Instant::now() >= deadline {
            return Err(format!(
                "the test cluster in {} did not stop within {timeout:?}",
                data.display()
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

/// Why `pg_ctl start` failed.
#[derive(Debug)]
struct StartFailure {
    /// The port was taken between [`free_port`] and the server binding it; worth a retry.
    port_taken: bool,
    /// Panic message with pg_ctl's stderr and the log tail.
    message: String,
}

/// The postmaster's pid from the contents of `postmaster.pid`, and whether it says the server is
/// ready for connections (line 8 is the status since PostgreSQL 10: `starting`, `ready`,
/// `stopping`, `standby`). `None` while the file is still being written.
fn parse_pid_file(contents: &str) -> Option<(u32, bool)> {
    let mut lines = contents.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let ready = lines.nth(6).is_some_and(|status| status.trim() == "ready");
    Some((pid, ready))
}

/// The System V shared memory id from `postmaster.pid` (line 7: `<key> <shmid>`).
fn parse_shmid(contents: &str) -> Option<u32> {
    contents
        .lines()
        .nth(6)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// How many processes are attached to System V shared memory segment `shmid`, from
/// `/proc/sysvipc/shm`; `None` if the segment is gone (or that file is unreadable).
fn shm_attachments(shmid: u32) -> Option<u64> {
    let table = fs::read_to_string("/proc/sysvipc/shm").ok()?;
    parse_shm_attachments(&table, shmid)
}

/// Finds `shmid` in the contents of `/proc/sysvipc/shm` and returns its `nattch` column.
fn parse_shm_attachments(table: &str, shmid: u32) -> Option<u64> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let id_col = header.iter().position(|h| *h == "shmid")?;
    let nattch_col = header.iter().position(|h| *h == "nattch")?;
    lines.find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(id_col)?.parse::<u32>().ok()? == shmid).then_some(())?;
        fields.get(nattch_col)?.parse().ok()
    })
}

/// Where a starting server stands.
#[derive(Debug, PartialEq, Eq)]
enum Startup {
    Starting,
    Ready,
    Failed,
}

/// Judges one look at a starting server: `pid_file` is the contents of `postmaster.pid` (`None`
/// if absent), `seen_pid_file` whether it existed at an earlier look, `log` the server log since
/// the start.
///
/// Connection attempts while the server starts (a daemon under test reconnecting) log
/// `FATAL: the database system is starting up`, so a FATAL line alone does not mean failure;
/// it does while there is no `postmaster.pid`, as nothing can connect before it is written.
fn startup_state(
    pid_file: Option<&str>,
    seen_pid_file: bool,
    log: &str,
    alive: impl Fn(u32) -> bool,
) -> Startup {
    match pid_file {
        Some(contents) => match parse_pid_file(contents) {
            Some((pid, _)) if !alive(pid) => Startup::Failed,
            Some((_, true)) => Startup::Ready,
            _ => Startup::Starting,
        },
        // The postmaster removes it on its way out.
        None if seen_pid_file => Startup::Failed,
        None if startup_failed(log) => Startup::Failed,
        None => Startup::Starting,
    }
}

/// Whether the server log reports a fatal error.
fn startup_failed(log: &str) -> bool {
    log.lines()
        .any(|line| line.contains("FATAL:") || line.contains("PANIC:"))
}

/// Whether a server log says the TCP port was already in use.
fn port_taken(log: &str) -> bool {
    log.contains("Address already in use")
}

/// Reads `path` from byte `offset` on (lossily); empty if unreadable.
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A `postgresql.conf` string literal.
fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The data directory itself, unless the socket path would be too long for `sun_path`, in
/// which case the server listens on TCP only.
fn socket_dir_for(data: &Path) -> Option<PathBuf> {
    let socket_path_len = data.as_os_str().len() + "/.s.PGSQL.65535".len();
    (socket_path_len <= MAX_SOCKET_PATH).then(|| data.to_path_buf())
}

/// Mode for the directories we create: others may traverse them when the server runs as
/// `postgres`; otherwise they are ours alone.
fn dir_mode(run_as: &RunAs) -> u32 {
    if run_as.is_postgres() { 0o755 } else { 0o700 }
}

/// The cache directory, created if needed, checked to be ours and reachable by the server.
fn cache_root(run_as: &RunAs) -> PathBuf {
    let euid = effective_uid();
    let root = match env::var_os("PGVIGIL_TESTKIT_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => default_cache_parent(run_as).join(format!("pgvigil-testkit-{euid}")),
    };
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
    let root = root
        .canonicalize()
        .unwrap_or_else(|e| panic!("cannot resolve {}: {e}", root.display()));
    let meta =
        fs::metadata(&root).unwrap_or_else(|e| panic!("cannot stat {}: {e}", root.display()));
    assert!(
        meta.uid() == euid,
        "{} belongs to uid {}, not to us (uid {euid}); remove it or set PGVIGIL_TESTKIT_DIR",
        root.display(),
        meta.uid()
    );
    fs::set_permissions(&root, fs::Permissions::from_mode(dir_mode(run_as)))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", root.display()));
    if run_as.is_postgres() {
        assert!(
            traversable_by_others(&root),
            "the postgres user cannot reach {} (a parent directory lacks o+x); set \
             PGVIGIL_TESTKIT_DIR to a directory under /tmp",
            root.display()
        );
    }
    root
}

/// `/dev/shm` if it is a tmpfs with room to spare, else `$TMPDIR` (or `/tmp` if the server's
/// user could not reach `$TMPDIR`, e.g. `/root/tmp`).
///
/// A cluster is about a thousand files, and creating files is what copying the template costs:
/// on a disk file system that can take most of a second, on tmpfs a tenth of that.
fn default_cache_parent(run_as: &RunAs) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let shm_has_room = Command::new("stat")
        .args(["-f", "-c", "%T %a %S"])
        .arg(shm)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| parse_statfs(&String::from_utf8_lossy(&o.stdout)))
        .is_some_and(|(fs_type, free)| fs_type == "tmpfs" && free >= MIN_SHM_FREE);
    if shm_has_room {
        return shm.to_path_buf();
    }
    let tmp = env::temp_dir();
    if run_as.is_postgres() && !traversable_by_others(&tmp) {
        return PathBuf::from("/tmp");
    }
    tmp
}

/// Parses `stat -f -c '%T %a %S'` (type, free blocks, block size) into type and free bytes.
fn parse_statfs(output: &str) -> Option<(String, u64)> {
    let mut fields = output.split_whitespace();
    let fs_type = fields.next()?.to_owned();
    let blocks: u64 = fields.next()?.parse().ok()?;
    let block_size: u64 = fields.next()?.parse().ok()?;
    Some((fs_type, blocks.saturating_mul(block_size)))
}

/// Whether every directory from `/` down to `path` lets other users traverse it.
fn traversable_by_others(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    path.ancestors()
        .all(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// Returns the template data directory for this PostgreSQL build, running `initdb` first if no
/// test process has yet.
fn ensure_template(root: &Path, bindir: &Path, run_as: &RunAs) -> PathBuf {
    let version_output = run(
        Command::new(bindir.join("postgres")).arg("--version"),
        "asking postgres for its version",
    );
    let version_output = String::from_utf8_lossy(&version_output.stdout).into_owned();
    let version = parse_postgres_version(&version_output).unwrap_or_else(|| "unknown".into());
    let mut hasher = DefaultHasher::new();
    (
        bindir,
        &version_output,
        TEMPLATE_FORMAT,
        TEST_SETTINGS,
        run_as.name(),
    )
        .hash(&mut hasher);
    let name = format!("template-{version}-{:016x}", hasher.finish());
    let template = root.join(&name);
    if template.is_dir() {
        return template;
    }
    let _lock = LockFile::acquire(root.join(format!("{name}.lock")));
    if template.is_dir() {
        return template;
    }
    let building = root.join(format!(".building-{}-{}", process::id(), base36(salt())));
    fs::create_dir(&building)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", building.display()));
    fs::set_permissions(&building, fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", building.display()));
    run_as.chown(&building);
    let mut initdb = run_as.command(&bindir.join("initdb"));
    initdb.arg("-D").arg(&building).args([
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    let output = initdb.output();
    match output {
        Ok(o) if o.status.success() => {}
        other => {
            let _ = fs::remove_dir_all(&building);
            match other {
                Ok(o) => panic!(
                    "initdb of the template cluster failed ({initdb:?} exited with {}):\n{}\n{}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout).trim_end(),
                    String::from_utf8_lossy(&o.stderr).trim_end()
                ),
                Err(e) => panic!("cannot run {initdb:?}: {e}"),
            }
        }
    }
    let conf = building.join("postgresql.conf");
    let appended = OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut f| f.write_all(TEST_SETTINGS.as_bytes()));
    if let Err(e) = appended {
        let _ = fs::remove_dir_all(&building);
        panic!("cannot append to {}: {e}", conf.display());
    }
    // Atomic: readers see no template or a complete one. If another process (one that found
    // our lock stale) renamed its copy first, ours is redundant.
    if let Err(e) = fs::rename(&building, &template) {
        let _ = fs::remove_dir_all(&building);
        assert!(
            template.is_dir(),
            "cannot rename {} to {}: {e}",
            building.display(),
            template.display()
        );
    }
    template
}

/// Creates `<root>/clusters/<pid>-<seq>-<salt>`; the pid in the name lets
/// [`reap_dead_clusters`] find clusters whose test process died.
fn new_cluster_dir(root: &Path, run_as: &RunAs) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let clusters = root.join("clusters");
    fs::create_dir_all(&clusters)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", clusters.display()));
    let mode = fs::Permissions::from_mode(dir_mode(run_as));
    fs::set_permissions(&clusters, mode.clone())
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", clusters.display()));
    loop {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = clusters.join(format!("{}-{seq}-{}", process::id(), base36(salt())));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, mode)
                    .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", dir.display()));
                return dir;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    }
}

/// The pid a cluster or build directory name starts with (`<pid>-...`, `.building-<pid>-...`).
fn owner_pid(name: &str) -> Option<u32> {
    let name = name.strip_prefix(".building-").unwrap_or(name);
    name.split('-').next()?.parse().ok()
}

/// Stops and removes clusters (and half-built templates) left behind by test processes that
/// died without running `Drop`, e.g. killed by nextest's slow-timeout. Best effort.
fn reap_dead_clusters(root: &Path, bindir: &Path, run_as: &RunAs) {
    let clusters = fs::read_dir(root.join("clusters")).into_iter().flatten();
    let builds = fs::read_dir(root).into_iter().flatten().filter(|e| {
        e.as_ref()
            .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".building-"))
    });
    for entry in clusters.chain(builds).filter_map(Result::ok) {
        let Some(pid) = owner_pid(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        if pid == process::id() || pid_alive(pid) {
            continue;
        }
        let dir = entry.path();
        let data = dir.join("data");
        if live_postmaster(&data).is_some() {
            let _ = stop_server(run_as, bindir, &data, "immediate", STOP_TIMEOUT);
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// A lock file created with `O_EXCL`, holding the owner's pid; removed on drop.
///
/// Without `flock` (std's `File::lock` is newer than our MSRV) a lock whose owner died must be
/// detected: by a dead pid, or by age. Two processes judging the same lock stale can both
/// proceed; that only costs a redundant `initdb`, as the template's rename is atomic.
#[derive(Debug)]
struct LockFile {
    path: PathBuf,
}

impl LockFile {
    fn acquire(path: PathBuf) -> LockFile {
        let start = Instant::now();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let _ = write!(file, "{}", process::id());
                    return LockFile { path };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if lock_is_stale(&path) {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    assert!(
                        start.elapsed() < TEMPLATE_LOCK_TIMEOUT,
                        "timed out after {TEMPLATE_LOCK_TIMEOUT:?} waiting for {} (another test \
                         process building the template cluster); remove it if none is running",
                        path.display()
                    );
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn lock_is_stale(path: &Path) -> bool {
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    if age > STALE_LOCK_AGE {
        return true;
    }
    match fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        Some(pid) => !pid_alive(pid),
        // Just created, pid not written yet; or garbage, which the age check will clear.
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_port_taken() {
        let log = "2025-01-01 00:00:00.000 UTC [42] LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n\
                   2025-01-01 00:00:00.000 UTC [42] FATAL:  could not create any TCP/IP sockets\n";
        assert!(port_taken(log));
        assert!(!port_taken("FATAL:  data directory has wrong ownership"));
    }

    #[test]
    fn pid_file_contents() {
        let ready = "4242\n/data\n1700000000\n54021\n/data\n127.0.0.1\n  1234   5678\nready   \n";
        assert_eq!(parse_pid_file(ready), Some((4242, true)));
        let starting = ready.replace("ready   ", "starting");
        assert_eq!(parse_pid_file(&starting), Some((4242, false)));
        assert_eq!(parse_pid_file("4242\n/data\n"), Some((4242, false)));
        assert_eq!(parse_pid_file(""), None);
    }

    #[test]
    fn shared_memory_attachments() {
        let pid_file =
            "4242\n/data\n1700000000\n54021\n/data\n127.0.0.1\n  729204    17\nready   \n";
        assert_eq!(parse_shmid(pid_file), Some(17));
        assert_eq!(parse_shmid("4242\n"), None);
        let table = "       key      shmid perms       size  cpid  lpid nattch   uid\n\
                         729204         17   600         56  2205 23478      5   101\n\
                         729205         18   600         56  2205 23478      0   101\n";
        assert_eq!(parse_shm_attachments(table, 17), Some(5));
        assert_eq!(parse_shm_attachments(table, 18), Some(0));
        assert_eq!(parse_shm_attachments(table, 19), None);
    }

    #[test]
    fn startup_states() {
        let ready = "4242\n/data\n1700000000\n54021\n/data\n127.0.0.1\n  1234   5678\nready   \n";
        let starting =
            "4242\n/data\n1700000000\n54021\n/data\n127.0.0.1\n  1234   5678\nstarting\n";
        let fatal = "... [4242] FATAL:  could not create any TCP/IP sockets\n";
        let client_fatal = "... [4250] FATAL:  the database system is starting up\n";
        let alive = |_| true;
        let dead = |_| false;
        assert_eq!(startup_state(None, false, "", alive), Startup::Starting);
        assert_eq!(startup_state(Some(""), true, "", alive), Startup::Starting);
        assert_eq!(
            startup_state(Some(starting), true, client_fatal, alive),
            Startup::Starting
        );
        assert_eq!(
            startup_state(Some(ready), true, client_fatal, alive),
            Startup::Ready
        );
        assert_eq!(startup_state(Some(ready), true, "", dead), Startup::Failed);
        assert_eq!(startup_state(None, true, "", alive), Startup::Failed);
        assert_eq!(startup_state(None, false, fatal, alive), Startup::Failed);
    }

    #[test]
    fn startup_failures() {
        assert!(startup_failed(
            "2025-01-01 00:00:00.000 UTC [7] FATAL:  could not create any TCP/IP sockets\n"
        ));
        assert!(!startup_failed(
            "2025-01-01 00:00:00.000 UTC [7] LOG:  database system is ready to accept connections\n"
        ));
    }

    #[test]
    fn owner_pids() {
        assert_eq!(owner_pid("1234-0-k3j2"), Some(1234));
        assert_eq!(owner_pid(".building-77-abc"), Some(77));
        assert_eq!(owner_pid("template-15.20-00ff"), None);
        assert_eq!(owner_pid("junk"), None);
    }

    #[test]
    fn conf_strings() {
        assert_eq!(conf_string("/tmp/x"), "'/tmp/x'");
        assert_eq!(conf_string("it's"), "'it''s'");
        assert_eq!(conf_string(""), "''");
    }

    #[test]
    fn socket_dir_only_when_short() {
        let short = Path::new("/tmp/pgvigil-testkit-0/clusters/1-0-abc/data");
        assert_eq!(socket_dir_for(short).as_deref(), Some(short));
        let long = PathBuf::from(format!("/tmp/{}/data", "x".repeat(100)));
        assert_eq!(socket_dir_for(&long), None);
    }

    #[test]
    fn statfs_output() {
        assert_eq!(
            parse_statfs("tmpfs 6170760 4096\n"),
            Some(("tmpfs".to_owned(), 6_170_760 * 4096))
        );
        assert_eq!(parse_statfs("ext2/ext3 x 4096"), None);
        assert_eq!(parse_statfs(""), None);
    }

    #[test]
    fn root_is_traversable() {
        assert!(traversable_by_others(Path::new("/")));
        assert!(!traversable_by_others(Path::new("/no/such/dir")));
    }

    #[test]
    fn lock_excludes_and_detects_dead_owner() {
        let dir = env::temp_dir().join(format!("pgvigil-testkit-lock-test-{}", process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.lock");
        {
            let _lock = LockFile::acquire(path.clone());
            assert_eq!(
                fs::read_to_string(&path).unwrap(),
                process::id().to_string()
            );
            assert!(!lock_is_stale(&path), "our own lock is live");
        }
        assert!(!path.exists(), "dropping the lock removes it");
        // A lock left by a process that no longer exists (pid above Linux's pid_max).
        fs::write(&path, "4194305").unwrap();
        assert!(lock_is_stale(&path));
        drop(LockFile::acquire(path.clone()));
        fs::remove_dir_all(&dir).unwrap();
    }
}
