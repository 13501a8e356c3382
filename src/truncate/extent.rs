//! The pages of a truncate: PFN extents, and the allocation units they cover.

use core::fmt;

use crate::memmap::{MemoryMap, OutsideMap, Pfn, Unit};

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

/// The allocation units covering `extents`, in order, each once per extent,
/// checked to be whole.
pub(crate) struct Units<'m, M: ?Sized, I> {
    memmap: &'m M,
    extents: I,
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
            cursor: None,
            taken: 0,
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

    #[inline]
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
        let unit = match self.memmap.unit(Pfn(pfn)) {
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
