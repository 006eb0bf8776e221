//! `[targets.advice]`: the missing-index advice and the rulebook lints over the top statements
//! of each watched database (collector `advice`).

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::raw::HumanDuration;
use super::{ConfigError, Validator};

/// The advice's own interval: catalog reads and a parse of the top statements, every 5 minutes.
pub(super) const DEFAULT_ADVICE_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// `[targets.advice]`'s own keys.
#[derive(Debug, Clone, PartialEq)]
pub struct AdviceConfig {
    /// The statements of the database with the most total time that are analysed.
    pub top_statements: usize,
    /// Characters of each statement's text read (cut in SQL with `left(query, n)`); a text cut
    /// short does not parse and is counted as such.
    pub query_text_length: usize,
    /// Tables with fewer (estimated) rows get no suggestion: a sequential scan of them is cheap.
    pub min_table_rows: i64,
    /// Sequential scans of a table, since the previous run (or since the statistics were reset
    /// on the first one), below which it gets no suggestion.
    pub min_seq_scans: i64,
    /// A select without `LIMIT` is linted `unbounded_select` when it reads a table of at least
    /// this many rows and returns at least `unbounded_min_rows` rows a call on average.
    pub large_table_rows: i64,
    /// See `large_table_rows`.
    pub unbounded_min_rows: f64,
    /// The most suggestions exported per database (the strongest first; the rest counted).
    pub max_suggestions: usize,
    /// The most lint series exported per database (the rest counted).
    pub max_lints: usize,
}

impl Default for AdviceConfig {
    fn default() -> Self {
        AdviceConfig {
            top_statements: 50,
            query_text_length: 4000,
            min_table_rows: 10_000,
            min_seq_scans: 100,
            large_table_rows: 100_000,
            unbounded_min_rows: 1000.0,
            max_suggestions: 20,
            max_lints: 50,
        }
    }
}

/// The raw table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdvice {
    pub(crate) enabled: Option<bool>,
    pub(crate) interval: Option<Spanned<HumanDuration>>,
    pub(crate) top_statements: Option<Spanned<i64>>,
    pub(crate) query_text_length: Option<Spanned<i64>>,
    pub(crate) min_table_rows: Option<Spanned<i64>>,
    pub(crate) min_seq_scans: Option<Spanned<i64>>,
    pub(crate) large_table_rows: Option<Spanned<i64>>,
    pub(crate) unbounded_min_rows: Option<Spanned<i64>>,
    pub(crate) max_suggestions: Option<Spanned<i64>>,
    pub(crate) max_lints: Option<Spanned<i64>>,
}

impl Validator<'_> {
    fn bounded(
        &self,
        value: &Option<Spanned<i64>>,
        key: &str,
        default: i64,
        range: RangeInclusive<i64>,
        why: &str,
    ) -> Result<i64, ConfigError> {
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
        Ok(v)
    }

    /// Validate `[targets.advice]`'s own keys.
    pub(super) fn advice(&self, raw: &RawAdvice) -> Result<AdviceConfig, ConfigError> {
        let d = AdviceConfig::default();
        let rows = 0..=i64::MAX;
        Ok(AdviceConfig {
            top_statements: self.bounded(
                &raw.top_statements,
                "top_statements",
                d.top_statements as i64,
                1..=1000,
                "each statement's text is read and parsed every run",
            )? as usize,
            query_text_length: self.bounded(
                &raw.query_text_length,
                "query_text_length",
                d.query_text_length as i64,
                64..=100_000,
                "characters of each statement's text read",
            )? as usize,
            min_table_rows: self.bounded(
                &raw.min_table_rows,
                "min_table_rows",
                d.min_table_rows,
                rows.clone(),
                "estimated rows",
            )?,
            min_seq_scans: self.bounded(
                &raw.min_seq_scans,
                "min_seq_scans",
                d.min_seq_scans,
                1..=i64::MAX,
                "sequential scans between two runs",
            )?,
            large_table_rows: self.bounded(
                &raw.large_table_rows,
                "large_table_rows",
                d.large_table_rows,
                rows.clone(),
                "estimated rows",
            )?,
            unbounded_min_rows: self.bounded(
                &raw.unbounded_min_rows,
                "unbounded_min_rows",
                d.unbounded_min_rows as i64,
                rows,
                "rows a call on average",
            )? as f64,
            max_suggestions: self.bounded(
                &raw.max_suggestions,
                "max_suggestions",
                d.max_suggestions as i64,
                0..=1000,
                "each suggestion is a series",
            )? as usize,
            max_lints: self.bounded(
                &raw.max_lints,
                "max_lints",
                d.max_lints as i64,
                0..=1000,
                "each lint is a series",
            )? as usize,
        })
    }
}
