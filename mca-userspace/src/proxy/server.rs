//! The server: accepting client connections within `--max-connections`, TLS, HTTP/2 or
//! HTTP/1.1 by ALPN, closing idle and abusive connections, and draining on shutdown. Each
//! request it reads goes to the [pipeline](super::pipeline).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::Proxy;
use crate::limits::{
    connection::{CANCEL_BUDGET, CANCEL_WINDOW, Close, Connection},
    gate,
};

impl Proxy {
    /// Accepts connections on `listeners` until `shutdown` fires, then stops accepting and
    /// lets requests and tunnels in flight finish for up to `grace`.
    pub async fn serve(
        self: Arc<Self>,
        listeners: Vec<TcpListener>,
        tls: TlsAcceptor,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let http = self.limits.http();
        let connections = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.limits.max_connections as usize));
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(64);
        let mut acceptors = tokio::task::JoinSet::new();
        for listener in listeners {
            acceptors.spawn(accept_loop(
                listener,
                Arc::clone(&slots),
                accepted_tx.clone(),
            ));
        }
        loop {
            let (tcp, peer, slot) = tokio::select! {
                Some(connection) = accepted.recv() => connection,
                () = shutdown.cancelled() => break,
            };
            // Look the original destination up now: the entry is keyed by this connection's
            // client end, which a later connection may reuse.
            let original = self
                .interception
                .as_ref()
                .and_then(|interception| interception.original_destination(peer));
            let client = Client {
                peer,
                original,
                shutdown: shutdown.clone(),
                _slot: slot,
            };
            connections.spawn(Arc::clone(&self).serve_connection(
                tcp,
                client,
                tls.clone(),
                http.clone(),
            ));
        }
        // Dropping the accept loops closes the listeners: new connections are refused.
        acceptors.shutdown().await;
        connections.close();
        self.tunnels.close();
        tracing::info!(
            connections = connections.len(),
            tunnels = self.tunnels.len(),
            ?grace,
            "stopped accepting; draining"
        );
        let drained = async {
            connections.wait().await;
            self.tunnels.wait().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(?grace, "grace period over; closing what is still open");
        }
    }

    /// Serves one client connection: TLS, then HTTP until the client closes it, it idles,
    /// it cancels requests abusively, or MCA shuts down.
    async fn serve_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        client: Client,
        tls: TlsAcceptor,
        http: auto::Builder<TokioExecutor>,
    ) {
        let peer = client.peer;
        let handshake = tokio::time::timeout(self.limits.tls_handshake_timeout, tls.accept(tcp));
        let stream = match handshake.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake with client failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake with client timed out");
                return;
            }
        };
        let requests = Connection::new();
        let service = {
            let (proxy, requests, original) =
                (Arc::clone(&self), Arc::clone(&requests), client.original);
            // Boxed: hyper keeps a stream's task (sized for this future) until the response
            // body is done, which for a watch is its whole life; the box is freed as soon as
            // the response headers are ready.
            hyper::service::service_fn(move |request| {
                let active = requests.request();
                Box::pin(Arc::clone(&proxy).handle(request, original, active))
            })
        };
        let connection = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(%peer, %error, "client connection ended with an error");
                    }
                    return;
                }
                close = requests.close(self.limits.idle_timeout), if !closing => match close {
                    Close::Idle => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Close::Abusive => {
                        tracing::warn!(
                            %peer,
                            budget = CANCEL_BUDGET,
                            window = ?CANCEL_WINDOW,
                            "closing a client connection that cancelled more requests than \
                             its budget allows (HTTP/2 rapid reset?)"
                        );
                        return;
                    }
                },
                () = client.shutdown.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// A client connection's facts and the bounds it lives in.
struct Client {
    peer: SocketAddr,
    /// The address it dialled, if eBPF redirected it.
    original: Option<SocketAddr>,
    /// Fires when MCA shuts down.
    shutdown: CancellationToken,
    /// Its place among `--max-connections`.
    _slot: OwnedSemaphorePermit,
}

/// Accepts connections on `listener` while a connection slot is free, and hands them to the
/// serving loop; at the bound, new connections wait in the kernel's accept queue.
async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    accepted: tokio::sync::mpsc::Sender<(TcpStream, SocketAddr, OwnedSemaphorePermit)>,
) {
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                tracing::warn!(
                    "all client connections allowed are open (--max-connections); new ones wait"
                );
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                slot
            }
        };
        let (tcp, peer) = gate::accept(&listener).await;
        let _ = tcp.set_nodelay(true);
        if accepted.send((tcp, peer, slot)).await.is_err() {
            return;
        }
    }
}
