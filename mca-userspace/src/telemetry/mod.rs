//! Logging setup: structured `tracing` output as text or JSON lines on stderr, gathered in
//! memory and written in batches ([`writer`]) so no request waits for a `write(2)`.
//!
//! Spans are not printed: every request's facts are in its access-log line, and formatting a
//! span's fields for every request would cost more than the rest of its logging. The request
//! spans exist for an exporter layer ([`otlp`], a cargo feature); with none installed they are
//! disabled at their callsite and cost nothing ([`logs_only`]).

pub mod access;
#[cfg(feature = "otlp")]
pub mod otlp;
mod writer;

use tracing_subscriber::{
    EnvFilter, Layer,
    filter::filter_fn,
    layer::{Filter, SubscriberExt as _},
    util::SubscriberInitExt as _,
};

pub use self::writer::Flush;
use crate::trace_context::TraceContext;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// What must outlive the process's work: dropped at exit, it flushes the log (and sends the
/// spans still queued for export).
#[must_use = "dropping the guard flushes the log: hold it until the process ends"]
#[derive(Debug)]
pub struct Guard {
    // Dropped first: shutting the exporter down may log.
    #[cfg(feature = "otlp")]
    _exporter: Option<otlp::Exporter>,
    _flush: Flush,
}

/// Installs the global subscriber for `mca run` in builds with the `otlp` feature: logs to
/// stderr ([`logs`]), and request spans exported to `endpoint` (or where the
/// `OTEL_EXPORTER_OTLP_*` variables say) when export is asked for.
#[cfg(feature = "otlp")]
pub fn init_with_export(format: LogFormat, endpoint: Option<&str>) -> Guard {
    let started = otlp::wanted(endpoint).then(|| otlp::start(endpoint));
    let (exporter, flush) = match started {
        Some(Ok((exporter, layer))) => {
            let (subscriber, flush) = logs_beside_export(format);
            subscriber.with(layer).init();
            (Some(exporter), flush)
        }
        failed => {
            if let Some(Err(error)) = failed {
                eprintln!("mca: request spans are not exported: {error}");
            }
            let (subscriber, flush) = logs_only(format);
            subscriber.init();
            (None, flush)
        }
    };
    Guard {
        _exporter: exporter,
        _flush: flush,
    }
}

/// Installs the global subscriber with logs only: for `mca run` in builds without the `otlp`
/// feature, and for the other subcommands (`mca webhook`, ...).
pub fn init_logs(format: LogFormat) -> Guard {
    let (subscriber, flush) = logs_only(format);
    subscriber.init();
    Guard {
        #[cfg(feature = "otlp")]
        _exporter: None,
        _flush: flush,
    }
}

/// Log lines on stderr, in batches, and their filter, from `MCA_LOG` (tracing's env-filter
/// syntax, e.g. `info,mca=debug`), defaulting to `info`. Colours only when stderr is a
/// terminal, so container logs hold no escape codes; JSON lines never have them.
fn logs<S>(format: LogFormat) -> (impl Layer<S>, EnvFilter, Flush)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("MCA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, flush) = writer::batched(std::io::stderr());
    access::install(writer.clone(), format);
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let layer = match format {
        LogFormat::Text => layer.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => layer.with_ansi(false).json().flatten_event(true).boxed(),
    };
    (layer, filter, flush)
}

/// Spans, which log lines leave out.
fn events_only<S: tracing::Subscriber>() -> impl Filter<S> + Layer<S> {
    filter_fn(|metadata| !metadata.is_span())
}

/// The subscriber when nothing exports spans. Its filters are global, so each callsite's
/// interest is decided once and a span or event they disable is never made: with the
/// per-layer filters an exporter needs ([`logs_beside_export`]) every request's span was
/// made, entered and closed in the registry and every one of h2's and hyper's trace events
/// was checked at run time.
fn logs_only(format: LogFormat) -> (impl tracing::Subscriber + Send + Sync, Flush) {
    let (layer, filter, flush) = logs(format);
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(events_only())
        .with(layer);
    (subscriber, flush)
}

/// The subscriber's log lines beside an exporter, which sees every span: the filters apply
/// to the log layer only.
#[cfg(any(feature = "otlp", test))]
fn logs_beside_export(
    format: LogFormat,
) -> (
    impl tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    Flush,
) {
    let (layer, filter, flush) = logs(format);
    let layer = layer.with_filter(events_only()).with_filter(filter);
    (tracing_subscriber::registry().with(layer), flush)
}

/// MCA's hop in a request's trace, `span` being the request's span: a child of `parent` (the
/// application's `traceparent`), or a new trace when there is none. A new trace is not
/// sampled: MCA does not ask the API server to record what the application did not. When
/// `span` is exported the ids are those of the exported span, and new traces are sampled as
/// the exporter's sampler decides.
#[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
pub fn hop(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    #[cfg(feature = "otlp")]
    if let Some(exported) = otlp::hop(span, parent) {
        return exported;
    }
    parent.map_or_else(TraceContext::root, |parent| parent.child())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_spans_and_filtered_events_are_disabled() {
        let (subscriber, _flush) = logs_only(LogFormat::Text);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", verb = "get");
            assert!(span.is_disabled(), "{span:?}");
            assert!(tracing::enabled!(tracing::Level::INFO));
            assert!(!tracing::enabled!(tracing::Level::DEBUG));
        });
    }

    #[test]
    fn beside_an_exporter_spans_are_made() {
        let (subscriber, _flush) = logs_beside_export(LogFormat::Json);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", verb = "get");
            assert!(!span.is_disabled());
            assert!(tracing::enabled!(tracing::Level::INFO));
        });
    }
}
