//! The lockless fast path.

use super::fault::{FaultHandler, NoFault};
use super::flags::GupFlags;
use super::outcome::{GupError, Stop, Taken};
use super::release::release_run;
use crate::guard::WalkGuard;
use crate::memmap::{MemoryMap, Pfn, Unit};
use crate::meta::{GetError, Hold, MAX_BATCH, PageMeta};
use crate::sync::AtomicU64;
use crate::table::walk::{LeafRun, Step, check_canonical, load_leaf_word};
use crate::table::{
    Entry, EntryLoc, LeafItem, PagingFormat, Perms, TableAccess, VaRange, VirtAddr, WalkError,
    WalkErrorKind, WalkItem, Walker,
};

/// The most leaves of one table [`Gup::take_run`] loads, takes and re-checks
/// as one batch. Each leaf's raw entry, entry word and counting meta live on
/// the stack (3 × 8 bytes per leaf, 768 bytes); 32, 64 and 128 measured the
/// same on the GUP benchmark.
const RUN_BATCH: usize = 32;

/// GUP-fast over one address space: a [`Walker`] of its tables and the kernel's
/// [`MemoryMap`].
pub struct Gup<'a, F, A: ?Sized, M: ?Sized> {
    walker: Walker<'a, F, A>,
    memmap: &'a M,
}

impl<F, A: ?Sized, M: ?Sized> Clone for Gup<'_, F, A, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F, A: ?Sized, M: ?Sized> Copy for Gup<'_, F, A, M> {}

impl<F, A: ?Sized, M: ?Sized> core::fmt::Debug for Gup<'_, F, A, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gup").field("walker", &self.walker).finish()
    }
}

/// Which safety checks a walk runs. The real path runs all of them; the
/// deliberately broken variants exist only for the loom models (`broken`).
#[derive(Clone, Copy)]
pub(crate) struct Checks {
    /// Re-read the leaf entry after the get.
    pub(crate) leaf: bool,
    /// Re-read the table entry above the leaf after the get.
    pub(crate) parent: bool,
    /// Keep the walk guard across the get and the re-check.
    pub(crate) guard_across_get: bool,
}

impl Checks {
    /// Every check. Built with `--cfg pagepin_broken_no_recheck` (set only by
    /// the bare-metal kernels' deliberately broken boot, through `RUSTFLAGS`,
    /// never by a cargo feature that a dependency could turn on), the re-check
    /// is left out, so that a boot can show what it catches.
    pub(crate) const ALL: Checks = Checks {
        leaf: !cfg!(pagepin_broken_no_recheck),
        parent: !cfg!(pagepin_broken_no_recheck),
        guard_across_get: true,
    };
}

impl<'a, F: PagingFormat, A: TableAccess + ?Sized, M: MemoryMap + ?Sized> Gup<'a, F, A, M> {
    const FORMAT_PAGES_COVER_BASE_PAGES: () = assert!(
        F::GEOMETRY.page_shift() >= M::PAGE_SHIFT,
        "the format's smallest page must be at least the memory map's base page"
    );

    /// GUP-fast over the tables `walker` reads, counting on `memmap`.
    pub fn new(walker: Walker<'a, F, A>, memmap: &'a M) -> Self {
        let () = Self::FORMAT_PAGES_COVER_BASE_PAGES;
        Gup { walker, memmap }
    }

    /// The walker.
    pub fn walker(&self) -> Walker<'a, F, A> {
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
    /// **re-check**: the leaf entry and the table entry above it are loaded again
    /// and compared with what the walk read. If either changed, the leaf's gets
    /// are undone and the walk stops with [`Stop::Changed`]. The walk holds one
    /// `guard` read section for the whole call.
    ///
    /// Consecutive leaves of one last-level table are taken in batches (of up
    /// to 32): each entry is loaded once, then the gets of the batch are made,
    /// then the table entry above is re-read once and each leaf entry once. If
    /// the table entry changed, the whole batch is undone and the walk stops at
    /// its first leaf; if a leaf entry changed, that leaf and the later ones of
    /// the batch are undone and the walk stops at it.
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
    pub fn get_pages<G: WalkGuard + ?Sized>(
        &self,
        guard: &G,
        start: VirtAddr,
        len: u64,
        flags: GupFlags,
        out: &mut [Pfn],
    ) -> Result<Taken, GupError> {
        self.run(guard, start, len, flags, out, &mut NoFault, Checks::ALL)
    }

    /// [`get_pages`](Self::get_pages) with a slow path: where the walk stops on
    /// an absent entry or missing permissions, `fault` may fix the mapping (with
    /// no guard held) and the walk resumes there.
    ///
    /// # Errors
    ///
    /// As [`get_pages`](Self::get_pages).
    pub fn get_pages_with_fault<G: WalkGuard + ?Sized, H: FaultHandler + ?Sized>(
        &self,
        guard: &G,
        start: VirtAddr,
        len: u64,
        flags: GupFlags,
        out: &mut [Pfn],
        fault: &mut H,
    ) -> Result<Taken, GupError> {
        self.run(guard, start, len, flags, out, fault, Checks::ALL)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run<G: WalkGuard + ?Sized, H: FaultHandler + ?Sized>(
        &self,
        guard: &G,
        start: VirtAddr,
        len: u64,
        flags: GupFlags,
        out: &mut [Pfn],
        fault: &mut H,
        checks: Checks,
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
                    let runs = out.len() - filled >= leaf_pages;
                    let item = match walk.next_step(runs) {
                        None => break,
                        Some(Ok(Step::Run(run))) => {
                            let (leaves, run_stop) = self.take_run(
                                &run,
                                hold,
                                needed,
                                flags,
                                &mut out[filled..],
                                checks,
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
                    if !checks.guard_across_get {
                        // Broken variant: the read section ends before the get.
                        section = None;
                    }
                    match self.take_leaf(&leaf, hold, flags, &mut out[filled..], checks) {
                        Ok(taken) => {
                            filled += taken;
                            let covered = (taken as u64) << M::PAGE_SHIFT;
                            if covered < leaf.va.size() {
                                stop = Stop::OutputFull {
                                    va: VirtAddr(leaf.va.start().0 + covered),
                                };
                                break;
                            }
                        }
                        Err(s) => {
                            stop = s;
                            break;
                        }
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

    /// Takes the pages of one leaf (as many as fit in `out`), re-checks, and
    /// writes their PFNs. Returns how many were taken, or the stop with nothing
    /// of this leaf taken.
    fn take_leaf(
        &self,
        leaf: &LeafItem,
        hold: Hold,
        flags: GupFlags,
        out: &mut [Pfn],
        checks: Checks,
    ) -> Result<usize, Stop> {
        let va = leaf.va.start();
        let in_leaf = leaf.va.size() >> M::PAGE_SHIFT;
        let n = in_leaf.min(out.len() as u64);
        if n == 0 {
            return Err(Stop::OutputFull { va });
        }
        let first = Pfn(leaf.pa.0 >> M::PAGE_SHIFT);
        self.take_pages(first, n, va, hold, flags, &mut None)?;
        // The re-check. The leaf entry and the table entry above it must still
        // hold the values the walk read: a page freed (or reused) after the walk's
        // load had its leaf, or the entry pointing to its table, changed before its
        // free, and that free is ordered before our get by the meta word.
        let unchanged = (!checks.leaf || self.walker.is_unchanged(&leaf.entry) == Ok(true))
            && (!checks.parent
                || leaf
                    .parent
                    .is_none_or(|p| self.walker.is_unchanged(&p) == Ok(true)));
        if !unchanged {
            self.undo(first, n, hold);
            return Err(Stop::Changed { va });
        }
        for (i, slot) in out[..n as usize].iter_mut().enumerate() {
            *slot = Pfn(first.0 + i as u64);
        }
        Ok(n as usize)
    }

    /// Takes the leaf-level leaves of `run` (as many whole leaves as fit in
    /// `out`) in batches of up to [`RUN_BATCH`] leaves: (1) loads each entry once
    /// and checks it (present, a leaf, permitted; for a leaf of one base page,
    /// also its unit: in the map, not refused to a long-term pin), and writes
    /// its PFNs to its slots of `out`; (2) takes each leaf's pages (one get per
    /// allocation unit it covers); (3) after all the gets of the batch, re-reads
    /// the parent entry once and each leaf entry once and compares them with
    /// the values of step 1. Only the leaves that pass step 3 are taken.
    ///
    /// Sound per leaf exactly as [`take_leaf`](Self::take_leaf): every re-read
    /// of step 3 comes after that leaf's get in program order (the gets are
    /// Acquire). If the parent changed, every leaf of the batch is undone; if
    /// leaf `k` changed, leaves `k..` of the batch are undone and the leaves
    /// before `k` stay taken (their entries and the parent were re-read after
    /// their gets). A stop in step 1 or 2 at leaf `k` is reported after the
    /// leaves before `k` passed step 3 (or at the first that did not).
    ///
    /// Returns the whole leaves taken (their PFNs are in `out`, in order) and
    /// the stop, if the run ended early.
    #[allow(clippy::too_many_arguments)]
    fn take_run<S>(
        &self,
        run: &LeafRun,
        hold: Hold,
        needed: Perms,
        flags: GupFlags,
        out: &mut [Pfn],
        checks: Checks,
        section: &mut Option<S>,
    ) -> (usize, Option<Stop>) {
        // A run is always at the last level, whose entries span the format's
        // page: constants, so the loops below fold them. A leaf-level leaf
        // covers whole base pages (`FORMAT_PAGES_COVER_BASE_PAGES`).
        let level = F::GEOMETRY.depth() - 1;
        let shift = F::GEOMETRY.page_shift();
        debug_assert_eq!((run.level, run.shift), (level, shift));
        let leaf_pages = 1u64 << (shift - M::PAGE_SHIFT);
        // One base page per leaf (x86_64 and 4 KiB granules over a 4 KiB map):
        // one unit per leaf, looked up in step 1, one get per leaf in step 2.
        let single = leaf_pages == 1;
        let max = run.count.min(out.len() / leaf_pages as usize);
        let mut cache = None;
        let mut raws = [0u64; RUN_BATCH];
        let mut metas: [Option<&PageMeta>; RUN_BATCH] = [None; RUN_BATCH];
        let mut words: [Option<&AtomicU64>; RUN_BATCH] = [None; RUN_BATCH];
        let mut done = 0usize;
        while done < max {
            let batch = (max - done).min(RUN_BATCH);
            let lp = leaf_pages as usize;
            // The batch's slots of `out`: step 1 writes each leaf's PFNs there,
            // and they count as taken only once step 3 passed them.
            let slots = &mut out[done * lp..(done + batch) * lp];
            let index = run.index + done;
            let va = run.va + ((done as u64) << shift);
            let va_of = |j: usize| VirtAddr(va + ((j as u64) << shift));
            let loc_of = |j: usize| EntryLoc {
                table: run.table,
                index: index + j,
                level,
            };
            // (1) One load per entry, by the walker (Relaxed: a leaf-only level).
            let mut stop = None;
            let mut loaded = 0;
            while loaded < batch {
                let (va, loc) = (va_of(loaded), loc_of(loaded));
                let fail = |kind| Some(Stop::Malformed(WalkError { va, kind }));
                let word = match self.walker.leaf_word(loc) {
                    Ok(word) => word,
                    Err(error) => {
                        stop = fail(WalkErrorKind::Access { loc, error });
                        break;
                    }
                };
                let raw = load_leaf_word(word);
                let pfn = match F::decode(raw, level) {
                    Ok(Entry::Leaf(leaf)) => {
                        let missing = needed.difference(leaf.perms.limited_by(run.grants));
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
                    // A table pointer at a level that holds none: the walk's
                    // own check (format contract 3).
                    Ok(Entry::Table(_)) => {
                        stop = fail(WalkErrorKind::FormatContract { loc, raw });
                        break;
                    }
                    Err(error) => {
                        stop = fail(WalkErrorKind::Decode { loc, raw, error });
                        break;
                    }
                };
                if single {
                    let unit = match self.memmap.unit(pfn) {
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
                }
                words[loaded] = Some(word);
                raws[loaded] = raw;
                for (i, slot) in slots[loaded * lp..(loaded + 1) * lp].iter_mut().enumerate() {
                    *slot = Pfn(pfn.0 + i as u64);
                }
                loaded += 1;
            }
            if !checks.guard_across_get {
                // Broken variant: the read section ends before the gets.
                *section = None;
            }
            // (2) The gets.
            let mut taken = 0;
            while taken < loaded {
                let got = match metas[taken] {
                    Some(meta) if single => {
                        self.get_one(meta, slots[taken * lp], va_of(taken), hold)
                    }
                    _ => self.take_pages(
                        slots[taken * lp],
                        leaf_pages,
                        va_of(taken),
                        hold,
                        flags,
                        &mut cache,
                    ),
                };
                if let Err(s) = got {
                    stop = Some(s);
                    break;
                }
                taken += 1;
            }
            // (3) The re-check, after every get of the batch: the parent once,
            // then each leaf (see `take_leaf` for why it is sound).
            if taken != 0
                && checks.parent
                && run
                    .parent
                    .is_some_and(|p| self.walker.is_unchanged(&p) != Ok(true))
            {
                self.undo_leaves(&slots[..taken * lp], leaf_pages, hold);
                return (done, Some(Stop::Changed { va: va_of(0) }));
            }
            for j in 0..taken {
                // The words step 1 resolved. (The broken variant without the
                // guard resolves them again through the table access, which is
                // where the loom model observes reads of a freed table.)
                let word = if checks.guard_across_get {
                    words[j]
                } else {
                    self.walker.leaf_word(loc_of(j)).ok()
                };
                if checks.leaf && word.map(load_leaf_word) != Some(raws[j]) {
                    self.undo_leaves(&slots[j * lp..taken * lp], leaf_pages, hold);
                    return (done + j, Some(Stop::Changed { va: va_of(j) }));
                }
            }
            done += taken;
            if stop.is_some() {
                return (done, stop);
            }
        }
        (done, None)
    }

    /// The get of a leaf of one base page, `pfn` at `va`, on its unit's
    /// counting `meta` (looked up in step 1 of [`take_run`](Self::take_run)).
    #[inline(always)]
    fn get_one(&self, meta: &PageMeta, pfn: Pfn, va: VirtAddr, hold: Hold) -> Result<(), Stop> {
        // The get: Acquire, pairing with the Release of the allocator's
        // allocate/free transitions on this word (see `meta`), which is what
        // makes the re-check after it sound without a fence.
        match meta.get(hold, 1) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.refused(e, pfn, va)),
        }
    }

    /// The stop for a refused get of `pfn` at `va`; wakes the unit's waiter if
    /// the refusal's undo made a truncating unit idle.
    #[cold]
    fn refused(&self, e: GetError, pfn: Pfn, va: VirtAddr) -> Stop {
        if e.wake.is_due() {
            if let Ok(unit) = self.memmap.unit(pfn) {
                self.memmap.wake(unit.head);
            }
        }
        Stop::Refused {
            va,
            pfn,
            kind: e.kind,
        }
    }

    /// Takes the `n` base pages from `first` of one leaf (whose first taken
    /// page is at `va`): one get per allocation unit (and per [`MAX_BATCH`]
    /// pages). On a refusal, undoes the gets it made and returns the stop.
    ///
    /// `cache` is the last unit the memory map reported. It answers for the
    /// PFNs inside it without asking the map again: by the map's contract every
    /// PFN of a unit gets the same answer, and a unit is split or merged only
    /// while its head is idle, which it is not while this walk holds it.
    #[inline(always)]
    fn take_pages(
        &self,
        first: Pfn,
        n: u64,
        va: VirtAddr,
        hold: Hold,
        flags: GupFlags,
        cache: &mut Option<Unit<'a>>,
    ) -> Result<(), Stop> {
        let va_of = |pages: u64| VirtAddr(va.0 + (pages << M::PAGE_SHIFT));
        let mut taken = 0u64;
        while taken < n {
            let pfn = Pfn(first.0 + taken);
            let refuse = |stop| {
                self.undo(first, taken, hold);
                Err(stop)
            };
            let unit = match *cache {
                Some(unit) if unit.head.0 <= pfn.0 && pfn.0 < unit.end() => unit,
                _ => match self.memmap.unit(pfn) {
                    Ok(unit) => unit,
                    Err(_) => {
                        return refuse(Stop::OutsideMap {
                            va: va_of(taken),
                            pfn,
                        });
                    }
                },
            };
            if flags.contains(GupFlags::LONGTERM) && unit.layout_managed {
                return refuse(Stop::LongTermOnLayoutManaged {
                    va: va_of(taken),
                    pfn,
                });
            }
            let in_unit = unit.end().saturating_sub(pfn.0).max(1);
            let count = (n - taken).min(in_unit).min(MAX_BATCH as u64) as u32;
            // The get: Acquire, pairing with the Release of the allocator's
            // allocate/free transitions on this word (see `meta`), which is what
            // makes the re-check after it sound without a fence.
            if let Err(e) = unit.meta.get(hold, count) {
                if e.wake.is_due() {
                    self.memmap.wake(unit.head);
                }
                return refuse(Stop::Refused {
                    va: va_of(taken),
                    pfn,
                    kind: e.kind,
                });
            }
            // Held now: the unit cannot be split or merged under us.
            *cache = Some(unit);
            taken += count as u64;
        }
        Ok(())
    }

    /// Undoes the gets of whole leaves of `leaf_pages` pages each, whose PFNs
    /// are `pfns` (a failed batch re-check).
    fn undo_leaves(&self, pfns: &[Pfn], leaf_pages: u64, hold: Hold) {
        for leaf in pfns.chunks(leaf_pages as usize) {
            self.undo(leaf[0], leaf_pages, hold);
        }
    }

    /// Undoes the gets of `pages` pages from `first` (a refusal or a failed
    /// re-check). Cannot fail: the same units were just taken the same way.
    fn undo(&self, first: Pfn, pages: u64, hold: Hold) {
        if pages != 0 {
            // The memory map's contract (same unit, same meta for every PFN of a
            // unit) makes this release exactly the gets just made.
            let _ = release_run(self.memmap, first, pages, hold);
        }
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
