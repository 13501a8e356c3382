//! Unit tests of the word's operations: every field edge, on both get paths.

extern crate std;

use super::*;
use crate::sync::op_count;

/// A meta whose word is exactly `w` (test-only: production code never stores).
fn meta_with(w: MetaWord) -> PageMeta {
    let m = PageMeta::new_allocated();
    m.word.store(w.0, Ordering::Relaxed);
    m
}

fn allocated(refs: u32, pins: u32) -> MetaWord {
    MetaWord(0).plus(Hold::Ref, refs).plus(Hold::Pin, pins)
}

/// The speculative get on one thread with no interrupt handlers.
fn get_speculative(m: &PageMeta, hold: Hold, n: u32) -> Result<(), GetError> {
    // SAFETY: no interrupt handler gets, and at most two test threads get on
    // one word at once; with the in-flight increments a test writes into a word
    // by hand (`speculative_overshoot_never_carries`: MAX_CPUS − 1 of them) that
    // is never more than MAX_CPUS contexts between an add and its undo.
    unsafe { m.get_speculative(hold, n) }
}

/// Runs `f` once for each get path.
fn each_path(mut f: impl FnMut(&str, fn(&PageMeta, Hold, u32) -> Result<(), GetError>)) {
    f(CasLoop::NAME, |m, hold, n| m.get_with::<CasLoop>(hold, n));
    f(FetchAddUndo::NAME, get_speculative);
}

#[test]
fn get_and_put_single_and_batched() {
    each_path(|path, get| {
        for hold in [Hold::Ref, Hold::Pin] {
            let m = PageMeta::new_allocated();
            get(&m, hold, 1).unwrap();
            get(&m, hold, MAX_BATCH).unwrap();
            assert_eq!(m.load().count(hold), MAX_BATCH + 1, "{path}");
            // SAFETY: gives back a count this code took above.
            assert_eq!(unsafe { m.put(hold, MAX_BATCH) }, Ok(Wake::NotDue));
            // SAFETY: gives back a count this code took above.
            assert_eq!(unsafe { m.put(hold, 1) }, Ok(Wake::NotDue));
            assert_eq!(m.load(), MetaWord::ALLOCATED_IDLE, "{path}");
        }
    });
}

#[test]
fn refs_and_pins_are_independent() {
    each_path(|path, get| {
        let m = PageMeta::new_allocated();
        get(&m, Hold::Ref, 3).unwrap();
        get(&m, Hold::Pin, 5).unwrap();
        assert_eq!((m.refs(), m.pins()), (3, 5), "{path}");
        // Releasing more pins than held fails even though refs would cover it.
        assert_eq!(
            // SAFETY: gives back a count this code took above.
            unsafe { m.put(Hold::Pin, 6) },
            Err(PutError::NotHeld {
                hold: Hold::Pin,
                held: 5,
                requested: 6
            })
        );
        assert_eq!((m.refs(), m.pins()), (3, 5), "{path}");
    });
}

#[test]
fn invalid_batch_sizes_are_refused() {
    each_path(|path, get| {
        let m = PageMeta::new_allocated();
        for n in [0, MAX_BATCH + 1, u32::MAX] {
            let e = get(&m, Hold::Ref, n).unwrap_err();
            assert_eq!(e.kind, GetErrorKind::InvalidCount, "{path}");
            assert_eq!(e.wake, Wake::NotDue);
            // SAFETY: gives back a count this code took above.
            assert_eq!(unsafe { m.put(Hold::Ref, n) }, Err(PutError::InvalidCount));
        }
        assert_eq!(m.load(), MetaWord::ALLOCATED_IDLE, "{path}");
    });
}

#[test]
fn count_limit_exactly() {
    each_path(|path, get| {
        for hold in [Hold::Ref, Hold::Pin] {
            // One below the limit: one more fits, then nothing.
            let start = MetaWord(0).plus(hold, COUNT_MAX - 1);
            let m = meta_with(start);
            get(&m, hold, 1).unwrap();
            assert_eq!(m.load().count(hold), COUNT_MAX, "{path}");
            let before = m.load();
            let e = get(&m, hold, 1).unwrap_err();
            assert_eq!(e.kind, GetErrorKind::CountLimit, "{path}");
            assert_eq!(m.load(), before, "{path}: a refused get changed the word");
            // The other count is unaffected by this one's limit.
            let other = if hold == Hold::Ref {
                Hold::Pin
            } else {
                Hold::Ref
            };
            get(&m, other, 1).unwrap();
            // SAFETY: gives back a count this code took above.
            assert_eq!(unsafe { m.put(other, 1) }, Ok(Wake::NotDue));
        }
    });
}

#[test]
fn batch_at_the_limit() {
    each_path(|path, get| {
        let m = meta_with(MetaWord(0).plus(Hold::Pin, COUNT_MAX - MAX_BATCH));
        get(&m, Hold::Pin, MAX_BATCH).unwrap();
        assert_eq!(m.pins(), COUNT_MAX, "{path}");
        // SAFETY: gives back a count this code took above.
        assert_eq!(unsafe { m.put(Hold::Pin, MAX_BATCH) }, Ok(Wake::NotDue));
        // One page short of room for a full batch: refused, unchanged.
        let m = meta_with(MetaWord(0).plus(Hold::Pin, COUNT_MAX - MAX_BATCH + 1));
        let before = m.load();
        let e = get(&m, Hold::Pin, MAX_BATCH).unwrap_err();
        assert_eq!(e.kind, GetErrorKind::CountLimit, "{path}");
        assert_eq!(m.load(), before, "{path}");
    });
}

#[test]
fn speculative_overshoot_never_carries() {
    // The fetch-add path with the word at its worst case: committed at the limit
    // and every other CPU's transient batch in flight. Its own add must not carry.
    let worst_others =
        MetaWord(0).plus(Hold::Ref, COUNT_MAX).0 + (MAX_CPUS as u64 - 1) * MAX_BATCH as u64;
    let m = meta_with(MetaWord(worst_others).plus(Hold::Pin, 7));
    let before = m.load();
    let e = get_speculative(&m, Hold::Ref, MAX_BATCH).unwrap_err();
    assert_eq!(e.kind, GetErrorKind::CountLimit);
    assert_eq!(m.load(), before);
    assert_eq!(m.pins(), 7);
}

#[test]
fn double_release_is_refused() {
    for hold in [Hold::Ref, Hold::Pin] {
        let m = PageMeta::new_allocated();
        m.get(hold, 1).unwrap();
        // SAFETY: gives back a count this code took above.
        assert_eq!(unsafe { m.put(hold, 1) }, Ok(Wake::NotDue));
        assert_eq!(
            // SAFETY: releases a count this test does not hold, on a meta no one else uses: the word refuses it (the case under test) and nothing changes.
            unsafe { m.put(hold, 1) },
            Err(PutError::NotHeld {
                hold,
                held: 0,
                requested: 1
            })
        );
        assert_eq!(m.load(), MetaWord::ALLOCATED_IDLE);
    }
}

#[test]
fn release_never_borrows_from_the_neighbour() {
    // refs = 0, pins = 1: a blind subtraction of one ref would take the pin.
    let m = meta_with(allocated(0, 1));
    assert!(matches!(
        // SAFETY: releases a count this test does not hold, on a meta no one else uses: the word refuses it (the case under test) and nothing changes.
        unsafe { m.put(Hold::Ref, 1) },
        Err(PutError::NotHeld { .. })
    ));
    assert_eq!(m.load(), allocated(0, 1));
    // pins = 0 under a flag: a blind subtraction would clear a state bit.
    let m = meta_with(MetaWord(MetaFlags::TRUNCATING.bits()).plus(Hold::Ref, 2));
    assert!(matches!(
        // SAFETY: releases a count this test does not hold, on a meta no one else uses: the word refuses it (the case under test) and nothing changes.
        unsafe { m.put(Hold::Pin, 1) },
        Err(PutError::NotHeld { .. })
    ));
    assert!(m.is_truncating());
    assert_eq!(m.refs(), 2);
}

#[test]
fn free_page_refuses_everything() {
    each_path(|path, get| {
        let m = PageMeta::new_free();
        for hold in [Hold::Ref, Hold::Pin] {
            let e = get(&m, hold, 1).unwrap_err();
            assert_eq!(e.kind, GetErrorKind::Free, "{path}");
            assert_eq!(e.wake, Wake::NotDue);
            // SAFETY: releases a count this test does not hold, on a meta no one else uses: the word refuses it (the case under test) and nothing changes.
            assert_eq!(unsafe { m.put(hold, 1) }, Err(PutError::Free));
        }
        assert_eq!(m.mark_truncating(), Err(MarkError::Free));
        // SAFETY: the test's page, mapped nowhere (and already free: refused).
        assert_eq!(unsafe { m.free() }, Err(FreeError::AlreadyFree));
        assert_eq!(m.load(), MetaWord::FREE, "{path}");
    });
}

#[test]
fn free_while_busy_is_refused() {
    let m = meta_with(allocated(1, 2));
    assert_eq!(
        // SAFETY: this code owns the page and nothing maps it.
        unsafe { m.free() },
        Err(FreeError::Busy { refs: 1, pins: 2 })
    );
    assert_eq!(m.load(), allocated(1, 2));
    // SAFETY: gives back a count this code took above.
    assert_eq!(unsafe { m.put(Hold::Ref, 1) }, Ok(Wake::NotDue));
    assert_eq!(
        // SAFETY: this code owns the page and nothing maps it.
        unsafe { m.free() },
        Err(FreeError::Busy { refs: 0, pins: 2 })
    );
    // SAFETY: gives back a count this code took above.
    assert_eq!(unsafe { m.put(Hold::Pin, 2) }, Ok(Wake::NotDue));
    // SAFETY: this code owns the page and nothing maps it.
    unsafe { m.free() }.unwrap();
    assert_eq!(m.load(), MetaWord::FREE);
}

#[test]
fn allocate_only_from_free() {
    let m = PageMeta::new_allocated();
    assert_eq!(m.allocate(), Err(AllocError::NotFree));
    m.mark_truncating().unwrap();
    assert_eq!(m.allocate(), Err(AllocError::NotFree));
    // SAFETY: this code owns the page and nothing maps it.
    unsafe { m.free() }.unwrap();
    assert!(!m.is_truncating(), "free clears the mark");
    m.allocate().unwrap();
    assert_eq!(m.load(), MetaWord::ALLOCATED_IDLE);
}

#[test]
fn allocate_waits_for_a_transient_increment() {
    // The state a fetch-add getter leaves between its add and its undo.
    let m = meta_with(MetaWord::FREE.plus(Hold::Ref, 1));
    let undo_started = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let allocator = s.spawn(|| {
            m.allocate().unwrap();
            // The allocation can only succeed once the transient is gone.
            assert!(undo_started.load(std::sync::atomic::Ordering::SeqCst));
        });
        std::thread::yield_now();
        undo_started.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            m.undo(Hold::Ref, 1, MetaWord::FREE.plus(Hold::Ref, 1)),
            Wake::NotDue
        );
        allocator.join().unwrap();
    });
    assert_eq!(m.load(), MetaWord::ALLOCATED_IDLE);
}

#[test]
fn mark_and_unmark() {
    each_path(|path, get| {
        let m = PageMeta::new_allocated();
        get(&m, Hold::Pin, 1).unwrap();
        m.mark_truncating().unwrap();
        assert_eq!(m.mark_truncating(), Err(MarkError::AlreadyTruncating));
        for hold in [Hold::Ref, Hold::Pin] {
            let e = get(&m, hold, 1).unwrap_err();
            assert_eq!(e.kind, GetErrorKind::Truncating, "{path}");
            assert_eq!(e.wake, Wake::NotDue, "{path}: the pin is still held");
        }
        assert_eq!(m.pins(), 1, "{path}");
        // SAFETY: this test set the mark itself and no truncate uses it.
        unsafe { m.unmark_truncating() }.unwrap();
        // SAFETY: the page is no longer marked: nobody's mark is cleared.
        let again = unsafe { m.unmark_truncating() };
        assert_eq!(again, Err(UnmarkError::NotTruncating));
        assert_eq!(m.load(), allocated(0, 1), "{path}");
        get(&m, Hold::Ref, 1).unwrap();
    });
}

#[test]
fn final_put_on_a_truncating_page_is_due() {
    for hold in [Hold::Ref, Hold::Pin] {
        let m = meta_with(allocated(1, 1));
        m.mark_truncating().unwrap();
        let other = if hold == Hold::Ref {
            Hold::Pin
        } else {
            Hold::Ref
        };
        assert_eq!(
            // SAFETY: gives back a count this code took above.
            unsafe { m.put(hold, 1) },
            Ok(Wake::NotDue),
            "the other count remains"
        );
        // SAFETY: gives back a count this code took above.
        assert_eq!(unsafe { m.put(other, 1) }, Ok(Wake::Due));
    }
    // Not truncating: a final put is not a wake.
    let m = meta_with(allocated(1, 0));
    // SAFETY: gives back a count this code took above.
    assert_eq!(unsafe { m.put(Hold::Ref, 1) }, Ok(Wake::NotDue));
}

#[test]
fn undo_that_idles_a_truncating_page_is_due() {
    // A speculative add that landed on an idle, just-marked page: its undo is the
    // final put the truncate may be waiting for.
    let m = meta_with(MetaWord(MetaFlags::TRUNCATING.bits()));
    let e = get_speculative(&m, Hold::Pin, 4).unwrap_err();
    assert_eq!(e.kind, GetErrorKind::Truncating);
    assert_eq!(e.wake, Wake::Due);
    assert_eq!(m.load(), MetaWord(MetaFlags::TRUNCATING.bits()));
}

#[test]
fn undo_never_borrows_after_a_bogus_release() {
    // A getter's transient (1 ref) was consumed by a bogus release; the undo must
    // not take the missing ref from the pin field.
    let m = meta_with(allocated(0, 1));
    assert_eq!(m.undo(Hold::Ref, 1, allocated(1, 1)), Wake::NotDue);
    assert_eq!(m.load(), allocated(0, 1));
}

#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn one_rmw_per_uncontended_operation() {
    each_path(|path, get| {
        let m = PageMeta::new_allocated();
        op_count::reset();
        get(&m, Hold::Pin, MAX_BATCH).unwrap();
        assert_eq!(op_count::get().rmw, 1, "{path}: a 1 GiB leaf is one RMW");
        // SAFETY: gives back a count this code took above.
        assert_eq!(unsafe { m.put(Hold::Pin, MAX_BATCH) }, Ok(Wake::NotDue));
        m.mark_truncating().unwrap();
        // SAFETY: this code owns the page and nothing maps it.
        unsafe { m.free() }.unwrap();
        m.allocate().unwrap();
        assert_eq!(op_count::get().rmw, 5, "{path}");
        assert_eq!(op_count::get().park, 0);
    });
    // A refused fetch-add costs the add and its undo; a refused CAS costs nothing.
    let m = PageMeta::new_free();
    op_count::reset();
    let _ = m.get_with::<CasLoop>(Hold::Ref, 1);
    assert_eq!(op_count::get().rmw, 0);
    let _ = get_speculative(&m, Hold::Ref, 1);
    assert_eq!(op_count::get().rmw, 2);
}

#[test]
fn errors_display() {
    let e = GetError {
        kind: GetErrorKind::Truncating,
        wake: Wake::Due,
    };
    assert_eq!(
        std::format!("{e}"),
        "page is being truncated (undo left the page idle: wake due)"
    );
    assert_eq!(
        std::format!("{}", FreeError::Busy { refs: 1, pins: 2 }),
        "page is busy (1 references, 2 pins)"
    );
}

#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn mark_never_sets_truncating_on_a_free_word() {
    // A free word, bare or carrying a speculative getter's transient: the mark
    // is refused without a single RMW, so `FREE | TRUNCATING` never exists and a
    // second mark racing this one can only see `FREE` (never a mark nobody owns).
    for w in [MetaWord::FREE, MetaWord::FREE.plus(Hold::Pin, 3)] {
        let m = meta_with(w);
        op_count::reset();
        assert_eq!(m.mark_truncating(), Err(MarkError::Free));
        assert_eq!(op_count::get().rmw, 0, "{w:?}: the word was touched");
        assert_eq!(m.mark_truncating(), Err(MarkError::Free), "the loser");
        assert_eq!(m.load(), w);
    }
}

#[test]
fn racing_marks_on_a_free_page_both_see_free() {
    // Two markers and a watcher on one free word: every mark is refused as
    // `Free` (with the old fetch_or mark, the loser saw the winner's transient
    // bit and reported `AlreadyTruncating`), and the word never holds both bits.
    use std::sync::atomic::{AtomicBool, Ordering as O};
    const ROUNDS: usize = 20_000;
    let m = PageMeta::new_free();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            while !done.load(O::Relaxed) {
                let w = m.load();
                assert!(!(w.is_free() && w.is_truncating()), "{w:?}");
            }
        });
        let markers: std::vec::Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..ROUNDS {
                        assert_eq!(m.mark_truncating(), Err(MarkError::Free));
                    }
                })
            })
            .collect();
        for t in markers {
            t.join().unwrap();
        }
        done.store(true, O::Relaxed);
        watcher.join().unwrap();
    });
    assert_eq!(m.load(), MetaWord::FREE);
}

#[test]
fn racing_marks_on_an_allocated_page_one_wins() {
    use std::sync::Barrier;
    for _ in 0..200 {
        let m = PageMeta::new_allocated();
        let start = Barrier::new(2);
        let results: std::vec::Vec<_> = std::thread::scope(|s| {
            let t: std::vec::Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        m.mark_truncating()
                    })
                })
                .collect();
            t.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        assert!(results.contains(&Err(MarkError::AlreadyTruncating)));
        assert_eq!(m.load(), MetaWord(MetaFlags::TRUNCATING.bits()));
    }
}

#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn mark_keeps_the_counts() {
    let m = meta_with(allocated(2, 3));
    op_count::reset();
    assert_eq!(
        m.mark_truncating(),
        Ok(MetaWord(allocated(2, 3).0 | MetaFlags::TRUNCATING.bits()))
    );
    assert_eq!(op_count::get().rmw, 1, "uncontended: one load and one RMW");
    assert_eq!(m.mark_truncating(), Err(MarkError::AlreadyTruncating));
    assert_eq!((m.refs(), m.pins()), (2, 3));
}

#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn free_marked_frees_only_a_marked_idle_page() {
    // Marked and idle: freed, mark cleared.
    let m = PageMeta::new_allocated();
    m.mark_truncating().unwrap();
    op_count::reset();
    // SAFETY: this code marked the page and nothing maps it.
    assert_eq!(unsafe { m.free_marked() }, Ok(()));
    assert_eq!(op_count::get().rmw, 1);
    assert_eq!(m.load(), MetaWord::FREE);
    // SAFETY: this code marked the page and nothing maps it.
    assert_eq!(unsafe { m.free_marked() }, Err(FreeError::AlreadyFree));
    assert_eq!(m.load(), MetaWord::FREE);

    // Unmarked behind the truncate's back: never freed, idle or not.
    let m = PageMeta::new_allocated();
    m.mark_truncating().unwrap();
    // SAFETY: this test set the mark itself and no truncate uses it.
    unsafe { m.unmark_truncating() }.unwrap();
    // SAFETY: this code marked the page and nothing maps it.
    assert_eq!(unsafe { m.free_marked() }, Err(FreeError::NotMarked));
    assert_eq!(m.load(), MetaWord::ALLOCATED_IDLE);
    m.get(Hold::Ref, 1).unwrap(); // gets succeed again
    // SAFETY: this code marked the page and nothing maps it.
    assert_eq!(unsafe { m.free_marked() }, Err(FreeError::NotMarked));
    assert_eq!(m.load(), allocated(1, 0));

    // Marked but busy (a transient, or a count taken while unmarked).
    let busy = MetaWord(MetaFlags::TRUNCATING.bits()).plus(Hold::Pin, 1);
    let m = meta_with(busy);
    // SAFETY: this code marked the page and nothing maps it.
    assert_eq!(
        // SAFETY: refused (the case under test): nothing is freed.
        unsafe { m.free_marked() },
        Err(FreeError::Busy { refs: 0, pins: 1 })
    );
    assert_eq!(m.load(), busy);
    // The transient's undo makes it freeable.
    assert_eq!(m.undo(Hold::Pin, 1, busy), Wake::Due);
    // SAFETY: this code marked the page and nothing maps it.
    assert_eq!(unsafe { m.free_marked() }, Ok(()));
    assert_eq!(
        std::format!("{}", FreeError::NotMarked),
        "page is no longer marked truncating (unmarked behind the truncate's back)"
    );
}
