//! Run: `cargo test --test gup_basic`
//!
//! GUP-fast over tables built by the builder (x86_64 4- and 5-level, and the toy
//! format), mixing 4 KiB and huge leaves, against a host memory map: what it
//! takes, where it stops, the exact number of RMWs, and that nothing leaks on
//! any stop.

use pagepin::arch::x86_64::{Paging4Level, Paging5Level};
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::*;
use pagepin::memmap::{MemoryMap, Pfn, Region, SliceMemMap};
use pagepin::meta::{GetErrorKind, Hold, MetaWord, PageMeta};
use pagepin::sync::op_count;
use pagepin::table::*;

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
const GIB1: u64 = 1 << 30;

/// Data memory: PA 1 GiB .. 3 GiB, one meta per 4 KiB page.
const DATA_BASE: u64 = GIB1;
const DATA_PAGES: usize = (2 * GIB1 / KIB4) as usize;
/// 4 × 2 MiB units of layout-managed (DAX) memory.
const DAX: u64 = DATA_BASE;
/// 4 KiB units.
const SMALL: u64 = DATA_BASE + 64 * MIB2;
/// One 1 GiB unit.
const GIANT: u64 = 2 * GIB1;

fn pfn(pa: u64) -> Pfn {
    Pfn(pa >> 12)
}

fn guard() -> TablesNeverFreed {
    // SAFETY: these tests free no page table while a walk runs (single thread).
    unsafe { TablesNeverFreed::new() }
}

struct Data {
    metas: Vec<PageMeta>,
}

impl Data {
    fn new() -> Data {
        Data {
            metas: (0..DATA_PAGES).map(|_| PageMeta::new_allocated()).collect(),
        }
    }

    fn map(&self) -> SliceMemMap<'_> {
        // SAFETY: this map is the only one counting on these metas.
        let mut map = unsafe { SliceMemMap::new(pfn(DATA_BASE), &self.metas) };
        map.add_region(Region {
            first: pfn(DAX),
            pages: 4 * 512,
            unit_pages: 512,
            layout_managed: true,
        })
        .unwrap();
        map.add_region(Region {
            first: pfn(GIANT),
            pages: 1 << 18,
            unit_pages: 1 << 18,
            layout_managed: false,
        })
        .unwrap();
        map
    }
}

/// Builds tables of format `F` with `maps`, then runs `f` with GUP over them.
fn with_gup<F: PagingFormat>(
    maps: &[MapRequest],
    f: impl FnOnce(&Gup<'_, F, HostMemory<'_>, SliceMemMap<'_>>, &HostMemory<'_>),
) {
    let data = Data::new();
    let memmap = data.map();
    let frames: Vec<HostFrame> = (0..64).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<F, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() }).unwrap();
    for m in maps {
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { tables.map(m) }.unwrap();
    }
    let gup = Gup::new(tables.walker(), &memmap);
    f(&gup, &memory);
    // Every test releases what it took: nothing may be left behind.
    for (i, meta) in data.metas.iter().enumerate() {
        assert_eq!(
            meta.load(),
            MetaWord::ALLOCATED_IDLE,
            "page {i} left {:?}",
            meta.load()
        );
    }
}

fn rw() -> Perms {
    Perms::READ | Perms::WRITE | Perms::USER
}

fn map(va: u64, pa: u64, len: u64, leaf: u64) -> MapRequest {
    MapRequest::new(VirtAddr(va), PhysAddr(pa), len, leaf).with_perms(rw())
}

fn head_meta<'m>(memmap: &'m SliceMemMap<'_>, pa: u64) -> &'m PageMeta {
    memmap.unit(pfn(pa)).unwrap().meta
}

#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn small_leaves_one_rmw_each() {
    let va = 0x40_0000;
    with_gup::<Paging4Level>(&[map(va, SMALL, 16 * KIB4, KIB4)], |gup, _| {
        let mut out = [Pfn(0); 16];
        op_count::reset();
        let taken = gup
            .get_pages(&guard(), VirtAddr(va), 16 * KIB4, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(op_count::get().rmw, 16, "one RMW per 4 KiB leaf");
        assert_eq!(
            taken,
            Taken {
                pages: 16,
                stop: Stop::Complete
            }
        );
        for (i, p) in out.iter().enumerate() {
            assert_eq!(*p, pfn(SMALL + i as u64 * KIB4));
            assert_eq!(gup.memmap().unit(*p).unwrap().meta.pins(), 1);
        }
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out, Hold::Pin) }.unwrap();
    });
}

#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn a_huge_leaf_over_its_unit_is_one_rmw() {
    // 2 MiB leaves over 2 MiB units (4-level) and a 1 GiB leaf over a 1 GiB unit
    // (5-level): one RMW each, counted on the head.
    let va = 0x4000_0000;
    with_gup::<Paging4Level>(&[map(va, DAX, 2 * MIB2, MIB2)], |gup, _| {
        let mut out = vec![Pfn(0); 1024];
        op_count::reset();
        let taken = gup
            .get_pages(
                &guard(),
                VirtAddr(va),
                2 * MIB2,
                GupFlags::empty(),
                &mut out,
            )
            .unwrap();
        assert_eq!(op_count::get().rmw, 2);
        assert_eq!(taken.pages, 1024);
        assert_eq!(head_meta(gup.memmap(), DAX).refs(), 512);
        assert_eq!(head_meta(gup.memmap(), DAX + MIB2).refs(), 512);
        // Released page by page, on the same head.
        for p in &out {
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(gup.memmap(), core::slice::from_ref(p), Hold::Ref) }.unwrap();
        }
    });
    let va = 0x80_0000_0000;
    with_gup::<Paging5Level>(&[map(va, GIANT, GIB1, GIB1)], |gup, _| {
        let mut out = vec![Pfn(0); 1 << 18];
        op_count::reset();
        let taken = gup
            .get_pages(&guard(), VirtAddr(va), GIB1, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(op_count::get().rmw, 1, "a 1 GiB leaf is one RMW");
        assert_eq!(taken.pages, 1 << 18);
        assert_eq!(out[(1 << 18) - 1], pfn(GIANT + GIB1 - KIB4));
        op_count::reset();
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out, Hold::Pin) }.unwrap();
        assert_eq!(op_count::get().rmw, 1, "and one RMW to release");
    });
}

#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn a_huge_leaf_over_small_units_counts_each() {
    let va = 0x4000_0000;
    with_gup::<Paging4Level>(&[map(va, SMALL, MIB2, MIB2)], |gup, _| {
        let mut out = vec![Pfn(0); 512];
        op_count::reset();
        let taken = gup
            .get_pages(&guard(), VirtAddr(va), MIB2, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(op_count::get().rmw, 512);
        assert_eq!(taken.pages, 512);
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out, Hold::Pin) }.unwrap();
    });
}

#[test]
fn one_extent_two_mappings_one_counting_meta() {
    // The same DAX extent, by a 2 MiB leaf in one address space and 4 KiB leaves
    // in another: both count on the extent's head.
    let data = Data::new();
    let memmap = data.map();
    let frames: Vec<HostFrame> = (0..32).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let (first, second) = slots.split_at_mut(16);
    let mut huge =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(first) }, unsafe { ReclaimNow::new() })
            .unwrap();
    let mut small =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(second) }, unsafe { ReclaimNow::new() })
            .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { huge.map(&map(0x20_0000, DAX, MIB2, MIB2)) }.unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { small.map(&map(0x7000_0000, DAX, MIB2, KIB4)) }.unwrap();
    let mut a = vec![Pfn(0); 512];
    let mut b = vec![Pfn(0); 512];
    let g = guard();
    let t = Gup::new(huge.walker(), &memmap)
        .get_pages(&g, VirtAddr(0x20_0000), MIB2, GupFlags::PIN, &mut a)
        .unwrap();
    let u = Gup::new(small.walker(), &memmap)
        .get_pages(&g, VirtAddr(0x7000_0000), MIB2, GupFlags::PIN, &mut b)
        .unwrap();
    assert_eq!((t.pages, u.pages), (512, 512));
    assert_eq!(a, b);
    let head = head_meta(&memmap, DAX);
    assert_eq!(head.pins(), 1024);
    assert_eq!(data.metas[1].pins(), 0, "only the head counts");
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &a, Hold::Pin) }.unwrap();
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &b, Hold::Pin) }.unwrap();
    assert!(head.is_idle());
}

#[test]
fn partial_huge_leaf_and_holes() {
    let va = 0x4000_0000;
    with_gup::<Paging4Level>(&[map(va, DAX, MIB2, MIB2)], |gup, _| {
        let mut out = vec![Pfn(0); 1024];
        // Start in the middle of the leaf, run past its end into a hole.
        let start = va + MIB2 - 3 * KIB4;
        let taken = gup
            .get_pages(
                &guard(),
                VirtAddr(start),
                8 * KIB4,
                GupFlags::empty(),
                &mut out,
            )
            .unwrap();
        assert_eq!(taken.pages, 3);
        assert_eq!(
            taken.stop,
            Stop::Absent {
                va: VirtAddr(va + MIB2)
            }
        );
        assert_eq!(out[0], pfn(DAX + MIB2 - 3 * KIB4));
        assert_eq!(head_meta(gup.memmap(), DAX).refs(), 3);
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out[..3], Hold::Ref) }.unwrap();
    });
}

#[test]
fn output_full_is_a_partial_result() {
    let va = 0x4000_0000;
    with_gup::<Paging4Level>(&[map(va, DAX, MIB2, MIB2)], |gup, _| {
        let mut out = [Pfn(0); 10];
        let taken = gup
            .get_pages(&guard(), VirtAddr(va), MIB2, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(taken.pages, 10);
        assert_eq!(
            taken.stop,
            Stop::OutputFull {
                va: VirtAddr(va + 10 * KIB4)
            }
        );
        assert_eq!(head_meta(gup.memmap(), DAX).pins(), 10);
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out, Hold::Pin) }.unwrap();
        let taken = gup
            .get_pages(&guard(), VirtAddr(va), MIB2, GupFlags::PIN, &mut [])
            .unwrap();
        assert_eq!(
            taken,
            Taken {
                pages: 0,
                stop: Stop::OutputFull { va: VirtAddr(va) }
            }
        );
    });
}

#[test]
fn permissions_are_checked_and_the_fault_hook_fixes_them() {
    let va = 0x40_0000;
    let ro = MapRequest::new(VirtAddr(va + KIB4), PhysAddr(SMALL + KIB4), KIB4, KIB4)
        .with_perms(Perms::READ | Perms::USER);
    with_gup::<Paging4Level>(&[map(va, SMALL, KIB4, KIB4), ro], |gup, _| {
        let mut out = [Pfn(0); 4];
        let flags = GupFlags::WRITE | GupFlags::USER;
        let taken = gup
            .get_pages(&guard(), VirtAddr(va), 4 * KIB4, flags, &mut out)
            .unwrap();
        assert_eq!(taken.pages, 1);
        assert_eq!(
            taken.stop,
            Stop::NotPermitted {
                va: VirtAddr(va + KIB4),
                missing: Perms::WRITE
            }
        );
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out[..1], Hold::Ref) }.unwrap();
        // A hook that cannot fix anything is asked once per address.
        let mut asked = Vec::new();
        let mut hook = |va: VirtAddr, _| {
            asked.push(va);
            false
        };
        let taken = gup
            .get_pages_with_fault(
                &guard(),
                VirtAddr(va + 2 * KIB4),
                KIB4,
                flags,
                &mut out,
                &mut hook,
            )
            .unwrap();
        assert_eq!(
            taken,
            Taken {
                pages: 0,
                stop: Stop::Absent {
                    va: VirtAddr(va + 2 * KIB4)
                }
            }
        );
        assert_eq!(asked, [VirtAddr(va + 2 * KIB4)]);
    });
}

#[test]
fn the_fault_hook_maps_and_the_walk_continues() {
    let data = Data::new();
    let memmap = data.map();
    let frames: Vec<HostFrame> = (0..16).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let tables = core::cell::RefCell::new(
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(
            &memory,
            // SAFETY: the pool's frames are this code's own, in no other pool.
            unsafe { FramePool::new(&mut slots) },
            // SAFETY: no walker or MMU reads these tables while the builder unmaps.
            unsafe { ReclaimNow::new() },
        )
        .unwrap(),
    );
    let va = 0x40_0000;
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.borrow_mut().map(&map(va, SMALL, KIB4, KIB4)) }.unwrap();
    let root = tables.borrow().root();
    let gup = Gup::new(Walker::<Paging4Level, _>::new(&memory, root), &memmap);
    let mut faults = 0;
    let mut hook = |at: VirtAddr, _| {
        faults += 1;
        let pa = SMALL + (at.0 - va);
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { tables.borrow_mut().map(&map(at.0, pa, KIB4, KIB4)) }.is_ok()
    };
    let mut out = [Pfn(0); 4];
    let taken = gup
        .get_pages_with_fault(
            &guard(),
            VirtAddr(va),
            4 * KIB4,
            GupFlags::WRITE,
            &mut out,
            &mut hook,
        )
        .unwrap();
    assert_eq!(
        taken,
        Taken {
            pages: 4,
            stop: Stop::Complete
        }
    );
    assert_eq!(faults, 3);
    assert_eq!(out[3], pfn(SMALL + 3 * KIB4));
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &out, Hold::Ref) }.unwrap();
}

#[test]
fn refused_pages_leak_nothing() {
    let va = 0x4000_0000;
    with_gup::<Paging4Level>(
        &[
            map(va, SMALL, 2 * KIB4, KIB4),
            map(va + 2 * KIB4, DAX, MIB2 - 2 * KIB4, KIB4),
        ],
        |gup, _| {
            let dax_head = head_meta(gup.memmap(), DAX);
            dax_head.mark_truncating().unwrap();
            let mut out = vec![Pfn(0); 8];
            let taken = gup
                .get_pages(&guard(), VirtAddr(va), 8 * KIB4, GupFlags::PIN, &mut out)
                .unwrap();
            assert_eq!(
                taken.pages, 2,
                "the pages before the truncating unit stay taken"
            );
            assert_eq!(
                taken.stop,
                Stop::Refused {
                    va: VirtAddr(va + 2 * KIB4),
                    pfn: pfn(DAX),
                    kind: GetErrorKind::Truncating
                }
            );
            assert_eq!(dax_head.pins(), 0);
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(gup.memmap(), &out[..2], Hold::Pin) }.unwrap();
            // SAFETY: this test set the mark itself and no truncate uses it.
            unsafe { dax_head.unmark_truncating() }.unwrap();
        },
    );
}

#[test]
fn long_term_pins_of_layout_managed_pages_are_refused() {
    let va = 0x4000_0000;
    with_gup::<Paging4Level>(&[map(va, DAX, MIB2, MIB2)], |gup, _| {
        let mut out = vec![Pfn(0); 512];
        let longterm = GupFlags::PIN | GupFlags::LONGTERM;
        let taken = gup
            .get_pages(&guard(), VirtAddr(va), MIB2, longterm, &mut out)
            .unwrap();
        assert_eq!(
            taken,
            Taken {
                pages: 0,
                stop: Stop::LongTermOnLayoutManaged {
                    va: VirtAddr(va),
                    pfn: pfn(DAX)
                }
            }
        );
        assert_eq!(
            gup.get_pages(&guard(), VirtAddr(va), MIB2, GupFlags::LONGTERM, &mut out),
            Err(GupError::LongTermWithoutPin)
        );
    });
}

#[test]
fn bad_ranges_are_typed_errors() {
    with_gup::<Paging4Level>(&[], |gup, _| {
        let mut out = [Pfn(0); 4];
        let g = guard();
        let f = GupFlags::empty();
        assert_eq!(
            gup.get_pages(&g, VirtAddr(0x1000), 0, f, &mut out),
            Err(GupError::Range(RangeError::Empty))
        );
        assert_eq!(
            gup.get_pages(&g, VirtAddr(!0xfff), 0x2000, f, &mut out),
            Err(GupError::Range(RangeError::Wraps))
        );
        assert!(matches!(
            gup.get_pages(&g, VirtAddr(0x0000_8000_0000_0000), 0x1000, f, &mut out),
            Err(GupError::Range(RangeError::NonCanonical { .. }))
        ));
        assert!(matches!(
            gup.get_pages(&g, VirtAddr(0x0000_7fff_ffff_f000), 0x2000, f, &mut out),
            Err(GupError::Range(RangeError::NonCanonical { .. }))
        ));
        assert!(matches!(
            gup.get_pages(&g, VirtAddr(0x1800), 0x1000, f, &mut out),
            Err(GupError::Misaligned { .. })
        ));
        assert!(matches!(
            gup.get_pages(&g, VirtAddr(0x1000), 0x1800, f, &mut out),
            Err(GupError::Misaligned { .. })
        ));
    });
}

#[test]
fn pfns_outside_the_map_stop_the_walk() {
    let va = 0x40_0000;
    let beyond = DATA_BASE + 2 * GIB1;
    with_gup::<Paging4Level>(
        &[
            map(va, SMALL, KIB4, KIB4),
            map(va + KIB4, beyond, KIB4, KIB4),
        ],
        |gup, _| {
            let mut out = [Pfn(0); 2];
            let taken = gup
                .get_pages(&guard(), VirtAddr(va), 2 * KIB4, GupFlags::PIN, &mut out)
                .unwrap();
            assert_eq!(
                taken,
                Taken {
                    pages: 1,
                    stop: Stop::OutsideMap {
                        va: VirtAddr(va + KIB4),
                        pfn: pfn(beyond)
                    }
                }
            );
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(gup.memmap(), &out[..1], Hold::Pin) }.unwrap();
        },
    );
}

/// A memory map that runs `hook` the first time it is asked about `trigger`:
/// between the walk's load of the entry and the re-check.
struct Interfering<'a, H: Fn()> {
    inner: &'a SliceMemMap<'a>,
    trigger: Pfn,
    hook: H,
    fired: core::cell::Cell<bool>,
}

// SAFETY: every answer is the inner map's, which keeps the contract.
unsafe impl<H: Fn()> MemoryMap for Interfering<'_, H> {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<pagepin::memmap::Unit<'_>, pagepin::memmap::OutsideMap> {
        if pfn == self.trigger && !self.fired.replace(true) {
            (self.hook)();
        }
        self.inner.unit(pfn)
    }

    fn wait_slot(&self, head: Pfn) -> &pagepin::wait::WaitSlot {
        self.inner.wait_slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.inner.wake(head)
    }
}

/// The re-check: an unmap (leaf cleared) or a table detached with its entries
/// intact (parent cleared) between the walk's load and the get is caught, and the
/// get undone.
#[test]
fn the_recheck_catches_a_leaf_or_parent_change() {
    for clear_parent in [false, true] {
        let data = Data::new();
        let memmap = data.map();
        let frames: Vec<HostFrame> = (0..16).map(|_| HostFrame::new()).collect();
        let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
        let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
        let mut tables = TableBuilder::<Paging4Level, _, _>::new(
            &memory,
            // SAFETY: the frames are this code's own, listed once, in no other pool.
            unsafe { FramePool::new(&mut slots) },
            // SAFETY: no walker or MMU reads these tables while the builder unmaps.
            unsafe { ReclaimNow::new() },
        )
        .unwrap();
        let va = 0x40_0000;
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { tables.map(&map(va, SMALL, 2 * KIB4, KIB4)) }.unwrap();
        let walker = tables.walker();
        let WalkItem::Leaf(leaf) = walker.translate(VirtAddr(va + KIB4)).unwrap() else {
            panic!("mapped above");
        };
        let victim = if clear_parent {
            leaf.parent.unwrap().loc
        } else {
            leaf.entry.loc
        };
        let interfering = Interfering {
            inner: &memmap,
            trigger: pfn(SMALL + KIB4),
            hook: || {
                // SAFETY: stands for the builder's concurrent unmap of this leaf (the race under test); the page stays allocated and no table is detached.
                unsafe { memory.entry(victim.table, victim.index) }
                    .unwrap()
                    .store(0, pagepin::sync::Ordering::Release)
            },
            fired: core::cell::Cell::new(false),
        };
        let gup = Gup::new(walker, &interfering);
        let mut out = [Pfn(0); 2];
        let taken = gup
            .get_pages(&guard(), VirtAddr(va), 2 * KIB4, GupFlags::PIN, &mut out)
            .unwrap();
        // The two leaves of one table are one batch: the parent is re-read once
        // after both gets, so its change undoes both; a leaf's change undoes that
        // leaf and the ones after it.
        let expected = if clear_parent {
            Taken {
                pages: 0,
                stop: Stop::Changed { va: VirtAddr(va) },
            }
        } else {
            Taken {
                pages: 1,
                stop: Stop::Changed {
                    va: VirtAddr(va + KIB4),
                },
            }
        };
        assert_eq!(taken, expected);
        assert!(
            memmap.unit(pfn(SMALL + KIB4)).unwrap().meta.is_idle(),
            "undone"
        );
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&memmap, &out[..taken.pages], Hold::Pin) }.unwrap();
        assert!(memmap.unit(pfn(SMALL)).unwrap().meta.is_idle(), "no leak");
    }
}

/// Long runs of 4 KiB leaves go in batches of 32 across table boundaries: one
/// RMW per leaf, exact output-full stops inside a batch, and a change in the
/// middle of a later batch undoes exactly the leaves the batched re-check says
/// (from the changed leaf on; the whole batch for a changed parent).
#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn batches_across_tables_keep_one_rmw_per_leaf_and_stop_exactly() {
    const LEAVES: u64 = 1000;
    let va = 0x40_0000 - 100 * KIB4; // leaves 0..100 in one table, the rest in the next ones
    with_gup::<Paging4Level>(&[map(va, SMALL, LEAVES * KIB4, KIB4)], |gup, _| {
        let mut out = vec![Pfn(0); LEAVES as usize];
        op_count::reset();
        let taken = gup
            .get_pages(
                &guard(),
                VirtAddr(va),
                LEAVES * KIB4,
                GupFlags::PIN,
                &mut out,
            )
            .unwrap();
        assert_eq!(op_count::get().rmw, LEAVES, "one RMW per 4 KiB leaf");
        assert_eq!((taken.pages, taken.stop), (LEAVES as usize, Stop::Complete));
        for (i, p) in out.iter().enumerate() {
            assert_eq!(*p, pfn(SMALL + i as u64 * KIB4));
        }
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out, Hold::Pin) }.unwrap();
        // The output fills in the middle of a batch.
        let taken = gup
            .get_pages(
                &guard(),
                VirtAddr(va),
                LEAVES * KIB4,
                GupFlags::PIN,
                &mut out[..77],
            )
            .unwrap();
        assert_eq!(
            taken,
            Taken {
                pages: 77,
                stop: Stop::OutputFull {
                    va: VirtAddr(va + 77 * KIB4)
                }
            }
        );
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out[..77], Hold::Pin) }.unwrap();
    });
    for clear_parent in [false, true] {
        let data = Data::new();
        let memmap = data.map();
        let frames: Vec<HostFrame> = (0..16).map(|_| HostFrame::new()).collect();
        let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
        let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
        let mut tables = TableBuilder::<Paging4Level, _, _>::new(
            &memory,
            // SAFETY: the frames are this code's own, listed once, in no other pool.
            unsafe { FramePool::new(&mut slots) },
            // SAFETY: no walker or MMU reads these tables while the builder unmaps.
            unsafe { ReclaimNow::new() },
        )
        .unwrap();
        let va = 0x40_0000;
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { tables.map(&map(va, SMALL, 100 * KIB4, KIB4)) }.unwrap();
        // Leaf 40: the ninth leaf of the second batch of its table.
        let WalkItem::Leaf(leaf) = tables.walker().translate(VirtAddr(va + 40 * KIB4)).unwrap()
        else {
            panic!("mapped above");
        };
        let victim = if clear_parent {
            leaf.parent.unwrap().loc
        } else {
            leaf.entry.loc
        };
        let interfering = Interfering {
            inner: &memmap,
            trigger: pfn(SMALL + 40 * KIB4),
            hook: || {
                // SAFETY: stands for the builder's concurrent unmap of this leaf (the race under test); the page stays allocated and no table is detached.
                unsafe { memory.entry(victim.table, victim.index) }
                    .unwrap()
                    .store(0, pagepin::sync::Ordering::Release)
            },
            fired: core::cell::Cell::new(false),
        };
        let gup = Gup::new(tables.walker(), &interfering);
        let mut out = [Pfn(0); 100];
        let taken = gup
            .get_pages(&guard(), VirtAddr(va), 100 * KIB4, GupFlags::PIN, &mut out)
            .unwrap();
        let stopped_at = if clear_parent { 32 } else { 40 };
        assert_eq!(
            taken,
            Taken {
                pages: stopped_at,
                stop: Stop::Changed {
                    va: VirtAddr(va + stopped_at as u64 * KIB4)
                }
            }
        );
        for i in 0..100u64 {
            let pins = memmap.unit(pfn(SMALL + i * KIB4)).unwrap().meta.pins();
            assert_eq!(pins, u32::from(i < stopped_at as u64), "leaf {i}");
        }
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&memmap, &out[..taken.pages], Hold::Pin) }.unwrap();
    }
}

#[test]
fn final_release_of_a_truncating_page_wakes_its_slot() {
    let va = 0x4000_0000;
    with_gup::<Paging4Level>(&[map(va, DAX, MIB2, MIB2)], |gup, _| {
        let mut out = vec![Pfn(0); 512];
        let taken = gup
            .get_pages(&guard(), VirtAddr(va), MIB2, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(taken.pages, 512);
        let head = head_meta(gup.memmap(), DAX);
        head.mark_truncating().unwrap();
        let slot = gup.memmap().waits().slot(pfn(DAX));
        let ticket = slot.register();
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out[..511], Hold::Pin) }.unwrap();
        assert!(!slot.woken_since(&ticket), "not idle yet");
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out[511..], Hold::Pin) }.unwrap();
        assert!(slot.woken_since(&ticket), "the final release woke the slot");
        slot.deregister(ticket).unwrap();
        // SAFETY: this test set the mark itself and no truncate uses it.
        unsafe { head.unmark_truncating() }.unwrap();
    });
}

#[test]
fn double_release_is_a_typed_error() {
    let va = 0x40_0000;
    with_gup::<Paging4Level>(&[map(va, SMALL, 2 * KIB4, KIB4)], |gup, _| {
        let mut out = [Pfn(0); 2];
        let _ = gup
            .get_pages(&guard(), VirtAddr(va), 2 * KIB4, GupFlags::PIN, &mut out)
            .unwrap();
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out[..1], Hold::Pin) }.unwrap();
        // SAFETY: the pages were taken above by this code and are released once.
        let e = unsafe { release(gup.memmap(), &out, Hold::Pin) }.unwrap_err();
        assert_eq!((e.released, e.pfn), (0, out[0]));
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), &out[1..], Hold::Pin) }.unwrap();
    });
}

#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn the_toy_format_works_too() {
    use pagepin::table::Toy;
    with_gup::<Toy>(
        &[
            map(0, SMALL, 4 * KIB4, KIB4),
            map(0x4000, DAX, 4 * KIB4, 4 * KIB4),
        ],
        |gup, _| {
            let mut out = [Pfn(0); 8];
            op_count::reset();
            let taken = gup
                .get_pages(&guard(), VirtAddr(0), 8 * KIB4, GupFlags::PIN, &mut out)
                .unwrap();
            assert_eq!(
                taken,
                Taken {
                    pages: 8,
                    stop: Stop::Complete
                }
            );
            assert_eq!(
                op_count::get().rmw,
                5,
                "four 4 KiB leaves and one 16 KiB leaf"
            );
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(gup.memmap(), &out, Hold::Pin) }.unwrap();
        },
    );
}

/// Leaves of several base pages (aarch64, 64 KiB granule, over the 4 KiB map):
/// a start inside a leaf, whole leaves in runs, a leaf cut by the output, and
/// one RMW per 4 KiB unit.
#[test]
#[cfg_attr(
    not(feature = "op-count"),
    ignore = "counts RMWs: run with --features op-count"
)]
fn multi_page_leaves_in_runs() {
    use pagepin::arch::aarch64::Stage1G64K48;
    const KIB64: u64 = 64 << 10;
    let data = Data::new();
    let memmap = data.map();
    // 64 KiB tables: pool frames 64 KiB apart in host memory of 4 KiB frames.
    let frames: Vec<HostFrame> = (0..16 * 4).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x100_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = (0..4).map(|i| PhysAddr(0x100_0000 + i * KIB64)).collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Stage1G64K48, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() })
            .unwrap();
    let va = 0x4000_0000;
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&map(va, SMALL, 6 * KIB64, KIB64)) }.unwrap();
    let gup = Gup::new(tables.walker(), &memmap);
    let start = va + 3 * KIB4;
    let mut out = vec![Pfn(0); 60];
    op_count::reset();
    let taken = gup
        .get_pages(
            &guard(),
            VirtAddr(start),
            5 * KIB64,
            GupFlags::PIN,
            &mut out,
        )
        .unwrap();
    assert_eq!(op_count::get().rmw, 60, "one RMW per 4 KiB unit");
    assert_eq!(
        taken,
        Taken {
            pages: 60,
            stop: Stop::OutputFull {
                va: VirtAddr(start + 60 * KIB4)
            }
        }
    );
    for (i, p) in out.iter().enumerate() {
        assert_eq!(*p, pfn(SMALL + 3 * KIB4 + i as u64 * KIB4));
    }
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &out, Hold::Pin) }.unwrap();
    let mut out = vec![Pfn(0); 80];
    let taken = gup
        .get_pages(
            &guard(),
            VirtAddr(start),
            5 * KIB64,
            GupFlags::PIN,
            &mut out,
        )
        .unwrap();
    assert_eq!((taken.pages, taken.stop), (80, Stop::Complete));
    for (i, p) in out.iter().enumerate() {
        assert_eq!(*p, pfn(SMALL + 3 * KIB4 + i as u64 * KIB4));
    }
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &out, Hold::Pin) }.unwrap();
    assert!(
        data.metas
            .iter()
            .all(|m| m.load() == MetaWord::ALLOCATED_IDLE)
    );
}
