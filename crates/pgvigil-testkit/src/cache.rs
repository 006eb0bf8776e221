//! The cache directory: where it is, the template cluster in it, the per-cluster directories,
//! and cleaning up after test processes that died.
//!
//! Layout (`PGVIGIL_TESTKIT_DIR`, else `pgvigil-testkit-<uid>` in `/dev/shm` or `$TMPDIR`, see
//! [`default_cache_parent`]):
//!
//! ```text
//! template-<version>-<key>/        initdb output plus TEST_SETTINGS; never started
//! template-<version>-<key>.lock    held while one process builds that template
//! .building-<pid>-<salt>/          a template being built (renamed into place when done)
//! clusters/<pid>-<seq>-<salt>/data one test cluster, owned by test process <pid>
//! ```

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fs::{self, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{self, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::postmaster::{STOP_TIMEOUT, live_postmaster, stop_server};
use crate::programs::{RunAs, effective_uid};
use crate::util::{base36, pid_alive, run, salt};
use crate::versions::parse_postgres_version;

/// Bump when [`TEST_SETTINGS`] or the `initdb` options change in a way the cache key would
/// not notice.
const TEMPLATE_FORMAT: u32 = 1;

/// Appended to the template's `postgresql.conf`.
const TEST_SETTINGS: &str = "
# Added by pgvigil-testkit (crates/pgvigil-testkit/src/cache.rs).
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

/// How long to wait for another process building the template.
const TEMPLATE_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// A template lock older than this is considered abandoned (`initdb` takes seconds).
const STALE_LOCK_AGE: Duration = Duration::from_secs(120);

/// Free space `/dev/shm` needs for the cache to go there (the template is about 40 MB and
/// each cluster as much plus what its test writes; PostgreSQL's own shared memory lives there
/// too).
const MIN_SHM_FREE: u64 = 2 << 30;

/// Mode for the directories we create: others may traverse them when the server runs as
/// `postgres`; otherwise they are ours alone.
fn dir_mode(run_as: &RunAs) -> u32 {
    if run_as.is_postgres() { 0o755 } else { 0o700 }
}

/// The cache directory, created if needed, checked to be ours and reachable by the server.
pub(crate) fn cache_root(run_as: &RunAs) -> PathBuf {
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
/// test process has yet, and the build's version (`postgres --version`, e.g. `"18.4"`).
pub(crate) fn ensure_template(root: &Path, bindir: &Path, run_as: &RunAs) -> (PathBuf, String) {
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
        return (template, version);
    }
    let _lock = LockFile::acquire(root.join(format!("{name}.lock")));
    if template.is_dir() {
        return (template, version);
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
    (template, version)
}

/// Creates `<root>/clusters/<pid>-<seq>-<salt>`; the pid in the name lets
/// [`reap_dead_clusters`] find clusters whose test process died.
pub(crate) fn new_cluster_dir(root: &Path, run_as: &RunAs) -> PathBuf {
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
pub(crate) fn reap_dead_clusters(root: &Path, bindir: &Path, run_as: &RunAs) {
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
    fn owner_pids() {
        assert_eq!(owner_pid("1234-0-k3j2"), Some(1234));
        assert_eq!(owner_pid(".building-77-abc"), Some(77));
        assert_eq!(owner_pid("template-15.20-00ff"), None);
        assert_eq!(owner_pid("junk"), None);
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
