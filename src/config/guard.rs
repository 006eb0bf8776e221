//! `[targets.tables]` and `[targets.imports]`: the data-loss guard's settings, validated (their
//! `enabled` and `interval` are the uniform keys of [`super::CollectorConfig`]).
//!
//! Every table and column name from the config is checked here ([`Ident`]) and only ever reaches
//! SQL quoted, so a config file can name any table but never inject SQL.

use std::fmt;
use std::time::Duration;

use toml::Spanned;

use super::raw::{HumanDuration, RawAuditColumns, RawAuditTable, RawImports, RawTables};
use super::{ConfigError, Validator};

/// `[targets.tables]`: row-count estimates for every table, exact counts for an allow-list.
#[derive(Debug, Clone, PartialEq)]
pub struct TablesConfig {
    /// Glob patterns (`*` and `?`) over `schema.table`; empty = every user table.
    pub include: Vec<String>,
    /// Glob patterns over `schema.table` never exported.
    pub exclude: Vec<String>,
    /// Export at most this many tables of one database (largest first);
    /// `pgvigil_tables_omitted` counts the rest.
    pub max_tables: usize,
    /// Export at most this many tables over all the databases of the target: each database
    /// gets an equal share, and what small databases leave of theirs goes to the large ones.
    pub max_tables_total: usize,
    /// Tables whose rows are counted exactly (`count(*)`), as `schema.table` or `table`.
    pub exact_count_tables: Vec<QualifiedName>,
    /// Time between two rounds of exact counts.
    pub exact_count_interval: Duration,
    /// `statement_timeout` of one exact count.
    pub exact_count_timeout: Duration,
    /// Most time one round of exact counts may take; tables left over are skipped.
    pub exact_count_budget: Duration,
}

impl Default for TablesConfig {
    fn default() -> Self {
        TablesConfig {
            include: Vec::new(),
            exclude: Vec::new(),
            max_tables: 300,
            max_tables_total: 3000,
            exact_count_tables: Vec::new(),
            exact_count_interval: Duration::from_secs(300),
            exact_count_timeout: Duration::from_secs(30),
            exact_count_budget: Duration::from_secs(60),
        }
    }
}

/// `[targets.imports]`: reconciliation of the app's import audit tables.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportsConfig {
    /// A committed import is not called short until it finished at least this long ago.
    pub grace_period: Duration,
    /// Committed imports are re-counted for this long after they finished (later deletes are
    /// loss too).
    pub recheck_window: Duration,
    /// How often an import that checked out ok is re-counted within the window.
    pub recheck_interval: Duration,
    /// A running import whose last heartbeat is older than this is stalled.
    pub stall_after: Duration,
    /// A running import older than this is stalled, heartbeat or not.
    pub max_duration: Duration,
    /// Read at most this many audit rows per audit table and poll (newest first).
    pub max_imports: usize,
    /// Audit tables to read; empty = find a table named `import_audit` in the database.
    pub audit_tables: Vec<AuditTableConfig>,
}

impl Default for ImportsConfig {
    fn default() -> Self {
        ImportsConfig {
            grace_period: Duration::from_secs(10),
            recheck_window: Duration::from_secs(3600),
            recheck_interval: Duration::from_secs(60),
            stall_after: Duration::from_secs(300),
            max_duration: Duration::from_secs(6 * 3600),
            max_imports: 500,
            audit_tables: Vec::new(),
        }
    }
}

/// One `[[targets.imports.audit_tables]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditTableConfig {
    /// The audit table.
    pub table: QualifiedName,
    /// Its column names.
    pub columns: AuditColumns,
}

impl AuditTableConfig {
    /// An audit table in DESIGN.md's shape.
    pub fn recommended(table: QualifiedName) -> Self {
        AuditTableConfig {
            table,
            columns: AuditColumns::default(),
        }
    }
}

/// Where each audit fact lives. Optional facts are `None` when the app's table lacks them.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditColumns {
    /// The import's id (any type; compared as text).
    pub import_id: Ident,
    /// The table the import writes to (`regclass` or text).
    pub target_table: Ident,
    /// Per-import name of the target table's import-id column; `None` = always `import_id`.
    pub id_column: Option<Ident>,
    /// Where the data came from (file name, URL).
    pub source_name: Option<Ident>,
    /// Rows in the source.
    pub expected_rows: Ident,
    /// Rows the app rejected as bad input.
    pub rejected_rows: Option<Ident>,
    /// Rows the app skipped on purpose.
    pub skipped_rows: Option<Ident>,
    /// Rows the app says it wrote.
    pub reported_rows: Option<Ident>,
    /// The import transaction's `xid8`.
    pub xact_id: Option<Ident>,
    /// pending, running, committed, failed, cancelled.
    pub status: Ident,
    /// When the row was created.
    pub created_at: Ident,
    /// Last sign of life of a running import.
    pub heartbeat_at: Option<Ident>,
    /// When the import finished.
    pub finished_at: Option<Ident>,
    /// Why it failed.
    pub error_message: Option<Ident>,
}

impl Default for AuditColumns {
    fn default() -> Self {
        let id = |s: &str| Ident(s.to_owned());
        AuditColumns {
            import_id: id("import_id"),
            target_table: id("target_table"),
            id_column: Some(id("id_column")),
            source_name: Some(id("source_name")),
            expected_rows: id("expected_rows"),
            rejected_rows: Some(id("rejected_rows")),
            skipped_rows: Some(id("skipped_rows")),
            reported_rows: Some(id("reported_rows")),
            xact_id: Some(id("xact_id")),
            status: id("status"),
            created_at: id("created_at"),
            heartbeat_at: Some(id("heartbeat_at")),
            finished_at: Some(id("finished_at")),
            error_message: Some(id("error_message")),
        }
    }
}

/// A validated SQL identifier (table or column name), as written: not case-folded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Check a name: 1 to 63 bytes, no NUL, no control characters.
    pub fn new(name: &str) -> Result<Ident, String> {
        if name.is_empty() || name.len() > 63 {
            return Err(format!(
                "\"{name}\" is not a valid PostgreSQL name; use 1 to 63 bytes"
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(format!(
                "{name:?} contains control characters; PostgreSQL names cannot"
            ));
        }
        Ok(Ident(name.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier: `"name"`, with inner quotes doubled.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `table` or `schema.table`; a bare table is looked up in the session's search_path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    /// The schema, when given.
    pub schema: Option<Ident>,
    /// The table.
    pub name: Ident,
}

impl QualifiedName {
    /// Parse `table` or `schema.table` (names with a dot in them are not supported).
    pub fn parse(text: &str) -> Result<QualifiedName, String> {
        let parts: Vec<&str> = text.split('.').collect();
        match parts.as_slice() {
            [name] => Ok(QualifiedName {
                schema: None,
                name: Ident::new(name)?,
            }),
            [schema, name] => Ok(QualifiedName {
                schema: Some(Ident::new(schema)?),
                name: Ident::new(name)?,
            }),
            _ => Err(format!(
                "\"{text}\" is not a table name; write \"table\" or \"schema.table\""
            )),
        }
    }

    /// Quoted for SQL: `"schema"."table"` or `"table"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", schema.quoted(), self.name.quoted()),
            None => self.name.quoted(),
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

impl Validator<'_> {
    pub(super) fn name(
        &self,
        value: &Spanned<String>,
        what: &str,
    ) -> Result<QualifiedName, ConfigError> {
        QualifiedName::parse(value.get_ref()).map_err(|e| self.err(value, format!("{what}: {e}")))
    }

    pub(super) fn positive(
        &self,
        value: &Option<Spanned<i64>>,
        key: &str,
        default: usize,
    ) -> Result<usize, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(self.err(
                    v,
                    format!(
                        "{key} = {} must be a positive number, e.g. {default}",
                        v.get_ref()
                    ),
                )),
            },
        }
    }

    fn guard_duration(
        &self,
        value: &Option<Spanned<HumanDuration>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let d = value.get_ref().0;
        if d < Duration::from_millis(100) {
            return Err(self.err(
                value,
                format!(
                    "{key} = \"{}\" is too short; use at least 100ms (default {})",
                    humantime::format_duration(d),
                    humantime::format_duration(default)
                ),
            ));
        }
        super::limits::check_max(key, d).map_err(|e| self.err(value, e))?;
        Ok(d)
    }

    pub(super) fn tables(&self, raw: RawTables) -> Result<TablesConfig, ConfigError> {
        let d = TablesConfig::default();
        let include = raw
            .include
            .iter()
            .map(|p| self.pattern(p))
            .collect::<Result<_, _>>()?;
        let exclude = raw
            .exclude
            .iter()
            .map(|p| self.pattern(p))
            .collect::<Result<_, _>>()?;
        let exact_count_tables = raw
            .exact_count_tables
            .iter()
            .map(|t| self.name(t, "exact_count_tables"))
            .collect::<Result<_, _>>()?;
        Ok(TablesConfig {
            include,
            exclude,
            max_tables: self.positive(&raw.max_tables, "max_tables", d.max_tables)?,
            max_tables_total: self.positive(
                &raw.max_tables_total,
                "max_tables_total",
                d.max_tables_total,
            )?,
            exact_count_tables,
            exact_count_interval: self.guard_duration(
                &raw.exact_count_interval,
                "exact_count_interval",
                d.exact_count_interval,
            )?,
            exact_count_timeout: self.guard_duration(
                &raw.exact_count_timeout,
                "exact_count_timeout",
                d.exact_count_timeout,
            )?,
            exact_count_budget: self.guard_duration(
                &raw.exact_count_budget,
                "exact_count_budget",
                d.exact_count_budget,
            )?,
        })
    }

    pub(super) fn imports(&self, raw: RawImports) -> Result<ImportsConfig, ConfigError> {
        let d = ImportsConfig::default();
        let mut audit_tables = Vec::new();
        for spanned in raw.audit_tables {
            audit_tables.push(self.audit_table(spanned.into_inner())?);
        }
        Ok(ImportsConfig {
            grace_period: self.guard_duration(&raw.grace_period, "grace_period", d.grace_period)?,
            recheck_window: self.guard_duration(
                &raw.recheck_window,
                "recheck_window",
                d.recheck_window,
            )?,
            recheck_interval: self.guard_duration(
                &raw.recheck_interval,
                "recheck_interval",
                d.recheck_interval,
            )?,
            stall_after: self.guard_duration(&raw.stall_after, "stall_after", d.stall_after)?,
            max_duration: self.guard_duration(&raw.max_duration, "max_duration", d.max_duration)?,
            max_imports: self.positive(&raw.max_imports, "max_imports", d.max_imports)?,
            audit_tables,
        })
    }

    /// One `[[...audit_tables]]` entry.
    pub(super) fn audit_table(
        &self,
        table: RawAuditTable,
    ) -> Result<AuditTableConfig, ConfigError> {
        Ok(AuditTableConfig {
            table: self.name(&table.table, "audit table")?,
            columns: self.columns(table.columns)?,
        })
    }

    fn columns(&self, raw: RawAuditColumns) -> Result<AuditColumns, ConfigError> {
        let d = AuditColumns::default();
        let required = |v: Option<Spanned<String>>, key: &str, default: Ident| match v {
            None => Ok(default),
            Some(v) => Ident::new(v.get_ref())
                .map_err(|e| self.err(&v, format!("columns.{key}: {e}; this column is required"))),
        };
        // "" says the app's table has no such column.
        let optional = |v: Option<Spanned<String>>, key: &str, default: Option<Ident>| match v {
            None => Ok(default),
            Some(v) if v.get_ref().is_empty() => Ok(None),
            Some(v) => Ident::new(v.get_ref())
                .map(Some)
                .map_err(|e| self.err(&v, format!("columns.{key}: {e}, or \"\" if there is none"))),
        };
        Ok(AuditColumns {
            import_id: required(raw.import_id, "import_id", d.import_id)?,
            target_table: required(raw.target_table, "target_table", d.target_table)?,
            id_column: optional(raw.id_column, "id_column", d.id_column)?,
            source_name: optional(raw.source_name, "source_name", d.source_name)?,
            expected_rows: required(raw.expected_rows, "expected_rows", d.expected_rows)?,
            rejected_rows: optional(raw.rejected_rows, "rejected_rows", d.rejected_rows)?,
            skipped_rows: optional(raw.skipped_rows, "skipped_rows", d.skipped_rows)?,
            reported_rows: optional(raw.reported_rows, "reported_rows", d.reported_rows)?,
            xact_id: optional(raw.xact_id, "xact_id", d.xact_id)?,
            status: required(raw.status, "status", d.status)?,
            created_at: required(raw.created_at, "created_at", d.created_at)?,
            heartbeat_at: optional(raw.heartbeat_at, "heartbeat_at", d.heartbeat_at)?,
            finished_at: optional(raw.finished_at, "finished_at", d.finished_at)?,
            error_message: optional(raw.error_message, "error_message", d.error_message)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LibpqEnv};

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(
            std::path::Path::new("pgvigil.toml"),
            &format!("[[targets]]\nname = \"m\"\ndsn = \"host=h\"\n{extra}"),
            &LibpqEnv::default(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn guard_sections_parse_with_defaults_and_mappings() {
        let cfg = parse("").unwrap();
        let t = &cfg.targets[0];
        assert_eq!(t.tables.max_tables, 300);
        assert!(t.imports.audit_tables.is_empty());
        assert_eq!(t.imports.grace_period, Duration::from_secs(10));

        let cfg = parse(
            "[targets.tables]\nexact_count_tables = [\"crm.contacts\"]\n\
             [targets.imports]\ngrace_period = \"2s\"\n\
             [[targets.imports.audit_tables]]\ntable = \"etl.batches\"\n\
             [targets.imports.audit_tables.columns]\nimport_id = \"batch\"\nxact_id = \"\"\n",
        )
        .unwrap();
        let t = &cfg.targets[0];
        assert_eq!(
            t.tables.exact_count_tables[0].quoted(),
            "\"crm\".\"contacts\""
        );
        let audit = &t.imports.audit_tables[0];
        assert_eq!(audit.table.to_string(), "etl.batches");
        assert_eq!(audit.columns.import_id.as_str(), "batch");
        assert_eq!(audit.columns.xact_id, None);
        assert_eq!(audit.columns.status.as_str(), "status");
    }

    #[test]
    fn guard_mistakes_are_located_and_explained() {
        let err = parse("[targets.tables]\nmax_tables = 0\n").unwrap_err();
        assert!(
            err.starts_with("pgvigil.toml:5:14: max_tables = 0 must be a positive"),
            "{err}"
        );
        let err = parse("[targets.imports]\n[[targets.imports.audit_tables]]\ntable = \"a.b.c\"\n")
            .unwrap_err();
        assert!(err.contains("write \"table\" or \"schema.table\""), "{err}");
        let err = parse("[[targets.imports.audit_tables]]\ntable = \"t\"\n[targets.imports.audit_tables.columns]\nimport_idd = \"x\"\n")
            .unwrap_err();
        assert!(err.contains("did you mean `import_id`"), "{err}");
        let err = parse("[targets.imports]\ngrace_period = \"1ms\"\n").unwrap_err();
        assert!(err.contains("too short"), "{err}");
    }

    #[test]
    fn identifiers_are_quoted_never_spliced() {
        let name = QualifiedName::parse("crm.Contacts\"; DROP TABLE x; --").unwrap();
        assert_eq!(name.quoted(), "\"crm\".\"Contacts\"\"; DROP TABLE x; --\"");
        assert!(QualifiedName::parse("a.b.c").is_err());
        assert!(QualifiedName::parse("").is_err());
        assert!(Ident::new(&"x".repeat(64)).is_err());
        assert!(Ident::new("a\u{0}b").is_err());
    }
}
