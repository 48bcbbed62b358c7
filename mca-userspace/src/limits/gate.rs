//! Admission of connections to MCA's listeners: how many may be open at once, in all and
//! from one peer, and what an accept error costs.
//!
//! The admin listener and the webhook are reachable from other pods, so one hostile peer
//! must not hold every connection: beyond its share ([`Gate::new`]'s `per_peer`) its new
//! connections are closed at once, while connections over the total wait in the kernel's
//! accept queue (a burst of probes or reviews is served late, not refused). An accept error
//! (`EMFILE` above all) backs off instead of spinning on a core.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// How long to wait after a failed accept before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection on `listener`; after an error (out of file descriptors, say) it
/// waits [`ACCEPT_BACKOFF`] and tries again.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// The connection slots of one listener.
#[derive(Debug, Clone)]
pub struct Gate {
    total: Arc<Semaphore>,
    per_peer: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A connection's place at the gate, given back when it is dropped.
#[derive(Debug)]
pub struct Slot {
    _total: OwnedSemaphorePermit,
    peer: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl Gate {
    /// At most `total` connections at once, `per_peer` of them from one address.
    pub fn new(total: usize, per_peer: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_peer,
            open: Arc::default(),
        }
    }

    /// The next connection within the bounds: waits for a free slot before accepting, and
    /// closes connections from a peer that already holds its share.
    pub async fn accept(&self, listener: &TcpListener) -> (TcpStream, SocketAddr, Slot) {
        loop {
            let total = Arc::clone(&self.total)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (tcp, peer) = accept(listener).await;
            if let Some(slot) = self.admit(total, peer.ip()) {
                return (tcp, peer, slot);
            }
            tracing::debug!(%peer, per_peer = self.per_peer, "closed a connection over its peer's share");
        }
    }

    /// A slot for a connection from `peer` holding `total`, unless `peer` has its share.
    fn admit(&self, total: OwnedSemaphorePermit, peer: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(peer).or_default();
        if *count >= self.per_peer {
            return None;
        }
        *count += 1;
        Some(Slot {
            _total: total,
            peer,
            open: Arc::clone(&self.open),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_gets_its_share_and_slots_come_back() {
        let gate = Gate::new(3, 2);
        let permit = || Arc::clone(&gate.total).try_acquire_owned().unwrap();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = gate.admit(permit(), a).expect("within a's share");
        let second = gate.admit(permit(), a).expect("within a's share");
        assert!(gate.admit(permit(), a).is_none(), "over a's share");
        let other = gate.admit(permit(), b).expect("b has its own share");
        assert_eq!(gate.total.available_permits(), 0);
        drop(first);
        assert!(gate.admit(permit(), a).is_some());
        drop((second, other));
        assert_eq!(gate.total.available_permits(), 3);
        assert!(gate.open.lock().unwrap().is_empty());
    }
}
