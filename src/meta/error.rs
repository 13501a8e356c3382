//! Errors of the metadata word's operations, and the wake-up report.

use core::fmt;

use super::word::{COUNT_MAX, Hold, MAX_BATCH};

/// Whether an operation left a truncating page idle, so that a truncate draining it
/// may be parked and must be woken (through the memory map's wait table).
///
/// Returned by every release and by a refused speculative get whose undo was the
/// last count on the page: that undo *is* a final put.
#[must_use = "a final release on a truncating page must wake the truncate waiting for it"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wake {
    /// Nobody needs waking.
    NotDue,
    /// The page is truncating and this operation made it idle: wake its waiter.
    Due,
}

impl Wake {
    /// Whether a wake-up is due.
    #[inline]
    pub const fn is_due(self) -> bool {
        matches!(self, Wake::Due)
    }
}

/// Why a get (reference or pin) was refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GetErrorKind {
    /// The page is free.
    Free,
    /// The page is marked truncating.
    Truncating,
    /// The count would exceed [`COUNT_MAX`].
    CountLimit,
    /// `n` was zero or above [`MAX_BATCH`].
    InvalidCount,
}

/// A refused get. The word is as it was (the speculative path has undone its
/// increment); [`GetError::wake`] says whether that undo was a final put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GetError {
    /// Why the get was refused.
    pub kind: GetErrorKind,
    /// `Due` when the undo of a speculative increment left a truncating page
    /// idle: the caller must wake the page's waiter. Always `NotDue` on the
    /// compare-exchange path, which never makes an increment it must undo.
    pub wake: Wake,
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            GetErrorKind::Free => f.write_str("page is free")?,
            GetErrorKind::Truncating => f.write_str("page is being truncated")?,
            GetErrorKind::CountLimit => write!(f, "count would exceed {COUNT_MAX}")?,
            GetErrorKind::InvalidCount => write!(f, "batch must be 1..={MAX_BATCH} pages")?,
        }
        if self.wake.is_due() {
            f.write_str(" (undo left the page idle: wake due)")?;
        }
        Ok(())
    }
}

impl core::error::Error for GetError {}

/// A refused release. The word is unchanged.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PutError {
    /// The page is free: nothing on it can be released.
    Free,
    /// More was released than the page holds.
    NotHeld {
        /// The count released.
        hold: Hold,
        /// What the page held at the time (including transient increments).
        held: u32,
        /// What the caller tried to release.
        requested: u32,
    },
    /// `n` was zero or above [`MAX_BATCH`].
    InvalidCount,
}

impl fmt::Display for PutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PutError::Free => f.write_str("release on a free page"),
            PutError::NotHeld {
                hold,
                held,
                requested,
            } => write!(
                f,
                "release of {requested} {hold:?} but the page holds {held}"
            ),
            PutError::InvalidCount => write!(f, "batch must be 1..={MAX_BATCH} pages"),
        }
    }
}

impl core::error::Error for PutError {}

/// Why marking a page truncating failed. The word is unchanged.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkError {
    /// The page is already marked (by another truncate; a truncate whose own set
    /// lists the unit twice reports that as a set error instead).
    AlreadyTruncating,
    /// The page is free.
    Free,
}

impl fmt::Display for MarkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarkError::AlreadyTruncating => f.write_str("page already marked truncating"),
            MarkError::Free => f.write_str("cannot mark a free page truncating"),
        }
    }
}

impl core::error::Error for MarkError {}

/// Why clearing the truncating mark failed. The word is unchanged.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnmarkError {
    /// The page was not marked.
    NotTruncating,
}

impl fmt::Display for UnmarkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnmarkError::NotTruncating => f.write_str("page is not marked truncating"),
        }
    }
}

impl core::error::Error for UnmarkError {}

/// Why freeing a page failed. The word is unchanged.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FreeError {
    /// The page is already free.
    AlreadyFree,
    /// The page still holds references or pins (possibly a transient speculative
    /// increment that is about to be undone; draining again resolves it).
    Busy {
        /// References at the time.
        refs: u32,
        /// Pins at the time.
        pins: u32,
    },
    /// [`PageMeta::free_marked`](super::PageMeta::free_marked) only: the page is
    /// allocated but not marked truncating. Its mark was cleared behind the
    /// truncate's back, so gets may have succeeded (and mappings returned) since
    /// the drain; it is not freed.
    NotMarked,
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeError::AlreadyFree => f.write_str("page is already free"),
            FreeError::NotMarked => f.write_str(
                "page is no longer marked truncating (unmarked behind the truncate's back)",
            ),
            FreeError::Busy { refs, pins } => {
                write!(f, "page is busy ({refs} references, {pins} pins)")
            }
        }
    }
}

impl core::error::Error for FreeError {}

/// Why allocating a page failed. The word is unchanged.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocError {
    /// The page is not free.
    NotFree,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::NotFree => f.write_str("page is not free"),
        }
    }
}

impl core::error::Error for AllocError {}
