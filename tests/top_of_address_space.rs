//! Run: `cargo test --test top_of_address_space`
//!
//! Address arithmetic at the top of the address space (issue 14), in the
//! default debug test build, where an overflowing `+`, `-`, `*` or shift
//! panics. For every format, a mapping whose last byte is the last address
//! the format translates — the top of the upper half (x86_64 4- and 5-level,
//! aarch64 stage 1 TTBR1 with each granule), or the top of the only range
//! (EPT, aarch64 stage 1 TTBR0 and stage 2, the toy format) — with each of the
//! format's leaf sizes, goes through the whole life of a page:
//!
//! - the builder maps it (`TableBuilder::map`), the walker translates its last
//!   byte and walks it;
//! - GUP-fast pins all of it (`Gup::get_pages`, one RMW per allocation unit),
//!   takes a reference on its last base page alone, and refuses a range that
//!   runs past the top with a typed error;
//! - the truncate protocol, with the pins still held, marks its pages, unmaps
//!   them (`TableUnmapper`), finds them busy (`try_drain`), and after the pins
//!   are released (`release`) drains and frees them; the entries are cleared,
//!   the tables gone back to the pool, and GUP-fast finds a hole.
//!
//! Then the same at the top of the PFN space: a `SliceMemMap` that reaches the
//! last PFN, `u64::MAX`, with a unit ending there.

use pagepin::arch::aarch64::{
    Stage1, Stage1G4K39, Stage1G4K48, Stage1G4K48Ttbr1, Stage1G16K36, Stage1G64K42, Stage2G4K40,
    Stage2G4K48, Stage2G16K40, Stage2G64K48,
};
use pagepin::arch::x86_64::{Ept4Level, Ept5Level, Paging4Level, Paging5Level};
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupError, GupFlags, Stop, Taken, release, release_run};
use pagepin::memmap::{MemoryMap, Pfn, Region, SliceMemMap};
use pagepin::meta::{Hold, MetaWord, PageMeta};
use pagepin::sync::op_count;
use pagepin::table::*;
use pagepin::truncate::{
    Extent, Failed, FileMapping, Freed, NoTlbShootdown, TableUnmapper, Truncate, Unmapper,
};

const KIB4: u64 = 4 << 10;
/// Physical memory of the data pages: aligned for every leaf size (up to
/// 1 GiB), below every format's output-address limit.
const DATA: u64 = 1 << 30;
const TABLE_BASE: PhysAddr = PhysAddr(0x10_0000);

/// The last address `F` translates: `u64::MAX` where it has an upper half,
/// else the top of its one range, `2^va_bits - 1`.
fn top<F: PagingFormat>() -> u64 {
    if F::is_canonical(VirtAddr(u64::MAX)) {
        u64::MAX
    } else {
        (1u64 << F::GEOMETRY.va_bits()) - 1
    }
}

/// The format's leaf sizes, smallest first.
fn leaf_sizes<F: PagingFormat>() -> Vec<u64> {
    (0..F::GEOMETRY.depth())
        .rev()
        .filter_map(|level| F::GEOMETRY.leaf_size(level))
        .collect()
}

fn guard() -> TablesNeverFreed {
    // SAFETY: these tests free page tables only between walks, on the walking
    // thread.
    unsafe { TablesNeverFreed::new() }
}

/// `leaves` leaves of `leaf` bytes whose last byte is the top of `F`'s address
/// space: mapped, walked, pinned, truncated with the pins held, released,
/// drained, freed.
fn top_leaves<F: PagingFormat>(leaf: u64, leaves: u64) {
    let name = format!("{}, {} KiB leaves x {leaves}", F::NAME, leaf >> 10);
    let top = top::<F>();
    let len = leaf * leaves;
    let va = top - (len - 1);
    let page = 1u64 << F::GEOMETRY.page_shift();

    // The memory map: 4 KiB base pages from DATA. A huge leaf's pages are one
    // layout-managed unit (counted on its head); the format's smallest leaves
    // are units of one base page.
    let base_pages = len / KIB4;
    let first_pfn = DATA >> 12;
    let unit_pages = if leaf > page { leaf / KIB4 } else { 1 };
    let units = base_pages / unit_pages;
    let metas: Vec<PageMeta> = (0..base_pages).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let mut memmap = unsafe { SliceMemMap::<1>::new(Pfn(first_pfn), &metas) };
    if unit_pages > 1 {
        memmap
            .add_region(Region {
                first: Pfn(first_pfn),
                pages: base_pages,
                unit_pages,
                layout_managed: true,
            })
            .unwrap();
    }
    let heads = || metas.iter().step_by(unit_pages as usize);

    // Tables: granule-sized frames after a root that may span several (stage 2
    // concatenated start tables).
    let per_table = (page / KIB4) as usize;
    let root_frames =
        ((F::GEOMETRY.entries(0).unwrap() as u64 * 8).div_ceil(KIB4) as usize).max(per_table);
    let frames: Vec<HostFrame> = (0..root_frames + 8 * per_table)
        .map(|_| HostFrame::new())
        .collect();
    let memory = HostMemory::new(&frames, TABLE_BASE).unwrap();
    let mut slots: Vec<PhysAddr> = memory
        .frame_pas()
        .skip(root_frames)
        .step_by(per_table)
        .collect();
    let builder = if F::GEOMETRY.entries(0) > F::GEOMETRY.entries(1) {
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        // The root is this code's own memory, outside the pool.
        unsafe {
            TableBuilder::<F, _, _>::with_root(
                &memory,
                TABLE_BASE,
                FramePool::new(&mut slots),
                // SAFETY: no walker or MMU reads these tables while the builder unmaps.
                ReclaimNow::new(),
            )
        }
        .unwrap()
    } else {
        slots.push(TABLE_BASE);
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<F, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe {
            ReclaimNow::new()
        })
        .unwrap()
    };
    let mut spaces = [builder];
    let free_before = spaces[0].pool().free_count();

    // Map.
    let perms = Perms::READ | Perms::WRITE;
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        spaces[0].map(&MapRequest::new(VirtAddr(va), PhysAddr(DATA), len, leaf).with_perms(perms))
    }
    .unwrap_or_else(|e| panic!("{name}: map: {e}"));
    // A mapping one leaf further would run past the top: refused, not wrapped.
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    let past = unsafe {
        spaces[0].map(&MapRequest::new(
            VirtAddr(va),
            PhysAddr(DATA),
            len + leaf,
            leaf,
        ))
    };
    assert!(matches!(past, Err(MapError::Range(_))), "{name}: {past:?}");

    // Walk: the last byte translates to the last byte of the data.
    let walker = spaces[0].walker();
    let last = walker.translate(VirtAddr(top)).unwrap();
    let last = last
        .leaf()
        .unwrap_or_else(|| panic!("{name}: top not mapped"));
    assert_eq!(
        (last.pa, last.leaf_va, last.size),
        (PhysAddr(DATA + (len - 1)), VirtAddr(top - (leaf - 1)), leaf),
        "{name}"
    );
    let items: Vec<WalkItem> = walker
        .walk(VirtAddr(va), len)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{name}: walk: {e}"));
    assert_eq!(items.len() as u64, leaves, "{name}");
    for (i, item) in items.iter().enumerate() {
        let leaf_item = item.leaf().unwrap();
        assert_eq!(leaf_item.pa, PhysAddr(DATA + i as u64 * leaf), "{name}");
    }
    assert_eq!(items.last().unwrap().va().last(), VirtAddr(top), "{name}");
    let past_top = if top == u64::MAX {
        RangeError::Wraps
    } else {
        RangeError::NonCanonical {
            va: VirtAddr(top + 1),
        }
    };
    assert_eq!(
        walker.walk(VirtAddr(va), len + 1).unwrap_err(),
        past_top,
        "{name}"
    );

    // GUP-fast: pin all of it, one RMW per unit.
    let guard = guard();
    let gup = Gup::new(walker, &memmap);
    let mut out = vec![Pfn(0); base_pages as usize];
    op_count::reset();
    let taken = gup
        .get_pages(
            &guard,
            VirtAddr(va),
            len,
            GupFlags::PIN | GupFlags::WRITE,
            &mut out,
        )
        .unwrap_or_else(|e| panic!("{name}: gup: {e}"));
    assert_eq!(
        taken,
        Taken {
            pages: base_pages as usize,
            stop: Stop::Complete
        },
        "{name}"
    );
    // Counted only with the `op-count` feature (`cargo test --features op-count`).
    if op_count::ENABLED {
        assert_eq!(op_count::get().rmw, units, "{name}: one RMW per unit");
    }
    for (i, pfn) in out.iter().enumerate() {
        assert_eq!(*pfn, Pfn(first_pfn + i as u64), "{name}");
    }
    assert!(
        heads().all(|m| m.pins() as u64 == unit_pages),
        "{name}: every unit pinned once per base page"
    );

    // The last base page alone, by reference: the last PFN.
    let mut one = [Pfn(0)];
    let taken = gup
        .get_pages(
            &guard,
            VirtAddr(top - (KIB4 - 1)),
            KIB4,
            GupFlags::empty(),
            &mut one,
        )
        .unwrap();
    assert_eq!(
        (taken, one[0]),
        (
            Taken {
                pages: 1,
                stop: Stop::Complete
            },
            Pfn(first_pfn + base_pages - 1)
        ),
        "{name}"
    );
    let last_head = memmap.unit(one[0]).unwrap().meta;
    assert_eq!(last_head.refs(), 1, "{name}");
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &one, Hold::Ref) }.unwrap();
    assert_eq!(last_head.refs(), 0, "{name}");
    // One page past the top: a typed error, nothing taken.
    let wraps = gup.get_pages(
        &guard,
        VirtAddr(top - (KIB4 - 1)),
        2 * KIB4,
        GupFlags::PIN,
        &mut one,
    );
    assert_eq!(wraps, Err(GupError::Range(past_top)), "{name}");
    assert!(heads().all(|m| m.pins() as u64 == unit_pages), "{name}");

    // The builder refuses to unmap part of a leaf at the top.
    if leaf > KIB4 {
        let split = spaces[0].unmap(VirtAddr(top - (KIB4 - 1)), KIB4);
        assert_eq!(
            split,
            Err(UnmapError::SplitsLeaf {
                leaf_va: VirtAddr(top - (leaf - 1)),
                size: leaf
            }),
            "{name}"
        );
    }

    // Truncate, with the pins held: mark, unmap, busy, release, drain, free.
    // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
    let mut unmapper =
        unsafe { TableUnmapper::<_, _, _, _, 1>::new(&mut spaces, 12, NoTlbShootdown) };
    unmapper
        .add_mapping(FileMapping {
            space: 0,
            va: VirtAddr(va),
            first: Pfn(first_pfn),
            pages: base_pages,
        })
        .unwrap();
    let set = [Extent::new(Pfn(first_pfn), base_pages)];
    let marked = Truncate::mark(&memmap, set.into_iter()).unwrap();
    assert_eq!(marked.units_marked(), units, "{name}");
    let unmapped = match marked.unmap(&mut unmapper) {
        Ok(unmapped) => unmapped,
        Err(Failed { error, .. }) => panic!("{name}: unmap: {error}"),
    };
    // The entries are cleared: the top is a hole, and so is all of the range.
    assert!(
        walker.translate(VirtAddr(top)).unwrap().leaf().is_none(),
        "{name}: top still mapped"
    );
    assert!(
        walker
            .walk(VirtAddr(va), len)
            .unwrap()
            .all(|item| matches!(item, Ok(WalkItem::Hole(_)))),
        "{name}: a leaf survived the unmap"
    );
    assert_eq!(
        unmapper.spaces()[0].pool().free_count(),
        free_before,
        "{name}: every table below the root went back to the pool"
    );
    let unmapped = match unmapped.try_drain::<4>() {
        Err(Failed { truncate, error }) => {
            assert_eq!(error.total, units, "{name}");
            assert_eq!(error.first[0].pins as u64, unit_pages, "{name}");
            truncate
        }
        Ok(_) => panic!("{name}: drained with pins held"),
    };
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &out, Hold::Pin) }.unwrap();
    let drained = match unmapped.try_drain::<4>() {
        Ok(drained) => drained,
        Err(Failed { error, .. }) => panic!("{name}: still busy: {error:?}"),
    };
    assert_eq!(drained.free(), Ok(Freed { units }), "{name}");
    assert!(
        heads().all(|m| m.load() == MetaWord::FREE),
        "{name}: every unit free"
    );
    // Nothing is mapped any more: GUP-fast stops at a hole.
    let taken = gup
        .get_pages(&guard, VirtAddr(va), len, GupFlags::PIN, &mut out)
        .unwrap();
    assert_eq!(
        taken,
        Taken {
            pages: 0,
            stop: Stop::Absent { va: VirtAddr(va) }
        },
        "{name}"
    );
}

/// Every leaf size of `F` at the top, one leaf each, and a run of 16 of its
/// smallest leaves (GUP-fast's batched path, ending at the top).
fn every_leaf_at_the_top<F: PagingFormat>() {
    let sizes = leaf_sizes::<F>();
    for &leaf in &sizes {
        top_leaves::<F>(leaf, 1);
    }
    top_leaves::<F>(sizes[0], 16);
}

#[test]
fn x86_64_4_level_upper_half() {
    assert_eq!(top::<Paging4Level>(), u64::MAX);
    assert_eq!(leaf_sizes::<Paging4Level>(), [KIB4, 2 << 20, 1 << 30]);
    every_leaf_at_the_top::<Paging4Level>();
    // The whole last page table: a run of 512 leaves ending at 2^64.
    top_leaves::<Paging4Level>(KIB4, 512);
    top_leaves::<Paging4Level>(2 << 20, 2);
}

#[test]
fn x86_64_5_level_upper_half() {
    assert_eq!(top::<Paging5Level>(), u64::MAX);
    every_leaf_at_the_top::<Paging5Level>();
    top_leaves::<Paging5Level>(KIB4, 512);
}

#[test]
fn x86_64_ept_top_of_the_guest_physical_space() {
    assert_eq!(top::<Ept4Level>(), (1 << 48) - 1);
    assert_eq!(top::<Ept5Level>(), (1 << 57) - 1);
    every_leaf_at_the_top::<Ept4Level>();
    every_leaf_at_the_top::<Ept5Level>();
}

#[test]
fn aarch64_stage1_ttbr1_4k() {
    assert_eq!(top::<Stage1G4K48Ttbr1>(), u64::MAX);
    assert_eq!(leaf_sizes::<Stage1G4K48Ttbr1>(), [KIB4, 2 << 20, 1 << 30]);
    every_leaf_at_the_top::<Stage1G4K48Ttbr1>();
    every_leaf_at_the_top::<Stage1<12, 39, true>>();
}

#[test]
fn aarch64_stage1_ttbr1_16k() {
    type G16K48 = Stage1<14, 48, true>;
    assert_eq!(top::<G16K48>(), u64::MAX);
    assert_eq!(leaf_sizes::<G16K48>(), [16 << 10, 32 << 20]);
    every_leaf_at_the_top::<G16K48>();
    every_leaf_at_the_top::<Stage1<14, 47, true>>();
}

#[test]
fn aarch64_stage1_ttbr1_64k() {
    type G64K48 = Stage1<16, 48, true>;
    assert_eq!(top::<G64K48>(), u64::MAX);
    assert_eq!(leaf_sizes::<G64K48>(), [64 << 10, 512 << 20]);
    every_leaf_at_the_top::<G64K48>();
    every_leaf_at_the_top::<Stage1<16, 42, true>>();
}

#[test]
fn aarch64_stage1_ttbr0_top_of_the_lower_range() {
    assert_eq!(top::<Stage1G4K48>(), (1 << 48) - 1);
    every_leaf_at_the_top::<Stage1G4K48>();
    every_leaf_at_the_top::<Stage1G4K39>();
    every_leaf_at_the_top::<Stage1G16K36>();
    every_leaf_at_the_top::<Stage1G64K42>();
}

#[test]
fn aarch64_stage2_top_of_the_ipa_space() {
    assert_eq!(top::<Stage2G4K40>(), (1 << 40) - 1);
    every_leaf_at_the_top::<Stage2G4K40>();
    every_leaf_at_the_top::<Stage2G4K48>();
    every_leaf_at_the_top::<Stage2G16K40>();
    every_leaf_at_the_top::<Stage2G64K48>();
}

#[test]
fn toy_top_of_its_64_kib() {
    assert_eq!(top::<Toy>(), 0xffff);
    top_leaves::<Toy>(KIB4, 1);
    top_leaves::<Toy>(KIB4, 4);
    top_leaves::<Toy>(16 << 10, 1);
}

/// The top of the PFN space: a memory map of 1024 pages whose last is
/// `u64::MAX`, the top 512 one layout-managed unit.
const TOP_FIRST: u64 = u64::MAX - 1023;
const TOP_UNIT: u64 = u64::MAX - 511;

fn top_map(metas: &[PageMeta]) -> SliceMemMap<'_> {
    // SAFETY: this map is the only one counting on these metas.
    let mut map = unsafe { SliceMemMap::new(Pfn(TOP_FIRST), metas) };
    map.add_region(Region {
        first: Pfn(TOP_UNIT),
        pages: 512,
        unit_pages: 512,
        layout_managed: true,
    })
    .unwrap();
    map
}

#[test]
fn a_memory_map_reaching_the_last_pfn() {
    let metas: Vec<PageMeta> = (0..1024).map(|_| PageMeta::new_allocated()).collect();
    let map = top_map(&metas);
    assert_eq!(map.last(), Some(Pfn(u64::MAX)));
    assert_eq!(map.pages(), 1024);
    let unit = map.unit(Pfn(u64::MAX)).unwrap();
    assert_eq!((unit.head, unit.pages), (Pfn(TOP_UNIT), 512));
    assert!(std::ptr::eq(unit.meta, &metas[512]), "the head counts");
    assert!(unit.layout_managed);
    let single = map.unit(Pfn(TOP_UNIT - 1)).unwrap();
    assert_eq!((single.head, single.pages), (Pfn(TOP_UNIT - 1), 1));
    assert_eq!(
        map.unit(Pfn(TOP_FIRST - 1)).unwrap_err().pfn,
        Pfn(TOP_FIRST - 1)
    );

    // Pins on the top unit (as a GUP-fast of a huge leaf takes them: one get
    // for the unit), released by PFN slice and by run.
    let pfns: Vec<Pfn> = (TOP_UNIT..=u64::MAX).map(Pfn).collect();
    unit.meta.get(Hold::Pin, 512).unwrap();
    assert_eq!(unit.meta.pins(), 512);
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&map, &pfns, Hold::Pin) }.unwrap();
    assert_eq!(unit.meta.load(), MetaWord::ALLOCATED_IDLE);
    unit.meta.get(Hold::Ref, 512).unwrap();
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release_run(&map, Pfn(TOP_UNIT), 512, Hold::Ref) }.unwrap();
    assert_eq!(unit.meta.load(), MetaWord::ALLOCATED_IDLE);
    // The single pages below it, as one run crossing into the unit.
    for pfn in TOP_UNIT - 4..TOP_UNIT {
        map.unit(Pfn(pfn)).unwrap().meta.get(Hold::Ref, 1).unwrap();
    }
    unit.meta.get(Hold::Ref, 512).unwrap();
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release_run(&map, Pfn(TOP_UNIT - 4), 516, Hold::Ref) }.unwrap();
    assert!(metas.iter().all(|m| m.load() == MetaWord::ALLOCATED_IDLE));
}

#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn releasing_a_unit_at_the_last_pfn_takes_one_rmw() {
    let metas: Vec<PageMeta> = (0..1024).map(|_| PageMeta::new_allocated()).collect();
    let map = top_map(&metas);
    let meta = map.unit(Pfn(TOP_UNIT)).unwrap().meta;
    let pfns: Vec<Pfn> = (TOP_UNIT..=u64::MAX).map(Pfn).collect();
    meta.get(Hold::Pin, 512).unwrap();
    op_count::reset();
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&map, &pfns, Hold::Pin) }.unwrap();
    assert_eq!(op_count::get().rmw, 1, "one RMW for the unit, by slice");
    meta.get(Hold::Pin, 512).unwrap();
    op_count::reset();
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release_run(&map, Pfn(TOP_UNIT), 512, Hold::Pin) }.unwrap();
    assert_eq!(op_count::get().rmw, 1, "one RMW for the unit, by run");
    assert_eq!(meta.load(), MetaWord::ALLOCATED_IDLE);
}

#[test]
fn a_release_run_past_the_last_pfn_is_refused_before_anything_is_released() {
    let metas: Vec<PageMeta> = (0..1024).map(|_| PageMeta::new_allocated()).collect();
    let map = top_map(&metas);
    let meta = map.unit(Pfn(u64::MAX)).unwrap().meta;
    meta.get(Hold::Pin, 1).unwrap();
    // SAFETY: the pages were taken above by this code and are released once.
    assert!(unsafe { release_run(&map, Pfn(u64::MAX), 2, Hold::Pin) }.is_err());
    assert_eq!(meta.pins(), 1, "nothing released by a run that wraps");
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release_run(&map, Pfn(u64::MAX), 1, Hold::Pin) }.unwrap();
}

/// Where the file's pages at the top of the PFN space are mapped: a VA range
/// that also ends at the top of the x86_64 upper half. (No format can encode
/// such PFNs as physical addresses, so the leaves point elsewhere; the unmapper
/// works from the file mapping, PFN to VA, not from the leaves.)
fn top_pfns_mapped_at_the_top(
    f: impl FnOnce(
        &mut TableUnmapper<'_, '_, Paging4Level, HostMemory<'_>, ReclaimNow, NoTlbShootdown, 1>,
        Walker<'_, Paging4Level, HostMemory<'_>>,
    ),
) {
    let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, TABLE_BASE).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut spaces = [TableBuilder::<Paging4Level, _, _>::new(
        &memory,
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        unsafe { FramePool::new(&mut slots) },
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        unsafe { ReclaimNow::new() },
    )
    .unwrap()];
    let len = 512 * KIB4;
    let va = u64::MAX - (len - 1);
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { spaces[0].map(&MapRequest::new(VirtAddr(va), PhysAddr(DATA), len, KIB4)) }.unwrap();
    let walker = spaces[0].walker();
    // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
    let mut unmapper =
        unsafe { TableUnmapper::<_, _, _, _, 1>::new(&mut spaces, 12, NoTlbShootdown) };
    unmapper
        .add_mapping(FileMapping {
            space: 0,
            va: VirtAddr(va),
            first: Pfn(TOP_UNIT),
            pages: 512,
        })
        .unwrap();
    f(&mut unmapper, walker);
}

#[test]
fn unmapping_pfns_that_end_at_the_last_pfn() {
    top_pfns_mapped_at_the_top(|unmapper, walker| {
        // The last page alone, then the rest: both end at the last PFN.
        unmapper
            .unmap_extent(Extent::new(Pfn(u64::MAX), 1))
            .unwrap();
        assert!(
            walker
                .translate(VirtAddr(u64::MAX))
                .unwrap()
                .leaf()
                .is_none(),
            "the last page is unmapped"
        );
        let below = walker.translate(VirtAddr(u64::MAX - KIB4)).unwrap();
        assert_eq!(
            below.leaf().map(|l| l.leaf_pa),
            Some(PhysAddr(DATA + 510 * KIB4)),
            "the page below it is not"
        );
        unmapper
            .unmap_extent(Extent::new(Pfn(TOP_UNIT), 512))
            .unwrap();
        let va = u64::MAX - (512 * KIB4 - 1);
        assert!(
            walker
                .walk(VirtAddr(va), 512 * KIB4)
                .unwrap()
                .all(|item| matches!(item, Ok(WalkItem::Hole(_))))
        );
        // An extent that runs past the last PFN is a typed error.
        assert_eq!(
            unmapper.unmap_extent(Extent::new(Pfn(u64::MAX), 2)),
            Err(pagepin::truncate::TableUnmapError::ExtentWraps(
                Extent::new(Pfn(u64::MAX), 2)
            ))
        );
    });
}

#[test]
fn an_unmapper_with_a_bad_page_shift_is_refused() {
    let frames: Vec<HostFrame> = (0..2).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, TABLE_BASE).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut spaces = [TableBuilder::<Paging4Level, _, _>::new(
        &memory,
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        unsafe { FramePool::new(&mut slots) },
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        unsafe { ReclaimNow::new() },
    )
    .unwrap()];
    // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
    let mut unmapper =
        unsafe { TableUnmapper::<_, _, _, _, 1>::new(&mut spaces, 64, NoTlbShootdown) };
    assert_eq!(
        unmapper.unmap_extent(Extent::new(Pfn(0x40000), 1)),
        Err(pagepin::truncate::TableUnmapError::BadPageShift { page_shift: 64 })
    );
}

#[test]
fn truncating_the_unit_at_the_last_pfn() {
    let metas: Vec<PageMeta> = (0..1024).map(|_| PageMeta::new_allocated()).collect();
    let map = top_map(&metas);
    top_pfns_mapped_at_the_top(|unmapper, walker| {
        let set = [Extent::new(Pfn(TOP_UNIT), 512)];
        let marked = Truncate::mark(&map, set.into_iter()).unwrap();
        assert_eq!(marked.units_marked(), 1);
        let unmapped = match marked.unmap(unmapper) {
            Ok(unmapped) => unmapped,
            Err(Failed { error, .. }) => panic!("unmap: {error}"),
        };
        assert!(
            walker
                .translate(VirtAddr(u64::MAX))
                .unwrap()
                .leaf()
                .is_none(),
            "the top is unmapped"
        );
        let drained = match unmapped.try_drain::<1>() {
            Ok(drained) => drained,
            Err(Failed { error, .. }) => panic!("busy: {error:?}"),
        };
        assert_eq!(drained.free(), Ok(Freed { units: 1 }));
        assert_eq!(metas[512].load(), MetaWord::FREE);
    });
}
