//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --target-dir target/loom --test loom_truncate
//!
//! The truncate protocol against GUP-fast, and the drain's wake-up handshake,
//! two threads each, on the toy format. The truncating thread parks for real
//! (`loom::thread::park`) and is woken only through the memory map's `wake`, so
//! a lost wake-up is a loom deadlock.
//!
//! - `protocol`: GUP-fast (with its re-check) pins VA 0 → P, reads the page and
//!   releases it, then tries again; the truncater marks P, unmaps VA 0, drains,
//!   frees P and poisons it. Invariant 1: the page is never freed (poisoned)
//!   while pinned — an unordered read and poison is a loom causality violation,
//!   an ordered one fails "invariant 1 (truncate protocol: ...)". Invariant 2:
//!   once the walker has seen the drain finish, its next GUP-fast fails.
//!   Invariant 5: the drain always returns (no deadlock).
//! - `handshake`: a holder releases the last pin of P while the truncater drains.
//!   Broken twins: the drain checks the count and registers after, without a
//!   re-check; the drain registers without the waiter-side fence. Both lose the
//!   wake-up: the truncater parks for ever while the holder waits in `join`, and
//!   loom reports its "deadlock; threads = ..." (invariant 5).
//!
//! In both models the truncater is a spawned thread that joins nobody, and the
//! thread that wakes it is the only joiner, so no thread blocked in `join` is
//! ever unparked (tokio-rs/loom#249; see `handshake`). Both pass at
//! `LOOM_MAX_PREEMPTIONS=3`.
#![cfg(loom)]

mod loom_common;
use loom_common::*;

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicBool;
use loom::thread::{self, Thread};
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::{Hold, PageMeta};
use pagepin::sync::Ordering;
use pagepin::table::{Toy, VirtAddr, Walker};
use pagepin::truncate::broken::{self, Mistake};
use pagepin::truncate::{Extent, Truncate, Unmapper, Wait};
use pagepin::wait::{Clock, Parked, WaitSlot, WaitTable, Waiter};

/// The pages and their one wait table, shared by both threads.
struct Pages {
    metas: [PageMeta; 1],
    waits: WaitTable<1>,
}

impl Pages {
    fn new() -> Pages {
        Pages {
            metas: [PageMeta::new_allocated()],
            waits: WaitTable::new(),
        }
    }
}

/// A memory map of one single-page unit, P, whose `wake` also unparks the
/// truncating thread for real.
struct Map<'a> {
    pages: &'a Pages,
    truncater: Thread,
}

// SAFETY: (1)-(3) P is the one unit, of one page, with its one meta; (4) `wake`
// runs the slot's fenced wake and unparks the only waiter.
unsafe impl MemoryMap for Map<'_> {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        if pfn != P {
            return Err(OutsideMap { pfn });
        }
        Ok(Unit {
            head: P,
            pages: 1,
            meta: &self.pages.metas[0],
            layout_managed: true,
        })
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.pages.waits.slot(head)
    }

    fn wake(&self, head: Pfn) {
        if self.pages.waits.wake(head) {
            self.truncater.unpark();
        }
    }
}

/// Parks with `loom::thread::park` until the condition holds.
struct LoomWaiter;

impl Waiter for LoomWaiter {
    fn park(&self, ready: &dyn Fn() -> bool, _: &dyn Clock, _: Option<u64>) -> Parked {
        while !ready() {
            thread::park();
        }
        Parked::Ready
    }
}

struct NoClock;

impl Clock for NoClock {
    fn now_ns(&self) -> u64 {
        0
    }
}

const WAIT: Wait<'static> = Wait {
    waiter: &LoomWaiter,
    clock: &NoClock,
    deadline_ns: None,
};

/// Unmaps P from the toy tables: VA 0's leaf.
struct ClearVa0<'a>(&'a Tables);

// SAFETY: VA 0's leaf is the only mapping of P, and the toy tables have no TLB.
unsafe impl Unmapper for ClearVa0<'_> {
    type Error = core::convert::Infallible;

    fn unmap_extent(&mut self, _: Extent) -> Result<(), Self::Error> {
        self.0.set(1, 0, 0);
        Ok(())
    }
}

struct World {
    tables: Tables,
    pages: Pages,
    data: UnsafeCell<u64>,
    drained: AtomicBool,
}

fn set() -> core::iter::Once<Extent> {
    core::iter::once(Extent::new(P, 1))
}

#[test]
fn protocol() {
    loom::model(|| {
        // `std`'s Arc, as in `handshake`.
        let world = std::sync::Arc::new(World {
            tables: Tables::new(),
            pages: Pages::new(),
            data: UnsafeCell::new(1),
            drained: AtomicBool::new(false),
        });
        world.tables.set(1, 0, leaf_entry(P));
        world.tables.set(0, 0, table_entry(1));
        // The truncater is the spawned thread and joins nobody; the walker (this
        // thread) wakes it and is the only joiner, and nobody unparks it (see
        // `handshake`: loom aborts on an unpark of a thread blocked in `join`).
        let truncater = {
            let world = world.clone();
            thread::spawn(move || {
                let map = Map {
                    pages: &world.pages,
                    truncater: thread::current(),
                };
                let drained = Truncate::mark(&map, set())
                    .unwrap()
                    .unmap(&mut ClearVa0(&world.tables))
                    .unwrap()
                    .drain(&WAIT)
                    .unwrap();
                // Release: pairs with the walker's Acquire load.
                world.drained.store(true, Ordering::Release);
                drained.free().unwrap();
                // SAFETY: loom checks this write against the walker's read.
                world.data.with_mut(|d| unsafe { *d = u64::MAX });
            })
        };
        let map = Map {
            pages: &world.pages,
            truncater: truncater.thread().clone(),
        };
        // SAFETY: this model frees no table.
        let guard = unsafe { TablesNeverFreed::new() };
        let gup = Gup::new(Walker::<Toy, _>::new(&world.tables, table_pa(0)), &map);
        let mut out = [Pfn(0)];
        let pin = |out: &mut [Pfn]| {
            gup.get_pages(&guard, VirtAddr(0), 0x1000, GupFlags::PIN, out)
                .unwrap()
                .pages
        };
        if pin(&mut out) == 1 {
            // SAFETY: loom checks this read against the poisoning write.
            let contents = world.data.with(|d| unsafe { *d });
            assert_eq!(
                contents, 1,
                "invariant 1 (truncate protocol: a pinned page was poisoned)"
            );
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&map, &out, Hold::Pin) }.unwrap();
        }
        // Acquire: pairs with the truncater's Release after its drain.
        let after_drain = world.drained.load(Ordering::Acquire);
        let again = pin(&mut out);
        if again == 1 {
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&map, &out, Hold::Pin) }.unwrap();
        }
        assert!(
            !(after_drain && again == 1),
            "invariant 2 (truncate protocol: a pin succeeded after the drain)"
        );
        truncater.join().unwrap();
    });
}

/// A holder releases P's last pin while the truncater drains with `mistake`.
///
/// The truncater is the spawned thread; the holder is the model's main thread,
/// wakes the truncater and then joins it. No thread that may be blocked in
/// `JoinHandle::join` is ever unparked: loom 0.7 aborts with `assertion failed:
/// state.notified` (rt/notify.rs) when an unpark lands on a joiner
/// (tokio-rs/loom#249), which the earlier shape (the truncater as main thread,
/// joining the holder that wakes it) hit at `LOOM_MAX_PREEMPTIONS=3`. A lost
/// wake-up still leaves the truncater parked forever and the holder blocked in
/// its join: a loom deadlock.
fn handshake(mistake: Option<Mistake>) {
    loom::model(move || {
        // `std`'s Arc: dropping loom's during the unwind of a detected deadlock
        // aborts the process instead of failing the test.
        let pages = std::sync::Arc::new(Pages::new());
        pages.metas[0].get(Hold::Pin, 1).unwrap();
        let truncater = {
            let pages = pages.clone();
            thread::spawn(move || {
                let map = Map {
                    pages: &pages,
                    truncater: thread::current(),
                };
                let unmapped = Truncate::mark(&map, set())
                    .unwrap()
                    .unmap(&mut NothingToUnmap)
                    .unwrap();
                let drained = match mistake {
                    None => unmapped.drain(&WAIT).unwrap(),
                    Some(m) => broken::drain(unmapped, &WAIT, m).unwrap(),
                };
                drained.free().unwrap();
            })
        };
        let map = Map {
            pages: &pages,
            truncater: truncater.thread().clone(),
        };
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&map, &[P], Hold::Pin) }.unwrap();
        truncater.join().unwrap();
    });
}

struct NothingToUnmap;

// SAFETY: the model's pages are mapped by no table.
unsafe impl Unmapper for NothingToUnmap {
    type Error = core::convert::Infallible;

    fn unmap_extent(&mut self, _: Extent) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[test]
fn handshake_never_loses_the_wake() {
    handshake(None);
}

// Invariant 5, caught by loom itself: a lost wake-up leaves every thread
// blocked (the truncater parked, the holder in `join`), which loom 0.7 reports
// as "deadlock; threads = [...]" (rt/execution.rs) — no assertion of the model
// can fire, since nothing runs any more.
#[test]
#[should_panic(expected = "deadlock; threads = ")]
fn broken_check_then_register_loses_the_wake() {
    handshake(Some(Mistake::CheckThenRegister));
}

// Invariant 5, caught by loom as above.
#[test]
#[should_panic(expected = "deadlock; threads = ")]
fn broken_no_waiter_fence_loses_the_wake() {
    handshake(Some(Mistake::NoWaiterFence));
}
