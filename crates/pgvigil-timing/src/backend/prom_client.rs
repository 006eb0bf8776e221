//! Backend for the Prometheus project's client, `prometheus-client`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{Observation, help};
use crate::recorder::{DB_SYSTEM_NAME, DURATION_BUCKETS, Pools};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    db_system_name: &'static str,
    db_namespace: Arc<str>,
    db_operation_name: &'static str,
    db_query_summary: Arc<str>,
    error_type: Option<Arc<str>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    db_client_connection_pool_name: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    db_client_connection_pool_name: Arc<str>,
    db_client_connection_state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SummaryLabels {
    db_query_summary: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: &'static str,
    db_query_summary: Arc<str>,
}

/// Exemplar label set: the trace that produced the observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceLabels {
    trace_id: String,
}

type DurationFamily = Family<OpLabels, HistogramWithExemplars<TraceLabels>>;
type PoolHistograms = Family<PoolLabels, Histogram>;

#[derive(Debug)]
pub(crate) struct Metrics {
    duration: DurationFamily,
    wait: PoolHistograms,
    used: PoolHistograms,
    timeouts: Family<PoolLabels, Counter>,
    n_plus_one: Family<SummaryLabels, Counter>,
    rulebook: Family<RuleLabels, Counter>,
}

fn buckets() -> impl Iterator<Item = f64> {
    DURATION_BUCKETS.into_iter()
}

impl Metrics {
    pub(crate) fn register(registry: &mut Registry, pools: Arc<Pools>) -> Self {
        let duration =
            DurationFamily::new_with_constructor(|| HistogramWithExemplars::new(buckets()));
        let wait = PoolHistograms::new_with_constructor(|| Histogram::new(buckets()));
        let used = PoolHistograms::new_with_constructor(|| Histogram::new(buckets()));
        let timeouts = Family::<PoolLabels, Counter>::default();
        registry.register_with_unit(
            "db_client_operation_duration",
            help::OPERATION_DURATION,
            Unit::Seconds,
            duration.clone(),
        );
        registry.register_with_unit(
            "db_client_connection_wait_time",
            help::WAIT_TIME,
            Unit::Seconds,
            wait.clone(),
        );
        registry.register_with_unit(
            "db_client_connection_use_time",
            help::USE_TIME,
            Unit::Seconds,
            used.clone(),
        );
        registry.register(
            "db_client_connection_timeouts",
            help::TIMEOUTS,
            timeouts.clone(),
        );
        let n_plus_one = Family::<SummaryLabels, Counter>::default();
        registry.register("db_client_n_plus_one", help::N_PLUS_ONE, n_plus_one.clone());
        let rulebook = Family::<RuleLabels, Counter>::default();
        registry.register(
            "db_client_rulebook_violations",
            help::RULEBOOK,
            rulebook.clone(),
        );
        registry.register_collector(Box::new(PoolCollector { pools }));
        Self {
            duration,
            wait,
            used,
            timeouts,
            n_plus_one,
            rulebook,
        }
    }

    pub(crate) fn operation(&self, obs: &Observation<'_>) {
        let labels = OpLabels {
            db_system_name: DB_SYSTEM_NAME,
            db_namespace: obs.namespace.clone(),
            db_operation_name: obs.summary.operation(),
            db_query_summary: obs.summary.summary_arc().clone(),
            error_type: obs.error_type.cloned(),
        };
        #[cfg(feature = "otel")]
        let exemplar = super::trace_id(obs.span).map(|trace_id| TraceLabels { trace_id });
        #[cfg(not(feature = "otel"))]
        let exemplar = None;
        self.duration
            .get_or_create(&labels)
            .observe(obs.seconds, exemplar, None);
    }

    fn pool_labels(pool: &str) -> PoolLabels {
        PoolLabels {
            db_client_connection_pool_name: Arc::from(pool),
        }
    }

    pub(crate) fn pool_wait(&self, pool: &str, seconds: f64) {
        self.wait
            .get_or_create(&Self::pool_labels(pool))
            .observe(seconds);
    }

    pub(crate) fn pool_use(&self, pool: &str, seconds: f64) {
        self.used
            .get_or_create(&Self::pool_labels(pool))
            .observe(seconds);
    }

    pub(crate) fn pool_timeout(&self, pool: &str) {
        self.timeouts.get_or_create(&Self::pool_labels(pool)).inc();
    }

    pub(crate) fn n_plus_one(&self, summary: &Arc<str>) {
        self.n_plus_one
            .get_or_create(&SummaryLabels {
                db_query_summary: summary.clone(),
            })
            .inc();
    }

    pub(crate) fn rulebook(&self, rule: &'static str, summary: &Arc<str>) {
        self.rulebook
            .get_or_create(&RuleLabels {
                rule,
                db_query_summary: summary.clone(),
            })
            .inc();
    }
}

/// Samples every registered pool at scrape time, so the gauges are never stale.
#[derive(Debug)]
struct PoolCollector {
    pools: Arc<Pools>,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.pools.snapshot();
        if snapshot.is_empty() {
            return Ok(());
        }
        {
            let mut family = encoder.encode_descriptor(
                "db_client_connection_count",
                help::CONNECTION_COUNT,
                None,
                MetricType::Gauge,
            )?;
            for (name, status) in &snapshot {
                for (state, value) in [("idle", status.idle), ("used", status.used)] {
                    let labels = PoolStateLabels {
                        db_client_connection_pool_name: name.clone(),
                        db_client_connection_state: state,
                    };
                    ConstGauge::new(value as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (metric, help, pick) in [
            (
                "db_client_connection_max",
                help::CONNECTION_MAX,
                (|s| s.max) as fn(&crate::PoolStatus) -> u64,
            ),
            (
                "db_client_connection_pending_requests",
                help::PENDING_REQUESTS,
                |s| s.pending_requests,
            ),
        ] {
            let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
            for (name, status) in &snapshot {
                let labels = PoolLabels {
                    db_client_connection_pool_name: name.clone(),
                };
                ConstGauge::new(pick(status) as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
