//! Durations as Kubernetes writes them: Go's `time.Duration` syntax (`500ms`, `30s`,
//! `1m30s`, `1.5h`), for `?timeout=` as the API server reads it, and for MCA's own flags
//! and configuration, so that one syntax works everywhere.

use std::time::Duration;

/// Parses a Go `time.Duration` string (`32s`, `1m30s`, `1.5h`, `250ms`, `0`); `None` when Go
/// would refuse it, when it is negative (the API server then ignores it), or on overflow.
pub fn go(text: &str) -> Option<Duration> {
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

/// [`go`], with a message for a flag or a configuration field that is not a duration.
pub fn parse(text: &str) -> Result<Duration, String> {
    go(text).ok_or_else(|| {
        format!("{text:?} is not a duration (Go's form: 500ms, 30s, 1m30s, 1.5h; not negative)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |text: &str, nanos: u64| {
            assert_eq!(go(text), Some(Duration::from_nanos(nanos)), "{text}");
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
            assert_eq!(go(bad), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn flags_take_what_go_takes_and_say_what_they_do_not() {
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "10", "1d", "-1s"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("not a duration"), "{bad:?}: {error}");
        }
    }
}
