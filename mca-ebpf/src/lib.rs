//! The library target exists so `mca-userspace` can name this crate as a build dependency
//! (and rebuild when it changes); the programs are the `mca` binary built for
//! `bpfel-unknown-none`.
#![no_std]
