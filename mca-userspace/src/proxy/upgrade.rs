//! HTTP/1.1 upgrades: `kubectl exec`, `attach` and `port-forward` over SPDY/3.1 or WebSocket.
//!
//! MCA does not speak either protocol. It forwards the upgrade request (with its own
//! credentials, over an HTTP/1.1-only upstream connection), relays the API server's answer,
//! and, if that is `101 Switching Protocols`, splices the two upgraded connections together
//! until either side closes. Protocol negotiation (`Sec-WebSocket-Protocol`,
//! `X-Stream-Protocol-Version`) passes through untouched in both directions.

use std::{
    io::ErrorKind,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::task::TaskTracker;

use super::{ResponseBody, context::RequestContext, headers};
use crate::{
    cluster::Cluster,
    status::{Reason, Status},
    upstream::{RequestClass, UpstreamBody, failure_status},
};

/// Copies bytes both ways between the upgraded connections until either side closes,
/// counting them into the request's context.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    server: hyper::upgrade::OnUpgrade,
    context: &mut RequestContext,
) -> Result<(), String> {
    let (client, server) =
        tokio::try_join!(client, server).map_err(|error| format!("upgrade failed: {error}"))?;
    let (read, written) = context.tunnel_counters();
    let mut client = CountedIo {
        inner: TokioIo::new(client),
        read,
        written,
    };
    let mut server = TokioIo::new(server);
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok(_) => Ok(()),
        // Clients often just drop the connection (no TLS close_notify, or a reset) when a
        // session is over: that is how it ends, not a failure.
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ) =>
        {
            Ok(())
        }
        Err(error) => Err(format!("tunnel failed: {error}")),
    }
}

pin_project_lite::pin_project! {
    /// The client side of a tunnel, counting bytes each way into the request's context as they
    /// pass, so the counts are right however the tunnel ends.
    struct CountedIo<'a, T> {
        #[pin]
        inner: T,
        read: &'a mut u64,
        written: &'a mut u64,
    }
}

impl<T: AsyncRead> AsyncRead for CountedIo<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        let read = buf.filled().len() - before;
        **this.read += read as u64;
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for CountedIo<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            **this.written += *written as u64;
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Forwards an upgrade request (in origin form, its upgrade headers kept); on `101` the tunnel
/// runs on `tunnels`, counted in flight to `cluster`, and the exchange ends when it closes.
pub async fn forward(
    cluster: &Cluster,
    tunnels: &TaskTracker,
    mut request: Request<UpstreamBody>,
    mut context: RequestContext,
) -> Response<ResponseBody> {
    if request.version() != Version::HTTP_11 {
        let message = format!(
            "protocol upgrades need HTTP/1.1; this request came over {:?}",
            request.version()
        );
        return context.answer(Status::new(
            StatusCode::BAD_REQUEST,
            Reason::BadRequest,
            message,
        ));
    }
    let client_side = hyper::upgrade::on(&mut request);
    let (parts, _body) = request.into_parts();
    let request = Request::from_parts(
        parts,
        Empty::new().map_err(|never| match never {}).boxed_unsync(),
    );

    let mut response = match cluster.send(request, RequestClass::Upgrade).await {
        Ok(response) => response,
        Err(error) => return context.answer(failure_status(&error)),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The API server refused (forbidden, not found, no such container...): relay as is.
        headers::strip_hop_by_hop(response.headers_mut(), false);
        return context.respond(response);
    }

    context.responded(response.status());
    let upstream_side = hyper::upgrade::on(&mut response);
    let (parts, mut body) = response.into_parts();
    let in_flight = body.take_in_flight();
    tunnels.spawn(async move {
        if let Err(why) = splice(client_side, upstream_side, &mut context).await {
            context.fail(why);
        }
        drop(in_flight);
    });

    // Relay the 101 with its negotiation headers; hyper completes the client-side upgrade
    // once this response is written.
    Response::from_parts(
        parts,
        Empty::new().map_err(|never| match never {}).boxed_unsync(),
    )
}
