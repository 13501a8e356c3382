//! Scheme (1): a grace period after marking (the thread's `synchronize_rcu()`).
//!
//! The walker's get and its flag check run inside one read section of a real
//! epoch ([`pagepin::guard::Epoch`]). The truncater marks the pages, then waits
//! a grace period: every read section that could have missed the mark has
//! ended — and, having ended, its get is visible to the drain. A read section
//! that starts after the grace period's start sees the mark (the epoch's fence
//! pair). Then it unmaps, drains a plain count and frees.
//!
//! The grace period orders the *mark* before later walkers, but not the
//! *unmap* (it comes after): a walker whose read section starts after the grace
//! period may still load the old leaf entry, and once the page is reallocated
//! its flag says "allocated" again. The ABA model shows it.
//!
//! `GracePeriod<true>`, (1b), moves the grace period after the unmap (as RCU
//! frees: unpublish, wait, free): a read section that starts after it can no
//! longer load the old entry, so it passes both models — at the same cost.

use pagepin::guard::{Epoch, EpochBrand, EpochReader, WalkGuard};
use pagepin::memmap::Pfn;
use pagepin::sync::spin_wait_hint;
use pagepin::table::{EntryLoc, PagingFormat, TableAccess, VirtAddr, Walker};

use super::{FlagPage, Scheme, State, lookup, unmap};

/// Epoch reader slots: one per walking thread (the models have one walker; the
/// benchmark one, with room to spare, as a kernel has one per CPU).
#[cfg(loom)]
const SLOTS: usize = 1;
#[cfg(not(loom))]
const SLOTS: usize = 8;

/// Scheme (1) (`AFTER_UNMAP = false`), or (1b) with the grace period after
/// the unmap, over an epoch of brand `B` (one live epoch per brand: each test
/// that runs beside others names its own).
pub struct GracePeriod<const AFTER_UNMAP: bool, B: EpochBrand> {
    epoch: Epoch<B, SLOTS>,
}

impl<const AFTER_UNMAP: bool, B: EpochBrand> GracePeriod<AFTER_UNMAP, B> {
    /// Waits until every read section that began before now has ended.
    fn synchronize(&self) {
        // `retire_epoch` starts with a SeqCst fence, the reclaimer's side of the
        // pair with the fence of `EpochReader::enter`; `is_safe`'s Acquire loads
        // pair with the Release that ends a read section.
        let retired = self.epoch.retire_epoch();
        while !self.epoch.is_safe(retired) {
            spin_wait_hint();
        }
    }
}

impl<const AFTER_UNMAP: bool, B: EpochBrand> Scheme for GracePeriod<AFTER_UNMAP, B> {
    const NAME: &'static str = if AFTER_UNMAP {
        "(1b) grace period after unmap"
    } else {
        "(1) grace period after mark"
    };
    type Page = FlagPage;
    type Local<'s> = EpochReader<'s, B, SLOTS>;

    fn new() -> Self {
        GracePeriod {
            epoch: Epoch::new().expect("one live scheme per brand"),
        }
    }

    fn new_page(&self) -> FlagPage {
        FlagPage::new()
    }

    fn local(&self) -> EpochReader<'_, B, SLOTS> {
        self.epoch
            .reader()
            .expect("one epoch slot per walking thread")
    }

    #[inline]
    fn pin<F: PagingFormat, A: TableAccess + ?Sized>(
        &self,
        local: &EpochReader<'_, B, SLOTS>,
        walker: &Walker<'_, F, A>,
        va: VirtAddr,
        pages: &[FlagPage],
        base: Pfn,
    ) -> Option<usize> {
        // The read section covers the load, the get and the flag check: either
        // it began after the truncater's grace period started (and its flag
        // check sees the mark), or the grace period waits for it to end (and the
        // drain sees its get).
        let _section = local.enter();
        let (index, _) = lookup(walker, va, base, pages.len())?;
        let page = &pages[index];
        page.get();
        if !page.allocated() {
            page.put();
            return None;
        }
        Some(index)
    }

    #[inline]
    fn unpin(&self, pages: &[FlagPage], _: Pfn, index: usize) {
        pages[index].put();
    }

    fn truncate<A: TableAccess + ?Sized, D: FnOnce()>(
        &self,
        access: &A,
        leaves: &[EntryLoc],
        pages: &[FlagPage],
        _: Pfn,
        first: usize,
        drained: D,
    ) {
        let set = &pages[first..first + leaves.len()];
        set.iter().for_each(FlagPage::mark);
        // One grace period per call, however many pages.
        if AFTER_UNMAP {
            unmap(access, leaves);
            self.synchronize();
        } else {
            self.synchronize();
            unmap(access, leaves);
        }
        set.iter().for_each(FlagPage::drain);
        drained();
        set.iter().for_each(FlagPage::free);
    }

    fn reallocate(&self, pages: &[FlagPage], index: usize) {
        pages[index].reallocate();
    }

    fn state(&self, page: &FlagPage) -> State {
        page.state()
    }
}
