//! Logging setup: structured `tracing` output as text or JSON lines on stderr, gathered in
//! memory and written in batches ([`writer`]) so no request waits for a `write(2)`.
//!
//! Spans are not printed: every request's facts are in its access-log line, and formatting a
//! span's fields for every request would cost more than the rest of its logging. The request
//! spans exist for an exporter layer; with none installed they are disabled at their callsite
//! and cost nothing.

pub mod access;
mod writer;

use tracing_subscriber::{
    EnvFilter, Layer as _, filter::filter_fn, layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
};

pub use self::writer::Flush;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber, writing to stderr. The filter comes from `MCA_LOG`
/// (tracing's env-filter syntax, e.g. `info,mca=debug`), defaulting to `info`. Colours only
/// when stderr is a terminal, so container logs hold no escape codes; JSON lines never have
/// them. Lines still queued are written when the returned guard is dropped.
#[must_use = "dropping the guard flushes the log: hold it until the process ends"]
pub fn init(format: LogFormat) -> Flush {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("MCA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, flush) = writer::batched(std::io::stderr());
    access::install(writer.clone(), format);
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let layer = match format {
        LogFormat::Text => layer.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => layer.with_ansi(false).json().flatten_event(true).boxed(),
    };
    let events_only = filter_fn(|metadata| !metadata.is_span());
    tracing_subscriber::registry()
        .with(layer.with_filter(events_only).with_filter(filter))
        .init();
    flush
}
