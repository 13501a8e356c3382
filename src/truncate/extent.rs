//! The pages of a truncate: PFN extents, and the allocation units they cover.

use core::fmt;

use crate::memmap::{MemoryMap, OutsideMap, Pfn, SingleUnits, Unit};

/// A run of physical pages: `pages` base pages from `first`. A file range is
/// rarely one contiguous run; a truncate takes an iterator of extents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// The first page.
    pub first: Pfn,
    /// The number of base pages.
    pub pages: u64,
}

impl Extent {
    /// The extent `first .. first + pages`.
    pub const fn new(first: Pfn, pages: u64) -> Extent {
        Extent { first, pages }
    }

    /// The last page of the extent (`first + pages - 1`: an extent may end at
    /// the last PFN), `None` if it is empty or would run past the last PFN.
    pub const fn last(&self) -> Option<Pfn> {
        if self.pages == 0 {
            return None;
        }
        match self.first.0.checked_add(self.pages - 1) {
            Some(last) => Some(Pfn(last)),
            None => None,
        }
    }

    /// Whether the two extents share a page (an empty or wrapping extent
    /// shares none).
    pub fn overlaps(&self, other: &Extent) -> bool {
        let (Some(a_last), Some(b_last)) = (self.last(), other.last()) else {
            return false;
        };
        self.first <= b_last && other.first <= a_last
    }
}

/// What is wrong with the set of pages handed to a truncate.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetError {
    /// An extent has no pages.
    EmptyExtent {
        /// Its first page.
        first: Pfn,
    },
    /// An extent runs past the last PFN.
    Wraps {
        /// The extent.
        extent: Extent,
    },
    /// A page of the set is outside the memory map.
    OutsideMap(OutsideMap),
    /// The set covers part of an allocation unit: the count of a unit lives on
    /// its head, so a truncate takes whole units. Split the unit first (the
    /// memory map's business, allowed only while its head is idle and frozen).
    PartialUnit {
        /// The first page of the set inside the unit.
        pfn: Pfn,
        /// The unit's head.
        head: Pfn,
        /// The unit's size in base pages.
        pages: u64,
    },
    /// The set lists a unit twice: two of its extents overlap (the extents of
    /// one truncate must not). Reported by [`Truncate::mark`](super::Truncate::mark)
    /// when it meets a unit its own earlier extents already marked.
    Duplicate {
        /// The unit's head.
        head: Pfn,
        /// The unit's size in base pages.
        pages: u64,
    },
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::EmptyExtent { first } => write!(f, "empty extent at {first}"),
            SetError::Wraps { extent } => write!(
                f,
                "extent at {} of {} pages runs past the last PFN",
                extent.first, extent.pages
            ),
            SetError::OutsideMap(e) => write!(f, "{e}"),
            SetError::PartialUnit { pfn, head, pages } => write!(
                f,
                "the set covers part of the {pages}-page unit at {head} (from {pfn})"
            ),
            SetError::Duplicate { head, pages } => write!(
                f,
                "the set lists the {pages}-page unit at {head} twice (its extents overlap)"
            ),
        }
    }
}

impl core::error::Error for SetError {}

/// Why [`Units::try_for_each_unit`] stopped.
pub(crate) enum UnitsError<E> {
    /// A unit of the set could not be had.
    Set(SetError),
    /// The caller's function returned an error.
    Stopped(E),
}

/// The allocation units covering `extents`, in order, each once per extent,
/// checked to be whole.
///
/// Single-page units come from a run of them where the map reports one
/// ([`MemoryMap::single_units`]): one call to the map per run instead of one
/// per page. Between a truncate's `mark` and its `free` the units of its set
/// are marked, so not free, and cannot be split or merged (the map's contract
/// point 3): a run's answers for them stay current while the set is walked.
pub(crate) struct Units<'m, M: ?Sized, I> {
    memmap: &'m M,
    extents: I,
    /// The last run of single-page units the map reported.
    singles: Option<SingleUnits<'m>>,
    /// The next page of the current extent, and its last page (inclusive, so
    /// an extent may end at the last PFN).
    cursor: Option<(u64, u64)>,
    /// Extents taken from `extents` so far (the current one included).
    taken: usize,
}

impl<'m, M: MemoryMap + ?Sized, I: Iterator<Item = Extent>> Units<'m, M, I> {
    pub(crate) fn new(memmap: &'m M, extents: I) -> Self {
        Units {
            memmap,
            extents,
            singles: None,
            cursor: None,
            taken: 0,
        }
    }

    /// The unit of `pfn`: from the last run of single-page units if it holds
    /// `pfn`, else from the map (as a run if it reports one there).
    #[inline]
    fn lookup(&mut self, pfn: Pfn) -> Result<Unit<'m>, OutsideMap> {
        if let Some(unit) = self.singles.and_then(|run| run.unit(pfn)) {
            return Ok(unit);
        }
        if let Some(run) = self.memmap.single_units(pfn) {
            if let Some(unit) = run.unit(pfn) {
                self.singles = Some(run);
                return Ok(unit);
            }
        }
        self.memmap.unit(pfn)
    }

    /// Calls `f` on every remaining unit, in order, as [`Iterator::next`]
    /// would yield them, until `f` returns an error or a unit cannot be had
    /// (the set's error); afterwards the iterator stands just past the last
    /// unit `f` was called on. Units of a run of single-page units (the
    /// cursor inside the last run the map reported) go through a tight loop
    /// over the run's metas: one pass of one RMW per unit costs about one
    /// `fetch_or` pass.
    ///
    /// # Errors
    ///
    /// [`UnitsError::Set`] for a unit that could not be had, [`UnitsError::Stopped`]
    /// with `f`'s error.
    #[inline(always)]
    pub(crate) fn try_for_each_unit<E>(
        &mut self,
        mut f: impl FnMut(Unit<'m>) -> Result<(), E>,
    ) -> Result<(), UnitsError<E>> {
        loop {
            if let (Some((pfn, last)), Some(run)) = (self.cursor, self.singles) {
                // The run's units from the cursor on, up to the extent's last
                // page: `pfn` is in the run when its offset indexes the metas.
                let offset = usize::try_from(pfn.wrapping_sub(run.first.0)).unwrap_or(usize::MAX);
                if let Some(metas) = run.metas.get(offset..) {
                    // `pfn <= last`: the extent's pages from `pfn` on, at least 1
                    // (saturating for an extent of all 2^64 pages).
                    let in_extent =
                        usize::try_from((last - pfn).saturating_add(1)).unwrap_or(usize::MAX);
                    let metas = &metas[..metas.len().min(in_extent)];
                    for (i, meta) in metas.iter().enumerate() {
                        // `pfn + i <= last`: no overflow.
                        let head = pfn + i as u64;
                        // The cursor past this unit before `f` runs, as `next`
                        // leaves it.
                        self.cursor = (head < last).then(|| (head + 1, last));
                        f(Unit {
                            head: Pfn(head),
                            pages: 1,
                            meta,
                            layout_managed: run.layout_managed,
                        })
                        .map_err(UnitsError::Stopped)?;
                    }
                    if !metas.is_empty() {
                        continue;
                    }
                }
            }
            match self.next() {
                None => return Ok(()),
                Some(Ok(unit)) => f(unit).map_err(UnitsError::Stopped)?,
                Some(Err(e)) => return Err(UnitsError::Set(e)),
            }
        }
    }

    /// How many extents come before the one the last unit came from: that
    /// many from the start of the same extents are the ones fully walked.
    pub(crate) fn extents_before_current(&self) -> usize {
        self.taken.saturating_sub(1)
    }
}

impl<'m, M: MemoryMap + ?Sized, I: Iterator<Item = Extent>> Iterator for Units<'m, M, I> {
    type Item = Result<Unit<'m>, SetError>;

    // Always inlined: in a pass of one RMW per unit, a call here keeps the
    // iterator's state and its answer in memory, stores each locked RMW waits
    // to drain (`bench_summary`: `mark` was 1.46x a `fetch_or` pass with the
    // call, 1.32x without).
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let (pfn, last) = loop {
            match self.cursor {
                Some(cursor) => break cursor,
                None => {
                    let extent = self.extents.next()?;
                    self.taken += 1;
                    if extent.pages == 0 {
                        self.cursor = None;
                        return Some(Err(SetError::EmptyExtent {
                            first: extent.first,
                        }));
                    }
                    let Some(last) = extent.last() else {
                        self.cursor = None;
                        return Some(Err(SetError::Wraps { extent }));
                    };
                    self.cursor = Some((extent.first.0, last.0));
                }
            }
        };
        let unit = match self.lookup(Pfn(pfn)) {
            Ok(unit) => unit,
            Err(e) => {
                self.cursor = None;
                return Some(Err(SetError::OutsideMap(e)));
            }
        };
        let unit_last = match unit.last() {
            Some(unit_last) if unit.head.0 == pfn && unit_last.0 <= last => unit_last.0,
            _ => {
                self.cursor = None;
                return Some(Err(SetError::PartialUnit {
                    pfn: Pfn(pfn),
                    head: unit.head,
                    pages: unit.pages,
                }));
            }
        };
        // `unit_last < last` makes `+ 1` exact; at `last` the extent is done.
        self.cursor = (unit_last < last).then(|| (unit_last + 1, last));
        Some(Ok(unit))
    }
}
