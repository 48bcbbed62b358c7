//! One request through MCA, stage by stage, each a step of [`Proxy::serve_request`]:
//!
//! 1. read the target ([`target`]: a `/clusters/<name>/` prefix, the request info) and start
//!    the request's [context](RequestContext), its span and trace;
//! 2. authenticate the client (MCA's own token) and strip its credentials;
//! 3. refuse a path MCA cannot route by as the API server reads it;
//! 4. inject MCA's hop into the trace headers;
//! 5. admit: the connection's cancel budget, the in-flight budgets, the deadline;
//! 6. put the request in the form it goes upstream in (origin form, no hop-by-hop headers);
//! 7. route ([`dispatch`]), recorded in the context in one call;
//! 8. send: merged discovery, a fan-out, an upgrade tunnel, or one cluster ([`forward`]).
//!
//! Any stage may answer instead, with a Kubernetes `Status`; the context ends the exchange
//! when the response body (or the tunnel) is done.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::Instrument as _;

use super::{
    Proxy, ResponseBody,
    context::RequestContext,
    counted::Counted,
    discovery,
    dispatch::{self, To},
    forward, headers, target, upgrade,
};
use crate::{
    limits::{connection::Active, deadline::Deadline},
    metrics::LongRunning,
    reqinfo::{PathError, RequestInfo},
    status::{Reason, Status},
    upstream::RequestClass,
};

impl Proxy {
    /// Serves one request; `original` is the address the client dialled if eBPF redirected it.
    /// Everything it does runs in the request's span, which ends with the exchange.
    pub(super) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        original: Option<SocketAddr>,
        active: Active,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str())
            .to_owned();
        // `/clusters/<name>/...` picks the cluster itself; the rest is the request.
        let (explicit, rest) = match target::cluster_prefix(&target) {
            Some((name, rest)) => (Some(name), Some(rest)),
            None => (None, None),
        };
        let routed_target = rest.as_deref().unwrap_or(&target);
        let (info, unreadable) =
            match RequestInfo::from_target(request.method().as_str(), routed_target) {
                Ok(info) => (info, None),
                // Logged under the raw path; refused below.
                Err(error) => (
                    RequestInfo::parse(request.method().as_str(), routed_target),
                    Some(error),
                ),
            };
        let context =
            RequestContext::start(info, &request, original, active, Arc::clone(&self.metrics));
        let span = context.span().clone();
        let explicit = explicit.map(|name| (name, routed_target));
        let response = self
            .serve_request(request, explicit, unreadable, context)
            .instrument(span)
            .await;
        Ok(response)
    }

    /// Serves a request whose context is started. `explicit` is the cluster a
    /// `/clusters/<name>/` prefix named and the target without the prefix.
    async fn serve_request(
        &self,
        mut request: Request<Incoming>,
        explicit: Option<(&str, &str)>,
        unreadable: Option<PathError>,
        mut context: RequestContext,
    ) -> Response<ResponseBody> {
        if let Err(status) = self.authenticate(&mut request, &mut context) {
            return context.answer(status);
        }
        if let Some(error) = unreadable {
            let message = format!("{error}: MCA routes by the path as the API server reads it");
            return context.answer(Status::new(
                StatusCode::BAD_REQUEST,
                Reason::BadRequest,
                message,
            ));
        }
        context.trace().inject(request.headers_mut());
        if let Err(status) = self.admit(&mut request, &mut context) {
            return context.answer(status);
        }
        let upgrade = headers::is_upgrade(request.headers());
        let class = if context.info().is_long_running() {
            let kind = match context.info().verb() {
                _ if upgrade => LongRunning::Tunnel,
                "watch" => LongRunning::Watch,
                _ => LongRunning::Stream,
            };
            context.long_running(self.metrics.open(kind));
            RequestClass::LongRunning
        } else {
            RequestClass::Short
        };

        let (mut head, body) = request.into_parts();
        if let Err(status) = target::to_origin_form(&mut head, explicit.map(|(_, rest)| rest)) {
            return context.answer(status);
        }
        headers::strip_hop_by_hop(&mut head.headers, upgrade);
        // One snapshot of the routing for the whole request, however long it runs.
        let routing = self.live.load();
        if explicit.is_none()
            && let Some(document) = discovery::wanted(&routing, &head, context.info())
        {
            return Box::pin(discovery::serve(&routing, &head, document, context)).await;
        }

        let body = if body.is_end_stream() {
            body.boxed_unsync()
        } else {
            Counted::new(body, context.body_counter()).boxed_unsync()
        };
        let request = Request::from_parts(head, body);
        let routed = match explicit {
            Some((name, _)) => dispatch::explicit(&routing, name).map(|routed| (routed, request)),
            None => {
                let info = context.info();
                dispatch::route(&routing, request, info, context.original_destination()).await
            }
        };
        let (routed, request) = match routed {
            Ok(routed) => routed,
            Err(status) => return context.answer(status),
        };
        context.routed(&routed.route, routed.served(&routing.clusters));
        if let Some(note) = routed.note {
            context.note(note);
        }
        // The paths other than forwarding to one cluster are boxed (merged discovery above
        // too): their futures are several KB each, and a request's future is as large as its
        // largest path and is moved into hyper's box, so inline they would cost every GET.
        match routed.to {
            To::Unavailable => context.answer(routed.unavailable()),
            To::FanOut(clusters) => {
                Box::pin(forward::fan_out(
                    &routing.clusters,
                    &routed.route,
                    &clusters,
                    request,
                    context,
                ))
                .await
            }
            To::One { cluster, .. } if upgrade => {
                let cluster = routing.clusters.get(cluster);
                Box::pin(upgrade::forward(cluster, &self.tunnels, request, context)).await
            }
            To::One { cluster, fallback } => {
                forward::one(
                    &routing.clusters,
                    cluster,
                    fallback,
                    request,
                    class,
                    context,
                )
                .await
            }
        }
    }

    /// Checks MCA's own client token (unless `--client-auth=none`) and strips every client
    /// credential, which never goes upstream whether or not it was accepted.
    fn authenticate(
        &self,
        request: &mut Request<Incoming>,
        context: &mut RequestContext,
    ) -> Result<(), Status> {
        let admitted = match &self.client_auth {
            Some(auth) => auth.check(request.headers()),
            None => Ok(()),
        };
        context.stripped(headers::strip_credentials(request.headers_mut()));
        admitted.map_err(|refused| {
            Status::new(
                StatusCode::UNAUTHORIZED,
                Reason::Unauthorized,
                format!("Unauthorized: {refused}"),
            )
        })
    }

    /// MCA's own limits on a request it is about to serve: nothing more from a connection that
    /// spent its cancel budget, the in-flight budgets (the slot is held by the context until
    /// the exchange is over), and the deadline, stamped on the request for the upstream client
    /// to enforce.
    fn admit(
        &self,
        request: &mut Request<Incoming>,
        context: &mut RequestContext,
    ) -> Result<(), Status> {
        if context.connection_closing() {
            return Err(Status::new(
                StatusCode::TOO_MANY_REQUESTS,
                Reason::TooManyRequests,
                "this connection cancelled more requests than MCA allows and is being closed",
            ));
        }
        context.hold(self.in_flight.admit(context.info())?);
        let limit = self.limits.request_timeout;
        if let Some(deadline) = Deadline::for_request(context.info(), request.uri().query(), limit)
        {
            request.extensions_mut().insert(deadline);
        }
        Ok(())
    }
}
