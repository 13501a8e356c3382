//! Scheme (4): Linux mainline — a reference count whose 0 means "free" (the
//! allocated, idle page holds its owner's 1), a get that increments unless the
//! count is 0, and a re-read of the leaf entry after the get: a changed entry
//! (the cleared PTE is the truncate's marker) undoes the get. The truncater
//! unmaps, waits until only the owner's 1 is left, and frees by CAS 1 → 0.
//!
//! Get and free are RMWs on one word: the free fails if a get came first, and
//! a get after the free sees 0. The re-check is for the page that was freed
//! and *reallocated* (count 1 again) between the walker's load and its get: the
//! get reads from the reallocation's release sequence, so the unmap before the
//! free is visible to the re-check.

use pagepin::memmap::Pfn;
use pagepin::sync::{AtomicU64, Ordering, spin_wait_hint};
use pagepin::table::{EntryLoc, PagingFormat, TableAccess, VirtAddr, Walker};

use super::{Scheme, State, lookup, unmap};

/// Scheme (4).
pub struct PteRecheck;

/// One page's count: 0 free, 1 allocated and idle, 1 + n with n references.
pub struct CountPage {
    count: AtomicU64,
}

impl CountPage {
    fn put(&self) {
        // Release: pairs with the Acquire of the truncater's wait (and of its
        // free), so the holder's accesses happen before the free.
        self.count.fetch_sub(1, Ordering::Release);
    }

    /// Waits until only the owner's reference is left.
    fn drain(&self) {
        // Acquire: pairs with the Release of `put`.
        while self.count.load(Ordering::Acquire) != 1 {
            spin_wait_hint();
        }
    }

    /// Frees the page: 1 → 0, waiting out gets that land after the drain (their
    /// walkers see the cleared entry and put).
    fn free(&self) {
        loop {
            // AcqRel. Acquire: pairs with the Release of the last `put`. Release:
            // heads the release sequence a later get reads from, so the unmap
            // before this free is visible to that get's re-check. Failure
            // Relaxed: the drain reloads.
            if self
                .count
                .compare_exchange(1, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            self.drain();
        }
    }
}

impl Scheme for PteRecheck {
    const NAME: &'static str = "(4) PTE re-check (Linux)";
    type Page = CountPage;
    type Local<'s> = ();

    fn new() -> PteRecheck {
        PteRecheck
    }

    fn new_page(&self) -> CountPage {
        CountPage {
            count: AtomicU64::new(1),
        }
    }

    fn local(&self) {}

    #[inline]
    fn pin<F: PagingFormat, A: TableAccess + ?Sized>(
        &self,
        _: &(),
        walker: &Walker<'_, F, A>,
        va: VirtAddr,
        pages: &[CountPage],
        base: Pfn,
    ) -> Option<usize> {
        let (index, leaf) = lookup(walker, va, base, pages.len())?;
        let page = &pages[index];
        // Relaxed: a guess, validated by the compare-exchange.
        let mut cur = page.count.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return None;
            }
            // Success Acquire: pairs with the Release of `free` and of
            // `reallocate` (this RMW reads from their release sequence), so the
            // unmap sequenced before them is visible to the re-check below.
            // Failure Relaxed: a new guess.
            match page
                .count
                .compare_exchange(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        // The re-check: the leaf entry still holds what the walk read.
        if walker.is_unchanged(&leaf.entry) != Ok(true) {
            page.put();
            return None;
        }
        Some(index)
    }

    #[inline]
    fn unpin(&self, pages: &[CountPage], _: Pfn, index: usize) {
        pages[index].put();
    }

    fn truncate<A: TableAccess + ?Sized, D: FnOnce()>(
        &self,
        access: &A,
        leaves: &[EntryLoc],
        pages: &[CountPage],
        _: Pfn,
        first: usize,
        drained: D,
    ) {
        let set = &pages[first..first + leaves.len()];
        // The cleared entry is the mark.
        unmap(access, leaves);
        set.iter().for_each(CountPage::drain);
        drained();
        set.iter().for_each(CountPage::free);
    }

    fn reallocate(&self, pages: &[CountPage], index: usize) {
        // Release: heads the release sequence a getter's Acquire reads from (see
        // `pin`). Failure Relaxed: a failure is a bug and panics.
        let old = pages[index]
            .count
            .compare_exchange(0, 1, Ordering::Release, Ordering::Relaxed);
        assert_eq!(old, Ok(0), "count: reallocate of a page that is not free");
    }

    fn state(&self, page: &CountPage) -> State {
        // Acquire: a check after the threads joined.
        match page.count.load(Ordering::Acquire) {
            0 => State::Free,
            1 => State::Idle,
            _ => State::Held,
        }
    }
}
