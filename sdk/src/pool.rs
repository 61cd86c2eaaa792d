//! The guest's allocator: small blocks from free lists, one per power-of-two size.
//!
//! A plugin call allocates many small blocks and frees them before it returns: the
//! strings and lists of the request and the answer, the plugin's maps by cluster
//! name. On `wasm32-unknown-unknown` Rust's default allocator is dlmalloc, whose
//! `malloc` and `free` (bins, coalescing, chunk headers) were about a tenth of a
//! distribute call at 9 clusters. Here a block up to [`LARGEST`] bytes is taken from
//! the free list of its size class and put back on it: a few instructions each way.
//! A class with an empty list gets a run of blocks from dlmalloc, which keeps
//! serving larger blocks. Memory a class has taken is kept for it (the sandbox
//! bounds the whole), so a plugin's peak of small blocks stays reserved.
//!
//! Only compiled for wasm32 guests (single-threaded: the host runs one call at a
//! time per instance and gives plugins no threads), and with the SDK's default
//! `allocator` feature; a plugin with its own `#[global_allocator]` turns it off
//! with `default-features = false`. The class arithmetic is compiled everywhere,
//! for its tests.

/// The largest block served from a free list.
pub(crate) const LARGEST: usize = 2048;

/// The smallest block: it holds the free list's link.
const SMALLEST_SHIFT: u32 = 3;

/// Size classes: 8, 16, …, [`LARGEST`] bytes.
pub(crate) const CLASSES: usize = (LARGEST.trailing_zeros() - SMALLEST_SHIFT + 1) as usize;

/// The class of a block of `size` bytes aligned to `align`, or `None` when it is
/// larger than [`LARGEST`]. A class's blocks are aligned to their size, so one
/// large enough for `max(size, align)` is aligned enough.
pub(crate) fn class(size: usize, align: usize) -> Option<usize> {
    let need = size.max(align).max(1 << SMALLEST_SHIFT);
    if need > LARGEST {
        return None;
    }
    Some((need.next_power_of_two().trailing_zeros() - SMALLEST_SHIFT) as usize)
}

/// The size of class `c`'s blocks.
pub(crate) fn block_size(c: usize) -> usize {
    1 << (c as u32 + SMALLEST_SHIFT)
}

#[cfg(all(target_arch = "wasm32", feature = "allocator"))]
mod guest {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::UnsafeCell;
    use std::ptr;

    use super::{block_size, class, CLASSES};

    /// Bytes taken from dlmalloc at once for a class.
    const RUN: usize = 16 * 1024;

    struct Pools {
        /// The first free block of each class; each free block holds the next.
        free: UnsafeCell<[*mut u8; CLASSES]>,
    }

    // SAFETY: wasm32 guests are single-threaded (no `atomics` target feature, and
    // the host gives plugins no threads): the lists are never used concurrently.
    unsafe impl Sync for Pools {}

    #[global_allocator]
    static POOLS: Pools = Pools {
        free: UnsafeCell::new([ptr::null_mut(); CLASSES]),
    };

    unsafe impl GlobalAlloc for Pools {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let Some(c) = class(layout.size(), layout.align()) else {
                // SAFETY: the caller's layout, passed on.
                return unsafe { System.alloc(layout) };
            };
            // SAFETY: single-threaded (see `Sync`), and no other reference to the
            // lists lives across this call.
            let free = unsafe { &mut *self.free.get() };
            let head = free[c];
            if !head.is_null() {
                // SAFETY: a free block of this class holds the next one's address.
                free[c] = unsafe { head.cast::<*mut u8>().read() };
                return head;
            }
            // Empty: a run of blocks from dlmalloc, aligned to the block size; the
            // first is the answer, the rest go on the list.
            let size = block_size(c);
            let Ok(run) = Layout::from_size_align(RUN.max(size), size) else {
                return ptr::null_mut();
            };
            // SAFETY: a non-zero size.
            let start = unsafe { System.alloc(run) };
            if start.is_null() {
                return start;
            }
            let count = run.size() / size;
            for i in (1..count).rev() {
                // SAFETY: block `i` lies inside the run just allocated, aligned to
                // `size` (at least a pointer's alignment).
                unsafe {
                    let block = start.add(i * size);
                    block.cast::<*mut u8>().write(free[c]);
                    free[c] = block;
                }
            }
            start
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let Some(c) = class(layout.size(), layout.align()) else {
                // SAFETY: allocated by `System` with this layout (see `alloc`).
                unsafe { System.dealloc(ptr, layout) };
                return;
            };
            // SAFETY: single-threaded; `ptr` is a block of class `c` the caller
            // gives back, at least a pointer in size and alignment.
            unsafe {
                let free = &mut *self.free.get();
                ptr.cast::<*mut u8>().write(free[c]);
                free[c] = ptr;
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let old = class(layout.size(), layout.align());
            let new = class(new_size, layout.align());
            if old.is_some() && old == new {
                // The block is already large enough (or as small as it gets).
                return ptr;
            }
            if old.is_none() && new.is_none() {
                // SAFETY: allocated by `System` with this layout (see `alloc`).
                return unsafe { System.realloc(ptr, layout, new_size) };
            }
            // SAFETY: the `GlobalAlloc::realloc` contract, passed on.
            unsafe {
                let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
                    return ptr::null_mut();
                };
                let grown = self.alloc(new);
                if !grown.is_null() {
                    ptr::copy_nonoverlapping(ptr, grown, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                grown
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_fit_their_size_and_alignment() {
        for size in 0..=LARGEST + 1 {
            for align in [1, 2, 4, 8, 16, 64, 4096] {
                match class(size, align) {
                    Some(c) => {
                        assert!(c < CLASSES);
                        let block = block_size(c);
                        assert!(block >= size && block >= align && block >= 8);
                        assert!(block.is_power_of_two() && block <= LARGEST);
                        // The smallest class that fits.
                        assert!(c == 0 || block_size(c - 1) < size.max(align));
                    }
                    None => assert!(size.max(align) > LARGEST),
                }
            }
        }
        assert_eq!(CLASSES, 9);
        assert_eq!(class(24, 8), Some(2));
    }
}
