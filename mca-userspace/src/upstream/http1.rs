//! Requests over HTTP/1.1 with hyper's connection API: one request at a time per connection,
//! for servers without HTTP/2 and for `Upgrade` requests (exec, attach, port-forward).

use http::{HeaderValue, Request, Response, Version, header, uri::PathAndQuery};
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;

use super::{
    UpstreamBody,
    connect::{Driver, Socket},
};

/// A connection's request handle.
pub type Sender = http1::SendRequest<UpstreamBody>;

/// Starts HTTP/1.1 on a connected socket. The returned future drives the connection and must
/// be spawned; it ends when the connection closes or, with `upgrades`, once the socket was
/// handed to the response's upgrade.
pub async fn handshake(socket: Socket, upgrades: bool) -> Result<(Sender, Driver), hyper::Error> {
    let (sender, connection) = http1::Builder::new()
        // hyper fails a response whose head does not fit its read buffer.
        .max_buf_size(super::MAX_RESPONSE_HEADER_BYTES)
        .handshake(TokioIo::new(socket))
        .await?;
    let driver = Box::pin(async move {
        let result = if upgrades {
            connection.with_upgrades().await
        } else {
            connection.await
        };
        if let Err(error) = result {
            tracing::debug!(%error, "HTTP/1.1 connection to the API server failed");
        }
    });
    Ok((sender, driver))
}

/// Turns an absolute-form request into what an HTTP/1.1 server expects: the path in the
/// request line and the authority in `Host`.
pub fn origin_form(request: &mut Request<UpstreamBody>) {
    let uri = request.uri().clone();
    if let Some(authority) = uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = path.into();
    *request.version_mut() = Version::HTTP_11;
}

/// Sends on `sender`; when the connection turned out to be closed before the request went out,
/// the request comes back so it can go elsewhere.
pub async fn send(
    sender: &mut Sender,
    request: Request<UpstreamBody>,
) -> Result<Response<Incoming>, (hyper::Error, Option<Request<UpstreamBody>>)> {
    sender.try_send_request(request).await.map_err(|mut error| {
        let unsent = error.take_message();
        (error.into_error(), unsent)
    })
}
