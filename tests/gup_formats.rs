//! Run: `cargo test --test gup_formats`
//!
//! GUP-fast over every paging format pagepin has, through the same generic
//! walker: for each, a run of the format's smallest pages over single-page units
//! (one RMW per 4 KiB base page) and one of its smallest blocks over a unit of
//! the block's size (one RMW for the whole block), pinned, checked against the
//! mapping, and released. A 64 KiB page counts as 16 base pages of the memory
//! map; the counting is by the memory map's unit, never by the leaf. The RISC-V
//! modes (Sv39/48/57 in both halves, and the G-stage Sv39x4/48x4/57x4 with
//! their 16 KiB roots built by `TableBuilder::with_root`) also with 1 GiB
//! leaves where the mode has them.

use pagepin::arch::aarch64::*;
use pagepin::arch::riscv64::{Sv39, Sv39x4, Sv48, Sv48x4, Sv57, Sv57x4};
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

/// Checks the format's smallest block and 4 KiB leaves in the low half or,
/// for an upper-half-only format (TTBR1), the high half.
fn check<F: PagingFormat>() {
    let page = 1u64 << F::GEOMETRY.page_shift();
    let block = (0..F::GEOMETRY.depth())
        .rev()
        .filter_map(|l| F::GEOMETRY.leaf_size(l))
        .find(|&s| s > page)
        .expect("every format has a block size");
    // A canonical base: the low half, or the high half for TTBR1.
    let base = if F::is_canonical(VirtAddr(2 * block)) {
        2 * block
    } else {
        (u64::MAX << F::GEOMETRY.va_bits()) + 2 * block
    };
    check_at::<F>(block, base);
}

/// Checks `block`-sized and 4 KiB leaves in the low half and, where the
/// format has one, the upper (sign-extended) half.
fn check_halves<F: PagingFormat>(block: u64) {
    let low = 2 * block;
    let high = (u64::MAX << F::GEOMETRY.va_bits()).wrapping_add(2 * block);
    check_at::<F>(block, low);
    if F::is_canonical(VirtAddr(high)) {
        check_at::<F>(block, high);
    }
}

/// GUP-fast over one `block`-sized leaf (one unit) and [`SMALL_LEAVES`] leaves
/// of the format's page (single-page units) mapped from `base`.
fn check_at<F: PagingFormat>(block: u64, base: u64) {
    let page = 1u64 << F::GEOMETRY.page_shift();
    assert!(F::GEOMETRY.leaf_level(block).is_some(), "{}", F::NAME);
    // Memory map: one block-sized unit at DATA, then single pages.
    let small_pa = DATA + block;
    let pages = ((block + SMALL_LEAVES * page) / KIB4) as usize;
    let metas: Vec<PageMeta> = (0..pages).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let mut memmap = unsafe { SliceMemMap::<1>::new(Pfn(DATA >> 12), &metas) };
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
    let perms = Perms::READ | Perms::WRITE;
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(&MapRequest::new(VirtAddr(base), PhysAddr(DATA), block, block).with_perms(perms))
    }
    .unwrap();
    let small_va = base + block;
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(
                VirtAddr(small_va),
                PhysAddr(small_pa),
                SMALL_LEAVES * page,
                page,
            )
            .with_perms(perms),
        )
    }
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
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &out, Hold::Pin) }.unwrap();
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

const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

#[test]
fn riscv64_sv() {
    check_halves::<Sv39>(MIB2);
    check_halves::<Sv39>(GIB);
    check_halves::<Sv48>(MIB2);
    check_halves::<Sv57>(MIB2);
}

#[test]
fn riscv64_g_stage() {
    check_halves::<Sv39x4>(MIB2);
    check_halves::<Sv39x4>(GIB);
    check_halves::<Sv48x4>(MIB2);
    check_halves::<Sv57x4>(MIB2);
}
