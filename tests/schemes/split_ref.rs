//! Scheme (3): a split reference count. The low bits count references, the
//! upper bits count truncations in progress (and the top bit says "free").
//! The truncater marks with an RMW on the same word; the walker's get is a
//! compare-exchange loop that fails while any upper bit is set. Mark and get
//! are RMWs on one location, so they are totally ordered with no fence: either
//! the get comes first and the drain sees it, or the mark comes first and the
//! get fails. `put` is a plain decrement of the low bits, and "idle" masks the
//! upper ones.
//!
//! There is no page-table re-check: once the page is freed and reallocated its
//! upper bits are clear again, and a walker holding the old leaf value pins the
//! new allocation (the ABA model).

use pagepin::memmap::Pfn;
use pagepin::sync::{AtomicU64, Ordering, spin_wait_hint};
use pagepin::table::{EntryLoc, PagingFormat, TableAccess, VirtAddr, Walker};

use super::{Scheme, State, lookup, unmap};

/// Bits 0-31: references.
const REFS: u64 = (1 << 32) - 1;
/// Bits 32-62: truncations in progress, one unit each.
const TRUNCATION: u64 = 1 << 32;
/// Bit 63: owned by the allocator.
const FREE: u64 = 1 << 63;

/// Scheme (3).
pub struct SplitRef;

/// One page's split count.
pub struct SplitPage {
    word: AtomicU64,
}

impl SplitPage {
    fn drain(&self) {
        // Acquire: pairs with the Release of `unpin`, so the holders' accesses
        // happen before the free. Masks the truncation bits.
        while self.word.load(Ordering::Acquire) & REFS != 0 {
            spin_wait_hint();
        }
    }

    fn free(&self) {
        // Relaxed: a guess, validated by the compare-exchange.
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            assert!(
                cur & REFS == 0 && cur & !REFS != 0,
                "split: free of a busy or unmarked page"
            );
            // Release: heads the word's history after the free (the reallocate is
            // an RMW, so a later get's Acquire still reads from a release
            // sequence). Failure Relaxed: a new guess.
            match self
                .word
                .compare_exchange(cur, FREE, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}

impl Scheme for SplitRef {
    const NAME: &'static str = "(3) split refcount";
    type Page = SplitPage;
    type Local<'s> = ();

    fn new() -> SplitRef {
        SplitRef
    }

    fn new_page(&self) -> SplitPage {
        SplitPage {
            word: AtomicU64::new(0),
        }
    }

    fn local(&self) {}

    #[inline]
    fn pin<F: PagingFormat, A: TableAccess + ?Sized>(
        &self,
        _: &(),
        walker: &Walker<'_, F, A>,
        va: VirtAddr,
        pages: &[SplitPage],
        base: Pfn,
    ) -> Option<usize> {
        let (index, _) = lookup(walker, va, base, pages.len())?;
        let word = &pages[index].word;
        // Relaxed: a guess, validated by the compare-exchange.
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            if cur & !REFS != 0 {
                return None;
            }
            // Success Acquire: pairs with the Release of `reallocate`, so the new
            // holder sees what the allocator wrote before handing the page out.
            // Failure Relaxed: a new guess.
            match word.compare_exchange(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(index),
                Err(actual) => cur = actual,
            }
        }
    }

    #[inline]
    fn unpin(&self, pages: &[SplitPage], _: Pfn, index: usize) {
        // Release: pairs with the Acquire of the drain. Decrements the low bits
        // only; whether this was the last reference is `new & REFS == 0`, the
        // truncation bits masked (nobody waits to be woken here: drains poll).
        pages[index].word.fetch_sub(1, Ordering::Release);
    }

    fn truncate<A: TableAccess + ?Sized, D: FnOnce()>(
        &self,
        access: &A,
        leaves: &[EntryLoc],
        pages: &[SplitPage],
        _: Pfn,
        first: usize,
        drained: D,
    ) {
        let set = &pages[first..first + leaves.len()];
        for page in set {
            // Relaxed: the mark's only job is its place in this word's
            // modification order relative to each get (see the module docs).
            page.word.fetch_add(TRUNCATION, Ordering::Relaxed);
        }
        unmap(access, leaves);
        set.iter().for_each(SplitPage::drain);
        drained();
        set.iter().for_each(SplitPage::free);
    }

    fn reallocate(&self, pages: &[SplitPage], index: usize) {
        // Release: pairs with the Acquire of a later get (see `pin`). Failure
        // Relaxed: a failure is a bug and panics.
        let old = pages[index]
            .word
            .compare_exchange(FREE, 0, Ordering::Release, Ordering::Relaxed);
        assert_eq!(
            old,
            Ok(FREE),
            "split: reallocate of a page that is not free"
        );
    }

    fn state(&self, page: &SplitPage) -> State {
        // Acquire: a check after the threads joined.
        match page.word.load(Ordering::Acquire) {
            FREE => State::Free,
            w if w & REFS == 0 => State::Idle,
            _ => State::Held,
        }
    }
}
