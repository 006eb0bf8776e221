//! The deployment files are checked by the programs that read them.

use std::path::{Path, PathBuf};
use std::process::Command;

use pgvigil::Config;
use pgvigil::config::LibpqEnv;
use pgvigil_testkit::find_program;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(find_program(program))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_scrape_config_is_valid() {
    run_ok(
        "promtool",
        &[
            "check",
            "config",
            repo("deploy/prometheus/scrape.yml").to_str().unwrap(),
        ],
    );
}

#[test]
fn alertmanager_example_is_valid() {
    run_ok(
        "amtool",
        &[
            "check-config",
            repo("deploy/alertmanager/alertmanager.yml")
                .to_str()
                .unwrap(),
        ],
    );
}

#[test]
fn kubernetes_config_map_holds_a_valid_pgvigil_config() {
    let manifest = std::fs::read_to_string(repo("deploy/kubernetes/sidecar.yaml")).unwrap();
    let start = manifest
        .find("pgvigil.toml: |\n")
        .expect("config map entry")
        + "pgvigil.toml: |\n".len();
    let toml: String = manifest[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    // The secret is mounted at run time; stand in for it.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "secret\n").unwrap();
    let toml = toml.replace(
        "/var/run/secrets/pgvigil/password",
        secret.to_str().unwrap(),
    );
    let config = Config::parse(Path::new("sidecar.yaml"), &toml, &LibpqEnv::default())
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.targets[0].name, "app");
    // The probes point at endpoints that exist.
    assert!(manifest.contains("path: /readyz") && manifest.contains("path: /healthz"));
}

#[test]
fn systemd_unit_runs_the_documented_commands() {
    let unit = std::fs::read_to_string(repo("deploy/systemd/pgvigil.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/pgvigil run --config /etc/pgvigil/pgvigil.toml")
    );
    assert!(unit.contains("ExecStartPre=/usr/local/bin/pgvigil check-config"));
    // check-config's exit status for a bad config must not be restarted in a loop.
    assert!(unit.contains("RestartPreventExitStatus=2"));
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("StateDirectory=pgvigil"));
}

#[test]
fn shipped_audit_ddl_is_the_one_the_library_creates() {
    // Two copies of the same table definition: the SQL file operators run by hand and the
    // constant pgvigil-timing's ImportAudit::ensure_table executes. They must not drift.
    let sql = std::fs::read_to_string(repo("deploy/sql/import_audit.sql")).unwrap();
    assert!(
        sql.contains(pgvigil_timing::IMPORT_AUDIT_DDL),
        "deploy/sql/import_audit.sql no longer contains pgvigil_timing::IMPORT_AUDIT_DDL verbatim"
    );
}
