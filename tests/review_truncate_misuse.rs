//! Run: `CARGO_TARGET_DIR=target/review cargo test --test review_truncate_misuse`
//!
//! Outside review, black-box: the truncate typestate misused. Dropping a
//! marked truncate, cancelling in each state, two truncates overlapping, a
//! free after somebody unmarked a unit, drains that time out and are retried,
//! leases held past the deadline and the retry after that. Every failure is a
//! typed error handing the truncate back; no page is left marked or freed
//! under a holder.

use core::convert::Infallible;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, Ordering as StdOrdering};
use std::time::Instant;

use pagepin::memmap::{MemoryMap, Pfn, Region, SliceMemMap};
use pagepin::meta::{FreeError, Hold, MarkError, PageMeta};
use pagepin::truncate::{
    DrainError, Extent, Failed, LeaseId, LeaseRegistry, MarkSetError, Revoke, Truncate, Unmapper,
    Wait,
};
use pagepin::wait::{Clock, SpinWaiter};

type Hm<'a> = SliceMemMap<'a>;
const BASE: u64 = 0x1000;

struct NoUnmap;
// SAFETY: the pages these tests truncate are mapped by no table.
unsafe impl Unmapper for NoUnmap {
    type Error = Infallible;
    fn unmap_extent(&mut self, _extent: Extent) -> Result<(), Infallible> {
        Ok(())
    }
}

struct Mono(Instant);
impl Clock for Mono {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

fn setup(metas: &[PageMeta]) -> Hm<'_> {
    // SAFETY: this map is the only one counting on these metas.
    let mut map = unsafe { Hm::new(Pfn(BASE), metas) };
    map.add_region(Region {
        first: Pfn(BASE),
        pages: 64,
        unit_pages: 8,
        layout_managed: true,
    })
    .unwrap();
    map
}

fn marked(metas: &[PageMeta]) -> Vec<usize> {
    (0..metas.len())
        .filter(|&i| metas[i].is_truncating())
        .collect()
}

fn ext(first: u64, pages: u64) -> Extent {
    Extent::new(Pfn(BASE + first), pages)
}

#[test]
fn drop_and_cancel_in_every_state_unmark() {
    let metas: Vec<PageMeta> = (0..64).map(|_| PageMeta::new_allocated()).collect();
    let map = setup(&metas);
    let set = [ext(0, 16), ext(32, 8)];
    for state in 0..6 {
        let t = Truncate::mark(&map, set.into_iter()).unwrap();
        assert_eq!(marked(&metas), vec![0, 8, 32]);
        let cancelled = match state {
            0 => {
                drop(t);
                None
            }
            1 => Some(t.cancel()),
            2 => Some(t.unmap(&mut NoUnmap).unwrap().cancel()),
            3 => {
                drop(t.unmap(&mut NoUnmap).unwrap());
                None
            }
            4 => Some(
                t.unmap(&mut NoUnmap)
                    .unwrap()
                    .try_drain::<2>()
                    .unwrap()
                    .cancel(),
            ),
            _ => {
                drop(t.unmap(&mut NoUnmap).unwrap().try_drain::<2>().unwrap());
                None
            }
        };
        if let Some(c) = cancelled {
            assert_eq!(c.units, 3, "state {state}");
        }
        assert!(marked(&metas).is_empty(), "state {state}: marks left");
        // Gettable again.
        metas[8].get(Hold::Pin, 1).unwrap();
        // SAFETY: gives back a count this code took above.
        let _ = unsafe { metas[8].put(Hold::Pin, 1) }.unwrap();
    }
}

#[test]
fn overlapping_truncates_never_share_a_mark() {
    let metas: Vec<PageMeta> = (0..64).map(|_| PageMeta::new_allocated()).collect();
    let map = setup(&metas);
    let t1 = Truncate::mark(&map, [ext(0, 16)].into_iter()).unwrap();
    // T2 overlaps on unit 8 after marking unit 16 and 24 first... and before.
    for set in [
        vec![ext(16, 16), ext(8, 8)],
        vec![ext(8, 16)],
        vec![ext(24, 8), ext(0, 8)],
    ] {
        let e = Truncate::mark(&map, set.clone().into_iter()).unwrap_err();
        assert!(
            matches!(
                e,
                MarkSetError::Unit {
                    error: MarkError::AlreadyTruncating,
                    ..
                }
            ),
            "{set:?}: {e:?}"
        );
        assert_eq!(
            marked(&metas),
            vec![0, 8],
            "T2 rolled back only its own marks"
        );
    }
    // T1 finishes: exactly its units are freed.
    let freed = t1
        .unmap(&mut NoUnmap)
        .unwrap()
        .try_drain::<1>()
        .unwrap()
        .free()
        .unwrap();
    assert_eq!(freed.units, 2);
    assert!(metas[0].is_free() && metas[8].is_free() && !metas[16].is_free());
}

#[test]
fn free_after_a_stray_unmark_frees_nothing_under_a_holder() {
    let metas: Vec<PageMeta> = (0..64).map(|_| PageMeta::new_allocated()).collect();
    let map = setup(&metas);
    let t = Truncate::mark(&map, [ext(0, 24)].into_iter()).unwrap();
    let t = t.unmap(&mut NoUnmap).unwrap().try_drain::<1>().unwrap();
    // Somebody clears unit 8's mark and pins it.
    // SAFETY: deliberately breaks the contract (a stray unmark, "a bug elsewhere") to check what the truncate does about it.
    unsafe { metas[8].unmark_truncating() }.unwrap();
    metas[8].get(Hold::Pin, 1).unwrap();
    let e = t.free().unwrap_err();
    assert_eq!(e.head, Pfn(BASE + 8));
    assert_eq!(e.error, FreeError::NotMarked);
    assert_eq!((e.freed, e.failed), (2, 1));
    assert!(metas[0].is_free() && metas[16].is_free());
    assert!(!metas[8].is_free() && metas[8].pins() == 1);
    // SAFETY: gives back a count this code took above.
    let _ = unsafe { metas[8].put(Hold::Pin, 1) }.unwrap();
    // The same, but the unit was marked again (by a second truncate) and
    // pinned in between: free reports it busy and leaves it, and the second
    // truncate's mark survives.
    for m in &metas[..24] {
        if m.is_free() {
            m.allocate().unwrap();
        }
    }
    let t = Truncate::mark(&map, [ext(0, 24)].into_iter()).unwrap();
    let t = t.unmap(&mut NoUnmap).unwrap().try_drain::<1>().unwrap();
    // SAFETY: deliberately breaks the contract (a stray unmark, "a bug elsewhere") to check what the truncate does about it.
    unsafe { metas[8].unmark_truncating() }.unwrap();
    metas[8].get(Hold::Ref, 1).unwrap();
    let t2 = Truncate::mark(&map, [ext(8, 8)].into_iter()).unwrap();
    let e = t.free().unwrap_err();
    assert_eq!(e.head, Pfn(BASE + 8));
    assert!(matches!(e.error, FreeError::Busy { .. }), "{e:?}");
    assert!(metas[8].is_truncating() && !metas[8].is_free());
    // SAFETY: gives back a count this code took above.
    let _ = unsafe { metas[8].put(Hold::Ref, 1) }.unwrap();
    let freed = t2
        .unmap(&mut NoUnmap)
        .unwrap()
        .try_drain::<1>()
        .unwrap()
        .free()
        .unwrap();
    assert_eq!(freed.units, 1);
}

/// A truncate whose mark was stolen (a stray unmark, then another truncate
/// marked the unit). The mark has no owner, so T1's cancel clears T2's mark
/// too (finding 2 of the review); `unmark_truncating` is therefore `unsafe`,
/// and the stray unmark that starts this is a broken safety contract. What
/// must still hold: T2 never frees the unit under the pin that got through,
/// its `free` refuses it as no longer marked.
#[test]
fn cancel_after_a_stolen_mark_never_frees_under_the_pin_that_got_through() {
    let metas: Vec<PageMeta> = (0..64).map(|_| PageMeta::new_allocated()).collect();
    let map = setup(&metas);
    let t1 = Truncate::mark(&map, [ext(0, 16)].into_iter()).unwrap();
    // SAFETY: deliberately breaks the contract (a stray unmark of T1's mark,
    // "a bug elsewhere") to check that nothing is freed under a holder.
    unsafe { metas[8].unmark_truncating() }.unwrap();
    let t2 = Truncate::mark(&map, [ext(8, 8)].into_iter()).unwrap();
    let c = t1.cancel();
    assert_eq!(c.units, 2, "the mark has no owner: T1 clears unit 8 too");
    let got = metas[8].get(Hold::Pin, 1);
    assert!(got.is_ok(), "unit 8 is gettable again");
    // T2 found unit 8 idle when it marked it, and a marked idle unit stays
    // idle, so its drain does not look again: the stolen mark is caught by
    // `free`, which frees only units that are still marked.
    let drained = t2.unmap(&mut NoUnmap).unwrap().try_drain::<1>().unwrap();
    let err = drained.free().unwrap_err();
    assert_eq!(
        (err.head, err.error, err.freed, err.failed),
        (Pfn(BASE + 8), FreeError::NotMarked, 0, 1)
    );
    assert!(!metas[8].is_free(), "never freed under the pin");
    assert!(
        // SAFETY: gives back a count this code took above.
        !unsafe { metas[8].put(Hold::Pin, 1) }.unwrap().is_due(),
        "not truncating any more"
    );
    assert!(metas[8].load().is_idle() && !metas[8].is_truncating());
}

#[test]
fn drain_times_out_names_the_unit_and_retries() {
    let metas: Vec<PageMeta> = (0..64).map(|_| PageMeta::new_allocated()).collect();
    let map = setup(&metas);
    metas[16].get(Hold::Pin, 3).unwrap();
    metas[40].get(Hold::Ref, 1).unwrap();
    let t = Truncate::mark(&map, [ext(0, 64)].into_iter()).unwrap();
    let t = t.unmap(&mut NoUnmap).unwrap();
    let Err(Failed { truncate: t, error }) = t.try_drain::<1>() else {
        panic!("drained with pins held")
    };
    assert_eq!(error.total, 2);
    assert_eq!(error.first.len(), 1);
    assert_eq!(
        (error.first[0].head, error.first[0].pins),
        (Pfn(BASE + 16), 3)
    );
    let clock = Mono(Instant::now());
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: Some(clock.now_ns() + 2_000_000),
    };
    let Err(Failed { truncate: t, error }) = t.drain(&wait) else {
        panic!("drained with pins held")
    };
    assert!(
        matches!(error, DrainError::TimedOut(b) if b.head == Pfn(BASE + 16) && b.pins == 3),
        "{error:?}"
    );
    // Released from another thread while the drain waits (no sleeps: a
    // barrier, and the drain's own wake-up).
    let barrier = Barrier::new(2);
    let t = std::thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            for _ in 0..3 {
                // SAFETY: gives back a count this code took above.
                if unsafe { metas[16].put(Hold::Pin, 1) }.unwrap().is_due() {
                    map.wake(Pfn(BASE + 16));
                }
            }
            // SAFETY: gives back a count this code took above.
            if unsafe { metas[40].put(Hold::Ref, 1) }.unwrap().is_due() {
                map.wake(Pfn(BASE + 40));
            }
        });
        barrier.wait();
        let wait = Wait {
            waiter: &SpinWaiter,
            clock: &clock,
            deadline_ns: Some(clock.now_ns() + 10_000_000_000),
        };
        t.drain(&wait).unwrap()
    });
    assert_eq!(t.free().unwrap().units, 8);
    assert!(
        metas.iter().step_by(8).all(|m| m.is_free()),
        "every head freed"
    );
}

struct CountRevokes(AtomicU32);
impl Revoke for CountRevokes {
    fn revoke(&self, _lease: LeaseId) {
        self.0.fetch_add(1, StdOrdering::Relaxed);
    }
}

/// A lease held past the deadline fails the drain with its name; retrying the
/// drain while the lease is *still* held must fail the same way, not free the
/// pages under the lease.
#[test]
fn a_lease_held_past_the_deadline_still_blocks_the_retry() {
    let metas: Vec<PageMeta> = (0..64).map(|_| PageMeta::new_allocated()).collect();
    let map = setup(&metas);
    let revokes = CountRevokes(AtomicU32::new(0));
    let leases = LeaseRegistry::<4>::new();
    let lease = leases.grant(ext(8, 8), &revokes).unwrap();
    let id = lease.id();
    let clock = Mono(Instant::now());
    let t = Truncate::mark(&map, [ext(0, 16)].into_iter()).unwrap();
    let mut t = t.unmap(&mut NoUnmap).unwrap();
    for attempt in 0..2 {
        let wait = Wait {
            waiter: &SpinWaiter,
            clock: &clock,
            deadline_ns: Some(clock.now_ns() + 1_000_000),
        };
        match t.drain_with_leases(&leases, &wait) {
            Err(Failed { truncate, error }) => {
                assert_eq!(error, DrainError::LeaseHeld(id), "attempt {attempt}");
                t = truncate;
            }
            Ok(drained) => {
                let held = leases.is_held(id);
                drop(drained);
                panic!(
                    "attempt {attempt}: drained while lease {id} is still held (held={held}, revoked={})",
                    lease.is_revoked()
                );
            }
        }
    }
    assert!(lease.is_revoked());
    assert!(revokes.0.load(StdOrdering::Relaxed) >= 1);
    drop(lease);
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: Some(clock.now_ns() + 1_000_000_000),
    };
    let freed = t.drain_with_leases(&leases, &wait).unwrap().free().unwrap();
    assert_eq!(freed.units, 2);
    assert!(leases.is_empty());
}

/// A lease granted on a set that is already marked (between mark and drain):
/// the drain must still revoke it and wait for it.
#[test]
fn a_lease_granted_after_the_mark_is_revoked_too() {
    let metas: Vec<PageMeta> = (0..64).map(|_| PageMeta::new_allocated()).collect();
    let map = setup(&metas);
    let revokes = CountRevokes(AtomicU32::new(0));
    let leases = LeaseRegistry::<4>::new();
    let t = Truncate::mark(&map, [ext(0, 16)].into_iter()).unwrap();
    let lease = leases.grant(ext(0, 8), &revokes).unwrap();
    let t = t.unmap(&mut NoUnmap).unwrap();
    let clock = Mono(Instant::now());
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: Some(clock.now_ns() + 1_000_000),
    };
    let Err(Failed { truncate, error }) = t.drain_with_leases(&leases, &wait) else {
        panic!("drained with a lease held")
    };
    assert_eq!(error, DrainError::LeaseHeld(lease.id()));
    assert_eq!(revokes.0.load(StdOrdering::Relaxed), 1);
    drop(lease);
    let _ = truncate.cancel();
    assert!(marked(&metas).is_empty());
}

#[test]
fn marking_free_and_already_marked_pages_is_typed() {
    let p = PageMeta::new_free();
    assert_eq!(p.mark_truncating().unwrap_err(), MarkError::Free);
    // SAFETY: the page is not marked: nobody's mark is cleared.
    assert!(unsafe { p.unmark_truncating() }.is_err());
    // SAFETY: this code marked the page and nothing maps it.
    assert_eq!(
        // SAFETY: refused (the case under test): nothing is freed.
        unsafe { p.free_marked() }.unwrap_err(),
        FreeError::AlreadyFree
    );
    // SAFETY: this code owns the page and nothing maps it.
    assert!(unsafe { p.free() }.is_err());
    assert!(p.is_free() && !p.is_truncating());
    p.allocate().unwrap();
    assert!(p.allocate().is_err());
    // SAFETY: this code marked the page and nothing maps it.
    assert_eq!(
        // SAFETY: refused (the case under test): nothing is freed.
        unsafe { p.free_marked() }.unwrap_err(),
        FreeError::NotMarked
    );
    p.mark_truncating().unwrap();
    assert_eq!(
        p.mark_truncating().unwrap_err(),
        MarkError::AlreadyTruncating
    );
    assert!(p.allocate().is_err());
    // SAFETY: this code marked the page and nothing maps it.
    unsafe { p.free_marked() }.unwrap();
    assert!(p.is_free() && !p.is_truncating());
}
