//! `mca webhook`: the mutating admission webhook that injects MCA into pods as they are
//! created, with the mutation `mca inject` applies to manifests.
//!
//! HTTPS (rustls; HTTP/2 and HTTP/1.1) on `--listen`, serving `POST /inject/namespace` and
//! `POST /inject/annotated` (see [`review::Scope`]), each with an optional PodSecurity level
//! (`/inject/namespace/restricted`, see [`review::route`]), plus `/livez` and `/readyz` for the
//! kubelet. The serving certificate comes from files the operator keeps current
//! ([`certificate`]).
//!
//! Any pod can reach the webhook's Service, so it is bounded like MCA's other listeners: a
//! replica that ran out of memory would fail every pod creation the webhook sees. Per
//! connection: [`HANDSHAKE`], [`HEADER_READ`], heads of [`MAX_HEAD`], [`STREAMS`] HTTP/2
//! streams and a [`WINDOW`] of unread bytes; per listener [`CONNECTIONS`], [`PER_PEER`] of them from one address; per review
//! [`MAX_REVIEW`] bytes within [`REVIEW_TIME`]; and [`REVIEW_BUDGET`] bytes of reviews held
//! at once by the process, [`MAX_REVIEW`] by one connection (a review waits for its share,
//! and gets `429` if it does not come in time), so HTTP/2's streams cannot multiply a
//! connection's memory.

pub mod certificate;
pub mod review;

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::sync::Semaphore;

use crate::{
    inject::Settings,
    limits::gate::Gate,
    status::{Reason, Status},
};

/// The largest review read: a pod is at most 1.5 MiB in etcd; its review holds it once or
/// twice.
pub const MAX_REVIEW: usize = 4 << 20;
/// Review bytes held at once, all connections together: two of the largest reviews, or
/// hundreds of real ones (a few KiB each), within a replica's 128 MiB.
pub const REVIEW_BUDGET: usize = 2 * MAX_REVIEW;
/// Time to read a review and to wait for its share of [`REVIEW_BUDGET`]: the API server gives
/// up on the webhook after its `timeoutSeconds` (5 s as the chart installs it) anyway.
pub const REVIEW_TIME: Duration = Duration::from_secs(10);
/// Time to finish a TLS handshake.
pub const HANDSHAKE: Duration = Duration::from_secs(5);
/// Time to send an HTTP/1.1 request head.
pub const HEADER_READ: Duration = Duration::from_secs(5);
/// Largest request head, HTTP/1.1 and HTTP/2 alike.
pub const MAX_HEAD: usize = 64 << 10;
/// HTTP/2 streams per connection.
pub const STREAMS: u32 = 32;
/// HTTP/2 flow-control window, per stream and per connection: what a client may send that
/// the webhook has not read yet (a review waiting for its share of the budget is not read).
pub const WINDOW: u32 = 256 << 10;
/// Connections open at once: with [`WINDOW`], at most 16 MiB sent and not yet read.
pub const CONNECTIONS: usize = 64;
/// Connections open at once from one address (an API server keeps a few).
pub const PER_PEER: usize = 16;

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The serving certificate.
    #[error("serving certificate: {0}")]
    Certificate(#[from] certificate::Error),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Where the webhook listens and what it serves with.
#[derive(Debug, Clone)]
pub struct Options {
    /// Listening address.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub tls_cert: PathBuf,
    /// PEM private key.
    pub tls_key: PathBuf,
}

/// Serves until SIGTERM or SIGINT; requests in flight then get a few seconds to finish.
pub async fn run(options: Options, settings: Settings) -> Result<(), Error> {
    let resolver = certificate::FileCertificate::load(&options.tls_cert, &options.tls_key)?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: options.listen,
            source,
        })?;
    tracing::info!(listen = %options.listen, image = %settings.image, mode = ?settings.mode, "MCA webhook is ready");
    let settings = Arc::new(settings);
    let process = Arc::new(Semaphore::new(REVIEW_BUDGET));
    let gate = Gate::new(CONNECTIONS, PER_PEER);
    let http = http();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let signal = crate::signal::shutdown();
    tokio::pin!(signal);
    loop {
        let (tcp, peer, slot) = tokio::select! {
            accepted = gate.accept(&listener) => accepted,
            signal = &mut signal => {
                tracing::info!(signal, "shutting down");
                break;
            }
        };
        let (acceptor, http) = (acceptor.clone(), http.clone());
        let budget = Budget {
            process: Arc::clone(&process),
            connection: Arc::new(Semaphore::new(MAX_REVIEW)),
        };
        let settings = Arc::clone(&settings);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let (settings, budget) = (Arc::clone(&settings), budget.clone());
                async move { Ok::<_, Infallible>(handle(request, &settings, &budget).await) }
            });
            let connection = http.serve_connection(TokioIo::new(tls), service);
            let _ = watcher.watch(connection.into_owned()).await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

/// The review bytes a connection may hold: its own share and the process's.
#[derive(Debug, Clone)]
struct Budget {
    process: Arc<Semaphore>,
    connection: Arc<Semaphore>,
}

impl Budget {
    /// Waits until `bytes` more may be held by this connection and by the process.
    async fn hold(&self, bytes: u32) -> [tokio::sync::OwnedSemaphorePermit; 2] {
        let acquire = |semaphore: &Arc<Semaphore>| Arc::clone(semaphore).acquire_many_owned(bytes);
        let connection = acquire(&self.connection).await.expect("never closed");
        let process = acquire(&self.process).await.expect("never closed");
        [connection, process]
    }
}

/// HTTP/1.1 and HTTP/2 with the per-connection bounds.
fn http() -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ)
        .max_buf_size(MAX_HEAD);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(STREAMS)
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_header_list_size(MAX_HEAD as u32);
    http
}

/// One request.
async fn handle(
    request: Request<Incoming>,
    settings: &Settings,
    budget: &Budget,
) -> Response<Full<Bytes>> {
    if request.method() == Method::GET && matches!(request.uri().path(), "/livez" | "/readyz") {
        return text(StatusCode::OK, "ok");
    }
    let Some((scope, level)) = (request.method() == Method::POST)
        .then(|| review::route(request.uri().path()))
        .flatten()
    else {
        let message = format!(
            "{}: not served (POST /inject/{{namespace,annotated}}[/{{privileged,baseline,restricted}}])",
            request.uri().path()
        );
        return Status::new(StatusCode::NOT_FOUND, Reason::NotFound, message).into_response();
    };
    let (body, _held) = match read_review(request, budget).await {
        Ok(read) => read,
        Err(status) => return status.into_response(),
    };
    match review::answer(&body, scope, level, settings) {
        Ok(review) => {
            let mut response = Response::new(Full::new(Bytes::from(review.to_string())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(malformed) => {
            tracing::warn!(%malformed, "refused a malformed review");
            Status::new(
                StatusCode::BAD_REQUEST,
                Reason::BadRequest,
                malformed.to_string(),
            )
            .into_response()
        }
    }
}

/// The review `request` carries, and its share of `budget` (the length it announces, else
/// [`MAX_REVIEW`]), held until the answer is made.
async fn read_review(
    request: Request<Incoming>,
    budget: &Budget,
) -> Result<(Bytes, [tokio::sync::OwnedSemaphorePermit; 2]), Status> {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
    let share = announced.unwrap_or(MAX_REVIEW);
    if share > MAX_REVIEW {
        let message = format!("a review of {share} bytes; the most read is {MAX_REVIEW}");
        return Err(Status::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::RequestEntityTooLarge,
            message,
        ));
    }
    let read = async {
        let held = budget.hold(share.max(1) as u32).await;
        let body = Limited::new(request.into_body(), share).collect().await;
        (body, held)
    };
    match tokio::time::timeout(REVIEW_TIME, read).await {
        Ok((Ok(body), held)) => Ok((body.to_bytes(), held)),
        Ok((Err(error), _)) => Err(Status::new(
            StatusCode::BAD_REQUEST,
            Reason::BadRequest,
            format!("reading the review: {error}"),
        )),
        Err(_) => Err(Status::new(
            StatusCode::TOO_MANY_REQUESTS,
            Reason::TooManyRequests,
            format!("the review was not read within {REVIEW_TIME:?}"),
        )
        .retry_after(1)),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
