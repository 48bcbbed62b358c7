//! The API server's request deadline: a request that is not long-running gets
//! `--request-timeout` (60 s), or its `?timeout=` when that is shorter and positive (client-go
//! sends `timeout=32s` on discovery, kubectl `--request-timeout` sets it). Past the deadline
//! the client gets 504 `Timeout` and the upstream request is dropped, which cancels it.
//!
//! The proxy stamps the deadline on the request ([`Deadline`] as a request extension, which
//! survives retries and fan-out); the upstream client enforces it, on the response headers and
//! on the body, since that is the one place every request to a cluster passes.

use std::time::Duration;

use tokio::time::Instant;

use crate::reqinfo::RequestInfo;

/// When a request must be over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    after: Duration,
}

/// The deadline passed before the API server's answer was complete.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request did not complete within {0:?}")]
pub struct Expired(pub Duration);

impl Deadline {
    /// `after` from now.
    pub fn after(after: Duration) -> Self {
        Self {
            at: Instant::now() + after,
            after,
        }
    }

    /// The deadline of a request starting now, `None` for a long-running one. `query` is the
    /// raw query string; a `timeout` in it that is not a Go duration leaves the default (the
    /// API server then refuses the request itself).
    pub fn for_request(info: &RequestInfo, query: Option<&str>, limit: Duration) -> Option<Self> {
        if info.is_long_running() {
            return None;
        }
        let asked = query
            .and_then(|query| crate::query::first(query, "timeout"))
            .and_then(|value| crate::duration::go(&value));
        let after = match asked {
            Some(asked) if !asked.is_zero() && asked < limit => asked,
            _ => limit,
        };
        Some(Self::after(after))
    }

    /// The instant.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The error once it has passed.
    pub fn expired(&self) -> Expired {
        Expired(self.after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_shorter_of_the_limit_and_a_positive_timeout() {
        let limit = Duration::from_secs(60);
        let after = |target: &str| {
            let query = target.split_once('?').map(|(_, query)| query);
            let info = RequestInfo::parse("GET", target);
            Deadline::for_request(&info, query, limit).map(|d| d.expired().0)
        };
        let seconds = |s| Some(Duration::from_secs(s));
        assert_eq!(after("/api/v1/pods"), seconds(60));
        assert_eq!(after("/api/v1/pods?timeout=32s"), seconds(32));
        assert_eq!(after("/api/v1/pods?limit=5&timeout=1m"), seconds(60));
        assert_eq!(after("/api/v1/pods?timeout=5m"), seconds(60));
        // 0 means "no timeout of the client's own"; nonsense is the API server's to refuse.
        assert_eq!(after("/api/v1/pods?timeout=0s"), seconds(60));
        assert_eq!(after("/api/v1/pods?timeout=soon"), seconds(60));
        assert_eq!(after("/api/v1/pods?timeout=-1s"), seconds(60));
        // Long-running requests have none.
        assert_eq!(after("/api/v1/pods?watch=true&timeout=5s"), None);
        assert_eq!(after("/api/v1/namespaces/a/pods/p/exec?command=ls"), None);
        let deadline = Deadline::after(Duration::from_secs(5));
        assert_eq!(deadline.at() - Instant::now(), Duration::from_secs(5));
    }
}
