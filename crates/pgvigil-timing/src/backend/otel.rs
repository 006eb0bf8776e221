//! Backend for OpenTelemetry metrics: instruments on a user-supplied `Meter`.

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableUpDownCounter};

use super::Observation;
use crate::recorder::{DB_SYSTEM_NAME, DURATION_BUCKETS, Pools};

const POOL: &str = "db.client.connection.pool.name";

pub(crate) struct Metrics {
    duration: Histogram<f64>,
    wait: Histogram<f64>,
    used: Histogram<f64>,
    timeouts: Counter<u64>,
    n_plus_one: Counter<u64>,
    rulebook: Counter<u64>,
    // Held so the callbacks stay registered for the recorder's lifetime.
    _count: ObservableUpDownCounter<i64>,
    _max: ObservableUpDownCounter<i64>,
    _pending: ObservableUpDownCounter<i64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("otel::Metrics").finish_non_exhaustive()
    }
}

fn pool_attr(name: &Arc<str>) -> KeyValue {
    KeyValue::new(POOL, name.clone())
}

impl Metrics {
    pub(crate) fn register(meter: &Meter, pools: Arc<Pools>) -> Self {
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        let p = pools.clone();
        let count = meter
            .i64_observable_up_down_counter("db.client.connection.count")
            .with_unit("{connection}")
            .with_description("The number of connections that are currently in state described by the state attribute.")
            .with_callback(move |obs| {
                for (name, s) in p.snapshot() {
                    obs.observe(
                        s.idle as i64,
                        &[pool_attr(&name), KeyValue::new("db.client.connection.state", "idle")],
                    );
                    obs.observe(
                        s.used as i64,
                        &[pool_attr(&name), KeyValue::new("db.client.connection.state", "used")],
                    );
                }
            })
            .build();
        let p = pools.clone();
        let max = meter
            .i64_observable_up_down_counter("db.client.connection.max")
            .with_unit("{connection}")
            .with_description("The maximum number of open connections allowed.")
            .with_callback(move |obs| {
                for (name, s) in p.snapshot() {
                    obs.observe(s.max as i64, &[pool_attr(&name)]);
                }
            })
            .build();
        let p = pools;
        let pending = meter
            .i64_observable_up_down_counter("db.client.connection.pending_requests")
            .with_unit("{request}")
            .with_description("The number of current pending requests for an open connection.")
            .with_callback(move |obs| {
                for (name, s) in p.snapshot() {
                    obs.observe(s.pending_requests as i64, &[pool_attr(&name)]);
                }
            })
            .build();
        Self {
            duration: seconds(
                "db.client.operation.duration",
                "Duration of database client operations.",
            ),
            wait: seconds(
                "db.client.connection.wait_time",
                "The time it took to obtain an open connection from the pool.",
            ),
            used: seconds(
                "db.client.connection.use_time",
                "The time between borrowing a connection and returning it to the pool.",
            ),
            timeouts: meter
                .u64_counter("db.client.connection.timeouts")
                .with_unit("{timeout}")
                .with_description("The number of connection timeouts that have occurred trying to obtain a connection from the pool.")
                .build(),
            n_plus_one: meter
                .u64_counter("db.client.n_plus_one")
                .with_unit("{unit_of_work}")
                .with_description("Units of work in which one statement ran more than the N+1 threshold times.")
                .build(),
            rulebook: meter
                .u64_counter("db.client.rulebook.violations")
                .with_unit("{statement}")
                .with_description("Distinct statements seen breaking a rule of the SQL rulebook.")
                .build(),
            _count: count,
            _max: max,
            _pending: pending,
        }
    }

    pub(crate) fn operation(&self, obs: &Observation<'_>) {
        let mut attrs = Vec::with_capacity(7);
        attrs.push(KeyValue::new("db.system.name", DB_SYSTEM_NAME));
        if !obs.namespace.is_empty() {
            attrs.push(KeyValue::new("db.namespace", obs.namespace.clone()));
        }
        attrs.push(KeyValue::new("db.operation.name", obs.summary.operation()));
        attrs.push(KeyValue::new(
            "db.query.summary",
            obs.summary.summary_arc().clone(),
        ));
        if let Some(e) = obs.error_type {
            attrs.push(KeyValue::new("error.type", e.clone()));
        }
        if let Some(server) = obs.server {
            attrs.push(KeyValue::new("server.address", server.address.clone()));
            attrs.push(KeyValue::new("server.port", i64::from(server.port)));
        }
        self.duration.record(obs.seconds, &attrs);
    }

    pub(crate) fn pool_wait(&self, pool: &str, seconds: f64) {
        self.wait
            .record(seconds, &[KeyValue::new(POOL, pool.to_owned())]);
    }

    pub(crate) fn pool_use(&self, pool: &str, seconds: f64) {
        self.used
            .record(seconds, &[KeyValue::new(POOL, pool.to_owned())]);
    }

    pub(crate) fn n_plus_one(&self, summary: &Arc<str>) {
        self.n_plus_one
            .add(1, &[KeyValue::new("db.query.summary", summary.clone())]);
    }

    pub(crate) fn rulebook(&self, rule: &'static str, summary: &Arc<str>) {
        self.rulebook.add(
            1,
            &[
                KeyValue::new("rule", rule),
                KeyValue::new("db.query.summary", summary.clone()),
            ],
        );
    }

    pub(crate) fn pool_timeout(&self, pool: &str) {
        self.timeouts
            .add(1, &[KeyValue::new(POOL, pool.to_owned())]);
    }
}
