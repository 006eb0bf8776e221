//! `[targets.migrations]`: which migration tools' tables the `migrations` collector reads in
//! every watched database, and how many leftovers of unsafe migrations it exports one by one.
//!
//! ```toml
//! [targets.migrations]
//! interval = "1m"
//! auto_detect = true          # find schema_migrations, flyway_schema_history, ... in any schema
//! max_objects = 50            # INVALID indexes / NOT VALID constraints exported one by one
//! [[targets.migrations.tables]]
//! tool = "flyway"
//! table = "app.flyway_schema_history"
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::guard::QualifiedName;
use super::raw::HumanDuration;
use super::{ConfigError, Validator};

/// How often the migration records and leftovers are read by default: a catalog scan and a
/// few rows of each tool's table, once a minute.
pub(super) const DEFAULT_MIGRATIONS_INTERVAL: Duration = Duration::from_secs(60);

/// A migration tool whose own records pgvigil reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationTool {
    /// golang-migrate: `schema_migrations(version bigint, dirty boolean)`.
    GolangMigrate,
    /// Flyway: `flyway_schema_history(installed_rank, version, ..., success)`.
    Flyway,
    /// sqlx: `_sqlx_migrations(version, description, installed_on, success, ...)`.
    Sqlx,
    /// Alembic: `alembic_version(version_num)`.
    Alembic,
}

impl MigrationTool {
    /// Every tool, in the order they are looked for.
    pub const ALL: [MigrationTool; 4] = [
        MigrationTool::GolangMigrate,
        MigrationTool::Flyway,
        MigrationTool::Sqlx,
        MigrationTool::Alembic,
    ];

    /// The `tool` label and config value: `golang-migrate`, `flyway`, `sqlx`, `alembic`.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationTool::GolangMigrate => "golang-migrate",
            MigrationTool::Flyway => "flyway",
            MigrationTool::Sqlx => "sqlx",
            MigrationTool::Alembic => "alembic",
        }
    }

    /// The table name the tool creates by default (what auto-detection looks for).
    pub fn default_table(self) -> &'static str {
        match self {
            MigrationTool::GolangMigrate => "schema_migrations",
            MigrationTool::Flyway => "flyway_schema_history",
            MigrationTool::Sqlx => "_sqlx_migrations",
            MigrationTool::Alembic => "alembic_version",
        }
    }

    /// The tool named `name` in the config.
    pub fn parse(name: &str) -> Option<MigrationTool> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for MigrationTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[targets.migrations]`'s own keys.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationsConfig {
    /// Look for the tools' default table names in every schema of the database.
    pub auto_detect: bool,
    /// Tables read whatever their name, each as the given tool's.
    pub tables: Vec<MigrationTableConfig>,
    /// INVALID indexes and NOT VALID constraints exported one by one per database; the rest
    /// are counted in `pgvigil_schema_objects_omitted`.
    pub max_objects: usize,
}

impl Default for MigrationsConfig {
    fn default() -> Self {
        MigrationsConfig {
            auto_detect: true,
            tables: Vec::new(),
            max_objects: 50,
        }
    }
}

/// One `[[targets.migrations.tables]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationTableConfig {
    /// Whose table it is.
    pub tool: MigrationTool,
    /// `table` or `schema.table`.
    pub table: QualifiedName,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMigrations {
    pub(crate) enabled: Option<bool>,
    pub(crate) interval: Option<Spanned<HumanDuration>>,
    pub(crate) auto_detect: Option<bool>,
    pub(crate) max_objects: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) tables: Vec<RawMigrationTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMigrationTable {
    pub(crate) tool: Spanned<String>,
    pub(crate) table: Spanned<String>,
}

impl Validator<'_> {
    /// `[targets.migrations]`'s own keys.
    pub(super) fn migrations(&self, raw: &RawMigrations) -> Result<MigrationsConfig, ConfigError> {
        let d = MigrationsConfig::default();
        let mut tables = Vec::new();
        for t in &raw.tables {
            let tool = MigrationTool::parse(t.tool.get_ref()).ok_or_else(|| {
                let known: Vec<&str> = MigrationTool::ALL.iter().map(|t| t.as_str()).collect();
                self.err(
                    &t.tool,
                    format!(
                        "tool = \"{}\" is not a migration tool pgvigil reads; use one of {}",
                        t.tool.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
            tables.push(MigrationTableConfig {
                tool,
                table: self.name(&t.table, "migration table")?,
            });
        }
        Ok(MigrationsConfig {
            auto_detect: raw.auto_detect.unwrap_or(d.auto_detect),
            tables,
            max_objects: self.positive(&raw.max_objects, "max_objects", d.max_objects)?,
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
    fn defaults_and_overrides() {
        let cfg = parse("").unwrap();
        let m = &cfg.targets[0].migrations;
        assert!(m.enabled && m.auto_detect && m.tables.is_empty());
        assert_eq!(m.interval, Some(DEFAULT_MIGRATIONS_INTERVAL));
        assert_eq!(m.max_objects, 50);
        let cfg = parse(
            "[targets.migrations]\nauto_detect = false\nmax_objects = 5\ninterval = \"30s\"\n\
             [[targets.migrations.tables]]\ntool = \"flyway\"\ntable = \"app.history\"\n",
        )
        .unwrap();
        let m = &cfg.targets[0].migrations;
        assert!(!m.auto_detect);
        assert_eq!(m.max_objects, 5);
        assert_eq!(m.interval, Some(Duration::from_secs(30)));
        assert_eq!(m.tables[0].tool, MigrationTool::Flyway);
        assert_eq!(m.tables[0].table.quoted(), "\"app\".\"history\"");
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        let err = parse("[[targets.migrations.tables]]\ntool = \"liquibase\"\ntable = \"t\"\n")
            .unwrap_err();
        assert!(
            err.contains("tool = \"liquibase\" is not a migration tool")
                && err.contains("golang-migrate, flyway, sqlx, alembic"),
            "{err}"
        );
        let err = parse("[[targets.migrations.tables]]\ntool = \"sqlx\"\ntable = \"a.b.c\"\n")
            .unwrap_err();
        assert!(err.contains("write \"table\" or \"schema.table\""), "{err}");
        let err = parse("[targets.migrations]\nmax_objects = 0\n").unwrap_err();
        assert!(err.contains("max_objects = 0 must be a positive"), "{err}");
    }

    #[test]
    fn tool_names_round_trip() {
        for tool in MigrationTool::ALL {
            assert_eq!(MigrationTool::parse(tool.as_str()), Some(tool));
        }
        assert_eq!(MigrationTool::parse("Flyway"), None);
    }
}
