//! Private clusters: copying the template (or, for a standby, filling the data directory some
//! other way), starting the server, stopping it and cleaning up.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{self, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cache::{cache_root, ensure_template, new_cluster_dir, reap_dead_clusters};
use crate::postmaster::{
    POLL_INTERVAL, STOP_TIMEOUT, Startup, live_postmaster, parse_shmid, port_taken,
    shm_attachments, startup_state, stop_server,
};
use crate::programs::{RunAs, try_find_program};
use crate::util::{free_port, last_lines, pid_alive, run};

/// The per-cluster settings file (port, socket directory, the builder's settings) the template's
/// `postgresql.conf` includes; the name is repeated in `TEST_SETTINGS` in `cache.rs`.
const CLUSTER_CONF: &str = "pgvigil-testkit.conf";

/// The server log, in the data directory.
const LOG_FILE: &str = "server.log";

/// How often a cluster start is tried when the port turns out to be taken.
const START_ATTEMPTS: u32 = 3;

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest Unix socket path (`sun_path` is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Lines of the server log shown when it fails to start.
const LOG_TAIL_LINES: usize = 30;

/// What a new private cluster has beyond a copy of the template.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterSpec {
    /// `postgresql.conf` settings (name, unquoted value), written into the per-cluster include
    /// file after the port, so they override the template's.
    pub(crate) settings: Vec<(String, String)>,
    /// Lines put at the top of `pg_hba.conf`, in order, before the template's `trust` lines.
    pub(crate) hba_lines: Vec<String>,
    /// Files written into the data directory (name, contents), mode 0600.
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

/// A cluster this process created; stopped and removed on drop.
#[derive(Debug)]
pub(crate) struct PrivateCluster {
    bindir: PathBuf,
    run_as: RunAs,
    /// Directory holding `data`; removed on drop.
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    socket_dir: Option<PathBuf>,
    /// `postgres --version` of the build, e.g. `"18.4"`.
    version: String,
    /// Written into [`CLUSTER_CONF`] after the port.
    settings: Vec<(String, String)>,
}

impl PrivateCluster {
    /// Copies the template of the build in `bindir` (building it first if needed), applies
    /// `spec` and starts a server on a free port.
    pub(crate) fn create(bindir: PathBuf, spec: ClusterSpec) -> PrivateCluster {
        let run_as = RunAs::detect();
        let root = cache_root(&run_as);
        reap_dead_clusters(&root, &bindir, &run_as);
        let (template, version) = ensure_template(&root, &bindir, &run_as);
        let cluster = PrivateCluster::new(bindir, run_as, &root, version, spec.settings);
        run(
            Command::new("cp")
                .arg("-a")
                .arg(&template)
                .arg(&cluster.data),
            "copying the template cluster",
        );
        cluster.prepend_hba_lines(&spec.hba_lines);
        cluster.write_files(&spec.files);
        cluster.start_new()
    }

    /// Like [`create`](Self::create), but `fill` makes the data directory (it is given its
    /// path, which does not exist yet) instead of a copy of the template: for standbys, a
    /// base backup of a running primary. `version` is the build's, as the primary knows it.
    pub(crate) fn create_with(
        bindir: PathBuf,
        version: String,
        settings: Vec<(String, String)>,
        fill: impl FnOnce(&PrivateCluster),
    ) -> PrivateCluster {
        let run_as = RunAs::detect();
        let root = cache_root(&run_as);
        reap_dead_clusters(&root, &bindir, &run_as);
        let cluster = PrivateCluster::new(bindir, run_as, &root, version, settings);
        fill(&cluster);
        cluster.start_new()
    }

    /// A new cluster directory (not yet with a data directory) and its watchdog. From here on
    /// `Drop` cleans up if anything panics.
    fn new(
        bindir: PathBuf,
        run_as: RunAs,
        root: &Path,
        version: String,
        settings: Vec<(String, String)>,
    ) -> PrivateCluster {
        let dir = new_cluster_dir(root, &run_as);
        let data = dir.join("data");
        let cluster = PrivateCluster {
            bindir,
            run_as,
            socket_dir: socket_dir_for(&data),
            dir,
            data,
            port: 0,
            version,
            settings,
        };
        cluster.spawn_watchdog();
        cluster
    }

    /// Gives the data directory to the server's user and starts the server on a free port,
    /// with another port if the one chosen was taken meanwhile.
    fn start_new(mut self) -> PrivateCluster {
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_port();
            self.write_cluster_conf();
            if attempt == 1 {
                // cp -a kept the template's owner; this covers the files we wrote.
                self.run_as.chown(&self.data);
            }
            match self.try_start() {
                Ok(()) => return self,
                Err(failure) if failure.port_taken && attempt < START_ATTEMPTS => continue,
                Err(failure) => panic!("{}", failure.message),
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    /// Puts `lines` at the top of `pg_hba.conf` (the first matching line wins).
    fn prepend_hba_lines(&self, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let path = self.data.join("pg_hba.conf");
        let old = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut new = String::from("# Added by pgvigil-testkit (ClusterBuilder::hba_line).\n");
        for line in lines {
            new.push_str(line);
            new.push('\n');
        }
        new.push('\n');
        new.push_str(&old);
        fs::write(&path, new).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Writes each `(name, contents)` into the data directory, mode 0600 (what the server
    /// demands of a private key).
    fn write_files(&self, files: &[(String, Vec<u8>)]) {
        for (name, contents) in files {
            let path = self.data.join(name);
            fs::write(&path, contents)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o600)))
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
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

    /// The build's version, e.g. `"18.4"`.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    /// The settings given at creation (written after the port into [`CLUSTER_CONF`]).
    pub(crate) fn settings(&self) -> &[(String, String)] {
        &self.settings
    }

    /// The directory holding the data directory (removed on drop), for scratch files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
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
        let mut conf = format!(
            "# Written by pgvigil-testkit for this cluster.\nport = {}\nunix_socket_directories = {}\n",
            self.port,
            conf_string(&socket_dir)
        );
        for (name, value) in &self.settings {
            let _ = writeln!(conf, "{name} = {}", conf_string(value));
        }
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

/// Why `pg_ctl start` failed.
#[derive(Debug)]
struct StartFailure {
    /// The port was taken between [`free_port`] and the server binding it; worth a retry.
    port_taken: bool,
    /// Panic message with pg_ctl's stderr and the log tail.
    message: String,
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
pub(crate) fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The data directory itself, unless the socket path would be too long for `sun_path`, in
/// which case the server listens on TCP only.
fn socket_dir_for(data: &Path) -> Option<PathBuf> {
    let socket_path_len = data.as_os_str().len() + "/.s.PGSQL.65535".len();
    (socket_path_len <= MAX_SOCKET_PATH).then(|| data.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
