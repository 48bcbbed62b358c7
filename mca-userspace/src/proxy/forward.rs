//! Sending a routed request on and streaming the answer back: to one cluster, with a read
//! that got no answer at all sent once more to the route's fallback, or to every cluster of a
//! fan-out route at once.

use std::sync::Arc;

use http::{Request, Response};

use super::{ResponseBody, context::RequestContext, headers};
use crate::{
    cluster::Registry,
    route::ClusterId,
    upstream::{RequestClass, UpstreamBody, copy_head, failure_status},
};

/// Forwards a request to `cluster` and streams the response back. A read that got no answer
/// at all is sent once more, to `fallback` if the route has one; nothing else is ever sent
/// twice.
pub async fn one(
    registry: &Registry,
    cluster: ClusterId,
    fallback: Option<ClusterId>,
    request: Request<UpstreamBody>,
    class: RequestClass,
    mut context: RequestContext,
) -> Response<ResponseBody> {
    let (parts, body) = request.into_parts();
    let retry = fallback.map(|fallback| (fallback, copy_head(&parts)));
    let cluster = registry.get(cluster);
    let mut result = cluster.send(Request::from_parts(parts, body), class).await;
    let failure = result.as_ref().err().map(failure_status);
    if let (Some(failure), Some((fallback, parts))) = (failure, retry) {
        let next = registry.get(fallback);
        tracing::debug!(
            from = %cluster.name(),
            to = %next.name(),
            error = %failure.message,
            "retrying a read on the route's next cluster"
        );
        context.retried_on(next.name());
        let request = Request::from_parts(parts, UpstreamBody::default());
        result = next.send(request, class).await;
    }
    match result {
        Ok(mut response) => {
            headers::strip_hop_by_hop(response.headers_mut(), false);
            context.respond(response)
        }
        Err(error) => context.answer(failure_status(&error)),
    }
}

/// Serves a request on fan-out route `route` from its healthy `clusters`, merged.
pub async fn fan_out(
    registry: &Arc<Registry>,
    route: &str,
    clusters: &[ClusterId],
    request: Request<UpstreamBody>,
    context: RequestContext,
) -> Response<ResponseBody> {
    let (head, _body) = request.into_parts();
    match crate::fanout::serve(registry, clusters, route, context.info(), head).await {
        Ok(response) => context.respond(response),
        Err(status) => context.answer(status),
    }
}
