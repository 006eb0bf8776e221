//! Support for tests/it/package.rs: the package under test, a machine-wide lock, an installation
//! that purges itself, and the systemd unit read as systemd would run it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use pgvigil_testkit::find_program;

use crate::operator_kit::repo;

/// Runs `program args` (a name found by `find_program`, or a path); its output, or a panic with
/// it when it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let path = if program.contains('/') {
        PathBuf::from(program)
    } else {
        find_program(program)
    };
    let out = Command::new(path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// stdout of `program args`, which must succeed.
pub fn stdout(program: &str, args: &[&str]) -> String {
    String::from_utf8(run(program, args).stdout).unwrap()
}

/// Whether this process runs as root (uid 0), from /proc/self/status.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        == Some("0")
}

// --- the package under test ------------------------------------------------------------------

/// The .deb the tests check: `$PGVIGIL_TEST_DEB` when set (.ci/run builds the release package
/// with `cargo deb` and sets it), otherwise one packaged here from the binary these tests were
/// built with: `cargo deb --no-build` with the same assets, maintainer scripts and unit, for the
/// debug build cargo-deb strips.
#[derive(Debug)]
pub struct Deb {
    pub path: PathBuf,
    /// Where a package built here lives; removed on drop.
    _dir: Option<tempfile::TempDir>,
}

impl Deb {
    pub fn get() -> Deb {
        if let Some(path) = std::env::var_os("PGVIGIL_TEST_DEB") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "PGVIGIL_TEST_DEB={} is not a file",
                path.display()
            );
            return Deb { path, _dir: None };
        }
        let dir = tempfile::tempdir().unwrap();
        // cargo-deb takes the binary from <target dir>/release/: give it ours there.
        let release = dir.path().join("target/release");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_pgvigil"), release.join("pgvigil")).unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(&cargo)
            .args([
                "deb",
                "--no-build",
                "--offline",
                "--fast",
                "--quiet",
                "--manifest-path",
            ])
            .arg(repo("Cargo.toml"))
            .arg("--output")
            .arg(dir.path())
            .env("CARGO_TARGET_DIR", dir.path().join("target"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo deb failed (scripts/install-test-deps.sh installs cargo-deb):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("cargo deb wrote no .deb");
        Deb {
            path,
            _dir: Some(dir),
        }
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

// --- a lock across test runs -----------------------------------------------------------------

/// An exclusive lock on a file under /run/lock, held by `flock(1)` until dropped: test runs of
/// different checkouts on one machine install the same package and must take turns. `flock`
/// holds the lock while its `cat` reads our stdin, so the lock also goes when this process dies.
#[derive(Debug)]
pub struct MachineLock(Child);

impl MachineLock {
    pub fn acquire(name: &str) -> MachineLock {
        let dir = Path::new("/run/lock");
        let dir = if dir.is_dir() {
            dir.to_owned()
        } else {
            std::env::temp_dir()
        };
        let mut child = Command::new(find_program("flock"))
            .arg("--exclusive")
            .arg(dir.join(name))
            .args(["-c", "echo locked && exec cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "flock did not take {name}");
        MachineLock(child)
    }
}

impl Drop for MachineLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

// --- an installation that cleans up after itself -----------------------------------------------

/// Left while the test's package is installed, so a later run can tell a leftover of a killed
/// run (which it purges) from a pgvigil an operator installed (which it refuses to touch).
/// Holds "created-user" when the test's install created the pgvigil user.
const MARKER: &str = "/var/tmp/pgvigil-package-test.installed";

/// dpkg's status of package `pgvigil`, e.g. "install ok installed"; None if dpkg knows none.
pub fn package_status() -> Option<String> {
    let out = Command::new(find_program("dpkg-query"))
        .args(["--show", "--showformat=${Status}", "pgvigil"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !status.ends_with("not-installed")).then_some(status)
}

pub fn user_exists(name: &str) -> bool {
    Command::new(find_program("getent"))
        .args(["passwd", name])
        .output()
        .unwrap()
        .status
        .success()
}

fn remove_user() {
    run("userdel", &["pgvigil"]);
    if Command::new(find_program("getent"))
        .args(["group", "pgvigil"])
        .output()
        .unwrap()
        .status
        .success()
    {
        run("groupdel", &["pgvigil"]);
    }
}

/// The test's package, installed with `dpkg -i`; purged (and the user it created removed) by
/// [`purge`](Self::purge), or on drop if the test fails first.
#[derive(Debug)]
pub struct Installed {
    created_user: bool,
    purged: bool,
}

impl Installed {
    pub fn install(deb: &Deb) -> Installed {
        if let Some(status) = package_status() {
            let marker = std::fs::read_to_string(MARKER).unwrap_or_else(|_| {
                panic!(
                    "package pgvigil is on this machine ({status}) and this test did not install \
                     it; the test installs and purges its own: dpkg --purge pgvigil first"
                )
            });
            // A run that was killed before it could clean up.
            run("dpkg", &["--purge", "pgvigil"]);
            if marker.contains("created-user") && user_exists("pgvigil") {
                remove_user();
            }
        }
        let created_user = !user_exists("pgvigil");
        std::fs::write(MARKER, if created_user { "created-user\n" } else { "\n" }).unwrap();
        run("dpkg", &["--install", deb.arg()]);
        Installed {
            created_user,
            purged: false,
        }
    }

    pub fn created_user(&self) -> bool {
        self.created_user
    }

    /// `dpkg --purge pgvigil`, then the user if the install created it.
    pub fn purge(mut self) {
        self.purged = true;
        run("dpkg", &["--purge", "pgvigil"]);
        if self.created_user {
            remove_user();
        }
        std::fs::remove_file(MARKER).unwrap();
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.purged {
            return;
        }
        // Best effort: the test has failed already.
        let _ = Command::new(find_program("dpkg"))
            .args(["--purge", "pgvigil"])
            .output();
        if self.created_user {
            let _ = Command::new(find_program("userdel"))
                .arg("pgvigil")
                .output();
            let _ = Command::new(find_program("groupdel"))
                .arg("pgvigil")
                .output();
        }
        let _ = std::fs::remove_file(MARKER);
    }
}

// --- the unit ----------------------------------------------------------------------------------

/// What a systemd unit says about running its service, read from its `[Service]` section.
#[derive(Debug, Default)]
pub struct Unit {
    pub user: String,
    pub group: String,
    pub exec_start_pre: Vec<Vec<String>>,
    pub exec_start: Vec<String>,
    pub environment: Vec<(String, String)>,
}

impl Unit {
    pub fn parse(text: &str) -> Unit {
        let mut unit = Unit::default();
        let mut in_service = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            let Some((key, value)) = line.split_once('=').filter(|_| in_service) else {
                continue;
            };
            // Split on blanks, which is all systemd does for a command without quotes,
            // specifiers or a prefix like '-' or '!'.
            let words = || {
                assert!(
                    !value.contains(['"', '\'', '%', '\\'])
                        && !value.starts_with(['-', '@', ':', '+', '!']),
                    "{key}={value}: quoting, specifiers and prefixes are not read here"
                );
                value
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            };
            match key {
                "User" => unit.user = value.to_owned(),
                "Group" => unit.group = value.to_owned(),
                "ExecStartPre" => unit.exec_start_pre.push(words()),
                "ExecStart" => unit.exec_start = words(),
                "Environment" => {
                    let (k, v) = value.split_once('=').unwrap();
                    unit.environment.push((k.to_owned(), v.to_owned()));
                }
                _ => {}
            }
        }
        assert!(
            !unit.user.is_empty() && !unit.exec_start.is_empty(),
            "{unit:?}"
        );
        unit
    }

    /// `command` as the unit's user and group, with the clean environment systemd gives a
    /// service (PATH, the user's HOME/USER/LOGNAME/SHELL, the unit's Environment=) in `/`.
    pub fn command(&self, command: &[String], home: &str, shell: &str) -> Command {
        let mut cmd = Command::new(find_program("setpriv"));
        cmd.arg(format!("--reuid={}", self.user))
            .arg(format!("--regid={}", self.group))
            .arg("--init-groups")
            .arg("--")
            .args(command)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin")
            .env("HOME", home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user)
            .env("SHELL", shell)
            .current_dir("/");
        for (k, v) in &self.environment {
            cmd.env(k, v);
        }
        cmd
    }
}

/// A child process killed on drop, so a failing test leaves no daemon behind.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
