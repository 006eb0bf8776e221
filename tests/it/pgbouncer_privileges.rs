//! `pgvigil check-privileges` and the daemon on PgBouncer admin consoles, with a real PgBouncer
//! checking passwords itself (`auth_type = md5`, plain passwords in its auth_file): a user in
//! `stats_users` may run every SHOW pgvigil runs; a user of the auth_file in neither list is
//! refused at login ("not allowed"), so every SHOW is missing with the `stats_users` line; a
//! wrong password is a login failure, with PgBouncer's message and what to check.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use pgvigil_testkit::{TestCluster, TestPgbouncer};

use crate::support::{CEILING, Daemon, pgvigil_bin};

/// Every admin-console command pgvigil runs, by collector, in poll order.
const COMMANDS: &[(&str, &str)] = &[
    ("pgbouncer_instance", "SHOW VERSION"),
    ("pgbouncer_instance", "SHOW LISTS"),
    ("pgbouncer_instance", "SHOW CONFIG"),
    ("pgbouncer_pools", "SHOW POOLS"),
    ("pgbouncer_databases", "SHOW DATABASES"),
    ("pgbouncer_stats", "SHOW STATS"),
];

/// A PgBouncer whose auth_file has `watcher` (in `stats_users`) and `stranger` (in neither
/// list), passwords `w-pw` and `s-pw`; the directory holding the auth_file lives as long as it.
fn bouncer(cluster: &TestCluster) -> (TestPgbouncer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let users = dir.path().join("userlist.txt");
    std::fs::write(&users, "\"watcher\" \"w-pw\"\n\"stranger\" \"s-pw\"\n").unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bouncer = TestPgbouncer::start_with(
        cluster,
        2,
        &format!(
            "auth_type = md5\nauth_file = {}\nstats_users = watcher\n",
            users.display()
        ),
    );
    (bouncer, dir)
}

fn dsn(bouncer: &TestPgbouncer, user: &str, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={} dbname=pgbouncer user={user} password={password}",
        bouncer.port()
    )
}

/// Run check-privileges on one `[[pgbouncers]]` entry: (exit code, stdout).
fn check(dsn: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgvigil.toml");
    std::fs::write(
        &config,
        format!("[[pgbouncers]]\nname = \"bouncer\"\ndsn = \"{dsn}\"\n"),
    )
    .unwrap();
    let out = Command::new(pgvigil_bin())
        .args(["check-privileges", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The line of `collector` about `command`.
fn line<'a>(out: &'a str, collector: &str, command: &str) -> &'a str {
    let start = format!("{collector}: {command}: ");
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no line `{start}...` in:\n{out}"))
}

fn stats_users_fix(user: &str) -> String {
    format!(
        "MISSING; add {user} to stats_users in the [pgbouncer] section of pgbouncer.ini \
         (stats_users = <the users listed now>, {user}), then RELOAD (or SIGHUP) PgBouncer"
    )
}

#[test]
fn check_privileges_on_pgbouncer_names_the_ini_line_or_the_login_to_fix() {
    let cluster = TestCluster::start();
    let (bouncer, _dir) = bouncer(&cluster);

    // In stats_users: every SHOW is readable.
    let (code, out) = check(&dsn(&bouncer, "watcher", "w-pw"));
    assert_eq!(code, 0, "nothing missing:\n{out}");
    assert!(
        out.starts_with(&format!(
            "pgbouncer bouncer (watcher@127.0.0.1:{}/pgbouncer):\n",
            bouncer.port()
        )),
        "{out}"
    );
    for (collector, command) in COMMANDS {
        assert!(line(&out, collector, command).ends_with(": ok"), "{out}");
    }
    assert_eq!(out.lines().count(), COMMANDS.len() + 1, "{out}");

    // In the auth_file with the right password, in neither list: PgBouncer refuses the login
    // with "not allowed"; every SHOW is missing with the line to add.
    let (code, out) = check(&dsn(&bouncer, "stranger", "s-pw"));
    assert_eq!(code, 1, "something is missing:\n{out}");
    for (collector, command) in COMMANDS {
        assert!(
            line(&out, collector, command).ends_with(&stats_users_fix("stranger")),
            "{out}"
        );
    }

    // A wrong password: the login failure, as PgBouncer said it, and where to look.
    let (code, out) = check(&dsn(&bouncer, "watcher", "wrong"));
    assert_eq!(
        code, 2,
        "a login that fails is not a missing privilege:\n{out}"
    );
    let error = out.lines().nth(1).unwrap_or_default().trim();
    assert!(
        error.starts_with(&format!(
            "cannot connect to watcher@127.0.0.1:{}/pgbouncer: FATAL",
            bouncer.port()
        )) && error.contains("password authentication failed; ")
            && error.contains("auth_file (userlist.txt)"),
        "{out}"
    );
    assert!(!out.contains("MISSING"), "{out}");
}

#[tokio::test]
async fn the_daemon_reports_a_refused_user_per_collector_and_keeps_the_rest_running() {
    let cluster = TestCluster::start();
    let (bouncer, _dir) = bouncer(&cluster);
    let daemon = Daemon::start(&format!(
        "[[pgbouncers]]\nname = \"refused\"\ndsn = \"{}\"\npoll_interval = \"200ms\"\nreconnect_max_backoff = \"1s\"\n\
         [[pgbouncers]]\nname = \"watched\"\ndsn = \"{}\"\npoll_interval = \"200ms\"\n",
        dsn(&bouncer, "stranger", "s-pw"),
        dsn(&bouncer, "watcher", "w-pw"),
    ))
    .await;
    let refused = daemon
        .wait_for_target("refused", "the refused user's privileges", CEILING, |t| {
            (t["privileges"].as_object()?.len() == 4).then(|| t.clone())
        })
        .await;
    for (collector, command) in COMMANDS {
        let lines = refused["privileges"][collector].as_array().unwrap();
        let expected = format!("{collector}: {command}: {}", stats_users_fix("stranger"));
        assert!(lines.iter().any(|l| l == &expected[..]), "{refused}");
    }
    assert!(
        refused["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not allowed") && e.contains("stats_users")),
        "{refused}"
    );
    // The other instance is polled, and reports nothing missing.
    let watched = daemon
        .wait_for_target("watched", "the watched instance polled", CEILING, |t| {
            t["last_success"].as_str().map(|_| t.clone())
        })
        .await;
    assert_eq!(watched["privileges"], serde_json::json!({}), "{watched}");
    daemon
        .wait_for("the watched instance's series", CEILING, |m| {
            (m.value("pgvigil_up", &[("target", "watched")])? == 1.0
                && m.value("pgvigil_up", &[("target", "refused")])? == 0.0
                && m.matching("pgvigil_pgbouncer_info", &[("target", "watched")])
                    .count()
                    == 1)
                .then_some(())
        })
        .await;
    daemon.stop().await;
}
