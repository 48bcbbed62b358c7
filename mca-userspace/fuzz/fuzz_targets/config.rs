//! Fuzzes the routing configuration parser and checker with arbitrary text, under both
//! schemas: it must never panic, every problem it reports must name a line inside the text,
//! and what the restricted schema accepts the full one accepts too.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mca::config::{Config, ParseError, Schema};

fuzz_target!(|text: &str| {
    let base = Path::new("/etc/mca");
    let full = Config::parse(text, base, Schema::Full);
    let restricted = Config::parse(text, base, Schema::Restricted);
    if restricted.is_ok() {
        assert!(full.is_ok(), "restricted accepted what full refused");
    }
    for parsed in [full, restricted] {
        if let Err(ParseError::Invalid(problems)) = parsed {
            assert!(!problems.is_empty());
            // Lines as YAML counts them: `\r\n`, `\n` and a lone `\r` each end one.
            let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() as u64 + 1;
            for problem in problems {
                assert!(problem.line >= 1 && problem.line <= lines, "{problem} of {lines} lines");
            }
        }
    }
});
