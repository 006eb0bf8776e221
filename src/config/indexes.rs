//! `[targets.indexes]`: the index health and sequence exhaustion checks of the schema guard
//! (their `enabled` and `interval` are the uniform keys of [`super::CollectorConfig`]).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::raw::HumanDuration;
use super::{ConfigError, Validator};

/// `[targets.indexes]`: what counts as unused, which tables are too small to matter, when a
/// sequence is running out, and the cap on series.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexesConfig {
    /// An index with no scan is reported as unused only once the statistics have been
    /// gathered for this long (since `pg_stat_database.stats_reset`, else the server's start).
    pub unused_min_window: Duration,
    /// PostgreSQL 16+: an index whose last scan (`last_idx_scan`) is older than this is
    /// reported as unused too, whatever its scan count.
    pub unused_stale_after: Duration,
    /// Foreign keys whose referencing table is smaller than this (relpages x block_size) are
    /// not reported: a scan of a tiny table costs nothing.
    pub fk_min_table_bytes: u64,
    /// A sequence that has used this share of its range (up to its column type's limit) is a
    /// warning finding and fires `SequenceExhaustion`...
    pub sequence_warning_ratio: f64,
    /// ... and from this share a critical one (the alert escalates to critical).
    pub sequence_critical_ratio: f64,
    /// Series per check and database at most (largest first); `pgvigil_index_findings_dropped`
    /// counts the rest, which the status page, the API and `pgvigil advise` still list.
    pub max_series: usize,
}

impl Default for IndexesConfig {
    fn default() -> Self {
        IndexesConfig {
            unused_min_window: Duration::from_secs(7 * 24 * 3600),
            unused_stale_after: Duration::from_secs(30 * 24 * 3600),
            fk_min_table_bytes: 1024 * 1024,
            sequence_warning_ratio: 0.75,
            sequence_critical_ratio: 0.9,
            max_series: 100,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIndexes {
    pub(crate) enabled: Option<bool>,
    pub(crate) interval: Option<Spanned<HumanDuration>>,
    pub(crate) unused_min_window: Option<Spanned<HumanDuration>>,
    pub(crate) unused_stale_after: Option<Spanned<HumanDuration>>,
    pub(crate) fk_min_table_bytes: Option<Spanned<i64>>,
    pub(crate) sequence_warning_ratio: Option<Spanned<f64>>,
    pub(crate) sequence_critical_ratio: Option<Spanned<f64>>,
    pub(crate) max_series: Option<Spanned<i64>>,
}

impl Validator<'_> {
    /// `[targets.indexes]`'s own keys.
    pub(super) fn indexes(&self, raw: &RawIndexes) -> Result<IndexesConfig, ConfigError> {
        let d = IndexesConfig::default();
        let ratio = |value: &Option<Spanned<f64>>, key: &str, default: f64| {
            match value {
            None => Ok(default),
            Some(v) if *v.get_ref() > 0.0 && *v.get_ref() < 1.0 => Ok(*v.get_ref()),
            Some(v) => Err(self.err(
                v,
                format!(
                    "{key} = {} is out of range; write a share of the sequence's range above 0 and below 1, e.g. {key} = {default}",
                    v.get_ref()
                ),
            )),
        }
        };
        let warning = ratio(
            &raw.sequence_warning_ratio,
            "sequence_warning_ratio",
            d.sequence_warning_ratio,
        )?;
        let critical = ratio(
            &raw.sequence_critical_ratio,
            "sequence_critical_ratio",
            d.sequence_critical_ratio,
        )?;
        if critical < warning {
            let at = raw
                .sequence_critical_ratio
                .as_ref()
                .or(raw.sequence_warning_ratio.as_ref());
            let message = format!(
                "sequence_critical_ratio ({critical}) is below sequence_warning_ratio ({warning}); the critical threshold must be the higher one"
            );
            return Err(match at {
                Some(v) => self.err(v, message),
                None => ConfigError::at(self.path, self.text, None, message),
            });
        }
        let fk_min_table_bytes = match &raw.fk_min_table_bytes {
            None => d.fk_min_table_bytes,
            Some(v) if *v.get_ref() >= 0 => *v.get_ref() as u64,
            Some(v) => {
                return Err(self.err(
                    v,
                    format!(
                        "fk_min_table_bytes = {} is negative; write a size in bytes (0 reports every table)",
                        v.get_ref()
                    ),
                ));
            }
        };
        let max_series = match &raw.max_series {
            None => d.max_series,
            Some(v) if (1..=10_000).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                return Err(self.err(
                    v,
                    format!(
                        "max_series = {} is out of range; use 1 to 10000 (series per check and database; the rest are counted in pgvigil_index_findings_dropped)",
                        v.get_ref()
                    ),
                ));
            }
        };
        Ok(IndexesConfig {
            unused_min_window: self.duration(
                &raw.unused_min_window,
                "unused_min_window",
                d.unused_min_window,
                Duration::ZERO,
            )?,
            unused_stale_after: self.duration(
                &raw.unused_stale_after,
                "unused_stale_after",
                d.unused_stale_after,
                Duration::from_secs(3600),
            )?,
            fk_min_table_bytes,
            sequence_warning_ratio: warning,
            sequence_critical_ratio: critical,
            max_series,
        })
    }
}
