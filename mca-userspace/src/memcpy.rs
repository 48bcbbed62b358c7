//! Tests of the static build's memcpy and memmove (`csrc/memcpy.c`, which says why they
//! exist), compiled by the build script under their own names on every x86-64 target: every
//! length past the `rep movsb` threshold at every alignment, the overlapping forward copies
//! musl's memmove handed memcpy as `__memcpy_fwd`, and overlapping moves either way.

#[allow(unsafe_code, reason = "calls the C function under test")]
mod c {
    use std::ffi::c_void;

    unsafe extern "C" {
        fn mca_memcpy(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void;
        fn mca_memmove(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void;
    }

    /// Copies `n` bytes of `buf` from `src` to `dst` with `mca_memcpy`; forward copies only:
    /// `dst` below `src`, or the ranges apart.
    pub fn copy_forward(buf: &mut [u8], src: usize, dst: usize, n: usize) {
        assert!(src.max(dst) + n <= buf.len());
        assert!(dst <= src || dst >= src + n, "a backward copy is memmove's");
        let base = buf.as_mut_ptr();
        // SAFETY: both ranges lie inside `buf` (asserted), which is borrowed mutably, and a
        // forward copy is what `__memcpy_fwd` promises for overlapping ranges.
        let returned = unsafe { mca_memcpy(base.add(dst).cast(), base.add(src).cast(), n) };
        assert_eq!(returned.cast::<u8>(), base.wrapping_add(dst));
    }

    /// Moves `n` bytes of `buf` from `src` to `dst` with `mca_memmove`, however they overlap.
    pub fn move_within(buf: &mut [u8], src: usize, dst: usize, n: usize) {
        assert!(src.max(dst) + n <= buf.len());
        let base = buf.as_mut_ptr();
        // SAFETY: both ranges lie inside `buf` (asserted), which is borrowed mutably; memmove
        // allows any overlap.
        let returned = unsafe { mca_memmove(base.add(dst).cast(), base.add(src).cast(), n) };
        assert_eq!(returned.cast::<u8>(), base.wrapping_add(dst));
    }
}

/// Lengths around every threshold of the C code, and past the `rep movsb` one.
fn lengths() -> impl Iterator<Item = usize> {
    (0..=300).chain([511, 512, 513, 1000, 4096, 4097, 65_537])
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn copies_every_length_at_every_alignment() {
    for n in lengths() {
        for src in 0..16 {
            for dst in 0..16 {
                let mut buf = pattern(2 * n + 64);
                let mut want = buf.clone();
                let to = n + 32 + dst;
                want.copy_within(src..src + n, to);
                c::copy_forward(&mut buf, src, to, n);
                assert!(
                    buf == want,
                    "n {n}, source offset {src}, destination offset {dst}"
                );
            }
        }
    }
}

#[test]
fn copies_forward_onto_an_overlapping_source_above() {
    for n in lengths() {
        let shifts = (1..=40).chain([n / 2, n.saturating_sub(1)]);
        for shift in shifts.filter(|shift| *shift > 0) {
            let mut buf = pattern(n + shift + 8);
            let mut want = buf.clone();
            want.copy_within(shift..shift + n, 0);
            c::copy_forward(&mut buf, shift, 0, n);
            assert!(buf == want, "n {n}, shift {shift}");
        }
    }
}

#[test]
fn moves_every_length_either_way_over_its_own_source() {
    for n in lengths() {
        let shifts = (0..=40).chain([n / 2, n.saturating_sub(1), n, n + 3]);
        for shift in shifts {
            for (src, dst) in [(0, shift), (shift, 0)] {
                let mut buf = pattern(n + shift + 8);
                let mut want = buf.clone();
                want.copy_within(src..src + n, dst);
                c::move_within(&mut buf, src, dst, n);
                assert!(buf == want, "n {n}, from {src} to {dst}");
            }
        }
    }
}

#[test]
fn moves_apart_at_every_alignment() {
    for n in [0, 1, 17, 33, 255, 257, 4097] {
        for src in 0..16 {
            for dst in 0..16 {
                for (from, to) in [(src, n + 32 + dst), (n + 32 + src, dst)] {
                    let mut buf = pattern(2 * n + 64);
                    let mut want = buf.clone();
                    want.copy_within(from..from + n, to);
                    c::move_within(&mut buf, from, to, n);
                    assert!(buf == want, "n {n}, from {from} to {to}");
                }
            }
        }
    }
}
