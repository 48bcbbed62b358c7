//! The pool's bookkeeping, changed only under its lock: the connections, the sockets counted
//! against the bound, the dial others wait for, and the decision of what a request does next.

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::time::Instant;

use super::{ConnectError, RequestClass};
use crate::upstream::{connect::Protocol, http1};

#[derive(Default)]
pub(super) struct State {
    /// Pooled connections, oldest first: requests fill the oldest, so extra ones fall idle.
    pub(super) connections: Vec<Connection>,
    /// Every open socket, pooled or not, and those being opened.
    pub(super) sockets: usize,
    /// The pooled dial in flight while connections are (or may be) HTTP/2: a second request
    /// waits for it, since the new connection will likely have streams to spare.
    pub(super) dialing: Option<u64>,
    /// Dials so far, numbering them.
    pub(super) dials: u64,
    /// The last dial that failed, so requests that waited for it report its error.
    pub(super) failed: Option<(u64, ConnectError)>,
    /// What the last pooled connection negotiated.
    pub(super) protocol: Option<Protocol>,
    pub(super) next_id: u64,
    /// Whether the idle reaper runs.
    pub(super) reaping: bool,
}

pub(super) struct Connection {
    pub(super) id: u64,
    /// Opened into the last slot, for short requests only.
    pub(super) reserved: bool,
    /// Since when nothing has been in flight.
    pub(super) idle_since: Option<Instant>,
    /// Takes no new requests (GOAWAY, a failed send, or retired for a new client
    /// certificate); closes when its requests end.
    pub(super) draining: bool,
    pub(super) kind: Kind,
}

pub(super) enum Kind {
    Http2 {
        send: SendRequest<Bytes>,
        streams: usize,
        /// Whether the server's stream limit is known; until then only the request that
        /// opened the connection uses it.
        settled: bool,
    },
    Http1 {
        /// The connection's sender while no request uses it.
        idle: Option<http1::Sender>,
    },
}

impl Connection {
    pub(super) fn has_room(&self) -> bool {
        !self.draining
            && match &self.kind {
                Kind::Http2 {
                    send,
                    streams,
                    settled,
                } => *settled && *streams < send.current_max_send_streams(),
                Kind::Http1 { idle } => idle.is_some(),
            }
    }

    pub(super) fn in_flight(&self) -> usize {
        match &self.kind {
            Kind::Http2 { streams, .. } => *streams,
            Kind::Http1 { idle } => usize::from(idle.is_none()),
        }
    }
}

/// What a request that needs a connection does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Use this pooled connection.
    Use(usize),
    /// Open a connection; `reserved` when it takes the slot kept for short requests.
    Dial { reserved: bool },
    /// Wait for a change; `dial` names the dial in flight that may bring a connection.
    Wait { dial: Option<u64> },
}

/// Whether a request that found no pooled connection with room may open one. The last slot
/// is kept for short requests (when there are at least two); a dial already under way for
/// connections that may be HTTP/2 (`dialing`) is waited for instead of racing it.
pub(super) fn dial_or_wait(
    sockets: usize,
    max_connections: usize,
    long_running: bool,
    dialing: Option<u64>,
) -> Next {
    if let Some(dial) = dialing {
        return Next::Wait { dial: Some(dial) };
    }
    let free = max_connections.saturating_sub(sockets);
    let reserve = usize::from(max_connections > 1);
    if free == 0 || (long_running && free <= reserve) {
        return Next::Wait { dial: None };
    }
    Next::Dial {
        reserved: free <= reserve,
    }
}

impl State {
    pub(super) fn next(&self, class: RequestClass, max_connections: usize) -> Next {
        if class != RequestClass::Upgrade {
            let usable = self
                .connections
                .iter()
                .position(|c| c.has_room() && !(c.reserved && class != RequestClass::Short));
            if let Some(index) = usable {
                return Next::Use(index);
            }
        }
        let dialing = self.dialing.filter(|_| self.coalesces(class));
        dial_or_wait(
            self.sockets,
            max_connections,
            class != RequestClass::Short,
            dialing,
        )
    }

    /// Whether a dial for `class` is one others should wait for: pooled, and the server may
    /// speak HTTP/2. HTTP/1.1 connections take one request each, so those dials run side by
    /// side.
    pub(super) fn coalesces(&self, class: RequestClass) -> bool {
        class != RequestClass::Upgrade && self.protocol != Some(Protocol::Http1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dials_until_the_bound_keeping_the_last_slot_for_short_requests() {
        // Room: anyone dials; the last slot is marked reserved.
        assert_eq!(
            dial_or_wait(0, 4, true, None),
            Next::Dial { reserved: false }
        );
        assert_eq!(
            dial_or_wait(2, 4, false, None),
            Next::Dial { reserved: false }
        );
        assert_eq!(
            dial_or_wait(3, 4, false, None),
            Next::Dial { reserved: true }
        );
        // Long-running requests never take the last slot.
        assert_eq!(dial_or_wait(3, 4, true, None), Next::Wait { dial: None });
        // At the bound everyone waits.
        assert_eq!(dial_or_wait(4, 4, false, None), Next::Wait { dial: None });
        assert_eq!(dial_or_wait(5, 4, false, None), Next::Wait { dial: None });
        // A bound of one has nothing to reserve.
        assert_eq!(
            dial_or_wait(0, 1, true, None),
            Next::Dial { reserved: false }
        );
        assert_eq!(dial_or_wait(1, 1, false, None), Next::Wait { dial: None });
        // A dial under way is waited for rather than raced.
        assert_eq!(
            dial_or_wait(1, 4, false, Some(7)),
            Next::Wait { dial: Some(7) }
        );
    }

    #[test]
    fn http1_dials_run_side_by_side_and_upgrades_never_wait_for_pooled_dials() {
        let mut state = State {
            sockets: 1,
            dialing: Some(1),
            ..State::default()
        };
        assert_eq!(
            state.next(RequestClass::Short, 8),
            Next::Wait { dial: Some(1) }
        );
        assert_eq!(
            state.next(RequestClass::Upgrade, 8),
            Next::Dial { reserved: false }
        );
        state.protocol = Some(Protocol::Http1);
        assert_eq!(
            state.next(RequestClass::LongRunning, 8),
            Next::Dial { reserved: false }
        );
    }

    #[test]
    fn long_running_requests_skip_reserved_and_busy_connections() {
        let state = State {
            sockets: 2,
            connections: vec![
                Connection {
                    id: 1,
                    reserved: false,
                    idle_since: None,
                    draining: false,
                    kind: Kind::Http1 { idle: None },
                },
                Connection {
                    id: 2,
                    reserved: true,
                    idle_since: None,
                    draining: false,
                    kind: Kind::Http1 { idle: None },
                },
            ],
            ..State::default()
        };
        // Both busy: dial (short) or wait (long-running, only the reserved slot is left).
        assert_eq!(
            state.next(RequestClass::Short, 3),
            Next::Dial { reserved: true }
        );
        assert_eq!(
            state.next(RequestClass::LongRunning, 3),
            Next::Wait { dial: None }
        );
    }
}
