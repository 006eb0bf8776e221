//! What pgvigil's user may run on a PgBouncer admin console, collector by collector, and the
//! `pgbouncer.ini` line each missing piece needs: the PgBouncer half of
//! `pgvigil check-privileges`, and the daemon's once-per-collector report at connect.
//!
//! PgBouncer has no GRANT: who may use the admin console (database `pgbouncer`) is two lists
//! of its `[pgbouncer]` section. What real PgBouncer does (seen with 1.18, the one the tests run):
//!
//! - a user in `admin_users` may run every command;
//! - a user in `stats_users` may run every `SHOW` but `SHOW FDS` (which is all pgvigil runs:
//!   each collector's `reads` in [`crate::collect::registry::PGBOUNCER`]); anything else
//!   answers `admin access needed`;
//! - any other user, even one of `auth_file` whose password is right, is refused at login
//!   with `FATAL: not allowed`; then every command is missing, with the same fix;
//! - a wrong password, or a user not in `auth_file` (nor found by `auth_query`), is refused
//!   with `FATAL: password authentication failed`: that is a login to fix, not a list.
//!
//! The check, step by step: open a session to the console as configured (no `SET`, simple
//! query protocol, as the daemon does); if it is refused with `not allowed`, report every
//! command of every enabled collector missing with the `stats_users` line; if refused
//! otherwise, the login error with what to check; else run each command once and report it
//! readable, or missing with the line that its error calls for. Cost: one session and one
//! `SHOW` per command, once.

use tokio_postgres::Client;

use super::{Check, PrivilegeError};
use crate::collect::describe_pg_error;
use crate::collect::registry::PGBOUNCER;
use crate::config::PgbouncerConfig;

/// The admin-console commands a PgBouncer collector runs, as its registry entry declares them
/// (`reads`: "SHOW VERSION, SHOW LISTS, SHOW CONFIG").
pub fn commands(reads: &'static str) -> impl Iterator<Item = &'static str> {
    reads.split(", ").map(str::trim)
}

/// The fix for a user PgBouncer does not let into its console, or lets run `SHOW` only.
pub fn stats_users_fix(user: &str) -> String {
    format!(
        "add {user} to stats_users in the [pgbouncer] section of pgbouncer.ini \
         (stats_users = <the users listed now>, {user}), then RELOAD (or SIGHUP) PgBouncer"
    )
}

/// The fix a command's error calls for.
pub fn fix_for(error: &str, user: &str) -> String {
    if error.contains("admin access needed") {
        format!(
            "PgBouncer runs this for admin_users only: add {user} to admin_users in the [pgbouncer] section of pgbouncer.ini \
             (admin_users = <the users listed now>, {user}), then RELOAD (or SIGHUP) PgBouncer; or turn the collector off"
        )
    } else if error.contains("not allowed") {
        stats_users_fix(user)
    } else {
        format!("PgBouncer answered {error}; pgvigil supports PgBouncer 1.18 and later")
    }
}

/// What to do about a refused login, after PgBouncer's own message.
pub fn explain_login(error: &str, user: &str) -> String {
    if error.contains("password authentication failed") {
        format!(
            "{error}; PgBouncer checks logins itself: {user} and the DSN's password (or password_file) must match \
             an entry \"{user}\" \"<password or SCRAM/md5 hash>\" of its auth_file (userlist.txt), or be found by auth_query; \
             check auth_type and auth_file in pgbouncer.ini"
        )
    } else {
        error.to_owned()
    }
}

/// Every command of `config`'s enabled collectors, each missing with `fix`.
pub fn all_missing(config: &PgbouncerConfig, fix: &str) -> Vec<Check> {
    PGBOUNCER
        .iter()
        .filter(|spec| spec.enabled(config))
        .flat_map(|spec| {
            commands(spec.reads).map(|command| Check {
                collector: spec.name,
                database: None,
                item: command.to_owned(),
                missing: Some(fix.to_owned()),
            })
        })
        .collect()
}

/// Run each command of `config`'s enabled collectors on `client` once.
pub async fn check_session(client: &Client, config: &PgbouncerConfig) -> Vec<Check> {
    let user = config.connection.user();
    let mut checks = Vec::new();
    for spec in PGBOUNCER.iter().filter(|spec| spec.enabled(config)) {
        for command in commands(spec.reads) {
            let answer =
                tokio::time::timeout(config.statement_timeout, client.simple_query(command)).await;
            let missing = match answer {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(fix_for(&describe_pg_error(&e), user)),
                Err(_) => Some(format!(
                    "no answer within statement_timeout ({}); is PgBouncer overloaded or PAUSEd?",
                    humantime::format_duration(config.statement_timeout)
                )),
            };
            checks.push(Check {
                collector: spec.name,
                database: None,
                item: command.to_owned(),
                missing,
            });
        }
    }
    checks
}

/// Every check of a PgBouncer instance: a session of its own, each command once.
pub async fn check_bouncer(config: &PgbouncerConfig) -> Result<Vec<Check>, PrivilegeError> {
    let connection = &config.connection;
    let user = connection.user();
    let fail = |error: String| PrivilegeError::Connect {
        connection: connection.describe(),
        error,
    };
    let pg = connection
        .connect_config(config.connect_timeout)
        .map_err(fail)?;
    let tls = crate::tls::Connector::new(connection);
    let tls = tls.get().map_err(fail)?;
    let (client, conn) = match tokio::time::timeout(config.connect_timeout, pg.connect(tls)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) if refused_as_not_allowed(&e) => {
            return Ok(all_missing(config, &stats_users_fix(user)));
        }
        Ok(Err(e)) => {
            let text = explain_login(&describe_pg_error(&e), user);
            return Err(fail(crate::tls::explain(connection, text)));
        }
        Err(_) => return Err(fail("no answer within connect_timeout".to_owned())),
    };
    tokio::spawn(conn);
    Ok(check_session(&client, config).await)
}

/// Report what `checks` found missing on a PgBouncer instance: in its status (`privileges` in
/// `/api/v1/targets`, replacing what an earlier check found) and in the log, each line once
/// (`logged` remembers). The collectors keep running either way; a refused login leaves the
/// instance down (its `last_error` says why) and every other source running.
pub(crate) fn report(
    hub: &crate::hub::Hub,
    name: &str,
    checks: &[Check],
    logged: &std::sync::Mutex<std::collections::HashSet<String>>,
) {
    hub.status.update(name, |s| {
        s.privileges = super::missing_by_collector(checks);
    });
    let mut logged = logged.lock().unwrap_or_else(|e| e.into_inner());
    for check in checks.iter().filter(|c| c.missing.is_some()) {
        let line = check.line();
        if logged.insert(line.clone()) {
            tracing::warn!(
                target = %name,
                collector = check.collector,
                "missing privilege, the rest keeps running: {line}"
            );
        }
    }
}

/// Whether PgBouncer refused the login because the user is in neither `admin_users` nor
/// `stats_users` (`FATAL: not allowed`).
pub fn refused_as_not_allowed(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.message() == "not allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_collector_reads_show_commands_only() {
        for spec in PGBOUNCER {
            assert!(spec.grants == ["stats_users"], "{}", spec.name);
            for command in commands(spec.reads) {
                assert!(
                    command.starts_with("SHOW ") && command != "SHOW FDS",
                    "{}: {command:?} needs more than stats_users",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn every_enabled_command_is_missing_with_the_stats_users_line() {
        let spec = crate::config::ConnectionSpec::parse_admin(
            "user=watch dbname=pgbouncer",
            &Default::default(),
        )
        .unwrap();
        let mut config = PgbouncerConfig::new("b", spec);
        config.stats.enabled = false;
        let checks = all_missing(&config, &stats_users_fix("watch"));
        let items: Vec<&str> = checks.iter().map(|c| c.item.as_str()).collect();
        assert_eq!(
            items,
            [
                "SHOW VERSION",
                "SHOW LISTS",
                "SHOW CONFIG",
                "SHOW POOLS",
                "SHOW DATABASES"
            ]
        );
        assert_eq!(
            checks[0].line(),
            "pgbouncer_instance: SHOW VERSION: MISSING; add watch to stats_users in the [pgbouncer] section of pgbouncer.ini \
             (stats_users = <the users listed now>, watch), then RELOAD (or SIGHUP) PgBouncer"
        );
    }

    #[test]
    fn errors_name_the_list_or_the_login_to_fix() {
        assert!(
            fix_for("ERROR (08P01): admin access needed", "w").contains("add w to admin_users")
        );
        assert!(fix_for("FATAL (08P01): not allowed", "w").contains("add w to stats_users"));
        assert!(fix_for("ERROR: odd", "w").starts_with("PgBouncer answered ERROR: odd"));
        let login = explain_login("FATAL (08P01): password authentication failed", "w");
        assert!(
            login.starts_with("FATAL (08P01): password authentication failed; "),
            "{login}"
        );
        assert!(login.contains("auth_file (userlist.txt)"), "{login}");
        assert_eq!(
            explain_login("connection refused", "w"),
            "connection refused"
        );
    }
}
