//! Fuzzes the scanner that splits a cluster's list as it streams into a merged LIST: any
//! bytes, cut into chunks anywhere, never panic; a JSON object is always accepted, and its
//! `items` come out one per element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::fanout::scan::{Piece, Scanner};

fuzz_target!(|input: (u8, &[u8])| {
    let (size, data) = input;
    let mut scanner = Scanner::new(data.len() + 1);
    let mut pieces = Vec::new();
    let scanned = data
        .chunks(usize::from(size).max(1))
        .try_for_each(|chunk| scanner.feed(chunk, &mut pieces))
        .and_then(|()| scanner.finish());
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(data) else {
        return;
    };
    assert!(scanned.is_ok(), "{scanned:?}");
    // serde_json keeps the last of repeated keys; the scanner passes every one on.
    if let Some(serde_json::Value::Array(items)) = object.get("items") {
        let passed = pieces.iter().filter(|p| matches!(p, Piece::Item(_))).count();
        assert!(passed >= items.len());
    }
});
