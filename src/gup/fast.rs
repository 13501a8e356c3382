//! The lockless fast path.

use super::fault::{FaultHandler, NoFault};
use super::flags::GupFlags;
use super::held::HeldPages;
use super::outcome::{GupError, Stop, Taken};
use crate::guard::{Promised, WalkGuard};
use crate::memmap::{MemoryMap, OutsideMap, Pfn, SingleUnits, Unit};
use crate::meta::{Hold, MAX_BATCH, PageMeta};
use crate::sync::AtomicU64;
use crate::table::walk::{LeafRun, Step, check_canonical, decode_checked};
use crate::table::{
    Entry, EntryLoc, LeafItem, PagingFormat, Perms, TableAccess, VaRange, VirtAddr, WalkError,
    WalkErrorKind, WalkItem, Walker,
};

/// The most leaves of one table [`Gup::take_run`] loads, takes and re-checks
/// as one batch, and the most gets one batch or chunk records. Per leaf of one
/// base page the batch keeps its raw entry, entry word, counting meta and head
/// on the stack (32 bytes); a get of a larger leaf or chunk is a 32-byte
/// record: about 2 KiB in all. 32, 64 and 128 measured the same on the GUP
/// benchmark.
const RUN_BATCH: usize = 32;

/// GUP-fast over one address space: a [`Walker`] of its tables and the kernel's
/// [`MemoryMap`].
///
/// `D` is the walker's [domain](crate::guard#domains-the-guard-and-the-retire-hook-agree-by-type):
/// the walks take only guards of that domain, so a guard that does not hold
/// these tables back does not compile.
pub struct Gup<'a, F, A: ?Sized, M: ?Sized, D = Promised> {
    walker: Walker<'a, F, A, D>,
    memmap: &'a M,
}

impl<F, A: ?Sized, M: ?Sized, D> Clone for Gup<'_, F, A, M, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F, A: ?Sized, M: ?Sized, D> Copy for Gup<'_, F, A, M, D> {}

impl<F, A: ?Sized, M: ?Sized, D> core::fmt::Debug for Gup<'_, F, A, M, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gup").field("walker", &self.walker).finish()
    }
}

/// Which safety checks a walk runs, as constants, so that a walk's code has
/// no branch for a check it always makes. [`AllChecks`] is the only set the
/// public API runs; the deliberately broken sets exist only in builds that ask
/// for them (`broken`).
pub(crate) trait Checks {
    /// Re-read the leaf entry after the get.
    const LEAF: bool;
    /// Re-read the table entry above the leaf after the get.
    const PARENT: bool;
    /// Keep the walk guard across the get and the re-check.
    const GUARD_ACROSS_GET: bool;
    /// Look each unit up again after the get (unit identity).
    const UNIT: bool;
}

/// Every check: the only set the public API runs (the broken sets live in
/// `broken`, built only under `cfg(loom)` or with the `broken-twins` feature,
/// and are reached only through their own functions).
pub(crate) enum AllChecks {}

impl Checks for AllChecks {
    const LEAF: bool = true;
    const PARENT: bool = true;
    const GUARD_ACROSS_GET: bool = true;
    const UNIT: bool = true;
}

impl<'a, F: PagingFormat, A: TableAccess + ?Sized, M: MemoryMap + ?Sized, D> Gup<'a, F, A, M, D> {
    const FORMAT_PAGES_COVER_BASE_PAGES: () = assert!(
        F::GEOMETRY.page_shift() >= M::PAGE_SHIFT,
        "the format's smallest page must be at least the memory map's base page"
    );

    /// GUP-fast over the tables `walker` reads, counting on `memmap`.
    pub fn new(walker: Walker<'a, F, A, D>, memmap: &'a M) -> Self {
        let () = Self::FORMAT_PAGES_COVER_BASE_PAGES;
        Gup { walker, memmap }
    }

    /// The walker.
    pub fn walker(&self) -> Walker<'a, F, A, D> {
        self.walker
    }

    /// The memory map.
    pub fn memmap(&self) -> &'a M {
        self.memmap
    }

    /// Takes a reference (or, with [`GupFlags::PIN`], a DMA pin) on every base
    /// page mapped in `start .. start + len`, writing their PFNs to `out` in
    /// address order, without taking any lock.
    ///
    /// Per leaf: one atomic load of the entry (by the walk); the permission check;
    /// the counting meta from the memory map; the get, one RMW per allocation unit
    /// the leaf covers (so one for a huge leaf mapping one unit); then the
    /// **re-checks**: the memory map is asked again whether each page still
    /// counts on the meta that was got (unit identity; skipped when the map's
    /// [`layout_version`](MemoryMap::layout_version) did not move), and the leaf
    /// entry and the table entry above it are loaded again and compared with
    /// what the walk read. If any changed, the gets are undone on the metas they
    /// were made on and the walk stops with [`Stop::Changed`]. The walk holds
    /// one `guard` read section for the whole call.
    ///
    /// Consecutive leaves of one last-level table are taken in batches (of up
    /// to 32): each entry is loaded once, then the gets of the batch are made,
    /// then the units are checked, the table entry above is re-read once and
    /// each leaf entry once. If the table entry changed, the whole batch is
    /// undone and the walk stops at its first leaf; if a leaf entry or a page's
    /// unit changed, that leaf and the later ones of the batch are undone and
    /// the walk stops at it. A huge leaf over many units is taken in chunks of
    /// up to 32 gets, each re-checked the same way: a chunk that fails stops the
    /// walk inside the leaf, after the chunks before it.
    ///
    /// Partial results are normal: the pages reported in [`Taken::pages`] are
    /// taken and stay taken; nothing else is. Slots of `out` past
    /// [`Taken::pages`] may have been written and mean nothing.
    ///
    /// # Errors
    ///
    /// [`GupError`] before anything is taken: an empty, wrapping or non-canonical
    /// range, a start or length not aligned to the base page, `LONGTERM` without
    /// `PIN`.
    pub fn get_pages<G: WalkGuard<Domain = D> + ?Sized>(
        &self,
        guard: &G,
        start: VirtAddr,
        len: u64,
        flags: GupFlags,
        out: &mut [Pfn],
    ) -> Result<Taken, GupError> {
        self.run::<_, _, AllChecks>(guard, start, len, flags, out, &mut NoFault)
    }

    /// [`get_pages`](Self::get_pages), returning the pages taken as a
    /// [`HeldPages`] handle that releases them when dropped (or explicitly
    /// with [`HeldPages::release`]); `out` holds their PFNs for as long as the
    /// handle lives.
    ///
    /// # Errors
    ///
    /// As [`get_pages`](Self::get_pages); nothing is taken then.
    pub fn get_held<'o, G: WalkGuard<Domain = D> + ?Sized>(
        &self,
        guard: &G,
        start: VirtAddr,
        len: u64,
        flags: GupFlags,
        out: &'o mut [Pfn],
    ) -> Result<HeldPages<'o, M>, GupError>
    where
        'a: 'o,
    {
        let taken = self.get_pages(guard, start, len, flags, out)?;
        let hold = if flags.contains(GupFlags::PIN) {
            Hold::Pin
        } else {
            Hold::Ref
        };
        // `taken.pages <= out.len()` (`get_pages` fills a prefix of `out`).
        let pfns = &out[..taken.pages.min(out.len())];
        Ok(HeldPages::new(self.memmap, pfns, hold, taken.stop))
    }

    /// [`get_pages`](Self::get_pages) with a slow path: where the walk stops on
    /// an absent entry or missing permissions, `fault` may fix the mapping (with
    /// no guard held) and the walk resumes there.
    ///
    /// # Errors
    ///
    /// As [`get_pages`](Self::get_pages).
    pub fn get_pages_with_fault<G: WalkGuard<Domain = D> + ?Sized, H: FaultHandler + ?Sized>(
        &self,
        guard: &G,
        start: VirtAddr,
        len: u64,
        flags: GupFlags,
        out: &mut [Pfn],
        fault: &mut H,
    ) -> Result<Taken, GupError> {
        self.run::<_, _, AllChecks>(guard, start, len, flags, out, fault)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run<G: WalkGuard<Domain = D> + ?Sized, H: FaultHandler + ?Sized, C: Checks>(
        &self,
        guard: &G,
        start: VirtAddr,
        len: u64,
        flags: GupFlags,
        out: &mut [Pfn],
        fault: &mut H,
    ) -> Result<Taken, GupError> {
        let range = VaRange::new(start, len).map_err(GupError::Range)?;
        let page = 1u64 << M::PAGE_SHIFT;
        if start.0 % page != 0 || len % page != 0 {
            return Err(GupError::Misaligned { start, len });
        }
        if flags.contains(GupFlags::LONGTERM) && !flags.contains(GupFlags::PIN) {
            return Err(GupError::LongTermWithoutPin);
        }
        // Canonical as a whole (checked once, before anything is taken).
        check_canonical::<F>(range).map_err(GupError::Range)?;
        let hold = if flags.contains(GupFlags::PIN) {
            Hold::Pin
        } else {
            Hold::Ref
        };
        let needed = needed_perms(flags);
        // Base pages per leaf-level leaf (the format's smallest page).
        let leaf_pages = 1usize << (F::GEOMETRY.page_shift() - M::PAGE_SHIFT);
        let mut filled = 0usize;
        let mut cursor = range.start();
        let mut faulted_at = None;
        loop {
            let rest = VaRange::from_inclusive(cursor, range.last())
                .and_then(|r| self.walker.walk_range(r));
            let walk = match rest {
                Ok(walk) => walk,
                // Cannot happen (a suffix of a checked range); reported, not trusted.
                Err(e) => return Err(GupError::Range(e)),
            };
            let stop = {
                let mut section = Some(guard.enter());
                let mut stop = Stop::Complete;
                let mut walk = walk;
                loop {
                    if section.is_none() {
                        section = Some(guard.enter());
                    }
                    // Runs of leaf-level leaves go through `take_run` while at
                    // least one whole leaf fits in `out`; a leaf that fits only in
                    // part (and every huge leaf) is an item of the walk.
                    let runs = leaf_pages <= RUN_BATCH && out.len() - filled >= leaf_pages;
                    let item = match walk.next_step(runs) {
                        None => break,
                        Some(Ok(Step::Run(run))) => {
                            let (leaves, run_stop) = self.take_run::<_, C>(
                                &run,
                                hold,
                                needed,
                                flags,
                                &mut out[filled..],
                                &mut section,
                            );
                            filled += leaves * leaf_pages;
                            if let Some(s) = run_stop {
                                stop = s;
                                break;
                            }
                            walk.advance(&run, leaves);
                            continue;
                        }
                        Some(Ok(Step::Item(item))) => item,
                        Some(Err(e)) => {
                            stop = Stop::Malformed(e);
                            break;
                        }
                    };
                    let leaf = match item {
                        WalkItem::Hole(hole) => {
                            stop = Stop::Absent {
                                va: hole.va.start(),
                            };
                            break;
                        }
                        WalkItem::Leaf(leaf) => leaf,
                    };
                    let missing = needed.difference(leaf.perms);
                    if !missing.is_empty() {
                        stop = Stop::NotPermitted {
                            va: leaf.va.start(),
                            missing,
                        };
                        break;
                    }
                    if !C::GUARD_ACROSS_GET {
                        // Broken variant: the read section ends before the get.
                        section = None;
                    }
                    let (taken, leaf_stop) =
                        self.take_leaf::<C>(&leaf, hold, flags, &mut out[filled..]);
                    filled += taken;
                    if let Some(s) = leaf_stop {
                        stop = s;
                        break;
                    }
                }
                drop(section);
                stop
            };
            // The slow path, with no read section open.
            let va = match stop {
                Stop::Absent { va } | Stop::NotPermitted { va, .. } => va,
                _ => {
                    return Ok(Taken {
                        pages: filled,
                        stop,
                    });
                }
            };
            if faulted_at == Some(va) || !fault.fault(va, flags) {
                return Ok(Taken {
                    pages: filled,
                    stop,
                });
            }
            faulted_at = Some(va);
            cursor = va;
        }
    }

    /// Takes the pages of one leaf item (as many as fit in `out`) and writes
    /// their PFNs. The gets go in chunks of at most [`RUN_BATCH`] (one get per
    /// allocation unit, and per [`MAX_BATCH`] pages), each chunk re-checked
    /// after its gets: the units (unless the map's layout version shows none
    /// changed), then the leaf entry and the table entry above it. A chunk that
    /// fails its re-check is undone from its first failing get on, and the walk
    /// stops there; chunks before it stay taken (they were re-checked after
    /// their gets). A leaf that maps one unit is one chunk of one get.
    ///
    /// Returns the pages taken (their PFNs are in `out`) and the stop, if the
    /// leaf was not taken whole.
    fn take_leaf<C: Checks>(
        &self,
        leaf: &LeafItem,
        hold: Hold,
        flags: GupFlags,
        out: &mut [Pfn],
    ) -> (usize, Option<Stop>) {
        let va = leaf.va.start();
        let in_leaf = leaf.va.size() >> M::PAGE_SHIFT;
        let n = in_leaf.min(out.len() as u64);
        // No overflow: `pages < in_leaf` keeps the address inside the leaf's
        // part of the range, which ends at or below 2^64 − 1.
        let va_of = |pages: u64| VirtAddr(va.0 + (pages << M::PAGE_SHIFT));
        // The leaf's PA plus its size fits in 64 bits (the format's decode
        // bounds a leaf's output address to its size's alignment below the
        // architecture's PA width), so `first + pages` cannot overflow below.
        let first = Pfn(leaf.pa.0 >> M::PAGE_SHIFT);
        let mut gets = Gets::new();
        let mut done = 0u64;
        while done < n {
            gets.clear();
            // Before the chunk's lookups (see `MemoryMap::layout_version`). The
            // cached unit is dropped: it came from a lookup before this read,
            // so an unchanged version would not vouch for it (the previous
            // chunk's re-check confirmed only the pages it got there).
            let version = self.memmap.layout_version();
            let mut cache = Cache::default();
            let (got, stop) = self.get_units(
                Pfn(first.0 + done),
                n - done,
                va_of(done),
                hold,
                flags,
                &mut gets,
                &mut cache,
            );
            // The re-check, after every get of the chunk.
            let mut kept = gets.len();
            if kept != 0 {
                if C::UNIT && self.layout_moved(version) {
                    kept = self.first_moved(gets.len(), flags, |i| gets.get(i).copied());
                }
                // The leaf entry and the table entry above it must still hold the
                // values the walk read: a page freed (or reused) after the walk's
                // load had its leaf, or the entry pointing to its table, changed
                // before its free, and that free is ordered before our get by the
                // meta word.
                let unchanged = (!C::LEAF || self.walker.is_unchanged(&leaf.entry) == Ok(true))
                    && (!C::PARENT
                        || leaf
                            .parent
                            .is_none_or(|p| self.walker.is_unchanged(&p) == Ok(true)));
                if !unchanged {
                    kept = 0;
                }
            }
            let kept_pages = gets.pages_before(kept);
            self.undo(&gets[kept..], hold);
            for (i, slot) in out[done as usize..(done + kept_pages) as usize]
                .iter_mut()
                .enumerate()
            {
                *slot = Pfn(first.0 + done + i as u64);
            }
            done += kept_pages;
            if kept < gets.len() {
                return (done as usize, Some(Stop::Changed { va: va_of(done) }));
            }
            debug_assert_eq!(kept_pages, got);
            if stop.is_some() {
                return (done as usize, stop);
            }
        }
        if n < in_leaf {
            (n as usize, Some(Stop::OutputFull { va: va_of(n) }))
        } else {
            (n as usize, None)
        }
    }

    /// Takes the leaf-level leaves of `run` (as many whole leaves as fit in
    /// `out`) in batches of up to [`RUN_BATCH`] leaves: (1) loads each entry once
    /// and checks it (present, a leaf, permitted; for a leaf of one base page,
    /// also looks up its unit: in the map, not refused to a long-term pin), and
    /// writes its PFNs to its slots of `out`; (2) takes each leaf's pages (one
    /// get per allocation unit it covers, each recorded with the meta it was
    /// made on); (3) after all the gets of the batch, re-checks: the units
    /// (each looked up again, unless the map's layout version shows none
    /// changed), then the parent entry once and each leaf entry once, compared
    /// with the values of step 1. Only the leaves that pass step 3 are taken.
    ///
    /// Sound per leaf exactly as [`take_leaf`](Self::take_leaf): every re-read
    /// of step 3 comes after that leaf's get in program order (the gets are
    /// Acquire). If the parent changed, every leaf of the batch is undone; if
    /// leaf `k` changed (its entry, or the unit of one of its pages), leaves
    /// `k..` of the batch are undone and the leaves before `k` stay taken
    /// (their entries, units and the parent were re-checked after their gets).
    /// A stop in step 1 or 2 at leaf `k` is reported after the leaves before
    /// `k` passed step 3 (or at the first that did not).
    ///
    /// Leaves of several base pages may need several gets each; a batch ends
    /// early (without a stop) when the next leaf could overflow the batch's
    /// record of gets, and the next batch starts there.
    ///
    /// Returns the whole leaves taken (their PFNs are in `out`, in order) and
    /// the stop, if the run ended early.
    #[allow(clippy::too_many_arguments)]
    fn take_run<S, C: Checks>(
        &self,
        run: &LeafRun,
        hold: Hold,
        needed: Perms,
        flags: GupFlags,
        out: &mut [Pfn],
        section: &mut Option<S>,
    ) -> (usize, Option<Stop>) {
        // A run is always at the last level, whose entries span the format's
        // page: constants, so the loops below fold them. A leaf-level leaf
        // covers whole base pages (`FORMAT_PAGES_COVER_BASE_PAGES`), at most
        // `RUN_BATCH` of them (`run` takes runs only then).
        let level = F::GEOMETRY.depth() - 1;
        let shift = F::GEOMETRY.page_shift();
        debug_assert_eq!((run.level, run.shift), (level, shift));
        let leaf_pages = 1u64 << (shift - M::PAGE_SHIFT);
        let lp = leaf_pages as usize;
        debug_assert!(lp <= RUN_BATCH);
        // One base page per leaf (x86_64 and 4 KiB granules over a 4 KiB map):
        // one unit per leaf, looked up in step 1, one get per leaf in step 2,
        // and get `j` is leaf `j`'s.
        let single = leaf_pages == 1;
        let max = run.count.min(out.len() / lp);
        let mut raws = [0u64; RUN_BATCH];
        let mut words: [Option<&AtomicU64>; RUN_BATCH] = [None; RUN_BATCH];
        // Leaves of one base page: leaf `j`'s unit (its counting meta and
        // head), looked up in step 1 and got in step 2.
        let mut metas: [Option<&'a PageMeta>; RUN_BATCH] = [None; RUN_BATCH];
        let mut heads = [Pfn(0); RUN_BATCH];
        // Leaves of several base pages: their gets, and the index in `gets` of
        // leaf `j`'s first get (and, at `taken`, one past the last leaf's).
        let mut gets = Gets::new();
        let mut leaf_gets = [0u16; RUN_BATCH + 1];
        let mut done = 0usize;
        while done < max {
            let batch = (max - done).min(RUN_BATCH);
            // The batch's slots of `out`: step 1 writes each leaf's PFNs there,
            // and they count as taken only once step 3 passed them.
            let slots = &mut out[done * lp..(done + batch) * lp];
            let index = run.index + done;
            // No overflow: `done < run.count`, and the run's `count` whole
            // entries end at or below the range's last address.
            let va = run.va + ((done as u64) << shift);
            let va_of = |j: usize| VirtAddr(va + ((j as u64) << shift));
            let loc_of = |j: usize| EntryLoc {
                table: run.table,
                index: index + j,
                level,
            };
            gets.clear();
            // Before the batch's lookups (see `MemoryMap::layout_version`). The
            // cached unit is dropped: it came from a lookup before this read,
            // so an unchanged version would not vouch for it (the previous
            // batch's re-check confirmed only the pages it got there).
            let version = self.memmap.layout_version();
            let mut cache = Cache::default();
            // (1) One load per entry, by the walker (Relaxed: a leaf-only level).
            // The batch's words in one call where the table access holds them
            // consecutively, else one by one.
            let table_words = self.walker.leaf_words(loc_of(0), batch);
            let mut stop = None;
            let mut loaded = 0;
            while loaded < batch {
                let (va, loc) = (va_of(loaded), loc_of(loaded));
                let fail = |kind| Some(Stop::Malformed(WalkError { va, kind }));
                let word = match table_words.and_then(|words| words.get(loaded)) {
                    Some(word) => Ok(word),
                    None => self.walker.leaf_word(loc),
                };
                let word = match word {
                    Ok(word) => word,
                    Err(error) => {
                        stop = fail(WalkErrorKind::Access { loc, error });
                        break;
                    }
                };
                let raw = self.walker.load_leaf(word);
                let pfn = match decode_checked::<F>(raw, loc, va, run.grants) {
                    Ok(Entry::Leaf(leaf)) => {
                        let missing = needed.difference(leaf.perms);
                        if !missing.is_empty() {
                            stop = Some(Stop::NotPermitted { va, missing });
                            break;
                        }
                        Pfn(leaf.pa.0 >> M::PAGE_SHIFT)
                    }
                    Ok(Entry::Absent) => {
                        stop = Some(Stop::Absent { va });
                        break;
                    }
                    // A table pointer at a level that holds none (format
                    // contract 3): `decode_checked` refuses it, so this arm is
                    // never taken; it stops the walk rather than trust that.
                    Ok(Entry::Table(_)) => {
                        stop = fail(WalkErrorKind::FormatContract { loc, raw });
                        break;
                    }
                    Err(error) => {
                        stop = Some(Stop::Malformed(error));
                        break;
                    }
                };
                if single {
                    let unit = match self.lookup(pfn, &mut cache) {
                        Ok(unit) => unit,
                        Err(_) => {
                            stop = Some(Stop::OutsideMap { va, pfn });
                            break;
                        }
                    };
                    if flags.contains(GupFlags::LONGTERM) && unit.layout_managed {
                        stop = Some(Stop::LongTermOnLayoutManaged { va, pfn });
                        break;
                    }
                    metas[loaded] = Some(unit.meta);
                    heads[loaded] = unit.head;
                }
                words[loaded] = Some(word);
                raws[loaded] = raw;
                // The leaf's PA plus its size fits in 64 bits (see `take_leaf`).
                for (i, slot) in slots[loaded * lp..(loaded + 1) * lp].iter_mut().enumerate() {
                    *slot = Pfn(pfn.0 + i as u64);
                }
                loaded += 1;
            }
            if !C::GUARD_ACROSS_GET {
                // Broken variant: the read section ends before the gets.
                *section = None;
            }
            // (2) The gets.
            let mut taken = 0;
            if single {
                while taken < loaded {
                    let Some(meta) = metas[taken] else { break };
                    // The get: Acquire, pairing with the Release of the
                    // allocator's allocate/free transitions on this word (see
                    // `meta`), which is what makes the re-check after it sound
                    // without a fence.
                    if let Err(e) = meta.get(hold, 1) {
                        if e.wake.is_due() {
                            self.memmap.wake(heads[taken]);
                        }
                        stop = Some(Stop::Refused {
                            va: va_of(taken),
                            pfn: slots[taken],
                            kind: e.kind,
                        });
                        break;
                    }
                    taken += 1;
                }
            } else {
                while taken < loaded {
                    if gets.room() < lp {
                        // The next leaf might need more gets than are left: it
                        // starts the next batch (its stop, if any, is found again).
                        stop = None;
                        break;
                    }
                    leaf_gets[taken] = gets.len() as u16;
                    let (_, refused) = self.get_units(
                        slots[taken * lp],
                        leaf_pages,
                        va_of(taken),
                        hold,
                        flags,
                        &mut gets,
                        &mut cache,
                    );
                    if let Some(s) = refused {
                        // The leaf is taken whole or not at all.
                        let first_get = leaf_gets[taken] as usize;
                        self.undo(&gets[first_get..], hold);
                        gets.truncate(first_get);
                        stop = Some(s);
                        break;
                    }
                    taken += 1;
                }
                leaf_gets[taken] = gets.len() as u16;
            }
            // Get `i` of the batch (leaf `i`'s one get, for leaves of one page).
            // (`None` only past the gets made.)
            let got = |i: usize| {
                if single {
                    metas[i].map(|meta| Got {
                        meta,
                        head: heads[i],
                        first: slots[i],
                        count: 1,
                    })
                } else {
                    gets.get(i).copied()
                }
            };
            let got_count = if single { taken } else { gets.len() };
            // The leaf that get `g` belongs to, and leaf `j`'s first get.
            let leaf_of = |g: usize| {
                if single {
                    g
                } else {
                    leaf_gets[..taken].partition_point(|&first| first as usize <= g) - 1
                }
            };
            let first_get_of = |j: usize| if single { j } else { leaf_gets[j] as usize };
            // (3) The re-check, after every get of the batch: the units, then the
            // parent once, then each leaf (see `take_leaf` for why it is sound).
            let mut kept = taken;
            if taken != 0 {
                if C::UNIT && self.layout_moved(version) {
                    let moved = self.first_moved(got_count, flags, got);
                    if moved < got_count {
                        kept = leaf_of(moved);
                    }
                }
                if C::PARENT
                    && run
                        .parent
                        .is_some_and(|p| self.walker.is_unchanged(&p) != Ok(true))
                {
                    kept = 0;
                }
                for j in 0..kept {
                    // The words step 1 resolved, loaded through the table access
                    // (where a model observes reads of a freed table).
                    let word = words[j];
                    if C::LEAF && word.map(|w| self.walker.load_leaf(w)) != Some(raws[j]) {
                        kept = j;
                        break;
                    }
                }
            }
            if kept < taken {
                for got in (first_get_of(kept)..got_count).filter_map(got) {
                    self.undo_one(got, hold);
                }
                return (done + kept, Some(Stop::Changed { va: va_of(kept) }));
            }
            done += taken;
            if stop.is_some() {
                return (done, stop);
            }
        }
        (done, None)
    }

    /// The unit of `pfn`: from `cache` (the last run of single-page units or
    /// the last unit the map reported) if it holds `pfn`, else from the map
    /// (and then cached): first as a run of single-page units
    /// ([`MemoryMap::single_units`]), else as its unit. The map's contract
    /// gives every PFN of a unit the same answer, and a run the answers of a
    /// lookup of each of its pages (contract point 7), so the cached one is as
    /// good as a lookup made at the same time; like every lookup it may be
    /// stale by the time of the get, which the unit re-check after the get
    /// catches.
    #[inline(always)]
    fn lookup(&self, pfn: Pfn, cache: &mut Cache<'a>) -> Result<Unit<'a>, OutsideMap> {
        if let Some(unit) = cache.singles.and_then(|run| run.unit(pfn)) {
            return Ok(unit);
        }
        if let Some(unit) = cache.unit {
            if pfn.0.wrapping_sub(unit.head.0) < unit.pages {
                return Ok(unit);
            }
        }
        if let Some(run) = self.memmap.single_units(pfn) {
            if let Some(unit) = run.unit(pfn) {
                cache.singles = Some(run);
                return Ok(unit);
            }
        }
        let unit = self.memmap.unit(pfn)?;
        cache.unit = Some(unit);
        Ok(unit)
    }

    /// Gets up to `n` base pages from `first` of one leaf (whose first page is
    /// at `va`): one get per allocation unit (and per [`MAX_BATCH`] pages), each
    /// recorded in `gets` with the meta it was made on, until `n` pages are got,
    /// `gets` is full, or a page cannot be got (outside the map, a long-term pin
    /// on a layout-managed unit, a refused get).
    ///
    /// Returns the pages got (all recorded in `gets`, none re-checked yet) and
    /// the stop for the first page not got, if it could not be.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn get_units(
        &self,
        first: Pfn,
        n: u64,
        va: VirtAddr,
        hold: Hold,
        flags: GupFlags,
        gets: &mut Gets<'a>,
        cache: &mut Cache<'a>,
    ) -> (u64, Option<Stop>) {
        // No overflow: `pages < n`, inside one leaf (see `take_leaf`).
        let va_of = |pages: u64| VirtAddr(va.0 + (pages << M::PAGE_SHIFT));
        let mut done = 0u64;
        while done < n && gets.room() != 0 {
            let pfn = Pfn(first.0 + done);
            let unit = match self.lookup(pfn, cache) {
                Ok(unit) => unit,
                Err(_) => {
                    let stop = Stop::OutsideMap {
                        va: va_of(done),
                        pfn,
                    };
                    return (done, Some(stop));
                }
            };
            if flags.contains(GupFlags::LONGTERM) && unit.layout_managed {
                let stop = Stop::LongTermOnLayoutManaged {
                    va: va_of(done),
                    pfn,
                };
                return (done, Some(stop));
            }
            // Pages of this unit from `pfn` on: at least 1 by the map's contract
            // (`pfn` is in the unit); computed without trusting it.
            let in_unit = unit.pages_from(pfn).max(1);
            let count = (n - done).min(in_unit).min(MAX_BATCH as u64) as u32;
            // The get: Acquire, pairing with the Release of the allocator's
            // allocate/free transitions on this word (see `meta`), which is what
            // makes the re-check after it sound without a fence.
            if let Err(e) = unit.meta.get(hold, count) {
                if e.wake.is_due() {
                    self.memmap.wake(unit.head);
                }
                let stop = Stop::Refused {
                    va: va_of(done),
                    pfn,
                    kind: e.kind,
                };
                return (done, Some(stop));
            }
            gets.record(Got {
                meta: unit.meta,
                head: unit.head,
                first: pfn,
                count,
            });
            done += count as u64;
        }
        (done, None)
    }

    /// Whether the memory map's layout may have changed since `before` (its
    /// version before the lookups): then every get is checked against a fresh
    /// lookup. A map without a version is always checked.
    #[inline(always)]
    fn layout_moved(&self, before: Option<u64>) -> bool {
        match (before, self.memmap.layout_version()) {
            (Some(before), Some(now)) => before != now,
            _ => true,
        }
    }

    /// The unit-identity re-check: the index of the first of the `gets` gets
    /// (get `i` is `got(i)`, `Some` for every `i < gets`) whose pages are no longer counted on the meta it
    /// was made on (the map, asked again, names another head or meta, or a
    /// unit that no longer holds all of them, or, for a long-term pin, a
    /// layout-managed one); `gets` if there is none.
    ///
    /// Made after the gets. A get that passes holds its head, which cannot be
    /// split or merged while it is held (the map's contract), so the answer is
    /// stable until the pages are released: later gets inside a unit that
    /// already passed need no lookup of their own.
    #[inline]
    fn first_moved(
        &self,
        gets: usize,
        flags: GupFlags,
        got: impl Fn(usize) -> Option<Got<'a>>,
    ) -> usize {
        let longterm = flags.contains(GupFlags::LONGTERM);
        let mut passed: Option<Unit<'a>> = None;
        for i in 0..gets {
            let Some(Got {
                meta,
                head,
                first,
                count,
            }) = got(i)
            else {
                return i;
            };
            let pages = u64::from(count);
            if passed.is_some_and(|unit| unit.still_counts(head, meta, first, pages)) {
                continue;
            }
            match self.memmap.unit(first) {
                Ok(now)
                    if now.still_counts(head, meta, first, pages)
                        && !(longterm && now.layout_managed) =>
                {
                    passed = Some(now)
                }
                _ => return i,
            }
        }
        gets
    }

    /// Undoes `gets` (a refusal or a failed re-check).
    fn undo(&self, gets: &[Got<'a>], hold: Hold) {
        for &got in gets {
            self.undo_one(got, hold);
        }
    }

    /// Undoes one get, on the meta it was made on, never on a fresh lookup's
    /// (which, after a split, would be another owner's).
    #[inline]
    fn undo_one(&self, got: Got<'a>, hold: Hold) {
        // Cannot fail: this context holds `count` pages of `hold` on this meta
        // (just got), so it is neither free nor short of them. The put is
        // Release (see `PageMeta::put`); a final put on a truncating unit wakes
        // its drain.
        // SAFETY: this context holds `count` pages of `hold` on `got.meta`: it
        // took them in this walk and has not handed them out.
        if let Ok(wake) = unsafe { got.meta.put(hold, got.count) } {
            if wake.is_due() {
                self.memmap.wake(got.head);
            }
        }
    }
}

/// The memory map's answers one batch (or chunk) of GUP-fast reuses: the last
/// run of single-page units and the last unit it reported. Dropped at the end
/// of each batch (see `take_run`).
#[derive(Clone, Copy, Default)]
struct Cache<'a> {
    singles: Option<SingleUnits<'a>>,
    unit: Option<Unit<'a>>,
}

/// One get GUP-fast made: `count` base pages from `first`, counted on `meta`,
/// the meta of `head`, as the map's lookup reported them before the get.
#[derive(Clone, Copy)]
struct Got<'a> {
    meta: &'a PageMeta,
    head: Pfn,
    first: Pfn,
    count: u32,
}

/// The gets of one batch (or chunk of a leaf), in the order they were made:
/// what a failed re-check undoes, exactly. At most [`RUN_BATCH`], on the stack.
type Gets<'a> = heapless::Vec<Got<'a>, RUN_BATCH>;

/// What GUP-fast needs of a batch's record of gets beyond a vector's methods.
trait GetsExt<'a> {
    /// Gets that still fit.
    fn room(&self) -> usize;
    /// Records a get; the caller checked [`room`](Self::room).
    fn record(&mut self, got: Got<'a>);
    /// The pages of the first `gets` gets.
    fn pages_before(&self, gets: usize) -> u64;
}

impl<'a> GetsExt<'a> for Gets<'a> {
    #[inline(always)]
    fn room(&self) -> usize {
        self.capacity() - self.len()
    }

    #[inline(always)]
    fn record(&mut self, got: Got<'a>) {
        // Never full here: every caller checked `room` first.
        let _ = self.push(got);
    }

    #[inline]
    fn pages_before(&self, gets: usize) -> u64 {
        self[..gets].iter().map(|got| u64::from(got.count)).sum()
    }
}

/// The permissions a leaf needs for `flags`.
fn needed_perms(flags: GupFlags) -> Perms {
    let mut needed = Perms::READ;
    if flags.contains(GupFlags::WRITE) {
        needed |= Perms::WRITE;
    }
    if flags.contains(GupFlags::USER) {
        needed |= Perms::USER;
    }
    needed
}
