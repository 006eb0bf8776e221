//! The command line: check-config on the shipped and on broken configs, and no-config mode.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pgvigil_testkit::{TestCluster, free_port, wait_until};

use crate::support::{Metrics, http_get, pgvigil_bin};

fn check_config(path: &Path) -> Output {
    Command::new(pgvigil_bin())
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["config/pgvigil.example.toml", "config/pgvigil.minimal.toml"] {
        let out = check_config(&root.join(file));
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn example_config_documents_every_key_the_parser_accepts() {
    // Every key of every table in the example must be one the parser knows (check-config
    // passes), and every key the parser knows must be in the example: misspell one and it is
    // rejected as unknown, which proves the key is real.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("config/pgvigil.example.toml")).unwrap();
    for key in [
        "listen",
        "web_config_file",
        "auth_exempt_paths",
        "enable_lifecycle",
        // [discovery]
        "files",
        "refresh_interval",
        "level",
        "format",
        "otlp_enabled",
        "otlp_endpoint",
        "service_name",
        "name",
        "dsn",
        "dsn_env",
        "password_file",
        "tls_ca_file",
        "tls_verify",
        "tls_cert_file",
        "tls_key_file",
        "poll_interval",
        "connect_timeout",
        "statement_timeout",
        "lock_timeout",
        "reconnect_max_backoff",
        "application_names",
        // [targets.tables] and [targets.imports]
        "enabled",
        "include",
        "exclude",
        "max_tables",
        "exact_count_tables",
        "exact_count_interval",
        "exact_count_timeout",
        "exact_count_budget",
        "grace_period",
        "recheck_window",
        "recheck_interval",
        "stall_after",
        "max_duration",
        "max_imports",
        "table",
        "import_id",
        "target_table",
        "id_column",
        "source_name",
        "expected_rows",
        "rejected_rows",
        "skipped_rows",
        "reported_rows",
        "xact_id",
        "status",
        "created_at",
        "heartbeat_at",
        "finished_at",
        "error_message",
        // alerting
        "state_dir",
        "resend_interval",
        "runbook_base_url",
        "external_url",
        "enabled",
        "url",
        "urls",
        "timeout",
        "max_backoff",
        "basic_auth_user",
        "basic_auth_password_file",
        "bearer_token_file",
        "tls_config",
        "severity",
        "for",
        "warning_ratio",
        "critical_ratio",
        "max_idle",
        "only_with_writes",
        "max_age",
        "ignore_application_names",
        // every rule's own parameters (a unit test in src/alert/rules checks their values)
        "keep_firing_for",
        "min_waiting",
        "max_wait",
        "ratio",
        "min_missing_rows",
        "min_missing_ratio",
        "include_surplus",
        "min_ratio",
        "min_rows",
        "mean_threshold",
        "min_calls",
        "regression_factor",
        "min_increase",
        "enabled",
        "top_k",
        "rank_window",
        "query_text_length",
        "baseline_window",
        "baseline_min_samples",
    ] {
        assert!(
            example.contains(&format!("{key} = ")),
            "config/pgvigil.example.toml does not document `{key}`"
        );
    }
}

#[test]
fn broken_configs_exit_2_with_file_line_column_and_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("syntax", "[[targets]\nname = \"a\"\n", ":1:"),
        (
            "unknown key",
            "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\npoll_intervall = \"5s\"\n",
            ":4:1: unknown key `poll_intervall`; did you mean `poll_interval`?",
        ),
        (
            "bad duration",
            "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\npoll_interval = \"soon\"\n",
            ":4:17: invalid duration \"soon\"",
        ),
        (
            "missing name",
            "[[targets]]\ndsn = \"host=h\"\n",
            ":1:1: missing required key `name`",
        ),
        (
            "duplicate names",
            "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n\n[[targets]]\nname = \"a\"\ndsn = \"host=h2\"\n",
            ":6:8: duplicate target name \"a\" (first used on line 2)",
        ),
        (
            "unreadable password file",
            "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\npassword_file = \"/nonexistent/secret\"\n",
            ":4:17: cannot read password_file /nonexistent/secret",
        ),
        (
            "timeout past postgres",
            "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\nstatement_timeout = \"30d\"\n",
            ":4:21: statement_timeout = \"30days\" is more than PostgreSQL accepts",
        ),
        (
            "state_dir is a file",
            "[alerts]\nstate_dir = \"/etc/hostname\"\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n",
            ":2:13: state_dir = \"/etc/hostname\" is not a directory (/etc/hostname is a file)",
        ),
        (
            "duplicate key",
            "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\ndsn = \"host=i\"\n",
            ":4:1: duplicate key `dsn`",
        ),
    ];
    for (what, text, expected) in cases {
        let path = dir.path().join(format!("{}.toml", what.replace(' ', "_")));
        std::fs::write(&path, text).unwrap();
        let out = check_config(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        let prefix = path.display().to_string();
        assert!(stderr.starts_with(&prefix), "{what}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{what}: expected {expected:?} in {stderr}"
        );
    }
}

#[test]
fn check_config_locates_non_utf8_bytes_and_tries_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(
        &path,
        b"[[targets]]\nname = \"caf\xe9\"\ndsn = \"host=h\"\n".as_slice(),
    )
    .unwrap();
    let out = check_config(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{}:2:12: the file is not UTF-8 text (byte 0xe9 here)",
            path.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("permissions"), "{stderr}");

    // check-config tries the state directory: created, probed, left empty.
    let path = dir.path().join("state.toml");
    std::fs::write(
        &path,
        format!(
            "[alerts]\nstate_dir = \"{}\"\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n",
            dir.path().join("ok").display()
        ),
    )
    .unwrap();
    let out = check_config(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("ok").is_dir());
    assert_eq!(std::fs::read_dir(dir.path().join("ok")).unwrap().count(), 0);
}

#[test]
fn without_a_config_it_watches_the_database_from_the_environment() {
    let cluster = TestCluster::start();
    let port = free_port();
    let mut child = Command::new(pgvigil_bin())
        .env_remove("PGVIGIL_CONFIG")
        .env("DATABASE_URL", cluster.url("postgres"))
        .env("PGVIGIL_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let up = wait_until(
        "pgvigil_up from the environment target",
        crate::support::CEILING,
        || {
            let body = runtime.block_on(async {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(_) => http_get(addr, "/metrics", None).await.1,
                    Err(_) => String::new(),
                }
            });
            Metrics::parse(&body)
                .value("pgvigil_up", &[("target", "default")])
                .filter(|v| *v == 1.0)
        },
    );
    assert_eq!(up, 1.0);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn version_flag_prints_the_version() {
    let out = Command::new(pgvigil_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("pgvigil {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The names of a process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn the_daemon_trims_malloc_unless_the_operator_set_a_trim_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for operator_threshold in [false, true] {
        let port = free_port();
        let config = dir.path().join(format!("trim-{operator_threshold}.toml"));
        // A target that is down: the daemon runs and serves /metrics all the same.
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[[targets]]\nname = \"down\"\n\
                 dsn = \"host=127.0.0.1 port={} user=u dbname=d sslmode=disable\"\n",
                free_port()
            ),
        )
        .unwrap();
        let mut command = Command::new(pgvigil_bin());
        command
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("GLIBC_TUNABLES")
            .env_remove("MALLOC_TRIM_THRESHOLD_")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if operator_threshold {
            command.env("MALLOC_TRIM_THRESHOLD_", "131072");
        }
        let mut child = command.spawn().unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        crate::support::wait_for_200(&runtime, addr, "/metrics", "the daemon answers /metrics");
        // The trim thread is started before the daemon listens.
        let names = thread_names(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            names.iter().any(|n| n == "pgvigil-trim"),
            !operator_threshold,
            "operator threshold {operator_threshold}: threads {names:?}"
        );
    }
}
