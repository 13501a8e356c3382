//! Run: `cargo test --test truncate`
//!
//! The truncate protocol: the full sequence against GUP-fast pins held by
//! another thread, cancel in every state, drop without finishing, overlapping
//! truncates, try_drain reports, leases revoked in time and too late, a full
//! registry, sets that cover part of a unit, bad extents, and the exact counts
//! of RMWs and parks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, Pfn, Region, SliceMemMap};
use pagepin::meta::{FreeError, GetErrorKind, Hold, MarkError, MetaWord, PageMeta};
use pagepin::sync::op_count;
use pagepin::table::{
    FramePool, HostFrame, HostMemory, LeafSizes, MapRequest, Perms, PhysAddr, ReclaimNow,
    TableBuilder, VaRange, VirtAddr,
};
use pagepin::truncate::*;
use pagepin::wait::{Clock, Parked, SpinWaiter, Waiter};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
/// PFN of the first data page (PA 1 GiB).
const BASE: u64 = 0x40000;
/// 8 units of 2 MiB (layout-managed), then single pages.
const HUGE: u64 = BASE;
const SMALL: u64 = BASE + 8 * 512;
const PAGES: usize = 8 * 512 + 64;

struct Host {
    metas: Vec<PageMeta>,
}

impl Host {
    fn new() -> Host {
        Host {
            metas: (0..PAGES).map(|_| PageMeta::new_allocated()).collect(),
        }
    }

    fn memmap(&self) -> SliceMemMap<'_> {
        // SAFETY: this map is the only one counting on these metas.
        let mut map = unsafe { SliceMemMap::new(Pfn(BASE), &self.metas) };
        map.add_region(Region {
            first: Pfn(HUGE),
            pages: 8 * 512,
            unit_pages: 512,
            layout_managed: true,
        })
        .unwrap();
        map
    }
}

fn huge(unit: u64) -> Extent {
    Extent::new(Pfn(HUGE + unit * 512), 512)
}

fn small(first: u64, pages: u64) -> Extent {
    Extent::new(Pfn(SMALL + first), pages)
}

/// An unmapper for sets nothing maps.
struct NothingMapped;

// SAFETY: used only for sets no table maps.
unsafe impl Unmapper for NothingMapped {
    type Error = core::convert::Infallible;

    fn unmap_extent(&mut self, _: Extent) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct StdClock(Instant);

impl Clock for StdClock {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

fn forever<'w>(clock: &'w StdClock) -> Wait<'w> {
    Wait {
        waiter: &SpinWaiter,
        clock,
        deadline_ns: None,
    }
}

fn within(clock: &StdClock, ms: u64) -> Wait<'_> {
    Wait {
        waiter: &SpinWaiter,
        clock,
        deadline_ns: Some(clock.now_ns() + ms * 1_000_000),
    }
}

fn all_idle_unmarked(memmap: &SliceMemMap<'_>, extents: &[Extent]) -> bool {
    extents.iter().all(|e| {
        let w = memmap.unit(e.first).unwrap().meta.load();
        w.is_idle() && !w.is_truncating() && !w.is_free()
    })
}

#[test]
fn the_whole_protocol_against_pins_held_elsewhere() {
    let host = Host::new();
    let memmap = host.memmap();
    let frames: Vec<HostFrame> = (0..16).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut spaces = [TableBuilder::<Paging4Level, _, _>::new(
        &memory,
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        unsafe { FramePool::new(&mut slots) },
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        unsafe { ReclaimNow::new() },
    )
    .unwrap()];
    let va = 0x4000_0000;
    let perms = Perms::READ | Perms::WRITE | Perms::USER;
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        spaces[0].map(
            &MapRequest::new(VirtAddr(va), PhysAddr(HUGE << 12), 2 * MIB2, MIB2).with_perms(perms),
        )
    }
    .unwrap();
    // A device pins both units through GUP-fast.
    // SAFETY: no table is freed while this test walks.
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = vec![Pfn(0); 1024];
    let taken = Gup::new(spaces[0].walker(), &memmap)
        .get_pages(&guard, VirtAddr(va), 2 * MIB2, GupFlags::PIN, &mut out)
        .unwrap();
    assert_eq!(taken.pages, 1024);

    struct Flushes(Vec<(usize, VaRange, LeafSizes)>);
    // SAFETY: host tables: no MMU walks them; this hook only records the calls.
    unsafe impl TlbShootdown for Flushes {
        fn flush(&mut self, space: usize, range: VaRange, sizes: LeafSizes) {
            self.0.push((space, range, sizes));
        }
    }
    // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
    let mut unmapper =
        unsafe { TableUnmapper::<_, _, _, _, 4>::new(&mut spaces, 12, Flushes(Vec::new())) };
    unmapper
        .add_mapping(FileMapping {
            space: 0,
            va: VirtAddr(va),
            first: Pfn(HUGE),
            pages: 1024,
        })
        .unwrap();
    let set = [huge(0), huge(1)];
    let marked = Truncate::mark(&memmap, set.into_iter()).unwrap();
    assert_eq!(marked.units_marked(), 2);
    let unmapped = marked.unmap(&mut unmapper).unwrap();
    assert_eq!(unmapper.tlb().0.len(), 2, "one flush per mapped extent");
    assert!(
        unmapper.tlb().0.iter().all(|f| f.2 == LeafSizes::of(MIB2)),
        "each flush learns it removed 2 MiB leaves: {:?}",
        unmapper.tlb().0
    );
    let walker = unmapper.spaces()[0].walker();
    assert!(
        walker.translate(VirtAddr(va)).unwrap().leaf().is_none(),
        "unmapped"
    );
    // Busy: the pins are still held.
    let unmapped = match unmapped.try_drain::<4>() {
        Err(Failed { truncate, error }) => {
            assert_eq!(error.total, 2);
            assert_eq!(error.first[0].pins, 512);
            truncate
        }
        Ok(_) => panic!("drained with pins held"),
    };
    let clock = StdClock(Instant::now());
    let drained = std::thread::scope(|s| {
        let releaser = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&memmap, &out, Hold::Pin) }.unwrap();
        });
        let drained = unmapped.drain(&forever(&clock)).unwrap();
        releaser.join().unwrap();
        drained
    });
    // Invariant 2: after the drain no get succeeds until the pages are reused.
    for e in set {
        let meta = memmap.unit(e.first).unwrap().meta;
        assert_eq!(
            meta.get(Hold::Ref, 1).unwrap_err().kind,
            GetErrorKind::Truncating
        );
    }
    assert_eq!(drained.free(), Ok(Freed { units: 2 }));
    for e in set {
        assert_eq!(memmap.unit(e.first).unwrap().meta.load(), MetaWord::FREE);
    }
}

#[test]
fn cancel_in_every_state_clears_the_marks() {
    let host = Host::new();
    let memmap = host.memmap();
    let set = [huge(2), small(0, 4), small(10, 2)];
    let unmarked = || all_idle_unmarked(&memmap, &set);
    let marked = Truncate::mark(&memmap, set.into_iter()).unwrap();
    assert!(!unmarked());
    assert_eq!(marked.cancel(), Cancelled { units: 7 });
    assert!(unmarked());
    let unmapped = Truncate::mark(&memmap, set.into_iter())
        .unwrap()
        .unmap(&mut NothingMapped)
        .unwrap();
    assert_eq!(unmapped.cancel(), Cancelled { units: 7 });
    assert!(unmarked());
    let drained = Truncate::mark(&memmap, set.into_iter())
        .unwrap()
        .unmap(&mut NothingMapped)
        .unwrap()
        .try_drain::<1>()
        .unwrap();
    assert_eq!(drained.cancel(), Cancelled { units: 7 });
    assert!(unmarked());
    // After a cancel the pages are gettable again.
    let meta = memmap.unit(Pfn(SMALL)).unwrap().meta;
    meta.get(Hold::Pin, 1).unwrap();
    // SAFETY: gives back a count this code took above.
    assert!(!unsafe { meta.put(Hold::Pin, 1) }.unwrap().is_due());
}

#[test]
fn dropping_without_finishing_cancels() {
    let host = Host::new();
    let memmap = host.memmap();
    let set = [small(0, 8)];
    {
        let _marked = Truncate::mark(&memmap, set.into_iter()).unwrap();
        assert!(memmap.unit(Pfn(SMALL + 3)).unwrap().meta.is_truncating());
    }
    assert!(all_idle_unmarked(&memmap, &set));
    {
        let _unmapped = Truncate::mark(&memmap, set.into_iter())
            .unwrap()
            .unmap(&mut NothingMapped)
            .unwrap();
    }
    assert!(all_idle_unmarked(&memmap, &set));
}

#[test]
fn overlapping_truncates_never_share_marks() {
    let host = Host::new();
    let memmap = host.memmap();
    let first = Truncate::mark(&memmap, [small(4, 4)].into_iter()).unwrap();
    // The second set starts with units of its own, then meets the first's.
    let err = Truncate::mark(&memmap, [small(0, 8)].into_iter()).unwrap_err();
    assert_eq!(
        err,
        MarkSetError::Unit {
            head: Pfn(SMALL + 4),
            error: MarkError::AlreadyTruncating
        }
    );
    // Its own partial marks were rolled back; the first truncate's remain.
    assert!(all_idle_unmarked(
        &memmap,
        &[small(0, 1), small(1, 1), small(2, 1), small(3, 1)]
    ));
    for i in 4..8 {
        assert!(memmap.unit(Pfn(SMALL + i)).unwrap().meta.is_truncating());
    }
    assert_eq!(first.cancel(), Cancelled { units: 4 });
}

#[test]
fn bad_sets_are_typed_errors_and_leave_nothing_marked() {
    let host = Host::new();
    let memmap = host.memmap();
    let cases = [
        (
            vec![small(0, 2), Extent::new(Pfn(SMALL + 5), 0)],
            MarkSetError::Set(SetError::EmptyExtent {
                first: Pfn(SMALL + 5),
            }),
        ),
        (
            vec![small(0, 2), Extent::new(Pfn(u64::MAX - 1), 4)],
            MarkSetError::Set(SetError::Wraps {
                extent: Extent::new(Pfn(u64::MAX - 1), 4),
            }),
        ),
        (
            // Starts inside a 2 MiB unit.
            vec![small(0, 2), Extent::new(Pfn(HUGE + 1), 511)],
            MarkSetError::Set(SetError::PartialUnit {
                pfn: Pfn(HUGE + 1),
                head: Pfn(HUGE),
                pages: 512,
            }),
        ),
        (
            // Ends inside one.
            vec![small(0, 2), Extent::new(Pfn(HUGE), 513)],
            MarkSetError::Set(SetError::PartialUnit {
                pfn: Pfn(HUGE + 512),
                head: Pfn(HUGE + 512),
                pages: 512,
            }),
        ),
        (
            vec![small(0, 2), Extent::new(Pfn(BASE + PAGES as u64), 1)],
            MarkSetError::Set(SetError::OutsideMap(pagepin::memmap::OutsideMap {
                pfn: Pfn(BASE + PAGES as u64),
            })),
        ),
    ];
    for (set, expected) in cases {
        assert_eq!(
            Truncate::mark(&memmap, set.iter().copied()).unwrap_err(),
            expected
        );
        assert!(
            all_idle_unmarked(&memmap, &[small(0, 1), small(1, 1)]),
            "{expected:?}"
        );
    }
    // A free unit cannot be marked.
    let meta = memmap.unit(Pfn(SMALL + 20)).unwrap().meta;
    // SAFETY: this code owns the page and nothing maps it.
    unsafe { meta.free() }.unwrap();
    assert_eq!(
        Truncate::mark(&memmap, [small(20, 1)].into_iter()).unwrap_err(),
        MarkSetError::Unit {
            head: Pfn(SMALL + 20),
            error: MarkError::Free
        }
    );
    meta.allocate().unwrap();
}

#[test]
fn try_drain_reports_the_first_busy_units_and_the_total() {
    let host = Host::new();
    let memmap = host.memmap();
    for i in [3, 5, 6] {
        memmap
            .unit(Pfn(SMALL + i))
            .unwrap()
            .meta
            .get(Hold::Ref, 2)
            .unwrap();
    }
    let unmapped = Truncate::mark(&memmap, [small(0, 8)].into_iter())
        .unwrap()
        .unmap(&mut NothingMapped)
        .unwrap();
    let Err(Failed { truncate, error }) = unmapped.try_drain::<2>() else {
        panic!("busy units")
    };
    assert_eq!(error.total, 3);
    let heads: Vec<_> = error.first.iter().map(|b| (b.head, b.refs)).collect();
    assert_eq!(heads, [(Pfn(SMALL + 3), 2), (Pfn(SMALL + 5), 2)]);
    for i in [3, 5, 6] {
        // SAFETY: gives back a count this code took above.
        let _ = unsafe { memmap.unit(Pfn(SMALL + i)).unwrap().meta.put(Hold::Ref, 2) }.unwrap();
    }
    let drained = truncate.try_drain::<2>().unwrap();
    assert_eq!(drained.free(), Ok(Freed { units: 8 }));
}

#[test]
fn a_drain_that_times_out_hands_the_truncate_back() {
    let host = Host::new();
    let memmap = host.memmap();
    let meta = memmap.unit(Pfn(HUGE)).unwrap().meta;
    meta.get(Hold::Pin, 7).unwrap();
    let clock = StdClock(Instant::now());
    let unmapped = Truncate::mark(&memmap, [huge(0)].into_iter())
        .unwrap()
        .unmap(&mut NothingMapped)
        .unwrap();
    let Err(Failed { truncate, error }) = unmapped.drain(&within(&clock, 5)) else {
        panic!("a pin is held")
    };
    assert_eq!(
        error,
        DrainError::TimedOut(BusyUnit {
            head: Pfn(HUGE),
            refs: 0,
            pins: 7
        })
    );
    assert!(
        // SAFETY: gives back a count this code took above.
        unsafe { meta.put(Hold::Pin, 7) }.unwrap().is_due(),
        "the final put of a marked unit"
    );
    let drained = truncate.drain(&within(&clock, 1000)).unwrap();
    assert_eq!(drained.free(), Ok(Freed { units: 1 }));
}

/// A waiter whose first park releases every pin, as a device finishing its DMA
/// at once would: the drain must park exactly once for the whole set.
struct ReleaseOnPark<'a> {
    heads: &'a [Pfn],
    memmap: &'a SliceMemMap<'a>,
}

impl Waiter for ReleaseOnPark<'_> {
    fn park(&self, ready: &dyn Fn() -> bool, _: &dyn Clock, _: Option<u64>) -> Parked {
        for &head in self.heads {
            let meta = self.memmap.unit(head).unwrap().meta;
            // SAFETY: gives back a count this code took above.
            if unsafe { meta.put(Hold::Pin, 1) }.unwrap().is_due() {
                self.memmap.wake(head);
            }
        }
        assert!(ready(), "the release woke the slot the drain registered in");
        Parked::Ready
    }
}

#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn one_pass_to_mark_and_one_park_per_set() {
    let host = Host::new();
    let memmap = host.memmap();
    let busy: Vec<Pfn> = [2u64, 9, 30].iter().map(|i| Pfn(SMALL + i)).collect();
    for &head in &busy {
        memmap.unit(head).unwrap().meta.get(Hold::Pin, 1).unwrap();
    }
    op_count::reset();
    let marked = Truncate::mark(&memmap, [small(0, 64), huge(0), huge(1)].into_iter()).unwrap();
    assert_eq!(op_count::get().rmw, 66, "one RMW per unit, one pass");
    let unmapped = marked.unmap(&mut NothingMapped).unwrap();
    let clock = StdClock(Instant::now());
    let waiter = ReleaseOnPark {
        heads: &busy,
        memmap: &memmap,
    };
    op_count::reset();
    let drained = unmapped
        .drain(&Wait {
            waiter: &waiter,
            clock: &clock,
            deadline_ns: None,
        })
        .unwrap();
    assert_eq!(op_count::get().park, 1, "one park for the whole set");
    assert_eq!(drained.free(), Ok(Freed { units: 66 }));
}

struct Holder {
    revoked: AtomicBool,
}

impl Revoke for Holder {
    fn revoke(&self, _lease: LeaseId) {
        self.revoked.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_lease_revoked_in_time_lets_the_drain_finish() {
    let host = Host::new();
    let memmap = host.memmap();
    let holder = Holder {
        revoked: AtomicBool::new(false),
    };
    let registry = LeaseRegistry::<4>::new();
    let meta = memmap.unit(Pfn(HUGE)).unwrap().meta;
    let clock = StdClock(Instant::now());
    std::thread::scope(|s| {
        let lease = registry.grant(huge(0), &holder).unwrap();
        meta.get(Hold::Pin, 512).unwrap();
        let device = s.spawn(|| {
            // The driver: on revocation, stop DMA, unpin, drop the lease.
            while !holder.revoked.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            assert!(lease.is_revoked());
            // SAFETY: gives back a count this code took above.
            if unsafe { meta.put(Hold::Pin, 512) }.unwrap().is_due() {
                memmap.wake(Pfn(HUGE));
            }
            drop(lease);
        });
        let unmapped = Truncate::mark(&memmap, [huge(0), huge(1)].into_iter())
            .unwrap()
            .unmap(&mut NothingMapped)
            .unwrap();
        let drained = unmapped
            .drain_with_leases(&registry, &within(&clock, 10_000))
            .unwrap();
        device.join().unwrap();
        assert_eq!(drained.free(), Ok(Freed { units: 2 }));
    });
    assert!(registry.is_empty());
}

#[test]
fn a_lease_held_too_long_fails_the_drain_naming_it() {
    let host = Host::new();
    let memmap = host.memmap();
    let holder = Holder {
        revoked: AtomicBool::new(false),
    };
    let registry = LeaseRegistry::<4>::new();
    let elsewhere = registry.grant(huge(5), &holder).unwrap();
    let lease = registry.grant(huge(0), &holder).unwrap();
    let meta = memmap.unit(Pfn(HUGE)).unwrap().meta;
    meta.get(Hold::Pin, 1).unwrap();
    let clock = StdClock(Instant::now());
    let unmapped = Truncate::mark(&memmap, [huge(0)].into_iter())
        .unwrap()
        .unmap(&mut NothingMapped)
        .unwrap();
    let Err(Failed { truncate, error }) = unmapped.drain_with_leases(&registry, &within(&clock, 5))
    else {
        panic!("the lease is held")
    };
    assert_eq!(error, DrainError::LeaseHeld(lease.id()));
    assert!(holder.revoked.load(Ordering::SeqCst));
    assert!(
        !elsewhere.is_revoked(),
        "a lease outside the set is left alone"
    );
    // The pinned page was never freed; cancel gives it back to the holder.
    assert_eq!(truncate.cancel(), Cancelled { units: 1 });
    assert_eq!(meta.pins(), 1);
    // SAFETY: gives back a count this code took above.
    assert!(!unsafe { meta.put(Hold::Pin, 1) }.unwrap().is_due());
    drop(lease);
    drop(elsewhere);
}

#[test]
fn a_full_registry_is_a_typed_error() {
    let holder = Holder {
        revoked: AtomicBool::new(false),
    };
    let registry = LeaseRegistry::<2>::new();
    let a = registry.grant(huge(0), &holder).unwrap();
    let b = registry.grant(huge(1), &holder).unwrap();
    assert_eq!(registry.grant(huge(2), &holder).unwrap_err(), RegistryFull);
    drop(a);
    let c = registry.grant(huge(2), &holder).unwrap();
    assert_ne!(b.id(), c.id());
    assert_eq!(registry.len(), 2);
}

#[test]
fn gup_after_the_mark_is_refused() {
    let host = Host::new();
    let memmap = host.memmap();
    let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() })
            .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(VirtAddr(0x40_0000), PhysAddr(SMALL << 12), 8 * KIB4, KIB4)
                .with_perms(Perms::READ | Perms::WRITE),
        )
    }
    .unwrap();
    let marked = Truncate::mark(&memmap, [small(4, 4)].into_iter()).unwrap();
    // SAFETY: no table is freed while this test walks.
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = [Pfn(0); 8];
    let taken = Gup::new(tables.walker(), &memmap)
        .get_pages(
            &guard,
            VirtAddr(0x40_0000),
            8 * KIB4,
            GupFlags::PIN,
            &mut out,
        )
        .unwrap();
    assert_eq!(taken.pages, 4);
    assert!(matches!(
        taken.stop,
        Stop::Refused {
            kind: GetErrorKind::Truncating,
            ..
        }
    ));
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &out[..4], Hold::Pin) }.unwrap();
    let _ = marked.cancel();
}

/// A waiter that really sleeps (a condition variable) and is woken only by the
/// lease registry's wake hook: a lost wake-up would be a timed-out drain.
struct Sleeper {
    woken: std::sync::Mutex<bool>,
    bell: std::sync::Condvar,
}

impl Sleeper {
    fn ring(&self) {
        *self.woken.lock().unwrap() = true;
        self.bell.notify_all();
    }
}

impl Waiter for Sleeper {
    fn park(&self, ready: &dyn Fn() -> bool, _: &dyn Clock, _: Option<u64>) -> Parked {
        let mut woken = self.woken.lock().unwrap();
        loop {
            if ready() {
                return Parked::Ready;
            }
            if *woken {
                *woken = false;
                continue;
            }
            let (guard, timeout) = self
                .bell
                .wait_timeout(woken, Duration::from_secs(10))
                .unwrap();
            woken = guard;
            if timeout.timed_out() {
                return Parked::TimedOut;
            }
        }
    }
}

#[test]
fn dropping_a_lease_wakes_a_sleeping_drain() {
    let host = Host::new();
    let memmap = host.memmap();
    let holder = Holder {
        revoked: AtomicBool::new(false),
    };
    let sleeper = Sleeper {
        woken: std::sync::Mutex::new(false),
        bell: std::sync::Condvar::new(),
    };
    let ring = || sleeper.ring();
    let registry = LeaseRegistry::<2>::with_wake(&ring);
    let clock = StdClock(Instant::now());
    std::thread::scope(|s| {
        let lease = registry.grant(huge(3), &holder).unwrap();
        s.spawn(|| {
            while !holder.revoked.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            drop(lease);
        });
        let unmapped = Truncate::mark(&memmap, [huge(3)].into_iter())
            .unwrap()
            .unmap(&mut NothingMapped)
            .unwrap();
        let drained = unmapped
            .drain_with_leases(
                &registry,
                &Wait {
                    waiter: &sleeper,
                    clock: &clock,
                    deadline_ns: None,
                },
            )
            .unwrap();
        assert_eq!(drained.free(), Ok(Freed { units: 1 }));
    });
}

#[test]
fn failed_steps_are_errors_with_a_source() {
    let host = Host::new();
    let memmap = host.memmap();
    memmap
        .unit(Pfn(SMALL))
        .unwrap()
        .meta
        .get(Hold::Ref, 1)
        .unwrap();
    let unmapped = Truncate::mark(&memmap, [small(0, 1)].into_iter())
        .unwrap()
        .unmap(&mut NothingMapped)
        .unwrap();
    let failed = unmapped.try_drain::<1>().unwrap_err();
    let as_error: &dyn std::error::Error = &failed;
    assert_eq!(
        as_error.source().unwrap().to_string(),
        "1 units still busy, first PFN 0x41000 (1 refs, 0 pins)"
    );
    let _ = failed.truncate.cancel();
    assert!(
        // SAFETY: gives back a count this code took above.
        !unsafe { memmap.unit(Pfn(SMALL)).unwrap().meta.put(Hold::Ref, 1) }
            .unwrap()
            .is_due()
    );
}

/// Runs `f` on another thread and fails the test if it has not returned within
/// `secs` seconds (a hang is a failure, not a stuck test run).
fn within_secs<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("hang: did not return in time")
}

#[test]
fn free_after_an_unmark_behind_the_back_is_an_error_not_a_hang() {
    let host: &'static Host = Box::leak(Box::new(Host::new()));
    let result = within_secs(30, || {
        let memmap = host.memmap();
        let set = [small(0, 4)];
        let drained = Truncate::mark(&memmap, set.into_iter())
            .unwrap()
            .unmap(&mut NothingMapped)
            .unwrap()
            .try_drain::<1>()
            .unwrap();
        // Behind the truncate's back: unit 1 unmarked and got again, unit 2
        // unmarked and left idle.
        let meta1 = memmap.unit(Pfn(SMALL + 1)).unwrap().meta;
        let meta2 = memmap.unit(Pfn(SMALL + 2)).unwrap().meta;
        // SAFETY: deliberately breaks the contract (a stray unmark of a truncate's mark) to check that the truncate's free refuses the unit rather than free it under a holder.
        unsafe { meta1.unmark_truncating() }.unwrap();
        meta1.get(Hold::Ref, 1).unwrap();
        // SAFETY: deliberately breaks the contract (a stray unmark of a truncate's mark) to check that the truncate's free refuses the unit rather than free it under a holder.
        unsafe { meta2.unmark_truncating() }.unwrap();
        let result = drained.free();
        // Neither is freed; the others are.
        let w1 = meta1.load();
        assert!(
            w1.refs() == 1 && !w1.is_truncating() && !w1.is_free(),
            "{w1:?}"
        );
        assert_eq!(meta2.load(), MetaWord::ALLOCATED_IDLE);
        for i in [0, 3] {
            assert!(memmap.unit(Pfn(SMALL + i)).unwrap().meta.is_free());
        }
        result
    });
    let err = result.unwrap_err();
    assert_eq!(
        err,
        FreeSetError {
            head: Pfn(SMALL + 1),
            error: FreeError::NotMarked,
            freed: 2,
            failed: 2,
        }
    );
    assert_eq!(
        err.to_string(),
        "unit at PFN 0x41001: page is no longer marked truncating (unmarked behind \
         the truncate's back) (2 units freed, 2 not)"
    );
}

#[test]
fn free_of_a_unit_remarked_with_a_count_is_busy_not_a_hang() {
    // Unmarked behind the truncate's back, got, and marked again (by someone
    // else): marked but never idle. `free` gives up after its bounded retries.
    let host: &'static Host = Box::leak(Box::new(Host::new()));
    let err = within_secs(30, || {
        let memmap = host.memmap();
        let drained = Truncate::mark(&memmap, [small(0, 2)].into_iter())
            .unwrap()
            .unmap(&mut NothingMapped)
            .unwrap()
            .try_drain::<1>()
            .unwrap();
        let meta = memmap.unit(Pfn(SMALL + 1)).unwrap().meta;
        // SAFETY: deliberately breaks the contract (a stray unmark of a truncate's mark) to check that the truncate's free refuses the unit rather than free it under a holder.
        unsafe { meta.unmark_truncating() }.unwrap();
        meta.get(Hold::Pin, 1).unwrap();
        meta.mark_truncating().unwrap();
        let err = drained.free().unwrap_err();
        // Not freed; the pin is intact and the mark is the caller's now.
        assert_eq!(meta.pins(), 1);
        assert!(meta.is_truncating());
        // SAFETY: gives back a count this code took above.
        assert!(unsafe { meta.put(Hold::Pin, 1) }.unwrap().is_due());
        // SAFETY: this code marked the page and nothing maps it.
        assert_eq!(unsafe { meta.free_marked() }, Ok(()));
        err
    });
    assert_eq!(
        err,
        FreeSetError {
            head: Pfn(SMALL + 1),
            error: FreeError::Busy { refs: 0, pins: 1 },
            freed: 1,
            failed: 1,
        }
    );
}

#[test]
fn racing_truncates_of_a_free_unit_both_see_free() {
    // The loser of two marks on a free page used to see the winner's transient
    // `TRUNCATING` and report another truncate. Both must report `Free`.
    use std::sync::Barrier;
    let host = Host::new();
    let memmap = host.memmap();
    let meta = memmap.unit(Pfn(SMALL + 7)).unwrap().meta;
    // SAFETY: this code owns the page and nothing maps it.
    unsafe { meta.free() }.unwrap();
    let expected = MarkSetError::Unit {
        head: Pfn(SMALL + 7),
        error: MarkError::Free,
    };
    for _ in 0..300 {
        let start = Barrier::new(2);
        std::thread::scope(|s| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        Truncate::mark(&memmap, [small(7, 1)].into_iter()).unwrap_err()
                    })
                })
                .collect();
            for r in racers {
                assert_eq!(r.join().unwrap(), expected);
            }
        });
        assert_eq!(meta.load(), MetaWord::FREE);
    }
    meta.allocate().unwrap();
}

#[test]
fn a_set_listing_a_unit_twice_is_a_duplicate_and_leaves_no_marks() {
    let host = Host::new();
    let memmap = host.memmap();
    let cases = [
        // Overlapping extents of single pages.
        (
            vec![small(0, 4), small(2, 4)],
            SetError::Duplicate {
                head: Pfn(SMALL + 2),
                pages: 1,
            },
        ),
        // The same extent twice.
        (
            vec![small(5, 1), small(5, 1)],
            SetError::Duplicate {
                head: Pfn(SMALL + 5),
                pages: 1,
            },
        ),
        // A 2 MiB unit listed again after other extents.
        (
            vec![huge(1), small(0, 2), huge(0), huge(1)],
            SetError::Duplicate {
                head: Pfn(HUGE + 512),
                pages: 512,
            },
        ),
    ];
    let everything = [huge(0), huge(1), small(0, 8)];
    for (set, expected) in cases {
        assert_eq!(
            Truncate::mark(&memmap, set.iter().copied()).unwrap_err(),
            MarkSetError::Set(expected)
        );
        assert!(all_idle_unmarked(&memmap, &everything), "{expected:?}");
    }
    assert_eq!(
        MarkSetError::Set(SetError::Duplicate {
            head: Pfn(SMALL + 2),
            pages: 1
        })
        .to_string(),
        "the set lists the 1-page unit at PFN 0x41002 twice (its extents overlap)"
    );
    // A unit another truncate marked is still that truncate's, not a duplicate,
    // even when this set lists it twice.
    let other = Truncate::mark(&memmap, [small(3, 1)].into_iter()).unwrap();
    assert_eq!(
        Truncate::mark(&memmap, [small(0, 4), small(3, 1)].into_iter()).unwrap_err(),
        MarkSetError::Unit {
            head: Pfn(SMALL + 3),
            error: MarkError::AlreadyTruncating
        }
    );
    assert_eq!(other.cancel(), Cancelled { units: 1 });
    assert!(all_idle_unmarked(&memmap, &everything));
}
