//! A stand-in OpenTelemetry collector: an OTLP/HTTP receiver that keeps every request body
//! posted to `/v1/traces` and answers as a collector does (an empty
//! `ExportTraceServiceResponse`, which in protobuf is no bytes at all).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A running receiver, on a runtime of its own; stopped when dropped.
pub struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Tests drop it from async code, where a runtime may not wait for its tasks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Receiver {
    /// Serves on `listener` (which may live in a pod's network namespace).
    pub fn start(listener: std::net::TcpListener) -> anyhow::Result<Self> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        runtime.spawn(serve(listener, kept));
        Ok(Self {
            addr,
            bodies,
            runtime: Some(runtime),
        })
    }

    /// Its base URL (`http://ip:port`), as `--otlp-endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every export request body received so far (protobuf `ExportTraceServiceRequest`s).
    pub fn bodies(&self) -> Vec<Bytes> {
        self.bodies.lock().unwrap().clone()
    }
}

async fn serve(listener: tokio::net::TcpListener, bodies: Arc<Mutex<Vec<Bytes>>>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let bodies = Arc::clone(&bodies);
        let service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let bodies = Arc::clone(&bodies);
                async move {
                    let traces = request.uri().path() == "/v1/traces";
                    let body = request.into_body().collect().await?.to_bytes();
                    let status = if traces {
                        bodies.lock().unwrap().push(body);
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    };
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = status;
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/x-protobuf"),
                    );
                    Ok::<_, hyper::Error>(response)
                }
            });
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
