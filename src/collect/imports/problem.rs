//! Why an audit table could not be read, and what fixes it: the text the imports collector logs
//! (once), lists in `/api/v1/imports` `problems` and shows on the status page.
//!
//! A read that fails keeps the table's imports unknown (their alerts stay as they were) until a
//! read succeeds. The fix depends on the SQLSTATE:
//!
//! - `42P01` no such table, `42703` a column missing, `42501` no `SELECT`: what to create, map
//!   or grant;
//! - `55P03` lock_not_available: a session holds `ACCESS EXCLUSIVE` on the table (a migration,
//!   `TRUNCATE`, `VACUUM FULL`, `LOCK TABLE`) for longer than the target's `lock_timeout`; the
//!   holders are looked up right after the failure ([`lock_holders`]) and named with pid,
//!   state and query;
//! - `57014` query_canceled: the read ran past the target's `statement_timeout` (raise it, or
//!   read fewer rows: `[targets.imports] recheck_window` / `max_imports`), or someone
//!   cancelled it.
//!
//! [`describe`] is pure (unit-tested); [`lock_holders`] is its one query.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::config::{AuditTableConfig, ImportsConfig, TargetConfig};

/// A session holding a lock on the audit table that blocks a plain `SELECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its backend pid.
    pub pid: i32,
    /// `pg_stat_activity.state` (`idle in transaction`, `active`, ...).
    pub state: String,
    /// Its current or last query, cut to 200 characters in SQL.
    pub query: String,
}

/// The sessions (other than pgvigil's) holding `ACCESS EXCLUSIVE` on `table`, the only mode a
/// `SELECT` waits for; empty if the lock is gone or cannot be read.
pub async fn lock_holders(client: &Client, table: &AuditTableConfig) -> Vec<Holder> {
    let rows = client
        .query(
            "SELECT l.pid, coalesce(a.state, ''), coalesce(left(a.query, 200), '') \
               FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
              WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'AccessExclusiveLock' \
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                AND l.relation = to_regclass($1) AND l.pid <> pg_backend_pid() \
              ORDER BY l.pid LIMIT 5",
            &[&table.table.quoted()],
        )
        .await;
    match rows {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| {
                Some(Holder {
                    pid: r.try_get(0).ok()?,
                    state: r.try_get(1).ok()?,
                    query: r.try_get(2).ok()?,
                })
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// What was configured that bears on a failed read.
#[derive(Debug, Clone, Copy)]
pub struct Knobs<'a> {
    /// The target (`lock_timeout`, `statement_timeout`, its name).
    pub target: &'a TargetConfig,
    /// `[targets.imports]` (`recheck_window`, `max_imports`).
    pub imports: &'a ImportsConfig,
}

/// The problem line for a failed read of `source`: `error` is PostgreSQL's message (with its
/// SQLSTATE `code`), `role` pgvigil's role as written in a GRANT, `holders` the lock holders
/// found after a `55P03`.
pub fn describe(
    source: &AuditTableConfig,
    role: &str,
    knobs: Knobs<'_>,
    code: Option<&SqlState>,
    error: &str,
    holders: &[Holder],
) -> String {
    let table = &source.table;
    let duration = |d| humantime::format_duration(d).to_string();
    let fix = match code {
        Some(c) if *c == SqlState::UNDEFINED_TABLE => {
            "create it (deploy/sql/import_audit.sql) or fix `table` in [[targets.imports.audit_tables]]"
                .to_owned()
        }
        Some(c) if *c == SqlState::UNDEFINED_COLUMN => {
            "map the app's column names with [targets.imports.audit_tables.columns]".to_owned()
        }
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            format!("GRANT SELECT ON {table} TO {role} (see deploy/sql/monitoring_role.sql)")
        }
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => lock_fix(source, knobs, holders),
        Some(c) if *c == SqlState::QUERY_CANCELED && error.contains("statement timeout") => {
            format!(
                "the read ran longer than statement_timeout ({}) of target {}: raise statement_timeout there, \
                 or read fewer rows with [targets.imports] recheck_window (now {}) or max_imports (now {}); \
                 its imports' alerts stay as they were until a read succeeds",
                duration(knobs.target.statement_timeout),
                knobs.target.name,
                duration(knobs.imports.recheck_window),
                knobs.imports.max_imports
            )
        }
        Some(c) if *c == SqlState::QUERY_CANCELED => {
            "the read was cancelled (pg_cancel_backend, or pgvigil stopping); it is read again at the next poll"
                .to_owned()
        }
        _ => "check the audit table's definition against DESIGN.md".to_owned(),
    };
    format!("cannot read the audit table {table}: {error}; {fix}")
}

/// What to do about a read that waited past `lock_timeout`: the holders, if still there.
fn lock_fix(source: &AuditTableConfig, knobs: Knobs<'_>, holders: &[Holder]) -> String {
    let table = &source.table;
    let held = holders
        .iter()
        .map(|h| format!("pid {} ({}: {})", h.pid, h.state, h.query))
        .collect::<Vec<_>>()
        .join(", ");
    let lock_timeout = humantime::format_duration(knobs.target.lock_timeout);
    if held.is_empty() {
        format!(
            "a lock on {table} blocked the read for longer than lock_timeout ({lock_timeout}) and was gone when pgvigil looked: \
             see /api/v1/locks; raise lock_timeout of target {} if such locks are expected; \
             its imports' alerts stay as they were until a read succeeds",
            knobs.target.name
        )
    } else {
        format!(
            "a lock on {table} held by {held} blocks the read for longer than lock_timeout ({lock_timeout}): \
             see /api/v1/locks; end that transaction if it should not be there; \
             its imports' alerts stay as they were until a read succeeds"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fixture() -> (AuditTableConfig, TargetConfig) {
        let env = crate::config::LibpqEnv::default();
        let spec = crate::config::ConnectionSpec::parse("host=h dbname=app", &env).unwrap();
        let mut target = TargetConfig::new("main", spec);
        target.lock_timeout = Duration::from_secs(1);
        target.statement_timeout = Duration::from_secs(5);
        let source = AuditTableConfig::recommended(
            crate::config::QualifiedName::parse("public.import_audit").unwrap(),
        );
        (source, target)
    }

    #[test]
    fn a_lock_names_its_holder_and_the_locks_endpoint() {
        let (source, target) = fixture();
        let knobs = Knobs {
            target: &target,
            imports: &target.imports,
        };
        let holder = Holder {
            pid: 4242,
            state: "idle in transaction".into(),
            query: "LOCK TABLE import_audit IN ACCESS EXCLUSIVE MODE".into(),
        };
        let text = describe(
            &source,
            "pgvigil",
            knobs,
            Some(&SqlState::LOCK_NOT_AVAILABLE),
            "ERROR (55P03): canceling statement due to lock timeout",
            &[holder],
        );
        assert_eq!(
            text,
            "cannot read the audit table public.import_audit: ERROR (55P03): canceling statement due to lock timeout; \
             a lock on public.import_audit held by pid 4242 (idle in transaction: LOCK TABLE import_audit IN ACCESS EXCLUSIVE MODE) \
             blocks the read for longer than lock_timeout (1s): see /api/v1/locks; end that transaction if it should not be there; \
             its imports' alerts stay as they were until a read succeeds"
        );
        let gone = describe(
            &source,
            "pgvigil",
            knobs,
            Some(&SqlState::LOCK_NOT_AVAILABLE),
            "ERROR (55P03): canceling statement due to lock timeout",
            &[],
        );
        assert!(
            gone.contains(
                "was gone when pgvigil looked: see /api/v1/locks; raise lock_timeout of target main"
            ),
            "{gone}"
        );
    }

    #[test]
    fn a_timeout_names_the_knobs_and_a_cancel_says_so() {
        let (source, target) = fixture();
        let knobs = Knobs {
            target: &target,
            imports: &target.imports,
        };
        let text = describe(
            &source,
            "pgvigil",
            knobs,
            Some(&SqlState::QUERY_CANCELED),
            "ERROR (57014): canceling statement due to statement timeout",
            &[],
        );
        assert!(
            text.contains("the read ran longer than statement_timeout (5s) of target main: raise statement_timeout there, or read fewer rows with [targets.imports] recheck_window (now "),
            "{text}"
        );
        assert!(text.contains(") or max_imports (now "), "{text}");
        let cancel = describe(
            &source,
            "pgvigil",
            knobs,
            Some(&SqlState::QUERY_CANCELED),
            "ERROR (57014): canceling statement due to user request",
            &[],
        );
        assert!(cancel.ends_with("the read was cancelled (pg_cancel_backend, or pgvigil stopping); it is read again at the next poll"), "{cancel}");
    }

    #[test]
    fn missing_tables_columns_and_grants_keep_their_fixes() {
        let (source, target) = fixture();
        let knobs = Knobs {
            target: &target,
            imports: &target.imports,
        };
        let fix = |code: &SqlState| describe(&source, "mon", knobs, Some(code), "E", &[]);
        assert!(fix(&SqlState::UNDEFINED_TABLE).ends_with("; create it (deploy/sql/import_audit.sql) or fix `table` in [[targets.imports.audit_tables]]"));
        assert!(
            fix(&SqlState::UNDEFINED_COLUMN).contains("[targets.imports.audit_tables.columns]")
        );
        assert!(fix(&SqlState::INSUFFICIENT_PRIVILEGE).ends_with(
            "; GRANT SELECT ON public.import_audit TO mon (see deploy/sql/monitoring_role.sql)"
        ));
    }
}
