//! One structured log line per request, written when the request is really over.
//!
//! For a watch, `logs -f` or an exec session "over" is minutes after the response headers, so
//! the line is emitted when the [`AccessLog`] is dropped: by the response body once hyper has
//! sent (or abandoned) it, or by the tunnel task when an upgraded connection closes. Bytes are
//! counted by [`Counted`] bodies as they stream, never by buffering.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::Buf;
use http::{Method, Version};
use http_body::{Body, Frame, SizeHint};

use crate::{
    limits::{connection::Active, in_flight::Slot},
    metrics::{self, Metrics},
    reqinfo::RequestInfo,
    telemetry::access::{
        self,
        Value::{Number, Quoted, Raw},
    },
    trace_context::TraceContext,
};

/// A byte counter shared between a body and its access log.
pub type ByteCounter = Arc<AtomicU64>;

/// The facts about one request; logged on drop.
#[derive(Debug)]
pub struct AccessLog {
    info: RequestInfo,
    method: Method,
    version: Version,
    start: Instant,
    /// The response status sent to the client; 0 until known.
    pub status: u16,
    /// Request headers removed before forwarding (names only, never values).
    pub stripped: Vec<&'static str>,
    /// The address the client dialled, when eBPF redirected its connection to MCA.
    pub original_destination: Option<SocketAddr>,
    /// The route that took the request.
    pub route: Option<Arc<str>>,
    /// The cluster it went to, or the clusters it was served from, comma-separated.
    pub cluster: Option<Arc<str>>,
    /// Whether it was served from several clusters at once (fan-out, merged discovery).
    pub merged: bool,
    /// Keeps a long-running request counted as open.
    pub open: Option<metrics::Open>,
    metrics: Arc<Metrics>,
    span: tracing::Span,
    trace: TraceContext,
    /// Its place in MCA's in-flight budget, held as long.
    pub slot: Option<Slot>,
    /// Keeps it counted as open on its client connection; told whether MCA answered.
    pub connection: Option<Active>,
    error: Option<String>,
    note: Option<&'static str>,
    /// Bytes received from the client (request body, or client→server after an upgrade).
    pub bytes_in: ByteCounter,
    /// Bytes sent to the client (response body, or server→client after an upgrade).
    pub bytes_out: ByteCounter,
}

impl AccessLog {
    /// Starts the record for `request`, arrived just now, which does what `info` says; it is
    /// counted in `metrics` and is MCA's hop in the trace `parent` names (or a new one).
    pub fn start<B>(
        info: RequestInfo,
        request: &http::Request<B>,
        metrics: Arc<Metrics>,
        parent: Option<TraceContext>,
    ) -> Self {
        let span = tracing::info_span!(
            "request",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            verb = %info.verb,
            group = %info.api_group,
            resource = %info.resource,
            subresource = %info.subresource,
            namespace = %info.namespace,
            name = %info.name,
            cluster = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let trace = crate::telemetry::hop(&span, parent);
        span.record("trace_id", format_args!("{:032x}", trace.trace_id));
        span.record("span_id", format_args!("{:016x}", trace.span_id));
        Self {
            info,
            method: request.method().clone(),
            version: request.version(),
            metrics,
            span,
            trace,
            start: Instant::now(),
            status: 0,
            stripped: Vec::new(),
            original_destination: None,
            route: None,
            cluster: None,
            merged: false,
            open: None,
            slot: None,
            connection: None,
            error: None,
            note: None,
            bytes_in: ByteCounter::default(),
            bytes_out: ByteCounter::default(),
        }
    }

    /// Records why the exchange failed; the line is still written on drop.
    pub fn fail(&mut self, why: String) {
        self.error = Some(why);
    }

    /// Records something routing could not know (why a create's labels were not read).
    pub fn note(&mut self, note: &'static str) {
        self.note = Some(note);
    }

    /// What the request does.
    pub fn info(&self) -> &RequestInfo {
        &self.info
    }

    /// The request's span, open until the exchange is over.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// MCA's hop in the request's trace.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if let Some(connection) = &mut self.connection {
            // No status: the client went away before MCA could answer.
            connection.answered = self.status != 0;
        }
        let info = &self.info;
        let elapsed = self.start.elapsed();
        let (bytes_in, bytes_out) = (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        );
        let cluster = self.cluster.as_deref().unwrap_or("");
        self.metrics.ended(&metrics::Ended {
            info,
            cluster: if self.merged { "*" } else { cluster },
            code: self.status,
            elapsed,
            bytes_in,
            bytes_out,
        });
        self.span.record("cluster", cluster);
        self.span.record("status", self.status);
        if !access::enabled() {
            return;
        }
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let http = format!("{:?}", self.version);
        let stripped = self.stripped.join(",");
        let original = self
            .original_destination
            .map(|a| a.to_string())
            .unwrap_or_default();
        let trace_id = format!("{:032x}", self.trace.trace_id);
        access::write(
            "request",
            &[
                ("verb", Raw(&info.verb)),
                ("group", Raw(&info.api_group)),
                ("version", Raw(&info.api_version)),
                ("resource", Raw(&info.resource)),
                ("subresource", Raw(&info.subresource)),
                ("namespace", Raw(&info.namespace)),
                ("name", Raw(&info.name)),
                ("path", Raw(&info.path)),
                ("method", Raw(self.method.as_str())),
                ("http", Raw(&http)),
                ("status", Number(self.status.into())),
                ("latency_us", Number(latency_us)),
                ("bytes_in", Number(bytes_in)),
                ("bytes_out", Number(bytes_out)),
                ("stripped", Raw(&stripped)),
                ("original_dst", Raw(&original)),
                ("route", Quoted(self.route.as_deref().unwrap_or(""))),
                ("cluster", Quoted(cluster)),
                ("error", Quoted(self.error.as_deref().unwrap_or(""))),
                ("note", Quoted(self.note.unwrap_or(""))),
                ("trace_id", Raw(&trace_id)),
            ],
        );
    }
}

pin_project_lite::pin_project! {
    /// A body that counts the data bytes passing through it and, optionally, carries the
    /// request's [`AccessLog`] so the line is written when the body is done.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        counter: ByteCounter,
        log: Option<AccessLog>,
    }
}

impl<B> Counted<B> {
    /// Counts `inner`'s bytes into `counter`.
    pub fn new(inner: B, counter: ByteCounter) -> Self {
        Self {
            inner,
            counter,
            log: None,
        }
    }

    /// Counts `inner`'s bytes into the log's `bytes_out` and logs when dropped.
    pub fn response(inner: B, log: AccessLog) -> Self {
        Self {
            inner,
            counter: Arc::clone(&log.bytes_out),
            log: Some(log),
        }
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.counter
                .fetch_add(data.remaining() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn counts_bytes_and_keeps_the_size_hint() {
        let counter = ByteCounter::default();
        let body = Counted::new(Full::new(Bytes::from_static(b"hello")), counter.clone());
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "hello");
        assert_eq!(counter.load(Ordering::Relaxed), 5);
    }
}
