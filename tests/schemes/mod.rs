//! The schemes of the 2018 LKML thread "mm, fs, dax: handle layout changes to
//! pinned dax mappings", and pagepin's, behind one trait, so that one source
//! serves both the loom models (`tests/loom_schemes.rs`, over the toy tables of
//! `loom_common`) and the benchmark (`benches/schemes.rs`, over real x86_64
//! tables in host memory).
//!
//! The race: a GUP-fast walker reads a leaf entry without a lock, then takes a
//! reference on the page it maps; a truncater must stop new references, unmap
//! the page, wait until the references drain, and free it. Each scheme is one
//! way to close the window between the walker's load and its get:
//!
//! | module | scheme | walker after its get | truncater |
//! |---|---|---|---|
//! | [`grace`] | (1) grace period after marking | flag check inside an epoch read section | mark, grace period, unmap, drain, free |
//! | [`grace`] (`AFTER_UNMAP = true`) | (1b) grace period after unmapping | as (1) | mark, unmap, grace period, drain, free |
//! | [`flag_fence`] | (2) separate flag, full fence each side | `fence(SeqCst)`, flag check | mark, `fence(SeqCst)`, unmap, drain, free |
//! | [`flag_fence`] (`FENCED = false`) | (2) broken twin: no fences | flag check | mark, unmap, drain, free |
//! | [`split_ref`] | (3) split refcount (truncations in the upper bits) | — (the get's CAS fails while marked) | RMW mark, unmap, drain, free |
//! | [`pte_recheck`] | (4) Linux mainline: PTE re-check, free = count 0 | leaf entry re-read | unmap, wait for the owner's 1, CAS 1 → 0 |
//! | [`one_word`] (`RECHECK = true`) | (5) pagepin: one-word `PageMeta` + leaf-and-parent re-check | pagepin's GUP-fast | pagepin's `Truncate` typestate |
//! | [`one_word`] (`RECHECK = false`) | (6) pagepin without the re-check | — | as (5) |
//!
//! Every scheme's page starts allocated and idle; `truncate` leaves it free,
//! `reallocate` makes it allocated and idle again. No scheme frees a page-table
//! page: the models and the benchmark change leaf entries only.

// The bench and the loom models each use part of this module.
#![allow(dead_code)]

pub mod flag_fence;
pub mod grace;
pub mod one_word;
pub mod pte_recheck;
pub mod split_ref;

use pagepin::memmap::Pfn;
use pagepin::sync::{AtomicU64, Ordering, spin_wait_hint};
use pagepin::table::{EntryLoc, LeafItem, PagingFormat, TableAccess, VirtAddr, WalkItem, Walker};

/// log2 of the base page size every scheme counts (4 KiB).
pub const PAGE_SHIFT: u32 = 12;

/// What a page's metadata says, for the checks after a model run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Owned by the allocator.
    Free,
    /// Allocated, no reference.
    Idle,
    /// Allocated (or marked) and referenced.
    Held,
}

/// One scheme: the walker's pin and unpin, the truncater's truncate, the
/// allocator's reallocate, over pages of metadata `Self::Page` that the caller
/// owns (`pages[i]` describes PFN `base + i`).
pub trait Scheme: Sync {
    /// The scheme's name in benchmark and test output.
    const NAME: &'static str;
    /// The per-page metadata.
    type Page: Sync;
    /// What one walking thread holds (an epoch reader for scheme (1)).
    type Local<'s>
    where
        Self: 's;

    /// The scheme's shared state (wait table, epoch).
    fn new() -> Self
    where
        Self: Sized;

    /// A page, allocated and idle.
    fn new_page(&self) -> Self::Page;

    /// The state one walking thread keeps across its pins.
    fn local(&self) -> Self::Local<'_>;

    /// The walker: translates `va` through `walker` (one atomic load of the
    /// leaf entry, after the table entries above it) and takes a reference on
    /// the page it maps. `Some(index into pages)` on success (a reference is
    /// held); `None` if nothing is mapped or the reference was refused.
    fn pin<F: PagingFormat, A: TableAccess + ?Sized>(
        &self,
        local: &Self::Local<'_>,
        walker: &Walker<'_, F, A>,
        va: VirtAddr,
        pages: &[Self::Page],
        base: Pfn,
    ) -> Option<usize>;

    /// Drops the reference a successful [`pin`](Self::pin) of `pages[index]` took.
    fn unpin(&self, pages: &[Self::Page], base: Pfn, index: usize);

    /// The truncater, for pages `first .. first + leaves.len()`, `leaves[k]`
    /// being the one leaf entry that maps page `first + k`: makes them
    /// unreachable for new references, unmaps them (clears the leaves), waits
    /// until no reference remains, calls `drained`, and frees them. A batch
    /// pays each scheme's per-call cost (a grace period, a fence) once.
    fn truncate<A: TableAccess + ?Sized, D: FnOnce()>(
        &self,
        access: &A,
        leaves: &[EntryLoc],
        pages: &[Self::Page],
        base: Pfn,
        first: usize,
        drained: D,
    );

    /// The allocator: a freed `pages[index]` becomes allocated and idle.
    fn reallocate(&self, pages: &[Self::Page], index: usize);

    /// What `page`'s metadata says now.
    fn state(&self, page: &Self::Page) -> State;
}

/// The leaf that maps `va` and the index of its page in a slice of `len` pages
/// from `base`; `None` if `va` is not mapped to such a page. One `translate`:
/// an Acquire load of each table-pointing entry, then one load of the leaf.
#[inline(always)]
pub fn lookup<F: PagingFormat, A: TableAccess + ?Sized>(
    walker: &Walker<'_, F, A>,
    va: VirtAddr,
    base: Pfn,
    len: usize,
) -> Option<(usize, LeafItem)> {
    match walker.translate(va) {
        Ok(WalkItem::Leaf(leaf)) => {
            let pfn = leaf.pa.0 >> PAGE_SHIFT;
            let index = usize::try_from(pfn.checked_sub(base.0)?).ok()?;
            (index < len).then_some((index, leaf))
        }
        _ => None,
    }
}

/// The truncater's unmap: clears every leaf of `leaves`.
pub fn unmap<A: TableAccess + ?Sized>(access: &A, leaves: &[EntryLoc]) {
    for loc in leaves {
        // Release: as a kernel's page-table writer stores entries. No scheme
        // relies on it: each orders the clear before its free by program order
        // and its own Release RMW (or fence) after it.
        // SAFETY: the schemes' tables have no builder: the scheme owns them and clears its own leaves, as a kernel's page-table writer would.
        unsafe { access.entry(loc.table, loc.index) }
            .expect("the scheme's leaf is reachable")
            .store(0, Ordering::Release);
    }
}

/// Maps `loc` to the leaf value `raw` again (after a reallocate).
pub fn remap<A: TableAccess + ?Sized>(access: &A, loc: EntryLoc, raw: u64) {
    // Release: publishes the page's new life (its reallocation, sequenced
    // before) to a walker that reads the entry and then gets the page.
    // SAFETY: the schemes' tables have no builder: the scheme owns them and maps its own leaf again, as a kernel's page-table writer would.
    unsafe { access.entry(loc.table, loc.index) }
        .expect("the scheme's leaf is reachable")
        .store(raw, Ordering::Release);
}

/// The PFN of `pages[index]`.
#[inline(always)]
pub fn pfn_of(base: Pfn, index: usize) -> Pfn {
    Pfn(base.0 + index as u64)
}

/// The page of schemes (1) and (2): a state word (allocated, truncating, free)
/// and a reference count in *another* word. The two words are why these schemes
/// need something between "take a reference" and "check the flag": a grace
/// period (1) or a fence on each side (2).
pub struct FlagPage {
    /// [`ALLOCATED`], [`TRUNCATING`] or [`FREE`].
    pub state: AtomicU64,
    /// References, including a refused walker's transient one.
    pub refs: AtomicU64,
}

/// [`FlagPage::state`]: allocated, references may be taken.
pub const ALLOCATED: u64 = 0;
/// [`FlagPage::state`]: marked by a truncate, no new reference.
pub const TRUNCATING: u64 = 1;
/// [`FlagPage::state`]: owned by the allocator.
pub const FREE: u64 = 2;

impl FlagPage {
    /// An allocated, idle page.
    pub fn new() -> FlagPage {
        FlagPage {
            state: AtomicU64::new(ALLOCATED),
            refs: AtomicU64::new(0),
        }
    }

    /// The walker's get: one increment of the count, checked against the flag
    /// only after the caller's ordering step (grace period or fence).
    #[inline(always)]
    pub fn get(&self) {
        // Relaxed: the increment's only job is to be seen by a drain that comes
        // after the truncate's mark; each scheme orders that itself (the read
        // section's end in (1), the fence pair in (2)).
        self.refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a walker that took its get may keep it.
    #[inline(always)]
    pub fn allocated(&self) -> bool {
        // Acquire: pairs with the Release compare-exchange of `reallocate`, so
        // the new holder sees what the allocator wrote before handing the page
        // out (the page's new generation).
        self.state.load(Ordering::Acquire) == ALLOCATED
    }

    /// Drops a reference (an unpin, or a refused walker's undo).
    #[inline(always)]
    pub fn put(&self) {
        // Release: pairs with the Acquire load of `drain`, so everything the
        // holder did to the page happens before the truncater frees it.
        self.refs.fetch_sub(1, Ordering::Release);
    }

    /// Marks the page truncating (one truncater owns the page).
    pub fn mark(&self) {
        self.transition(ALLOCATED, TRUNCATING, Ordering::Relaxed);
    }

    /// Waits until no reference is held.
    pub fn drain(&self) {
        // Acquire: pairs with the Release of `put` (see there).
        while self.refs.load(Ordering::Acquire) != 0 {
            spin_wait_hint();
        }
    }

    /// Frees a drained page.
    pub fn free(&self) {
        self.transition(TRUNCATING, FREE, Ordering::Release);
    }

    /// Allocates a freed page.
    pub fn reallocate(&self) {
        self.transition(FREE, ALLOCATED, Ordering::Release);
    }

    /// A state transition: a compare-exchange from the exact expected state,
    /// never a store (loom issue 254; DESIGN.md "allocator transitions are CAS").
    fn transition(&self, from: u64, to: u64, success: Ordering) {
        // `success`, from the caller: Relaxed for the mark (the scheme's grace
        // period or fence orders it), Release for free and reallocate (pairs
        // with the walker's Acquire load in `allocated`). Failure Relaxed: a
        // failure is a bug of the caller and panics.
        let old = self
            .state
            .compare_exchange(from, to, success, Ordering::Relaxed);
        assert_eq!(
            old,
            Ok(from),
            "flag page: {from} -> {to} from the wrong state"
        );
    }

    /// What the words say.
    pub fn state(&self) -> State {
        // Acquire, both: a check after the model's threads have joined; the
        // join already orders everything.
        match self.state.load(Ordering::Acquire) {
            FREE => State::Free,
            _ if self.refs.load(Ordering::Acquire) == 0 => State::Idle,
            _ => State::Held,
        }
    }
}

impl Default for FlagPage {
    fn default() -> FlagPage {
        FlagPage::new()
    }
}
