//! Metric backends. Each one is optional (feature + builder call); `Backends` fans every
//! observation out to the ones that are configured.
//!
//! | OpenTelemetry instrument | Prometheus name | labels |
//! |---|---|---|
//! | `db.client.operation.duration` (s) | `db_client_operation_duration_seconds` | `db_system_name`, `db_namespace`, `db_operation_name`, `db_query_summary`, `error_type` |
//! | `db.client.connection.count` | `db_client_connection_count` | `db_client_connection_pool_name`, `db_client_connection_state` (`idle`/`used`) |
//! | `db.client.connection.max` | `db_client_connection_max` | `db_client_connection_pool_name` |
//! | `db.client.connection.pending_requests` | `db_client_connection_pending_requests` | `db_client_connection_pool_name` |
//! | `db.client.connection.wait_time` (s) | `db_client_connection_wait_time_seconds` | `db_client_connection_pool_name` |
//! | `db.client.connection.use_time` (s) | `db_client_connection_use_time_seconds` | `db_client_connection_pool_name` |
//! | `db.client.connection.timeouts` | `db_client_connection_timeouts_total` | `db_client_connection_pool_name` |
//! | `db.client.n_plus_one` | `db_client_n_plus_one_total` | `db_query_summary` |
//! | `db.client.rulebook.violations` | `db_client_rulebook_violations_total` | `rule` (`select_star`, `unbounded_select`), `db_query_summary` |

use std::sync::Arc;

use crate::summary::QuerySummary;

#[cfg(feature = "otel")]
pub(crate) mod otel;
#[cfg(feature = "prometheus")]
pub(crate) mod prom;
#[cfg(feature = "prometheus-client")]
pub(crate) mod prom_client;

/// Help texts, shared by the Prometheus backends so both expose identical metadata.
#[cfg_attr(
    not(any(feature = "prometheus", feature = "prometheus-client")),
    allow(dead_code)
)]
pub(crate) mod help {
    pub(crate) const OPERATION_DURATION: &str = "Duration of database client operations as the application saw them: from the call until the last row arrived (network included; pool wait is db_client_connection_wait_time).";
    pub(crate) const CONNECTION_COUNT: &str =
        "Connections currently in the pool, by state (idle, used).";
    pub(crate) const CONNECTION_MAX: &str =
        "Maximum number of open connections allowed by the pool.";
    pub(crate) const PENDING_REQUESTS: &str =
        "Callers currently waiting for a connection from the pool.";
    pub(crate) const WAIT_TIME: &str = "Time it took to obtain a connection from the pool.";
    pub(crate) const USE_TIME: &str =
        "Time between checking a connection out of the pool and returning it.";
    pub(crate) const TIMEOUTS: &str = "Connection checkouts that timed out.";
    pub(crate) const N_PLUS_ONE: &str = "Units of work (requests, jobs) in which one statement ran more than the N+1 threshold times.";
    pub(crate) const RULEBOOK: &str = "Distinct statements seen breaking a rule of the SQL rulebook (select_star: SELECT *; unbounded_select: reads whole tables), each counted once.";
}

/// One finished operation.
#[derive(Debug)]
#[cfg_attr(
    not(any(
        feature = "prometheus",
        feature = "prometheus-client",
        feature = "otel"
    )),
    allow(dead_code)
)]
pub(crate) struct Observation<'a> {
    pub(crate) namespace: &'a Arc<str>,
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) server: Option<&'a crate::recorder::ServerAddress>,
    pub(crate) summary: &'a QuerySummary,
    pub(crate) error_type: Option<&'a Arc<str>>,
    pub(crate) seconds: f64,
    #[cfg_attr(
        not(all(feature = "otel", feature = "prometheus-client")),
        allow(dead_code)
    )]
    pub(crate) span: &'a tracing::Span,
}

/// The configured backends.
#[derive(Debug, Default)]
pub(crate) struct Backends {
    #[cfg(feature = "prometheus-client")]
    pub(crate) prometheus_client: Option<prom_client::Metrics>,
    #[cfg(feature = "prometheus")]
    pub(crate) prometheus: Option<prom::Metrics>,
    #[cfg(feature = "otel")]
    pub(crate) otel: Option<otel::Metrics>,
}

#[allow(unused_variables)] // with no backend feature, every method is empty
impl Backends {
    pub(crate) fn operation(&self, obs: &Observation<'_>) {
        #[cfg(feature = "prometheus-client")]
        if let Some(m) = &self.prometheus_client {
            m.operation(obs);
        }
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.prometheus {
            m.operation(obs);
        }
        #[cfg(feature = "otel")]
        if let Some(m) = &self.otel {
            m.operation(obs);
        }
    }

    pub(crate) fn pool_wait(&self, pool: &str, seconds: f64) {
        #[cfg(feature = "prometheus-client")]
        if let Some(m) = &self.prometheus_client {
            m.pool_wait(pool, seconds);
        }
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.prometheus {
            m.pool_wait(pool, seconds);
        }
        #[cfg(feature = "otel")]
        if let Some(m) = &self.otel {
            m.pool_wait(pool, seconds);
        }
    }

    pub(crate) fn pool_use(&self, pool: &str, seconds: f64) {
        #[cfg(feature = "prometheus-client")]
        if let Some(m) = &self.prometheus_client {
            m.pool_use(pool, seconds);
        }
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.prometheus {
            m.pool_use(pool, seconds);
        }
        #[cfg(feature = "otel")]
        if let Some(m) = &self.otel {
            m.pool_use(pool, seconds);
        }
    }

    pub(crate) fn n_plus_one(&self, summary: &Arc<str>) {
        #[cfg(feature = "prometheus-client")]
        if let Some(m) = &self.prometheus_client {
            m.n_plus_one(summary);
        }
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.prometheus {
            m.n_plus_one(summary);
        }
        #[cfg(feature = "otel")]
        if let Some(m) = &self.otel {
            m.n_plus_one(summary);
        }
    }

    pub(crate) fn rulebook(&self, rule: &'static str, summary: &Arc<str>) {
        #[cfg(feature = "prometheus-client")]
        if let Some(m) = &self.prometheus_client {
            m.rulebook(rule, summary);
        }
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.prometheus {
            m.rulebook(rule, summary);
        }
        #[cfg(feature = "otel")]
        if let Some(m) = &self.otel {
            m.rulebook(rule, summary);
        }
    }

    pub(crate) fn pool_timeout(&self, pool: &str) {
        #[cfg(feature = "prometheus-client")]
        if let Some(m) = &self.prometheus_client {
            m.pool_timeout(pool);
        }
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.prometheus {
            m.pool_timeout(pool);
        }
        #[cfg(feature = "otel")]
        if let Some(m) = &self.otel {
            m.pool_timeout(pool);
        }
    }
}

/// The trace id of `span` when it is exported through tracing-opentelemetry.
#[cfg(all(feature = "otel", feature = "prometheus-client"))]
pub(crate) fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}
