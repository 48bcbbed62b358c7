//! Fuzzes the Go duration parser behind `?timeout=`, the flags and the configuration: it
//! never panics, never yields more than Go's int64 nanoseconds, and the flags' form accepts
//! exactly what it does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::duration;

fuzz_target!(|text: &str| {
    let parsed = duration::go(text);
    if let Some(duration) = parsed {
        assert!(duration.as_nanos() <= i64::MAX as u128, "{text:?}: {duration:?}");
    }
    assert_eq!(duration::parse(text).ok(), parsed, "{text:?}");
});
