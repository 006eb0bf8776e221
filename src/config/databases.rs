//! `[targets.databases]`: which databases of a target's cluster are watched, how often the list
//! is read, how the database sessions share the target's connection budget, and
//! `[targets.databases."<datname>"]` overrides of the tables and imports settings for one
//! database.
//!
//! # Which databases a target watches
//!
//! * With a `[targets.databases]` table (even an empty one): every database of the cluster
//!   that accepts connections and is not a template, filtered by `include` (default `["*"]`)
//!   and `exclude` globs over the database name.
//! * Without one, if the DSN names a database (`postgres://u@h/app`, `dbname=app`): only that
//!   database — what a target was before pgvigil watched whole clusters, so existing configs
//!   keep their meaning.
//! * Without one, if the DSN names no database: every database.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use toml::Spanned;

use super::guard::{AuditTableConfig, QualifiedName};
use super::raw::{HumanDuration, RawAuditTable};
use super::{ConfigError, Validator};

/// Default time between two readings of `pg_database` (new and dropped databases), for a
/// target at the default poll interval (every fourth poll if it polls faster).
pub(super) const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Default time after which a database whose statistics did not change is visited anyway.
pub(super) const DEFAULT_IDLE_REVISIT: Duration = Duration::from_secs(15 * 60);
/// Default time one round of visits may take before the rest waits for the next round.
pub(super) const DEFAULT_ROUND_BUDGET: Duration = Duration::from_secs(30);
/// Default cap on the connections the database sessions open per hour (import checks may
/// exceed it; table statistics wait).
pub(super) const DEFAULT_MAX_CONNECTS_PER_HOUR: u32 = 300;

/// Which databases are watched.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Only this database: a target without `[targets.databases]` whose DSN names a database.
    Only(String),
    /// Every database whose name matches an `include` glob and no `exclude` glob.
    Matching {
        /// Globs (`*`, `?`) over the database name; empty = every database.
        include: Vec<String>,
        /// Globs over the database name never watched.
        exclude: Vec<String>,
    },
}

/// `[targets.databases]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabasesConfig {
    /// Which databases are watched.
    pub selection: Selection,
    /// The most time between two readings of the database list and of `pg_stat_database`
    /// (which says which databases changed). A round, which starts with that reading, also
    /// comes every `[targets.tables] interval` if that is shorter.
    pub refresh_interval: Duration,
    /// A database whose statistics did not change is still visited this often (sizes and
    /// vacuum timestamps move without writes).
    pub idle_revisit: Duration,
    /// The longest one round of table-statistics visits may take; databases not reached are
    /// the first of the next round.
    pub round_budget: Duration,
    /// Connections the database sessions may open per hour for table statistics.
    pub max_connects_per_hour: u32,
    /// `[targets.databases."<datname>"]`: per-database settings.
    pub overrides: BTreeMap<String, DatabaseOverride>,
}

impl DatabasesConfig {
    /// The old shape: only `datname`.
    pub fn only(datname: &str) -> Self {
        DatabasesConfig {
            selection: Selection::Only(datname.to_owned()),
            ..DatabasesConfig::every()
        }
    }

    /// Every database of the cluster.
    pub fn every() -> Self {
        DatabasesConfig {
            selection: Selection::Matching {
                include: Vec::new(),
                exclude: Vec::new(),
            },
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            idle_revisit: DEFAULT_IDLE_REVISIT,
            round_budget: DEFAULT_ROUND_BUDGET,
            max_connects_per_hour: DEFAULT_MAX_CONNECTS_PER_HOUR,
            overrides: BTreeMap::new(),
        }
    }

    /// Whether the database `datname` is watched.
    pub fn selects(&self, datname: &str) -> bool {
        match &self.selection {
            Selection::Only(only) => only == datname,
            Selection::Matching { include, exclude } => {
                (include.is_empty() || include.iter().any(|p| glob(p, datname)))
                    && !exclude.iter().any(|p| glob(p, datname))
            }
        }
    }
}

/// `[targets.databases."<datname>"]`: what differs for one database. Each key given replaces
/// the target-wide value of `[targets.tables]` / `[targets.imports]` for that database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseOverride {
    /// `[targets.databases."<datname>".tables]`
    pub tables: TablesOverride,
    /// `[targets.databases."<datname>".imports]`
    pub imports: ImportsOverride,
}

/// The table settings one database may override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TablesOverride {
    /// Replaces `include`.
    pub include: Option<Vec<String>>,
    /// Replaces `exclude`.
    pub exclude: Option<Vec<String>>,
    /// Replaces `max_tables` for this database.
    pub max_tables: Option<usize>,
    /// Replaces `exact_count_tables`.
    pub exact_count_tables: Option<Vec<QualifiedName>>,
}

/// The import settings one database may override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportsOverride {
    /// Replaces `audit_tables` (an empty list: find `import_audit` by itself).
    pub audit_tables: Option<Vec<AuditTableConfig>>,
}

/// Shell-style glob: `*` any run of characters, `?` one character, everything else literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

// --- the raw table -----------------------------------------------------------------------------

/// The keys of `[targets.databases]` itself; every other key names a database.
const KEYS: &[&str] = &[
    "include",
    "exclude",
    "refresh_interval",
    "idle_revisit",
    "round_budget",
    "max_connects_per_hour",
];

/// `[targets.databases]` as written: its own keys, and one table per database named by its
/// key.
#[derive(Debug, Default)]
pub(crate) struct RawDatabases {
    pub(crate) include: Option<Vec<Spanned<String>>>,
    pub(crate) exclude: Vec<Spanned<String>>,
    pub(crate) refresh_interval: Option<Spanned<HumanDuration>>,
    pub(crate) idle_revisit: Option<Spanned<HumanDuration>>,
    pub(crate) round_budget: Option<Spanned<HumanDuration>>,
    pub(crate) max_connects_per_hour: Option<Spanned<i64>>,
    pub(crate) overrides: Vec<(String, RawDatabaseOverride)>,
}

impl<'de> Deserialize<'de> for RawDatabases {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = RawDatabases;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of database settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDatabases, A::Error> {
                let mut raw = RawDatabases::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "include" => raw.include = Some(map.next_value()?),
                        "exclude" => raw.exclude = map.next_value()?,
                        "refresh_interval" => raw.refresh_interval = Some(map.next_value()?),
                        "idle_revisit" => raw.idle_revisit = Some(map.next_value()?),
                        "round_budget" => raw.round_budget = Some(map.next_value()?),
                        "max_connects_per_hour" => {
                            raw.max_connects_per_hour = Some(map.next_value()?);
                        }
                        _ => {
                            let OverrideValue(value) = map.next_value()?;
                            raw.overrides.push((key, value));
                        }
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(RawVisitor)
    }
}

/// `[targets.databases."<datname>"]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabaseOverride {
    #[serde(default)]
    pub(crate) tables: RawTablesOverride,
    #[serde(default)]
    pub(crate) imports: RawImportsOverride,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTablesOverride {
    pub(crate) include: Option<Vec<Spanned<String>>>,
    pub(crate) exclude: Option<Vec<Spanned<String>>>,
    pub(crate) max_tables: Option<Spanned<i64>>,
    pub(crate) exact_count_tables: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawImportsOverride {
    pub(crate) audit_tables: Option<Vec<Spanned<RawAuditTable>>>,
}

/// A per-database table, or a misspelt key of `[targets.databases]` (which then gets a message
/// that names the valid keys).
struct OverrideValue(RawDatabaseOverride);

impl<'de> Deserialize<'de> for OverrideValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OverrideVisitor;
        impl<'de> Visitor<'de> for OverrideVisitor {
            type Value = OverrideValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "one of the keys {} of [targets.databases], or a table [targets.databases.\"<datname>\"] of settings for the database of that name",
                    KEYS.iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OverrideValue, A::Error> {
                RawDatabaseOverride::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(OverrideValue)
            }
        }
        deserializer.deserialize_map(OverrideVisitor)
    }
}

// --- validation --------------------------------------------------------------------------------

impl Validator<'_> {
    /// `[targets.databases]`; `None` when the target has no such table.
    pub(super) fn databases(
        &self,
        raw: Option<RawDatabases>,
        dsn_database: Option<&str>,
        default_refresh: Duration,
    ) -> Result<DatabasesConfig, ConfigError> {
        let mut d = match dsn_database {
            Some(name) if raw.is_none() => DatabasesConfig::only(name),
            _ => DatabasesConfig::every(),
        };
        d.refresh_interval = default_refresh;
        let Some(raw) = raw else {
            return Ok(d);
        };
        let include = raw
            .include
            .iter()
            .flatten()
            .map(|p| self.pattern(p))
            .collect::<Result<_, _>>()?;
        let exclude = raw
            .exclude
            .iter()
            .map(|p| self.pattern(p))
            .collect::<Result<_, _>>()?;
        let second = Duration::from_secs(1);
        let max_connects_per_hour = match &raw.max_connects_per_hour {
            None => d.max_connects_per_hour,
            Some(v) => match u32::try_from(*v.get_ref()) {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(self.err(
                        v,
                        format!(
                            "max_connects_per_hour = {} must be a positive number, e.g. {}",
                            v.get_ref(),
                            d.max_connects_per_hour
                        ),
                    ));
                }
            },
        };
        let mut overrides = BTreeMap::new();
        for (name, value) in raw.overrides {
            overrides.insert(name, self.database_override(value)?);
        }
        Ok(DatabasesConfig {
            selection: Selection::Matching { include, exclude },
            refresh_interval: self.duration(
                &raw.refresh_interval,
                "refresh_interval",
                d.refresh_interval,
                Duration::from_millis(100),
            )?,
            idle_revisit: self.duration(
                &raw.idle_revisit,
                "idle_revisit",
                d.idle_revisit,
                second,
            )?,
            round_budget: self.duration(
                &raw.round_budget,
                "round_budget",
                d.round_budget,
                Duration::from_millis(100),
            )?,
            max_connects_per_hour,
            overrides,
        })
    }

    /// A non-empty glob.
    pub(super) fn pattern(&self, p: &Spanned<String>) -> Result<String, ConfigError> {
        if p.get_ref().is_empty() {
            Err(self.err(
                p,
                "an empty pattern matches nothing; write e.g. \"public.*\" or \"app_*\"",
            ))
        } else {
            Ok(p.get_ref().clone())
        }
    }

    fn database_override(&self, raw: RawDatabaseOverride) -> Result<DatabaseOverride, ConfigError> {
        let t = raw.tables;
        let patterns = |list: Option<Vec<Spanned<String>>>| -> Result<_, ConfigError> {
            list.map(|l| l.iter().map(|p| self.pattern(p)).collect())
                .transpose()
        };
        let tables = TablesOverride {
            include: patterns(t.include)?,
            exclude: patterns(t.exclude)?,
            max_tables: t
                .max_tables
                .as_ref()
                .map(|v| self.positive(&Some(v.clone()), "max_tables", 300))
                .transpose()?,
            exact_count_tables: t
                .exact_count_tables
                .map(|l| {
                    l.iter()
                        .map(|n| self.name(n, "exact_count_tables"))
                        .collect()
                })
                .transpose()?,
        };
        let imports = ImportsOverride {
            audit_tables: raw
                .imports
                .audit_tables
                .map(|l| {
                    l.into_iter()
                        .map(|t| self.audit_table(t.into_inner()))
                        .collect()
                })
                .transpose()?,
        };
        Ok(DatabaseOverride { tables, imports })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LibpqEnv};

    fn parse(dsn: &str, extra: &str) -> Result<Config, String> {
        Config::parse(
            std::path::Path::new("pgvigil.toml"),
            &format!("[[targets]]\nname = \"m\"\ndsn = \"{dsn}\"\n{extra}"),
            &LibpqEnv::default(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_dsn_naming_a_database_watches_only_it_unless_there_is_a_databases_table() {
        let cfg = parse("postgres://u@h/app", "").unwrap();
        let d = &cfg.targets[0].databases;
        assert_eq!(d.selection, Selection::Only("app".into()));
        assert!(d.selects("app") && !d.selects("billing"));
        assert_eq!(cfg.targets[0].max_connections, 2);

        let cfg = parse("host=h user=u", "").unwrap();
        assert!(cfg.targets[0].databases.selects("anything"));

        let cfg = parse("postgres://u@h/app", "[targets.databases]\n").unwrap();
        assert!(cfg.targets[0].databases.selects("billing"));
    }

    #[test]
    fn include_exclude_and_the_schedule_keys() {
        let cfg = parse(
            "postgres://u@h/app",
            "max_connections = 4\n[targets.databases]\ninclude = [\"app_*\", \"crm\"]\nexclude = [\"app_test*\"]\nrefresh_interval = \"10s\"\nidle_revisit = \"5m\"\nround_budget = \"5s\"\nmax_connects_per_hour = 120\n",
        )
        .unwrap();
        let t = &cfg.targets[0];
        assert_eq!(t.max_connections, 4);
        let d = &t.databases;
        assert!(d.selects("app_eu") && d.selects("crm"));
        assert!(!d.selects("app_test1") && !d.selects("postgres"));
        assert_eq!(d.refresh_interval, Duration::from_secs(10));
        assert_eq!(d.idle_revisit, Duration::from_secs(300));
        assert_eq!(d.round_budget, Duration::from_secs(5));
        assert_eq!(d.max_connects_per_hour, 120);
    }

    #[test]
    fn per_database_overrides_apply_to_that_database_only() {
        let cfg = parse(
            "host=h",
            "[targets.tables]\nexact_count_tables = [\"public.a\"]\n\
             [targets.databases]\n\
             [targets.databases.\"billing-eu\".tables]\nexact_count_tables = [\"ledger\"]\nmax_tables = 5\ninclude = [\"public.*\"]\n\
             [[targets.databases.\"billing-eu\".imports.audit_tables]]\ntable = \"etl.batches\"\n",
        )
        .unwrap();
        let t = &cfg.targets[0];
        let billing = t.for_database("billing-eu");
        assert_eq!(billing.tables.exact_count_tables[0].to_string(), "ledger");
        assert_eq!(billing.tables.max_tables, 5);
        assert_eq!(billing.tables.include, vec!["public.*".to_owned()]);
        assert_eq!(
            billing.imports.audit_tables[0].table.to_string(),
            "etl.batches"
        );
        let other = t.for_database("crm");
        assert_eq!(other.tables.exact_count_tables[0].to_string(), "public.a");
        assert_eq!(other.tables.max_tables, 300);
        assert!(other.imports.audit_tables.is_empty());
    }

    #[test]
    fn mistakes_are_located_and_explained() {
        let err = parse("host=h", "[targets.databases]\nincldue = [\"a\"]\n").unwrap_err();
        assert!(err.starts_with("pgvigil.toml:5:"), "{err}");
        assert!(err.contains("`include`"), "{err}");
        let err = parse("host=h", "[targets.databases.app.tables]\nmax_tabels = 3\n").unwrap_err();
        assert!(err.contains("max_tables"), "{err}");
        let err = parse("host=h", "max_connections = 1\n").unwrap_err();
        assert!(err.contains("max_connections = 1"), "{err}");
        let err = parse("host=h", "[targets.databases]\nexclude = [\"\"]\n").unwrap_err();
        assert!(err.contains("empty pattern"), "{err}");
        let err = parse("host=h", "[targets.databases]\nmax_connects_per_hour = 0\n").unwrap_err();
        assert!(err.contains("positive"), "{err}");
    }

    #[test]
    fn globs() {
        assert!(glob("app_*", "app_eu"));
        assert!(glob("db?", "db1"));
        assert!(!glob("app_*", "crm"));
        assert!(glob("*", ""));
    }
}
