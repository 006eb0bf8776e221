//! Locating programs: PostgreSQL's binaries and the other real tools tests drive, and knowing
//! which OS user runs the server.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::versions::{debian_bindirs, default_bindir_result};

/// Appended to every "not found" panic.
const INSTALL_HINT: &str = "install it with scripts/install-test-deps.sh";

/// Directories searched after `PATH`: Debian puts daemons such as `pgbouncer` and `runuser` in
/// `sbin`, which a non-root `PATH` often lacks.
const EXTRA_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Locates the program `name` on `PATH`, then in `/usr/local/sbin`, `/usr/sbin`, `/sbin`, the
/// default PostgreSQL build's directory (see the crate docs) and every
/// `/usr/lib/postgresql/<ver>/bin`, highest version first.
///
/// # Panics
///
/// If no executable file of that name is found; the message lists where it looked and says to
/// install it with `scripts/install-test-deps.sh`.
pub fn find_program(name: &str) -> PathBuf {
    if let Some(path) = try_find_program(name) {
        return path;
    }
    panic!(
        "program `{name}` not found on PATH or in {}; {INSTALL_HINT}",
        EXTRA_DIRS
            .iter()
            .map(|d| d.to_string())
            .chain(["/usr/lib/postgresql/*/bin".to_owned()])
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// [`find_program`] without the panic.
pub(crate) fn try_find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(EXTRA_DIRS.iter().map(PathBuf::from));
    if let Ok(bindir) = default_bindir_result() {
        dirs.push(bindir.clone());
    }
    dirs.extend(debian_bindirs().into_iter().map(|(_, dir)| dir));
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The effective uid of this process, read without `unsafe` from `/proc/self/status`, falling
/// back to `id -u`.
pub(crate) fn effective_uid() -> u32 {
    static EUID: OnceLock<u32> = OnceLock::new();
    *EUID.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| parse_euid(&status))
            .or_else(|| {
                let out = Command::new("id").arg("-u").output().ok()?;
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            })
            .expect("cannot determine the effective uid (no /proc/self/status, no `id -u`)")
    })
}

/// The effective uid from the `Uid:` line of `/proc/<pid>/status` (real, effective, saved, fs).
pub(crate) fn parse_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Which OS user runs `initdb`, `pg_ctl` and the server.
#[derive(Debug, Clone)]
pub(crate) enum RunAs {
    /// The user running the tests (not root).
    CurrentUser,
    /// The tests run as root; PostgreSQL runs as `postgres` via `runuser`.
    Postgres {
        /// Path of util-linux's `runuser`.
        runuser: PathBuf,
    },
}

impl RunAs {
    /// `Postgres` when running as root, else `CurrentUser`.
    pub(crate) fn detect() -> RunAs {
        if effective_uid() != 0 {
            return RunAs::CurrentUser;
        }
        let known = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            known,
            "the tests run as root, so PostgreSQL must run as the OS user `postgres`, which does \
             not exist; {INSTALL_HINT} (the postgresql package creates it)"
        );
        RunAs::Postgres {
            runuser: find_program("runuser"),
        }
    }

    /// Whether the server runs as a different user than the tests.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, RunAs::Postgres { .. })
    }

    /// A name for cache keys.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            RunAs::CurrentUser => "self",
            RunAs::Postgres { .. } => "postgres",
        }
    }

    /// A command running `program` as this user, with a scrubbed `PG*` environment, C messages
    /// (we match on log text) and `/` as working directory (the test's directory may not be
    /// readable by `postgres`).
    pub(crate) fn command(&self, program: &Path) -> Command {
        let mut cmd = match self {
            RunAs::CurrentUser => Command::new(program),
            RunAs::Postgres { runuser } => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", "postgres", "--"]).arg(program);
                cmd
            }
        };
        crate::util::scrub_pg_env(&mut cmd);
        cmd.env("LC_ALL", "C").current_dir("/");
        cmd
    }

    /// The argument vector [`command`](Self::command) runs, for handing to a shell script.
    pub(crate) fn argv(&self, program: &Path) -> Vec<OsString> {
        let mut argv = Vec::new();
        if let RunAs::Postgres { runuser } = self {
            argv.extend([
                runuser.as_os_str(),
                "-u".as_ref(),
                "postgres".as_ref(),
                "--".as_ref(),
            ]);
        }
        argv.push(program.as_os_str());
        argv.into_iter().map(OsString::from).collect()
    }

    /// Gives `path` (recursively) to the user running the server, if that is not us.
    pub(crate) fn chown(&self, path: &Path) {
        if self.is_postgres() {
            crate::util::run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(path),
                "giving the data directory to the postgres user",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euid_from_status() {
        let status =
            "Name:\tcargo\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_euid(status), Some(0));
        assert_eq!(parse_euid("Name:\tx\n"), None);
    }

    #[test]
    fn finds_sh() {
        assert!(find_program("sh").ends_with("sh"));
    }

    #[test]
    #[should_panic(expected = "install it with scripts/install-test-deps.sh")]
    fn missing_program_panics_with_hint() {
        find_program("pgvigil-no-such-program");
    }
}
