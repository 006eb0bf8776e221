//! `[[targets]]`: the PostgreSQL servers pgvigil watches, each over its own connection, and
//! their collector tables (`[targets.activity]`, `[targets.statements]`, `[targets.tables]`,
//! `[targets.imports]`, `[targets.replication]`, `[targets.replication_slots]`,
//! `[targets.archiver]`, `[targets.wal_directory]`).
//! `[targets.imports]`, `[targets.checkpointer]`, `[targets.io]`, `[targets.locks]`, ...).

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use toml::Spanned;

use super::collectors::CollectorConfig;
use super::databases::DatabasesConfig;
use super::guard::{ImportsConfig, TablesConfig};
use super::migrations::{DEFAULT_MIGRATIONS_INTERVAL, MigrationsConfig};
use super::raw::{self, RawTarget};
use super::source::{Location, RawSource, SourceSettings};
use super::{ConfigError, ConnectionSpec, Validator};

const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(1);
/// The main session plus one that visits the databases in turn.
pub(super) const DEFAULT_MAX_CONNECTIONS: usize = 2;
/// The most sessions one target may be allowed.
const MAX_MAX_CONNECTIONS: i64 = 64;
/// Table statistics of each database (and the database list): once a minute, or every fourth
/// poll if the target polls faster than every 15 s.
const DEFAULT_TABLES_INTERVAL: Duration = Duration::from_secs(60);
/// Import reconciliation: every 5 s, independent of the main poll (or every poll, if the
/// target polls faster).
const DEFAULT_IMPORTS_INTERVAL: Duration = Duration::from_secs(5);

/// Locks and blocking chains: every 5 s, independent of the main poll (or every poll, if the
/// target polls faster), so a migration queueing the application behind it is seen within
/// seconds; with nothing waiting a poll is one query over pg_locks.
const DEFAULT_LOCKS_INTERVAL: Duration = Duration::from_secs(5);

/// Database sizes: every 5 minutes (`pg_database_size` stats every file of a database).
const DEFAULT_DATABASE_SIZES_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The size of pg_wal: `pg_ls_waldir()` stats every WAL segment, so every 5 minutes.
const DEFAULT_WAL_DIRECTORY_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// The default interval of the table statistics and of the database list for a target that
/// polls every `poll_interval`.
pub(super) fn default_tables_interval(poll_interval: Duration) -> Duration {
    DEFAULT_TABLES_INTERVAL.min(poll_interval * 4)
}

/// The default interval of import checks for a target that polls every `poll_interval`.
fn default_imports_interval(poll_interval: Duration) -> Duration {
    DEFAULT_IMPORTS_INTERVAL.min(poll_interval)
}

/// The default interval of the locks collector for a target that polls every `poll_interval`.
fn default_locks_interval(poll_interval: Duration) -> Duration {
    DEFAULT_LOCKS_INTERVAL.min(poll_interval)
}

/// One `[[targets]]` entry: a PostgreSQL cluster pgvigil watches — cluster-wide views over its
/// main session, the databases [`TargetConfig::databases`] selects over the others, never
/// more than `max_connections` sessions in all. It dereferences to its [`SourceSettings`]
/// (`target.name`, `target.poll_interval`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// Name, connection, timeouts and alert overrides.
    pub source: SourceSettings,
    /// `lock_timeout` of the monitoring session: a poll never queues behind a lock for long.
    pub lock_timeout: Duration,
    /// Sessions pgvigil may hold on the cluster: the main one plus `max_connections - 1`
    /// database sessions (at least 2).
    pub max_connections: usize,
    /// `[targets.databases]`: which databases are watched, and the visiting schedule.
    pub databases: DatabasesConfig,
    /// `[targets.activity]`
    pub activity: CollectorConfig<ActivityConfig>,
    /// `[targets.statements]`
    pub statements: CollectorConfig<StatementsConfig>,
    /// `[targets.tables]`
    pub tables: CollectorConfig<TablesConfig>,
    /// `[targets.imports]`
    pub imports: CollectorConfig<ImportsConfig>,
    /// `[targets.server]`: role, restarts, settings.
    pub server: CollectorConfig<()>,
    /// `[targets.database_stats]`: pg_stat_database and its conflicts.
    pub database_stats: CollectorConfig<()>,
    /// `[targets.database_sizes]`: pg_database_size, on a slow schedule of its own.
    pub database_sizes: CollectorConfig<()>,
    /// `[targets.wraparound]`: XID and multixact ages, and the xmin horizon's holders.
    pub wraparound: CollectorConfig<()>,
    /// `[targets.replication]`: pg_stat_replication, and the standby side.
    pub replication: CollectorConfig<()>,
    /// `[targets.replication_slots]`: pg_replication_slots.
    pub replication_slots: CollectorConfig<()>,
    /// `[targets.archiver]`: pg_stat_archiver and pg_stat_wal.
    pub archiver: CollectorConfig<()>,
    /// `[targets.wal_directory]`: the size of pg_wal, on a slow schedule of its own.
    pub wal_directory: CollectorConfig<()>,
    /// `[targets.checkpointer]`: pg_stat_checkpointer / pg_stat_bgwriter (common keys only).
    pub checkpointer: CollectorConfig<()>,
    /// `[targets.io]`: pg_stat_io, PostgreSQL 16+ (common keys only).
    pub io: CollectorConfig<()>,
    /// `[targets.locks]`: pg_locks and the blocking chains of waiting backends (common keys
    /// only; every 5 s by default, or every poll if the target polls faster).
    pub locks: CollectorConfig<()>,
    /// `[targets.migrations]`: migration tools' records and leftovers of unsafe migrations.
    pub migrations: CollectorConfig<MigrationsConfig>,
}

impl Deref for TargetConfig {
    type Target = SourceSettings;

    fn deref(&self) -> &SourceSettings {
        &self.source
    }
}

impl DerefMut for TargetConfig {
    fn deref_mut(&mut self) -> &mut SourceSettings {
        &mut self.source
    }
}

impl TargetConfig {
    /// A target with every setting at its default.
    pub fn new(name: &str, connection: ConnectionSpec) -> Self {
        TargetConfig {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            databases: if connection.names_database() {
                DatabasesConfig::only(connection.dbname())
            } else {
                DatabasesConfig::every()
            },
            source: SourceSettings::new(name, connection),
            activity: CollectorConfig::on(ActivityConfig::default()),
            statements: CollectorConfig::on(StatementsConfig::default()),
            tables: CollectorConfig::every(DEFAULT_TABLES_INTERVAL, TablesConfig::default()),
            imports: CollectorConfig::every(DEFAULT_IMPORTS_INTERVAL, ImportsConfig::default()),
            server: CollectorConfig::on(()),
            database_stats: CollectorConfig::on(()),
            database_sizes: CollectorConfig::every(DEFAULT_DATABASE_SIZES_INTERVAL, ()),
            wraparound: CollectorConfig::on(()),
            replication: CollectorConfig::on(()),
            replication_slots: CollectorConfig::on(()),
            archiver: CollectorConfig::on(()),
            wal_directory: CollectorConfig::every(DEFAULT_WAL_DIRECTORY_INTERVAL, ()),
            checkpointer: CollectorConfig::on(()),
            io: CollectorConfig::on(()),
            locks: CollectorConfig::every(DEFAULT_LOCKS_INTERVAL, ()),
            migrations: CollectorConfig::every(
                DEFAULT_MIGRATIONS_INTERVAL,
                MigrationsConfig::default(),
            ),
        }
    }

    /// The settings the database-scope collectors of database `datname` run with: the
    /// target's, with that database's `[targets.databases."<datname>"]` overrides applied.
    pub fn for_database(&self, datname: &str) -> TargetConfig {
        let mut config = self.clone();
        config.source.connection = self.connection.with_dbname(datname);
        let Some(o) = self.databases.overrides.get(datname) else {
            return config;
        };
        let tables = &mut config.tables.settings;
        if let Some(include) = &o.tables.include {
            tables.include = include.clone();
        }
        if let Some(exclude) = &o.tables.exclude {
            tables.exclude = exclude.clone();
        }
        if let Some(max) = o.tables.max_tables {
            tables.max_tables = max;
        }
        if let Some(exact) = &o.tables.exact_count_tables {
            tables.exact_count_tables = exact.clone();
        }
        if let Some(audit) = &o.imports.audit_tables {
            config.imports.settings.audit_tables = audit.clone();
        }
        config
    }

    /// Whether a running target must reconnect to apply `other` (see
    /// [`SourceSettings::same_connection`]; `lock_timeout` is a session setting too).
    pub fn same_connection(&self, other: &TargetConfig) -> bool {
        self.source.same_connection(&other.source)
            && self.lock_timeout == other.lock_timeout
            && self.max_connections == other.max_connections
    }
}

/// `[targets.activity]`: the pg_stat_activity collector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityConfig {
    /// application_name values exported as themselves; all others become `other`, which keeps
    /// the label bounded.
    pub application_names: Vec<String>,
}

/// `[targets.statements]`: the pg_stat_statements collector.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementsConfig {
    /// Statements exported individually; the rest are summed into `queryid="other"`.
    pub top_k: usize,
    /// Window of the execution-time ranking that picks the top-K.
    pub rank_window: Duration,
    /// Query texts are cut to this many characters.
    pub query_text_length: usize,
    /// Window of each statement's latency baseline (the SlowQuery regression check).
    pub baseline_window: Duration,
    /// Intervals with calls a statement needs before its baseline is used.
    pub baseline_min_samples: u32,
}

impl StatementsConfig {
    /// The most `baseline_min_samples` may be: the intervals a baseline keeps while it warms
    /// up (the statements collector checks it agrees).
    pub const MAX_BASELINE_MIN_SAMPLES: u32 = 8;
}

impl Default for StatementsConfig {
    fn default() -> Self {
        StatementsConfig {
            top_k: 100,
            rank_window: Duration::from_secs(15 * 60),
            query_text_length: 200,
            baseline_window: Duration::from_secs(60 * 60),
            baseline_min_samples: 5,
        }
    }
}

impl Validator<'_> {
    /// Validate every `[[targets]]` entry; `names` maps the names already taken (here or in
    /// other files) to where each was defined, and gets these added.
    pub(super) fn targets(
        &self,
        raw: Vec<Spanned<RawTarget>>,
        names: &mut HashMap<String, (Location, &'static str)>,
    ) -> Result<Vec<TargetConfig>, ConfigError> {
        let mut targets = Vec::with_capacity(raw.len());
        for target in raw {
            let Some(name) = target.get_ref().name.clone() else {
                return Err(ConfigError::at(
                    self.path,
                    self.text,
                    Some(target.span()),
                    "missing required key `name`; add `name = ...` to this table",
                ));
            };
            if let Some((first, _)) = names.get(name.get_ref()) {
                return Err(self.err(
                    &name,
                    format!(
                        "duplicate target name \"{}\" (first used {}); every target needs a unique name, it becomes the `target` label",
                        name.get_ref(),
                        self.where_is(first)
                    ),
                ));
            }
            names.insert(
                name.get_ref().clone(),
                (self.location(name.span().start), "target"),
            );
            targets.push(self.target(target)?);
        }
        Ok(targets)
    }

    /// One `[[targets]]` entry (its name is checked to be there) or `[discovery.defaults]`.
    pub(super) fn target(&self, spanned: Spanned<RawTarget>) -> Result<TargetConfig, ConfigError> {
        let span = spanned.span();
        let raw = spanned.into_inner();
        let name = raw
            .name
            .clone()
            .unwrap_or_else(|| Spanned::new(span.clone(), String::new()));
        let source = self.source(
            RawSource {
                name: &name,
                dsn: &raw.dsn,
                dsn_env: &raw.dsn_env,
                password_file: &raw.password_file,
                tls_ca_file: &raw.tls_ca_file,
                tls_verify: &raw.tls_verify,
                tls_cert_file: &raw.tls_cert_file,
                tls_key_file: &raw.tls_key_file,
                poll_interval: &raw.poll_interval,
                connect_timeout: &raw.connect_timeout,
                statement_timeout: &raw.statement_timeout,
                reconnect_max_backoff: &raw.reconnect_max_backoff,
            },
            span,
            "target",
            ConnectionSpec::parse,
        )?;
        let mut target = TargetConfig::new(&source.name, source.connection.clone());
        target.source = source;
        target.lock_timeout = self.duration(
            &raw.lock_timeout,
            "lock_timeout",
            DEFAULT_LOCK_TIMEOUT,
            Duration::from_millis(10),
        )?;
        target.max_connections = match &raw.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(v) if (2..=MAX_MAX_CONNECTIONS).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                return Err(self.err(
                    v,
                    format!(
                        "max_connections = {} is out of range; use 2 to {MAX_MAX_CONNECTIONS}: the main session plus at least one for the databases (default {DEFAULT_MAX_CONNECTIONS})",
                        v.get_ref()
                    ),
                ));
            }
        };
        let dsn_database = target
            .connection
            .names_database()
            .then(|| target.connection.dbname().to_owned());
        target.databases = self.databases(
            raw.databases,
            dsn_database.as_deref(),
            default_tables_interval(target.poll_interval),
        )?;
        let activity = ActivityConfig {
            application_names: raw.activity.application_names,
        };
        target.activity = self.collector(
            target.activity,
            raw.activity.enabled,
            &raw.activity.interval,
            activity,
        )?;
        // Paced by the target's poll interval unless set.
        let poll = target.poll_interval;
        target.tables.interval = Some(default_tables_interval(poll));
        target.imports.interval = Some(default_imports_interval(poll));
        target.locks.interval = Some(default_locks_interval(poll));
        let (enabled, interval) = (raw.tables.enabled, raw.tables.interval.clone());
        let tables = self.tables(raw.tables)?;
        target.tables = self.collector(target.tables, enabled, &interval, tables)?;
        let (enabled, interval) = (raw.imports.enabled, raw.imports.interval.clone());
        let imports = self.imports(raw.imports)?;
        target.imports = self.collector(target.imports, enabled, &interval, imports)?;
        target.source.alerts = self.rule_tables(&raw.alerts);
        let (enabled, interval) = (raw.statements.enabled, raw.statements.interval.clone());
        let statements = self.statements(raw.statements)?;
        target.statements = self.collector(target.statements, enabled, &interval, statements)?;
        // The server-health layer.
        target.server = self.toggle(target.server, &raw.server)?;
        target.database_stats = self.toggle(target.database_stats, &raw.database_stats)?;
        target.database_sizes = self.toggle(target.database_sizes, &raw.database_sizes)?;
        target.wraparound = self.toggle(target.wraparound, &raw.wraparound)?;
        target.replication = self.toggle(target.replication, &raw.replication)?;
        target.replication_slots = self.toggle(target.replication_slots, &raw.replication_slots)?;
        target.archiver = self.toggle(target.archiver, &raw.archiver)?;
        target.wal_directory = self.toggle(target.wal_directory, &raw.wal_directory)?;
        target.checkpointer = self.toggle(target.checkpointer, &raw.checkpointer)?;
        target.io = self.toggle(target.io, &raw.io)?;
        target.locks = self.toggle(target.locks, &raw.locks)?;
        let migrations = self.migrations(&raw.migrations)?;
        target.migrations = self.collector(
            target.migrations,
            raw.migrations.enabled,
            &raw.migrations.interval,
            migrations,
        )?;
        Ok(target)
    }

    fn statements(&self, raw: raw::RawStatements) -> Result<StatementsConfig, ConfigError> {
        let defaults = StatementsConfig::default();
        let int = |value: &Option<Spanned<i64>>,
                   key: &str,
                   default: usize,
                   range: std::ops::RangeInclusive<i64>,
                   why: &str|
         -> Result<usize, ConfigError> {
            let Some(value) = value else {
                return Ok(default);
            };
            let v = *value.get_ref();
            if !range.contains(&v) {
                return Err(self.err(
                    value,
                    format!(
                        "{key} = {v} is out of range; use {} to {} ({why})",
                        range.start(),
                        range.end()
                    ),
                ));
            }
            Ok(v as usize)
        };
        let second = Duration::from_secs(1);
        Ok(StatementsConfig {
            top_k: int(
                &raw.top_k,
                "top_k",
                defaults.top_k,
                1..=10_000,
                "each exported statement is a series per metric",
            )?,
            rank_window: self.duration(
                &raw.rank_window,
                "rank_window",
                defaults.rank_window,
                second,
            )?,
            query_text_length: int(
                &raw.query_text_length,
                "query_text_length",
                defaults.query_text_length,
                16..=10_000,
                "characters of query text kept per statement",
            )?,
            baseline_window: self.duration(
                &raw.baseline_window,
                "baseline_window",
                defaults.baseline_window,
                second,
            )?,
            baseline_min_samples: int(
                &raw.baseline_min_samples,
                "baseline_min_samples",
                defaults.baseline_min_samples as usize,
                1..=i64::from(StatementsConfig::MAX_BASELINE_MIN_SAMPLES),
                "intervals with calls before a statement's baseline is trusted",
            )? as u32,
        })
    }
}
