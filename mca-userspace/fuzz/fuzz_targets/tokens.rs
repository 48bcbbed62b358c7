//! Fuzzes the fan-out tokens clients hand back (composite resourceVersions and continue
//! tokens): decoding arbitrary text never panics, and what decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::fanout::token::{Continue, Versions};

fuzz_target!(|text: &str| {
    if let Ok(Some(versions)) = Versions::decode(text) {
        assert_eq!(Versions::decode(&versions.encode()), Ok(Some(versions)));
    }
    if let Ok(token) = Continue::decode(text) {
        assert_eq!(Continue::decode(&token.encode()), Ok(token));
    }
});
