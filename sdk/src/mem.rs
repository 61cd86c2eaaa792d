//! A word-at-a-time `memcmp`/`bcmp` for guests.
//!
//! On `wasm32-unknown-unknown` the C memory functions come from Rust's
//! compiler-builtins, whose `memcmp` compares one byte per loop iteration. Placement
//! plugins compare cluster names all the time (map lookups, sorting), and names
//! share long prefixes (`gce-europe-west1-`), so that loop was a third of
//! `weighted-spread`'s profile. On wasm32 the strong definitions below replace the
//! weak built-in ones; elsewhere only [`compare`] and [`differ`] are compiled, for
//! their tests.

/// `memcmp` over two equal-length slices, eight bytes per step. Words are loaded
/// little-endian (wasm has no byte swap instruction) and compared for equality only;
/// at the first differing word the lowest differing byte, which is the first in
/// memory, decides as in C.
pub(crate) fn compare(a: &[u8], b: &[u8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    let mut chunks_a = a.chunks_exact(8);
    let mut chunks_b = b.chunks_exact(8);
    for (x, y) in (&mut chunks_a).zip(&mut chunks_b) {
        let x = u64::from_le_bytes(x.try_into().unwrap_or_default());
        let y = u64::from_le_bytes(y.try_into().unwrap_or_default());
        if x != y {
            let byte = (x ^ y).trailing_zeros() / 8;
            return i32::from((x >> (byte * 8)) as u8) - i32::from((y >> (byte * 8)) as u8);
        }
    }
    let (rest_a, rest_b) = (chunks_a.remainder(), chunks_b.remainder());
    let (mut x, mut y) = (0u64, 0u64);
    for (i, (p, q)) in rest_a.iter().zip(rest_b).enumerate() {
        x |= u64::from(*p) << (i * 8);
        y |= u64::from(*q) << (i * 8);
    }
    if x == y {
        return 0;
    }
    let byte = (x ^ y).trailing_zeros() / 8;
    i32::from((x >> (byte * 8)) as u8) - i32::from((y >> (byte * 8)) as u8)
}

/// Whether two equal-length slices are equal: `bcmp`, which only promises zero
/// for equal and non-zero otherwise.
pub(crate) fn differ(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let mut chunks_a = a.chunks_exact(8);
    let mut chunks_b = b.chunks_exact(8);
    for (x, y) in (&mut chunks_a).zip(&mut chunks_b) {
        if u64::from_le_bytes(x.try_into().unwrap_or_default())
            != u64::from_le_bytes(y.try_into().unwrap_or_default())
        {
            return true;
        }
    }
    chunks_a.remainder() != chunks_b.remainder()
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
    i32::from(differ(a, b))
}

#[cfg(test)]
mod tests {
    use super::{compare, differ};

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
                assert_eq!(differ(&a[..n], &b[..n]), a[..n] != b[..n], "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn the_first_difference_decides_at_every_position() {
        for len in 0..20 {
            for at in 0..len {
                for (x, y) in [(0u8, 1u8), (1, 0), (0x7f, 0x80), (0xff, 0), (0, 0xff)] {
                    let mut a = vec![b'c'; len];
                    let mut b = a.clone();
                    a[at] = x;
                    b[at] = y;
                    // A later byte that points the other way must not matter.
                    if at + 1 < len {
                        a[at + 1] = 0;
                        b[at + 1] = 0xff;
                    }
                    let want = a.cmp(&b) as i32;
                    assert_eq!(compare(&a, &b).signum(), want, "{a:?} {b:?}");
                    assert!(differ(&a, &b));
                    assert_eq!(compare(&a, &a), 0);
                    assert!(!differ(&a, &a));
                }
            }
        }
    }
}
