//! A precise HTTPS client for tests that need to see exactly what MCA answers: it connects
//! from inside the pod, verifies MCA with the fake ServiceAccount's `ca.crt`, and offers the
//! ALPN protocols a test chooses.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

use crate::sandbox::Pod;

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One TLS connection to MCA.
pub struct Https {
    sender: Sender,
    /// The certificate MCA presented.
    pub peer_certificate: CertificateDer<'static>,
    /// The token of the fake ServiceAccount when it connected (MCA's client token).
    token: String,
}

/// TLS settings trusting only `ca_pem`, offering `alpn`.
pub fn tls_config(ca_pem: &str, alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A TCP connection to MCA from inside `pod`.
pub fn tcp(pod: &Pod) -> anyhow::Result<tokio::net::TcpStream> {
    let tcp = pod.connect(pod.mca_addr())?;
    tcp.set_nonblocking(true)?;
    Ok(tokio::net::TcpStream::from_std(tcp)?)
}

/// TLS over `tcp` to MCA as `server_name`, trusting the fake ServiceAccount's CA.
pub async fn tls(
    pod: &Pod,
    tcp: tokio::net::TcpStream,
    server_name: &str,
    alpn: &[&[u8]],
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let ca = std::fs::read_to_string(pod.fake_sa_dir().join("ca.crt"))?;
    let config = tls_config(&ca, alpn)?;
    let name = ServerName::try_from(server_name.to_owned())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS to MCA as {server_name}"))
}

impl Https {
    /// Connects to MCA in `pod` as `server_name`, trusting the fake ServiceAccount's CA.
    pub async fn connect(pod: &Pod, server_name: &str, alpn: &[&[u8]]) -> anyhow::Result<Self> {
        let token = std::fs::read_to_string(pod.fake_sa_dir().join("token"))?;
        let tls = tls(pod, tcp(pod)?, server_name, alpn).await?;
        let (_, session) = tls.get_ref();
        let peer_certificate = session
            .peer_certificates()
            .and_then(|c| c.first())
            .context("no certificate")?
            .clone()
            .into_owned();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let sender = if h2 {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection.with_upgrades());
            Sender::Http1(sender)
        };
        Ok(Self {
            sender,
            peer_certificate,
            token,
        })
    }

    /// The ServiceAccount token an in-cluster client sends: MCA's client token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `Bearer <token>`, for an `Authorization` header.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Sends a request (URI: path and query; for HTTP/2 an authority is added).
    pub async fn send(
        &mut self,
        mut request: Request<Full<Bytes>>,
    ) -> anyhow::Result<Response<Incoming>> {
        Ok(match &mut self.sender {
            Sender::Http1(sender) => {
                request
                    .headers_mut()
                    .entry(http::header::HOST)
                    .or_insert(http::HeaderValue::from_static("kubernetes.default.svc"));
                // The connection takes the next request once the last response has been read.
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                let uri = format!("https://kubernetes.default.svc{}", request.uri());
                *request.uri_mut() = uri.parse()?;
                *request.version_mut() = Version::HTTP_2;
                sender.send_request(request).await?
            }
        })
    }

    /// `GET path` with the ServiceAccount token, as an in-cluster client sends it.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Response<Incoming>> {
        let bearer = self.bearer();
        self.send(
            Request::get(path)
                .header("authorization", bearer)
                .body(Full::default())?,
        )
        .await
    }
}

/// A WebSocket upgrade request for `target` offering `protocols` (`Sec-WebSocket-Protocol`);
/// the caller adds credentials and the (empty) body.
pub fn websocket_upgrade(target: &str, protocols: &str) -> http::request::Builder {
    Request::get(target)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .header("sec-websocket-protocol", protocols)
}

/// Opens a watch and reads its first event (an existing object), so it is fully set up.
pub async fn open_watch(client: &mut Https, path: &str) -> anyhow::Result<Incoming> {
    let step = Duration::from_secs(30);
    let response = tokio::time::timeout(step, client.get(path)).await??;
    anyhow::ensure!(response.status() == 200, "watch: {}", response.status());
    let mut body = response.into_body();
    next_chunk(&mut body, step)
        .await?
        .context("the watch ended at once")?;
    Ok(body)
}

/// The whole body.
pub async fn body_bytes(response: Response<Incoming>) -> anyhow::Result<Bytes> {
    Ok(response.into_body().collect().await?.to_bytes())
}

/// The whole body as JSON.
pub async fn body_json(response: Response<Incoming>) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(&body_bytes(response).await?)?)
}

/// The next data chunk of a streaming body, or `None` at its end; fails after `timeout`.
pub async fn next_chunk(body: &mut Incoming, timeout: Duration) -> anyhow::Result<Option<Bytes>> {
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Ok(frame) => frame,
            Err(_) => bail!("no data within {timeout:?}: is the stream buffered?"),
        };
        match frame {
            None => return Ok(None),
            Some(frame) => {
                if let Ok(data) = frame?.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}
