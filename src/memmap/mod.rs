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
//! `struct page` array, its frame allocator's table). [`SliceMemMap`] is an
//! implementation over a slice of [`PageMeta`], for tests and examples.

mod slice;

pub use slice::{Region, RegionError, SliceMemMap};

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
    /// The last PFN of the unit (`head + pages - 1`; a unit may end at the
    /// last PFN, so the first PFN past it need not exist), or `None` for a
    /// unit that claims to wrap past it (a broken map).
    #[inline]
    pub fn last(&self) -> Option<Pfn> {
        self.head.0.checked_add(self.pages.checked_sub(1)?).map(Pfn)
    }

    /// The pages of the unit from `pfn` on (`pfn` included), or 0 if `pfn` is
    /// not in the unit. Exact for a unit ending at the last PFN.
    #[inline]
    pub fn pages_from(&self, pfn: Pfn) -> u64 {
        match pfn.0.checked_sub(self.head.0) {
            Some(offset) => self.pages.saturating_sub(offset),
            None => 0,
        }
    }

    /// Whether this unit (a fresh answer of the map) still counts the `pages`
    /// pages from `first` on that a get counted on `meta`, the meta of `head`:
    /// the same head, the same meta (by address), and every one of those
    /// pages inside it. The unit-identity check of GUP-fast (see
    /// [`MemoryMap`]).
    #[inline]
    pub(crate) fn still_counts(&self, head: Pfn, meta: &PageMeta, first: Pfn, pages: u64) -> bool {
        self.head == head
            && core::ptr::eq(self.meta, meta)
            // Offsets from the head, so a unit reaching the last PFN compares
            // exactly (`first + pages` may be 2^64).
            && first
                .0
                .checked_sub(self.head.0)
                .is_some_and(|offset| offset.checked_add(pages).is_some_and(|end| end <= self.pages))
    }
}

/// A run of consecutive single-page units whose counting metas are
/// consecutive in memory (a `struct page` array, a frame table), as a map may
/// report it through [`MemoryMap::single_units`]: PFN `first + i` is a unit
/// of one page whose meta is `metas[i]`. It lets a caller that goes through
/// many pages in a row (GUP-fast over 4 KiB leaves, truncate, release) index
/// the metas instead of asking the map page by page.
#[derive(Debug, Clone, Copy)]
pub struct SingleUnits<'a> {
    /// The first PFN of the run.
    pub first: Pfn,
    /// The metas of `first`, `first + 1`, …: one per PFN of the run.
    pub metas: &'a [PageMeta],
    /// Whether the run's units are layout-managed (as [`Unit::layout_managed`]).
    pub layout_managed: bool,
}

impl<'a> SingleUnits<'a> {
    /// The unit of `pfn`, if the run holds it: the same answer
    /// [`MemoryMap::unit`] gave at the time of the lookup that returned the
    /// run (contract point 7).
    #[inline(always)]
    pub fn unit(&self, pfn: Pfn) -> Option<Unit<'a>> {
        let index = usize::try_from(pfn.0.wrapping_sub(self.first.0)).ok()?;
        self.metas.get(index).map(|meta| Unit {
            head: pfn,
            pages: 1,
            meta,
            layout_managed: self.layout_managed,
        })
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
/// # Unit identity
///
/// A unit may be split or merged (its answer changes) only while every head
/// involved is `FREE`, so a walker's lookup of PFN P (head H, meta M) can be
/// stale by the time its get on M succeeds: H was freed, split, and allocated
/// again as a smaller unit that no longer holds P. GUP-fast therefore looks the
/// unit up again after every successful get and requires the same head, the
/// same meta (by address) and a unit that still holds every page it counted
/// there; on a mismatch it undoes the get on M (the meta it got, never a fresh
/// lookup's) and reports [`Stop::Changed`](crate::gup::Stop::Changed). Once the
/// get holds H the second answer is stable: H is not idle, so its unit cannot
/// change until the count is released (DESIGN.md invariant 7). Linux makes the
/// same check in `try_grab_folio` (`page_folio(page) == folio` after the get).
///
/// [`layout_version`](Self::layout_version) lets a map skip the second lookup
/// for a whole batch of gets when no unit changed in between.
///
/// # Safety
///
/// Implementors promise, for as long as `&self` lives:
///
/// 1. `unit(pfn)` returns a unit that contains `pfn`
///    (`head <= pfn < head + pages`, `pages >= 1`), or [`OutsideMap`].
/// 2. At any one time every PFN of one unit reports the same `head`, `pages`,
///    `layout_managed` and the same `meta` (the same `PageMeta`, by address).
/// 3. A unit is split or merged (any answer of `unit` changes) only while the
///    meta of every head involved, before and after the change, is `FREE`; the
///    change is complete (every write that changes an answer is made) before
///    any of those heads is allocated again, and that allocation is a
///    [`PageMeta::allocate`] (a Release RMW) made after the change in program
///    order, so a walker whose get succeeds on the new allocation sees the new
///    answers. The meta of a PFN that is no unit's head is `FREE` (no get on it
///    succeeds), or is never reported by `unit`.
/// 4. A `PageMeta` is never moved or reused for another PFN while `&self` lives.
/// 5. [`wake`](Self::wake)`(head)` runs [`WaitSlot::wake`] on
///    [`wait_slot`](Self::wait_slot)`(head)` and wakes every waiter parked there,
///    and `wait_slot` returns the same slot for the same head every time.
/// 6. If [`layout_version`](Self::layout_version) returns `Some`, it is an
///    Acquire load of a counter that every split or merge changes with a Release
///    read-modify-write after its last change of an answer and before any head
///    it involves is allocated again (point 3); two calls that return the same
///    value bracket no completed change.
/// 7. If [`single_units`](Self::single_units)`(pfn)` returns a run, the run
///    holds `pfn`, and for every PFN `p` it holds, the run's answer
///    ([`SingleUnits::unit`]) is the answer `unit(p)` would give at the time of
///    the call: a unit of one page, whose meta is the run's. Points 3 and 6
///    apply to those answers as to `unit`'s (a run is a batch of lookups, no
///    more current than any of them).
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

    /// The run of single-page units from `pfn` on, if `pfn` is a unit of one
    /// page and the map keeps the metas of the PFNs after it in an array
    /// (contract point 7): a caller going through consecutive PFNs may index
    /// the run's metas instead of calling [`unit`](Self::unit) for each.
    /// `None` (the default) means "ask [`unit`](Self::unit)", which is always
    /// correct; a map that wraps another and watches or changes its answers
    /// must not forward this without forwarding what it does.
    #[inline]
    fn single_units(&self, pfn: Pfn) -> Option<SingleUnits<'_>> {
        let _ = pfn;
        None
    }

    /// The map's layout version, if it keeps one (contract point 6): GUP-fast
    /// reads it before a batch's lookups and again after the batch's gets, and
    /// if both reads return the same value, it skips looking each unit up a
    /// second time (every lookup of the batch is still the current answer).
    /// `None` (the default) means "always look again", which is always correct.
    ///
    /// A map whose units never change returns a constant; a map that splits
    /// and merges units bumps a counter on every change.
    #[inline]
    fn layout_version(&self) -> Option<u64> {
        None
    }
}
