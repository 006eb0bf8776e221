//! Small helpers shared by the crate and exported to tests.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often [`wait_until`] polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// It binds `127.0.0.1:0`, reads the port the kernel chose and closes the socket, so another
/// process can take the port before the caller binds it; callers that can, retry with a new port
/// (as [`TestCluster`](crate::TestCluster) does).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the address of a bound socket: {e}"))
        .port()
}

/// Calls `f` every 50 ms until it returns `Some`, and returns that value.
///
/// `f` is always called at least once, even with a zero `timeout`.
///
/// # Panics
///
/// If `timeout` passes first, with a message naming `what` (so write it as the thing awaited,
/// e.g. `"the exporter to serve /metrics"`).
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Runs `cmd` to completion and returns its output, panicking with its stderr if it fails to
/// start or exits unsuccessfully. `what` names the action for the panic message.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Output {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{what}: {cmd:?} exited with {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim_end(),
            String::from_utf8_lossy(&output.stderr).trim_end(),
        );
    }
    output
}

/// Removes every `PG*` variable from `cmd`'s environment, so libpq and the server tools see
/// only what we pass explicitly (a developer's `PGSSLMODE=require` or `PGOPTIONS` must not leak
/// into a private cluster).
pub(crate) fn scrub_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

/// A number that differs between runs, to make names unique across processes whose pids were
/// reused.
pub(crate) fn salt() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Whether a process with this pid is running. A zombie counts as dead: a killed postmaster is
/// re-parented to init, which in a container may be slow to reap it, or never do so.
///
/// Assumes alive when `/proc` is unavailable, so callers that clean up after dead processes
/// err on the side of leaving things alone.
pub(crate) fn pid_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(process_state(&stat), Some('Z' | 'X')),
        Err(_) => false,
    }
}

/// The state letter from `/proc/<pid>/stat` (`pid (comm) S ...`; `comm` may hold `)`).
pub(crate) fn process_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The last `n` lines of `text`, for panic messages.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    for line in &lines[start..] {
        let _ = writeln!(out, "    {line}");
    }
    out
}

/// Lower-case base-36 rendering of `n`.
pub(crate) fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base-36 digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port should still be free");
    }

    #[test]
    fn wait_until_returns_first_some() {
        let mut calls = 0;
        let v = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!(v, 30);
    }

    #[test]
    fn wait_until_calls_once_with_zero_timeout() {
        assert_eq!(wait_until("anything", Duration::ZERO, || Some(1)), 1);
    }

    #[test]
    #[should_panic(expected = "waiting for Godot")]
    fn wait_until_panics_on_timeout() {
        wait_until::<()>("Godot", Duration::from_millis(120), || None);
    }

    #[test]
    fn last_lines_keeps_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "    b\n    c\n");
        assert_eq!(last_lines("a", 5), "    a\n");
        assert_eq!(last_lines("", 5), "");
    }

    #[test]
    fn base36_renders() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(u64::MAX), "3w5e11264sgsf");
    }

    #[test]
    fn process_states() {
        assert_eq!(process_state("42 (postgres) S 1 42 42 0"), Some('S'));
        assert_eq!(process_state("42 (a) b) Z 1 42"), Some('Z'));
        assert_eq!(process_state("garbage"), None);
    }

    #[test]
    fn own_pid_is_alive() {
        assert!(pid_alive(std::process::id()));
        // Above the kernel's pid_max limit (4194304), so never a live process.
        assert!(!pid_alive(4_194_305) || !Path::new("/proc/self").exists());
    }
}
