//! Tests of the static build's memcpy (`csrc/memcpy.c`, which says why it exists), compiled
//! by the build script under its own name on every x86-64 target: every length past the
//! `rep movsb` threshold at every alignment, and the overlapping forward copies musl's
//! memmove hands it as `__memcpy_fwd`.

#[allow(unsafe_code, reason = "calls the C function under test")]
mod c {
    use std::ffi::c_void;

    unsafe extern "C" {
        fn mca_memcpy(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void;
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
