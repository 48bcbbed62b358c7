//! Opening connections to the API server: TCP, then TLS with the cluster's trust settings and
//! an ALPN offer. (The pool bounds the whole of it by the connect timeout.)
//!
//! Every socket the pool opens carries a [`Slot`]: the pool counts a connection against its
//! bound from the moment it starts dialling until the socket is dropped, which for an upgraded
//! exec session is when the tunnel closes, long after hyper let go of the connection.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use http::Uri;
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_util::either::Either;
use tower::BoxError;

use super::Error;

/// The task that drives a connection's protocol; it ends when the connection closes.
pub type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Which HTTP versions a connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/2 if the server agrees, else HTTP/1.1: for ordinary requests.
    H2OrHttp1,
    /// HTTP/1.1 only: for `Upgrade` requests, which HTTP/2 cannot carry.
    Http1,
}

/// What the server chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2 (ALPN `h2`).
    Http2,
    /// HTTP/1.1 (ALPN `http/1.1`, no ALPN, or plain `http://`).
    Http1,
}

/// Opens connections to one API server.
pub struct Dialer {
    host: String,
    port: u16,
    /// `None` for a plain `http://` server; replaced when the client certificate is renewed.
    tls: Option<ArcSwap<Tls>>,
}

struct Tls {
    server_name: ServerName<'static>,
    h2_or_http1: TlsConnector,
    http1: TlsConnector,
}

impl Tls {
    fn new(config: &rustls::ClientConfig, server_name: ServerName<'static>) -> Self {
        let with_alpn = |protocols: &[&[u8]]| {
            let mut config = config.clone();
            config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(config))
        };
        Self {
            server_name,
            h2_or_http1: with_alpn(&[b"h2", b"http/1.1"]),
            http1: with_alpn(&[b"http/1.1"]),
        }
    }
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Dialer {
    /// A dialer for the server at `url`, verifying it with `tls` (the cluster's roots and
    /// client identity) as `server_name` when one is configured, else as the URL's host.
    pub fn new(
        url: &Uri,
        tls: rustls::ClientConfig,
        server_name: Option<&str>,
    ) -> Result<Self, Error> {
        let host = url
            .host()
            .ok_or_else(|| Error::Address(url.to_string()))?
            .trim_matches(['[', ']'])
            .to_owned();
        let plain = url.scheme_str() == Some("http");
        let port = url.port_u16().unwrap_or(if plain { 80 } else { 443 });
        let tls = if plain {
            None
        } else {
            let name = server_name.unwrap_or(&host);
            let server_name = ServerName::try_from(name.to_owned())
                .map_err(|_| Error::Address(name.to_owned()))?;
            Some(ArcSwap::from_pointee(Tls::new(&tls, server_name)))
        };
        Ok(Self { host, port, tls })
    }

    /// Uses `config` (the same server, a renewed client identity) for the next connections.
    pub fn renew_tls(&self, config: rustls::ClientConfig) {
        if let Some(tls) = &self.tls {
            let server_name = tls.load().server_name.clone();
            tls.store(Arc::new(Tls::new(&config, server_name)));
        }
    }

    /// Connects and completes TLS; `slot` travels with the socket.
    pub async fn dial(&self, alpn: Alpn, slot: Slot) -> Result<(Socket, Protocol), BoxError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = self.tls.as_ref().map(ArcSwap::load_full) else {
            let socket = Socket {
                io: Either::Left(tcp),
                _slot: slot,
            };
            return Ok((socket, Protocol::Http1));
        };
        let connector = match alpn {
            Alpn::H2OrHttp1 => &tls.h2_or_http1,
            Alpn::Http1 => &tls.http1,
        };
        let stream = connector.connect(tls.server_name.clone(), tcp).await?;
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        let socket = Socket {
            io: Either::Right(stream),
            _slot: slot,
        };
        Ok((socket, protocol))
    }
}

type Io = Either<TcpStream, TlsStream<TcpStream>>;

/// A place in the pool's connection count, given back when dropped.
pub struct Slot(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Slot {
    /// A slot that calls `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self(Some(Box::new(release)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection to the API server, holding its [`Slot`] until it is closed.
    pub struct Socket {
        #[pin]
        io: Io,
        _slot: Slot,
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
