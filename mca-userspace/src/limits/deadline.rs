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
            .and_then(|value| parse_go_duration(&value));
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

/// Parses a Go `time.Duration` string (`32s`, `1m30s`, `1.5h`, `250ms`, `0`); `None` when Go
/// would refuse it, when it is negative (the API server then ignores it), or on overflow.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    const UNITS: &[(&str, u128)] = &[
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    /// Go's limit: an int64 of nanoseconds.
    const MAX_NANOS: u128 = i64::MAX as u128;

    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return (!negative).then_some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (whole, after) = rest.split_at(whole_end);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let end = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(end)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let &(_, scale) = UNITS.iter().find(|(name, _)| *name == unit)?;
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut nanos = whole.checked_mul(scale)?;
        // The fraction's digits beyond nanosecond precision do not count (as in Go).
        let mut place = scale;
        for digit in fraction.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(nanos).filter(|&t| t <= MAX_NANOS)?;
        rest = after;
    }
    if negative && total > 0 {
        return None;
    }
    Some(Duration::from_nanos(u64::try_from(total).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |text: &str, nanos: u64| {
            assert_eq!(
                parse_go_duration(text),
                Some(Duration::from_nanos(nanos)),
                "{text}"
            );
        };
        ok("0", 0);
        ok("32s", 32_000_000_000);
        ok("1m30s", 90_000_000_000);
        ok("1.5h", 5_400_000_000_000);
        ok("250ms", 250_000_000);
        ok("1h2m3s4ms5us6ns", 3_723_004_005_006);
        ok("+5s", 5_000_000_000);
        ok(".5s", 500_000_000);
        ok("5.s", 5_000_000_000);
        ok("1µs", 1_000);
        ok("1μs", 1_000);
        ok("0.0000000009s", 0);
        ok("-0s", 0);
        ok("9223372036854775807ns", i64::MAX as u64);
        for bad in [
            "",
            "s",
            "5",
            "1d",
            ".s",
            "-",
            "+",
            "-5s",
            "5 s",
            "1s5",
            "9223372036854775808ns",
            "99999999999999999999999h",
            "3000000h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?} accepted");
        }
    }

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
