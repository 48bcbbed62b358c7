//! Fuzzes the routing configuration parser and checker with arbitrary text: it must never
//! panic, and every problem it reports must name a line inside the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mca::config::{Config, ParseError};

fuzz_target!(|text: &str| {
    if let Err(ParseError::Invalid(problems)) = Config::parse(text, Path::new("/etc/mca")) {
        assert!(!problems.is_empty());
        // Lines as YAML counts them: `\r\n`, `\n` and a lone `\r` each end one.
        let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() as u64 + 1;
        for problem in problems {
            assert!(problem.line >= 1 && problem.line <= lines, "{problem} of {lines} lines");
        }
    }
});
