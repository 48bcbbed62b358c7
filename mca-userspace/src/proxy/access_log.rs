//! One structured line per request, written when the exchange is over (see
//! [`RequestContext`](super::context::RequestContext)): what the request did, where it went,
//! how it ended, in the order an operator reads it.

use std::time::Duration;

use http::Version;

use super::context::Facts;
use crate::{
    telemetry::access::{
        self,
        Value::{Number, Quoted, Raw},
    },
    trace_context::TraceContext,
};

/// Writes the line of a request that ended after `elapsed`, in `trace`.
pub fn write(facts: &Facts, elapsed: Duration, trace: &TraceContext) {
    if !access::enabled() {
        return;
    }
    let info = &facts.info;
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let http = version(facts.version);
    let stripped = facts.stripped.joined();
    let original = facts
        .original_destination
        .map(|a| a.to_string())
        .unwrap_or_default();
    let trace_id = trace.trace_id_hex();
    access::write(
        "request",
        &[
            ("verb", Raw(info.verb())),
            ("group", Raw(info.api_group())),
            ("version", Raw(info.api_version())),
            ("resource", Raw(info.resource())),
            ("subresource", Raw(info.subresource())),
            ("namespace", Raw(info.namespace())),
            ("name", Raw(info.name())),
            ("path", Raw(info.path())),
            ("method", Raw(facts.method.as_str())),
            ("http", Raw(http)),
            ("status", Number(facts.status.into())),
            ("latency_us", Number(latency_us)),
            ("bytes_in", Number(facts.bytes_in.total())),
            ("bytes_out", Number(facts.bytes_out)),
            ("stripped", Raw(&stripped)),
            ("original_dst", Raw(&original)),
            ("route", Quoted(facts.route.as_deref().unwrap_or(""))),
            ("cluster", Quoted(facts.cluster.as_deref().unwrap_or(""))),
            ("error", Quoted(facts.error.as_deref().unwrap_or(""))),
            ("note", Quoted(facts.note.unwrap_or(""))),
            ("trace_id", Raw(trace_id.as_str())),
        ],
    );
}

/// The HTTP version as the line prints it (as `http::Version`'s `Debug` spells it).
fn version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "",
    }
}
