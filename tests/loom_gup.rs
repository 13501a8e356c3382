//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --target-dir target/loom --test loom_gup
//!
//! GUP-fast on the toy 2-level format (4 entries per table) against the writers
//! it races, two threads each. The tables, the page metas and the data pages'
//! generations are loom objects, so loom explores every interleaving (bounded
//! preemptions) and reports unordered accesses itself.
//!
//! - (a) `aba`: GUP-fast vs unmap + free + reallocate of the same page. Invariant
//!   3: a page GUP-fast returns is the allocation the entry it read mapped (its
//!   generation is still 0). Broken twin: no re-check.
//! - (b) `table_free`: GUP-fast vs unmap, detach and free of the leaf's table under
//!   an epoch walk guard. Invariant 6: no walk touches a freed table (a freed
//!   table is a `loom::cell::UnsafeCell` write; any unordered walk access to it is
//!   a causality violation). Broken twin: the guard's read section ends before
//!   the get and the re-check.
//! - (c) `detach`: GUP-fast vs a table detached *without* clearing its entries
//!   (the parent entry cleared), then the page freed and reallocated. Only the
//!   parent re-check catches it. Broken twin: no parent re-check.
//!
//! Every check has a message of its own, "invariant N (what broke): ...", and
//! each twin expects the exact fixed part of the one it breaks; the table-free
//! twin is caught by loom itself and expects loom's message for an unordered
//! `UnsafeCell` read and write (see the twin).
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use pagepin::guard::{Epoch, EpochBrand, TablesNeverFreed, WalkGuard};
use pagepin::gup::broken::{self, Dropped};
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{Pfn, SliceMemMap};
use pagepin::meta::{Hold, PageMeta};
use pagepin::table::{Toy, VirtAddr, Walker};

mod loom_common;
use loom_common::*;

/// The world of one model: tables, two data pages and their generations.
struct World {
    tables: Tables,
    metas: [PageMeta; 2],
    /// Each data page's generation, bumped by every (re)allocation.
    generation: [UnsafeCell<u64>; 2],
}

impl World {
    /// Root (table 0) entry 0 → table 1; table 1 entry 0 → P. VA 0 maps P.
    fn new() -> World {
        let world = World {
            tables: Tables::new(),
            metas: [PageMeta::new_allocated(), PageMeta::new_allocated()],
            generation: [UnsafeCell::new(0), UnsafeCell::new(0)],
        };
        world.tables.set(1, 0, leaf_entry(P));
        world.tables.set(0, 0, table_entry(1));
        world
    }

    fn memmap(&self) -> SliceMemMap<'_, 1, 1> {
        // SAFETY: this map is the only one counting on these metas.
        unsafe { SliceMemMap::new(Pfn(DATA_PFN), &self.metas) }
    }

    fn meta(&self, pfn: Pfn) -> &PageMeta {
        &self.metas[(pfn.0 - DATA_PFN) as usize]
    }

    /// Waits until `pfn` is idle, frees it, bumps its generation (the page's new
    /// life) and allocates it again — as a reclaiming allocator would.
    fn free_and_reallocate(&self, pfn: Pfn) {
        let meta = self.meta(pfn);
        // SAFETY: this code owns the page and nothing maps it.
        while unsafe { meta.free() }.is_err() {
            thread::yield_now();
        }
        // SAFETY: loom checks the ordering of every access to the cell (the
        // property under test); the allocator owns the free page here.
        self.generation[(pfn.0 - DATA_PFN) as usize].with_mut(|g| unsafe { *g += 1 });
        meta.allocate().unwrap();
    }

    /// After a successful pin of `pfn`: the page is the generation the entry
    /// mapped (0), and stays so while pinned.
    fn check_pinned(&self, pfn: Pfn) {
        // SAFETY: loom checks this read against the allocator's write (the
        // property under test).
        let generation = self.generation[(pfn.0 - DATA_PFN) as usize].with(|g| unsafe { *g });
        assert_eq!(
            generation, 0,
            "invariant 3 (GUP-fast pinned a reallocated page): {pfn} of generation {generation} through an entry of generation 0"
        );
    }
}

/// Object-safe view of the two guards the models use.
trait WalkGuardDyn {
    fn run(
        &self,
        world: &World,
        memmap: &SliceMemMap<'_, 1, 1>,
        dropped: Option<Dropped>,
        out: &mut [Pfn],
    ) -> (usize, Stop);
}

impl<G: WalkGuard> WalkGuardDyn for G {
    fn run(
        &self,
        world: &World,
        memmap: &SliceMemMap<'_, 1, 1>,
        dropped: Option<Dropped>,
        out: &mut [Pfn],
    ) -> (usize, Stop) {
        // SAFETY: the models free table 1 only after an epoch grace period of
        // the reader that walks (domain: its brand), or never (`TablesNeverFreed`,
        // domain `Promised`): the walker's domain is the guard's.
        let walker = unsafe { Walker::<Toy, _, G::Domain>::new_in(&world.tables, table_pa(0)) };
        let gup = Gup::new(walker, memmap);
        let gup = &gup;
        let taken = match dropped {
            None => gup.get_pages(self, VirtAddr(0), 0x1000, GupFlags::PIN, out),
            Some(d) => broken::get_pages(gup, d, self, VirtAddr(0), 0x1000, GupFlags::PIN, out),
        }
        .unwrap();
        (taken.pages, taken.stop)
    }
}

/// Pins VA 0 with `guard`, checks the page, releases it.
fn walker(world: &World, guard: &dyn WalkGuardDyn, dropped: Option<Dropped>) {
    let memmap = world.memmap();
    let mut out = [Pfn(0)];
    let (pages, _stop) = guard.run(world, &memmap, dropped, &mut out);
    if pages == 1 {
        world.check_pinned(out[0]);
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&memmap, &out, Hold::Pin) }.unwrap();
    }
}

fn never_freed() -> TablesNeverFreed {
    // SAFETY: models (a) and (c) free no table.
    unsafe { TablesNeverFreed::new() }
}

/// (a) The writer unmaps VA 0, frees P and reallocates it; then maps VA 0 to Q.
fn aba(dropped: Option<Dropped>) {
    loom::model(move || {
        let world = Arc::new(World::new());
        let writer = {
            let world = world.clone();
            thread::spawn(move || {
                world.tables.set(1, 0, 0);
                world.free_and_reallocate(P);
                world.tables.set(1, 0, leaf_entry(Q));
            })
        };
        walker(&world, &never_freed(), dropped);
        writer.join().unwrap();
        assert!(
            world.metas.iter().all(PageMeta::is_idle),
            "invariant 7 (GUP-fast leaked a pin in the ABA race)"
        );
    });
}

/// (c) The writer detaches table 1 by clearing the root entry only (table 1
/// still says VA 0 → P), frees and reallocates P, and maps a fresh table 2 with
/// VA 0 → Q.
fn detach(dropped: Option<Dropped>) {
    loom::model(move || {
        let world = Arc::new(World::new());
        let writer = {
            let world = world.clone();
            thread::spawn(move || {
                world.tables.set(0, 0, 0);
                world.free_and_reallocate(P);
                world.tables.set(2, 0, leaf_entry(Q));
                world.tables.set(0, 0, table_entry(2));
            })
        };
        walker(&world, &never_freed(), dropped);
        writer.join().unwrap();
        assert!(
            world.metas.iter().all(PageMeta::is_idle),
            "invariant 7 (GUP-fast leaked a pin through a detached table)"
        );
    });
}

/// (b) The writer clears the leaf, detaches table 1, retires it in the epoch and
/// frees it once the epoch says no walker can hold it.
/// `B`: the epoch's brand, one per test (tests run side by side).
fn table_free<B: EpochBrand>(dropped: Option<Dropped>) {
    loom::model(move || {
        let world = Arc::new(World::new());
        let epoch = Arc::new(Epoch::<B, 1>::new().unwrap());
        let writer = {
            let (world, epoch) = (world.clone(), epoch.clone());
            thread::spawn(move || {
                world.tables.set(1, 0, 0);
                world.tables.set(0, 0, 0);
                let retired = epoch.retire_epoch();
                while !epoch.is_safe(retired) {
                    thread::yield_now();
                }
                world.tables.free(1);
            })
        };
        let reader = epoch.reader().unwrap();
        walker(&world, &reader, dropped);
        drop(reader);
        writer.join().unwrap();
        let _ = world.tables.table(1);
    });
}

/// (b') Two GUP-fast calls in a row with one reader: the scan that frees the
/// table may read the *second* read section's epoch; it must still be ordered
/// after the first section's table reads (`EpochReader::enter` publishes the
/// new epoch with Release; with Relaxed, as it once was, this model fails with
/// a causality violation on the freed table). Needs three preemptions to reach;
/// bounded here so CI runs it whatever `LOOM_MAX_PREEMPTIONS` says.
#[test]
fn epoch_guard_orders_the_previous_read_section() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    pagepin::epoch_brand!(enum Ordered);
    model.check(|| {
        let world = Arc::new(World::new());
        let epoch = Arc::new(Epoch::<Ordered, 1>::new().unwrap());
        let writer = {
            let (world, epoch) = (world.clone(), epoch.clone());
            thread::spawn(move || {
                world.tables.set(1, 0, 0);
                world.tables.set(0, 0, 0);
                let retired = epoch.retire_epoch();
                while !epoch.is_safe(retired) {
                    thread::yield_now();
                }
                world.tables.free(1);
            })
        };
        let reader = epoch.reader().unwrap();
        walker(&world, &reader, None);
        walker(&world, &reader, None);
        drop(reader);
        writer.join().unwrap();
    });
}

#[test]
fn aba_is_caught_by_the_recheck() {
    aba(None);
}

#[test]
#[should_panic(expected = "invariant 3 (GUP-fast pinned a reallocated page)")]
fn broken_no_recheck_pins_a_reused_page() {
    aba(Some(Dropped::Recheck));
}

#[test]
fn detached_table_is_caught_by_the_parent_recheck() {
    detach(None);
}

#[test]
#[should_panic(expected = "invariant 3 (GUP-fast pinned a reallocated page)")]
fn broken_no_parent_recheck_pins_through_a_detached_table() {
    detach(Some(Dropped::ParentRecheck));
}

#[test]
fn epoch_guard_keeps_tables_alive() {
    pagepin::epoch_brand!(enum TableFree);
    table_free::<TableFree>(None);
}

// Invariant 6, caught by loom itself: the walk's read of the freed-table cell
// (`loom_common::Table::freed`, a `loom::cell::UnsafeCell`) is not ordered with
// the free's write, so loom panics at the access with "Causality violation:
// Concurrent read and write accesses" (rt/cell.rs; "... accesses." when the free
// came first, "... accesses to `UnsafeCell`." when the read did) before any
// assertion of the model can run. It is the only cell this model writes (no
// page is reallocated, so no generation changes), so the message names this
// race and no other.
#[test]
#[should_panic(expected = "Causality violation: Concurrent read and write accesses")]
fn broken_guard_released_before_the_get_reads_a_freed_table() {
    pagepin::epoch_brand!(enum GuardEndsEarly);
    table_free::<GuardEndsEarly>(Some(Dropped::GuardAcrossGet));
}
