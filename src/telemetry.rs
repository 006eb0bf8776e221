//! Logging and tracing: a `tracing` subscriber writing text or JSON lines, and — with the `otel`
//! cargo feature and `[telemetry] otlp_enabled = true` — the poll spans exported over OTLP.
//!
//! All OpenTelemetry code lives in this file, behind `cfg(feature = "otel")`, so the default
//! build carries no exporter.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LoggingConfig, TelemetryConfig};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter did not parse.
    #[error("invalid log filter: {0}")]
    Filter(String),
    /// A global subscriber was already installed.
    #[error("logging was already initialised: {0}")]
    AlreadyInitialised(String),
    /// The OTLP exporter could not be built.
    #[error("cannot set up OpenTelemetry export: {0}; check [telemetry] otlp_endpoint")]
    Otlp(String),
}

/// Keeps exporters alive; flushes pending spans when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("pgvigil: flushing OpenTelemetry spans failed: {e}");
            }
        }
    }
}

/// Install the global subscriber. `RUST_LOG`, when set, overrides `[logging] level`.
pub fn init(
    logging: &LoggingConfig,
    telemetry: &TelemetryConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives),
        _ => EnvFilter::try_new(&logging.level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;

    let fmt = match logging.format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(false).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);

    #[cfg(feature = "otel")]
    {
        let mut guard = TelemetryGuard::default();
        let otel = if telemetry.otlp_enabled {
            let provider = otel::provider(telemetry)?;
            let layer = otel::layer(&provider);
            guard.provider = Some(provider);
            Some(layer)
        } else {
            None
        };
        registry
            .with(otel)
            .try_init()
            .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
        Ok(guard)
    }
    #[cfg(not(feature = "otel"))]
    {
        // Config validation rejects otlp_enabled without the feature; nothing to export here.
        let _ = telemetry;
        registry
            .try_init()
            .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
        Ok(TelemetryGuard::default())
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::TelemetryError;
    use crate::config::TelemetryConfig;

    pub(super) fn provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&config.otlp_endpoint)
            .build()
            .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build())
    }

    pub(super) fn layer<S>(
        provider: &SdkTracerProvider,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("pgvigil"))
    }
}
