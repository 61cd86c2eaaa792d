//! A word-at-a-time `memcmp`/`bcmp` for guests.
//!
//! On `wasm32-unknown-unknown` the C memory functions come from Rust's
//! compiler-builtins, whose `memcmp` compares one byte per loop iteration. Placement
//! plugins compare cluster names all the time (map lookups, sorting), and names
//! share long prefixes (`gce-europe-west1-`), so that loop was a third of
//! `weighted-spread`'s profile. On wasm32 the strong definitions below replace the
//! weak built-in ones; elsewhere only [`compare`] is compiled, for its tests.

/// `memcmp` over two equal-length slices: eight bytes per step, big-endian loads,
/// so the first differing byte decides as in C.
pub(crate) fn compare(a: &[u8], b: &[u8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    let mut chunks_a = a.chunks_exact(8);
    let mut chunks_b = b.chunks_exact(8);
    for (x, y) in (&mut chunks_a).zip(&mut chunks_b) {
        let x = u64::from_be_bytes(x.try_into().unwrap_or_default());
        let y = u64::from_be_bytes(y.try_into().unwrap_or_default());
        if x != y {
            return if x < y { -1 } else { 1 };
        }
    }
    for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        if x != y {
            return i32::from(*x) - i32::from(*y);
        }
    }
    0
}

/// # Safety
/// `a` and `b` must be readable for `n` bytes (the C contract).
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    // SAFETY: the caller guarantees `n` readable bytes at both pointers.
    let (a, b) = unsafe {
        (
            core::slice::from_raw_parts(a, n),
            core::slice::from_raw_parts(b, n),
        )
    };
    compare(a, b)
}

/// # Safety
/// As for [`memcmp`].
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::compare;

    #[test]
    fn orders_like_memcmp() {
        let words: [&[u8]; 9] = [
            b"",
            b"a",
            b"cluster-009",
            b"cluster-010",
            b"cluster-10",
            b"gce-europe-west1-b",
            b"gce-europe-west1-c",
            b"\xffzzzzzzzzz",
            b"zz",
        ];
        for a in words {
            for b in words {
                let n = a.len().min(b.len());
                let want = a[..n].cmp(&b[..n]) as i32;
                assert_eq!(compare(&a[..n], &b[..n]).signum(), want, "{a:?} {b:?}");
            }
        }
    }
}
