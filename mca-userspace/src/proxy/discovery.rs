//! Serving a discovery request from every healthy cluster at once, merged (see
//! [`crate::discovery`]).

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::{
    ResponseBody,
    context::{RequestContext, Served},
};
use crate::{
    cluster::Registry,
    discovery::{self, AGGREGATED, Document},
    reload::Routing,
    reqinfo::RequestInfo,
    route::{ClusterId, ClusterView},
    status::{Reason, Status},
    upstream::{UpstreamBody, copy_head},
};

/// The route name logged for merged discovery.
static DISCOVERY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("discovery"));

/// A cluster has this long to answer; discovery must not hang on one slow cluster.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest discovery document read (a big cluster's aggregated `/apis` is a few MiB).
const LIMIT: usize = 32 << 20;

/// One cluster's answer: its content type and document, or why there is none.
type Answer = Result<(String, Value), (StatusCode, String)>;

/// The discovery document a request asks for, when the routing merges discovery.
pub fn wanted(
    routing: &Routing,
    head: &http::request::Parts,
    info: &RequestInfo,
) -> Option<Document> {
    if !routing.merged_discovery || head.method != http::Method::GET {
        return None;
    }
    Document::of(info.path())
}

/// Serves `head` (a `GET` of `document`) merged from every healthy cluster, the default
/// route's first.
pub async fn serve(
    routing: &Routing,
    head: &http::request::Parts,
    document: Document,
    mut context: RequestContext,
) -> Response<ResponseBody> {
    let registry = &*routing.clusters;
    let mut order: Vec<ClusterId> = routing.router.default_target().clusters().collect();
    for id in 0..registry.iter().count() {
        if !order.contains(&id) {
            order.push(id);
        }
    }
    order.retain(|&id| registry.healthy(id));
    let names = order.iter().map(|&id| Arc::clone(registry.get(id).name()));
    context.routed(&DISCOVERY, Served::Merged(names.collect()));
    merged(registry, &order, head, document, context).await
}

/// Answers `head` (a `GET` of `document`) with the merge of what `clusters` (ids, in merge
/// order) answer.
async fn merged(
    registry: &Registry,
    clusters: &[ClusterId],
    head: &http::request::Parts,
    document: Document,
    context: RequestContext,
) -> Response<ResponseBody> {
    let accept = head
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let aggregated = document.may_be_aggregated() && discovery::wants_aggregated(accept);
    let mut answers = fetch(registry, clusters, head, accept).await;
    let all_aggregated = answers.iter().all(|(_, a)| {
        a.as_ref()
            .is_ok_and(|(kind, _)| discovery::is_aggregated(kind))
    });
    if aggregated && !all_aggregated {
        // Some cluster speaks only the legacy format: merge that, which every client reads.
        answers = fetch(registry, clusters, head, "application/json").await;
    }
    let aggregated = aggregated && all_aggregated;

    let mut documents = Vec::new();
    let mut missing = Vec::new();
    for (id, answer) in answers {
        match answer {
            Ok((_, document)) => documents.push(document),
            Err(why) => missing.push((id, why)),
        }
    }
    if documents.is_empty() {
        // Every cluster said "no such group" (404), or none could answer (503).
        let not_found = missing
            .iter()
            .all(|(_, (code, _))| *code == StatusCode::NOT_FOUND);
        let reasons: Vec<String> = missing
            .iter()
            .map(|(id, (_, why))| format!("{}: {why}", registry.get(*id).name()))
            .collect();
        let status = if not_found {
            Status::new(
                StatusCode::NOT_FOUND,
                Reason::NotFound,
                format!("no cluster serves {}", head.uri.path()),
            )
        } else {
            Status::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::ServiceUnavailable,
                format!("no cluster answered discovery: {}", reasons.join("; ")),
            )
        };
        return context.answer(status);
    }
    let merged = discovery::merge(document, aggregated, documents);
    let mut response = Response::new(Full::new(Bytes::from(merged.to_string())));
    let content_type = if aggregated {
        AGGREGATED
    } else {
        "application/json"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (id, (code, why)) in &missing {
        // A cluster lacking a group is normal; one that failed is worth a warning.
        if *code != StatusCode::NOT_FOUND {
            let warning = format!(
                "299 - \"discovery is missing cluster {}: {}\"",
                registry.get(*id).name(),
                why.replace('"', "'")
            );
            if let Ok(value) = HeaderValue::from_str(&warning) {
                response.headers_mut().append(header::WARNING, value);
            }
        }
    }
    context.respond(response.map(|body| body.map_err(|never| match never {})))
}

/// Asks every cluster at once, with `accept`.
async fn fetch(
    registry: &Registry,
    clusters: &[ClusterId],
    head: &http::request::Parts,
    accept: &str,
) -> Vec<(ClusterId, Answer)> {
    let asks = clusters.iter().map(|&id| async move {
        let cluster = registry.get(id);
        let mut parts = copy_head(head);
        // Merging needs the documents uncompressed.
        parts.headers.remove(header::ACCEPT_ENCODING);
        if let Ok(accept) = HeaderValue::from_str(accept) {
            parts.headers.insert(header::ACCEPT, accept);
        }
        let request = Request::from_parts(parts, UpstreamBody::default());
        let answer = cluster.read_json(request, LIMIT, TIMEOUT).await;
        (id, answer)
    });
    join_all(asks).await
}
