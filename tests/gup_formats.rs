//! Run: `cargo test --test gup_formats`
//!
//! GUP-fast over every paging format pagepin has, through the same generic
//! walker: for each, a run of the format's smallest pages over single-page units
//! (one RMW per 4 KiB base page) and one of its smallest blocks over a unit of
//! the block's size (one RMW for the whole block), pinned, checked against the
//! mapping, and released. A 64 KiB page counts as 16 base pages of the memory
//! map; the counting is by the memory map's unit, never by the leaf.

use pagepin::arch::aarch64::*;
use pagepin::arch::x86_64::{Ept4Level, Ept5Level, Paging4Level, Paging5Level};
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, Stop, Taken, release};
use pagepin::memmap::{MemoryMap, Pfn, Region, SliceMemMap};
use pagepin::meta::{Hold, MetaWord, PageMeta};
use pagepin::sync::op_count;
use pagepin::table::*;

const KIB4: u64 = 4 << 10;
/// Physical memory for data: blocks from 1 GiB (aligned for every block size up
/// to 512 MiB), then the small pages right after the block.
const DATA: u64 = 1 << 30;
/// Small leaves mapped per format.
const SMALL_LEAVES: u64 = 4;
const TABLE_BASE: PhysAddr = PhysAddr(0x10_0000);

fn check<F: PagingFormat>() {
    let page = 1u64 << F::GEOMETRY.page_shift();
    let block = (0..F::GEOMETRY.depth())
        .rev()
        .filter_map(|l| F::GEOMETRY.leaf_size(l))
        .find(|&s| s > page)
        .expect("every format has a block size");
    // Memory map: one block-sized unit at DATA, then single pages.
    let small_pa = DATA + block;
    let pages = ((block + SMALL_LEAVES * page) / KIB4) as usize;
    let metas: Vec<PageMeta> = (0..pages).map(|_| PageMeta::new_allocated()).collect();
    let mut memmap = SliceMemMap::<1>::new(Pfn(DATA >> 12), &metas);
    memmap
        .add_region(Region {
            first: Pfn(DATA >> 12),
            pages: block / KIB4,
            unit_pages: block / KIB4,
            layout_managed: false,
        })
        .unwrap();
    // Tables: granule-sized frames after a root that may span several.
    let per_table = (page / KIB4) as usize;
    let root_frames =
        ((F::GEOMETRY.entries(0).unwrap() as u64 * 8).div_ceil(KIB4) as usize).max(per_table);
    let frames: Vec<HostFrame> = (0..root_frames + 16 * per_table)
        .map(|_| HostFrame::new())
        .collect();
    let memory = HostMemory::new(&frames, TABLE_BASE).unwrap();
    let mut slots: Vec<PhysAddr> = memory
        .frame_pas()
        .skip(root_frames)
        .step_by(per_table)
        .collect();
    let mut tables = if F::GEOMETRY.entries(0) > F::GEOMETRY.entries(1) {
        TableBuilder::<F, _, _>::with_root(
            &memory,
            TABLE_BASE,
            FramePool::new(&mut slots),
            // SAFETY: no walker or MMU reads these tables while the builder unmaps.
            unsafe { ReclaimNow::new() },
        )
        .unwrap()
    } else {
        slots.push(TABLE_BASE);
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        TableBuilder::<F, _, _>::new(&memory, FramePool::new(&mut slots), unsafe {
            ReclaimNow::new()
        })
        .unwrap()
    };
    // A canonical base: the low half, or the high half for TTBR1.
    let base = if F::is_canonical(VirtAddr(2 * block)) {
        2 * block
    } else {
        (u64::MAX << F::GEOMETRY.va_bits()) + 2 * block
    };
    let perms = Perms::READ | Perms::WRITE;
    tables
        .map(&MapRequest::new(VirtAddr(base), PhysAddr(DATA), block, block).with_perms(perms))
        .unwrap();
    let small_va = base + block;
    tables
        .map(
            &MapRequest::new(
                VirtAddr(small_va),
                PhysAddr(small_pa),
                SMALL_LEAVES * page,
                page,
            )
            .with_perms(perms),
        )
        .unwrap();
    // SAFETY: no table is freed while this test walks.
    let guard = unsafe { TablesNeverFreed::new() };
    let gup = Gup::new(tables.walker(), &memmap);
    let mut out = vec![Pfn(0); pages];
    let flags = GupFlags::PIN | GupFlags::WRITE;

    op_count::reset();
    let taken = gup
        .get_pages(
            &guard,
            VirtAddr(base),
            block + SMALL_LEAVES * page,
            flags,
            &mut out,
        )
        .unwrap();
    let small_pages = SMALL_LEAVES * page / KIB4;
    assert_eq!(
        taken,
        Taken {
            pages,
            stop: Stop::Complete
        },
        "{}",
        F::NAME
    );
    // Counted only in builds with the `op-count` feature (`cargo test --features op-count`).
    if op_count::ENABLED {
        assert_eq!(
            op_count::get().rmw,
            1 + small_pages,
            "{}: one RMW for the block, one per 4 KiB unit",
            F::NAME
        );
    }
    for (i, pfn) in out.iter().enumerate() {
        assert_eq!(pfn.0, (DATA >> 12) + i as u64, "{}", F::NAME);
    }
    assert_eq!(
        memmap.unit(Pfn(DATA >> 12)).unwrap().meta.pins() as u64,
        block / KIB4
    );
    release(&memmap, &out, Hold::Pin).unwrap();
    assert!(
        metas.iter().all(|m| m.load() == MetaWord::ALLOCATED_IDLE),
        "{}",
        F::NAME
    );

    // The range past the mapping is a hole (where the address space has room).
    let end = small_va + SMALL_LEAVES * page;
    if !F::is_canonical(VirtAddr(end)) {
        return;
    }
    let taken = gup
        .get_pages(&guard, VirtAddr(end), page, flags, &mut out)
        .unwrap();
    assert_eq!(
        taken,
        Taken {
            pages: 0,
            stop: Stop::Absent { va: VirtAddr(end) }
        },
        "{}",
        F::NAME
    );
}

#[test]
fn x86_64_stage1() {
    check::<Paging4Level>();
    check::<Paging5Level>();
}

#[test]
fn x86_64_ept() {
    check::<Ept4Level>();
    check::<Ept5Level>();
}

#[test]
fn aarch64_stage1_4k() {
    check::<Stage1G4K48>();
    check::<Stage1G4K39>();
    check::<Stage1G4K48Ttbr1>();
}

#[test]
fn aarch64_stage1_16k() {
    check::<Stage1G16K48>();
    check::<Stage1G16K47>();
    check::<Stage1G16K36>();
}

#[test]
fn aarch64_stage1_64k() {
    check::<Stage1G64K48>();
    check::<Stage1G64K42>();
}

#[test]
fn aarch64_stage2() {
    check::<Stage2G4K40>();
    check::<Stage2G4K48>();
    check::<Stage2G16K40>();
    check::<Stage2G64K48>();
}

#[test]
fn toy() {
    check::<Toy>();
}
