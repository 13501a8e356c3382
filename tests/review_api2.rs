//! Second outside review of the vendoring API: black-box tests written from
//! the public docs and signatures only. It found seven holes; the fixes made
//! `TableBuilder::map`, `PageMeta::free`/`free_marked`, `TableAccess::entry`
//! and `DirectMap::word` `unsafe` to call (a map behind a truncate's unmap, a
//! free under a live truncate or mapping, a store into a live table behind
//! the builder's back), refuse `EpochRetire` with `CAP = 0` at compile time,
//! state that `TableAccess` indices stop at a table's end, and refuse a
//! foreign `WaitTicket` (tested below). The others held.

use core::iter::once;

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::{Epoch, EpochRetire, TablesNeverFreed, WalkGuard};
use pagepin::gup::{Gup, GupError, GupFlags, Stop};
use pagepin::memmap::{MemoryMap, Pfn, Region, RegionError, SliceMemMap};
use pagepin::meta::{COUNT_MAX, GetErrorKind, Hold, MAX_BATCH, PageMeta};
use pagepin::table::*;
use pagepin::truncate::*;
use pagepin::wait::{Clock, ForeignTicket, SpinWaiter, WaitSlot};

const VA: VirtAddr = VirtAddr(0x40_0000);
const PFN0: Pfn = Pfn(0x8_0000);
const PA0: PhysAddr = PhysAddr(0x8000_0000);
const TABLES: PhysAddr = PhysAddr(0x10_0000);

fn user_rw() -> Perms {
    Perms::READ | Perms::WRITE | Perms::USER
}

fn allocated(n: usize) -> Vec<PageMeta> {
    (0..n).map(|_| PageMeta::new_allocated()).collect()
}

fn frames(n: usize) -> Vec<HostFrame> {
    (0..n).map(|_| HostFrame::new()).collect()
}

/// The pages of the tests that use it are never mapped in any address space.
struct NothingMapped;

// SAFETY: every test using this unmapper truncates pages it never maps, so
// when `unmap_extent` returns no entry maps them and no TLB caches them.
unsafe impl Unmapper for NothingMapped {
    type Error = ();
    fn unmap_extent(&mut self, _extent: Extent) -> Result<(), ()> {
        Ok(())
    }
}

struct StdClock(std::time::Instant);

impl Clock for StdClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

struct ZeroClock;

impl Clock for ZeroClock {
    fn now_ns(&self) -> u64 {
        0
    }
}

// Attacks the count limits of one word: n = 0, n > MAX_BATCH, u32::MAX, and
// a get past COUNT_MAX, each refused with the word unchanged.
#[test]
fn meta_counts_near_the_limits_are_refused_without_change() {
    let page = PageMeta::new_allocated();
    for n in [0, MAX_BATCH + 1, u32::MAX] {
        let err = page.get(Hold::Ref, n).unwrap_err();
        assert_eq!(err.kind, GetErrorKind::InvalidCount, "n = {n}");
    }
    assert!(page.is_idle());
    for _ in 0..COUNT_MAX / MAX_BATCH {
        page.get(Hold::Pin, MAX_BATCH).unwrap();
    }
    page.get(Hold::Pin, COUNT_MAX % MAX_BATCH).unwrap();
    assert_eq!(page.pins(), COUNT_MAX);
    let before = page.load();
    assert_eq!(
        page.get(Hold::Pin, 1).unwrap_err().kind,
        GetErrorKind::CountLimit
    );
    assert_eq!(page.load(), before);
    // The other field is independent and the full one did not carry into it.
    page.get(Hold::Ref, MAX_BATCH).unwrap();
    assert_eq!((page.refs(), page.pins()), (MAX_BATCH, COUNT_MAX));
    // A page at the limit can be marked but never freed.
    page.mark_truncating().unwrap();
    // SAFETY: this code owns the page and nothing maps it.
    assert!(unsafe { page.free() }.is_err());
    // SAFETY: this code marked the page and nothing maps it.
    assert!(unsafe { page.free_marked() }.is_err());
    assert!(!page.is_free());
}

// Attacks the arithmetic at the top of the PFN and VA spaces: extents and
// ranges that end at, or run past, u64::MAX; leaf-size sets at 0 and 2^63.
#[test]
fn extents_ranges_and_leaf_sizes_at_the_top_do_not_overflow() {
    assert_eq!(Extent::new(Pfn(u64::MAX), 1).last(), Some(Pfn(u64::MAX)));
    assert_eq!(Extent::new(Pfn(u64::MAX), 2).last(), None);
    assert_eq!(Extent::new(Pfn(1), u64::MAX).last(), Some(Pfn(u64::MAX)));
    assert_eq!(
        Extent::new(Pfn(0), u64::MAX).last(),
        Some(Pfn(u64::MAX - 1))
    );
    assert_eq!(Extent::new(Pfn(7), 0).last(), None);
    assert!(!Extent::new(Pfn(u64::MAX), 2).overlaps(&Extent::new(Pfn(0), 1)));
    assert!(Extent::new(Pfn(1), u64::MAX).overlaps(&Extent::new(Pfn(u64::MAX), 1)));

    let top = VaRange::new(VirtAddr(u64::MAX), 1).unwrap();
    assert_eq!(
        (top.start(), top.last(), top.size()),
        (VirtAddr(u64::MAX), VirtAddr(u64::MAX), 1)
    );
    assert_eq!(VaRange::new(VirtAddr(u64::MAX), 2), Err(RangeError::Wraps));
    assert_eq!(VaRange::new(VirtAddr(0), 0), Err(RangeError::Empty));
    let almost_all = VaRange::from_inclusive(VirtAddr(1), VirtAddr(u64::MAX)).unwrap();
    assert_eq!(almost_all.size(), u64::MAX);
    // 2^64 bytes do not fit the u64 size: refused, not wrapped to 0.
    assert!(VaRange::from_inclusive(VirtAddr(0), VirtAddr(u64::MAX)).is_err());
    assert!(VaRange::from_inclusive(VirtAddr(5), VirtAddr(4)).is_err());

    assert!(LeafSizes::of(0).is_empty());
    assert_eq!(LeafSizes::of(0).smallest(), None);
    assert_eq!(LeafSizes::of(u64::MAX).smallest(), Some(1 << 63));
    assert_eq!(LeafSizes::of(3).smallest(), Some(2));
    let both = LeafSizes::of(1 << 63).union(LeafSizes::of(1));
    assert_eq!(both.iter().collect::<Vec<_>>(), vec![1, 1 << 63]);
}

// Attacks the degenerate sizes: a pool of 0 frames, an epoch of 0 slots, a
// memory map of 0 metas, and a map that ends at the last PFN.
#[test]
fn empty_pools_epochs_and_maps_are_typed_errors() {
    let memory_frames = frames(2);
    let memory = HostMemory::new(&memory_frames, TABLES).unwrap();
    let mut none: [PhysAddr; 0] = [];
    // SAFETY: the pool lists no frame at all.
    let pool = unsafe { FramePool::new(&mut none) };
    // SAFETY: no walker or MMU reads these tables (none are ever built).
    let reclaim = unsafe { ReclaimNow::new() };
    let err = TableBuilder::<Paging4Level, _, _>::new(&memory, pool, reclaim).unwrap_err();
    assert_eq!(err, MapError::PoolExhausted { needed: 1, free: 0 });

    pagepin::epoch_brand!(enum NoSlots);
    let epoch = Epoch::<NoSlots, 0>::new().unwrap();
    assert!(epoch.reader().is_err());
    let retired = epoch.retire_epoch();
    assert!(epoch.is_safe(retired));

    let no_metas: [PageMeta; 0] = [];
    // SAFETY: an empty slice: no meta is counted through any map.
    let empty = unsafe { SliceMemMap::<1>::new(Pfn(0), &no_metas) };
    assert_eq!((empty.last(), empty.pages()), (None, 0));
    assert!(empty.unit(Pfn(0)).is_err());
    assert!(Truncate::mark(&empty, once(Extent::new(Pfn(0), 1))).is_err());
    let nothing = Truncate::mark(&empty, core::iter::empty()).unwrap();
    assert_eq!(nothing.cancel().units, 0);

    let metas = allocated(2);
    // SAFETY: this map is the only one counting on `metas`.
    let mut top = unsafe { SliceMemMap::<2>::new(Pfn(u64::MAX - 1), &metas) };
    assert_eq!(top.last(), Some(Pfn(u64::MAX)));
    top.add_region(Region {
        first: Pfn(u64::MAX - 1),
        pages: 2,
        unit_pages: 2,
        layout_managed: true,
    })
    .unwrap();
    let unit = top.unit(Pfn(u64::MAX)).unwrap();
    assert_eq!(
        (unit.head, unit.pages, unit.last()),
        (Pfn(u64::MAX - 1), 2, Some(Pfn(u64::MAX)))
    );
    let region = Region {
        first: Pfn(0),
        pages: 0,
        unit_pages: 0,
        layout_managed: false,
    };
    assert_eq!(top.add_region(region), Err(RegionError::Misaligned));
    let marked = Truncate::mark(&top, once(Extent::new(Pfn(u64::MAX - 1), 2))).unwrap();
    assert_eq!(marked.cancel().units, 1);
    assert!(matches!(
        Truncate::mark(&top, once(Extent::new(Pfn(u64::MAX), 1))),
        Err(MarkSetError::Set(SetError::PartialUnit { .. }))
    ));
}

// Attacks a layout change under a held page that is not the head: pinning
// the second page of a would-be 2-page unit must block the regrouping.
#[test]
fn add_region_refuses_a_held_page_that_would_stop_being_a_head() {
    let metas = allocated(4);
    // SAFETY: this map is the only one counting on `metas`.
    let mut memmap = unsafe { SliceMemMap::<2>::new(PFN0, &metas) };
    memmap
        .unit(Pfn(PFN0.0 + 1))
        .unwrap()
        .meta
        .get(Hold::Pin, 1)
        .unwrap();
    let region = Region {
        first: PFN0,
        pages: 2,
        unit_pages: 2,
        layout_managed: true,
    };
    assert!(matches!(
        memmap.add_region(region),
        Err(RegionError::Held { .. })
    ));
    let unit = memmap.unit(Pfn(PFN0.0 + 1)).unwrap();
    assert_eq!(
        (unit.head, unit.pages, unit.meta.pins()),
        (Pfn(PFN0.0 + 1), 1, 1)
    );
}

// Attacks GUP-fast's edge inputs: empty output, zero and maximal lengths,
// LONGTERM without PIN, a range past the mapping; nothing may stay held.
#[test]
fn gup_edge_inputs_leave_nothing_held() {
    let table_frames = frames(8);
    let memory = HostMemory::new(&table_frames, TABLES).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let metas = allocated(4);
    // SAFETY: this map is the only one counting on `metas`.
    let memmap = unsafe { SliceMemMap::<1>::new(PFN0, &metas) };
    // SAFETY: the pool's frames are this test's own, in no other pool.
    let pool = unsafe { FramePool::new(&mut slots) };
    // SAFETY: one thread: no walker reads the tables while the builder unmaps; no MMU.
    let reclaim = unsafe { ReclaimNow::new() };
    let mut tables = TableBuilder::<Paging4Level, _, _>::new(&memory, pool, reclaim).unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&MapRequest::new(VA, PA0, 0x4000, 0x1000).with_perms(user_rw())) }.unwrap();
    let gup = Gup::new(tables.walker(), &memmap);
    // SAFETY: one thread; no table is freed while a walk runs.
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = [Pfn(0); 4];
    let mut empty: [Pfn; 0] = [];

    let held = gup
        .get_held(&guard, VA, 0x1000, GupFlags::PIN, &mut empty)
        .unwrap();
    assert_eq!(
        (held.pfns().len(), held.stop()),
        (0, Stop::OutputFull { va: VA })
    );
    drop(held);
    assert!(matches!(
        gup.get_held(&guard, VA, 0, GupFlags::PIN, &mut out),
        Err(GupError::Range(RangeError::Empty))
    ));
    assert!(matches!(
        gup.get_held(&guard, VA, u64::MAX, GupFlags::PIN, &mut out),
        Err(GupError::Range(RangeError::Wraps))
    ));
    assert!(
        gup.get_held(&guard, VA, 0x1001, GupFlags::PIN, &mut out)
            .is_err()
    );
    assert!(
        gup.get_held(&guard, VA, 0x1000, GupFlags::LONGTERM, &mut out)
            .is_err()
    );
    let top = gup.get_held(
        &guard,
        VirtAddr(0xffff_ffff_ffff_f000),
        0x1000,
        GupFlags::PIN,
        &mut out,
    );
    assert_eq!(top.unwrap().pfns().len(), 0);
    let past = gup
        .get_held(&guard, VA, 0x8000, GupFlags::PIN, &mut out)
        .unwrap();
    assert_eq!(
        past.stop(),
        Stop::Absent {
            va: VirtAddr(VA.0 + 0x4000)
        }
    );
    assert_eq!(past.pfns().len(), 4);
    assert!(metas.iter().all(|m| m.pins() == 1));
    drop(past);
    assert!(metas.iter().all(PageMeta::is_idle));
}

// Attacks HeldPages::into_raw: the counts must survive the handle, and the
// raw release of exactly those pages must bring every page back to idle.
#[test]
fn into_raw_hands_over_the_counts_once() {
    let table_frames = frames(8);
    let memory = HostMemory::new(&table_frames, TABLES).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let metas = allocated(4);
    // SAFETY: this map is the only one counting on `metas`.
    let memmap = unsafe { SliceMemMap::<1>::new(PFN0, &metas) };
    // SAFETY: the pool's frames are this test's own, in no other pool.
    let pool = unsafe { FramePool::new(&mut slots) };
    // SAFETY: one thread: no walker reads the tables while the builder unmaps; no MMU.
    let reclaim = unsafe { ReclaimNow::new() };
    let mut tables = TableBuilder::<Paging4Level, _, _>::new(&memory, pool, reclaim).unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&MapRequest::new(VA, PA0, 0x4000, 0x1000).with_perms(user_rw())) }.unwrap();
    let gup = Gup::new(tables.walker(), &memmap);
    // SAFETY: one thread; no table is freed while a walk runs.
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = [Pfn(0); 4];
    let held = gup
        .get_held(&guard, VA, 0x4000, GupFlags::PIN, &mut out)
        .unwrap();
    let (pfns, hold) = held.into_raw();
    assert_eq!((pfns.len(), hold), (4, Hold::Pin));
    assert!(metas.iter().all(|m| m.pins() == 1));
    // SAFETY: these are the four pins `held` took, handed over by `into_raw`
    // and released once, here.
    unsafe { pagepin::gup::release(&memmap, pfns, hold) }.unwrap();
    assert!(metas.iter().all(PageMeta::is_idle));
}

// Attacks Truncate::cancel and drop at each state: every mark the truncate
// made is cleared, and the pages are gettable again.
#[test]
fn cancel_and_drop_clear_the_marks_at_every_state() {
    let metas = allocated(4);
    // SAFETY: this map is the only one counting on `metas`.
    let memmap = unsafe { SliceMemMap::<1>::new(PFN0, &metas) };
    let set = once(Extent::new(PFN0, 4));
    let gettable = || {
        metas.iter().all(|m| {
            let ok = !m.is_truncating() && m.get(Hold::Ref, 1).is_ok();
            // SAFETY: releases the reference taken on the line above.
            ok && unsafe { m.put(Hold::Ref, 1) }.is_ok()
        })
    };

    let marked = Truncate::mark(&memmap, set.clone()).unwrap();
    assert!(metas.iter().all(PageMeta::is_truncating));
    assert_eq!(marked.cancel().units, 4);
    assert!(gettable());

    let unmapped = Truncate::mark(&memmap, set.clone())
        .unwrap()
        .unmap(&mut NothingMapped)
        .unwrap();
    assert_eq!(unmapped.cancel().units, 4);
    assert!(gettable());

    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &ZeroClock,
        deadline_ns: None,
    };
    let drained = Truncate::mark(&memmap, set.clone())
        .unwrap()
        .unmap(&mut NothingMapped)
        .unwrap()
        .drain(&wait)
        .unwrap();
    assert_eq!(drained.cancel().units, 4);
    assert!(gettable());

    let drained = Truncate::mark(&memmap, set.clone())
        .unwrap()
        .unmap(&mut NothingMapped)
        .unwrap()
        .drain(&wait)
        .unwrap();
    drop(drained);
    assert!(gettable());
    assert!(metas.iter().all(|m| m.is_idle() && !m.is_free()));
}

// Attacks a read section held open across the builder: detached tables must
// not be reused under it, and the builder must fail in bounded time, not hang.
#[test]
fn an_open_read_section_blocks_reuse_in_bounded_time() {
    pagepin::epoch_brand!(enum Held);
    let table_frames = frames(4);
    let memory = HostMemory::new(&table_frames, TABLES).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let epoch = Epoch::<Held, 1>::new().unwrap();
    // SAFETY: host tables: no MMU walks them, so no TLB caches them.
    let retire = unsafe { EpochRetire::<_, 1, 4>::new(&epoch) };
    // SAFETY: the pool's frames are this test's own, in no other pool.
    let pool = unsafe { FramePool::new(&mut slots) };
    let mut tables = TableBuilder::<Paging4Level, _, _>::new(&memory, pool, retire).unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&MapRequest::new(VA, PA0, 0x1000, 0x1000).with_perms(user_rw())) }.unwrap();
    let reader = epoch.reader().unwrap();
    let section = reader.enter();
    let unmapped = tables.unmap(VA, 0x1000).unwrap();
    assert_eq!((unmapped.tables, tables.pool().free_count()), (3, 0));
    let started = std::time::Instant::now();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    let again = unsafe { tables.map(&MapRequest::new(VirtAddr(0x20_0000), PA0, 0x1000, 0x1000)) };
    assert!(
        matches!(again, Err(MapError::PoolExhausted { .. })),
        "{again:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(tables.retire_hook().pending(), 3);
    drop(section);
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&MapRequest::new(VirtAddr(0x20_0000), PA0, 0x1000, 0x1000)) }.unwrap();
}

// Attacks the slow path: a fault handler that tears down and rebuilds the
// tables mid-call; the walk must resume on the new tables, keeping its pins.
#[test]
fn fault_handler_may_rebuild_the_tables_under_the_call() {
    pagepin::epoch_brand!(enum Faulting);
    let table_frames = frames(4);
    let memory = HostMemory::new(&table_frames, TABLES).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let metas = allocated(8);
    // SAFETY: this map is the only one counting on `metas`.
    let memmap = unsafe { SliceMemMap::<1>::new(PFN0, &metas) };
    let epoch = Epoch::<Faulting, 1>::new().unwrap();
    // SAFETY: host tables: no MMU walks them, so no TLB caches them.
    let retire = unsafe { EpochRetire::<_, 1, 4>::new(&epoch) };
    // SAFETY: the pool's frames are this test's own, in no other pool.
    let pool = unsafe { FramePool::new(&mut slots) };
    let tables = core::cell::RefCell::new(
        TableBuilder::<Paging4Level, _, _>::new(&memory, pool, retire).unwrap(),
    );
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables
            .borrow_mut()
            .map(&MapRequest::new(VA, PA0, 0x1000, 0x1000).with_perms(user_rw()))
    }
    .unwrap();
    let gup = Gup::new(tables.borrow().walker(), &memmap);
    let reader = epoch.reader().unwrap();
    let mut out = [Pfn(0); 2];
    let mut rebuild = |_va: VirtAddr, _flags: GupFlags| {
        let mut tables = tables.borrow_mut();
        // Every table is detached and, with only 3 spare frames, reused at
        // once by the new mapping (the section is not open during a fault).
        tables.unmap(VA, 0x1000).is_ok()
            // SAFETY: the pages mapped are this code's, unmapped before they are freed.
            && unsafe { tables
                .map(
                    &MapRequest::new(VA, PhysAddr(PA0.0 + 0x4000), 0x2000, 0x1000)
                        .with_perms(user_rw()),
                ) }
                .is_ok()
    };
    let taken = gup
        .get_pages_with_fault(&reader, VA, 0x2000, GupFlags::PIN, &mut out, &mut rebuild)
        .unwrap();
    assert_eq!((taken.pages, taken.stop), (2, Stop::Complete));
    assert_eq!(out, [PFN0, Pfn(PFN0.0 + 5)]);
    assert_eq!(
        metas.iter().map(PageMeta::pins).collect::<Vec<_>>(),
        [1, 0, 0, 0, 0, 1, 0, 0]
    );
    // SAFETY: releases exactly the two pins this call took (`out[..2]`).
    unsafe { pagepin::gup::release(&memmap, &out[..taken.pages], Hold::Pin) }.unwrap();
    assert!(metas.iter().all(PageMeta::is_idle));
}

// Was a finding (medium): WaitSlot::deregister accepted a ticket of any slot
// and its count wrapped, so safe code (anyone holding the memory map:
// `wait_slot` is a safe trait method) erased a drain's registration; the
// final put then woke nobody and the drain slept to its deadline. A foreign
// ticket is now refused (`ForeignTicket`) and changes nothing.
#[test]
fn a_foreign_wait_ticket_cannot_erase_a_drains_registration() {
    let spare = WaitSlot::new();
    let fresh = WaitSlot::new();
    assert_eq!(fresh.deregister(spare.register()), Err(ForeignTicket));
    let wrapped = fresh.waiters();

    let metas = allocated(1);
    // SAFETY: this map is the only one counting on `metas`.
    let memmap = unsafe { SliceMemMap::<1>::new(PFN0, &metas) };
    let meta = memmap.unit(PFN0).unwrap().meta;
    meta.get(Hold::Pin, 1).unwrap();
    let slot = memmap.wait_slot(PFN0);
    let clock = StdClock(std::time::Instant::now());
    let (waited, released_at_ns) = std::thread::scope(|s| {
        let drain = s.spawn(|| {
            let wait = Wait {
                waiter: &SpinWaiter,
                clock: &clock,
                deadline_ns: Some(3_000_000_000),
            };
            let unmapped = Truncate::mark(&memmap, once(Extent::new(PFN0, 1)))
                .unwrap()
                .unmap(&mut NothingMapped)
                .unwrap();
            let drained = unmapped.drain(&wait).map_err(|failed| failed.error);
            let at = clock.now_ns();
            drained.unwrap().free().unwrap();
            at
        });
        while slot.waiters() == 0 {
            std::hint::spin_loop();
        }
        assert_eq!(slot.deregister(spare.register()), Err(ForeignTicket));
        let released = clock.now_ns();
        // SAFETY: releases the pin taken above, by this test, once.
        if unsafe { meta.put(Hold::Pin, 1) }.unwrap().is_due() {
            memmap.wake(PFN0);
        }
        (drain.join().unwrap(), released)
    });
    assert!(
        waited - released_at_ns < 1_000_000_000,
        "the drain saw the final put only at its deadline ({} ms later)",
        (waited - released_at_ns) / 1_000_000
    );
    assert_eq!(
        wrapped, 0,
        "deregistering a foreign ticket wrapped the waiter count"
    );
}

// Guard-domain check: the walker of an epoch builder takes that epoch's
// reader (the compile-time half is in the compile experiments of the report).
#[test]
fn the_builders_own_epoch_reader_is_accepted() {
    pagepin::epoch_brand!(enum Own);
    let table_frames = frames(8);
    let memory = HostMemory::new(&table_frames, TABLES).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let metas = allocated(1);
    // SAFETY: this map is the only one counting on `metas`.
    let memmap = unsafe { SliceMemMap::<1>::new(PFN0, &metas) };
    let epoch = Epoch::<Own, 1>::new().unwrap();
    assert!(Epoch::<Own, 1>::new().is_err());
    // SAFETY: host tables: no MMU walks them, so no TLB caches them.
    let retire = unsafe { EpochRetire::<_, 1, 4>::new(&epoch) };
    // SAFETY: the pool's frames are this test's own, in no other pool.
    let pool = unsafe { FramePool::new(&mut slots) };
    let mut tables = TableBuilder::<Paging4Level, _, _>::new(&memory, pool, retire).unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&MapRequest::new(VA, PA0, 0x1000, 0x1000).with_perms(user_rw())) }.unwrap();
    let reader = epoch.reader().unwrap();
    assert!(epoch.reader().is_err());
    let gup = Gup::new(tables.walker(), &memmap);
    let mut out = [Pfn(0); 1];
    let held = gup
        .get_held(&reader, VA, 0x1000, GupFlags::PIN, &mut out)
        .unwrap();
    assert_eq!(held.pfns(), &[PFN0]);
    let nested = reader.enter();
    drop(held);
    drop(nested);
    assert!(metas[0].is_idle());
}
