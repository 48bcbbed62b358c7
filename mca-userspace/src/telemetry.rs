//! Logging setup: structured `tracing` output as text or JSON lines.

use tracing_subscriber::EnvFilter;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber. The filter comes from `MCA_LOG` (tracing's env-filter
/// syntax, e.g. `info,mca=debug`), defaulting to `info`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("MCA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
