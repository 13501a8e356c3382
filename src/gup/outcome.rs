//! What a GUP-fast call reports: how many pages it took and why it stopped.

use core::fmt;

use crate::memmap::{OutsideMap, Pfn};
use crate::meta::{GetErrorKind, PutError};
use crate::table::{Perms, RangeError, VirtAddr, WalkError};

/// The result of a GUP-fast call that ran: pages `out[..pages]` are taken (and
/// stay taken: release them with [`release`](super::release)), and the walk
/// stopped for `stop`.
#[must_use = "the pages taken must be released"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Base pages taken; their PFNs are `out[..pages]`, in address order.
    pub pages: usize,
    /// Why the walk ended.
    pub stop: Stop,
}

/// Why a GUP-fast walk ended. Every variant but [`Stop::Complete`] names the
/// first virtual address that was not taken; everything before it was.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The whole range was taken.
    Complete,
    /// Nothing is mapped at `va` (and the fault handler, if any, did not fix it).
    Absent {
        /// The first address not taken.
        va: VirtAddr,
    },
    /// The mapping at `va` lacks permissions the flags require (write, user, or
    /// read) and the fault handler, if any, did not fix it.
    NotPermitted {
        /// The first address not taken.
        va: VirtAddr,
        /// The permissions that were missing.
        missing: Perms,
    },
    /// The leaf entry or the table entry above it changed between the walk's load
    /// and the re-check after the get (the page may no longer be mapped there),
    /// or the page's allocation unit changed between the lookup and the get (its
    /// counting meta is no longer the one got: unit identity, see
    /// [`MemoryMap`](crate::memmap::MemoryMap)). The get was undone, on the meta
    /// it was made on; the caller may retry or take the slow path.
    Changed {
        /// The first address not taken.
        va: VirtAddr,
    },
    /// The page's metadata refused the get (free, truncating, count limit).
    Refused {
        /// The first address not taken.
        va: VirtAddr,
        /// The page whose meta refused.
        pfn: Pfn,
        /// Why.
        kind: GetErrorKind,
    },
    /// A long-term pin was asked on a layout-managed (DAX-like) page.
    LongTermOnLayoutManaged {
        /// The first address not taken.
        va: VirtAddr,
        /// The page.
        pfn: Pfn,
    },
    /// The entry maps a PFN outside the memory map (a device, or corruption).
    OutsideMap {
        /// The first address not taken.
        va: VirtAddr,
        /// The PFN.
        pfn: Pfn,
    },
    /// The output slice is full.
    OutputFull {
        /// The first address not taken.
        va: VirtAddr,
    },
    /// The tables are malformed or unreachable at this point.
    Malformed(WalkError),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Complete => f.write_str("complete"),
            Stop::Absent { va } => write!(f, "nothing mapped at {va}"),
            Stop::NotPermitted { va, missing } => {
                write!(f, "mapping at {va} lacks {missing:?}")
            }
            Stop::Changed { va } => write!(f, "mapping at {va} changed under the walk"),
            Stop::Refused { va, pfn, kind } => {
                write!(f, "{pfn} at {va} refused the get: {kind:?}")
            }
            Stop::LongTermOnLayoutManaged { va, pfn } => {
                write!(f, "long-term pin of layout-managed {pfn} at {va}")
            }
            Stop::OutsideMap { va, pfn } => write!(f, "{pfn} at {va} is outside the memory map"),
            Stop::OutputFull { va } => write!(f, "output full at {va}"),
            Stop::Malformed(e) => write!(f, "malformed tables: {e}"),
        }
    }
}

/// A GUP-fast call refused before taking anything.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GupError {
    /// The range is empty, wraps, or is not canonical for the format.
    Range(RangeError),
    /// The start or the length is not a multiple of the base page size.
    Misaligned {
        /// The start asked for.
        start: VirtAddr,
        /// The length asked for.
        len: u64,
    },
    /// `LONGTERM` without `PIN`: a long-term hold must be a pin.
    LongTermWithoutPin,
}

impl fmt::Display for GupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GupError::Range(e) => write!(f, "bad range: {e}"),
            GupError::Misaligned { start, len } => {
                write!(f, "range {start} + {len:#x} is not page-aligned")
            }
            GupError::LongTermWithoutPin => f.write_str("LONGTERM requires PIN"),
        }
    }
}

impl core::error::Error for GupError {}

/// A release that failed part-way: the pages before `pfn` in the input were
/// released, `pfn` and everything after it were not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReleaseError {
    /// Pages released before the failure.
    pub released: usize,
    /// The first page not released.
    pub pfn: Pfn,
    /// Why.
    pub kind: ReleaseErrorKind,
}

/// Why a release failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseErrorKind {
    /// The PFN is outside the memory map.
    OutsideMap(OutsideMap),
    /// The counting meta refused the release (not held, free).
    Put(PutError),
    /// A run of `pages` pages from the PFN would pass the last PFN; nothing
    /// was released.
    Wraps {
        /// The pages asked for.
        pages: u64,
    },
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "release stopped at {} after {} pages: ",
            self.pfn, self.released
        )?;
        match self.kind {
            ReleaseErrorKind::OutsideMap(e) => write!(f, "{e}"),
            ReleaseErrorKind::Put(e) => write!(f, "{e}"),
            ReleaseErrorKind::Wraps { pages } => {
                write!(f, "a run of {pages} pages wraps past the last PFN")
            }
        }
    }
}

impl core::error::Error for ReleaseError {}
