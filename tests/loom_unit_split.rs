//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --target-dir target/loom --test loom_unit_split
//!
//! `gup_vs_unit_split`: GUP-fast against an allocator that splits the unit it
//! looked up (DESIGN.md invariant 7, unit identity). The toy 2-level format
//! maps VA 0 to page Q; P and Q form one 2-page unit whose head P counts for
//! both (Q's own meta is free while it is a tail). The truncater marks P's
//! unit, unmaps VA 0, drains, frees P, splits the unit into P and Q, allocates
//! P to one owner and Q to another (whose reference Q's meta holds: only the
//! walker pins, so a pin on a meta is the walker's), and maps VA 0 to
//! Q again with the same raw entry (a refault of the same block), so the entry
//! re-check cannot tell. The map is a loom object, so loom explores every
//! order of the walker's lookup, get and re-checks against the split.
//!
//! Checked: a page GUP-fast returns is counted on the meta that counts for it
//! when it is returned (invariant 7), and when everyone has released, both
//! metas hold exactly their owners' counts (the walker's undo, if any, landed
//! on the meta it got). Run with a map that keeps a layout version and with
//! one that does not. Broken twin: no unit re-check (`Dropped::UnitRecheck`).
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::broken::{self, Dropped};
use pagepin::gup::{Gup, GupFlags, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::{Hold, PageMeta};
use pagepin::sync::{AtomicU64, Ordering};
use pagepin::table::{Toy, VirtAddr, Walker};
use pagepin::wait::{WaitSlot, WaitTable};

mod loom_common;
use loom_common::*;

/// The message of the invariant-7 check on a returned page.
const RETURNED_ON_ANOTHER_META: &str = "invariant 7 (unit identity): GUP-fast returned a page counted on a meta that does not count for it";

/// P and Q: one 2-page unit (head P) until split, then two 1-page units.
struct SplitMap {
    metas: [PageMeta; 2],
    /// 0: one unit of two pages; 1: split.
    split: AtomicU64,
    /// The layout version, if the map keeps one.
    version: Option<AtomicU64>,
    waits: WaitTable<1>,
}

impl SplitMap {
    fn new(versioned: bool) -> SplitMap {
        SplitMap {
            // P is the allocated head; Q, a tail, is free (the map's contract).
            metas: [PageMeta::new_allocated(), PageMeta::new_free()],
            split: AtomicU64::new(0),
            version: versioned.then(|| AtomicU64::new(0)),
            waits: WaitTable::new(),
        }
    }

    fn meta(&self, pfn: Pfn) -> &PageMeta {
        &self.metas[(pfn.0 - DATA_PFN) as usize]
    }

    /// Splits the free unit P+Q (P's meta must be free).
    fn split(&self) {
        // Relaxed: ordered before the heads' allocations (Release RMWs) by
        // program order, which is what the map's contract asks.
        self.split.store(1, Ordering::Relaxed);
        if let Some(version) = &self.version {
            // Release: after the change, before any head is allocated again;
            // pairs with the Acquire in `layout_version`.
            version.fetch_add(1, Ordering::Release);
        }
    }
}

// SAFETY: (1) the unit holds `pfn`; (2) one answer per unit at a time; (3) the
// split runs only on a free head with a free tail, and the model allocates the
// heads after it; (4) the metas are fields of a value that does not move while
// borrowed; (5) `wake` bumps the table's slot; nobody parks; (6) the version is
// bumped with Release after the split and read with Acquire.
unsafe impl MemoryMap for SplitMap {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        if pfn != P && pfn != Q {
            return Err(OutsideMap { pfn });
        }
        // Relaxed: see `split`.
        let (head, pages) = if self.split.load(Ordering::Relaxed) == 1 {
            (pfn, 1)
        } else {
            (P, 2)
        };
        Ok(Unit {
            head,
            pages,
            meta: self.meta(head),
            layout_managed: true,
        })
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.waits.slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.waits.wake(head);
    }

    fn layout_version(&self) -> Option<u64> {
        // Acquire: pairs with the Release bump in `split`.
        self.version.as_ref().map(|v| v.load(Ordering::Acquire))
    }
}

struct World {
    tables: Tables,
    map: SplitMap,
}

fn gup_vs_unit_split(versioned: bool, dropped: Option<Dropped>) {
    loom::model(move || {
        let world = Arc::new(World {
            tables: Tables::new(),
            map: SplitMap::new(versioned),
        });
        world.tables.set(1, 0, leaf_entry(Q));
        world.tables.set(0, 0, table_entry(1));
        let truncater = {
            let world = world.clone();
            thread::spawn(move || {
                let (map, p) = (&world.map, world.map.meta(P));
                // The truncate of the unit: mark, unmap, drain, free.
                p.mark_truncating().unwrap();
                world.tables.set(1, 0, 0);
                while !p.is_idle() {
                    thread::yield_now();
                }
                // SAFETY: this code marked the page and nothing maps it.
                unsafe { p.free_marked() }.unwrap();
                // The allocator splits it and hands P and Q to two owners; Q's
                // owner references Q, and VA 0 maps Q again with the same raw
                // entry.
                map.split();
                p.allocate().unwrap();
                map.meta(Q).allocate().unwrap();
                map.meta(Q).get(Hold::Ref, 1).unwrap();
                world.tables.set(1, 0, leaf_entry(Q));
            })
        };
        let gup = Gup::new(
            Walker::<Toy, _>::new(&world.tables, table_pa(0)),
            &world.map,
        );
        // SAFETY: this model frees no page table.
        let guard = unsafe { TablesNeverFreed::new() };
        let mut out = [Pfn(0)];
        let taken = match dropped {
            None => gup.get_pages(&guard, VirtAddr(0), 0x1000, GupFlags::PIN, &mut out),
            Some(d) => broken::get_pages(
                &gup,
                d,
                &guard,
                VirtAddr(0),
                0x1000,
                GupFlags::PIN,
                &mut out,
            ),
        }
        .unwrap();
        if taken.pages == 1 {
            assert_eq!(out[0], Q);
            // The meta that counts for Q now must hold the walker's pin (the
            // only pin in the model). While it does, the unit cannot change.
            let now = world.map.unit(Q).unwrap();
            assert_eq!(now.meta.pins(), 1, "{RETURNED_ON_ANOTHER_META}");
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&world.map, &out, Hold::Pin) }.unwrap();
        }
        truncater.join().unwrap();
        // Everyone but Q's owner has released: P is idle, Q holds its owner's
        // reference and no pin.
        let q = world.map.meta(Q).load();
        assert!(
            world.map.meta(P).is_idle() && (q.refs(), q.pins()) == (1, 0),
            "invariant 7 (undo on the meta got): P {:?}, Q {:?}",
            world.map.meta(P),
            world.map.meta(Q)
        );
    });
}

#[test]
fn gup_vs_unit_split_without_a_layout_version() {
    gup_vs_unit_split(false, None);
}

#[test]
fn gup_vs_unit_split_with_a_layout_version() {
    gup_vs_unit_split(true, None);
}

#[test]
#[should_panic(
    expected = "invariant 7 (unit identity): GUP-fast returned a page counted on a meta that does not count for it"
)]
fn broken_no_unit_recheck_returns_a_page_counted_on_the_old_head() {
    gup_vs_unit_split(false, Some(Dropped::UnitRecheck));
}

#[test]
#[should_panic(
    expected = "invariant 7 (unit identity): GUP-fast returned a page counted on a meta that does not count for it"
)]
fn broken_no_unit_recheck_with_a_layout_version() {
    gup_vs_unit_split(true, Some(Dropped::UnitRecheck));
}
