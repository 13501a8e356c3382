//! The kernel's memory map: which meta counts for a data page. Unlike
//! pagepin's `SliceMemMap` (fixed regions), it **splits and merges** units,
//! as a kernel's allocator does: each of the 24 units of 2 MiB at
//! `DATA_BASE` is either one unit (head = its first page, the 511 tail metas
//! `FREE`) or 512 single-page units, and CPU 0 switches between the two only
//! while every page of the unit is free (`MemoryMap`'s contract, point 3).
//! The single pages after them are units of one page (not layout-managed),
//! the 1 GiB region one unit.
//!
//! The map keeps a layout version (contract point 6) unless the boot says
//! `layout=unversioned`; then GUP-fast looks every unit up again after its
//! gets.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::PageMeta;
use pagepin::wait::{WaitSlot, WaitTable};

use crate::race::{
    DATA_BASE, GIANT_BASE, GIANT_PAGES, HUGE_UNITS, KIB4, MIB2, RAM_END, SMALL_BASE,
};

/// Metas for every page from `DATA_BASE` to `RAM_END`.
pub const METAS_LEN: usize = ((RAM_END - DATA_BASE) / KIB4) as usize;
/// Base pages of a 2 MiB unit.
pub const HUGE_PAGES: u64 = MIB2 / KIB4;

/// The page metadata: all-zero (allocated, idle) in `.bss` (so the image
/// stays small); `race::init` frees them all before anything else runs.
pub static METAS: [PageMeta; METAS_LEN] = [const { PageMeta::new_allocated() }; METAS_LEN];

/// Per 2 MiB unit: set while its pages are single-page units.
static SPLIT: [AtomicBool; HUGE_UNITS as usize] =
    [const { AtomicBool::new(false) }; HUGE_UNITS as usize];
/// The layout version: bumped by every split and merge.
static VERSION: AtomicU64 = AtomicU64::new(0);
/// Whether [`KernelMemMap::layout_version`] reports [`VERSION`].
static VERSIONED: AtomicBool = AtomicBool::new(true);

/// The kernel's memory map (one instance, built by `race::init`).
pub struct KernelMemMap {
    waits: WaitTable<64>,
}

impl KernelMemMap {
    /// The map; `versioned`: whether it reports its layout version.
    pub fn new(versioned: bool) -> KernelMemMap {
        // Relaxed: set by CPU 0 before the SIPIs, which order it for the APs.
        VERSIONED.store(versioned, Ordering::Relaxed);
        KernelMemMap {
            waits: WaitTable::new(),
        }
    }

    /// Whether 2 MiB unit `unit` is split now (CPU 0's bookkeeping).
    pub fn is_split(&self, unit: u64) -> bool {
        // Relaxed: only CPU 0 writes it, and this is CPU 0 reading.
        SPLIT[unit as usize].load(Ordering::Relaxed)
    }

    /// Splits 2 MiB unit `unit` into single pages (`split`) or merges them
    /// back, and bumps the layout version. CPU 0 only, only while the unit is
    /// free and not yet allocated again (every meta of its pages `FREE`,
    /// checked here: anything else is a violation and nothing changes); the
    /// caller allocates the new heads afterwards (Release RMWs, contract
    /// point 3).
    pub fn set_split(&self, unit: u64, split: bool) -> bool {
        let first = unit * HUGE_PAGES;
        if let Some(i) = (first..first + HUGE_PAGES).find(|&i| !METAS[i as usize].is_free()) {
            crate::race::violation(format_args!(
                "split/merge of unit {unit}: page {:#x} is not free",
                DATA_BASE / KIB4 + i
            ));
            return false;
        }
        // Relaxed: published by the Release `allocate` of the new heads that
        // CPU 0 makes after this (in program order): a walker whose get
        // (Acquire) succeeds on one of them reads from that allocation's
        // release sequence and then sees this store (point 3).
        SPLIT[unit as usize].store(split, Ordering::Relaxed);
        // Release: after the change and before any head is allocated again;
        // pairs with the Acquire load in `layout_version`, so two equal
        // versions bracket no completed split or merge (point 6).
        VERSION.fetch_add(1, Ordering::Release);
        true
    }
}

/// The unit of `pfn`: head, pages, layout-managed (no bounds check).
fn unit_of(pfn: u64) -> (u64, u64, bool) {
    let pa = pfn * KIB4;
    if (DATA_BASE..SMALL_BASE).contains(&pa) {
        let unit = (pa - DATA_BASE) / MIB2;
        // Relaxed: a stale answer is what GUP-fast's unit re-check is for;
        // once a get on the unit's head succeeded (Acquire, reading from the
        // Release allocate that followed the change) this load sees the
        // current answer, which cannot change while the count is held.
        if SPLIT[unit as usize].load(Ordering::Relaxed) {
            (pfn, 1, true)
        } else {
            (pfn & !(HUGE_PAGES - 1), HUGE_PAGES, true)
        }
    } else if pa >= GIANT_BASE {
        (GIANT_BASE / KIB4, GIANT_PAGES, true)
    } else {
        (pfn, 1, false)
    }
}

// SAFETY: (1) `unit` checks that `pfn` is a data page (`DATA_BASE..RAM_END`)
// and returns the 2 MiB unit around it, the 1 GiB unit, or the page alone,
// each containing it; (2) every page of a unit computes the same head, size,
// flag and meta (from the same `SPLIT` flag, or from fixed regions); (3) a
// `SPLIT` flag changes only in `set_split`, on CPU 0, which first checks that
// every meta of the unit's pages is `FREE` (the heads before and after the
// change among them), and CPU 0 allocates the new heads only afterwards with
// `PageMeta::allocate`; the tails of a whole unit are never allocated, so
// they stay `FREE`; (4) the metas are a static array; (5) `wake` runs
// `WaitSlot::wake` on the slot `wait_slot` returns (the same hash), and the
// only waiter (`SpinWaiter`) polls it; (6) the version is bumped with a
// Release RMW after every change and before any head is allocated again,
// and read with Acquire.
unsafe impl MemoryMap for KernelMemMap {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        if !(DATA_BASE / KIB4..RAM_END / KIB4).contains(&pfn.0) {
            return Err(OutsideMap { pfn });
        }
        let (head, pages, layout_managed) = unit_of(pfn.0);
        Ok(Unit {
            head: Pfn(head),
            pages,
            meta: &METAS[(head - DATA_BASE / KIB4) as usize],
            layout_managed,
        })
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.waits.slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.waits.wake(head);
    }

    fn layout_version(&self) -> Option<u64> {
        // Relaxed: set before the SIPIs. Acquire (the version): pairs with the
        // Release bump in `set_split`.
        VERSIONED
            .load(Ordering::Relaxed)
            .then(|| VERSION.load(Ordering::Acquire))
    }
}
