//! The lockless fast path.

use super::fault::{FaultHandler, NoFault};
use super::flags::GupFlags;
use super::outcome::{GupError, Stop, Taken};
use super::release::release_run;
use crate::guard::WalkGuard;
use crate::memmap::{MemoryMap, Pfn};
use crate::meta::{Hold, MAX_BATCH};
use crate::table::{
    LeafItem, PagingFormat, Perms, TableAccess, VaRange, VirtAddr, WalkItem, Walker,
};

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
    pub(crate) const ALL: Checks = Checks {
        leaf: true,
        parent: true,
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
    /// Partial results are normal: the pages reported in [`Taken::pages`] are
    /// taken and stay taken; nothing else is.
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
        self.walker.walk_range(range).map_err(GupError::Range)?;
        let hold = if flags.contains(GupFlags::PIN) {
            Hold::Pin
        } else {
            Hold::Ref
        };
        let needed = needed_perms(flags);
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
                    let item = match walk.next() {
                        None => break,
                        Some(Ok(item)) => item,
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
        let va_of = |pages: u64| VirtAddr(va.0 + (pages << M::PAGE_SHIFT));
        let mut taken = 0u64;
        while taken < n {
            let pfn = Pfn(first.0 + taken);
            let refuse = |stop| {
                self.undo(first, taken, hold);
                Err(stop)
            };
            let unit = match self.memmap.unit(pfn) {
                Ok(unit) => unit,
                Err(_) => {
                    return refuse(Stop::OutsideMap {
                        va: va_of(taken),
                        pfn,
                    });
                }
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
            // makes the re-check below sound without a fence.
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
            taken += count as u64;
        }
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
