//! The Debian package (`cargo deb`, `[package.metadata.deb]` in Cargo.toml), checked the way an
//! operator meets it.
//!
//! Which package: `$PGVIGIL_TEST_DEB` when set (.ci/run builds the release package and sets
//! it), otherwise one packaged here from the binary these tests were built with (see
//! [`Deb`]): the same assets, maintainer scripts and unit without a release build.
//!
//! 1. `deb_ships_the_daemon_its_unit_config_and_operator_kit`, as any user: `dpkg-deb --info`,
//!    `--contents` and `-x` show every file where the README says, with its mode; the shipped
//!    files are the repository's; the unpacked binary checks the unpacked config; and
//!    `systemd-analyze verify` passes the unit without a warning.
//! 2. `deb_installs_with_dpkg_and_serves_metrics_as_its_unit_user` needs root (CI runs as
//!    root) and fails saying so otherwise: it installs the package on this machine with
//!    `dpkg -i`, checks what the maintainer scripts did (system user, state directory, config
//!    readable by the service group only, conffile), points the installed config at a test
//!    cluster as an operator would, runs the unit's ExecStartPre and ExecStart as the unit's
//!    user the way systemd would (there is no systemd here to start it), scrapes
//!    `pgvigil_up 1`, stops it with SIGTERM and purges the package. Test runs of different
//!    checkouts on one machine take turns through a lock; a leftover of a killed run is purged
//!    first, a pgvigil installed by anyone else is never touched.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use pgvigil_testkit::{TestCluster, free_port, wait_until};

use crate::operator_kit::repo;
use crate::support::{Metrics, http_get};
use crate::support_package::{
    Deb, Installed, KillOnDrop, MachineLock, Unit, is_root, package_status, run, stdout,
    user_exists,
};

const UNIT: &str = "usr/lib/systemd/system/pgvigil.service";
const CONFIG: &str = "etc/pgvigil/pgvigil.toml";

/// (path in the package, path in the repository, mode) of every file the package must ship.
fn expected_files() -> Vec<(String, String, &'static str)> {
    let mut out = vec![
        ("usr/bin/pgvigil".to_owned(), String::new(), "-rwxr-xr-x"),
        (
            CONFIG.to_owned(),
            "config/pgvigil.example.toml".to_owned(),
            "-rw-r-----",
        ),
        (
            UNIT.to_owned(),
            "deploy/debian/pgvigil.service".to_owned(),
            "-rw-r--r--",
        ),
    ];
    let dirs = [
        ("docs/runbooks", ".md", "usr/share/doc/pgvigil/runbooks"),
        ("deploy/sql", ".sql", "usr/share/pgvigil/sql"),
        (
            "dashboards",
            ".json",
            "usr/share/pgvigil/grafana/dashboards",
        ),
        (
            "deploy/prometheus/rules",
            ".yml",
            "usr/share/pgvigil/prometheus/rules",
        ),
    ];
    for (dir, ext, to) in dirs {
        for entry in std::fs::read_dir(repo(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(ext) {
                out.push((
                    format!("{to}/{name}"),
                    format!("{dir}/{name}"),
                    "-rw-r--r--",
                ));
            }
        }
    }
    for (from, to) in [
        ("README.md", "usr/share/doc/pgvigil/README.md"),
        (
            "config/pgvigil.example.toml",
            "usr/share/doc/pgvigil/examples/pgvigil.example.toml",
        ),
        (
            "dashboards/provisioning/dashboards/pgvigil.yml",
            "usr/share/pgvigil/grafana/provisioning/dashboards/pgvigil.yml",
        ),
        (
            "dashboards/provisioning/datasources/pgvigil.yml",
            "usr/share/pgvigil/grafana/provisioning/datasources/pgvigil.yml",
        ),
        (
            "deploy/prometheus/scrape.yml",
            "usr/share/pgvigil/prometheus/scrape.yml",
        ),
        (
            "deploy/alertmanager/alertmanager.yml",
            "usr/share/pgvigil/alertmanager/alertmanager.yml",
        ),
    ] {
        out.push((to.to_owned(), from.to_owned(), "-rw-r--r--"));
    }
    out
}

/// `systemd-analyze verify` of the unit text, with the daemon at `binary`: it must pass
/// without a word (verify exits 0 on unknown keys and bad values, and only says so).
fn verify_unit(unit_text: &str, binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("pgvigil.service");
    std::fs::write(
        &unit,
        unit_text.replace("/usr/bin/pgvigil", binary.to_str().unwrap()),
    )
    .unwrap();
    let out = run("systemd-analyze", &["verify", unit.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.trim().is_empty(), "systemd-analyze verify:\n{said}");
}

#[test]
fn deb_ships_the_daemon_its_unit_config_and_operator_kit() {
    let deb = Deb::get();
    let field = |name: &str| {
        stdout("dpkg-deb", &["--field", deb.arg(), name])
            .trim()
            .to_owned()
    };
    assert_eq!(field("Package"), "pgvigil");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert!(field("Depends").contains("adduser"), "{}", field("Depends"));

    // Every file where it belongs, root-owned, with its mode.
    let listing = stdout("dpkg-deb", &["--contents", deb.arg()]);
    for (path, _, mode) in expected_files() {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("the package has no /{path}:\n{listing}"));
        assert!(line.starts_with(&format!("{mode} 0/0 ")), "/{path}: {line}");
    }
    let control = tempfile::tempdir().unwrap();
    run(
        "dpkg-deb",
        &["--control", deb.arg(), control.path().to_str().unwrap()],
    );
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(
        conffiles,
        format!("/{CONFIG}\n"),
        "only the config is a conffile"
    );

    // The files are the repository's, and the binary runs and reads the shipped config.
    let root = tempfile::tempdir().unwrap();
    run(
        "dpkg-deb",
        &["--extract", deb.arg(), root.path().to_str().unwrap()],
    );
    for (path, from, _) in expected_files() {
        if !from.is_empty() {
            assert!(
                std::fs::read(root.path().join(&path)).unwrap()
                    == std::fs::read(repo(&from)).unwrap(),
                "/{path} is not {from}"
            );
        }
    }
    let binary = root.path().join("usr/bin/pgvigil");
    let version = stdout(binary.to_str().unwrap(), &["--version"]);
    assert_eq!(
        version.trim(),
        format!("pgvigil {}", env!("CARGO_PKG_VERSION"))
    );
    let config = root.path().join(CONFIG);
    let checked = stdout(
        binary.to_str().unwrap(),
        &["check-config", config.to_str().unwrap()],
    );
    assert!(checked.contains(": ok"), "{checked}");
    verify_unit(
        &std::fs::read_to_string(root.path().join(UNIT)).unwrap(),
        &binary,
    );
}

/// (owner:group, octal mode) of `path`, from stat(1).
fn owner_and_mode(path: &str) -> (String, String) {
    let out = stdout("stat", &["--format=%U:%G %a", path]);
    let (owner, mode) = out.trim().split_once(' ').unwrap();
    (owner.to_owned(), mode.to_owned())
}

/// What postinst must have done: the system user, its state directory, the config readable by
/// the service group only (kept across upgrades by a statoverride), the conffile registered.
fn check_maintainer_scripts(installed: &Installed) {
    let passwd = stdout("getent", &["passwd", "pgvigil"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields[5], "/var/lib/pgvigil", "home: {passwd}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "shell: {passwd}");
    let uid: u32 = fields[2].parse().unwrap();
    if installed.created_user() {
        assert!(uid < 1000, "not a system user: {passwd}");
    }
    assert_eq!(
        owner_and_mode("/var/lib/pgvigil"),
        ("pgvigil:pgvigil".into(), "700".into())
    );
    assert_eq!(
        owner_and_mode("/etc/pgvigil/pgvigil.toml"),
        ("root:pgvigil".into(), "640".into())
    );
    let overrides = stdout(
        "dpkg-statoverride",
        &["--list", "/etc/pgvigil/pgvigil.toml"],
    );
    assert_eq!(
        overrides.trim(),
        "root pgvigil 640 /etc/pgvigil/pgvigil.toml"
    );
    let conffiles = stdout(
        "dpkg-query",
        &["--show", "--showformat=${Conffiles}", "pgvigil"],
    );
    assert!(
        conffiles.contains("/etc/pgvigil/pgvigil.toml"),
        "{conffiles}"
    );
    assert_eq!(package_status().as_deref(), Some("install ok installed"));
}

/// Scrapes `addr` until pgvigil reports `target` up, or panics after `timeout`.
fn wait_for_up(addr: std::net::SocketAddr, target: &str, timeout: Duration) -> f64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    wait_until(
        &format!("pgvigil_up{{target=\"{target}\"}} 1 on {addr}"),
        timeout,
        || {
            let body = runtime.block_on(async {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(_) => http_get(addr, "/metrics", None).await.1,
                    Err(_) => String::new(),
                }
            });
            Metrics::parse(&body)
                .value("pgvigil_up", &[("target", target)])
                .filter(|v| *v == 1.0)
        },
    )
}

/// Points the installed config at `dsn`, listening on `port`, as an operator would: edits the
/// conffile in place, so its owner and mode stay.
fn configure(port: u16, dsn: &str) {
    std::fs::write(
        format!("/{CONFIG}"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[alerts]\nstate_dir = \"/var/lib/pgvigil\"\n\
             [[targets]]\nname = \"main\"\ndsn = \"{dsn}\"\npoll_interval = \"200ms\"\n"
        ),
    )
    .unwrap();
    assert_eq!(
        owner_and_mode("/etc/pgvigil/pgvigil.toml"),
        ("root:pgvigil".into(), "640".into())
    );
}

/// Runs the unit's ExecStartPre commands to success and starts its ExecStart, as the unit's
/// user; the daemon, with its stderr going to `log`.
fn start_as_the_unit_does(unit: &Unit, log: &tempfile::NamedTempFile) -> KillOnDrop {
    assert_eq!(
        (unit.user.as_str(), unit.group.as_str()),
        ("pgvigil", "pgvigil")
    );
    let as_user =
        |command: &[String]| unit.command(command, "/var/lib/pgvigil", "/usr/sbin/nologin");
    for pre in &unit.exec_start_pre {
        let out = as_user(pre).output().unwrap();
        assert!(
            out.status.success(),
            "ExecStartPre {pre:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    KillOnDrop(
        as_user(&unit.exec_start)
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    )
}

/// SIGTERM, as `systemctl stop` sends: the daemon exits cleanly within the unit's
/// TimeoutStopSec and writes its alert state into the state directory, which works only as the
/// service user.
fn stop_as_systemd_does(mut daemon: KillOnDrop, log: &tempfile::NamedTempFile) {
    run("kill", &["-TERM", &daemon.0.id().to_string()]);
    let status = wait_until(
        "pgvigil to exit after SIGTERM",
        Duration::from_secs(10),
        || daemon.0.try_wait().unwrap(),
    );
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert!(status.success(), "pgvigil exited with {status}:\n{stderr}");
    assert_eq!(
        owner_and_mode("/var/lib/pgvigil/alerts.json").0,
        "pgvigil:pgvigil",
        "{stderr}"
    );
}

/// `dpkg --purge` leaves nothing of the package, nor the user if the install created it.
fn purge_and_check(installed: Installed) {
    let created_user = installed.created_user();
    installed.purge();
    for gone in [
        "/usr/bin/pgvigil",
        "/etc/pgvigil/pgvigil.toml",
        "/var/lib/pgvigil",
        "/usr/lib/systemd/system/pgvigil.service",
    ] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is still there after dpkg --purge"
        );
    }
    assert_eq!(package_status(), None);
    if created_user {
        assert!(!user_exists("pgvigil"));
    }
}

#[test]
fn deb_installs_with_dpkg_and_serves_metrics_as_its_unit_user() {
    assert!(
        is_root(),
        "this test installs the package with dpkg -i and runs pgvigil as the package's user, \
         which needs root: run it as root (CI does), e.g. sudo -E scripts/test.sh -E \
         'test(deb_installs)'"
    );
    let deb = Deb::get();
    let _turn = MachineLock::acquire("pgvigil-package-test.lock");
    let installed = Installed::install(&deb);
    check_maintainer_scripts(&installed);
    let unit_text = std::fs::read_to_string(format!("/{UNIT}")).unwrap();
    verify_unit(&unit_text, Path::new("/usr/bin/pgvigil"));

    let cluster = TestCluster::start();
    let port = free_port();
    configure(port, &cluster.url("postgres"));
    let log = tempfile::NamedTempFile::new().unwrap();
    let daemon = start_as_the_unit_does(&Unit::parse(&unit_text), &log);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(wait_for_up(addr, "main", crate::support::CEILING), 1.0);
    stop_as_systemd_does(daemon, &log);
    purge_and_check(installed);
}
