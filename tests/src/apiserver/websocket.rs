//! Server side of the WebSocket upgrade, as the API server answers it.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};

use super::{Body, status};

/// A `101 Switching Protocols` to `protocol`.
pub fn switching_protocols(protocol: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static(protocol));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response
}

/// A response refusing an upgrade.
pub type Refusal = Box<Response<Body>>;

/// An upgraded WebSocket connection.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Whether the request is a WebSocket upgrade.
pub fn is_websocket(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Accepts a WebSocket upgrade choosing the first of the client's subprotocols that is in
/// `supported`. Returns the 101 response, the chosen protocol and the pending upgrade, or the
/// refusal to send instead.
pub fn accept(
    request: &mut Request<Incoming>,
    supported: &[&str],
) -> Result<(Response<Body>, String, OnUpgrade), Refusal> {
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| {
            status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "missing Sec-WebSocket-Key",
            )
        })?;
    let accept_key = derive_accept_key(key.as_bytes());
    let offered: Vec<String> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let protocol = offered
        .into_iter()
        .find(|p| supported.contains(&p.as_str()))
        .ok_or_else(|| {
            status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "no supported WebSocket subprotocol",
            )
        })?;
    let on_upgrade = hyper::upgrade::on(request);
    let mut response = switching_protocols("websocket");
    let headers = response.headers_mut();
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        accept_key.parse().expect("base64 is a header value"),
    );
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        protocol.parse().expect("offered as a header value"),
    );
    Ok((response, protocol, on_upgrade))
}

/// Completes the upgrade into a WebSocket.
pub async fn open(on_upgrade: OnUpgrade) -> Option<Socket> {
    let upgraded = on_upgrade.await.ok()?;
    Some(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await)
}

/// Turns a WebSocket into a byte stream: binary messages in are bytes read, each write is a
/// binary message out. This is how kubectl tunnels SPDY through a WebSocket.
pub fn into_byte_stream(socket: Socket) -> DuplexStream {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let (mut sink, mut stream) = socket.split();
        let mut buf = vec![0u8; 1 << 15];
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(Message::Binary(data))) => {
                        if theirs.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                read = theirs.read(&mut buf) => match read {
                    Ok(0) | Err(_) => {
                        let _ = sink.send(Message::Close(None)).await;
                        break;
                    }
                    Ok(n) => {
                        if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
    });
    ours
}
