//! The process's allocator: mimalloc, called the way its fast paths want, and its options.
//!
//! The ingest path allocates many short-lived buffers per event; glibc malloc showed up
//! at about a tenth of the server's CPU in profiles, so ferry uses mimalloc. The
//! `mimalloc` crate's allocator passes every request to `mi_malloc_aligned`, whose fast
//! path covers only blocks of at most 1 KiB: every larger one (request bodies, stored
//! events, frames) went through its generic aligned path and often its over-allocating
//! fallback, which also marks the page as holding interior pointers and slows the `free`.
//! Under callgrind that was about 1,900 instructions of 63,000 per single-event request.
//! [`Allocator`] asks for plain `mi_malloc` whenever that alignment is guaranteed.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

#[global_allocator]
static GLOBAL: Allocator = Allocator;

/// mimalloc, through its unaligned entry points when they give enough alignment.
pub(crate) struct Allocator;

/// The alignment every mimalloc block of at least this many bytes has (its
/// `MI_MAX_ALIGN_SIZE` on 64-bit targets: block sizes from 16 bytes up are multiples of
/// 16 and pages start 16-aligned), and every block has half of it (8-byte blocks).
const GUARANTEED_ALIGN: usize = 16;

/// Whether `mi_malloc(layout.size())` is aligned enough for `layout`.
#[inline]
fn plain(layout: Layout) -> bool {
    layout.align() <= GUARANTEED_ALIGN / 2 || (layout.align() <= GUARANTEED_ALIGN && layout.size() >= GUARANTEED_ALIGN)
}

// SAFETY: every block comes from mimalloc and goes back to it: `mi_free` and
// `mi_realloc*` take blocks from any of its allocation functions, aligned or not. A plain
// `mi_malloc` is used only when `plain` holds, and then mimalloc guarantees the alignment
// (see `GUARANTEED_ALIGN`); otherwise the aligned functions are called, as the `mimalloc`
// crate does. `realloc` keeps the old layout's alignment, which `plain` checks with the
// new size.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl; the new layout has `layout`'s alignment and `new_size`.
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            if plain(new) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// How long mimalloc keeps freed memory before it returns it to the OS, in ms. Under the
/// HTTP benchmark's batches (sync=always, 15 s closed loop) its default, 1,000, peaked at
/// 93-103 MB RSS; 100 set here peaked at 86-91 MB (80-83 MB set through the environment)
/// with the same throughput; 0 cost a quarter of it. `MIMALLOC_PURGE_DELAY` (or its old
/// name `MIMALLOC_RESET_DELAY`) in the environment still wins.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// `mi_option_purge_delay` of the mimalloc (v3) that `libmimalloc-sys` builds; the crate
/// names no constant for it. The test below checks that it reads as a purge delay.
const MI_OPTION_PURGE_DELAY: mi::mi_option_t = 15;

/// Set the allocator's options (before the runtime starts its threads).
#[allow(unsafe_code)]
pub(crate) fn tune() {
    // mimalloc also reads the option's old name.
    if ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"].iter().any(|name| std::env::var_os(name).is_some()) {
        return;
    }
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table and may be
    // called at any time; the option id is one the linked mimalloc defines.
    unsafe { mi::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_mimallocs_purge_delay_and_is_set() {
        // SAFETY: `mi_option_get` reads an integer from mimalloc's option table.
        let get = || unsafe { mi::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // Its documented default (1,000 ms in v3), unless the environment or this test set
        // it: any other value means the id names another option.
        let before = get();
        assert!(before == 1000 || before == PURGE_DELAY_MS, "option 15 reads {before}");
        if ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"].iter().all(|name| std::env::var_os(name).is_none()) {
            tune();
            assert_eq!(get(), PURGE_DELAY_MS);
        }
    }

    fn aligned(block: *mut u8, align: usize, what: &str, size: usize) -> *mut u8 {
        assert!(!block.is_null() && block.addr().is_multiple_of(align), "{what} block of {size} bytes at {align}");
        block
    }

    /// Blocks of every size class up to 64 KiB and every alignment up to 4 KiB, fresh,
    /// zeroed and regrown, have the alignment asked for and keep their bytes.
    #[test]
    fn every_block_has_its_layouts_alignment() {
        let sizes = (1..=64).chain([100, 127, 128, 129, 1000, 1024, 1025, 1200, 4095, 8192, 16_000, 65_536]);
        let mut held = Vec::new();
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: `layout` has a non-zero size; each block is freed below with
                // the layout it has then.
                #[allow(unsafe_code)]
                unsafe {
                    let block = aligned(GLOBAL.alloc(layout), align, "new", size);
                    block.write_bytes(0xa5, size);
                    let zeroed = aligned(GLOBAL.alloc_zeroed(layout), align, "zeroed", size);
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|&b| b == 0));
                    let grown = aligned(GLOBAL.realloc(block, layout, size * 3 + 5), align, "grown", size);
                    assert!(std::slice::from_raw_parts(grown, size).iter().all(|&b| b == 0xa5));
                    let larger = Layout::from_size_align(size * 3 + 5, align).unwrap();
                    let shrunk = aligned(GLOBAL.realloc(grown, larger, size), align, "shrunk", size);
                    GLOBAL.dealloc(zeroed, layout);
                    held.push((shrunk, layout));
                }
            }
        }
        for (block, layout) in held {
            // SAFETY: allocated above with this layout, freed once.
            #[allow(unsafe_code)]
            unsafe {
                GLOBAL.dealloc(block, layout)
            };
        }
    }

    #[test]
    fn plain_is_asked_for_only_where_mimalloc_guarantees_the_alignment() {
        let plain_for = |size, align| plain(Layout::from_size_align(size, align).unwrap());
        assert!(plain_for(1, 1) && plain_for(7, 8) && plain_for(1200, 8) && plain_for(16, 16) && plain_for(48, 16));
        assert!(!plain_for(8, 16) && !plain_for(64, 32) && !plain_for(4096, 4096));
    }
}
