//! What the truncate's steps report: their errors, and what `free` and
//! `cancel` did.

use core::fmt;

use heapless::Vec;

use super::SetError;
use crate::memmap::Pfn;
use crate::meta::{FreeError, MarkError};
use crate::truncate::LeaseId;

/// Why marking the set failed; every mark this truncate made has been cleared.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkSetError {
    /// The set itself is wrong (empty or wrapping extent, a page outside the
    /// map, part of a unit, a unit listed twice).
    Set(SetError),
    /// A unit refused the mark: another truncate holds it, or it is free (never
    /// this truncate itself: that is [`SetError::Duplicate`]).
    Unit {
        /// The unit's head.
        head: Pfn,
        /// Why.
        error: MarkError,
    },
}

impl fmt::Display for MarkSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarkSetError::Set(e) => write!(f, "{e}"),
            MarkSetError::Unit { head, error } => write!(f, "unit at {head}: {error}"),
        }
    }
}

impl core::error::Error for MarkSetError {}

/// A unit still holding references or pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BusyUnit {
    /// Its head.
    pub head: Pfn,
    /// References at the time.
    pub refs: u32,
    /// Pins at the time.
    pub pins: u32,
}

/// A failed step: the truncate, back in the state it was in, and why.
pub struct Failed<T, E> {
    /// The truncate, to retry or cancel.
    pub truncate: T,
    /// Why the step failed.
    pub error: E,
}

impl<T, E: fmt::Debug> fmt::Debug for Failed<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failed")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T, E: fmt::Display> fmt::Display for Failed<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "truncate step failed: {}", self.error)
    }
}

impl<T, E: core::error::Error + 'static> core::error::Error for Failed<T, E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// What `try_drain` found busy: the first `N` busy units and how many in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillBusy<const N: usize> {
    /// The first busy units, in set order (at most `N`).
    pub first: Vec<BusyUnit, N>,
    /// Busy units in all.
    pub total: u64,
}

impl<const N: usize> fmt::Display for StillBusy<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} units still busy", self.total)?;
        if let Some(b) = self.first.first() {
            write!(f, ", first {} ({} refs, {} pins)", b.head, b.refs, b.pins)?;
        }
        Ok(())
    }
}

impl<const N: usize> core::error::Error for StillBusy<N> {}

/// Why a blocking drain gave up.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrainError {
    /// The deadline passed with this unit still busy.
    TimedOut(BusyUnit),
    /// The deadline passed with this revoked lease still held.
    LeaseHeld(LeaseId),
}

impl fmt::Display for DrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainError::TimedOut(b) => write!(
                f,
                "unit at {} still busy at the deadline ({} refs, {} pins)",
                b.head, b.refs, b.pins
            ),
            DrainError::LeaseHeld(id) => write!(f, "{id} still held at the deadline"),
        }
    }
}

impl core::error::Error for DrainError {}

/// What [`Truncate::free`](super::Truncate::free) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Freed {
    /// Units freed.
    pub units: u64,
}

/// Why [`Truncate::free`](super::Truncate::free) could not free some units: somebody freed or
/// unmarked them behind the truncate's back (a bug outside pagepin), or a unit
/// stayed busy (see [`Truncate::free`](super::Truncate::free)). Every other unit was freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FreeSetError {
    /// The first unit that could not be freed.
    pub head: Pfn,
    /// Why.
    pub error: FreeError,
    /// Units freed.
    pub freed: u64,
    /// Units not freed (the first is `head`).
    pub failed: u64,
}

impl fmt::Display for FreeSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unit at {}: {} ({} units freed, {} not)",
            self.head, self.error, self.freed, self.failed
        )
    }
}

impl core::error::Error for FreeSetError {}

/// What [`Truncate::cancel`](super::Truncate::cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cancelled {
    /// Units unmarked.
    pub units: u64,
}
