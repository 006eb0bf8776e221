//! Backend for the `prometheus` crate (0.14), for apps already on it.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{Observation, help};
use crate::recorder::{DB_SYSTEM_NAME, DURATION_BUCKETS, Pools};

const OP_LABELS: [&str; 5] = [
    "db_system_name",
    "db_namespace",
    "db_operation_name",
    "db_query_summary",
    "error_type",
];
const POOL: &str = "db_client_connection_pool_name";

#[derive(Debug)]
pub(crate) struct Metrics {
    duration: HistogramVec,
    wait: HistogramVec,
    used: HistogramVec,
    timeouts: IntCounterVec,
    n_plus_one: IntCounterVec,
    rulebook: IntCounterVec,
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<HistogramVec> {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
        labels,
    )
}

impl Metrics {
    pub(crate) fn register(registry: &Registry, pools: Arc<Pools>) -> prometheus::Result<Self> {
        let duration = histogram(
            "db_client_operation_duration_seconds",
            help::OPERATION_DURATION,
            &OP_LABELS,
        )?;
        let wait = histogram(
            "db_client_connection_wait_time_seconds",
            help::WAIT_TIME,
            &[POOL],
        )?;
        let used = histogram(
            "db_client_connection_use_time_seconds",
            help::USE_TIME,
            &[POOL],
        )?;
        let timeouts = IntCounterVec::new(
            Opts::new("db_client_connection_timeouts_total", help::TIMEOUTS),
            &[POOL],
        )?;
        let n_plus_one = IntCounterVec::new(
            Opts::new("db_client_n_plus_one_total", help::N_PLUS_ONE),
            &["db_query_summary"],
        )?;
        let rulebook = IntCounterVec::new(
            Opts::new("db_client_rulebook_violations_total", help::RULEBOOK),
            &["rule", "db_query_summary"],
        )?;
        registry.register(Box::new(n_plus_one.clone()))?;
        registry.register(Box::new(rulebook.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(wait.clone()))?;
        registry.register(Box::new(used.clone()))?;
        registry.register(Box::new(timeouts.clone()))?;
        registry.register(Box::new(PoolCollector::new(pools)?))?;
        Ok(Self {
            duration,
            wait,
            used,
            timeouts,
            n_plus_one,
            rulebook,
        })
    }

    pub(crate) fn operation(&self, obs: &Observation<'_>) {
        self.duration
            .with_label_values(&[
                DB_SYSTEM_NAME,
                obs.namespace,
                obs.summary.operation(),
                obs.summary.summary(),
                obs.error_type.map_or("", |e| e),
            ])
            .observe(obs.seconds);
    }

    pub(crate) fn pool_wait(&self, pool: &str, seconds: f64) {
        self.wait.with_label_values(&[pool]).observe(seconds);
    }

    pub(crate) fn pool_use(&self, pool: &str, seconds: f64) {
        self.used.with_label_values(&[pool]).observe(seconds);
    }

    pub(crate) fn pool_timeout(&self, pool: &str) {
        self.timeouts.with_label_values(&[pool]).inc();
    }

    pub(crate) fn n_plus_one(&self, summary: &str) {
        self.n_plus_one.with_label_values(&[summary]).inc();
    }

    pub(crate) fn rulebook(&self, rule: &str, summary: &str) {
        self.rulebook.with_label_values(&[rule, summary]).inc();
    }
}

/// Refreshes the pool gauges from the registered pools at every gather.
struct PoolCollector {
    pools: Arc<Pools>,
    count: IntGaugeVec,
    max: IntGaugeVec,
    pending: IntGaugeVec,
}

impl PoolCollector {
    fn new(pools: Arc<Pools>) -> prometheus::Result<Self> {
        Ok(Self {
            pools,
            count: IntGaugeVec::new(
                Opts::new("db_client_connection_count", help::CONNECTION_COUNT),
                &[POOL, "db_client_connection_state"],
            )?,
            max: IntGaugeVec::new(
                Opts::new("db_client_connection_max", help::CONNECTION_MAX),
                &[POOL],
            )?,
            pending: IntGaugeVec::new(
                Opts::new(
                    "db_client_connection_pending_requests",
                    help::PENDING_REQUESTS,
                ),
                &[POOL],
            )?,
        })
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.count.desc();
        d.extend(self.max.desc());
        d.extend(self.pending.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = self.pools.snapshot();
        self.count.reset();
        self.max.reset();
        self.pending.reset();
        for (name, s) in &snapshot {
            self.count
                .with_label_values(&[&**name, "idle"])
                .set(s.idle as i64);
            self.count
                .with_label_values(&[&**name, "used"])
                .set(s.used as i64);
            self.max.with_label_values(&[&**name]).set(s.max as i64);
            self.pending
                .with_label_values(&[&**name])
                .set(s.pending_requests as i64);
        }
        if snapshot.is_empty() {
            return Vec::new();
        }
        let mut out = self.count.collect();
        out.extend(self.max.collect());
        out.extend(self.pending.collect());
        out
    }
}
