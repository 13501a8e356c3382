//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --target-dir target/loom --test loom_free_vs_get
//!
//! The allocator frees a page, reinitialises its contents and allocates it again,
//! while a speculative getter (fetch-add + undo) takes a reference and reads the
//! page. The page contents are a `loom::cell::UnsafeCell`, so loom itself reports
//! any access that is not ordered by happens-before.
//!
//! Checks (DESIGN.md invariants 1, 3, 4):
//! - no reference survives on a freed page: a holder's read of the page never
//!   races the allocator's reinitialisation, and its put never finds the page free;
//! - a holder sees either the old contents (got before the free) or the new ones
//!   (got after the allocate), never a mix;
//! - the allocator's `FREE → allocated` compare-exchange waits for the getter's
//!   transient increment instead of erasing it; the word ends exact.
//!
//! Broken twins: a free done as a load + store (erases the getter's reference), and
//! an allocate done as a load + Relaxed store (publishes nothing). Both fail.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use pagepin::meta::{CasLoop, FetchAddUndo, GetPath, Hold, PageMeta, broken};

struct Page {
    meta: PageMeta,
    /// The page's contents: its generation.
    data: UnsafeCell<u64>,
}

fn model<P: GetPath>(free: fn(&PageMeta) -> bool, allocate: fn(&PageMeta) -> bool) {
    loom::model(move || {
        let page = Arc::new(Page {
            meta: PageMeta::new_allocated(),
            data: UnsafeCell::new(0),
        });
        let getter = {
            let page = page.clone();
            thread::spawn(move || {
                // SAFETY: one getter thread and no interrupts in the model: one
                // context between the add and the undo, ≤ MAX_CPUS.
                if unsafe { P::get(&page.meta, Hold::Ref, 1) }.is_ok() {
                    // SAFETY: loom checks this read against the allocator's
                    // write; an unordered pair is the violation under test.
                    let generation = page.data.with(|d| unsafe { *d });
                    assert!(
                        generation == 0 || generation == 1,
                        "invariant 3 (a holder read torn page contents): {generation}"
                    );
                    // SAFETY: gives back a count this code took above.
                    let released = unsafe { page.meta.put(Hold::Ref, 1) };
                    assert!(
                        released.is_ok(),
                        "invariant 1 (the page was freed under its holder, whose put failed): {released:?}"
                    );
                }
            })
        };
        let mut reused = false;
        if free(&page.meta) {
            // The allocator owns the page: reinitialise it, then hand it out.
            // SAFETY: as the read above: loom checks the ordering.
            page.data.with_mut(|d| unsafe { *d = 1 });
            assert!(allocate(&page.meta), "allocate failed on a freed page");
            reused = true;
        }
        getter.join().unwrap();
        let end = page.meta.load();
        assert!(
            end.is_idle() && !end.is_free() && !end.is_truncating(),
            "invariant 4 (the word ends wrong after free, reuse and a get): {end:?} (reused: {reused})"
        );
    });
}

fn free(meta: &PageMeta) -> bool {
    // SAFETY: this code owns the page and nothing maps it.
    unsafe { meta.free() }.is_ok()
}

fn allocate(meta: &PageMeta) -> bool {
    meta.allocate().is_ok()
}

#[test]
fn speculative_get_vs_free_and_reuse() {
    model::<FetchAddUndo>(free, allocate);
}

#[test]
fn cas_get_vs_free_and_reuse() {
    model::<CasLoop>(free, allocate);
}

// Invariant 1, caught by loom itself: the free erases the getter's reference, so
// the allocator reinitialises the page while the holder reads it, and the two
// accesses to the page's one `UnsafeCell` are unordered: loom panics at the
// second with "Causality violation: Concurrent read and write accesses" (rt/cell.rs;
// "... to `UnsafeCell`." when the read came first) before the model's checks run.
#[test]
#[should_panic(expected = "Causality violation: Concurrent read and write accesses")]
fn broken_load_store_free_frees_under_a_holder() {
    model::<FetchAddUndo>(broken::free_load_store, allocate);
}

// Caught by loom itself: the Relaxed store publishes nothing, so a getter whose
// get reads it is not ordered after the allocator's reinitialisation, and its
// read of the page's one `UnsafeCell` is a causality violation (rt/cell.rs; "...
// accesses." when the write came first), reported before the torn-contents check.
#[test]
#[should_panic(expected = "Causality violation: Concurrent read and write accesses")]
fn broken_relaxed_store_allocate_publishes_nothing() {
    model::<FetchAddUndo>(free, broken::allocate_load_store);
}
