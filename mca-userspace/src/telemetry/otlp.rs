//! OTLP export of request spans (cargo feature `otlp`, off by default): each `request` span
//! becomes an OpenTelemetry span sent over OTLP/HTTP (protobuf) in batches, in the trace the
//! application's `traceparent` names, and the `traceparent` MCA sends the API server names
//! that span, so collector, application and kube-apiserver traces line up.
//!
//! Export is on when `--otlp-endpoint` (`/v1/traces` is appended) or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; the other
//! standard variables (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! ...) apply as the OpenTelemetry SDK reads them.

use opentelemetry::{
    Context,
    trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        TracerProvider as _,
    },
};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response, hyper::HyperClient};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{Layer, registry::LookupSpan};

use crate::trace_context::TraceContext;

/// How long one export may take.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The exporter refused its configuration (an endpoint that is not a URL, ...).
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// No runtime for the exporter's HTTP client.
    #[error("OTLP exporter runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The running exporter; dropping it sends what is still queued.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("mca: OTLP export at exit: {error}");
        }
    }
}

/// Whether export is asked for: by `endpoint` or the standard variables.
pub fn wanted(endpoint: Option<&str>) -> bool {
    endpoint.is_some()
        || [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// The exporter and the layer that feeds it the `request` spans.
pub fn start<S>(endpoint: Option<&str>) -> Result<(Exporter, impl Layer<S>), Error>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let mut builder = SpanExporter::builder()
        .with_http()
        .with_http_client(OwnRuntime::start()?);
    if let Some(base) = endpoint {
        builder = builder.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("mca");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(builder.build()?)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mca"))
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            metadata.is_span() && metadata.name() == "request"
        }));
    Ok((Exporter { provider }, layer))
}

/// MCA's hop as the exported span: `span` joined to the application's trace (`parent`), and
/// the ids the SDK gave it; `None` when nothing exports `span`.
pub fn hop(span: &tracing::Span, parent: Option<TraceContext>) -> Option<TraceContext> {
    if span.is_disabled() {
        return None;
    }
    if let Some(parent) = parent {
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id.to_be_bytes()),
            SpanId::from_bytes(parent.span_id.to_be_bytes()),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        span.set_parent(Context::new().with_remote_span_context(remote))
            .ok()?;
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid().then(|| TraceContext {
        trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(own.span_id().to_bytes()),
        flags: own.trace_flags().to_u8(),
    })
}

/// hyper's OTLP client on a runtime of its own (thread `mca-otlp`): the SDK exports from a
/// plain thread of its own, hyper needs a Tokio runtime, and exports stay off the threads
/// serving requests.
#[derive(Debug)]
struct OwnRuntime {
    client: HyperClient,
    runtime: tokio::runtime::Runtime,
}

impl OwnRuntime {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mca-otlp")
            .enable_all()
            .build()?;
        let client = {
            let _entered = runtime.enter();
            HyperClient::with_default_connector(EXPORT_TIMEOUT, None)
        };
        Ok(Self { client, runtime })
    }
}

#[async_trait::async_trait]
impl HttpClient for OwnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}
