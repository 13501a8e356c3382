//! Schemes (5) and (6): pagepin itself, and pagepin without the re-check.
//!
//! [`Pagepin`] takes the walker's path as a parameter:
//!
//! - [`GUP`] — (5) as shipped: the walker is [`Gup::get_pages`] on one page
//!   (one-word [`PageMeta`] get, then the leaf-and-parent re-check), the unpin
//!   is [`release`], the truncater is the [`Truncate`] typestate (mark, unmap,
//!   drain, free) over a memory map of single-page units.
//! - [`INLINE`] — (5) with the same steps written out here (translate, get,
//!   re-read leaf and parent), the shape of the other schemes' walkers, so the
//!   benchmark compares protocols rather than `get_pages`'s per-call set-up
//!   (range checks, walk state) on one-page calls. Truncate as [`GUP`].
//! - [`NO_RECHECK`] — (6), the re-check dropped. Under loom it is pagepin's own
//!   broken variant (`pagepin::gup::broken::get_pages` with
//!   `Dropped::Recheck`, compiled only there); outside loom, for the benchmark,
//!   [`INLINE`] without the re-check's loads. Truncate as [`GUP`].

use core::iter::{Once, once};

use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::{Hold, PageMeta};
use pagepin::table::{EntryLoc, PagingFormat, TableAccess, VirtAddr, Walker};
use pagepin::truncate::{Extent, Truncate, Unmapper, Wait};
use pagepin::wait::{Clock, SpinWaiter, WaitSlot, WaitTable};

use super::{PAGE_SHIFT, Scheme, State, pfn_of, unmap};

/// Wait slots of the memory map (a power of two; one is enough for the
/// models' one page).
#[cfg(loom)]
const WAIT_SLOTS: usize = 1;
#[cfg(not(loom))]
const WAIT_SLOTS: usize = 64;

/// The walker is pagepin's `Gup::get_pages`.
pub const GUP: u8 = 0;
/// The walker is the steps of `Gup::get_pages`, written out.
pub const INLINE: u8 = 1;
/// The walker has no re-check.
pub const NO_RECHECK: u8 = 2;

/// Scheme (5) (`WALK` = [`GUP`] or [`INLINE`]) or (6) (`WALK` = [`NO_RECHECK`]).
pub struct Pagepin<const WALK: u8> {
    waits: WaitTable<WAIT_SLOTS>,
}

/// The memory map of the scheme's pages: every page a unit of its own,
/// layout-managed (a DAX page), its waiters in the scheme's wait table.
struct Map<'a> {
    metas: &'a [PageMeta],
    base: Pfn,
    waits: &'a WaitTable<WAIT_SLOTS>,
}

// SAFETY: (1) `unit(pfn)` is `pfn` alone, one page, or `OutsideMap` for a PFN
// outside `base .. base + metas.len()`; (2) a unit of one page has one PFN, and
// its meta is the slice element of that PFN, never split or merged; (3) the
// metas are a borrowed slice and cannot move while `&self` lives; (4) `wake`
// runs `WaitTable::wake` on the slot `wait_slot` returns for the same head
// (a pure function of the head), and the only waiter, `SpinWaiter`, polls it.
unsafe impl MemoryMap for Map<'_> {
    const PAGE_SHIFT: u32 = PAGE_SHIFT;

    #[inline]
    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        let meta = pfn
            .0
            .checked_sub(self.base.0)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.metas.get(i))
            .ok_or(OutsideMap { pfn })?;
        Ok(Unit {
            head: pfn,
            pages: 1,
            meta,
            layout_managed: true,
        })
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.waits.slot(head)
    }

    #[inline]
    fn wake(&self, head: Pfn) {
        self.waits.wake(head);
    }
}

/// The truncate's unmapper: clears the leaf of each page of an extent.
struct ClearLeaves<'a, A: ?Sized> {
    access: &'a A,
    /// `leaves[k]` maps PFN `first + k`.
    leaves: &'a [EntryLoc],
    first: Pfn,
}

// SAFETY: `leaves` are the only mappings of the pages, and host tables have no TLB.
unsafe impl<A: TableAccess + ?Sized> Unmapper for ClearLeaves<'_, A> {
    type Error = core::convert::Infallible;

    fn unmap_extent(&mut self, extent: Extent) -> Result<(), Self::Error> {
        let from = (extent.first.0 - self.first.0) as usize;
        unmap(
            self.access,
            &self.leaves[from..from + extent.pages as usize],
        );
        Ok(())
    }
}

/// No deadline, so no clock is read.
struct NoClock;

impl Clock for NoClock {
    fn now_ns(&self) -> u64 {
        0
    }
}

/// The drain waits by polling, for ever (`SpinWaiter` yields under loom).
const WAIT: Wait<'static> = Wait {
    waiter: &SpinWaiter,
    clock: &NoClock,
    deadline_ns: None,
};

impl<const WALK: u8> Pagepin<WALK> {
    fn map<'a>(&'a self, metas: &'a [PageMeta], base: Pfn) -> Map<'a> {
        Map {
            metas,
            base,
            waits: &self.waits,
        }
    }

    /// The steps of `get_pages` for one page, written out: translate, get,
    /// and (with `recheck`) the re-read of the leaf and of the table entry
    /// above it.
    #[inline(always)]
    fn pin_inline<F: PagingFormat, A: TableAccess + ?Sized>(
        map: &Map<'_>,
        walker: &Walker<'_, F, A>,
        va: VirtAddr,
        recheck: bool,
    ) -> Option<usize> {
        let (index, leaf) = super::lookup(walker, va, map.base, map.metas.len())?;
        let pfn = pfn_of(map.base, index);
        // The get: Acquire, as pagepin's (pairs with the Release of `allocate`
        // and `free` through the word's release sequence, which is what makes
        // the re-check below sound without a fence).
        if let Err(e) = map.metas[index].get(Hold::Pin, 1) {
            if e.wake.is_due() {
                map.wake(pfn);
            }
            return None;
        }
        let unchanged = !recheck
            || (walker.is_unchanged(&leaf.entry) == Ok(true)
                && leaf
                    .parent
                    .is_none_or(|p| walker.is_unchanged(&p) == Ok(true)));
        if !unchanged {
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(map, &[pfn], Hold::Pin) }.expect("the pin just taken");
            return None;
        }
        Some(index)
    }
}

impl<const WALK: u8> Scheme for Pagepin<WALK> {
    const NAME: &'static str = match WALK {
        GUP => "(5) pagepin get_pages",
        INLINE => "(5) pagepin inlined",
        _ => "(6) pagepin, no re-check",
    };
    type Page = PageMeta;
    type Local<'s> = TablesNeverFreed;

    fn new() -> Self {
        Pagepin {
            waits: WaitTable::new(),
        }
    }

    fn new_page(&self) -> PageMeta {
        PageMeta::new_allocated()
    }

    fn local(&self) -> TablesNeverFreed {
        // SAFETY: no scheme, model or benchmark frees a page-table page (they
        // change leaf entries only; see the module docs of `schemes`).
        unsafe { TablesNeverFreed::new() }
    }

    #[inline]
    fn pin<F: PagingFormat, A: TableAccess + ?Sized>(
        &self,
        guard: &TablesNeverFreed,
        walker: &Walker<'_, F, A>,
        va: VirtAddr,
        pages: &[PageMeta],
        base: Pfn,
    ) -> Option<usize> {
        let map = self.map(pages, base);
        let len = 1 << PAGE_SHIFT;
        let mut out = [Pfn(0)];
        let taken = match WALK {
            GUP => Gup::new(*walker, &map).get_pages(guard, va, len, GupFlags::PIN, &mut out),
            INLINE => return Self::pin_inline(&map, walker, va, true),
            #[cfg(loom)]
            _ => pagepin::gup::broken::get_pages(
                &Gup::new(*walker, &map),
                pagepin::gup::broken::Dropped::Recheck,
                guard,
                va,
                len,
                GupFlags::PIN,
                &mut out,
            ),
            #[cfg(not(loom))]
            _ => return Self::pin_inline(&map, walker, va, false),
        };
        match taken {
            Ok(t) if t.pages == 1 => Some((out[0].0 - base.0) as usize),
            _ => None,
        }
    }

    #[inline]
    fn unpin(&self, pages: &[PageMeta], base: Pfn, index: usize) {
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&self.map(pages, base), &[pfn_of(base, index)], Hold::Pin) }
            .expect("a pin GUP-fast took");
    }

    fn truncate<A: TableAccess + ?Sized, D: FnOnce()>(
        &self,
        access: &A,
        leaves: &[EntryLoc],
        pages: &[PageMeta],
        base: Pfn,
        first: usize,
        drained: D,
    ) {
        let map = self.map(pages, base);
        let first = pfn_of(base, first);
        let set: Once<Extent> = once(Extent::new(first, leaves.len() as u64));
        let mut unmapper = ClearLeaves {
            access,
            leaves,
            first,
        };
        let done = Truncate::mark(&map, set)
            .expect("the set is allocated and unmarked")
            .unmap(&mut unmapper)
            .expect("the unmapper cannot fail")
            .drain(&WAIT)
            .expect("no deadline");
        drained();
        done.free().expect("the set is not free");
    }

    fn reallocate(&self, pages: &[PageMeta], index: usize) {
        pages[index].allocate().expect("a freed page");
    }

    fn state(&self, page: &PageMeta) -> State {
        let w = page.load();
        if w.is_free() {
            State::Free
        } else if w.is_idle() {
            State::Idle
        } else {
            State::Held
        }
    }
}
