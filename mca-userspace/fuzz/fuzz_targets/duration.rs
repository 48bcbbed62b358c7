//! Fuzzes the Go duration parser behind `?timeout=`: it never panics, never yields more than
//! Go's int64 nanoseconds, and agrees with MCA's flag parser where both apply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::{cli::parse_duration, limits::deadline::parse_go_duration};

fuzz_target!(|text: &str| {
    let parsed = parse_go_duration(text);
    if let Some(duration) = parsed {
        assert!(duration.as_nanos() <= i64::MAX as u128, "{text:?}: {duration:?}");
    }
    // What the flag parser accepts (`<digits><unit>`, units ms, s, m, h) Go reads the same,
    // within Go's range.
    if let Ok(flag) = parse_duration(text) {
        let in_range = flag.as_nanos() <= i64::MAX as u128;
        assert_eq!(parsed, in_range.then_some(flag), "{text:?}");
    }
});
