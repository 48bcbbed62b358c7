//! Fuzzes the request-info parser with arbitrary methods and request targets: it must never
//! panic, and what it returns must be consistent with its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::reqinfo::RequestInfo;

const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT"];

fuzz_target!(|input: (u8, &str)| {
    let (method, target) = input;
    let method = METHODS[usize::from(method) % METHODS.len()];
    // Decoding either refuses the path or yields one with no empty or dot segment inside.
    if let Ok(decoded) = RequestInfo::from_target(method, target) {
        let inner = decoded.path().trim_matches('/');
        assert!(
            inner.is_empty() || inner.split('/').all(|s| !matches!(s, "" | "." | "..")),
            "{target:?} decoded to {:?}",
            decoded.path()
        );
    }
    let info = RequestInfo::parse(method, target);
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    assert_eq!(info.path(), path);
    if info.is_resource_request() {
        assert!(info.api_prefix() == "api" || info.api_prefix() == "apis");
        assert!(!info.resource().is_empty() || path.trim_matches('/').split('/').count() > 2);
        if info.api_prefix() == "api" {
            assert!(info.api_group().is_empty());
        }
        // Every field but the verb is one of the path's segments, or a name the query gave.
        let segments: Vec<&str> = path.split('/').collect();
        for field in [info.api_group(), info.api_version(), info.namespace(), info.resource()] {
            assert!(field.is_empty() || segments.contains(&field), "{target:?}: {field:?}");
        }
        assert!(
            info.name().is_empty()
                || segments.contains(&info.name())
                || target.contains("fieldSelector"),
            "{target:?}"
        );
        // A list becomes a watch from its query exactly when the API server would make it one.
        let query = target.split_once('?').map_or("", |(_, query)| query);
        if info.verb() == "watch" && !path.contains("/watch/") {
            assert!(mca::query::flag(query, "watch"), "{target:?}");
        }
        if info.verb() == "list" {
            assert!(!mca::query::flag(query, "watch"), "{target:?}");
        }
    } else {
        assert_eq!(info.verb(), method.to_ascii_lowercase());
        assert!(info.resource().is_empty() && info.namespace().is_empty());
    }
});
