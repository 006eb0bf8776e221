//! Streaming standbys, and the replication helpers server-health tests need: pausing replay,
//! promoting, a physical slot nobody consumes, generating WAL.
//!
//! # How a standby is made
//!
//! What `pg_basebackup -R` does, without `pg_basebackup`: the npm builds of 13, 14, 16, 17 and
//! 18 lack it, and Debian's (15) refuses servers newer than itself. Instead the testkit uses
//! the primary's low-level backup API, which every version has, in one `psql` session:
//!
//! 1. `pg_backup_start(label, fast => true)` (`pg_start_backup(label, true, false)` before 15):
//!    a checkpoint, after which the server logs full-page images whatever `full_page_writes`
//!    says, so a copy taken while it runs becomes consistent once replayed.
//! 2. `\!` runs `tar` to copy the data directory into the standby's, leaving out what
//!    `pg_basebackup` leaves out (see [`EXCLUDED`]) and `pg_wal`. Files that change or vanish
//!    while tar reads them are expected (tar's exit status 1); anything worse fails the start.
//! 3. `pg_backup_stop(false)` (`pg_stop_backup(false, false)` before 15) writes the backup-end
//!    record, switches WAL segments (which flushes them) and returns the backup label. It does
//!    not wait for archiving: a test may have made `archive_command` fail on purpose.
//!
//! Then `pg_wal` is copied (it now holds every record up to the backup's end, so the standby
//! becomes consistent from local WAL, whatever the primary's checkpoints remove meanwhile),
//! `backup_label` and `standby.signal` are written, and the standby's include file gets the
//! primary's builder settings plus `primary_conninfo` (with `application_name` set to the
//! standby's [name](TestCluster::standby_name)) and `wal_receiver_status_interval = 1s` (the
//! default 10 s would make the primary's view of replay lag up to 10 s stale). The standby
//! starts on a free port and [`start_standby`](TestCluster::start_standby) returns once the
//! primary's `pg_stat_replication` shows it `streaming`.
//!
//! Cost: about what starting a cluster costs plus two copies of a ~40 MB directory on tmpfs
//! and a checkpoint on the primary (figures in the crate docs). No replication slot is used,
//! so a standby stopped for long can fall behind the primary's WAL retention, as a real one
//! without a slot would; the primary's `pg_replication_slots` holds only what a test creates.
//! Tablespaces are not copied (the tests create none).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::cluster::TestCluster;
use crate::conninfo::ConnInfo;
use crate::private::PrivateCluster;
use crate::util::run;

/// What `tar` leaves out of the standby's copy (anchored at the data directory; `*` matches
/// `/` too). As `pg_basebackup`: the postmaster's lock and options files, the contents of
/// directories the server empties at start (or that belong to the primary alone: its slots),
/// the relation cache init files, and signal files. Ours: the server log and the Unix socket
/// and its lock, which live in the data directory. `pg_wal` is copied separately, after the
/// backup ends.
const EXCLUDED: &[&str] = &[
    "./postmaster.pid",
    "./postmaster.opts",
    "./backup_label",
    "./backup_label.old",
    "./tablespace_map",
    "./current_logfiles",
    "./standby.signal",
    "./recovery.signal",
    "./server.log",
    "./.s.PGSQL.*",
    "./pg_wal/*",
    "./pg_dynshmem/*",
    "./pg_notify/*",
    "./pg_replslot/*",
    "./pg_serial/*",
    "./pg_snapshots/*",
    "./pg_stat_tmp/*",
    "./pg_subtrans/*",
    "./base/pgsql_tmp/*",
    "./global/pg_internal.init",
    "./base/*/pg_internal.init",
];

/// How long a standby may take to start streaming, and replay to reach a position.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Flushes all WAL written so far and prints the flushed position: a transaction that writes
/// one record (a transactional logical message), committed synchronously. (A transaction
/// that only takes an xid would not do: one that wrote no WAL of its own commits
/// asynchronously whatever `synchronous_commit` says.)
const FLUSH_WAL_SQL: &str = "SET synchronous_commit = on;\n\
    SELECT pg_logical_emit_message(true, 'pgvigil-testkit', 'flush') \\gset\n\
    SELECT pg_current_wal_flush_lsn()";

/// How often replication state is checked while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What a standby streams from.
#[derive(Debug, Clone)]
pub(crate) struct StandbyOf {
    /// How the testkit reaches the primary.
    pub(crate) primary: ConnInfo,
    /// The standby's `application_name` in `primary_conninfo`.
    pub(crate) name: String,
}

impl TestCluster {
    /// Starts a streaming standby of this (private) cluster: a base backup of it in a new data
    /// directory (see the module docs in the source), running the same PostgreSQL build on
    /// its own free port, with `hot_standby` on. Returns once the standby accepts
    /// connections, its WAL receiver is `streaming` and this cluster's `pg_stat_replication`
    /// lists it (by [`standby_name`](Self::standby_name)) as `streaming`.
    ///
    /// The standby is a [`TestCluster`] like any other: [`psql`](Self::psql) (read-only),
    /// [`stop`](Self::stop), [`restart`](Self::restart), [`dsn`](Self::dsn) for the daemon;
    /// dropping it stops it and removes its directory, and the same watchdog cleans up after a
    /// killed test. It does not borrow the primary; dropping the primary first just leaves
    /// the standby without one. It has the primary's builder settings, `pg_hba.conf`, TLS
    /// files and `ALTER SYSTEM` settings, as a real base backup would.
    ///
    /// # Panics
    ///
    /// If this cluster is shared (`PGVIGIL_TEST_DSN`) or itself a standby, if the copy fails,
    /// or if the standby does not start or stream within 60 s (with the standby's log).
    pub fn start_standby(&self) -> TestCluster {
        static SEQ: AtomicU64 = AtomicU64::new(1);
        let primary = self.private_cluster("start_standby");
        assert!(
            self.standby.is_none(),
            "start_standby needs a primary, and this cluster is a standby (cascading \
             replication is not supported)"
        );
        let name = format!("standby{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let mut settings = primary.settings().to_vec();
        settings.extend([
            (
                "primary_conninfo".to_owned(),
                format!(
                    "host={} port={} user={} application_name={name} sslmode=disable",
                    self.conn.host, self.conn.port, self.conn.user
                ),
            ),
            ("wal_receiver_status_interval".to_owned(), "1s".to_owned()),
        ]);
        let standby = PrivateCluster::create_with(
            primary.bindir().to_path_buf(),
            primary.version().to_owned(),
            settings,
            |standby| self.base_backup_into(primary, standby),
        );
        let mut standby = TestCluster::from_private(standby);
        standby.standby = Some(StandbyOf {
            primary: self.conn.clone(),
            name,
        });
        standby.wait_for_streaming();
        standby
    }

    /// The `application_name` this standby streams under (what the primary's
    /// `pg_stat_replication.application_name` shows), e.g. `standby1`; `None` for a cluster
    /// that is not a standby from [`start_standby`](Self::start_standby). Stays set after
    /// [`promote`](Self::promote).
    pub fn standby_name(&self) -> Option<&str> {
        self.standby.as_ref().map(|s| s.name.as_str())
    }

    /// Waits until this standby's WAL receiver is `streaming` and the primary lists it as
    /// `streaming` in `pg_stat_replication`; [`start_standby`](Self::start_standby) does this,
    /// call it again after [`restart`](Self::restart) or after restarting the primary.
    ///
    /// # Panics
    ///
    /// If this is not a standby, or it is not streaming within 60 s (with what was last seen).
    pub fn wait_for_streaming(&self) {
        let standby = self.standby_of("wait_for_streaming");
        let on_primary = format!(
            "SELECT coalesce(max(state), 'absent') FROM pg_stat_replication \
             WHERE application_name = '{}'",
            standby.name
        );
        self.wait_for_state("the standby to stream", || {
            let receiver = self.try_psql(
                self.maintenance_db(),
                "SELECT coalesce(max(status), 'absent') FROM pg_stat_wal_receiver",
            )?;
            let sender = self.try_psql_at(&standby.primary, "postgres", &on_primary)?;
            let seen = format!("WAL receiver {receiver}, primary's WAL sender {sender}");
            Ok((receiver == "streaming" && sender == "streaming", seen))
        });
    }

    /// Pauses WAL replay on this standby (`pg_wal_replay_pause()`) and waits until it is
    /// paused (`pg_get_wal_replay_pause_state()` is `paused`; on 13, which lacks it, until
    /// `pg_is_wal_replay_paused()`, which is true as soon as the pause is requested). WAL goes
    /// on arriving, so the replay lag grows with every write on the primary.
    ///
    /// The startup process pauses before replaying its next WAL record, which on an idle
    /// primary can be 15 s away (the next running-transactions record), so this also commits
    /// a small transaction on the primary (a logical message): the standby receives it and
    /// stops in front of it.
    ///
    /// # Panics
    ///
    /// If this is not a standby, or replay does not pause within 60 s (e.g. the primary is
    /// down and sends nothing).
    pub fn pause_replay(&self) {
        let standby = self.standby_of("pause_replay");
        self.psql(self.maintenance_db(), "SELECT pg_wal_replay_pause()");
        // Best effort: with the primary down, the pause takes effect at the next record.
        let _ = self.try_psql_at(&standby.primary, "postgres", FLUSH_WAL_SQL);
        let state = replay_pause_state_sql(self.major_version());
        self.wait_for_state("replay to pause", || {
            let seen = self.try_psql(self.maintenance_db(), state)?;
            Ok((seen == "paused", seen))
        });
    }

    /// Resumes WAL replay on this standby (`pg_wal_replay_resume()`) and waits until it is no
    /// longer paused. Use [`wait_for_replay`](Self::wait_for_replay) to wait for it to catch
    /// up.
    ///
    /// # Panics
    ///
    /// If this is not a standby, or replay does not resume within 60 s.
    pub fn resume_replay(&self) {
        self.standby_of("resume_replay");
        self.psql(self.maintenance_db(), "SELECT pg_wal_replay_resume()");
        let state = replay_pause_state_sql(self.major_version());
        self.wait_for_state("replay to resume", || {
            let seen = self.try_psql(self.maintenance_db(), state)?;
            Ok((seen == "not paused", seen))
        });
    }

    /// Waits until this standby has replayed all the WAL its primary had written when called,
    /// and returns that position (e.g. `0/3000148`).
    ///
    /// The test clusters commit asynchronously (`synchronous_commit = off`), so when a
    /// statement returns its WAL may still be in the primary's buffers, and records outside
    /// transactions may stay there until something flushes them. So this first commits a
    /// small transaction (a logical message) on the primary with `synchronous_commit = on`,
    /// which flushes all WAL up to its commit record, then waits for `pg_last_wal_replay_lsn()` to reach the primary's
    /// `pg_current_wal_flush_lsn()`.
    ///
    /// # Panics
    ///
    /// If this is not a standby, the primary cannot be reached, or replay does not get there
    /// within 60 s (e.g. because it is paused).
    pub fn wait_for_replay(&self) -> String {
        let standby = self.standby_of("wait_for_replay");
        let target = self
            .try_psql_at(&standby.primary, "postgres", FLUSH_WAL_SQL)
            .unwrap_or_else(|e| panic!("cannot ask the primary for its WAL position: {e}"));
        let check = format!(
            "SELECT coalesce(pg_last_wal_replay_lsn() >= '{target}'::pg_lsn, false), \
             pg_last_wal_replay_lsn()"
        );
        self.wait_for_state(&format!("the standby to replay up to {target}"), || {
            let row = self.try_psql(self.maintenance_db(), &check)?;
            let (done, replayed) = row.split_once('|').unwrap_or((&row, ""));
            Ok((done == "t", format!("replayed up to {replayed}")))
        });
        target
    }

    /// Promotes this standby to a primary (`pg_promote()`, which waits up to 60 s) and waits
    /// until `pg_is_in_recovery()` is false.
    ///
    /// # Panics
    ///
    /// If this is not a standby, or promotion fails or takes longer than 60 s.
    pub fn promote(&self) {
        self.standby_of("promote");
        let promoted = self.psql(self.maintenance_db(), "SELECT pg_promote(true, 60)");
        assert_eq!(promoted, "t", "pg_promote() did not complete within 60 s");
        self.wait_for_state("the promoted standby to leave recovery", || {
            let seen = self.try_psql(self.maintenance_db(), "SELECT pg_is_in_recovery()")?;
            Ok((seen == "f", format!("pg_is_in_recovery() = {seen}")))
        });
    }

    /// Creates a physical replication slot `name` that reserves WAL at once
    /// (`pg_create_physical_replication_slot(name, true)`) and that nothing consumes: the
    /// primary keeps all WAL from now on for it, and `pg_replication_slots` shows it inactive
    /// with a `restart_lsn`. It lives until dropped (`pg_drop_replication_slot`) or the cluster
    /// is.
    ///
    /// # Panics
    ///
    /// If the statement fails (e.g. the name is not `[a-z0-9_]`, or is taken).
    pub fn create_physical_slot(&self, name: &str) {
        self.psql(
            self.maintenance_db(),
            &format!(
                "SELECT pg_create_physical_replication_slot('{}', true)",
                name.replace('\'', "''")
            ),
        );
    }

    /// Writes at least `bytes` of WAL without touching any table, as non-transactional
    /// logical messages of 1 MiB (`pg_logical_emit_message(false, ...)`), flushes it (as
    /// [`wait_for_replay`](Self::wait_for_replay) does; the WAL writer would leave the last
    /// partial page of records outside transactions unflushed), and returns the flushed
    /// position, which is after them: what a standby receives once it has them all. For tests
    /// of slots' retained WAL and of replication lag.
    ///
    /// # Panics
    ///
    /// If the statement fails (e.g. on a standby, which cannot write WAL).
    pub fn generate_wal(&self, bytes: u64) -> String {
        const CHUNK: u64 = 1 << 20;
        let chunks = bytes.div_ceil(CHUNK).max(1);
        self.psql(
            self.maintenance_db(),
            &format!(
                "SELECT count(pg_logical_emit_message(false, 'pgvigil-testkit', \
                 repeat('x', {CHUNK}))) FROM generate_series(1, {chunks}) \\gset\n\
                 {FLUSH_WAL_SQL}"
            ),
        )
    }

    /// Copies this running cluster into `standby`'s (not yet existing) data directory with
    /// the backup API, as the module docs describe.
    fn base_backup_into(&self, primary: &PrivateCluster, standby: &PrivateCluster) {
        let source = primary.data_dir();
        let dest = standby.data_dir();
        fs::create_dir(dest)
            .and_then(|()| fs::set_permissions(dest, fs::Permissions::from_mode(0o700)))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dest.display()));
        let archive = standby.dir().join("base.tar");
        let copy = tar_copy_command(source, dest, &archive, ".", EXCLUDED);
        let label = self
            .try_psql(
                self.maintenance_db(),
                &backup_sql(self.major_version(), &copy),
            )
            .unwrap_or_else(|e| panic!("base backup of the primary for a standby failed: {e}"));
        let wal = tar_copy_command(
            source,
            dest,
            &archive,
            "./pg_wal",
            &["./pg_wal/archive_status/*"],
        );
        run(
            Command::new("sh").args(["-c", &wal]),
            "copying the primary's WAL for a standby",
        );
        for (name, contents) in [
            ("backup_label", format!("{label}\n")),
            ("standby.signal", String::new()),
        ] {
            let path = dest.join(name);
            fs::write(&path, contents)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        // PrivateCluster gives all of it to the server's user before starting it.
    }

    /// The primary of this standby, or a panic naming `action`.
    fn standby_of(&self, action: &str) -> &StandbyOf {
        self.standby.as_ref().unwrap_or_else(|| {
            panic!(
                "TestCluster::{action} needs a standby (from TestCluster::start_standby), and \
                 this cluster is not one"
            )
        })
    }

    /// Calls `check` until it returns `Ok((true, _))`; panics after [`REPLICATION_TIMEOUT`]
    /// naming `what`, the last thing seen (or error), and the tail of this server's log.
    fn wait_for_state(
        &self,
        what: &str,
        mut check: impl FnMut() -> Result<(bool, String), String>,
    ) {
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        loop {
            let last = match check() {
                Ok((true, _)) => return,
                Ok((false, seen)) => seen,
                Err(e) => format!("error: {e}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {REPLICATION_TIMEOUT:?} waiting for {what} (last seen: \
                     {last}); last lines of the server log:\n{}",
                    crate::util::last_lines(&self.server_log(), 30)
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

/// The psql script of a base backup: start the backup, run `copy` (a shell command), stop it
/// and print the backup label. `\gset` keeps the start position off stdout, so the output is
/// the label alone.
fn backup_sql(major: u32, copy: &str) -> String {
    let (start, stop) = if major >= 15 {
        (
            "pg_backup_start('pgvigil-testkit standby', true)",
            "pg_backup_stop(false)",
        )
    } else {
        (
            "pg_start_backup('pgvigil-testkit standby', true, false)",
            "pg_stop_backup(false, false)",
        )
    };
    format!("SELECT {start} AS start_lsn \\gset\n\\! {copy}\nSELECT labelfile FROM {stop};\n")
}

/// `pg_get_wal_replay_pause_state()` (14+: `not paused`, `pause requested`, `paused`), or its
/// nearest equivalent on 13, rendered in the same words.
fn replay_pause_state_sql(major: u32) -> &'static str {
    if major >= 14 {
        "SELECT pg_get_wal_replay_pause_state()"
    } else {
        "SELECT CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END"
    }
}

/// A shell command copying `member` of `source` (`.` for all) into `dest` through the tar
/// archive `archive`, leaving out `excluded`. It fails unless tar exits 0 or 1 ("some files
/// differ": changed or vanished while being read, expected of a running server's files).
fn tar_copy_command(
    source: &Path,
    dest: &Path,
    archive: &Path,
    member: &str,
    excluded: &[&str],
) -> String {
    let mut create = format!(
        "tar -C {} -cf {} --ignore-failed-read --warning=no-file-changed \
         --warning=no-file-removed --warning=no-file-shrank --warning=no-failed-read --anchored",
        sh_quote(&source.to_string_lossy()),
        sh_quote(&archive.to_string_lossy())
    );
    for pattern in excluded {
        create.push_str(" --exclude=");
        create.push_str(&sh_quote(pattern));
    }
    format!(
        "{create} {member}; test $? -le 1 && tar -C {dest} -xf {archive} && rm -f {archive}",
        member = sh_quote(member),
        dest = sh_quote(&dest.to_string_lossy()),
        archive = sh_quote(&archive.to_string_lossy()),
    )
}

/// `s` as one shell word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_sql_per_version() {
        let old = backup_sql(13, "cp a b");
        assert!(old.contains("pg_start_backup('pgvigil-testkit standby', true, false)"));
        assert!(old.contains("\\! cp a b\n"));
        assert!(old.contains("FROM pg_stop_backup(false, false)"));
        let new = backup_sql(15, "cp a b");
        assert!(
            new.contains("pg_backup_start('pgvigil-testkit standby', true) AS start_lsn \\gset")
        );
        assert!(new.contains("FROM pg_backup_stop(false)"));
        assert_eq!(backup_sql(18, "x"), backup_sql(15, "x"));
    }

    #[test]
    fn pause_state_per_version() {
        assert!(replay_pause_state_sql(13).contains("pg_is_wal_replay_paused"));
        assert!(replay_pause_state_sql(14).contains("pg_get_wal_replay_pause_state"));
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn tar_command() {
        let cmd = tar_copy_command(
            Path::new("/d/p"),
            Path::new("/d/s"),
            Path::new("/d/x.tar"),
            ".",
            &["./postmaster.pid", "./pg_wal/*"],
        );
        assert!(cmd.starts_with("tar -C '/d/p' -cf '/d/x.tar' "), "{cmd}");
        assert!(
            cmd.contains(" --exclude='./postmaster.pid' --exclude='./pg_wal/*' '.'; "),
            "{cmd}"
        );
        assert!(
            cmd.ends_with("test $? -le 1 && tar -C '/d/s' -xf '/d/x.tar' && rm -f '/d/x.tar'"),
            "{cmd}"
        );
    }

    #[test]
    fn tar_copies_and_excludes() {
        let root = std::env::temp_dir().join(format!("pgvigil-testkit-tar-{}", std::process::id()));
        let (src, dest) = (root.join("src"), root.join("dest"));
        fs::create_dir_all(src.join("pg_wal/archive_status")).unwrap();
        fs::create_dir_all(src.join("base/1")).unwrap();
        fs::create_dir_all(&dest).unwrap();
        for file in [
            "PG_VERSION",
            "postmaster.pid",
            "pg_wal/000000010000000000000001",
            "base/1/1259",
            "base/1/pg_internal.init",
        ] {
            fs::write(src.join(file), file).unwrap();
        }
        let cmd = tar_copy_command(&src, &dest, &root.join("a.tar"), ".", EXCLUDED);
        run(Command::new("sh").args(["-c", &cmd]), "tar");
        assert!(dest.join("PG_VERSION").is_file());
        assert!(dest.join("base/1/1259").is_file());
        assert!(dest.join("pg_wal").is_dir(), "the directory is kept");
        for gone in [
            "postmaster.pid",
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status",
            "base/1/pg_internal.init",
        ] {
            assert!(!dest.join(gone).exists(), "{gone} should be left out");
        }
        assert!(!root.join("a.tar").exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
