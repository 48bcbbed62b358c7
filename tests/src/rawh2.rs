//! HTTP/2 spoken in frames directly, for what no HTTP/2 library does on purpose.
//!
//! [`RawH2Server`]: a scripted server that lowers `SETTINGS_MAX_CONCURRENT_STREAMS` on a live
//! connection or refuses a stream with `REFUSED_STREAM`. It answers every request with `200`
//! headers and keeps the stream open, as a watch does. Responses use only the static HPACK
//! entry for `:status: 200`, so no header decoding is needed; request headers are not read.
//!
//! [`RawH2Client`]: a client that opens streams and resets them at once, thousands of times
//! (HTTP/2 rapid reset, CVE-2023-44487), and reports how the server ended the connection.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use rcgen::{CertificateParams, IsCa, KeyPair};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf},
    sync::mpsc,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const REFUSED_STREAM: u32 = 0x7;
/// HPACK: the static table's `:status: 200`.
const STATUS_200: u8 = 0x88;

/// What one connection has seen.
#[derive(Debug, Default, Clone)]
pub struct Connection {
    /// Streams the client opened (HEADERS received), refused ones included.
    pub streams: u32,
    /// SETTINGS frames of the server's that the client acknowledged.
    pub settings_acks: u32,
    /// PINGs the client sent (and the server answered).
    pub pings: u32,
    sender: Option<mpsc::UnboundedSender<Bytes>>,
}

/// The server; it stops when dropped.
pub struct RawH2Server {
    addr: SocketAddr,
    ca_pem: String,
    connections: Arc<Mutex<Vec<Connection>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawH2Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawH2Server {
    /// Listens on loopback, announcing `max_streams` on each new connection and refusing the
    /// first `refuse` streams of the first connection.
    pub async fn start(max_streams: u32, refuse: u32) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (ca_pem, tls) = tls(addr)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, shared) = (acceptor.clone(), Arc::clone(&shared));
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, shared, max_streams, refuse).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            ca_pem,
            connections,
            task,
        })
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA that signed the server's certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// What each connection has seen, in the order they were accepted.
    pub fn connections(&self) -> Vec<Connection> {
        self.connections.lock().unwrap().clone()
    }

    /// Sends `SETTINGS_MAX_CONCURRENT_STREAMS = max_streams` on connection `index`.
    pub fn announce(&self, index: usize, max_streams: u32) -> anyhow::Result<()> {
        let connections = self.connections.lock().unwrap();
        let sender = connections
            .get(index)
            .and_then(|c| c.sender.clone())
            .context("no such connection")?;
        sender
            .send(settings(max_streams))
            .ok()
            .context("the connection is closed")
    }
}

async fn serve(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    connections: Arc<Mutex<Vec<Connection>>>,
    max_streams: u32,
    refuse: u32,
) -> anyhow::Result<()> {
    let (mut read, mut write) = tokio::io::split(tls);
    let mut preface = [0; PREFACE.len()];
    read.read_exact(&mut preface).await?;
    anyhow::ensure!(preface == PREFACE, "not an HTTP/2 client");
    let (sender, mut outgoing) = mpsc::unbounded_channel::<Bytes>();
    let index = {
        let mut connections = connections.lock().unwrap();
        connections.push(Connection {
            sender: Some(sender.clone()),
            ..Connection::default()
        });
        connections.len() - 1
    };
    let mut refuse = if index == 0 { refuse } else { 0 };
    sender.send(settings(max_streams))?;
    tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if write.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    loop {
        let mut head = [0; 9];
        read.read_exact(&mut head).await?;
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; length];
        read.read_exact(&mut payload).await?;
        let seen = |change: &dyn Fn(&mut Connection)| {
            change(&mut connections.lock().unwrap()[index]);
        };
        match kind {
            SETTINGS if flags & ACK != 0 => seen(&|c| c.settings_acks += 1),
            SETTINGS => sender.send(frame(SETTINGS, ACK, 0, &[]))?,
            PING if flags & ACK == 0 => {
                seen(&|c| c.pings += 1);
                sender.send(frame(PING, ACK, 0, &payload))?;
            }
            HEADERS => {
                seen(&|c| c.streams += 1);
                if refuse > 0 {
                    refuse -= 1;
                    sender.send(frame(RST_STREAM, 0, stream, &REFUSED_STREAM.to_be_bytes()))?;
                } else {
                    sender.send(frame(HEADERS, END_HEADERS, stream, &[STATUS_200]))?;
                }
            }
            GOAWAY => return Ok(()),
            _ => {}
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(9 + payload.len());
    frame.put_uint(payload.len() as u64, 3);
    frame.put_u8(kind);
    frame.put_u8(flags);
    frame.put_u32(stream);
    frame.put_slice(payload);
    frame.freeze()
}

fn settings(max_streams: u32) -> Bytes {
    let mut payload = BytesMut::with_capacity(6);
    payload.put_u16(MAX_CONCURRENT_STREAMS);
    payload.put_u32(max_streams);
    frame(SETTINGS, 0, 0, &payload)
}

/// A CA and a serving certificate for `addr`, offering only `h2`.
fn tls(addr: SocketAddr) -> anyhow::Result<(String, rustls::ServerConfig)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(addr.ip()));
    let cert = params.signed_by(&key, &issuer)?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((ca_cert.pem(), config))
}

/// How the server treated a [`RawH2Client`]'s connection so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientSeen {
    /// Response HEADERS frames received.
    pub responses: u32,
    /// The error code of the server's GOAWAY, if it sent one.
    pub goaway: Option<u32>,
    /// The connection is closed (end of stream or an error reading it).
    pub closed: bool,
}

/// A client writing frames itself.
pub struct RawH2Client<S> {
    write: Arc<tokio::sync::Mutex<WriteHalf<S>>>,
    seen: Arc<Mutex<ClientSeen>>,
    reader: tokio::task::JoinHandle<()>,
}

impl<S> Drop for RawH2Client<S> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> RawH2Client<S> {
    /// Sends the preface and empty SETTINGS on `stream` (TLS with ALPN `h2` already agreed),
    /// and reads what the server sends from then on, acknowledging its SETTINGS and PINGs.
    pub async fn start(stream: S) -> anyhow::Result<Self> {
        let (mut read, write) = tokio::io::split(stream);
        let write = Arc::new(tokio::sync::Mutex::new(write));
        {
            let mut write = write.lock().await;
            write.write_all(PREFACE).await?;
            write.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
        }
        let seen = Arc::new(Mutex::new(ClientSeen::default()));
        let reader = tokio::spawn({
            let (write, seen) = (Arc::clone(&write), Arc::clone(&seen));
            async move {
                loop {
                    let mut head = [0; 9];
                    if read.read_exact(&mut head).await.is_err() {
                        break;
                    }
                    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let mut payload = vec![0; length];
                    if read.read_exact(&mut payload).await.is_err() {
                        break;
                    }
                    match (head[3], head[4]) {
                        (SETTINGS, flags) if flags & ACK == 0 => {
                            let ack = frame(SETTINGS, ACK, 0, &[]);
                            if write.lock().await.write_all(&ack).await.is_err() {
                                break;
                            }
                        }
                        (PING, flags) if flags & ACK == 0 => {
                            let pong = frame(PING, ACK, 0, &payload);
                            if write.lock().await.write_all(&pong).await.is_err() {
                                break;
                            }
                        }
                        (HEADERS, _) => seen.lock().unwrap().responses += 1,
                        (GOAWAY, _) if payload.len() >= 8 => {
                            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                            seen.lock().unwrap().goaway = Some(code);
                        }
                        _ => {}
                    }
                }
                seen.lock().unwrap().closed = true;
            }
        });
        Ok(Self {
            write,
            seen,
            reader,
        })
    }

    /// Writes frames; fails once the server has closed the connection.
    pub async fn send(&self, frames: &[u8]) -> std::io::Result<()> {
        let mut write = self.write.lock().await;
        write.write_all(frames).await?;
        write.flush().await
    }

    /// What the server did so far.
    pub fn seen(&self) -> ClientSeen {
        *self.seen.lock().unwrap()
    }
}

/// The HEADERS frame of a request without a body on stream `id` (odd, increasing).
pub fn request_frame(id: u32, headers: &[(&str, &str)]) -> Bytes {
    let mut block = BytesMut::new();
    for (name, value) in headers {
        // Literal header field without indexing, new name, no Huffman coding.
        block.put_u8(0);
        hpack_string(&mut block, name);
        hpack_string(&mut block, value);
    }
    frame(HEADERS, END_STREAM | END_HEADERS, id, &block)
}

/// The start of a header block on stream `id` that never ends: a HEADERS frame without
/// END_HEADERS whose literal header announces a value of `length` bytes. Send it on with
/// [`continuation_frame`]s (a CONTINUATION flood, CVE-2024-27316 class).
pub fn endless_headers_frame(id: u32, length: usize) -> Bytes {
    let mut block = BytesMut::new();
    block.put_u8(0);
    hpack_string(&mut block, "x-flood");
    // The value's length prefix alone: its bytes follow in CONTINUATION frames.
    hpack_length(&mut block, length);
    frame(HEADERS, END_STREAM, id, &block)
}

/// A CONTINUATION frame of `payload` on stream `id`, not the last.
pub fn continuation_frame(id: u32, payload: &[u8]) -> Bytes {
    frame(CONTINUATION, 0, id, payload)
}

/// The RST_STREAM frame cancelling stream `id`.
pub fn reset_frame(id: u32) -> Bytes {
    frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes())
}

/// An HPACK string literal: a 7-bit-prefix length, no Huffman coding.
fn hpack_string(out: &mut BytesMut, text: &str) {
    hpack_length(out, text.len());
    out.put_slice(text.as_bytes());
}

/// An HPACK string length: a 7-bit prefix (Huffman flag clear), then 7 bits a byte.
fn hpack_length(out: &mut BytesMut, mut length: usize) {
    if length < 0x7f {
        out.put_u8(length as u8);
        return;
    }
    out.put_u8(0x7f);
    length -= 0x7f;
    while length >= 0x80 {
        out.put_u8((length % 0x80) as u8 | 0x80);
        length /= 0x80;
    }
    out.put_u8(length as u8);
}
