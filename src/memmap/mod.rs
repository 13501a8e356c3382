//! The memory map: from a page frame number to the metadata that counts for it.
//!
//! GUP-fast takes one RMW per huge leaf, so the count of every base page of an
//! allocation unit (a Linux folio, a DAX extent) lives on one *counting* meta,
//! the unit's head. Which meta counts, and how large the unit is, is the memory
//! map's answer, **never** inferred from the leaf that happened to map the page:
//! the same DAX extent may be mapped by a 2 MiB leaf in one address space and by
//! 4 KiB leaves in another, and both must count on the same head.
//!
//! A kernel implements [`MemoryMap`] over its own page-metadata array (its
//! `struct page` array, its frame allocator's table). [`HostMemMap`] is an
//! implementation over a slice of [`PageMeta`], for tests and examples.

mod host;

pub use host::{HostMemMap, Region, RegionError};

use core::fmt;

use crate::meta::PageMeta;
use crate::wait::WaitSlot;

/// A page frame number: a physical address divided by the memory map's base
/// page size ([`MemoryMap::PAGE_SHIFT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(pub u64);

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PFN {:#x}", self.0)
    }
}

/// One allocation unit, as the memory map reports it for one of its PFNs.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// The first PFN of the unit: the page whose meta counts for all of them.
    pub head: Pfn,
    /// The number of base pages in the unit (at least 1).
    pub pages: u64,
    /// The counting meta (the head's).
    pub meta: &'a PageMeta,
    /// Whether the unit belongs to a layout-managed (DAX-like) region, whose
    /// blocks a filesystem may truncate: long-term pins are refused there.
    pub layout_managed: bool,
}

impl Unit<'_> {
    /// The first PFN past the unit.
    #[inline]
    pub fn end(&self) -> u64 {
        self.head.0.saturating_add(self.pages)
    }
}

/// A PFN the memory map does not describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutsideMap {
    /// The PFN asked for.
    pub pfn: Pfn,
}

impl fmt::Display for OutsideMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is outside the memory map", self.pfn)
    }
}

impl core::error::Error for OutsideMap {}

/// A kernel's memory map, as pagepin needs it.
///
/// # Safety
///
/// Implementors promise, for as long as `&self` lives:
///
/// 1. `unit(pfn)` returns a unit that contains `pfn`
///    (`head <= pfn < head + pages`, `pages >= 1`), or [`OutsideMap`].
/// 2. Every PFN of one unit reports the same `head`, `pages`, `layout_managed`
///    and the same `meta` (the same `PageMeta`, by address). A unit is split or
///    merged only while its head is idle and frozen (`FREE`, so no get can
///    succeed on it), never under a holder.
/// 3. A `PageMeta` is never moved or reused for another PFN while `&self` lives.
/// 4. [`wake`](Self::wake)`(head)` runs [`WaitSlot::wake`] on
///    [`wait_slot`](Self::wait_slot)`(head)` and wakes every waiter parked there,
///    and `wait_slot` returns the same slot for the same head every time.
///
/// GUP-fast hands out PFNs on the strength of these answers, so a wrong answer
/// is a device writing to memory nobody pinned.
pub unsafe trait MemoryMap {
    /// log2 of the base page size one [`PageMeta`] describes (12 for 4 KiB).
    const PAGE_SHIFT: u32;

    /// The allocation unit containing `pfn`.
    ///
    /// # Errors
    ///
    /// [`OutsideMap`] for a PFN the map does not describe (a device BAR, a hole,
    /// a corrupt page-table entry).
    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap>;

    /// The wait slot where waiters for the unit whose head is `head` register
    /// (hashed: several heads may share one).
    fn wait_slot(&self, head: Pfn) -> &WaitSlot;

    /// Wakes the waiters of the unit whose head is `head`: called after a release
    /// reported [`Wake::Due`](crate::meta::Wake::Due). Must call
    /// [`WaitSlot::wake`] on [`wait_slot`](Self::wait_slot)`(head)` (which keeps
    /// the handshake's fence) and, if it returns true, wake the kernel's parked
    /// waiters of that slot.
    fn wake(&self, head: Pfn);
}
