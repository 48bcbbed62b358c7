//! The API server's max-in-flight filter: at most so many reads and so many writes at once,
//! the rest refused at once with 429 and `Retry-After: 1` (client-go waits and retries), never
//! queued. Long-running requests are not counted: a watch holds its slot for hours.

use std::sync::Arc;

use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    reqinfo::RequestInfo,
    status::{Reason, Status},
};

/// The two budgets; `None` is unlimited.
#[derive(Debug)]
pub struct InFlight {
    reads: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
}

/// A request's place in its budget, given back when the exchange is over.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    /// At most `reads` non-mutating and `mutating` mutating requests; 0 is unlimited.
    pub fn new(reads: u32, mutating: u32) -> Self {
        let budget = |max: u32| (max > 0).then(|| Arc::new(Semaphore::new(max as usize)));
        Self {
            reads: budget(reads),
            mutating: budget(mutating),
        }
    }

    /// A slot for the request, `None` when it is not counted, or 429 when its budget is spent.
    pub fn admit(&self, info: &RequestInfo) -> Result<Option<Slot>, Status> {
        if info.is_long_running() {
            return Ok(None);
        }
        let budget = if is_mutating(info.verb()) {
            &self.mutating
        } else {
            &self.reads
        };
        let Some(budget) = budget else {
            return Ok(None);
        };
        match Arc::clone(budget).try_acquire_owned() {
            Ok(permit) => Ok(Some(Slot { _permit: permit })),
            Err(_) => Err(Status::new(
                StatusCode::TOO_MANY_REQUESTS,
                Reason::TooManyRequests,
                "Too many requests, please try again later.",
            )
            .retry_after(1)),
        }
    }
}

/// What the API server counts against `--max-mutating-requests-inflight`: every verb but
/// get, list and watch (non-resource requests' verbs are their lower-case methods).
fn is_mutating(verb: &str) -> bool {
    !matches!(verb, "get" | "list" | "watch")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: &str, target: &str) -> RequestInfo {
        RequestInfo::parse(method, target)
    }

    #[test]
    fn reads_and_writes_have_separate_budgets_and_long_running_requests_none() {
        let limits = InFlight::new(2, 1);
        let get = info("GET", "/api/v1/namespaces/a/pods/p");
        let create = info("POST", "/api/v1/namespaces/a/pods");
        let watch = info("GET", "/api/v1/namespaces/a/pods?watch=1");

        let first = limits.admit(&get).unwrap();
        let second = limits.admit(&get).unwrap();
        assert!(first.is_some() && second.is_some());
        let refused = limits.admit(&get).unwrap_err();
        assert_eq!(refused.code, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(1));
        // Writes are counted apart; watches not at all.
        let write = limits.admit(&create).unwrap();
        assert!(write.is_some());
        assert!(
            limits
                .admit(&info("DELETE", "/api/v1/namespaces/a/pods/p"))
                .is_err()
        );
        for _ in 0..10 {
            assert!(limits.admit(&watch).unwrap().is_none());
        }
        // A slot given back is free again.
        drop(first);
        assert!(limits.admit(&get).unwrap().is_some());
    }

    #[test]
    fn zero_is_unlimited() {
        let limits = InFlight::new(0, 0);
        let get = info("GET", "/api/v1/pods");
        assert!((0..1000).all(|_| limits.admit(&get).unwrap().is_none()));
    }
}
