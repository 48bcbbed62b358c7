//! Fuzzes the reading and rewriting of a cluster's watch events for a merged watch: any
//! line never panics; what is read as an event comes out as one JSON line, and a plain
//! object's event, rewritten from its `metadata` alone, is the event rewritten whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::fanout::{
    merge::{self, Event, Object, WatchEvent},
    token::Versions,
};
use serde_json::{Value, json};

fuzz_target!(|line: &[u8]| {
    let Some(parsed) = WatchEvent::parse(line) else {
        return;
    };
    let plain = matches!(parsed.object, Object::Plain(_));
    let kind = parsed.kind.to_string();
    let mut versions = Versions::default();
    let Event::Send { line: sent, version } = merge::event(parsed, "east", &mut versions) else {
        return;
    };
    assert_eq!(sent.last(), Some(&b'\n'));
    assert_eq!(version, versions.encode());
    // What a `Value` does not hold (a number out of range) is copied, not checked.
    let Ok(mut whole) = serde_json::from_slice::<Value>(line) else {
        return;
    };
    let sent: Value = serde_json::from_slice(&sent).expect("a JSON line");
    assert_eq!(sent["type"], kind.as_str());
    if plain {
        // serde_json keeps the last of repeated keys, as the shallow read does.
        let object = &mut whole["object"];
        if kind != "BOOKMARK" {
            merge::annotate(object, "east");
        } else if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        object["metadata"]["resourceVersion"] = json!(version);
        assert_eq!(sent["object"], *object);
    }
});
