//! `mca webhook`: the mutating admission webhook that injects MCA into pods as they are
//! created, with the mutation `mca inject` applies to manifests.
//!
//! HTTPS (rustls; HTTP/2 and HTTP/1.1) on `--listen`, serving `POST /inject/namespace` and
//! `POST /inject/annotated` (see [`review::Scope`]), each with an optional PodSecurity level
//! (`/inject/namespace/restricted`, see [`review::route`]), plus `/livez` and `/readyz` for the
//! kubelet. The serving certificate comes from files the operator keeps current
//! ([`certificate`]).

pub mod certificate;
pub mod review;

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

use crate::{
    inject::Settings,
    status::{Reason, Status},
};

/// The largest review read: a pod is at most 1.5 MiB in etcd; its review holds it once or
/// twice.
const MAX_REVIEW: usize = 4 << 20;

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The serving certificate.
    #[error("serving certificate: {0}")]
    Certificate(#[from] certificate::Error),
    /// The listener.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let signal = crate::run::wait_for_signal();
    tokio::pin!(signal);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            signal = &mut signal => {
                tracing::info!(signal, "shutting down");
                break;
            }
        };
        let acceptor = acceptor.clone();
        let settings = Arc::clone(&settings);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let settings = Arc::clone(&settings);
                async move { Ok::<_, Infallible>(handle(request, &settings).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            let _ = watcher.watch(connection.into_owned()).await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

/// One request.
async fn handle(request: Request<Incoming>, settings: &Settings) -> Response<Full<Bytes>> {
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
    let body = match Limited::new(request.into_body(), MAX_REVIEW)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            let message = format!("reading the review: {error}");
            return Status::new(StatusCode::BAD_REQUEST, Reason::BadRequest, message)
                .into_response();
        }
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

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
