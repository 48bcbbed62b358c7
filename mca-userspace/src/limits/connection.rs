//! One client connection's requests: how many are open, when the last one ended, and how many
//! the client cancelled before MCA could answer them.
//!
//! The last is MCA's defence against HTTP/2 "rapid reset" (CVE-2023-44487) once h2's own
//! (streams reset before they were even accepted) no longer applies: a client that opens a
//! stream, waits for MCA to start forwarding it, and resets it costs an upstream request per
//! reset while never holding a stream for long. Legitimate clients cancel a request now and
//! then (a user's Ctrl-C closes the whole connection instead); a connection that cancels more
//! than [`CANCEL_BUDGET`] in one [`CANCEL_WINDOW`] is closed.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// Requests a connection may cancel before they were answered, per [`CANCEL_WINDOW`].
pub const CANCEL_BUDGET: u32 = 100;
/// The window [`CANCEL_BUDGET`] applies to.
pub const CANCEL_WINDOW: Duration = Duration::from_secs(10);

/// Why a connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// No request for the idle timeout: close gracefully.
    Idle,
    /// It cancelled more requests than [`CANCEL_BUDGET`] allows: drop it.
    Abusive,
}

/// The bookkeeping of one client connection.
#[derive(Debug)]
pub struct Connection {
    open: AtomicUsize,
    last_end: Mutex<Instant>,
    cancels: Mutex<(Instant, u32)>,
    /// Set once the cancel budget is spent; requests still arriving are not forwarded.
    spent: AtomicBool,
    abusive: Notify,
}

/// One request open on a connection; dropping it ends the request.
#[derive(Debug)]
pub struct Active {
    connection: Arc<Connection>,
    /// Whether MCA answered (set by the access log from the status it recorded); a request
    /// dropped unanswered was cancelled by the client.
    pub answered: bool,
}

impl Connection {
    /// A connection accepted just now.
    pub fn new() -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            open: AtomicUsize::new(0),
            last_end: Mutex::new(now),
            cancels: Mutex::new((now, 0)),
            spent: AtomicBool::new(false),
            abusive: Notify::new(),
        })
    }

    /// Counts a request open until the returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> Active {
        self.open.fetch_add(1, Ordering::Relaxed);
        Active {
            connection: Arc::clone(self),
            answered: false,
        }
    }

    /// Resolves when the connection should close: idle for `idle`, or abusive.
    pub async fn close(&self, idle: Duration) -> Close {
        loop {
            let quiet_since = *self.last_end.lock().expect("not poisoned");
            let check = if self.open.load(Ordering::Relaxed) == 0 {
                if quiet_since.elapsed() >= idle {
                    return Close::Idle;
                }
                quiet_since + idle
            } else {
                Instant::now() + idle
            };
            tokio::select! {
                () = self.abusive.notified() => return Close::Abusive,
                () = tokio::time::sleep_until(check) => {}
            }
        }
    }

    fn cancelled(&self) {
        let mut cancels = self.cancels.lock().expect("not poisoned");
        let (since, count) = &mut *cancels;
        if since.elapsed() > CANCEL_WINDOW {
            *since = Instant::now();
            *count = 0;
        }
        *count += 1;
        if *count == CANCEL_BUDGET + 1 {
            self.spent.store(true, Ordering::Relaxed);
            self.abusive.notify_one();
        }
    }
}

impl Active {
    /// Whether its connection spent its cancel budget and is being closed: the request must
    /// not be forwarded (the close may take a moment to act, and must not cost the API server).
    pub fn connection_closing(&self) -> bool {
        self.connection.spent.load(Ordering::Relaxed)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let connection = &self.connection;
        *connection.last_end.lock().expect("not poisoned") = Instant::now();
        connection.open.fetch_sub(1, Ordering::Relaxed);
        if !self.answered {
            connection.cancelled();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_after_the_last_request_ends() {
        let connection = Connection::new();
        let idle = Duration::from_secs(90);
        let mut request = connection.request();
        request.answered = true;
        let start = Instant::now();
        let closing = tokio::spawn({
            let connection = Arc::clone(&connection);
            async move { connection.close(idle).await }
        });
        // A request open for longer than the idle timeout keeps it open.
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert!(!closing.is_finished());
        drop(request);
        assert_eq!(closing.await.unwrap(), Close::Idle);
        assert_eq!(start.elapsed(), Duration::from_secs(290));
    }

    #[tokio::test(start_paused = true)]
    async fn closes_a_connection_that_cancels_too_much() {
        let connection = Connection::new();
        let closing = tokio::spawn({
            let connection = Arc::clone(&connection);
            async move { connection.close(Duration::from_secs(3600)).await }
        });
        // Answered requests and a budget's worth of cancels per window are fine.
        for _ in 0..3 {
            for _ in 0..1000 {
                connection.request().answered = true;
            }
            for _ in 0..CANCEL_BUDGET {
                drop(connection.request());
            }
            tokio::time::sleep(CANCEL_WINDOW + Duration::from_secs(1)).await;
        }
        assert!(!closing.is_finished());
        assert!(!connection.request().connection_closing());
        for _ in 0..=CANCEL_BUDGET {
            drop(connection.request());
        }
        assert!(connection.request().connection_closing());
        assert_eq!(closing.await.unwrap(), Close::Abusive);
    }
}
