//! Scheme (2): a truncate-in-progress flag re-checked after the get, with a
//! full fence on each side; and its broken twin without the fences.
//!
//! Flag and count are different words. The walker writes the count and reads
//! the flag; the truncater writes the flag and reads the count: store
//! buffering. With `fence(SeqCst)` between each side's write and read, at least
//! one sees the other's write: the walker sees the mark and backs off, or the
//! drain sees the reference and waits. Without the fences both can miss.
//!
//! The twin (`FENCED = false`) keeps every ordering of the correct scheme and
//! drops only the two fences (not "SeqCst without fence": loom models SeqCst
//! loads and stores as AcqRel, so such a twin would fail in loom while being
//! correct in C++; DESIGN.md invariant 7).
//!
//! There is no page-table re-check: once the page is freed and reallocated its
//! flag says "allocated" again, and a walker holding the old leaf value pins
//! the new allocation (the ABA model).

use pagepin::memmap::Pfn;
use pagepin::sync::{Ordering, fence};
use pagepin::table::{EntryLoc, PagingFormat, TableAccess, VirtAddr, Walker};

use super::{FlagPage, Scheme, State, lookup, unmap};

/// Scheme (2) with the fences (`FENCED = true`) or its broken twin.
pub struct FlagFence<const FENCED: bool>;

impl<const FENCED: bool> Scheme for FlagFence<FENCED> {
    const NAME: &'static str = if FENCED {
        "(2) flag + fence each side"
    } else {
        "(2-broken) flag, no fences"
    };
    type Page = FlagPage;
    type Local<'s> = ();

    fn new() -> Self {
        FlagFence
    }

    fn new_page(&self) -> FlagPage {
        FlagPage::new()
    }

    fn local(&self) {}

    #[inline]
    fn pin<F: PagingFormat, A: TableAccess + ?Sized>(
        &self,
        _: &(),
        walker: &Walker<'_, F, A>,
        va: VirtAddr,
        pages: &[FlagPage],
        base: Pfn,
    ) -> Option<usize> {
        let (index, _) = lookup(walker, va, base, pages.len())?;
        let page = &pages[index];
        page.get();
        if FENCED {
            // SeqCst fence: the walker's side of the store-buffering pair with
            // the fence after the truncater's mark. The count's increment comes
            // before the flag's load: if this load misses the mark, the
            // truncater's drain (after its fence) sees the increment.
            fence(Ordering::SeqCst);
        }
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
        if FENCED {
            // SeqCst fence: the truncater's side of the pair with the walker's
            // fence: the marks come before the drain's loads of the counts. One
            // fence per call, however many pages.
            fence(Ordering::SeqCst);
        }
        unmap(access, leaves);
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
