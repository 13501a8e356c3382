//! The walker: translate one address, or visit every leaf and hole of a range.
//!
//! Walks are lockless and may run concurrently with one writer (the builder, or
//! a kernel's own page-table code). Each entry is read with one atomic load;
//! entries at levels that may point to a table are loaded with Acquire, pairing
//! with the Release store that publishes a zero-filled (or filled) table, so the
//! walker never reads a table's entries before they were initialised. The
//! walker does not rely on address dependencies for this.
//!
//! A walk never loops forever and never indexes past a table: each step goes
//! one level down, a table entry at the last level stops the walk with an error
//! (so cyclic tables terminate), every index is masked to the level's entry
//! count (the start level may have fewer entries than the others), and each item
//! moves the cursor strictly forward.
//!
//! Keeping the tables alive while a walk reads them is the caller's business
//! (the walk guard: an epoch or RCU read section with deferred table freeing);
//! over `HostMemory` (the `host` feature) every read is of valid memory anyway.

use core::marker::PhantomData;

use super::access::TableAccess;
use super::addr::{PhysAddr, VaRange, VirtAddr};
use super::entry::{Entry, EntryLoc, EntrySnapshot, MemType, Perms};
use super::error::{AccessError, RangeError, WalkError, WalkErrorKind};
use super::format::{MAX_LEVELS, PagingFormat};
use crate::guard::Promised;
use crate::sync::{AtomicU64, Ordering};

/// Loads the entry at `loc` with the ordering its level needs.
///
/// # Errors
///
/// [`AccessError::Unreachable`] when `loc.level` is not a level of `F` or
/// `loc.index` is not below the level's entry count, and whatever `access`
/// reports for the table address.
#[inline]
pub(crate) fn load_entry<F: PagingFormat, A: TableAccess + ?Sized>(
    access: &A,
    loc: EntryLoc,
) -> Result<u64, AccessError> {
    let entries = F::GEOMETRY.entries(loc.level).unwrap_or(0);
    if loc.index >= entries {
        return Err(AccessError::Unreachable {
            table: loc.table,
            index: loc.index,
        });
    }
    // SAFETY: the word is only loaded, below.
    let word = unsafe { access.entry(loc.table, loc.index) }?;
    if F::GEOMETRY.holds_tables(loc.level) {
        // Acquire: the entry may point to a table. Pairs with the Release store
        // that published that table (`TableBuilder`'s table install, or the
        // kernel's equivalent), so the table's zero-fill and contents are visible
        // before the walker reads its entries.
        Ok(access.load(word, Ordering::Acquire))
    } else {
        // Relaxed: this level holds only leaves, so no table is read through the
        // value. Whatever the caller then does with the page is ordered by the
        // page's metadata (GUP-fast's Acquire get), not by this load.
        Ok(access.load(word, Ordering::Relaxed))
    }
}

/// Decodes the raw entry `raw` found at `loc` while walking `va`, and checks
/// the format's contract on it: a leaf only at a level that holds leaves, a
/// table pointer only at a level that holds tables. A leaf's permissions are
/// limited by `grants`, the grants of the table entries above it
/// ([`PagingFormat::limit_leaf`]). The one
/// place where a walk, the builder and GUP-fast turn a raw entry into an
/// [`Entry`].
///
/// # Errors
///
/// [`WalkErrorKind::Decode`] for an entry the format refuses,
/// [`WalkErrorKind::FormatContract`] for a leaf or table pointer at a level
/// that cannot hold one.
#[inline(always)]
pub(crate) fn decode_checked<F: PagingFormat>(
    raw: u64,
    loc: EntryLoc,
    va: VirtAddr,
    grants: Perms,
) -> Result<Entry, WalkError> {
    let fail = |kind| WalkError { va, kind };
    match F::decode(raw, loc.level) {
        Ok(Entry::Absent) => Ok(Entry::Absent),
        Ok(Entry::Leaf(mut leaf)) if F::GEOMETRY.holds_leaves(loc.level) => {
            leaf.perms = F::limit_leaf(raw, leaf.perms, grants);
            Ok(Entry::Leaf(leaf))
        }
        Ok(Entry::Table(next)) if F::GEOMETRY.holds_tables(loc.level) => Ok(Entry::Table(next)),
        Ok(Entry::Leaf(_) | Entry::Table(_)) => {
            Err(fail(WalkErrorKind::FormatContract { loc, raw }))
        }
        Err(error) => Err(fail(WalkErrorKind::Decode { loc, raw, error })),
    }
}

/// The word of the entry at `loc`, which must be at a level that holds no
/// tables (the last level), for a caller that loads it more than once (GUP-fast's
/// runs: the walk's load, then the re-check). Load it with [`load_leaf_word`].
///
/// # Errors
///
/// As [`load_entry`]; also [`AccessError::Unreachable`] when `loc.level` may
/// hold table pointers (those must be loaded with Acquire, by `load_entry`).
#[inline]
pub(crate) fn leaf_word<F: PagingFormat, A: TableAccess + ?Sized>(
    access: &A,
    loc: EntryLoc,
) -> Result<&AtomicU64, AccessError> {
    let entries = F::GEOMETRY.entries(loc.level).unwrap_or(0);
    if loc.index >= entries || F::GEOMETRY.holds_tables(loc.level) {
        return Err(AccessError::Unreachable {
            table: loc.table,
            index: loc.index,
        });
    }
    // SAFETY: the word goes only to `load_leaf_word` (crate-internal), which
    // loads it.
    unsafe { access.entry(loc.table, loc.index) }
}

/// Loads a word [`leaf_word`] returned: one atomic load, through `access`.
#[inline]
pub(crate) fn load_leaf_word<A: TableAccess + ?Sized>(access: &A, word: &AtomicU64) -> u64 {
    // Relaxed: as in `load_entry` at a leaf-only level, no table is read
    // through the value; the page is ordered by GUP-fast's Acquire get.
    access.load(word, Ordering::Relaxed)
}

/// Checks that `range` is canonical for `F` as a whole.
///
/// # Errors
///
/// [`RangeError::NonCanonical`] when an end is not canonical or the range leaves
/// the `2^va_bits` window its start is in (for x86_64: spans the hole between the
/// canonical halves).
pub(crate) fn check_canonical<F: PagingFormat>(range: VaRange) -> Result<(), RangeError> {
    let (start, last) = (range.start(), range.last());
    if !F::is_canonical(start) {
        return Err(RangeError::NonCanonical { va: start });
    }
    // `va_bits < 64` (`Geometry::new` asserts it): the shifts are in range.
    let window = F::GEOMETRY.va_bits();
    if start.0 >> window != last.0 >> window {
        // `start <= last` in different windows: `start`'s window is not the
        // last one, so its last address is below `u64::MAX` and `+ 1` is exact.
        let past_window = (start.0 | ((1 << window) - 1)) + 1;
        return Err(RangeError::NonCanonical {
            va: VirtAddr(past_window),
        });
    }
    if !F::is_canonical(last) {
        return Err(RangeError::NonCanonical { va: last });
    }
    Ok(())
}

/// Walks the tables of one address space (one root) of format `F`, reading them
/// through `A`.
///
/// `D` is the tables' [domain](crate::guard#domains-the-guard-and-the-retire-hook-agree-by-type):
/// the walk guards under which GUP-fast may walk them. A
/// [`TableBuilder`](super::TableBuilder) hands out walkers of its retire hook's
/// domain; [`Walker::new`] over a bare root gives [`Promised`].
pub struct Walker<'a, F, A: ?Sized, D = Promised> {
    access: &'a A,
    root: PhysAddr,
    format: PhantomData<fn() -> (F, D)>,
}

impl<F, A: ?Sized, D> Clone for Walker<'_, F, A, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F, A: ?Sized, D> Copy for Walker<'_, F, A, D> {}

impl<F, A: ?Sized, D> core::fmt::Debug for Walker<'_, F, A, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Walker").field("root", &self.root).finish()
    }
}

/// A leaf the walk found, restricted to the part of it inside the walked range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeafItem {
    /// The part of the leaf inside the range asked for.
    pub va: VaRange,
    /// The physical address `va.start()` maps to.
    pub pa: PhysAddr,
    /// The first virtual address of the whole leaf.
    pub leaf_va: VirtAddr,
    /// The first physical address of the whole leaf.
    pub leaf_pa: PhysAddr,
    /// The level of the leaf entry.
    pub level: usize,
    /// The size of the whole leaf in bytes.
    pub size: u64,
    /// The effective permissions: the leaf's, with its grants restricted by
    /// every table entry above it.
    pub perms: Perms,
    /// The leaf's memory type.
    pub mem_type: MemType,
    /// The leaf entry, as read.
    pub entry: EntrySnapshot,
    /// The table entry that pointed to the leaf's table, as read; `None` for a
    /// leaf in the root table.
    pub parent: Option<EntrySnapshot>,
}

/// A hole: an absent entry, and the part of its span inside the walked range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HoleItem {
    /// The part of the absent entry's span inside the range asked for.
    pub va: VaRange,
    /// The level of the absent entry.
    pub level: usize,
    /// The absent entry, as read (it may carry software bits).
    pub entry: EntrySnapshot,
    /// The table entry that pointed to the hole's table, as read; `None` for
    /// the root table.
    pub parent: Option<EntrySnapshot>,
}

/// One step of a walk: a leaf or a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalkItem {
    /// A mapped leaf.
    Leaf(LeafItem),
    /// Nothing is mapped here.
    Hole(HoleItem),
}

impl WalkItem {
    /// The virtual range the item covers (inside the range asked for).
    #[inline]
    pub fn va(&self) -> VaRange {
        match self {
            WalkItem::Leaf(leaf) => leaf.va,
            WalkItem::Hole(hole) => hole.va,
        }
    }

    /// The leaf, if the item is one.
    #[inline]
    pub fn leaf(&self) -> Option<&LeafItem> {
        match self {
            WalkItem::Leaf(leaf) => Some(leaf),
            WalkItem::Hole(_) => None,
        }
    }
}

impl<'a, F: PagingFormat, A: TableAccess + ?Sized> Walker<'a, F, A, Promised> {
    /// A walker of the tables rooted at `root`, of domain [`Promised`]: GUP-fast
    /// walks it under a guard whose constructor took the `unsafe` promise
    /// ([`TablesNeverFreed`](crate::guard::TablesNeverFreed)). For the walkers
    /// an epoch guards, take them from the [`TableBuilder`](super::TableBuilder)
    /// or see [`new_in`](Walker::new_in).
    #[inline]
    pub fn new(access: &'a A, root: PhysAddr) -> Walker<'a, F, A, Promised> {
        Walker {
            access,
            root,
            format: PhantomData,
        }
    }
}

impl<'a, F: PagingFormat, A: TableAccess + ?Sized, D> Walker<'a, F, A, D> {
    /// A walker of the tables rooted at `root`, of domain `D`, for a kernel that
    /// keeps roots apart from their builders.
    ///
    /// # Safety
    ///
    /// Every page-table page reachable from `root` while walks of this walker
    /// run is retired (detached and given back for reuse) only through a
    /// [`Retire`](super::Retire) hook of domain `D`, or never: GUP-fast over
    /// this walker trusts a guard of domain `D` to hold them back.
    #[inline]
    pub unsafe fn new_in(access: &'a A, root: PhysAddr) -> Walker<'a, F, A, D> {
        Walker {
            access,
            root,
            format: PhantomData,
        }
    }

    /// The same walker without its domain, for a [`Walk`]: the domain matters
    /// only where a guard is chosen, which a `Walk` never does.
    #[inline]
    fn without_domain(self) -> Walker<'a, F, A, Promised> {
        Walker::new(self.access, self.root)
    }

    /// The root table.
    #[inline]
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Translates one address: a [`WalkItem::Leaf`] whose `pa` is the
    /// translation of `va` (and whose `va` is the one byte at `va`), or a
    /// [`WalkItem::Hole`] naming the level of the absent entry.
    ///
    /// # Errors
    ///
    /// [`WalkError`] for a non-canonical address, an unreachable table, or an
    /// entry that does not decode.
    pub fn translate(&self, va: VirtAddr) -> Result<WalkItem, WalkError> {
        let range = VaRange::spanning(va, va);
        if check_canonical::<F>(range).is_err() {
            return Err(WalkError {
                va,
                kind: WalkErrorKind::NonCanonical,
            });
        }
        Walk::new(self.without_domain(), range).step()
    }

    /// Walks `len` bytes from `start`: yields every leaf and every hole in
    /// address order, each exactly once, a huge leaf as one item. Items tile
    /// the range: each starts where the previous one ended.
    ///
    /// The iterator yields `Err` once and then ends if a table cannot be read or
    /// an entry does not decode.
    ///
    /// ```
    /// use pagepin::arch::x86_64::Paging4Level;
    /// use pagepin::table::*;
    ///
    /// let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
    /// let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    /// let mut pool_frames: Vec<PhysAddr> = memory.frame_pas().collect();
    /// // SAFETY: the pool's frames are this example's own, in no other pool.
    /// let pool = unsafe { FramePool::new(&mut pool_frames) };
    /// // SAFETY: no walker or MMU reads these tables while the builder unmaps.
    /// let mut tables = TableBuilder::<Paging4Level, _, _>::new(&memory, pool, unsafe { ReclaimNow::new() }).unwrap();
    /// // SAFETY: the example's own pages, never freed while mapped.
    /// unsafe {
    ///     tables
    ///         .map(&MapRequest::new(VirtAddr(0x20_0000), PhysAddr(0x4000_0000), 0x20_0000, 0x20_0000))
    /// }
    /// .unwrap();
    /// let walker = tables.walker();
    /// let items: Vec<_> = walker
    ///     .walk(VirtAddr(0x1f_f000), 0x20_2000)
    ///     .unwrap()
    ///     .collect::<Result<_, _>>()
    ///     .unwrap();
    /// assert!(matches!(items[0], WalkItem::Hole(_)));
    /// assert_eq!(items[1].leaf().unwrap().size, 0x20_0000);
    /// assert!(matches!(items[2], WalkItem::Hole(_)));
    /// ```
    ///
    /// # Errors
    ///
    /// [`RangeError`] for an empty, wrapping or non-canonical range.
    pub fn walk(&self, start: VirtAddr, len: u64) -> Result<Walk<'a, F, A>, RangeError> {
        self.walk_range(VaRange::new(start, len)?)
    }

    /// [`walk`](Self::walk) over a [`VaRange`].
    ///
    /// # Errors
    ///
    /// [`RangeError::NonCanonical`] for a range that is not canonical as a whole.
    pub fn walk_range(&self, range: VaRange) -> Result<Walk<'a, F, A>, RangeError> {
        check_canonical::<F>(range)?;
        Ok(Walk::new(self.without_domain(), range))
    }

    /// Re-reads the entry at `loc` with one atomic load (Acquire at levels that
    /// may hold a table pointer, Relaxed at leaf-only levels, as the walk does).
    ///
    /// # Errors
    ///
    /// [`AccessError`] if the location is not reachable (or not an entry of the
    /// format: `loc.index` past the level's entry count).
    #[inline]
    pub fn reload(&self, loc: EntryLoc) -> Result<u64, AccessError> {
        load_entry::<F, A>(self.access, loc)
    }

    /// The word of a leaf-only entry (see [`leaf_word`]).
    #[inline]
    pub(crate) fn leaf_word(&self, loc: EntryLoc) -> Result<&'a AtomicU64, AccessError> {
        leaf_word::<F, A>(self.access, loc)
    }

    /// The words of `n` consecutive entries from `loc` on, at a level that holds
    /// no tables, if the table access holds them consecutively
    /// ([`TableAccess::entries`]); `None` also for a level that may hold table
    /// pointers or a range past the table's last entry. Load them with
    /// [`load_leaf`](Self::load_leaf).
    #[inline]
    pub(crate) fn leaf_words(&self, loc: EntryLoc, n: usize) -> Option<&'a [AtomicU64]> {
        let entries = F::GEOMETRY.entries(loc.level).unwrap_or(0);
        if loc.index.checked_add(n)? > entries || F::GEOMETRY.holds_tables(loc.level) {
            return None;
        }
        // SAFETY: the words go only to `load_leaf` (GUP-fast's batch, crate
        // internal), which loads them.
        unsafe { self.access.entries(loc.table, loc.index, n) }
    }

    /// Loads a word [`leaf_word`](Self::leaf_word) returned (see
    /// [`load_leaf_word`]).
    #[inline]
    pub(crate) fn load_leaf(&self, word: &AtomicU64) -> u64 {
        load_leaf_word(self.access, word)
    }

    /// Whether the entry still holds exactly the value it had when `snapshot`
    /// was taken: GUP-fast's re-check after taking its page reference.
    ///
    /// # Errors
    ///
    /// As [`reload`](Self::reload).
    #[inline]
    pub fn is_unchanged(&self, snapshot: &EntrySnapshot) -> Result<bool, AccessError> {
        Ok(self.reload(snapshot.loc)? == snapshot.raw)
    }
}

/// A run of whole entries of one leaf-level table (a table whose entries are
/// never table pointers), from the walk's cursor on, all inside the walked
/// range: what [`Walk::next_step`] hands GUP-fast so that it can load and take
/// consecutive leaves of one table in a tight loop. The walk has loaded every
/// table-pointing entry above it; none of the run's own entries is loaded yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeafRun {
    /// The table.
    pub(crate) table: PhysAddr,
    /// Its level (one that holds no tables).
    pub(crate) level: usize,
    /// The index of the entry at the cursor.
    pub(crate) index: usize,
    /// Whole entries from `index` on inside the table and the range (at least 1).
    pub(crate) count: usize,
    /// The cursor: the first virtual address of entry `index`.
    pub(crate) va: u64,
    /// log2 of the span of one entry.
    pub(crate) shift: u32,
    /// The grants left by the table entries above.
    pub(crate) grants: Perms,
    /// The entry that pointed to the table, as the walk read it (`None` for the
    /// root).
    pub(crate) parent: Option<EntrySnapshot>,
}

/// One step of [`Walk::next_step`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// An item, as the iterator yields it; the cursor moved past it.
    Item(WalkItem),
    /// A run of leaf-level entries at the cursor; the cursor did not move.
    Run(LeafRun),
}

/// One table on the current path of a [`Walk`].
#[derive(Debug, Clone, Copy)]
struct PathStep {
    table: PhysAddr,
    /// The entry that pointed here (`None` for the root).
    via: Option<EntrySnapshot>,
    /// The grants left by the table entries above.
    grants: Perms,
    /// The virtual addresses this table translates (a whole entry span of the
    /// level above; everything for the root).
    first: u64,
    last: u64,
}

/// The iterator of [`Walker::walk`]: `Ok` items in address order, or one `Err`
/// and then the end.
///
/// It remembers the tables on its current path, so consecutive leaves of one
/// table cost one entry load each; the table-pointing entries are read once per
/// table, and their values are in each item's `parent` for re-checking.
pub struct Walk<'a, F, A: ?Sized> {
    walker: Walker<'a, F, A>,
    cursor: u64,
    last: u64,
    finished: bool,
    /// Entries `0..path_len` of `path` are valid.
    path_len: usize,
    path: [PathStep; MAX_LEVELS],
}

impl<F, A: ?Sized> core::fmt::Debug for Walk<'_, F, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Walk")
            .field("root", &self.walker.root)
            .field("cursor", &VirtAddr(self.cursor))
            .field("last", &VirtAddr(self.last))
            .field("finished", &self.finished)
            .finish()
    }
}

impl<'a, F: PagingFormat, A: TableAccess + ?Sized> Walk<'a, F, A> {
    fn new(walker: Walker<'a, F, A>, range: VaRange) -> Walk<'a, F, A> {
        let root = PathStep {
            table: walker.root,
            via: None,
            grants: Perms::GRANTS,
            first: 0,
            last: u64::MAX,
        };
        Walk {
            walker,
            cursor: range.start().0,
            last: range.last().0,
            finished: false,
            path_len: 1,
            path: [root; MAX_LEVELS],
        }
    }

    /// The item at the cursor; moves the cursor past it.
    fn step(&mut self) -> Result<WalkItem, WalkError> {
        match self.step_or_run(false)? {
            Step::Item(item) => Ok(item),
            // Unreachable: without `runs`, `step_or_run` returns items only. Kept
            // as an error rather than a panic (a walk never panics).
            Step::Run(run) => Err(WalkError {
                va: VirtAddr(run.va),
                kind: WalkErrorKind::FormatContract {
                    loc: EntryLoc {
                        table: run.table,
                        index: run.index,
                        level: run.level,
                    },
                    raw: 0,
                },
            }),
        }
    }

    /// The next step of the walk: as [`Iterator::next`], but with `runs`, a
    /// cursor that reaches a table holding only leaves (the last level) at an
    /// entry boundary, with at least one whole entry left in the range, yields
    /// [`Step::Run`] instead of loading that entry: the caller loads the run's
    /// entries itself (one load each) and moves the cursor with
    /// [`advance`](Self::advance).
    #[inline]
    pub(crate) fn next_step(&mut self, runs: bool) -> Option<Result<Step, WalkError>> {
        if self.finished {
            return None;
        }
        let step = self.step_or_run(runs);
        if step.is_err() {
            self.finished = true;
        }
        Some(step)
    }

    /// Moves the cursor past the first `entries` entries of `run` (the last run
    /// [`next_step`](Self::next_step) returned; `entries <= run.count`).
    #[inline]
    pub(crate) fn advance(&mut self, run: &LeafRun, entries: usize) {
        debug_assert!(entries <= run.count && run.va == self.cursor);
        let entries = entries.min(run.count) as u64;
        if entries == 0 {
            return;
        }
        // The last byte the entries cover, computed as `va + (span - 1)`, never
        // as `va + span - 1`: a run that ends at the top of the address space
        // (x86_64's last page, 0xffff_ffff_ffff_f000) has `va + span == 2^64`.
        // No step overflows:
        // - `entries << shift`: `entries <= run.count <= in_table`, the entries
        //   from `run.index` to the end of one table, so the product is at most
        //   a whole table's span, `2^(index_bits + shift) <= 2^va_bits`, and
        //   `va_bits < 64` (`Geometry::new` asserts it); it is at least
        //   `1 << shift >= 1`, so the `- 1` does not wrap either.
        // - `va + (span - 1)`: `entries <= run.count <= in_range`, the whole
        //   entries from `va` to `last`, so `span - 1 <= last - va`, and the sum
        //   is at most `last`.
        let span = entries << run.shift;
        let covered_last = run.va + (span - 1);
        if covered_last >= self.last {
            self.finished = true;
        } else {
            // `covered_last < last <= u64::MAX`: the successor exists.
            self.cursor = covered_last + 1;
        }
    }

    /// One step: an item (moving the cursor past it), or, with `runs`, a run
    /// of leaf-level entries at the cursor (not moving it).
    fn step_or_run(&mut self, runs: bool) -> Result<Step, WalkError> {
        let geometry = F::GEOMETRY;
        let va = self.cursor;
        // Resume in the deepest remembered table that still covers the cursor.
        // `path_len >= 1`: the root is always on the path.
        let mut level = self.path_len - 1;
        while level > 0 && !(self.path[level].first <= va && va <= self.path[level].last) {
            level -= 1;
        }
        loop {
            let step = self.path[level];
            if runs && !geometry.holds_tables(level) {
                let shift = geometry.shift_at(level);
                let index = geometry.index(VirtAddr(va), level);
                // `index < entries(level)`: `Geometry::index` masks to the
                // level's entry count, and `level` exists (it is on the path).
                let in_table = geometry.entries(level).unwrap_or(0).saturating_sub(index);
                // Whole entries from the cursor to the end of the range. The
                // walk keeps `va <= last` while it is not finished, so the
                // subtraction does not wrap; the `+ 1` could only overflow for
                // `va == 0, last == u64::MAX`, a range of 2^64 bytes that no
                // canonical window (fewer than 64 bits, `check_canonical`)
                // holds; it saturates rather than trust that.
                let in_range = (self.last - va).saturating_add(1) >> shift;
                // At most `in_table` (a `usize`), so the cast is exact.
                let count = (in_table as u64).min(in_range) as usize;
                // `shift < va_bits < 64` (`Geometry::new`): every shift by it
                // in this function is in range.
                if va & ((1u64 << shift) - 1) == 0 && count != 0 {
                    return Ok(Step::Run(LeafRun {
                        table: step.table,
                        level,
                        index,
                        count,
                        va,
                        shift,
                        grants: step.grants,
                        parent: step.via,
                    }));
                }
            }
            let loc = EntryLoc {
                table: step.table,
                index: geometry.index(VirtAddr(va), level),
                level,
            };
            let fail = |kind| WalkError {
                va: VirtAddr(va),
                kind,
            };
            let raw = load_entry::<F, A>(self.walker.access, loc)
                .map_err(|error| fail(WalkErrorKind::Access { loc, error }))?;
            let entry = decode_checked::<F>(raw, loc, VirtAddr(va), step.grants)?;
            let shift = geometry.shift_at(level);
            // Masks, not sums: the entry's span ends at `span_last` even when
            // that is `u64::MAX` (the last entry of the upper half).
            let span_first = va & !((1u64 << shift) - 1);
            let span_last = span_first | ((1u64 << shift) - 1);
            let item_last = if span_last < self.last {
                span_last
            } else {
                self.last
            };
            let here = EntrySnapshot { loc, raw };
            let item = match entry {
                Entry::Absent => WalkItem::Hole(HoleItem {
                    va: VaRange::spanning(VirtAddr(va), VirtAddr(item_last)),
                    level,
                    entry: here,
                    parent: step.via,
                }),
                Entry::Leaf(leaf) => WalkItem::Leaf(LeafItem {
                    va: VaRange::spanning(VirtAddr(va), VirtAddr(item_last)),
                    // `va - span_first < 2^shift`, the leaf's size, and a
                    // leaf's `pa` is aligned to its size (format contract 3),
                    // so the sum is `pa | offset` and cannot carry. Wrapping,
                    // not `+`: a format that breaks its (`unsafe`) contract
                    // with a misaligned `pa` near `u64::MAX` must still not
                    // panic the walk.
                    pa: PhysAddr(leaf.pa.0.wrapping_add(va - span_first)),
                    leaf_va: VirtAddr(span_first),
                    leaf_pa: leaf.pa,
                    level,
                    size: 1 << shift,
                    perms: leaf.perms,
                    mem_type: leaf.mem_type,
                    entry: here,
                    parent: step.via,
                }),
                Entry::Table(next) => {
                    // `holds_tables(level)` is `level + 1 < depth <= MAX_LEVELS`:
                    // the next level exists and indexes `path`.
                    level += 1;
                    self.path[level] = PathStep {
                        table: next.table,
                        via: Some(here),
                        grants: step.grants.intersection(next.grants),
                        first: span_first,
                        last: span_last,
                    };
                    self.path_len = level + 1;
                    continue;
                }
            };
            if item_last >= self.last {
                self.finished = true;
            } else {
                // `item_last < last <= u64::MAX`: the successor exists.
                self.cursor = item_last + 1;
            }
            return Ok(Step::Item(item));
        }
    }
}

impl<F: PagingFormat, A: TableAccess + ?Sized> Iterator for Walk<'_, F, A> {
    type Item = Result<WalkItem, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let item = self.step();
        if item.is_err() {
            self.finished = true;
        }
        Some(item)
    }
}

impl<F: PagingFormat, A: TableAccess + ?Sized> core::iter::FusedIterator for Walk<'_, F, A> {}
