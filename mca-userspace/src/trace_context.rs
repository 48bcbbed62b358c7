//! W3C Trace Context (`traceparent`): MCA continues the application's trace, or starts one,
//! and sends the API server a `traceparent` naming MCA's own span as the parent, so the API
//! server's spans (kube-apiserver's `APIServerTracing`) join the application's trace with MCA
//! between them. `tracestate` passes through untouched, as every other header does.
//!
//! `traceparent: {version}-{trace-id}-{parent-id}-{trace-flags}`, lower-case hex:
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.

use std::{fmt, io::Write as _};

use http::{HeaderMap, HeaderValue};

/// The header's name.
pub const TRACEPARENT: &str = "traceparent";

/// The `sampled` trace flag.
const SAMPLED: u8 = 0x01;

/// `00-` trace id `-` span id `-` flags: 2 + 1 + 32 + 1 + 16 + 1 + 2.
const TRACEPARENT_LEN: usize = 55;

/// Where a request sits in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace, 16 bytes, never all zero.
    pub trace_id: u128,
    /// The span this context names as the parent of the next: 8 bytes, never zero.
    pub span_id: u64,
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` value as the W3C specification says a receiver must: version
    /// `00` exactly as specified; a later version by its `00` prefix when followed by `-` or
    /// nothing; version `ff`, upper-case hex, all-zero ids refused.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let version = hex_u8(value.get(0..2)?)?;
        if version == 0xff || value.get(2) != Some(&b'-') {
            return None;
        }
        let rest = value.get(3..)?;
        if rest.len() < 52 || (version == 0 && rest.len() != 52) {
            return None;
        }
        if version != 0 && rest.len() > 52 && rest[52] != b'-' {
            return None;
        }
        let (trace, rest) = rest.split_at(32);
        let (dash, rest) = rest.split_at(1);
        let (span, rest) = rest.split_at(16);
        let (dash2, flags) = rest.split_at(1);
        if dash != b"-" || dash2 != b"-" {
            return None;
        }
        let trace_id = u128::from_str_radix(hex_str(trace)?, 16).ok()?;
        let span_id = u64::from_str_radix(hex_str(span)?, 16).ok()?;
        let flags = hex_u8(&flags[..2])?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The context the request `headers` carry, if any (one that does not parse is none: the
    /// specification says to restart the trace).
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        headers
            .get(TRACEPARENT)
            .and_then(|value| Self::parse(value.as_bytes()))
    }

    /// A new trace, not sampled.
    pub fn root() -> Self {
        Self {
            trace_id: fastrand::u128(1..),
            span_id: fastrand::u64(1..),
            flags: 0,
        }
    }

    /// The same trace with a new span: MCA's hop.
    pub fn child(&self) -> Self {
        Self {
            span_id: fastrand::u64(1..),
            ..*self
        }
    }

    /// Whether the trace is sampled.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The trace id as 32 hex digits, as the access log and the API server's logs print it.
    pub fn trace_id_hex(&self) -> TraceIdHex {
        let mut digits = [0u8; 32];
        let mut cursor = &mut digits[..];
        write!(cursor, "{:032x}", self.trace_id).expect("32 digits fit");
        TraceIdHex(digits)
    }

    /// Sets `traceparent` in `headers` to this context (version `00`).
    pub fn inject(&self, headers: &mut HeaderMap) {
        // On the stack: a `String` grown digit by digit was three allocations per request.
        let mut value = [0u8; TRACEPARENT_LEN];
        let mut cursor = &mut value[..];
        write!(cursor, "{self}").expect("a traceparent fits");
        let value = HeaderValue::from_bytes(&value).expect("hex and dashes");
        headers.insert(TRACEPARENT, value);
    }
}

/// A trace id's 32 hex digits, on the stack: the access log prints one per request.
#[derive(Debug, Clone, Copy)]
pub struct TraceIdHex([u8; 32]);

impl TraceIdHex {
    /// The digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits")
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// `bytes` when they are lower-case hex digits only.
fn hex_str(bytes: &[u8]) -> Option<&str> {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        .then(|| std::str::from_utf8(bytes).ok())
        .flatten()
}

fn hex_u8(bytes: &[u8]) -> Option<u8> {
    u8::from_str_radix(hex_str(bytes)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specifications_example_and_prints_it_back() {
        let context = TraceContext::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(context.span_id, 0x00f067aa0ba902b7);
        assert!(context.sampled());
        assert_eq!(context.to_string(), EXAMPLE);
        assert_eq!(
            context.trace_id_hex().as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn refuses_what_the_specification_says_to_restart() {
        for bad in [
            "",
            "00",
            // Upper case, all-zero ids, version ff, wrong lengths, bad separators.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_prefix() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        let context = TraceContext::parse(later.as_bytes()).unwrap();
        assert_eq!(context.span_id, 0x00f067aa0ba902b7);
        let exact = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!TraceContext::parse(exact.as_bytes()).unwrap().sampled());
    }

    #[test]
    fn a_request_continues_its_trace_or_starts_one_unsampled() {
        let mut headers = HeaderMap::new();
        assert_eq!(TraceContext::of(&headers), None);
        let fresh = TraceContext::root();
        assert_ne!((fresh.trace_id, fresh.span_id), (0, 0));
        assert!(!fresh.sampled());
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-bad"));
        assert_eq!(TraceContext::of(&headers), None);
        headers.insert(TRACEPARENT, HeaderValue::from_static(EXAMPLE));
        let continued = TraceContext::of(&headers).unwrap();
        let hop = continued.child();
        assert_eq!(hop.trace_id, continued.trace_id);
        assert_ne!(hop.span_id, continued.span_id);
        assert_eq!(hop.flags, 0x01);
        hop.inject(&mut headers);
        assert_eq!(
            TraceContext::parse(headers[TRACEPARENT].as_bytes()),
            Some(hop)
        );
    }
}
