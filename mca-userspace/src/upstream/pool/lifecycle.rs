//! What happens to a pooled connection after it opened: its HTTP/2 stream limit settling, an
//! HTTP/1.1 connection coming back after a response, its socket given back, and the reaper
//! closing connections idle for too long.

use std::{sync::Weak, time::Duration};

use tokio::time::Instant;

use super::{Shared, state::Kind};
use crate::upstream::{http1, http2};

/// Opens an HTTP/2 connection to every request once the server's stream limit is known; a
/// server that does not answer within `timeout` gets no more requests on it.
pub(super) async fn settle(
    shared: Weak<Shared>,
    id: u64,
    settled: http2::Settled,
    timeout: Duration,
) {
    let outcome = tokio::time::timeout(timeout, settled).await;
    let Some(shared) = shared.upgrade() else {
        return;
    };
    if !matches!(outcome, Ok(Ok(()))) {
        tracing::debug!("the API server did not answer an HTTP/2 PING; not reusing the connection");
    }
    shared.update(id, |connection| {
        if let Kind::Http2 { settled, .. } = &mut connection.kind {
            *settled = true;
            connection.draining |= !matches!(outcome, Ok(Ok(())));
        }
        true
    });
}

/// Returns an HTTP/1.1 connection whose response was read to the end.
pub(super) fn give_back(shared: &Shared, id: u64, sender: http1::Sender) {
    shared.update(id, move |connection| {
        connection.kind = Kind::Http1 { idle: Some(sender) };
        connection.idle_since = Some(Instant::now());
        !connection.draining
    });
}

pub(super) fn release_socket(shared: &Weak<Shared>) {
    if let Some(shared) = shared.upgrade() {
        shared.lock().sockets -= 1;
        shared.changed.notify_waiters();
    }
}

/// Closes connections that had nothing in flight for the idle timeout; ends when the pool is
/// gone or empty (the next connection starts it again).
pub(super) async fn reap(shared: Weak<Shared>) {
    loop {
        let idle_timeout = match shared.upgrade() {
            Some(shared) => shared.limits.idle_timeout,
            None => return,
        };
        tokio::time::sleep((idle_timeout / 4).max(Duration::from_millis(100))).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        let now = Instant::now();
        let (idle, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.connections)
            .into_iter()
            .partition(|c| {
                c.in_flight() == 0 && c.idle_since.is_some_and(|t| now - t >= idle_timeout)
            });
        state.connections = kept;
        let done = state.connections.is_empty();
        if done {
            state.reaping = false;
        }
        drop(state);
        if !idle.is_empty() {
            tracing::debug!(
                closed = idle.len(),
                "closing idle connections to the API server"
            );
        }
        // Dropping the last handle of a connection closes it.
        drop(idle);
        if done {
            return;
        }
    }
}
