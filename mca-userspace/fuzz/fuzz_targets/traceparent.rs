//! Fuzzes the W3C `traceparent` parser: it never panics, what it accepts prints back as a
//! version-00 header that parses to the same context, and a version-00 header it accepts is
//! exactly what it prints.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::trace_context::TraceContext;

fuzz_target!(|value: &[u8]| {
    let Some(context) = TraceContext::parse(value) else {
        return;
    };
    assert_ne!(context.trace_id, 0);
    assert_ne!(context.span_id, 0);
    let printed = context.to_string();
    assert_eq!(TraceContext::parse(printed.as_bytes()), Some(context));
    if value.starts_with(b"00-") {
        assert_eq!(printed.as_bytes(), value);
    }
    assert_eq!(context.child().trace_id, context.trace_id);
});
