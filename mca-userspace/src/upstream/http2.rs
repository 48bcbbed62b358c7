//! Requests over HTTP/2 with the `h2` crate directly, rather than through hyper's client.
//!
//! hyper hides the one number the pool needs: how many concurrent streams the server allows on
//! a connection (`SETTINGS_MAX_CONCURRENT_STREAMS`, which kube-apiserver sets to 100). When a
//! connection is full hyper queues requests behind the busy streams, which for watches means
//! forever. `h2` reports the current limit, so the pool can open another connection instead,
//! as Go's HTTP/2 transport does. What hyper otherwise provides is here: streaming the request
//! body under flow control and handing out the response body while releasing window as the
//! client reads, so a slow client slows its own stream, not the connection.

use std::{
    future::poll_fn,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream, client::SendRequest};
use http::{HeaderMap, Request, Response, Version, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::{
    UpstreamBody,
    connect::{Driver, Socket},
    pool::KeepAlive,
};

/// Streams a connection may carry until the server's SETTINGS say otherwise: what Go's
/// transport and hyper assume (RFC 9113 would allow unlimited, which a server with a lower
/// limit answers with `REFUSED_STREAM`).
const INITIAL_MAX_STREAMS: usize = 100;
/// Flow-control window per stream: hyper's client default, large enough for a LIST to stream
/// at full speed over a long link.
const STREAM_WINDOW: u32 = 2 << 20;
/// Window per connection, several streams' worth, so a few slow readers cannot stall every
/// other stream on the connection.
const CONNECTION_WINDOW: u32 = 16 << 20;

/// Resolves once the server's first SETTINGS (and so its stream limit) are in effect.
pub type Settled = Pin<Box<dyn Future<Output = Result<(), h2::Error>> + Send>>;

/// Starts HTTP/2 on a connected socket. The returned driver must be spawned; it ends when the
/// connection closes (after the last handle to it is dropped, when the server closes it, or
/// when a keep-alive PING goes unanswered).
///
/// Until the server's SETTINGS arrive the connection's stream limit is a guess, and a stream
/// opened beyond the real limit is either refused or, worse, queued by `h2` behind streams
/// that may be watches. `settled` tells when the guess is over: a PING goes out right after
/// the preface, the server sends its SETTINGS before anything else, and `h2` applies them
/// before it reads the PING's answer.
pub async fn handshake(
    socket: Socket,
    keep_alive: KeepAlive,
) -> Result<(SendRequest<Bytes>, Driver, Settled), h2::Error> {
    let (send, mut connection) = h2::client::Builder::new()
        .initial_max_send_streams(INITIAL_MAX_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .enable_push(false)
        .max_header_list_size(super::MAX_RESPONSE_HEADER_BYTES as u32)
        .handshake(socket)
        .await?;
    let ping = connection
        .ping_pong()
        .expect("a new connection's ping handle is unclaimed");
    let (settled_tx, settled_rx) = tokio::sync::oneshot::channel();
    let driver = Box::pin(async move {
        tokio::select! {
            ended = connection => if let Err(error) = ended {
                tracing::debug!(%error, "HTTP/2 connection to the API server failed");
            },
            () = pings(ping, settled_tx, keep_alive) => {}
        }
    });
    let settled = Box::pin(async move {
        settled_rx
            .await
            .unwrap_or_else(|_| Err(h2::Reason::CANCEL.into()))
    });
    Ok((send, driver, settled))
}

/// The settling PING, then keep-alive PINGs; returns (closing the connection) when one is not
/// answered in time. A failed PING means the connection failed, which ends it anyway.
async fn pings(
    mut ping: h2::PingPong,
    settled: tokio::sync::oneshot::Sender<Result<(), h2::Error>>,
    keep_alive: KeepAlive,
) {
    let first = ping.ping(h2::Ping::opaque()).await.map(drop);
    let failed = first.is_err();
    let _ = settled.send(first);
    if failed {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(keep_alive.interval).await;
        match tokio::time::timeout(keep_alive.timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => {
                tracing::warn!(
                    timeout = ?keep_alive.timeout,
                    "the API server did not answer a PING in time; closing the connection"
                );
                return;
            }
        }
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// The connection was gone before anything was sent; the body comes back for another try.
    NotSent(h2::Error, UpstreamBody),
    /// The server did not process the request (`REFUSED_STREAM`, or a `GOAWAY` below its
    /// stream): another connection may take it if its body can be sent again.
    Unprocessed(h2::Error),
    /// Anything else: the request may have had effects.
    Failed(h2::Error),
}

impl SendError {
    fn after_sending(error: h2::Error) -> Self {
        let unprocessed = error.reason() == Some(Reason::REFUSED_STREAM)
            || (error.is_go_away() && error.is_remote());
        if unprocessed {
            Self::Unprocessed(error)
        } else {
            Self::Failed(error)
        }
    }
}

/// The request head as HTTP/2 sends it, built afresh for each attempt (h2 consumes it).
pub fn head(parts: &http::request::Parts) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = Version::HTTP_2;
    *head.headers_mut() = parts.headers.clone();
    strip_connection_headers(head.headers_mut());
    head
}

/// Sends a request as a new stream; `lease` is held until both the request body is sent and
/// the response body is dropped, which is when the stream is over.
pub async fn send<L: Send + Sync + 'static>(
    send: SendRequest<Bytes>,
    head: Request<()>,
    body: UpstreamBody,
    lease: L,
) -> Result<Response<RecvBody>, SendError> {
    let end_of_stream = body.is_end_stream();
    let mut send = match send.ready().await {
        Ok(send) => send,
        Err(error) => return Err(SendError::NotSent(error, body)),
    };
    let (response, stream) = match send.send_request(head, end_of_stream) {
        Ok(sent) => sent,
        Err(error) => return Err(SendError::NotSent(error, body)),
    };
    let lease = Arc::new(lease);
    if !end_of_stream {
        let lease = Arc::clone(&lease);
        tokio::spawn(async move {
            if let Err(error) = pipe(body, stream).await {
                tracing::debug!(%error, "request body to the API server ended early");
            }
            drop(lease);
        });
    }
    let response = response.await.map_err(SendError::after_sending)?;
    Ok(response.map(|recv| RecvBody {
        recv,
        data_done: false,
        _lease: lease,
    }))
}

/// Removes what HTTP/2 forbids (RFC 9113 §8.2.2). The proxy already drops hop-by-hop headers;
/// this keeps a stray one from failing the whole request in `h2`.
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::HOST,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        http::HeaderName::from_static("keep-alive"),
        http::HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
    }
}

/// Copies the request body into the stream under the server's flow control, stopping when the
/// server resets the stream (it answered without reading the rest, or gave up).
async fn pipe(mut body: UpstreamBody, mut stream: SendStream<Bytes>) -> Result<(), h2::Error> {
    loop {
        let frame = tokio::select! {
            reset = poll_fn(|cx| stream.poll_reset(cx)) => return Err(reset?.into()),
            frame = body.frame() => frame,
        };
        let frame = match frame {
            None => return stream.send_data(Bytes::new(), true),
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                tracing::debug!(%error, "reading the client's request body failed");
                stream.send_reset(Reason::CANCEL);
                return Ok(());
            }
        };
        match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                if !data.is_empty() {
                    // Claim a little window, not the whole chunk, so a waiting stream does not
                    // pin connection window other streams need; h2 raises the claim itself.
                    stream.reserve_capacity(1);
                    poll_fn(|cx| poll_capacity(&mut stream, cx)).await?;
                }
                stream.send_data(data, end)?;
                if end {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    stream.reserve_capacity(0);
                    return stream.send_trailers(trailers);
                }
            }
        }
    }
}

/// Ready once the stream has some send window, or with an error once it was reset.
fn poll_capacity(
    stream: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), h2::Error>> {
    loop {
        if let Poll::Ready(reset) = stream.poll_reset(cx) {
            return Poll::Ready(Err(reset?.into()));
        }
        if stream.capacity() > 0 {
            return Poll::Ready(Ok(()));
        }
        match ready!(stream.poll_capacity(cx)) {
            Some(Ok(_)) => {}
            Some(Err(error)) => return Poll::Ready(Err(error)),
            None => return Poll::Ready(Err(Reason::STREAM_CLOSED.into())),
        }
    }
}

/// A response body from an HTTP/2 stream. Window is given back as data is read, so the server
/// sends only as fast as MCA's client takes it.
pub struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    _lease: Arc<dyn Send + Sync>,
}

impl std::fmt::Debug for RecvBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBody")
            .field("data_done", &self.data_done)
            .finish_non_exhaustive()
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
