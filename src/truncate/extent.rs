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

    /// The first PFN past the extent, `None` if it would wrap.
    pub const fn end(&self) -> Option<u64> {
        self.first.0.checked_add(self.pages)
    }

    /// Whether the two extents share a page.
    pub fn overlaps(&self, other: &Extent) -> bool {
        let (Some(a_end), Some(b_end)) = (self.end(), other.end()) else {
            return false;
        };
        self.first.0 < b_end && other.first.0 < a_end
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
    /// The next page of the current extent, and its end.
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
        let (pfn, end) = loop {
            match self.cursor {
                Some((pfn, end)) if pfn < end => break (pfn, end),
                _ => {
                    let extent = self.extents.next()?;
                    self.taken += 1;
                    if extent.pages == 0 {
                        self.cursor = None;
                        return Some(Err(SetError::EmptyExtent {
                            first: extent.first,
                        }));
                    }
                    let Some(end) = extent.end() else {
                        self.cursor = None;
                        return Some(Err(SetError::Wraps { extent }));
                    };
                    self.cursor = Some((extent.first.0, end));
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
        if unit.head.0 != pfn || unit.end() > end {
            self.cursor = None;
            return Some(Err(SetError::PartialUnit {
                pfn: Pfn(pfn),
                head: unit.head,
                pages: unit.pages,
            }));
        }
        self.cursor = Some((unit.end(), end));
        Some(Ok(unit))
    }
}
