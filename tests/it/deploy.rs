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

#[test]
fn packaged_unit_is_the_documented_unit_for_the_binary_in_usr_bin() {
    // deploy/debian/pgvigil.service (what the .deb installs) differs from the by-hand unit only
    // in its header comment and in running /usr/bin/pgvigil instead of /usr/local/bin/pgvigil.
    let body = |path: &str| {
        let text = std::fs::read_to_string(repo(path)).unwrap();
        text[text.find("[Unit]").expect("[Unit]")..].to_owned()
    };
    let by_hand = body("deploy/systemd/pgvigil.service");
    let packaged = body("deploy/debian/pgvigil.service");
    assert!(by_hand.contains("/usr/local/bin/pgvigil"));
    assert_eq!(
        packaged,
        by_hand.replace("/usr/local/bin/pgvigil", "/usr/bin/pgvigil"),
        "deploy/debian/pgvigil.service drifted from deploy/systemd/pgvigil.service"
    );
}

#[test]
fn dockerfile_passes_hadolint() {
    let hadolint = crate::support_tools::python_tool("hadolint");
    let out = Command::new(hadolint)
        .arg(repo("deploy/docker/Dockerfile"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hadolint deploy/docker/Dockerfile:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile() -> Vec<String> {
    let text = std::fs::read_to_string(repo("deploy/docker/Dockerfile")).unwrap();
    text.replace("\\\n", " ")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn dockerfile_copies_what_exists_and_builds_the_packaged_binary() {
    // There is no Docker engine here to build the image; what can be checked without one is.
    let lines = dockerfile();
    for line in &lines {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.starts_with("--from=") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(
                repo(source).exists(),
                "Dockerfile copies {source}, which does not exist"
            );
        }
    }
    // The same build as `cargo deb`'s: release profile, Cargo.lock, default features.
    let build = lines
        .iter()
        .find(|l| l.starts_with("RUN cargo build"))
        .expect("a RUN cargo build");
    assert_eq!(build, "RUN cargo build --release --locked --bin pgvigil");
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    let deb = &manifest[manifest.find("[package.metadata.deb]").unwrap()..];
    assert!(
        !deb.contains("features"),
        "the .deb is built with other features than the image"
    );
    assert!(lines.contains(&"WORKDIR /src".to_owned()));
    assert!(lines.contains(
        &"COPY --from=build /src/target/release/pgvigil /usr/local/bin/pgvigil".to_owned()
    ));
    // The README's build command is the Dockerfile's own.
    let header = std::fs::read_to_string(repo("deploy/docker/Dockerfile")).unwrap();
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let command = "docker build -f deploy/docker/Dockerfile -t pgvigil .";
    assert!(
        header.contains(command) && readme.contains(command),
        "{command}"
    );
}

#[test]
fn crate_package_ships_the_source_and_the_operator_kit_only() {
    // What `cargo install` of a published pgvigil builds from; `cargo package` (in .ci/run)
    // also builds it.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "package",
            "--list",
            "--allow-dirty",
            "--offline",
            "-p",
            "pgvigil",
        ])
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = String::from_utf8(out.stdout).unwrap();
    let files: Vec<&str> = files.lines().collect();
    for wanted in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "src/main.rs",
        "config/pgvigil.example.toml",
        "dashboards/overview.json",
        "deploy/systemd/pgvigil.service",
        "deploy/debian/postinst",
        "deploy/sql/monitoring_role.sql",
        "docs/runbooks/ImportRowShortfall.md",
    ] {
        assert!(
            files.contains(&wanted),
            "the crate does not ship {wanted}: {files:?}"
        );
    }
    for unwanted in [
        "tests/",
        "benches/",
        "examples/",
        ".ci/",
        "scripts/",
        "crates/",
        "dashboards/generate.py",
        "docs/screenshots/",
    ] {
        assert!(
            !files.iter().any(|f| f.starts_with(unwanted)),
            "the crate ships {unwanted}: {files:?}"
        );
    }
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    for key in [
        "description",
        "license",
        "repository",
        "readme",
        "keywords",
        "categories",
    ] {
        let declared = manifest.contains(&format!("\n{key} = "))
            || manifest.contains(&format!("\n{key}.workspace = true"));
        assert!(declared, "Cargo.toml [package] has no {key}");
    }
}
