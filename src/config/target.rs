//! `[[targets]]`: the PostgreSQL servers pgvigil watches, each over its own connection, and
//! their collector tables (`[targets.activity]`, `[targets.statements]`, `[targets.tables]`,
//! `[targets.imports]`).

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use toml::Spanned;

use super::collectors::CollectorConfig;
use super::guard::{ImportsConfig, TablesConfig};
use super::raw::{self, RawTarget};
use super::source::{Location, RawSource, SourceSettings};
use super::{ConfigError, ConnectionSpec, Validator};

const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// One `[[targets]]` entry: a database pgvigil watches over its own connection. It
/// dereferences to its [`SourceSettings`] (`target.name`, `target.poll_interval`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// Name, connection, timeouts and alert overrides.
    pub source: SourceSettings,
    /// `lock_timeout` of the monitoring session: a poll never queues behind a lock for long.
    pub lock_timeout: Duration,
    /// `[targets.activity]`
    pub activity: CollectorConfig<ActivityConfig>,
    /// `[targets.statements]`
    pub statements: CollectorConfig<StatementsConfig>,
    /// `[targets.tables]`
    pub tables: CollectorConfig<TablesConfig>,
    /// `[targets.imports]`
    pub imports: CollectorConfig<ImportsConfig>,
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
            source: SourceSettings::new(name, connection),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            activity: CollectorConfig::on(ActivityConfig::default()),
            statements: CollectorConfig::on(StatementsConfig::default()),
            tables: CollectorConfig::on(TablesConfig::default()),
            imports: CollectorConfig::on(ImportsConfig::default()),
        }
    }

    /// Whether a running target must reconnect to apply `other` (see
    /// [`SourceSettings::same_connection`]; `lock_timeout` is a session setting too).
    pub fn same_connection(&self, other: &TargetConfig) -> bool {
        self.source.same_connection(&other.source) && self.lock_timeout == other.lock_timeout
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
        let activity = ActivityConfig {
            application_names: raw.activity.application_names,
        };
        target.activity = self.collector(
            target.activity,
            raw.activity.enabled,
            &raw.activity.interval,
            activity,
        )?;
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
