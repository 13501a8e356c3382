//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --target-dir target/loom --test loom_schemes
//!
//! The schemes of the 2018 LKML thread "mm, fs, dax: handle layout changes to
//! pinned dax mappings", side by side with pagepin's, as loom models. Each
//! scheme is the very module the benchmark (`benches/schemes.rs`) runs, here
//! over the toy 2-level tables of `loom_common` (VA 0 → table 1 entry 0 → P).
//! Two threads per model; every scheme runs both models:
//!
//! - `truncate_race`: the walker pins VA 0, reads the page's data (a loom
//!   `UnsafeCell`) and unpins, then — having observed (Acquire) whether the
//!   drain finished — pins again. The truncater truncates P (mark, unmap, drain,
//!   free, as the scheme does them), says "drained" (Release) between drain and
//!   free, and poisons P's data. Invariant 1: the poison is never unordered with
//!   the walker's read (loom's causality check) and the walker never reads
//!   poison. Invariant 2: a pin after the walker saw the drain finish fails.
//!   Afterwards P is free.
//! - `aba`: the truncater truncates P, bumps its generation (a loom
//!   `UnsafeCell`), reallocates it and maps VA 0 to Q. Invariant 3: a pin
//!   returns a page of the generation the walker's entry mapped (0). Afterwards
//!   no reference is left.
//!
//! Verdicts (a failure is loom's "Causality violation: Concurrent read and
//! write accesses" on the one cell the model writes, or the model's own check,
//! whose message names the invariant: "invariant 3 (a scheme pinned a
//! reallocated page)"; each failing test expects the exact one it fails on):
//!
//! | scheme | truncate_race | aba |
//! |---|---|---|
//! | (1) grace period after marking | pass | **fail**: the grace period orders the mark, not the unmap; a walker that starts after it can load the old entry and get the reallocated page |
//! | (1b) grace period after unmapping | pass | pass |
//! | (2) flag + fence on each side | pass | fail (no re-check) |
//! | (2-broken) flag, no fences | fail (store buffering) | fail |
//! | (3) split refcount | pass | fail (no re-check) |
//! | (4) PTE re-check (Linux) | pass | pass |
//! | (5) pagepin (`get_pages`; and its steps written out) | pass | pass |
//! | (6) pagepin without the re-check | pass | fail |
//!
//! The suite also passes at `LOOM_MAX_PREEMPTIONS=3` and 4. At 3 it is what
//! found the epoch's missing Release on a read section's entry (see
//! `EpochReader::enter`): scheme (1)'s walker ends a read section, reads the
//! page, and enters the next one, and a grace-period scan that read the new
//! section's epoch did not synchronise with the end of the old one.
#![cfg(loom)]

mod loom_common;
mod schemes;

use std::sync::Arc;

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicBool;
use loom::thread;
use loom_common::*;
use pagepin::sync::Ordering;
use pagepin::table::{EntryLoc, Toy, VirtAddr, Walker};
use schemes::flag_fence::FlagFence;
use schemes::grace::GracePeriod;
use schemes::one_word::{GUP, INLINE, NO_RECHECK, Pagepin};
use schemes::pte_recheck::PteRecheck;
use schemes::split_ref::SplitRef;
use schemes::{Scheme, State, remap};

/// What P holds while allocated.
const CONTENTS: u64 = 1;
/// What the truncater writes into P once it is freed.
const POISON: u64 = u64::MAX;

/// The leaf entry of VA 0: table 1, entry 0.
const LEAF: EntryLoc = EntryLoc {
    table: table_pa(1),
    index: 0,
    level: 1,
};

/// The world of one model: tables, the scheme, pages P and Q.
struct World<S: Scheme> {
    tables: Tables,
    scheme: S,
    /// The metadata of P (index 0) and Q (index 1).
    pages: [S::Page; 2],
    /// Each page's contents.
    data: [UnsafeCell<u64>; 2],
    /// Each page's generation, bumped by every reallocation.
    generation: [UnsafeCell<u64>; 2],
    /// Set by the truncater once its drain returned.
    drained: AtomicBool,
}

impl<S: Scheme> World<S> {
    /// VA 0 maps P.
    fn new() -> World<S> {
        let scheme = S::new();
        let world = World {
            tables: Tables::new(),
            pages: [scheme.new_page(), scheme.new_page()],
            scheme,
            data: [UnsafeCell::new(CONTENTS), UnsafeCell::new(CONTENTS)],
            generation: [UnsafeCell::new(0), UnsafeCell::new(0)],
            drained: AtomicBool::new(false),
        };
        world.tables.set(1, 0, leaf_entry(P));
        world.tables.set(0, 0, table_entry(1));
        world
    }

    /// Pins VA 0 with the walker's `local` state.
    fn pin(&self, local: &S::Local<'_>) -> Option<usize> {
        let walker = Walker::<Toy, _>::new(&self.tables, table_pa(0));
        self.scheme.pin(local, &walker, VirtAddr(0), &self.pages, P)
    }

    fn unpin(&self, index: usize) {
        self.scheme.unpin(&self.pages, P, index);
    }

    /// The scheme's truncate of P; `drained` runs between drain and free.
    fn truncate_p(&self, drained: impl FnOnce()) {
        self.scheme
            .truncate(&self.tables, &[LEAF], &self.pages, P, 0, drained);
    }
}

/// (a) The truncate race (invariants 1 and 2).
fn truncate_race<S: Scheme + Send + 'static>()
where
    S::Page: Send,
{
    loom::model(|| {
        // `std`'s Arc: dropping loom's during the unwind of a failed model
        // aborts the process instead of failing the test.
        let world = Arc::new(World::<S>::new());
        let walker = {
            let world = world.clone();
            thread::spawn(move || {
                let local = world.scheme.local();
                if let Some(i) = world.pin(&local) {
                    // SAFETY: loom checks this read against the truncater's
                    // poisoning write (the property under test).
                    let contents = world.data[i].with(|d| unsafe { *d });
                    assert_eq!(
                        contents, CONTENTS,
                        "invariant 1 (a scheme's walker read its pinned page poisoned)"
                    );
                    world.unpin(i);
                }
                // Acquire: pairs with the truncater's Release store after its drain.
                let after_drain = world.drained.load(Ordering::Acquire);
                let again = world.pin(&local);
                if let Some(i) = again {
                    world.unpin(i);
                }
                assert!(
                    !(after_drain && again.is_some()),
                    "invariant 2 (a scheme's pin succeeded after its drain)"
                );
            })
        };
        world.truncate_p(|| {
            // Release: pairs with the walker's Acquire load.
            world.drained.store(true, Ordering::Release);
        });
        // SAFETY: loom checks this write against the walker's read (the
        // property under test); P is free, nobody may touch it.
        world.data[0].with_mut(|d| unsafe { *d = POISON });
        walker.join().unwrap();
        assert_eq!(
            world.scheme.state(&world.pages[0]),
            State::Free,
            "truncate_race: the scheme's truncate left P unfreed"
        );
    });
}

/// (b) ABA: P truncated, reallocated, VA 0 remapped to Q (invariant 3).
fn aba<S: Scheme + Send + 'static>()
where
    S::Page: Send,
{
    loom::model(|| {
        // `std`'s Arc, as in `truncate_race`.
        let world = Arc::new(World::<S>::new());
        let walker = {
            let world = world.clone();
            thread::spawn(move || {
                let local = world.scheme.local();
                if let Some(i) = world.pin(&local) {
                    // SAFETY: loom checks this read against the allocator's
                    // write (the property under test).
                    let generation = world.generation[i].with(|g| unsafe { *g });
                    assert_eq!(
                        generation, 0,
                        "invariant 3 (a scheme pinned a reallocated page): generation {generation} through an entry of generation 0"
                    );
                    world.unpin(i);
                }
            })
        };
        world.truncate_p(|| ());
        // SAFETY: loom checks this write against the walker's read (the property
        // under test); P is free, the allocator owns it.
        world.generation[0].with_mut(|g| unsafe { *g += 1 });
        world.scheme.reallocate(&world.pages, 0);
        remap(&world.tables, LEAF, leaf_entry(Q));
        walker.join().unwrap();
        for page in &world.pages {
            assert_eq!(
                world.scheme.state(page),
                State::Idle,
                "invariant 4 (a scheme leaked a reference)"
            );
        }
    });
}

// (1) Grace period after marking. Each test has its own epoch brand: the
// tests run side by side, and one epoch of a brand lives at a time.

pagepin::epoch_brand!(enum GraceRace);
pagepin::epoch_brand!(enum GraceAba);
pagepin::epoch_brand!(enum AfterUnmapRace);
pagepin::epoch_brand!(enum AfterUnmapAba);

#[test]
fn grace_period_truncate_race() {
    truncate_race::<GracePeriod<false, GraceRace>>();
}

#[test]
#[should_panic(expected = "invariant 3 (a scheme pinned a reallocated page)")]
fn grace_period_aba() {
    aba::<GracePeriod<false, GraceAba>>();
}

// (1b) Grace period after unmapping.

#[test]
fn grace_period_after_unmap_truncate_race() {
    truncate_race::<GracePeriod<true, AfterUnmapRace>>();
}

#[test]
fn grace_period_after_unmap_aba() {
    aba::<GracePeriod<true, AfterUnmapAba>>();
}

// (2) Flag and a fence on each side, and its twin without the fences.

#[test]
fn flag_fence_truncate_race() {
    truncate_race::<FlagFence<true>>();
}

#[test]
#[should_panic(expected = "invariant 3 (a scheme pinned a reallocated page)")]
fn flag_fence_aba() {
    aba::<FlagFence<true>>();
}

// Invariant 1, caught by loom itself: without the fences the drain can miss the
// walker's get while the walker misses the mark, so the truncater poisons P
// while the walker still reads it; the two accesses to P's data cell are not
// ordered, and loom panics at the second with "Causality violation: Concurrent
// read and write accesses" (rt/cell.rs) before the model's own check can run.
// P's data is the only cell `truncate_race` writes.
#[test]
#[should_panic(expected = "Causality violation: Concurrent read and write accesses")]
fn broken_flag_no_fence_truncate_race() {
    truncate_race::<FlagFence<false>>();
}

// Invariant 3, caught by loom itself: without the fences the walker's flag
// check can still read the "allocated" from before the mark (nothing makes it
// see the mark), so it keeps a pin that synchronised with nothing the
// truncater did, and its read of P's generation is not ordered with the
// truncater's bump: loom's "Causality violation: Concurrent read and write
// accesses" (rt/cell.rs) comes before the generation check. P's generation is
// the only cell `aba` writes.
#[test]
#[should_panic(expected = "Causality violation: Concurrent read and write accesses")]
fn broken_flag_no_fence_aba() {
    aba::<FlagFence<false>>();
}

// (3) Split refcount.

#[test]
fn split_refcount_truncate_race() {
    truncate_race::<SplitRef>();
}

#[test]
#[should_panic(expected = "invariant 3 (a scheme pinned a reallocated page)")]
fn split_refcount_aba() {
    aba::<SplitRef>();
}

// (4) PTE re-check (Linux mainline).

#[test]
fn pte_recheck_truncate_race() {
    truncate_race::<PteRecheck>();
}

#[test]
fn pte_recheck_aba() {
    aba::<PteRecheck>();
}

// (5) pagepin: its GUP-fast and truncate, and the walker's steps written out.

#[test]
fn pagepin_truncate_race() {
    truncate_race::<Pagepin<GUP>>();
}

#[test]
fn pagepin_aba() {
    aba::<Pagepin<GUP>>();
}

#[test]
fn pagepin_inlined_truncate_race() {
    truncate_race::<Pagepin<INLINE>>();
}

#[test]
fn pagepin_inlined_aba() {
    aba::<Pagepin<INLINE>>();
}

// (6) pagepin without the re-check.

#[test]
fn pagepin_no_recheck_truncate_race() {
    truncate_race::<Pagepin<NO_RECHECK>>();
}

#[test]
#[should_panic(expected = "invariant 3 (a scheme pinned a reallocated page)")]
fn pagepin_no_recheck_aba() {
    aba::<Pagepin<NO_RECHECK>>();
}
