//! A word-at-a-time `memcmp`/`bcmp` for guests.
//!
//! On `wasm32-unknown-unknown` the C memory functions come from Rust's
//! compiler-builtins, whose `memcmp` compares one byte per loop iteration. Placement
//! plugins compare cluster names all the time (map lookups, sorting), and names
//! share long prefixes (`gce-europe-west1-`), so that loop was a third of
//! `weighted-spread`'s profile. On wasm32 the strong definitions below replace the
//! weak built-in ones; elsewhere they are compiled for their tests only.

/// `memcmp` over two equal-length slices (see [`compare_raw`]), for the tests.
#[cfg(test)]
fn compare(a: &[u8], b: &[u8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    // SAFETY: both slices are readable for the shorter one's length.
    unsafe { compare_raw(a.as_ptr(), b.as_ptr(), a.len().min(b.len())) }
}

/// Whether two equal-length slices are equal (see [`differ_raw`]), for the tests.
#[cfg(test)]
fn differ(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    // SAFETY: as in `compare`.
    unsafe { differ_raw(a.as_ptr(), b.as_ptr(), a.len().min(b.len())) }
}

/// Loads the eight bytes at `p`, little-endian.
///
/// # Safety
/// `p` must be readable for 8 bytes.
#[inline(always)]
unsafe fn word(p: *const u8) -> u64 {
    // SAFETY: the caller's promise; any alignment.
    u64::from_le(unsafe { p.cast::<u64>().read_unaligned() })
}

/// The first and last four of 4 to 7 bytes at `p` as one word, first four low:
/// they overlap, and bytes in both halves are compared twice, to no harm.
///
/// # Safety
/// `p` must be readable for `n` bytes, `4 <= n < 8`.
#[inline(always)]
unsafe fn halves(p: *const u8, n: usize) -> u64 {
    // SAFETY: the caller's promise; any alignment.
    unsafe {
        let lo = u32::from_le(p.cast::<u32>().read_unaligned());
        let hi = u32::from_le(p.add(n - 4).cast::<u32>().read_unaligned());
        u64::from(lo) | (u64::from(hi) << 32)
    }
}

/// The first, middle and last of 1 to 3 bytes at `p` (in memory order, some of
/// them the same byte) as one word.
///
/// # Safety
/// `p` must be readable for `n` bytes, `1 <= n < 4`.
#[inline(always)]
unsafe fn bytes(p: *const u8, n: usize) -> u64 {
    // SAFETY: the caller's promise: every offset is below `n`.
    unsafe { u64::from(*p) | (u64::from(*p.add(n / 2)) << 8) | (u64::from(*p.add(n - 1)) << 16) }
}

/// The first pair of words that differ, or `None` when the `n` bytes are equal.
/// Words are compared eight bytes at a time; the last step loads the last eight
/// bytes (overlapping the step before, whose bytes were equal). Under eight bytes,
/// as [`halves`] or [`bytes`]. Loaded little-endian (wasm has no byte swap
/// instruction), so the lowest differing byte of a differing pair is the first
/// differing byte in memory.
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
#[inline(always)]
unsafe fn first_difference(a: *const u8, b: *const u8, n: usize) -> Option<(u64, u64)> {
    // SAFETY: every load below stays within the `n` readable bytes.
    unsafe {
        let (x, y) = if n >= 8 {
            let mut at = 0;
            loop {
                let (x, y) = (word(a.add(at)), word(b.add(at)));
                if x != y {
                    break (x, y);
                }
                if at + 8 == n {
                    return None;
                }
                // The next word, or the last one when fewer than eight bytes are left.
                at = if at + 16 <= n { at + 8 } else { n - 8 };
            }
        } else if n >= 4 {
            (halves(a, n), halves(b, n))
        } else if n > 0 {
            (bytes(a, n), bytes(b, n))
        } else {
            return None;
        };
        (x != y).then_some((x, y))
    }
}

/// `memcmp`: the first differing byte decides, as in C.
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
unsafe fn compare_raw(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise.
    match unsafe { first_difference(a, b, n) } {
        None => 0,
        Some((x, y)) => {
            let byte = (x ^ y).trailing_zeros() / 8;
            i32::from((x >> (byte * 8)) as u8) - i32::from((y >> (byte * 8)) as u8)
        }
    }
}

/// `bcmp`: whether the bytes differ.
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
unsafe fn differ_raw(a: *const u8, b: *const u8, n: usize) -> bool {
    // SAFETY: the caller's promise.
    unsafe { first_difference(a, b, n) }.is_some()
}

/// # Safety
/// `a` and `b` must be readable for `n` bytes (the C contract).
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise.
    unsafe { compare_raw(a, b, n) }
}

/// # Safety
/// As for [`memcmp`].
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise.
    i32::from(unsafe { differ_raw(a, b, n) })
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
