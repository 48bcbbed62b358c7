//! The context of one request, from its arrival until the exchange is really over.
//!
//! Every stage of the pipeline adds what it learnt (the credentials it stripped, the route
//! and cluster, the status sent) and hands over what must live as long as the exchange (the
//! request's place in the in-flight budget, its count as a long-running request, its count on
//! the client connection). For a watch, `logs -f` or an exec session "over" is minutes after
//! the response headers, so the context rides the response body ([`Counted`]) or the tunnel
//! task and is consumed when that is dropped: by the metrics and by the [access
//! log](super::access_log), which read the same [`Facts`].

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use bytes::Bytes;
use http::{Method, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};

use super::{
    ResponseBody, access_log,
    counted::{ByteCounter, Counted, Tally},
    headers::Stripped,
};
use crate::{
    limits::{connection::Active, in_flight::Slot},
    metrics::{self, Metrics},
    reqinfo::RequestInfo,
    status::Status,
    trace_context::TraceContext,
};

/// What is known about one request; logged and counted when the exchange is over.
#[derive(Debug)]
pub struct Facts {
    /// What it does.
    pub info: RequestInfo,
    /// As the client sent it.
    pub method: Method,
    /// The HTTP version the client spoke.
    pub version: Version,
    /// The response status sent to the client; 0 until known.
    pub status: u16,
    /// Request headers removed before forwarding (names only, never values).
    pub stripped: Stripped,
    /// The address the client dialled, when eBPF redirected its connection to MCA.
    pub original_destination: Option<SocketAddr>,
    /// The route that took it.
    pub route: Option<Arc<str>>,
    /// The cluster it went to, or the clusters it was served from, comma-separated.
    pub cluster: Option<Arc<str>>,
    /// Whether it was served from several clusters at once (fan-out, merged discovery).
    pub merged: bool,
    /// Why the exchange failed, if it did.
    pub error: Option<String>,
    /// Something routing could not know (why a create's labels were not read).
    pub note: Option<&'static str>,
    /// Bytes received from the client (request body, or client→server after an upgrade).
    pub bytes_in: Received,
    /// Bytes sent to the client (response body, or server→client after an upgrade), counted
    /// by the body or tunnel that holds the context.
    pub bytes_out: u64,
}

/// Bytes received from the client. A request body goes upstream apart from the context, so
/// it counts through a shared counter, made only for a request that has a body (not for a
/// GET or a watch); a tunnel holds the context and counts into it.
#[derive(Debug, Default)]
pub struct Received {
    body: Option<ByteCounter>,
    tunnel: u64,
}

impl Received {
    /// Every byte received so far.
    pub fn total(&self) -> u64 {
        let body = self
            .body
            .as_ref()
            .map_or(0, |body| body.load(Ordering::Relaxed));
        body + self.tunnel
    }
}

/// Where a request was sent, as recorded once routing decided.
#[derive(Debug)]
pub enum Served {
    /// Nowhere: no cluster of the route could take it.
    Nowhere,
    /// By one cluster.
    One(Arc<str>),
    /// By these clusters at once.
    Merged(Vec<Arc<str>>),
}

/// One request's context. Dropping it ends the exchange: the metrics and the access log see
/// its facts, and what it held (budget slot, long-running count) is let go.
#[derive(Debug)]
pub struct RequestContext {
    facts: Facts,
    start: Instant,
    metrics: Arc<Metrics>,
    span: tracing::Span,
    trace: TraceContext,
    /// Its place in MCA's in-flight budget.
    slot: Option<Slot>,
    /// Its count among the long-running requests.
    open: Option<metrics::Open>,
    /// Its count on its client connection, told whether MCA answered.
    connection: Active,
}

impl RequestContext {
    /// The context of `request`, arrived just now on `connection`, which does what `info`
    /// says; it is counted in `metrics` and is MCA's hop in the trace `parent` names (or a new
    /// one). `original_destination` is where the client meant to go, if eBPF redirected it.
    pub fn start<B>(
        info: RequestInfo,
        request: &http::Request<B>,
        original_destination: Option<SocketAddr>,
        connection: Active,
        metrics: Arc<Metrics>,
    ) -> Self {
        let parent = TraceContext::of(request.headers());
        let span = tracing::info_span!(
            "request",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            verb = %info.verb(),
            group = %info.api_group(),
            resource = %info.resource(),
            subresource = %info.subresource(),
            namespace = %info.namespace(),
            name = %info.name(),
            cluster = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let trace = crate::telemetry::hop(&span, parent);
        span.record("trace_id", format_args!("{:032x}", trace.trace_id));
        span.record("span_id", format_args!("{:016x}", trace.span_id));
        Self {
            facts: Facts {
                info,
                method: request.method().clone(),
                version: request.version(),
                status: 0,
                stripped: Stripped::default(),
                original_destination,
                route: None,
                cluster: None,
                merged: false,
                error: None,
                note: None,
                bytes_in: Received::default(),
                bytes_out: 0,
            },
            start: Instant::now(),
            metrics,
            span,
            trace,
            slot: None,
            open: None,
            connection,
        }
    }

    /// What the request does.
    pub fn info(&self) -> &RequestInfo {
        &self.facts.info
    }

    /// Where the client meant to go, if eBPF redirected it.
    pub fn original_destination(&self) -> Option<SocketAddr> {
        self.facts.original_destination
    }

    /// The request's span, open until the exchange is over.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// MCA's hop in the request's trace.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// Whether its client connection spent its cancel budget and is being closed.
    pub fn connection_closing(&self) -> bool {
        self.connection.connection_closing()
    }

    /// The counter the request body counts its bytes into as it goes upstream.
    pub fn body_counter(&mut self) -> ByteCounter {
        Arc::clone(self.facts.bytes_in.body.get_or_insert_default())
    }

    /// The bytes a tunnel received from the client and sent to it, counted as they pass.
    pub fn tunnel_counters(&mut self) -> (&mut u64, &mut u64) {
        (&mut self.facts.bytes_in.tunnel, &mut self.facts.bytes_out)
    }

    /// Records the credentials stripped from the request (names only).
    pub fn stripped(&mut self, stripped: Stripped) {
        self.facts.stripped = stripped;
    }

    /// Holds the request's place in the in-flight budget for the exchange.
    pub fn hold(&mut self, slot: Option<Slot>) {
        self.slot = slot;
    }

    /// Counts the request as long-running for the exchange.
    pub fn long_running(&mut self, open: metrics::Open) {
        self.open = Some(open);
    }

    /// Records routing's decision: the route, and where it sent the request.
    pub fn routed(&mut self, route: &Arc<str>, served: Served) {
        self.facts.route = Some(Arc::clone(route));
        let (cluster, merged) = match served {
            Served::Nowhere => (None, false),
            Served::One(cluster) => (Some(cluster), false),
            Served::Merged(clusters) => (Some(clusters.join(",").into()), true),
        };
        self.facts.cluster = cluster;
        self.facts.merged = merged;
    }

    /// Records that the request went on to `cluster` after the first cluster did not answer.
    pub fn retried_on(&mut self, cluster: &Arc<str>) {
        self.facts.cluster = Some(Arc::clone(cluster));
        self.note("the first cluster did not answer; retried on the route's next cluster");
    }

    /// Records something routing could not know.
    pub fn note(&mut self, note: &'static str) {
        self.facts.note = Some(note);
    }

    /// Records the status sent to the client.
    pub fn responded(&mut self, status: StatusCode) {
        self.facts.status = status.as_u16();
    }

    /// Records why the exchange failed; it is still logged when it ends.
    pub fn fail(&mut self, why: String) {
        self.facts.error = Some(why);
    }

    /// Sends `response` to the client: its status recorded, its body counted, and the
    /// exchange over when the body is.
    pub fn respond<B>(mut self, response: Response<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes, Error = tower::BoxError> + Send + 'static,
    {
        self.responded(response.status());
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, Counted::response(body, self).boxed_unsync())
    }

    /// MCA's own answer: a `Status` response, logged as a failure.
    pub fn answer(mut self, status: Status) -> Response<ResponseBody> {
        self.fail(status.message.clone());
        let response: Response<Full<Bytes>> = status.into_response();
        self.respond(response.map(|body| body.map_err(|never| match never {})))
    }
}

/// The response body that carries the context counts what it sends to the client into it.
impl Tally for RequestContext {
    fn add(&mut self, bytes: u64) {
        self.facts.bytes_out += bytes;
    }
}

impl Drop for RequestContext {
    fn drop(&mut self) {
        // No status: the client went away before MCA could answer.
        self.connection.answered = self.facts.status != 0;
        let elapsed = self.start.elapsed();
        let facts = &self.facts;
        let cluster = facts.cluster.as_deref().unwrap_or("");
        self.metrics.ended(&metrics::Ended {
            info: &facts.info,
            cluster: if facts.merged { "*" } else { cluster },
            code: facts.status,
            elapsed,
            bytes_in: facts.bytes_in.total(),
            bytes_out: facts.bytes_out,
        });
        self.span.record("cluster", cluster);
        self.span.record("status", facts.status);
        access_log::write(facts, elapsed, &self.trace);
    }
}
