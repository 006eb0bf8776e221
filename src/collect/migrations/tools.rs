//! The migration tools' tables, without a database: which tool a found table belongs to,
//! whether its columns are the shape pgvigil reads, and what its rows say (the current
//! version, the failed migrations). Unit-tested below.

use serde::Serialize;

use crate::config::MigrationTool;

/// A table that may be a migration tool's, as the catalog describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Whose table it is (by its name, or as configured).
    pub tool: MigrationTool,
    /// `schema.table`, each part quoted as needed (`format('%I.%I')`): usable in SQL as is.
    pub table: String,
    /// Its columns: name and `format_type` of each, in order.
    pub columns: Vec<(String, String)>,
    /// `has_table_privilege(..., 'SELECT')` for pgvigil's role.
    pub readable: bool,
    /// Someone holds or waits for ACCESS EXCLUSIVE on it (a migration is running): reading it
    /// would queue behind that lock, so it is not read this time.
    pub locked: bool,
    /// Listed in `[[targets.migrations.tables]]` rather than found by its name.
    pub configured: bool,
}

/// Integer types a version column may have.
const INTEGERS: &[&str] = &["bigint", "integer", "smallint", "numeric"];
/// Text types.
const TEXTS: &[&str] = &["character varying", "text", "character", "name"];
/// Timestamp types.
const TIMESTAMPS: &[&str] = &["timestamp without time zone", "timestamp with time zone"];
const BOOLEAN: &[&str] = &["boolean"];

/// The columns pgvigil reads from a tool's table, with the types each may have.
pub fn required_columns(tool: MigrationTool) -> &'static [(&'static str, &'static [&'static str])] {
    match tool {
        MigrationTool::GolangMigrate => &[("version", INTEGERS), ("dirty", BOOLEAN)],
        MigrationTool::Flyway => &[
            ("installed_rank", INTEGERS),
            ("version", TEXTS),
            ("description", TEXTS),
            ("script", TEXTS),
            ("installed_on", TIMESTAMPS),
            ("success", BOOLEAN),
        ],
        MigrationTool::Sqlx => &[
            ("version", INTEGERS),
            ("description", TEXTS),
            ("installed_on", TIMESTAMPS),
            ("success", BOOLEAN),
        ],
        MigrationTool::Alembic => &[("version_num", TEXTS)],
    }
}

/// Why `candidate` cannot be read as its tool's table, with the fix; `None` if it can.
pub fn problem(candidate: &Candidate) -> Option<String> {
    let Candidate { tool, table, .. } = candidate;
    let mut wrong = Vec::new();
    for (column, types) in required_columns(*tool) {
        match candidate.columns.iter().find(|(name, _)| name == column) {
            None => wrong.push(format!("no column {column}")),
            Some((_, ty)) if !types.contains(&ty.as_str()) => {
                wrong.push(format!("{column} is {ty}, not {}", types.join(" or ")))
            }
            Some(_) => {}
        }
    }
    if !wrong.is_empty() {
        let fix = if candidate.configured {
            format!(
                "check that {table} is {tool}'s table, or fix its entry in [[targets.migrations.tables]]"
            )
        } else {
            format!(
                "if {table} is not {tool}'s table (another tool uses the name), list the real migration tables in [[targets.migrations.tables]] and set auto_detect = false in [targets.migrations]"
            )
        };
        return Some(format!(
            "{table} does not look like {tool}'s migration table ({}); {fix}",
            wrong.join(", ")
        ));
    }
    if !candidate.readable {
        return Some(format!(
            "pgvigil's role may not read {tool}'s migration table {table}; GRANT SELECT ON {table} TO the pgvigil role (deploy/sql/monitoring_role.sql)"
        ));
    }
    None
}

/// One row of a migration table, as the tool's query returns it (text columns).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Record {
    /// The version (golang-migrate, Flyway, sqlx) or revision (Alembic); empty for Flyway's
    /// repeatable migrations.
    pub version: String,
    /// What the migration does (Flyway, sqlx).
    pub description: String,
    /// Its file (Flyway).
    pub script: String,
    /// When the tool applied it (Flyway, sqlx).
    pub installed_on: Option<String>,
    /// Whether it succeeded (golang-migrate: not dirty).
    pub success: bool,
}

/// What one migration table says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// The schema version the tool recorded last (see `pgvigil_migration_info`); `None` for an
    /// empty table.
    pub version: Option<String>,
    /// The failed migrations it records now.
    pub failed: Vec<Record>,
}

/// Read `rows` as `tool`'s, in the order its query returns them (see [`super::sql::records_sql`]):
/// golang-migrate one row; Flyway the latest row of each version or script, newest first;
/// sqlx highest version first; Alembic its head revisions.
pub fn interpret(tool: MigrationTool, rows: Vec<Record>) -> Reading {
    match tool {
        MigrationTool::GolangMigrate => {
            let first = rows.into_iter().next();
            Reading {
                version: first.as_ref().map(|r| r.version.clone()),
                failed: first.into_iter().filter(|r| !r.success).collect(),
            }
        }
        MigrationTool::Flyway | MigrationTool::Sqlx => Reading {
            version: rows
                .iter()
                .find(|r| r.success && !r.version.is_empty())
                .map(|r| r.version.clone()),
            failed: rows.into_iter().filter(|r| !r.success).collect(),
        },
        MigrationTool::Alembic => {
            let mut heads: Vec<String> = rows.into_iter().map(|r| r.version).collect();
            heads.sort();
            heads.dedup();
            Reading {
                version: (!heads.is_empty()).then(|| heads.join(",")),
                failed: Vec::new(),
            }
        }
    }
}

/// How to recover from `failed`, a failed migration recorded in `tool`'s `table`.
pub fn fix(tool: MigrationTool, table: &str, failed: &Record) -> String {
    let version = &failed.version;
    match tool {
        MigrationTool::GolangMigrate => format!(
            "finish or undo by hand what migration {version} did, then mark the state clean: migrate -path <migrations dir> -database <url> force {version} (or force the previous version to rerun {version}); dirty stays set until then"
        ),
        MigrationTool::Flyway => format!(
            "undo what {} did (PostgreSQL rolled back its transaction unless it ran outside one), fix the script, then run flyway repair (removes the failed row from {table}) and flyway migrate",
            if failed.script.is_empty() {
                version.as_str()
            } else {
                failed.script.as_str()
            }
        ),
        MigrationTool::Sqlx => format!(
            "undo what {version} ({}) did, fix it, then DELETE FROM {table} WHERE version = {version}; and run sqlx migrate run again",
            failed.description
        ),
        MigrationTool::Alembic => format!(
            "alembic records no failures; compare alembic current with alembic heads and run alembic upgrade head (table {table})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(tool: MigrationTool, columns: &[(&str, &str)]) -> Candidate {
        Candidate {
            tool,
            table: "public.t".into(),
            columns: columns
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect(),
            readable: true,
            locked: false,
            configured: false,
        }
    }

    fn record(version: &str, success: bool) -> Record {
        Record {
            version: version.into(),
            success,
            ..Record::default()
        }
    }

    #[test]
    fn shapes_are_checked_column_by_column() {
        let ok = candidate(
            MigrationTool::GolangMigrate,
            &[("version", "bigint"), ("dirty", "boolean")],
        );
        assert_eq!(problem(&ok), None);
        // Rails' schema_migrations: version is text and there is no dirty.
        let rails = candidate(
            MigrationTool::GolangMigrate,
            &[("version", "character varying")],
        );
        let p = problem(&rails).unwrap();
        assert!(
            p.contains("public.t does not look like golang-migrate's"),
            "{p}"
        );
        assert!(
            p.contains("version is character varying, not bigint"),
            "{p}"
        );
        assert!(p.contains("no column dirty"), "{p}");
        assert!(p.contains("auto_detect = false"), "{p}");
        let mut locked_out = ok.clone();
        locked_out.readable = false;
        let p = problem(&locked_out).unwrap();
        assert!(p.contains("GRANT SELECT ON public.t"), "{p}");
        let mut configured = rails;
        configured.configured = true;
        assert!(problem(&configured).unwrap().contains("fix its entry"));
    }

    #[test]
    fn golang_migrate_dirty_is_failed() {
        let r = interpret(
            MigrationTool::GolangMigrate,
            vec![record("20240101", false)],
        );
        assert_eq!(r.version.as_deref(), Some("20240101"));
        assert_eq!(r.failed, vec![record("20240101", false)]);
        let r = interpret(MigrationTool::GolangMigrate, vec![record("7", true)]);
        assert!(r.failed.is_empty());
        let r = interpret(MigrationTool::GolangMigrate, vec![]);
        assert_eq!(r.version, None);
    }

    #[test]
    fn flyway_and_sqlx_version_is_the_latest_success() {
        // Newest first: 3 failed, 2 applied, a repeatable migration (no version) applied.
        let rows = vec![record("3", false), record("", true), record("2", true)];
        let r = interpret(MigrationTool::Flyway, rows.clone());
        assert_eq!(r.version.as_deref(), Some("2"));
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].version, "3");
        let r = interpret(
            MigrationTool::Sqlx,
            vec![record("5", true), record("4", true)],
        );
        assert_eq!((r.version.as_deref(), r.failed.len()), (Some("5"), 0));
    }

    #[test]
    fn alembic_heads_are_joined_in_order() {
        let r = interpret(
            MigrationTool::Alembic,
            vec![record("b2", true), record("a1", true)],
        );
        assert_eq!(r.version.as_deref(), Some("a1,b2"));
        assert!(r.failed.is_empty());
    }

    #[test]
    fn fixes_name_the_tool_command() {
        let failed = Record {
            version: "3".into(),
            script: "V3__add_email.sql".into(),
            description: "add email".into(),
            ..Record::default()
        };
        assert!(fix(MigrationTool::GolangMigrate, "t", &failed).contains("force 3"));
        let f = fix(
            MigrationTool::Flyway,
            "public.flyway_schema_history",
            &failed,
        );
        assert!(
            f.contains("V3__add_email.sql") && f.contains("flyway repair"),
            "{f}"
        );
        let f = fix(MigrationTool::Sqlx, "public._sqlx_migrations", &failed);
        assert!(
            f.contains("DELETE FROM public._sqlx_migrations WHERE version = 3"),
            "{f}"
        );
    }
}
