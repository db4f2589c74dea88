//! The process allocator: the system allocator, except that very large requests are served
//! by lazily backed `MAP_NORESERVE` mappings.
//!
//! Runs on: every thread (installed as `#[global_allocator]` by the osprey library).
//!
//! Why: the kafka-protocol crate decodes an array by calling `Vec::with_capacity(n)` with
//! the element count read off the wire, before it has read a single element. A 16-byte
//! request announcing 2^32 elements asks for hundreds of GB; with Linux's default
//! overcommit heuristic that request fails and Rust aborts the whole broker. Served as a
//! `MAP_NORESERVE` mapping, the reservation costs nothing: decoding then fails on the
//! missing bytes and the mapping is released. Real memory is only touched as elements are
//! decoded, which the checked frame length bounds.

use std::alloc::{GlobalAlloc, Layout, System};

/// Requests at or above this size bypass malloc.
pub const HUGE_ALLOCATION_MIN_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

pub struct OspreyAllocator;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_ALLOCATION_MIN_BYTES && layout.align() <= PAGE_BYTES
}

unsafe impl GlobalAlloc for OspreyAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // SAFETY: an anonymous private mapping; the kernel returns page-aligned memory.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return std::ptr::null_mut();
            }
            return p.cast();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // Fresh anonymous mappings are zero-filled.
            return unsafe { self.alloc(layout) };
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
            return;
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_huge(&layout) && !is_huge(&new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing the threshold: move between the two kinds of memory.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A reservation far beyond RAM succeeds, is writable where touched, and is released;
    // growing across the threshold keeps the contents.
    #[test]
    fn huge_reservations_are_lazy_and_sound() {
        let a = OspreyAllocator;
        unsafe {
            let layout = Layout::from_size_align(300 << 30, 8).unwrap();
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            assert_eq!(*p, 7);
            a.dealloc(p, layout);

            let small = Layout::from_size_align(16, 8).unwrap();
            let q = a.alloc(small);
            *q = 42;
            let r = a.realloc(q, small, HUGE_ALLOCATION_MIN_BYTES);
            assert_eq!(*r, 42);
            let s = a.realloc(
                r,
                Layout::from_size_align(HUGE_ALLOCATION_MIN_BYTES, 8).unwrap(),
                32,
            );
            assert_eq!(*s, 42);
            a.dealloc(s, Layout::from_size_align(32, 8).unwrap());
        }
    }
}
