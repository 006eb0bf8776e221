//! Watching a postmaster from outside: `postmaster.pid`, its shared memory, its log, and
//! stopping it.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::programs::RunAs;
use crate::util::pid_alive;

/// How long a server may take to stop.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a starting or stopping server is checked.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The pid in `<data>/postmaster.pid`, if that process is alive (and not a zombie).
pub(crate) fn live_postmaster(data: &Path) -> Option<u32> {
    let contents = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    parse_pid_file(&contents)
        .map(|(pid, _)| pid)
        .filter(|pid| pid_alive(*pid))
}

/// `pg_ctl stop -W -m <mode>`, then waits until the postmaster is gone.
///
/// We poll rather than let pg_ctl wait (`-w`): pg_ctl looks every 100 ms, an immediate stop
/// takes about 10; and pg_ctl would wait out its whole timeout for a zombie postmaster.
pub(crate) fn stop_server(
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

/// The postmaster's pid from the contents of `postmaster.pid`, and whether it says the server is
/// up (line 8 is the status since PostgreSQL 10: `starting`, `ready`, `stopping`, `standby`).
/// `None` while the file is still being written.
///
/// `standby` counts as up, as for `pg_ctl start -w`: a standby with `hot_standby = off` stays
/// there. With `hot_standby = on` (the default) it goes on to `ready` once it accepts
/// read-only connections.
pub(crate) fn parse_pid_file(contents: &str) -> Option<(u32, bool)> {
    let mut lines = contents.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let ready = lines
        .nth(6)
        .is_some_and(|status| matches!(status.trim(), "ready" | "standby"));
    Some((pid, ready))
}

/// The System V shared memory id from `postmaster.pid` (line 7: `<key> <shmid>`).
pub(crate) fn parse_shmid(contents: &str) -> Option<u32> {
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
pub(crate) fn shm_attachments(shmid: u32) -> Option<u64> {
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
pub(crate) enum Startup {
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
pub(crate) fn startup_state(
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
pub(crate) fn port_taken(log: &str) -> bool {
    log.contains("Address already in use")
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
        let standby = ready.replace("ready   ", "standby ");
        assert_eq!(parse_pid_file(&standby), Some((4242, true)));
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
}
