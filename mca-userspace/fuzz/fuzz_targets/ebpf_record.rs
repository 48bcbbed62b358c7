//! Fuzzes reading the eBPF programs' original-destination records: any 20 bytes the kernel
//! could hand back name an address (no panic), and writing that address again gives the same
//! record (up to the port word's unused high bits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mca::intercept::record;
use mca_common::Destination;

fuzz_target!(|words: [u32; 5]| {
    let found = Destination {
        addr: [words[0], words[1], words[2], words[3]],
        port: words[4],
    };
    let addr = record::socket_addr(&found);
    let again = record::destination(addr);
    assert_eq!(again.addr, found.addr, "{addr}");
    assert_eq!(again.port, found.port & 0xffff, "{addr}");
    assert_eq!(record::socket_addr(&again), addr);
});
