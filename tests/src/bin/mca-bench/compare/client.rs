//! Connections to a target as a Kubernetes client makes them: TLS verified with the target's
//! CA (or plain TCP to `kubectl proxy`), HTTP/2 where the client would use it.

use std::{pin::Pin, sync::Arc};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper::{Response, body::Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::servers::Target;

/// A byte stream to a target.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Connects to `target`, offering HTTP/2 when `h2` and the target speaks TLS.
pub async fn stream(target: &Target, h2: bool) -> anyhow::Result<(Pin<Box<dyn Stream>>, bool)> {
    let tcp = tokio::net::TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let Some(ca) = &target.ca else {
        return Ok((Box::pin(tcp), false));
    };
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let config = mca_tests::client::tls_config(&std::fs::read_to_string(ca)?, alpn)?;
    let name = ServerName::try_from(target.addr.ip().to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok((Box::pin(tls), negotiated_h2))
}

/// An HTTP connection to a target.
pub enum Connection {
    /// HTTP/1.1: one request at a time.
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    /// HTTP/2: many streams.
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Connection {
    /// Opens one, HTTP/2 when `h2` and the target agrees.
    pub async fn open(target: &Target, h2: bool) -> anyhow::Result<Self> {
        let (io, h2) = stream(target, h2).await?;
        let io = TokioIo::new(io);
        Ok(if h2 {
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(1 << 20)
                    .handshake(io)
                    .await?;
            tokio::spawn(connection);
            Self::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            Self::Http1(sender)
        })
    }

    /// Another handle on an HTTP/2 connection, for a concurrent stream; `None` for HTTP/1.1.
    pub fn stream(&self) -> Option<Self> {
        match self {
            Self::Http1(_) => None,
            Self::Http2(sender) => Some(Self::Http2(sender.clone())),
        }
    }

    /// `GET path` with the target's token, if any.
    pub async fn get(&mut self, target: &Target, path: &str) -> anyhow::Result<Response<Incoming>> {
        let mut request = Request::get(target.url(path));
        if let Some(token) = &target.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        Ok(match self {
            Self::Http1(sender) => {
                let request = request
                    .uri(path)
                    .header("host", target.addr.to_string())
                    .body(Empty::new())?;
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Self::Http2(sender) => sender.send_request(request.body(Empty::new())?).await?,
        })
    }
}
