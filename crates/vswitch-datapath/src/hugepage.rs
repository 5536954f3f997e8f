//! A global allocator that backs large allocations with transparent huge pages.
//!
//! A MAC table of a million entries is a 64 MiB hash table probed at random: on 4 KiB pages
//! every lookup is a likely TLB miss, and the decision at 1M MACs costs ~10% more than with huge
//! pages (measured with `cargo bench --bench forwarding`). Most systems run THP in `madvise`
//! mode, so the pages must be asked for: this allocator passes everything to the system
//! allocator and, for allocations of 4 MiB and more, advises `MADV_HUGEPAGE` over their 2 MiB
//! aligned interior. Small allocations are untouched. The `vswitch` binary installs it with
//! `#[global_allocator]`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Huge page size on x86-64 and arm64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Allocations at least this large get the advice: two huge pages, so one aligned page fits.
const THRESHOLD: usize = 2 * HUGE_PAGE;

/// The system allocator, asking for huge pages behind large allocations.
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageAlloc;

/// Advises huge pages over the whole 2 MiB pages inside `[ptr, ptr + len)`.
fn advise_huge(ptr: *mut u8, len: usize) {
    if ptr.is_null() || len < THRESHOLD {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize + len) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside the allocation just made, which this process owns;
        // MADV_HUGEPAGE only changes how the kernel backs the range, never its contents. A
        // failure (THP disabled) is harmless and ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

// SAFETY: every call is passed to the system allocator with the caller's arguments unchanged;
// the only addition is `madvise` over memory the returned block owns.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        advise_huge(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on as is.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        advise_huge(ptr, layout.size());
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        advise_huge(new, new_size);
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_blocks_work_as_usual() {
        let a = HugePageAlloc;
        for size in [16, 4096, THRESHOLD, 3 * THRESHOLD + 123] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: a non-zero size, a valid layout; freed below with the same layout.
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert_eq!(*p.add(size - 1), 0);
                *p.add(size - 1) = 7;
                let q = a.realloc(p, layout, size * 2);
                assert_eq!(*q.add(size - 1), 7, "realloc keeps the contents");
                a.dealloc(q, Layout::from_size_align(size * 2, 64).unwrap());
            }
        }
    }
}
