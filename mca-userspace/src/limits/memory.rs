//! Bytes MCA holds on behalf of requests, bounded per process: each buffer is bounded per
//! request where it is read, but a thousand requests each within their bound could still
//! hold more than the sidecar's memory. A buffer grows only while the process's [`Budget`]
//! has room; when it has none the request is refused at once (`429`, retried by clients)
//! rather than queued, so requests holding part of the budget never wait on each other.

use std::sync::{Arc, LazyLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget of what clusters answered that MCA assembles before answering (merged pages,
/// objects and discovery, the lists fan-out watches resume from, watch events) and of the
/// create bodies read to route by labels: half the 256 MiB an injected sidecar may use.
pub static ANSWERS: LazyLock<Budget> = LazyLock::new(|| Budget::new(128 << 20));

/// The unit the budget is counted in.
const UNIT: usize = 1 << 10;

/// Bytes that may be held at once.
#[derive(Debug)]
pub struct Budget {
    units: Arc<Semaphore>,
    bytes: usize,
}

/// The budget had no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("MCA holds {0} bytes of answers and request bodies for requests in flight; retry shortly")]
pub struct OverBudget(pub usize);

/// Bytes held against a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Held {
    units: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            units: Arc::new(Semaphore::new(bytes.div_ceil(UNIT))),
            bytes,
        }
    }

    /// Nothing held yet.
    pub fn hold(&self) -> Held {
        Held {
            units: Arc::clone(&self.units),
            permit: None,
            bytes: self.bytes,
        }
    }
}

impl Held {
    /// Holds `bytes` from now: more, if the budget has room, or fewer, giving the rest back.
    pub fn resize(&mut self, bytes: usize) -> Result<(), OverBudget> {
        let wanted = bytes.div_ceil(UNIT);
        let held = self
            .permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        if wanted > held {
            let more = u32::try_from(wanted - held).map_err(|_| OverBudget(self.bytes))?;
            let more = Arc::clone(&self.units)
                .try_acquire_many_owned(more)
                .map_err(|_| OverBudget(self.bytes))?;
            match &mut self.permit {
                Some(permit) => permit.merge(more),
                None => self.permit = Some(more),
            }
        } else if wanted < held
            && let Some(permit) = &mut self.permit
        {
            drop(permit.split(held - wanted));
        }
        Ok(())
    }

    /// The units held now.
    #[cfg(test)]
    pub(crate) fn units(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_grow_within_the_budget_and_give_back_what_they_no_longer_hold() {
        let budget = Budget::new(10 * UNIT);
        let mut a = budget.hold();
        let mut b = budget.hold();
        a.resize(6 * UNIT).unwrap();
        assert_eq!(b.resize(5 * UNIT), Err(OverBudget(10 * UNIT)));
        b.resize(4 * UNIT).unwrap();
        a.resize(UNIT + 1).unwrap();
        assert_eq!(budget.units.available_permits(), 4);
        b.resize(8 * UNIT).unwrap();
        drop((a, b));
        assert_eq!(budget.units.available_permits(), 10);
    }
}
