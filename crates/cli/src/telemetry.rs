//! Logs and traces of the gateway process (invariant I1: ids, sizes, timings and
//! outcomes, never content, participants or credentials).
//!
//! Logs go to stderr, one JSON object per line by default (`format = "text"` for
//! people). With `otlp_endpoint` set, spans are also exported over OTLP/HTTP
//! (protobuf) to a collector, e.g. `http://127.0.0.1:4318/v1/traces`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::error::{CliError, Kind};

/// The `[telemetry]` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TelemetryConfig {
    /// `json` (default) or `text`.
    format: LogFormat,
    /// `error`, `warn`, `info` (default), `debug` or `trace`.
    level: String,
    /// OTLP/HTTP traces endpoint; no export when absent.
    otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of exported spans.
    service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
            otlp_endpoint: None,
            service_name: "vellum-gateway".into(),
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Json,
    Text,
}

/// Keeps the exporter alive; dropping it flushes the spans still buffered.
pub(crate) struct Telemetry(Option<SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

fn bad(what: String) -> CliError {
    CliError::new(Kind::Malformed, format!("[telemetry] {what}"))
}

/// Installs the global subscriber. Call once, before the runtime starts.
pub(crate) fn init(config: &TelemetryConfig) -> Result<Telemetry, CliError> {
    let level: LevelFilter = config.level.parse().map_err(|_| {
        bad(format!(
            "level {:?}: use error, warn, info, debug or trace",
            config.level
        ))
    })?;
    let logs = match config.format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
    };
    let (provider, traces) = match &config.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| bad(format!("otlp_endpoint: {e}")))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .build();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("vellum");
            let layer = tracing_opentelemetry::layer().with_tracer(tracer);
            (Some(provider), Some(layer))
        }
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(level))
        .with(traces.map(|t| t.with_filter(level)))
        .try_init()
        .map_err(|e| CliError::new(Kind::Other, format!("telemetry: {e}")))?;
    Ok(Telemetry(provider))
}
