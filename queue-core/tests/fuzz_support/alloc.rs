//! A counting global allocator: while a thread runs one fuzz input, every byte it allocates
//! and frees is counted, and the peak of what it holds is that input's allocation figure.
//!
//! Past [`HARD_CAP`] the allocation is refused (the process aborts, as it would in
//! production on an out-of-memory), after the input that asked for it is named on stderr:
//! a decoder that allocates gigabytes for a small input must not take the test machine down
//! with it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write as _;

/// Live bytes one input may reach before the allocator refuses more.
pub const HARD_CAP: usize = 1 << 30;

/// The allocator; the test binary installs it with `#[global_allocator]` (see `mod.rs`).
pub struct CountingAlloc;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static INDEX: Cell<u64> = const { Cell::new(0) };
    static SEED: Cell<u64> = const { Cell::new(0) };
}

/// Starts counting for the input `index` of the run with `seed` on this thread.
pub fn begin(seed: u64, index: u64) {
    LIVE.set(0);
    PEAK.set(0);
    INDEX.set(index);
    SEED.set(seed);
    TRACKING.set(true);
}

/// Stops counting and returns the peak of live bytes since [`begin`].
pub fn end() -> usize {
    TRACKING.set(false);
    PEAK.get()
}

/// Runs `f` without counting its allocations (the harness's own bookkeeping).
pub fn untracked<T>(f: impl FnOnce() -> T) -> T {
    let was = TRACKING.replace(false);
    let result = f();
    TRACKING.set(was);
    result
}

/// Counts `size` more bytes; false when that passes the hard cap.
fn grow(size: usize) -> bool {
    // `try_with`: the allocator is also called while thread-locals are torn down.
    TRACKING
        .try_with(|tracking| {
            if !tracking.get() {
                return true;
            }
            let live = LIVE.get().saturating_add(size);
            if live > HARD_CAP {
                tracking.set(false);
                refuse(size);
                return false;
            }
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
            true
        })
        .unwrap_or(true)
}

fn shrink(size: usize) {
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            LIVE.set(LIVE.get().saturating_sub(size));
        }
    });
}

/// Names the input on stderr before the allocation fails (and the process aborts).
fn refuse(size: usize) {
    let mut line = [0u8; 256];
    let mut cursor = std::io::Cursor::new(&mut line[..]);
    let _ = write!(
        cursor,
        "\nfuzz: input QUEUE_FUZZ_SEED={} QUEUE_FUZZ_INDEX={} asked for {size} more bytes past \
         the {HARD_CAP}-byte cap; refusing (abort follows)\n",
        SEED.get(),
        INDEX.get()
    );
    let written = usize::try_from(cursor.position()).unwrap_or(0);
    let _ = std::io::stderr().write_all(&line[..written]);
}

// SAFETY: every call is forwarded to `System` unchanged; the counting only reads and writes
// thread-local cells that do not allocate, and a refusal returns null as the contract allows.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            if !grow(new_size - layout.size()) {
                return std::ptr::null_mut();
            }
        } else {
            shrink(layout.size() - new_size);
        }
        // SAFETY: `ptr` came from `System` with this layout; forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
