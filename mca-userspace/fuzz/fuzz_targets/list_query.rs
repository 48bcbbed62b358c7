//! Fuzzes what the list cache answers: the `--list-cache` resource parser and the LIST query
//! parser must never panic; a resource that parses prints back to itself; a query that parses
//! names a configured resource and a namespace taken from the path.
//!
//! Input: a resource spec, a newline, a request target (`path?query`), a newline, an Accept
//! header (optional).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::cluster::lists::{Query, Resource};

fuzz_target!(|input: &str| {
    let mut lines = input.splitn(3, '\n');
    let (spec, target, accept) = (lines.next().unwrap_or_default(), lines.next(), lines.next());
    let Ok(resource) = spec.parse::<Resource>() else {
        return;
    };
    assert_eq!(resource.to_string().parse::<Resource>(), Ok(resource.clone()));
    let Some(target) = target else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let resources = [resource];
    if let Some(parsed) = Query::parse(&resources, path, query, accept) {
        assert_eq!(parsed.resource, 0);
        if let Some(namespace) = &parsed.namespace {
            assert!(path.contains(&format!("/namespaces/{namespace}/")), "{path}");
        }
        let _ = parsed.matches("ns", "name", |key| (key == "app").then_some("web"));
    }
});
