//! Why the pool could not give a request a connection.

use std::{sync::Arc, time::Duration};

use tower::BoxError;

use super::RequestClass;

/// A request found every connection MCA may use busy, and none freed up in time.
#[derive(Debug, thiserror::Error)]
pub struct Exhausted {
    pub(super) class: RequestClass,
    pub(super) max_connections: usize,
    pub(super) waited: Duration,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            max_connections: max,
            waited,
            ..
        } = self;
        if self.class == RequestClass::Short {
            write!(
                f,
                "all {max} connections to the API server are busy and none freed up within \
                 {waited:?} (raise --upstream-max-connections)"
            )
        } else {
            write!(
                f,
                "the {} connections to the API server that long-running requests may use are \
                 busy (one more is kept for short requests) and none freed up within {waited:?} \
                 (raise --upstream-max-connections)",
                max.saturating_sub(1)
            )
        }
    }
}

/// Opening a connection to the API server failed; every request that waited for that
/// connection gets this error.
#[derive(Debug, Clone)]
pub struct ConnectError(pub(super) Arc<BoxError>);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connecting to the API server: {}", self.0)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_says_what_to_raise() {
        let short = Exhausted {
            class: RequestClass::Short,
            max_connections: 4,
            waited: Duration::from_secs(10),
        };
        assert!(
            short.to_string().starts_with("all 4 connections"),
            "{short}"
        );
        assert!(short.to_string().contains("--upstream-max-connections"));
        let watch = Exhausted {
            class: RequestClass::LongRunning,
            ..short
        };
        assert!(
            watch.to_string().starts_with("the 3 connections"),
            "{watch}"
        );
    }
}
