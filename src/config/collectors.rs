//! The per-collector tables of a source: `[targets.<collector>]`, `[pgbouncers.<collector>]`.
//!
//! Every collector has a table named after it, in which two keys are the same for all:
//! `enabled` (run it at all) and `interval` (time between two runs; the source's
//! `poll_interval` by default). Everything else in the table is the collector's own
//! parameters. [`CollectorConfig`] holds both; it dereferences to the parameters, so
//! `target.tables.max_tables` reads as before.
//!
//! The collector registry (`crate::collect::registry`) reaches each table through
//! [`Section`], which is all it needs: whether the collector is on, its interval, and whether a
//! new config changed its parameters (so a reload restarts only that collector).

use std::any::Any;
use std::fmt::Debug;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use toml::Spanned;

use super::raw::HumanDuration;
use super::source::MIN_POLL_INTERVAL;
use super::{ConfigError, Validator};

/// One collector's table: the uniform keys plus the collector's own `settings`.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorConfig<T> {
    /// `enabled`: whether the collector runs.
    pub enabled: bool,
    /// `interval`: time between two runs; `None` runs it every `poll_interval`.
    pub interval: Option<Duration>,
    /// The collector's own parameters.
    pub settings: T,
}

impl<T> CollectorConfig<T> {
    /// A collector that is on by default, at the source's poll interval.
    pub fn on(settings: T) -> Self {
        CollectorConfig {
            enabled: true,
            interval: None,
            settings,
        }
    }

    /// A collector that is off unless the config enables it.
    pub fn off(settings: T) -> Self {
        CollectorConfig {
            enabled: false,
            interval: None,
            settings,
        }
    }

    /// A collector that is on by default on a schedule of its own (a slow one, typically).
    pub fn every(interval: Duration, settings: T) -> Self {
        CollectorConfig {
            enabled: true,
            interval: Some(interval),
            settings,
        }
    }
}

impl<T> Deref for CollectorConfig<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.settings
    }
}

impl<T> DerefMut for CollectorConfig<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.settings
    }
}

/// A collector's table as the registry sees it, whatever its parameters' type.
pub trait Section: Debug + Send + Sync {
    /// Whether the collector runs.
    fn enabled(&self) -> bool;
    /// Its own interval, if it has one.
    fn interval(&self) -> Option<Duration>;
    /// Whether `other` (the same collector's table in another config) is the same.
    fn same(&self, other: &dyn Section) -> bool;
    /// For [`Section::same`].
    fn as_any(&self) -> &dyn Any;
}

impl<T: PartialEq + Debug + Send + Sync + 'static> Section for CollectorConfig<T> {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn same(&self, other: &dyn Section) -> bool {
        other.as_any().downcast_ref::<Self>() == Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `[pgbouncers.<collector>]` and collectors without parameters: only the uniform keys.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawToggle {
    pub(crate) enabled: Option<bool>,
    pub(crate) interval: Option<Spanned<HumanDuration>>,
}

impl Validator<'_> {
    /// Apply a table's uniform keys to the collector's defaults, with its validated settings.
    pub(super) fn collector<T>(
        &self,
        default: CollectorConfig<T>,
        enabled: Option<bool>,
        interval: &Option<Spanned<HumanDuration>>,
        settings: T,
    ) -> Result<CollectorConfig<T>, ConfigError> {
        let interval = match interval {
            None => default.interval,
            Some(_) => {
                Some(self.duration(interval, "interval", Duration::ZERO, MIN_POLL_INTERVAL)?)
            }
        };
        Ok(CollectorConfig {
            enabled: enabled.unwrap_or(default.enabled),
            interval,
            settings,
        })
    }

    /// A collector with only the uniform keys.
    pub(super) fn toggle(
        &self,
        default: CollectorConfig<()>,
        raw: &RawToggle,
    ) -> Result<CollectorConfig<()>, ConfigError> {
        self.collector(default, raw.enabled, &raw.interval, ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_compare_by_value_and_type() {
        let a = CollectorConfig::on(3_u32);
        let mut b = a.clone();
        assert!(a.same(&b));
        b.interval = Some(Duration::from_secs(60));
        assert!(!a.same(&b));
        assert!(!a.same(&CollectorConfig::on(3_u64)));
        assert_eq!(*a, 3);
    }
}
