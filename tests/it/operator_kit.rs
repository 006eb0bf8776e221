//! The operator kit (Grafana dashboards, Prometheus rules, runbooks) checked by the programs that
//! read it: promtool, a real Prometheus scraping a real pgvigil, and pgvigil's own metric list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgvigil_testkit::{TestCluster, find_program};

use crate::support::{Daemon, one_target};
use crate::support_prometheus::Prometheus;

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(find_program(program))
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const ALERTS: &str = "deploy/prometheus/rules/pgvigil-alerts.yml";
const RECORDING: &str = "deploy/prometheus/rules/pgvigil-recording.yml";

/// pgvigil-timing's Prometheus metric names (its README's table), used by the app-pool panels.
const TIMING_METRICS: &[&str] = &[
    "db_client_operation_duration_seconds",
    "db_client_connection_count",
    "db_client_connection_max",
    "db_client_connection_pending_requests",
    "db_client_connection_wait_time_seconds",
    "db_client_connection_use_time_seconds",
    "db_client_connection_timeouts_total",
];
/// pgvigil-timing's label names that share the `db_client_` prefix.
const TIMING_LABELS: &[&str] = &[
    "db_client_connection_pool_name",
    "db_client_connection_state",
];

// --- rule files ------------------------------------------------------------------------------

/// One rule of a rules file, read line by line (the files are ours and keep one layout).
#[derive(Debug, Default)]
struct RuleDef {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    severity: Option<String>,
    runbook_url: Option<String>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').to_owned()
}

fn read_rules(path: &str) -> Vec<RuleDef> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut rules: Vec<RuleDef> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            rules.push(RuleDef {
                alert: Some(unquote(name)),
                ..RuleDef::default()
            });
        } else if let Some(name) = t.strip_prefix("- record:") {
            rules.push(RuleDef {
                record: Some(unquote(name)),
                ..RuleDef::default()
            });
        } else if let (Some(rule), Some(expr)) = (rules.last_mut(), t.strip_prefix("expr:")) {
            if expr.trim() == "|" {
                let key_indent = indent(line);
                let mut block = Vec::new();
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty() || indent(lines[i + 1]) > key_indent)
                {
                    i += 1;
                    block.push(lines[i].trim());
                }
                rule.expr = block.join(" ").trim().to_owned();
            } else {
                rule.expr = expr.trim().to_owned();
            }
        } else if let (Some(rule), Some(v)) = (rules.last_mut(), t.strip_prefix("severity:")) {
            rule.severity = Some(unquote(v));
        } else if let (Some(rule), Some(v)) = (rules.last_mut(), t.strip_prefix("runbook_url:")) {
            rule.runbook_url = Some(unquote(v));
        }
        i += 1;
    }
    rules
}

// --- dashboards ------------------------------------------------------------------------------

/// Every dashboard file with its parsed JSON.
pub fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 5,
        "expected the five dashboards, found {out:?}"
    );
    out
}

/// (dashboard file, panel title, expr) of every panel query.
pub fn dashboard_exprs() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (file, dash) in dashboards() {
        for panel in dash["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((
                    file.clone(),
                    panel["title"].as_str().unwrap().to_owned(),
                    target["expr"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

/// (dashboard file, annotation name, expr) of every Prometheus annotation query.
pub fn annotation_exprs() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (file, dash) in dashboards() {
        for annotation in dash["annotations"]["list"].as_array().unwrap() {
            if let Some(expr) = annotation["expr"].as_str() {
                out.push((
                    file.clone(),
                    annotation["name"].as_str().unwrap().to_owned(),
                    expr.to_owned(),
                ));
            }
        }
    }
    out
}

/// (dashboard file, variable name, selector, label) of every `label_values(selector, label)`
/// variable query.
fn variable_queries() -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for (file, dash) in dashboards() {
        for var in dash["templating"]["list"].as_array().unwrap() {
            let Some(query) = var["query"].as_str() else {
                continue;
            };
            if let Some(args) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
            {
                let (selector, label) = args.rsplit_once(',').unwrap();
                out.push((
                    file.clone(),
                    var["name"].as_str().unwrap().to_owned(),
                    selector.trim().to_owned(),
                    label.trim().to_owned(),
                ));
            }
        }
    }
    out
}

/// Grafana's variables replaced by what they mean with "All" selected.
fn substitute(expr: &str) -> String {
    expr.replace("$target", ".+")
        .replace("$datname", ".+")
        .replace("$__rate_interval", "30s")
        .replace("$__range", "5m")
        .replace("$__interval", "5s")
}

// --- metric names ----------------------------------------------------------------------------

/// Tokens of `expr` that look like metric names (`pgvigil_*`, `db_client_*`) or recording-rule
/// names (`pgvigil:*`).
pub fn names_in(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &expr[i..];
        if boundary && (rest.starts_with("pgvigil") || rest.starts_with("db_client_")) {
            let len = rest
                .find(|c: char| {
                    !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':')
                })
                .unwrap_or(rest.len());
            let token = &rest[..len];
            if token.contains('_') || token.contains(':') {
                out.insert(token.to_owned());
            }
            i += len.max(1);
        } else {
            i += 1;
        }
    }
    out
}

/// Why `name` is not something Prometheus will have, or None if it is.
pub fn unknown_name(name: &str, recorded: &BTreeSet<String>) -> Option<String> {
    if name.contains(':') {
        return (!recorded.contains(name))
            .then(|| format!("{name} is no recording rule of {RECORDING}"));
    }
    if name.starts_with("db_client_") {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        let known = TIMING_METRICS.contains(&name)
            || TIMING_METRICS.contains(&base)
            || TIMING_LABELS.contains(&name);
        return (!known).then(|| format!("{name} is not a pgvigil-timing metric"));
    }
    pgvigil::metrics::find(name)
        .is_none()
        .then(|| format!("{name} is not exported by pgvigil (src/metrics.rs)"))
}

pub fn recorded_names() -> BTreeSet<String> {
    read_rules(RECORDING)
        .into_iter()
        .filter_map(|r| r.record)
        .collect()
}

// --- static checks ---------------------------------------------------------------------------

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    run_ok("promtool", &["check", "rules", ALERTS, RECORDING]);
    let mut tests: Vec<String> = std::fs::read_dir(repo("deploy/prometheus/rules/tests"))
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".yml"))
        .collect();
    tests.sort();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    run_ok("promtool", &args);

    // Every alerting rule has a unit test case in which it fires. promtool compares the whole
    // set of alerts at each eval_time, so the series beside it in the same case (below the
    // threshold, too short, filtered out) are the cases in which it must stay silent.
    let text: String = tests
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for rule in read_rules(ALERTS) {
        let name = rule.alert.unwrap();
        assert!(
            text.contains(&format!(
                "alertname: {name}\n        exp_alerts:\n          - exp_labels"
            )),
            "no promtool test case in which {name} fires"
        );
    }
}

#[test]
fn rules_name_exported_metrics_link_runbooks_and_match_the_daemon_rules() {
    let recorded = recorded_names();
    let alerts = read_rules(ALERTS);
    let mut problems = Vec::new();
    for rule in read_rules(RECORDING).iter().chain(&alerts) {
        let id = rule.alert.as_ref().or(rule.record.as_ref()).unwrap();
        assert!(!rule.expr.is_empty(), "{id} has no expr");
        for name in names_in(&rule.expr) {
            if let Some(why) = unknown_name(&name, &recorded) {
                problems.push(format!("rule {id}: {why}"));
            }
        }
    }
    let mut alertnames = BTreeSet::new();
    for rule in &alerts {
        let name = rule.alert.clone().unwrap();
        let url = rule
            .runbook_url
            .as_deref()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let file = url.rsplit('/').next().unwrap();
        if file != format!("{name}.md") || !repo(&format!("docs/runbooks/{file}")).exists() {
            problems.push(format!(
                "{name}: runbook_url {url} is not docs/runbooks/{name}.md"
            ));
        }
        // Same default severity as the in-daemon rule (a critical twin is allowed for
        // rules with a critical threshold of their own).
        match pgvigil::alert::rules::find(&name) {
            Some(spec) => {
                let severity = rule.severity.as_deref().unwrap_or("(none)");
                if severity != spec.default_severity.as_str() && severity != "critical" {
                    problems.push(format!(
                        "{name}: severity {severity}, the daemon's default is {}",
                        spec.default_severity.as_str()
                    ));
                }
            }
            None => problems.push(format!(
                "{name} is no in-daemon rule (pgvigil::alert::rules::RULES)"
            )),
        }
        alertnames.insert(name);
    }
    for spec in pgvigil::alert::rules::RULES {
        if !alertnames.contains(spec.alertname) {
            problems.push(format!(
                "{} has no Prometheus equivalent in {ALERTS}",
                spec.alertname
            ));
        }
    }
    // The rules file points at the runbooks for all of them.
    let header = std::fs::read_to_string(repo(ALERTS)).unwrap();
    assert!(header.contains("docs/runbooks/<alertname>.md"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn name_checks_catch_unknown_metrics() {
    // The checks above would pass vacuously if the extraction found nothing.
    let recorded = recorded_names();
    let names = names_in(
        "rate(pgvigil_statement_calls_total{target=~\"x\"}[5m]) / pgvigil:connections_used:ratio + db_client_connection_count{db_client_connection_state=\"idle\"}",
    );
    assert_eq!(
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "db_client_connection_count",
            "db_client_connection_state",
            "pgvigil:connections_used:ratio",
            "pgvigil_statement_calls_total"
        ]
    );
    assert!(names.iter().all(|n| unknown_name(n, &recorded).is_none()));
    assert!(unknown_name("pgvigil_statement_calls", &recorded).is_some());
    assert!(unknown_name("pgvigil:nothing:rate5m", &recorded).is_some());
    assert!(unknown_name("db_client_connections", &recorded).is_some());
    assert!(unknown_name("pgvigil_poll_duration_seconds_bucket", &recorded).is_none());
    // The timing crate's names are its README's.
    let readme = std::fs::read_to_string(repo("crates/pgvigil-timing/README.md")).unwrap();
    for name in TIMING_METRICS.iter().chain(TIMING_LABELS) {
        assert!(
            readme.contains(name),
            "pgvigil-timing's README does not name {name}"
        );
    }
}

#[test]
fn every_directory_cargo_needs_is_copied_into_the_docker_build() {
    let dockerfile = std::fs::read_to_string(repo("deploy/docker/Dockerfile")).unwrap();
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    // Cargo reads every declared target's file even to build one binary.
    for dir in ["src", "crates", "tests", "examples", "benches"] {
        let declared = repo(dir).exists() && (dir != "benches" || manifest.contains("[[bench]]"));
        if declared {
            assert!(
                dockerfile.contains(&format!("COPY {dir} {dir}")),
                "deploy/docker/Dockerfile does not copy {dir}/, which Cargo.toml needs"
            );
        }
    }
}

// --- against the real programs ---------------------------------------------------------------

/// Metrics that can legitimately be absent in the live run, and why.
const MAY_BE_EMPTY: &[(&str, &str)] = &[
    (
        "pgvigil_pgbouncer_",
        "no PgBouncer is watched in this run (tests/it/pgbouncer.rs covers it)",
    ),
    (
        "pgvigil_connections_waiting",
        "nothing waits on a lock or I/O in this small workload",
    ),
    (
        "pgvigil_alert_observations_dropped_total",
        "the alert queue never fills in a test",
    ),
    (
        "pgvigil_poll_errors_total",
        "counted only when a poll fails, and none does",
    ),
    (
        "pgvigil_table_last_maintenance_timestamp_seconds",
        "absent until autovacuum or analyze has run on a table",
    ),
    (
        "pgvigil_import_last_verified_timestamp_seconds",
        "set once a committed import is re-counted and found complete; may take longer than the run",
    ),
    (
        "pgvigil_table_exact_counts_total",
        "counted on the exact-count schedule, which may not have run yet",
    ),
    ("pgvigil_alerts", "series exist only while an alert is held"),
    (
        "pgvigil_lock_blocked_",
        "one series per database with a session waiting for a lock, and none waits in this run (tests/it/lock_queue.rs covers them)",
    ),
    (
        "pgvigil_lock_root_blocker_age_seconds",
        "present only while a session blocks another, and none does in this run (tests/it/lock_queue.rs covers it)",
    ),
    (
        "pgvigil_lock_queue_sessions",
        "present only while a session waits for a strong lock, and none does in this run (tests/it/lock_queue.rs covers it)",
    ),
    (
        "pgvigil_migration_info",
        "no migration tool's table in the live run's database (tests/it/migrations.rs covers them)",
    ),
    (
        "pgvigil_migration_failed",
        "no migration tool's table in the live run's database",
    ),
    (
        "pgvigil_schema_change",
        "no migration tool's table in the live run's database",
    ),
    (
        "pgvigil_invalid_index_",
        "no INVALID index in the live run (tests/it/migrations.rs makes one)",
    ),
    (
        "pgvigil_not_valid_constraint_info",
        "no NOT VALID constraint in the live run",
    ),
    (
        "pgvigil_schema_operation_",
        "no index build or rewrite runs during the live run",
    ),
    (
        "pgvigil_database_checksum_last_failure_timestamp_seconds",
        "absent until a data checksum failure (the test clusters have none)",
    ),
    (
        "pgvigil_index_suggestion_",
        "only for a large, sequentially scanned table a top statement filters without an index (tests/it/advice.rs covers it)",
    ),
    (
        "pgvigil_statement_lint_info",
        "only for a top statement with SELECT * or an unbounded select (tests/it/advice.rs covers it)",
    ),
];

/// Whole expressions that can legitimately return nothing in the live run, and why.
const EXPR_MAY_BE_EMPTY: &[(&str, &str)] = &[
    (
        "offset 1h",
        "compares with an hour ago; Prometheus has seconds of history",
    ),
    (
        r#"wal_status=~"unreserved|lost""#,
        "the live run's slot keeps its WAL reserved: wal_status turns unreserved only past max_slot_wal_keep_size",
    ),
];

/// Metrics of views a PostgreSQL version does not have: (name prefix, the first version that
/// has them, why). An expression over them may be empty on an older server, never on a newer.
const VERSION_GATED: &[(&str, i32, &str)] = &[(
    "pgvigil_io_",
    160000,
    "pg_stat_io exists from PostgreSQL 16 on; this run's server is older",
)];

fn not_on_this_version(expr: &str, server_version: i32) -> Option<&'static str> {
    names_in(expr).iter().find_map(|name| {
        VERSION_GATED
            .iter()
            .find(|(prefix, since, _)| name.starts_with(prefix) && server_version < *since)
            .map(|(_, _, why)| *why)
    })
}

fn empty_reason(expr: &str) -> Option<&'static str> {
    names_in(expr)
        .iter()
        .find_map(|name| {
            MAY_BE_EMPTY
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix))
                .map(|(_, why)| *why)
        })
        .or_else(|| {
            EXPR_MAY_BE_EMPTY
                .iter()
                .find(|(part, _)| expr.contains(part))
                .map(|(_, why)| *why)
        })
}

/// The vector selectors of an expression (metric name plus its matchers), each evaluated on its
/// own: an alerting rule's expression is empty while nothing is wrong, but its inputs are not.
fn selectors(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for name in names_in(expr) {
        if TIMING_LABELS.contains(&name.as_str()) {
            continue;
        }
        let mut from = 0;
        while let Some(at) = expr[from..].find(name.as_str()) {
            let start = from + at;
            let end = start + name.len();
            from = end;
            let before_ok = start == 0 || {
                let c = expr.as_bytes()[start - 1];
                !(c.is_ascii_alphanumeric() || c == b'_' || c == b':')
            };
            let after = expr[end..].chars().next();
            if !before_ok
                || after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                continue;
            }
            let selector = if expr[end..].starts_with('{') {
                let close = expr[end..].find('}').unwrap();
                expr[start..=end + close].to_owned()
            } else {
                name.clone()
            };
            out.push(selector);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// An application instrumented with pgvigil-timing: a pool of two connections, one held (so
/// the pool gauges show a used one) and one running queries, with its registry served on
/// `/metrics` for Prometheus. Returns the address; everything runs until the test ends.
async fn serve_instrumented_app(dsn: &str) -> std::net::SocketAddr {
    use deadpool_postgres::{Manager, Pool, Runtime};
    use pgvigil_timing::{GenericTimedClient, Recorder};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut registry = prometheus_client::registry::Registry::default();
    let recorder = Recorder::builder()
        .namespace("opskit")
        .prometheus_client(&mut registry)
        .build();
    let config: tokio_postgres::Config = dsn.parse().unwrap();
    let pool = Pool::builder(Manager::new(config, tokio_postgres::NoTls))
        .max_size(2)
        .runtime(Runtime::Tokio1)
        .build()
        .unwrap();
    let pool = recorder.wrap_pool(pool);
    tokio::spawn(async move {
        let _held = pool.get().await.unwrap();
        let client = pool.get().await.unwrap();
        loop {
            let _ = client
                .named("count_contacts")
                .query("SELECT count(*) FROM contacts", &[])
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = std::sync::Arc::new(registry);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let registry = registry.clone();
            tokio::spawn(async move {
                // Prometheus sends a small GET; its headers fit in one read.
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let mut body = String::new();
                prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_prometheus_answers_every_dashboard_and_rule() {
    // PostgreSQL 18 (pg_stat_io, the checkpointer view), with a streaming standby watched as a
    // target of its own and a physical slot nobody consumes (with max_slot_wal_keep_size, so
    // the slot's safe_wal_size exists): the replication, standby and slot panels and rule
    // inputs have data like every other.
    let cluster = TestCluster::builder()
        .version(18)
        .setting("max_slot_wal_keep_size", "1GB")
        .start();
    let standby = cluster.start_standby();
    cluster.create_physical_slot("opskit_unconsumed");
    let db = cluster.create_database("opskit");
    // A small workload: a table with rows, statements, and two committed imports, one of
    // which left only 3 of its 10 rows (a shortfall both engines must report).
    cluster.psql(
        &db,
        &std::fs::read_to_string(repo("deploy/sql/import_audit.sql")).unwrap(),
    );
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id serial PRIMARY KEY, name text, import_id uuid);
         CREATE INDEX ON contacts (import_id);
         INSERT INTO import_audit (import_id, target_table, source_name, expected_rows, status, finished_at)
           VALUES ('00000000-0000-0000-0000-00000000000a', 'contacts', 'good.csv', 10, 'committed', now() - interval '1 minute'),
                  ('00000000-0000-0000-0000-00000000000b', 'contacts', 'short.csv', 10, 'committed', now() - interval '1 minute');
         INSERT INTO contacts (name, import_id)
           SELECT 'a' || g, '00000000-0000-0000-0000-00000000000a' FROM generate_series(1, 10) g;
         INSERT INTO contacts (name, import_id)
           SELECT 'b' || g, '00000000-0000-0000-0000-00000000000b' FROM generate_series(1, 3) g;
         ANALYZE contacts;",
    );
    // The index-health panels' cases: a duplicate index (and, with no statistics window
    // required, unused ones) and a foreign key no index leads with.
    cluster.psql(
        &db,
        "CREATE INDEX contacts_import_id_copy ON contacts (import_id);
         CREATE TABLE contact_notes (id serial PRIMARY KEY, contact_id int REFERENCES contacts (id));",
    );
    let config = one_target(
        "main",
        &cluster.dsn(&db),
        "[targets.tables]\nexact_count_tables = [\"public.contacts\"]\nexact_count_interval = \"1s\"\n[targets.imports]\ngrace_period = \"200ms\"\n[targets.indexes]\nunused_min_window = \"0s\"\nfk_min_table_bytes = 0\n",
    ) + &one_target("standby", &standby.dsn("postgres"), "");
    let daemon = Daemon::start(&config).await;
    let workload_dsn = cluster.dsn(&db);
    let workload = tokio::spawn(async move {
        let client = crate::support::connect(&workload_dsn).await;
        for i in 0.. {
            let _ = client
                .query(
                    "SELECT count(*) FROM contacts WHERE name = $1",
                    &[&format!("a{i}")],
                )
                .await;
            let _ = client
                .execute(
                    "UPDATE contacts SET name = name WHERE id = $1",
                    &[&(i % 13)],
                )
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    // A session holding a lock (ACCESS SHARE on contacts) and a snapshot (repeatable read),
    // in an open read-only transaction, so the lock panels and the xmin-horizon panel have
    // something to show at any instant.
    let reader = crate::support::connect(&cluster.dsn(&db)).await;
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1 FROM contacts LIMIT 1")
        .await
        .unwrap();
    let server_version = cluster.server_version_num() as i32;

    let app = serve_instrumented_app(&cluster.dsn(&db)).await;

    let addr = daemon.addr;
    let prometheus = tokio::task::spawn_blocking(move || {
        Prometheus::start(&[addr, app], &[&repo(RECORDING), &repo(ALERTS)])
    })
    .await
    .unwrap();
    // Rates need two samples inside their window; wait for the slowest input to have them.
    prometheus
        .wait_for_data("pgvigil_import_missing_rows > 0", crate::support::CEILING)
        .await;
    prometheus
        .wait_for_data(
            "rate(pgvigil_statement_calls_total[30s]) > 0",
            crate::support::CEILING,
        )
        .await;
    prometheus
        .wait_for_data(
            "rate(db_client_operation_duration_seconds_count[30s]) > 0",
            crate::support::CEILING,
        )
        .await;
    prometheus
        .wait_for_data(
            "pgvigil:statement_mean_seconds:rate5m",
            crate::support::CEILING,
        )
        .await;
    // pg_stat_replication's lag times are NULL until the standby has confirmed WAL sent after
    // it connected (the workload's updates write some every 20 ms).
    prometheus
        .wait_for_data("pgvigil_replication_lag_seconds", crate::support::CEILING)
        .await;

    // Every check below reads one instant at which both targets' recent scrapes all
    // succeeded: on a loaded machine a scrape can time out, and the instant after it sees
    // every series of that target stale.
    let at = prometheus.healthy_instant(2, crate::support::CEILING).await;
    let mut failures = Vec::new();
    let mut empty_ok = Vec::new();
    let mut answered = 0;
    let mut check =
        |what: String, expr: String, result: Result<Vec<serde_json::Value>, String>| match result {
            Err(e) => failures.push(format!("{what}: {expr}\n    does not evaluate: {e}")),
            Ok(r) if r.is_empty() => {
                match empty_reason(&expr).or_else(|| not_on_this_version(&expr, server_version)) {
                    Some(why) => empty_ok.push(format!("{what}: empty ({why})")),
                    None => failures.push(format!("{what}: {expr}\n    returned no data")),
                }
            }
            Ok(_) => answered += 1,
        };

    for (file, title, expr) in dashboard_exprs() {
        let expr = substitute(&expr);
        let result = prometheus.query_at(&expr, at).await;
        check(format!("{file} {title:?}"), expr, result);
    }
    for rule in read_rules(RECORDING) {
        let result = prometheus.query_at(&rule.expr, at).await;
        check(
            format!("recording rule {}", rule.record.unwrap()),
            rule.expr,
            result,
        );
    }
    let mut parse_failures = Vec::new();
    for rule in read_rules(ALERTS) {
        let name = rule.alert.unwrap();
        // The whole expression must parse; it is empty while nothing is wrong.
        if let Err(e) = prometheus.query_at(&rule.expr, at).await {
            parse_failures.push(format!(
                "alert {name}: {}\n    does not evaluate: {e}",
                rule.expr
            ));
        }
        for selector in selectors(&rule.expr) {
            let result = prometheus.query_at(&selector, at).await;
            check(format!("alert {name} input"), selector, result);
        }
    }
    // Annotations mark events: like alert rules, each is empty while nothing happens, so the
    // whole query must parse and each of its inputs must return data.
    for (file, name, expr) in annotation_exprs() {
        let expr = substitute(&expr);
        if let Err(e) = prometheus.query_at(&expr, at).await {
            parse_failures.push(format!(
                "{file} annotation {name:?}: {expr}\n    does not evaluate: {e}"
            ));
        }
        for selector in selectors(&expr) {
            let result = prometheus.query_at(&selector, at).await;
            check(
                format!("{file} annotation {name:?} input"),
                selector,
                result,
            );
        }
    }
    // Every variable offers values: its selector returns series carrying its label.
    for (file, var, selector, label) in variable_queries() {
        let selector = substitute(&selector);
        match prometheus.query_at(&selector, at).await {
            Ok(series) if series.iter().any(|s| s["metric"][&label].is_string()) => answered += 1,
            other => failures.push(format!(
                "{file} variable {var}: no series of {selector} has label {label}: {other:?}"
            )),
        }
    }
    failures.extend(parse_failures);
    assert!(
        failures.is_empty(),
        "{} expressions failed:\n{}\n\nallowed empty:\n{}\n\nPrometheus log:\n{}",
        failures.len(),
        failures.join("\n"),
        empty_ok.join("\n"),
        prometheus.log()
    );
    assert!(answered > 60, "only {answered} expressions returned data");

    // The shortfall fires from Prometheus too, on the table that lost rows (its ALERTS
    // series at the same instant: the alerts API shows only the latest evaluation, which a
    // timed-out scrape just before it leaves without inputs).
    let firing = prometheus.query_at("ALERTS", at).await.unwrap();
    let shortfall = firing
        .iter()
        .map(|a| &a["metric"])
        .find(|a| a["alertname"] == "ImportRowShortfall")
        .unwrap_or_else(|| panic!("ImportRowShortfall is not active in Prometheus: {firing:?}"));
    assert_eq!(shortfall["table"], "public.contacts", "{shortfall}");
    assert_eq!(shortfall["severity"], "critical");
    assert_eq!(shortfall["alertstate"], "firing", "{shortfall}");
    // The dashboards' alert annotation marks it.
    let (_, _, annotation) = annotation_exprs()
        .into_iter()
        .find(|(_, _, expr)| expr.starts_with("ALERTS{"))
        .expect("an annotation on Prometheus' ALERTS");
    let marked = prometheus
        .query_at(&substitute(&annotation), at)
        .await
        .unwrap();
    assert!(
        marked
            .iter()
            .any(|a| a["metric"]["alertname"] == "ImportRowShortfall"),
        "{annotation} does not mark ImportRowShortfall: {marked:?}"
    );
    // Its value, the missing rows of the short import.
    let missing = prometheus
        .query_at(
            "pgvigil_import_missing_rows{table=\"public.contacts\"} >= 1",
            at,
        )
        .await
        .unwrap();
    assert_eq!(
        missing
            .iter()
            .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
            .collect::<Vec<_>>(),
        vec![7.0],
        "{missing:?}"
    );
    // Nothing else is wrong in this run but the slot left without a consumer on purpose (so
    // the slot panels have data), which ReplicationSlotInactive rightly holds pending.
    let others: Vec<_> = firing
        .iter()
        .map(|a| &a["metric"])
        .filter(|a| a["alertname"] != "ImportRowShortfall")
        .filter(|a| {
            a["alertname"] != "ReplicationSlotInactive" || a["slot_name"] != "opskit_unconsumed"
        })
        .collect();
    assert!(
        others.is_empty(),
        "unexpected alerts at {at}: {others:?}\nPrometheus log:\n{}",
        prometheus.log()
    );
    println!(
        "{answered} expressions returned data; allowed empty:\n{}",
        empty_ok.join("\n")
    );
    workload.abort();
}
