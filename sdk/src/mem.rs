//! A word-at-a-time `memcmp`/`bcmp` for guests.
//!
//! On `wasm32-unknown-unknown` the C memory functions come from Rust's
//! compiler-builtins, whose `memcmp` compares one byte per loop iteration. Placement
//! plugins compare cluster names all the time (map lookups, sorting), and names
//! share long prefixes (`gce-europe-west1-`), so that loop was a third of
//! `weighted-spread`'s profile. On wasm32 the strong definitions below replace the
//! weak built-in ones; elsewhere only [`compare`] and [`differ`] are compiled, for
//! their tests.

/// `memcmp` over two equal-length slices, eight bytes per step; the last step
/// loads the last eight bytes (overlapping the one before, whose bytes were equal),
/// and a slice under eight bytes is loaded as two overlapping halves. Words are
/// loaded little-endian (wasm has no byte swap instruction) and compared for
/// equality only; at the first differing word the lowest differing byte, which is
/// the first in memory, decides as in C.
pub(crate) fn compare(a: &[u8], b: &[u8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let (x, y) = if n >= 8 {
        let mut at = 0;
        loop {
            let (x, y) = (word(a, at), word(b, at));
            if x != y {
                break (x, y);
            }
            if at + 8 == n {
                return 0;
            }
            // The next word, or the last one when fewer than eight bytes are left.
            at = (at + 8).min(n - 8);
        }
    } else if n >= 4 {
        (halves(a, n), halves(b, n))
    } else {
        let (mut x, mut y) = (0u64, 0u64);
        for i in 0..n {
            x |= u64::from(a[i]) << (i * 8);
            y |= u64::from(b[i]) << (i * 8);
        }
        (x, y)
    };
    if x == y {
        return 0;
    }
    let byte = (x ^ y).trailing_zeros() / 8;
    i32::from((x >> (byte * 8)) as u8) - i32::from((y >> (byte * 8)) as u8)
}

/// Eight bytes of `s` from `at`, little-endian.
fn word(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w)
}

/// A slice of 4 to 7 bytes as one word: its first four bytes low, its last four
/// high (overlapping); bytes in both halves are compared twice, to no harm.
fn halves(s: &[u8], n: usize) -> u64 {
    let mut lo = [0u8; 4];
    let mut hi = [0u8; 4];
    lo.copy_from_slice(&s[..4]);
    hi.copy_from_slice(&s[n - 4..n]);
    u64::from(u32::from_le_bytes(lo)) | (u64::from(u32::from_le_bytes(hi)) << 32)
}

/// Whether two equal-length slices are equal: `bcmp`, which only promises zero
/// for equal and non-zero otherwise.
pub(crate) fn differ(a: &[u8], b: &[u8]) -> bool {
    compare(a, b) != 0
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
