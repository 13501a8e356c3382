//! Run: `CARGO_TARGET_DIR=target/review cargo test --test review_edges`
//!
//! Outside review, black-box: inputs at the edges. Ranges at the top of the
//! address space (x86_64 upper half, aarch64 TTBR1 with each granule), ranges
//! that wrap, are non-canonical, unaligned or empty; `out` slices of 0, 1 and
//! fewer pages than a huge leaf; PFNs outside the map; counts near
//! `COUNT_MAX`/`MAX_BATCH`; maps and extents that end at the last PFN. Every
//! bad input must be a typed error, and the counts must match exactly what
//! was reported taken.

use core::convert::Infallible;

use pagepin::arch::aarch64::Stage1;
use pagepin::arch::x86_64::{Paging4Level, Paging5Level};
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupError, GupFlags, ReleaseErrorKind, Stop, release, release_run};
use pagepin::memmap::{MemoryMap, Pfn, Region, SliceMemMap};
use pagepin::meta::{COUNT_MAX, GetErrorKind, Hold, MAX_BATCH, PageMeta, PutError};
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapRequest, PagingFormat, Perms, PhysAddr, RangeError,
    ReclaimNow, TableBuilder, VirtAddr,
};
use pagepin::truncate::{Extent, MarkSetError, SetError, Truncate, Unmapper};

type Hm<'a> = SliceMemMap<'a>;
const KIB4: u64 = 0x1000;
const MIB2: u64 = 0x20_0000;
/// First PFN of the data (PA 16 MiB, aligned for every block size used here
/// up to 16 MiB... and to 64 KiB pages).
const BASE: u64 = 0x1000;
const RW: Perms = Perms::READ
    .union(Perms::WRITE)
    .union(Perms::USER)
    .union(Perms::ACCESSED);

/// Builds tables of `F` (tables of `table_bytes`), maps `maps`, and runs `body`
/// with a GUP-fast over them and `memmap`.
fn with_gup<F: PagingFormat, M: MemoryMap>(
    table_bytes: u64,
    maps: &[MapRequest],
    memmap: &M,
    body: impl FnOnce(&Gup<'_, F, HostMemory<'_>, M>, &TablesNeverFreed),
) {
    let per = (table_bytes / KIB4) as usize;
    let frames: Vec<HostFrame> = (0..per * 12).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x100_0000_0000)).unwrap();
    let mut pool: Vec<PhysAddr> = memory.frame_pas().step_by(per).collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<F, _, _>::new(&memory, unsafe { FramePool::new(&mut pool) }, unsafe { ReclaimNow::new() }).unwrap();
    for m in maps {
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { tables.map(m) }.unwrap_or_else(|e| panic!("map {m:?}: {e}"));
    }
    let gup = Gup::new(tables.walker(), memmap);
    // SAFETY: no table is freed while these tests walk.
    let guard = unsafe { TablesNeverFreed::new() };
    body(&gup, &guard);
}

fn metas(n: usize) -> Vec<PageMeta> {
    (0..n).map(|_| PageMeta::new_allocated()).collect()
}

fn all_idle(metas: &[PageMeta]) -> bool {
    metas
        .iter()
        .all(|m| m.load().is_idle() && !m.is_truncating())
}

fn total_refs(metas: &[PageMeta]) -> u64 {
    metas.iter().map(|m| u64::from(m.refs())).sum()
}

const TOP: u64 = 0xffff_ffff_ffff_f000;

fn top_checks<F: PagingFormat>(gup: &Gup<'_, F, HostMemory<'_>, Hm<'_>>, g: &TablesNeverFreed) {
    let mut out = [Pfn(0); 2];
    let t = gup
        .get_pages(g, VirtAddr(TOP), KIB4, GupFlags::empty(), &mut out)
        .unwrap();
    assert_eq!((t.pages, t.stop, out[0]), (1, Stop::Complete, Pfn(BASE)));
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(gup.memmap(), &out[..1], Hold::Ref) }.unwrap();
    // One page past the top wraps; a length of u64::MAX is misaligned or wraps.
    assert_eq!(
        gup.get_pages(g, VirtAddr(TOP), 2 * KIB4, GupFlags::empty(), &mut out),
        Err(GupError::Range(RangeError::Wraps))
    );
    let r = gup.get_pages(g, VirtAddr(TOP), u64::MAX, GupFlags::empty(), &mut out);
    assert!(
        matches!(
            r,
            Err(GupError::Misaligned { .. } | GupError::Range(RangeError::Wraps))
        ),
        "{r:?}"
    );
    let r = gup.get_pages(
        g,
        VirtAddr(TOP),
        u64::MAX - 0xfff,
        GupFlags::empty(),
        &mut out,
    );
    assert_eq!(r, Err(GupError::Range(RangeError::Wraps)));
    assert_eq!(
        gup.get_pages(g, VirtAddr(TOP), 0, GupFlags::empty(), &mut out),
        Err(GupError::Range(RangeError::Empty))
    );
}

#[test]
fn x86_top_of_the_address_space() {
    let m = metas(4);
    // SAFETY: this map is the only one counting on these metas.
    let map = unsafe { Hm::new(Pfn(BASE), &m) };
    let req = [MapRequest::new(VirtAddr(TOP), PhysAddr(BASE * KIB4), KIB4, KIB4).with_perms(RW)];
    with_gup::<Paging5Level, _>(KIB4, &req, &map, top_checks);
    with_gup::<Paging4Level, _>(KIB4, &req, &map, |gup, g| {
        top_checks(gup, g);
        let mut out = [Pfn(0); 2];
        // The canonical hole of 4-level paging, and ranges across it.
        for (start, len) in [
            (0x0000_8000_0000_0000u64, KIB4),
            (0xffff_7fff_ffff_f000, KIB4),
            (0x0000_7fff_ffff_f000, 2 * KIB4),
            (0xffff_7fff_ffff_f000, 2 * KIB4),
        ] {
            let r = gup.get_pages(g, VirtAddr(start), len, GupFlags::empty(), &mut out);
            assert!(
                matches!(r, Err(GupError::Range(RangeError::NonCanonical { .. }))),
                "{start:#x}+{len:#x}: {r:?}"
            );
        }
        // The last canonical lower page is a hole, not an error.
        let r = gup
            .get_pages(
                g,
                VirtAddr(0x7fff_ffff_f000),
                KIB4,
                GupFlags::empty(),
                &mut out,
            )
            .unwrap();
        assert_eq!(r.pages, 0);
        assert!(matches!(r.stop, Stop::Absent { .. }), "{r:?}");
    });
    assert!(all_idle(&m));
}

#[test]
fn x86_huge_leaf_at_the_top_and_short_out_slices() {
    let top2m = 0u64.wrapping_sub(MIB2);
    let m = metas(512);
    // SAFETY: this map is the only one counting on these metas.
    let mut map = unsafe { Hm::new(Pfn(BASE), &m) };
    map.add_region(Region {
        first: Pfn(BASE),
        pages: 512,
        unit_pages: 512,
        layout_managed: false,
    })
    .unwrap();
    let req = [MapRequest::new(VirtAddr(top2m), PhysAddr(BASE * KIB4), MIB2, MIB2).with_perms(RW)];
    with_gup::<Paging4Level, _>(KIB4, &req, &map, |gup, g| {
        for n in [0usize, 1, 2, 100, 511, 512, 513] {
            let mut out = vec![Pfn(0); n];
            let t = gup
                .get_pages(
                    g,
                    VirtAddr(top2m),
                    MIB2,
                    GupFlags::PIN | GupFlags::WRITE,
                    &mut out,
                )
                .unwrap();
            let want = n.min(512);
            assert_eq!(t.pages, want, "out of {n}: {t:?}");
            if want == 512 {
                assert_eq!(t.stop, Stop::Complete);
            } else {
                assert_eq!(
                    t.stop,
                    Stop::OutputFull {
                        va: VirtAddr(top2m + want as u64 * KIB4)
                    },
                    "out of {n}"
                );
            }
            assert_eq!(m[0].pins() as usize, want, "counted on the head, exactly");
            for (i, p) in out[..want].iter().enumerate() {
                assert_eq!(*p, Pfn(BASE + i as u64));
            }
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&map, &out[..want], Hold::Pin) }.unwrap();
            assert!(all_idle(&m));
        }
        // From the middle of the leaf to the very top.
        let mut out = vec![Pfn(0); 8];
        let t = gup
            .get_pages(
                g,
                VirtAddr(u64::MAX - 0xfff - 7 * KIB4),
                8 * KIB4,
                GupFlags::empty(),
                &mut out,
            )
            .unwrap();
        assert_eq!((t.pages, t.stop), (8, Stop::Complete));
        assert_eq!(out[7], Pfn(BASE + 511));
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release_run(&map, Pfn(BASE + 504), 8, Hold::Ref) }.unwrap();
        assert!(all_idle(&m));
    });
}

#[test]
fn bad_ranges_and_flags_are_typed_errors() {
    let m = metas(4);
    // SAFETY: this map is the only one counting on these metas.
    let map = unsafe { Hm::new(Pfn(BASE), &m) };
    let req = [
        MapRequest::new(VirtAddr(0x40_0000), PhysAddr(BASE * KIB4), 4 * KIB4, KIB4).with_perms(RW),
    ];
    with_gup::<Paging4Level, _>(KIB4, &req, &map, |gup, g| {
        let mut out = [Pfn(0); 8];
        let f = GupFlags::empty();
        assert_eq!(
            gup.get_pages(g, VirtAddr(0x40_0000), 0, f, &mut out),
            Err(GupError::Range(RangeError::Empty))
        );
        for (s, l) in [(0x40_0001, KIB4), (0x40_0000, 0x800), (0x40_0800, 0x800)] {
            assert_eq!(
                gup.get_pages(g, VirtAddr(s), l, f, &mut out),
                Err(GupError::Misaligned {
                    start: VirtAddr(s),
                    len: l
                })
            );
        }
        assert_eq!(
            gup.get_pages(g, VirtAddr(0x40_0000), KIB4, GupFlags::LONGTERM, &mut out),
            Err(GupError::LongTermWithoutPin)
        );
        // Unknown flag bits are not silently a different request: either an
        // error, or the same result as without them.
        let odd = GupFlags::from_bits_retain(1 << 20);
        if let Ok(t) = gup.get_pages(g, VirtAddr(0x40_0000), 4 * KIB4, odd, &mut out) {
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&map, &out[..t.pages], Hold::Ref) }.unwrap();
        }
        assert!(all_idle(&m));
        // A length that wraps only after alignment rounding.
        assert!(
            gup.get_pages(g, VirtAddr(0x40_0000), u64::MAX - 0xfff, f, &mut out)
                .is_err()
        );
    });
}

/// aarch64 stage 1 in the TTBR1 range with every granule: the last page and
/// the last block of the address space.
fn ttbr1_top<F: PagingFormat>(granule: u64, block: u64) {
    let pages_per_granule = granule / KIB4;
    let block_pages = block / KIB4;
    let m = metas(block_pages as usize);
    // SAFETY: this map is the only one counting on these metas.
    let map = unsafe { Hm::new(Pfn(BASE), &m) };
    let top = 0u64.wrapping_sub(granule);
    let req =
        [MapRequest::new(VirtAddr(top), PhysAddr(BASE * KIB4), granule, granule).with_perms(RW)];
    with_gup::<F, _>(granule, &req, &map, |gup, g| {
        let mut out = vec![Pfn(0); pages_per_granule as usize + 1];
        let t = gup
            .get_pages(
                g,
                VirtAddr(top),
                granule,
                GupFlags::USER | GupFlags::WRITE,
                &mut out,
            )
            .unwrap();
        assert_eq!(
            (t.pages as u64, t.stop),
            (pages_per_granule, Stop::Complete)
        );
        assert_eq!(out[t.pages - 1], Pfn(BASE + pages_per_granule - 1));
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&map, &out[..t.pages], Hold::Ref) }.unwrap();
        // Past the top: wraps. A TTBR0 address: not canonical here.
        assert_eq!(
            gup.get_pages(g, VirtAddr(top), 2 * granule, GupFlags::empty(), &mut out),
            Err(GupError::Range(RangeError::Wraps))
        );
        let r = gup.get_pages(g, VirtAddr(0x1_0000), granule, GupFlags::empty(), &mut out);
        assert!(
            matches!(r, Err(GupError::Range(RangeError::NonCanonical { .. }))),
            "{r:?}"
        );
        // The lowest TTBR1 address (2^64 - 2^48) is canonical and absent; the
        // page below it is not canonical.
        let low = 0u64.wrapping_sub(1 << F::GEOMETRY.va_bits());
        let t = gup
            .get_pages(g, VirtAddr(low), granule, GupFlags::empty(), &mut out)
            .unwrap();
        assert!(
            matches!(t.stop, Stop::Absent { .. }) && t.pages == 0,
            "{t:?}"
        );
        let r = gup.get_pages(
            g,
            VirtAddr(low - granule),
            granule,
            GupFlags::empty(),
            &mut out,
        );
        assert!(
            matches!(r, Err(GupError::Range(RangeError::NonCanonical { .. }))),
            "{r:?}"
        );
        // A base-page-aligned but granule-misaligned start is taken only if
        // the walker supports sub-granule ranges; either way no count leaks.
        if granule > KIB4 {
            if let Ok(t) = gup.get_pages(g, VirtAddr(top + KIB4), KIB4, GupFlags::empty(), &mut out)
            {
                assert!(t.pages <= 1);
                if t.pages == 1 {
                    assert_eq!(out[0], Pfn(BASE + 1));
                }
                // SAFETY: the pages were taken above by this code and are released once.
                unsafe { release(&map, &out[..t.pages], Hold::Ref) }.unwrap();
            }
        }
        assert!(all_idle(&m));
    });
    // The last block of the address space, taken with an out slice of one
    // page, then of one page less than the block.
    let bbase = block / KIB4; // PA = one block: aligned
    // SAFETY: this map is the only one counting on these metas.
    let map = unsafe { Hm::new(Pfn(bbase), &m) };
    let topb = 0u64.wrapping_sub(block);
    let req = [MapRequest::new(VirtAddr(topb), PhysAddr(block), block, block).with_perms(RW)];
    with_gup::<F, _>(granule, &req, &map, |gup, g| {
        for n in [1, block_pages as usize - 1, block_pages as usize] {
            let mut out = vec![Pfn(0); n];
            let t = gup
                .get_pages(g, VirtAddr(topb), block, GupFlags::PIN, &mut out)
                .unwrap();
            assert_eq!(t.pages, n);
            assert_eq!(t.stop == Stop::Complete, n as u64 == block_pages);
            assert_eq!(m.iter().map(|x| u64::from(x.pins())).sum::<u64>(), n as u64);
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&map, &out[..n], Hold::Pin) }.unwrap();
            assert!(all_idle(&m));
        }
    });
}

#[test]
fn aarch64_ttbr1_top_4k() {
    ttbr1_top::<Stage1<12, 48, true>>(0x1000, MIB2);
    ttbr1_top::<Stage1<12, 39, true>>(0x1000, MIB2);
}

#[test]
fn aarch64_ttbr1_top_16k() {
    ttbr1_top::<Stage1<14, 48, true>>(0x4000, 32 << 20);
    ttbr1_top::<Stage1<14, 47, true>>(0x4000, 32 << 20);
}

#[test]
fn aarch64_ttbr1_top_64k() {
    ttbr1_top::<Stage1<16, 48, true>>(0x1_0000, 512 << 20);
    ttbr1_top::<Stage1<16, 42, true>>(0x1_0000, 512 << 20);
}

#[test]
fn pfns_outside_the_map() {
    // The map covers only the first 100 pages of a 2 MiB leaf.
    let m = metas(100);
    // SAFETY: this map is the only one counting on these metas.
    let map = unsafe { Hm::new(Pfn(BASE), &m) };
    let req = [
        MapRequest::new(VirtAddr(0x4000_0000), PhysAddr(BASE * KIB4), MIB2, MIB2).with_perms(RW),
        MapRequest::new(VirtAddr(0x5000_0000), PhysAddr(0), KIB4, KIB4).with_perms(RW),
        MapRequest::new(
            VirtAddr(0x5000_1000),
            PhysAddr((BASE + 99) * KIB4),
            2 * KIB4,
            KIB4,
        )
        .with_perms(RW),
    ];
    with_gup::<Paging4Level, _>(KIB4, &req, &map, |gup, g| {
        let mut out = vec![Pfn(0); 512];
        let t = gup
            .get_pages(g, VirtAddr(0x4000_0000), MIB2, GupFlags::empty(), &mut out)
            .unwrap();
        assert_eq!(t.pages, 100, "{t:?}");
        assert_eq!(
            t.stop,
            Stop::OutsideMap {
                va: VirtAddr(0x4000_0000 + 100 * KIB4),
                pfn: Pfn(BASE + 100)
            }
        );
        assert_eq!(total_refs(&m), 100);
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&map, &out[..100], Hold::Ref) }.unwrap();
        // PFN 0 (below the map), then a run whose second page is past it.
        let t = gup
            .get_pages(g, VirtAddr(0x5000_0000), 3 * KIB4, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(t.pages, 0);
        assert_eq!(
            t.stop,
            Stop::OutsideMap {
                va: VirtAddr(0x5000_0000),
                pfn: Pfn(0)
            }
        );
        let t = gup
            .get_pages(g, VirtAddr(0x5000_1000), 2 * KIB4, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(t.pages, 1);
        assert!(matches!(t.stop, Stop::OutsideMap { pfn, .. } if pfn == Pfn(BASE + 100)));
        assert_eq!(m[99].pins(), 1);
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&map, &out[..1], Hold::Pin) }.unwrap();
        assert!(all_idle(&m));
    });
}

#[test]
fn counts_at_the_limit_through_gup() {
    let m = metas(512);
    // SAFETY: this map is the only one counting on these metas.
    let mut map = unsafe { Hm::new(Pfn(BASE), &m) };
    map.add_region(Region {
        first: Pfn(BASE),
        pages: 512,
        unit_pages: 512,
        layout_managed: false,
    })
    .unwrap();
    // Bring the head to COUNT_MAX - 5 references.
    let mut held = 0u64;
    while held + u64::from(MAX_BATCH) <= u64::from(COUNT_MAX - 5) {
        m[0].get(Hold::Ref, MAX_BATCH).unwrap();
        held += u64::from(MAX_BATCH);
    }
    m[0].get(Hold::Ref, (u64::from(COUNT_MAX - 5) - held) as u32)
        .unwrap();
    assert_eq!(m[0].refs(), COUNT_MAX - 5);
    let before = m[0].load().raw();
    let req = [
        MapRequest::new(VirtAddr(0x4000_0000), PhysAddr(BASE * KIB4), MIB2, MIB2).with_perms(RW),
        MapRequest::new(VirtAddr(0x5000_0000), PhysAddr(BASE * KIB4), MIB2, KIB4).with_perms(RW),
    ];
    with_gup::<Paging4Level, _>(KIB4, &req, &map, |gup, g| {
        let mut out = vec![Pfn(0); 512];
        let t = gup
            .get_pages(g, VirtAddr(0x4000_0000), MIB2, GupFlags::empty(), &mut out)
            .unwrap();
        assert_eq!(t.pages, 0);
        assert!(
            matches!(t.stop, Stop::Refused { va, .. } if va == VirtAddr(0x4000_0000)),
            "{t:?}"
        );
        assert_eq!(m[0].load().raw(), before, "a refused get leaves the word");
        // Pins are a separate field: the huge leaf can still be pinned.
        let t = gup
            .get_pages(g, VirtAddr(0x4000_0000), MIB2, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(t.pages, 512);
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&map, &out[..512], Hold::Pin) }.unwrap();
        // 4 KiB leaves: at most 5 more, and the stop names the first not taken.
        let t = gup
            .get_pages(
                g,
                VirtAddr(0x5000_0000),
                64 * KIB4,
                GupFlags::empty(),
                &mut out,
            )
            .unwrap();
        assert!(t.pages <= 5, "{t:?}");
        assert_eq!(
            t.stop,
            match t.stop {
                Stop::Refused { pfn, kind, .. } => Stop::Refused {
                    va: VirtAddr(0x5000_0000 + t.pages as u64 * KIB4),
                    pfn,
                    kind
                },
                other => panic!("{other:?}"),
            }
        );
        assert_eq!(
            u64::from(m[0].refs()),
            u64::from(COUNT_MAX - 5) + t.pages as u64
        );
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&map, &out[..t.pages], Hold::Ref) }.unwrap();
        assert_eq!(m[0].load().raw(), before);
    });
}

#[test]
fn meta_counts_at_the_edges() {
    let p = PageMeta::new_allocated();
    for n in [0, MAX_BATCH + 1, u32::MAX] {
        assert_eq!(
            p.get(Hold::Ref, n).unwrap_err().kind,
            GetErrorKind::InvalidCount
        );
        assert_eq!(
            // SAFETY: an invalid count on the test's own meta: refused (the case under test), nothing changes.
            unsafe { p.put(Hold::Pin, n) }.unwrap_err(),
            PutError::InvalidCount
        );
    }
    assert_eq!(p.load().raw(), 0);
    // Fill pins to exactly COUNT_MAX.
    let mut n = 0u32;
    while n < COUNT_MAX {
        let step = (COUNT_MAX - n).min(MAX_BATCH);
        p.get(Hold::Pin, step).unwrap();
        n += step;
    }
    assert_eq!((p.pins(), p.refs()), (COUNT_MAX, 0));
    let w = p.load().raw();
    assert_eq!(
        p.get(Hold::Pin, 1).unwrap_err().kind,
        GetErrorKind::CountLimit
    );
    // SAFETY: one thread, one context.
    let e = unsafe { p.get_speculative(Hold::Pin, MAX_BATCH) }.unwrap_err();
    assert_eq!(e.kind, GetErrorKind::CountLimit);
    assert_eq!(p.load().raw(), w, "word restored");
    // The other field is unaffected, and fills independently.
    p.get(Hold::Ref, MAX_BATCH).unwrap();
    // SAFETY: as above.
    unsafe { p.get_speculative(Hold::Ref, 1) }.unwrap();
    assert_eq!((p.pins(), p.refs()), (COUNT_MAX, MAX_BATCH + 1));
    assert_eq!(p.load().raw() >> 62, 0, "reserved bits stay 0");
    // Releasing more than held borrows nothing.
    // SAFETY: gives back a count this code took above.
    assert!(unsafe { p.put(Hold::Ref, MAX_BATCH) }.is_ok());
    assert!(matches!(
        // SAFETY: a count this test does not hold, on a meta no one else uses: refused (the case under test), nothing changes.
        unsafe { p.put(Hold::Ref, 2) },
        Err(PutError::NotHeld { .. })
    ));
    assert_eq!((p.pins(), p.refs()), (COUNT_MAX, 1));
    // Marked at the limit, drained to zero by MAX_BATCH puts, then freed.
    p.mark_truncating().unwrap();
    // SAFETY: gives back a count this code took above.
    let _ = unsafe { p.put(Hold::Ref, 1) }.unwrap();
    let mut left = COUNT_MAX;
    let mut due = 0;
    while left > 0 {
        let step = left.min(MAX_BATCH);
        // SAFETY: gives back a count this code took above.
        if unsafe { p.put(Hold::Pin, step) }.unwrap().is_due() {
            due += 1;
        }
        left -= step;
    }
    assert_eq!(due, 1, "exactly the final put wakes");
    // SAFETY: this code marked the page and nothing maps it.
    unsafe { p.free_marked() }.unwrap();
    assert!(p.is_free());
    // SAFETY: gives back a count this code took above.
    assert!(unsafe { p.put(Hold::Ref, 1) }.is_err());
    assert_eq!(p.get(Hold::Ref, 1).unwrap_err().kind, GetErrorKind::Free);
}

#[test]
fn release_errors_are_typed_and_partial() {
    let m = metas(8);
    // SAFETY: this map is the only one counting on these metas.
    let map = unsafe { Hm::new(Pfn(BASE), &m) };
    m[0].get(Hold::Ref, 1).unwrap();
    // SAFETY: the pages were taken above by this code and are released once.
    let e = unsafe { release(&map, &[Pfn(BASE), Pfn(BASE + 100)], Hold::Ref) }.unwrap_err();
    assert_eq!((e.released, e.pfn), (1, Pfn(BASE + 100)));
    assert!(matches!(e.kind, ReleaseErrorKind::OutsideMap(_)));
    // SAFETY: the pages were taken above by this code and are released once.
    let e = unsafe { release(&map, &[Pfn(BASE + 1)], Hold::Ref) }.unwrap_err();
    assert!(matches!(
        e.kind,
        ReleaseErrorKind::Put(PutError::NotHeld { .. })
    ));
    assert_eq!(e.released, 0);
    // SAFETY: the pages were taken above by this code and are released once.
    let e = unsafe { release_run(&map, Pfn(u64::MAX), 2, Hold::Ref) }.unwrap_err();
    assert!(matches!(e.kind, ReleaseErrorKind::Wraps { .. }), "{e:?}");
    // SAFETY: the pages were taken above by this code and are released once.
    assert!(unsafe { release_run(&map, Pfn(BASE), 0, Hold::Ref) }.is_ok() || all_idle(&m));
    // A run of more than MAX_BATCH pages over one-page units.
    for p in &m {
        p.get(Hold::Pin, 1).unwrap();
    }
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release_run(&map, Pfn(BASE), 8, Hold::Pin) }.unwrap();
    // Over a freed page: typed, the pages before it released.
    // SAFETY: this code owns the page and nothing maps it.
    unsafe { m[3].free() }.unwrap();
    for p in &m[..3] {
        p.get(Hold::Pin, 1).unwrap();
    }
    // SAFETY: the pages were taken above by this code and are released once.
    let e = unsafe { release_run(&map, Pfn(BASE), 4, Hold::Pin) }.unwrap_err();
    assert_eq!((e.released, e.pfn), (3, Pfn(BASE + 3)));
    assert!(matches!(e.kind, ReleaseErrorKind::Put(PutError::Free)));
    m[3].allocate().unwrap();
    assert!(all_idle(&m));
}

struct NoUnmap;
// SAFETY: the pages these tests truncate are mapped by no table.
unsafe impl Unmapper for NoUnmap {
    type Error = Infallible;
    fn unmap_extent(&mut self, _extent: Extent) -> Result<(), Infallible> {
        Ok(())
    }
}

#[test]
fn a_map_and_an_extent_ending_at_the_last_pfn() {
    let m = metas(32);
    // 32 metas from u64::MAX - 15: the last 16 describe no PFN.
    // SAFETY: this map is the only one counting on these metas.
    let mut map = unsafe { Hm::new(Pfn(u64::MAX - 15), &m) };
    assert_eq!(map.pages(), 16);
    assert_eq!(map.last(), Some(Pfn(u64::MAX)));
    map.add_region(Region {
        first: Pfn(u64::MAX - 7),
        pages: 8,
        unit_pages: 8,
        layout_managed: true,
    })
    .unwrap();
    assert!(
        map.add_region(Region {
            first: Pfn(u64::MAX - 15),
            pages: 32,
            unit_pages: 16,
            layout_managed: false,
        })
        .is_err()
    );
    let u = map.unit(Pfn(u64::MAX)).unwrap();
    assert_eq!(
        (u.head, u.pages, u.last()),
        (Pfn(u64::MAX - 7), 8, Some(Pfn(u64::MAX)))
    );
    assert_eq!(u.pages_from(Pfn(u64::MAX)), 1);
    assert!(map.unit(Pfn(u64::MAX - 16)).is_err());
    // Take every page, release as one run ending at the last PFN.
    for i in 0..16 {
        map.unit(Pfn(u64::MAX - 15 + i))
            .unwrap()
            .meta
            .get(Hold::Ref, 1)
            .unwrap();
    }
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release_run(&map, Pfn(u64::MAX - 15), 16, Hold::Ref) }.unwrap();
    assert!(all_idle(&m));
    // An extent that wraps is a typed error, and leaves nothing marked.
    let wrap = [
        Extent::new(Pfn(u64::MAX - 15), 8),
        Extent::new(Pfn(u64::MAX - 7), 9),
    ];
    let e = Truncate::mark(&map, wrap.into_iter()).unwrap_err();
    assert!(
        matches!(e, MarkSetError::Set(SetError::Wraps { .. })),
        "{e:?}"
    );
    assert!(all_idle(&m));
    // The whole top truncated: ends exactly at the last PFN.
    let t = Truncate::mark(&map, [Extent::new(Pfn(u64::MAX - 15), 16)].into_iter()).unwrap();
    assert_eq!(t.units_marked(), 9);
    let freed = t
        .unmap(&mut NoUnmap)
        .unwrap()
        .try_drain::<4>()
        .unwrap()
        .free()
        .unwrap();
    assert_eq!(freed.units, 9);
    assert!(m[..9].iter().all(|p| p.is_free()));
    assert!(m[9..16].iter().all(|p| !p.is_free() || p.load().is_idle()));
    assert!(
        m[16..].iter().all(|p| !p.is_free() && p.load().is_idle()),
        "metas past u64::MAX untouched"
    );
}

#[test]
fn bad_extent_sets_roll_back_every_mark() {
    let m = metas(64);
    // SAFETY: this map is the only one counting on these metas.
    let mut map = unsafe { Hm::new(Pfn(BASE), &m) };
    map.add_region(Region {
        first: Pfn(BASE + 16),
        pages: 16,
        unit_pages: 8,
        layout_managed: true,
    })
    .unwrap();
    // SAFETY: this code owns the page and nothing maps it.
    unsafe { m[40].free() }.unwrap();
    let cases: Vec<(Vec<Extent>, &str)> = vec![
        (
            vec![Extent::new(Pfn(BASE), 4), Extent::new(Pfn(BASE + 8), 0)],
            "empty",
        ),
        (
            vec![Extent::new(Pfn(BASE), 4), Extent::new(Pfn(BASE + 2), 4)],
            "overlap",
        ),
        (
            vec![Extent::new(Pfn(BASE), 4), Extent::new(Pfn(BASE + 20), 4)],
            "part of a unit",
        ),
        (
            vec![
                Extent::new(Pfn(BASE + 16), 8),
                Extent::new(Pfn(BASE + 16), 8),
            ],
            "listed twice",
        ),
        (
            vec![Extent::new(Pfn(BASE), 4), Extent::new(Pfn(BASE + 60), 8)],
            "outside",
        ),
        (
            vec![Extent::new(Pfn(BASE), 4), Extent::new(Pfn(BASE + 38), 4)],
            "free unit",
        ),
        (
            vec![
                Extent::new(Pfn(BASE + 10), 4),
                Extent::new(Pfn(u64::MAX), 2),
            ],
            "wraps",
        ),
        (
            vec![
                Extent::new(Pfn(BASE + 24), 8),
                Extent::new(Pfn(BASE + 16), 9),
            ],
            "overlap in unit",
        ),
    ];
    for (set, what) in cases {
        let r = Truncate::mark(&map, set.clone().into_iter());
        assert!(r.is_err(), "{what}: accepted");
        let e = r.unwrap_err();
        match what {
            "empty" => assert!(matches!(e, MarkSetError::Set(SetError::EmptyExtent { .. }))),
            "overlap" | "listed twice" => {
                assert!(
                    matches!(e, MarkSetError::Set(SetError::Duplicate { .. })),
                    "{what}: {e:?}"
                )
            }
            "part of a unit" => {
                assert!(
                    matches!(e, MarkSetError::Set(SetError::PartialUnit { .. })),
                    "{e:?}"
                )
            }
            "outside" => assert!(
                matches!(e, MarkSetError::Set(SetError::OutsideMap(_))),
                "{e:?}"
            ),
            "free unit" => assert!(matches!(e, MarkSetError::Unit { .. }), "{e:?}"),
            "wraps" => assert!(
                matches!(e, MarkSetError::Set(SetError::Wraps { .. })),
                "{e:?}"
            ),
            _ => assert!(matches!(e, MarkSetError::Set(_)), "{what}: {e:?}"),
        }
        for (i, p) in m.iter().enumerate() {
            assert!(!p.is_truncating(), "{what}: page {i} left marked");
        }
    }
}
