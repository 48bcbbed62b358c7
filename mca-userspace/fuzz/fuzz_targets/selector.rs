//! Fuzzes the label selector parser: it must never panic; what it accepts must be consistent:
//! a selector implies itself, and a label set it matches satisfies everything it implies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::route::selector::Selector;

fuzz_target!(|input: (&str, &str, Vec<(String, String)>)| {
    let (first, second, labels) = input;
    let Ok(a) = Selector::parse(first) else {
        return;
    };
    assert!(a.implies(&a), "{first:?} does not imply itself");
    let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    if let Ok(b) = Selector::parse(second)
        && a.implies(&b)
        && a.matches(label)
    {
        assert!(b.matches(label), "{first:?} implies {second:?} but not on {labels:?}");
    }
});
