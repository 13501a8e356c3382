//! The truncate protocol (layout break), as a typestate.
//!
//! Before a filesystem on direct-access memory frees the blocks of a truncated
//! or hole-punched file range, it must (1) stop new references, (2) unmap the
//! pages everywhere, (3) wait until every reference and pin has drained, and
//! (4) free them. The types make the order the only one that compiles:
//!
//! ```text
//! Truncate::mark(memmap, extents) -> Truncate<Marked>      one RMW per unit: no new gets
//!   .unmap(&mut unmapper)         -> Truncate<Unmapped>    every address space, TLBs shot down
//!   .drain(&wait) / .try_drain()  -> Truncate<Drained>     every reference and pin released
//!   .free()                       -> Freed                 the units go back to the allocator
//! .cancel() from any state before `free`: clears the marks.
//! ```
//!
//! Unmapping before marking does not compile:
//!
//! ```compile_fail,E0599
//! # use pagepin::truncate::*;
//! # fn f<M: pagepin::memmap::MemoryMap, U: Unmapper>(memmap: &M, unmapper: &mut U) {
//! let marked = Truncate::mark(memmap, core::iter::empty()).unwrap();
//! let unmapped = marked.unmap(unmapper).unwrap();
//! let again = unmapped.unmap(unmapper); // an unmapped set has no `unmap`
//! # }
//! ```
//!
//! and neither does freeing before draining:
//!
//! ```compile_fail,E0599
//! # use pagepin::truncate::*;
//! # fn f<M: pagepin::memmap::MemoryMap, U: Unmapper>(memmap: &M, unmapper: &mut U) {
//! let marked = Truncate::mark(memmap, core::iter::empty()).unwrap();
//! let unmapped = marked.unmap(unmapper).unwrap();
//! let freed = unmapped.free(); // only a drained set can be freed
//! # }
//! ```
//!
//! # Why it is safe against GUP-fast
//!
//! Marking is an RMW on each unit's metadata word, the same word a get
//! changes: a get ordered before the mark is seen by the drain, a get ordered
//! after it is refused. A walker that loaded an entry before the unmap and gets
//! after the mark is refused; one that got before the mark holds a count the
//! drain waits for. After `drain` returns, no get can succeed on the set until
//! its pages are reallocated (DESIGN.md invariant 2): the mark stays until
//! `free`, which clears it in the same compare-exchange that frees.
//!
//! # Batching
//!
//! One pass marks every unit (one RMW each) and notes the first unit that was
//! busy when marked: a unit idle when marked stays idle (no get succeeds on it
//! any more), so a set that was idle needs no drain scan at all. The drain scans
//! from there and parks only on a unit that is still busy, registering in that
//! unit's wait slot first and re-checking after (the fenced handshake of
//! [`crate::wait`]), then resumes the scan where it stopped; nowhere is there a
//! grace period.
//!
//! # Overlapping truncates and dropping
//!
//! Marks are not shared: marking a unit another truncate has marked fails with
//! [`MarkSetError`], after this truncate has cleared the marks it made, so one
//! truncate's cancel never unmarks pages another relies on. A set that lists a
//! unit twice meets its own mark and is [`SetError::Duplicate`], not
//! "another truncate". Dropping a
//! `Truncate` before `free` cancels it (the marks are cleared and the pages
//! become gettable again); it is `#[must_use]` so that doing so by accident is
//! a warning, and [`Truncate::cancel`] says it explicitly.

mod drain;
mod extent;
mod lease;
mod outcome;
mod unmap;

pub use drain::Wait;
#[cfg(loom)]
#[doc(hidden)]
pub use drain::broken;
pub use extent::{Extent, SetError};
pub use lease::{Lease, LeaseId, LeaseRegistry, RegistryFull, Revoke};
pub use outcome::{
    BusyUnit, Cancelled, DrainError, Failed, FreeSetError, Freed, MarkSetError, StillBusy,
};
#[cfg(feature = "host")]
pub use unmap::NoTlbShootdown;
pub use unmap::{FileMapping, TableUnmapError, TableUnmapper, TlbShootdown, Unmapper};

use core::fmt;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;

use extent::{Units, UnitsError};

use crate::memmap::{MemoryMap, Unit};
use crate::meta::{FreeError, MarkError};
use crate::sync::spin_wait_hint;

/// State: every unit of the set is marked truncating.
#[derive(Debug)]
pub enum Marked {}
/// State: marked, and unmapped everywhere.
#[derive(Debug)]
pub enum Unmapped {}
/// State: marked, unmapped, and no unit holds a reference or pin.
#[derive(Debug)]
pub enum Drained {}

/// A truncate of the units covering `extents` (an iterator that can be walked
/// again: `Clone`), in state `S`.
#[must_use = "dropping a truncate cancels it (its marks are cleared)"]
pub struct Truncate<'m, M: MemoryMap + ?Sized, I: Iterator<Item = Extent> + Clone, S> {
    memmap: &'m M,
    extents: I,
    units: u64,
    /// The index of the first unit that was busy when marked (`units` if none):
    /// a unit idle when marked stays idle, so drains start here.
    first_busy: u64,
    state: PhantomData<S>,
}

impl<M: MemoryMap + ?Sized, I: Iterator<Item = Extent> + Clone, S> fmt::Debug
    for Truncate<'_, M, I, S>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Truncate")
            .field("state", &core::any::type_name::<S>())
            .field("units", &self.units)
            .finish()
    }
}

impl<'m, M: MemoryMap + ?Sized, I: Iterator<Item = Extent> + Clone> Truncate<'m, M, I, Marked> {
    /// Marks every allocation unit covering `extents` truncating, in one pass:
    /// from now on no reference or pin on them succeeds.
    ///
    /// The extents must cover whole units and must not overlap each other. An
    /// overlap is found at no cost to a valid set: the second time the pass
    /// meets a unit, its mark is refused as already marked, and only then (on the
    /// error path) are the earlier extents checked for one covering it — no
    /// allocation, no per-page bookkeeping, nothing quadratic on the way.
    ///
    /// # Errors
    ///
    /// [`MarkSetError`] after clearing every mark this call made:
    /// - [`MarkSetError::Set`]: a bad set ([`SetError`]), including
    ///   [`SetError::Duplicate`] for a unit listed twice (overlapping extents);
    /// - [`MarkSetError::Unit`]: a unit that is free ([`MarkError::Free`]) or
    ///   marked by another truncate ([`MarkError::AlreadyTruncating`]).
    pub fn mark(memmap: &'m M, extents: I) -> Result<Self, MarkSetError> {
        let mut marked = 0u64;
        let mut first_busy = None;
        let mut units = Units::new(memmap, extents.clone());
        let result = units.try_for_each_unit(|unit| {
            let word = unit.meta.mark_truncating().map_err(|error| (unit, error))?;
            if !word.is_idle() && first_busy.is_none() {
                first_busy = Some(marked);
            }
            marked += 1;
            Ok(())
        });
        let failure = match result {
            Ok(()) => None,
            Err(UnitsError::Set(e)) => Some(MarkSetError::Set(e)),
            Err(UnitsError::Stopped((unit, error))) => {
                // Error path only: a unit an earlier extent of this set
                // covers was marked by this call, so the set lists it twice.
                // (The current extent cannot: its units are increasing.)
                let this = Extent::new(unit.head, unit.pages);
                let duplicate = error == MarkError::AlreadyTruncating
                    && extents
                        .clone()
                        .take(units.extents_before_current())
                        .any(|e| e.overlaps(&this));
                Some(if duplicate {
                    MarkSetError::Set(SetError::Duplicate {
                        head: unit.head,
                        pages: unit.pages,
                    })
                } else {
                    MarkSetError::Unit {
                        head: unit.head,
                        error,
                    }
                })
            }
        };
        let truncate = Truncate {
            memmap,
            extents,
            units: marked,
            first_busy: first_busy.unwrap_or(marked),
            state: PhantomData,
        };
        match failure {
            None => Ok(truncate),
            Some(e) => {
                // Clears exactly the `marked` units marked above.
                let _ = truncate.cancel();
                Err(e)
            }
        }
    }

    /// Unmaps every page of the set, in every address space, through `unmapper`.
    ///
    /// # Errors
    ///
    /// The unmapper's error, with the truncate still `Marked` (some pages may be
    /// unmapped): retry, or cancel.
    pub fn unmap<U: Unmapper + ?Sized>(
        self,
        unmapper: &mut U,
    ) -> Result<Truncate<'m, M, I, Unmapped>, Failed<Self, U::Error>> {
        for extent in self.extents.clone() {
            if let Err(error) = unmapper.unmap_extent(extent) {
                return Err(Failed {
                    truncate: self,
                    error,
                });
            }
        }
        Ok(self.into_state())
    }
}

/// How many times [`Truncate::free`] retries a unit that is marked but not idle
/// before it reports it busy (see there).
pub const FREE_BUSY_RETRIES: u32 = 1 << 16;

impl<'m, M: MemoryMap + ?Sized, I: Iterator<Item = Extent> + Clone> Truncate<'m, M, I, Drained> {
    /// Frees every unit: each goes from marked and idle to `FREE` in one
    /// compare-exchange ([`PageMeta::free_marked`], which also clears the mark).
    ///
    /// After the drain, the mark refuses every get, so a marked unit can be busy
    /// only for two reasons, which `free` tells apart by the mark itself:
    /// - a transient speculative increment ([`PageMeta::get_speculative`]): its getter saw
    ///   the mark and undoes it at once (its precondition keeps it from being
    ///   preempted in between), so `free` retries, up to [`FREE_BUSY_RETRIES`]
    ///   times with a spin hint between tries. Transients come and go: a stream
    ///   of refused speculative getters (or a getter whose virtual CPU is
    ///   descheduled mid-get) can outlast any bound, so the bound turns a would-be
    ///   hang into [`FreeError::Busy`];
    /// - a count taken while the mark was cleared behind the truncate's back
    ///   (a stray [`PageMeta::unmark_truncating`] on a unit of the set) and the
    ///   unit marked again: it does not go away, and is reported the same way.
    ///
    /// A unit that is no longer marked at all is never waited for and never
    /// freed: [`FreeError::NotMarked`] at once.
    ///
    /// # Errors
    ///
    /// [`FreeSetError`] naming the first unit that could not be freed; every
    /// other unit is freed. The units not freed are left as they were, and the
    /// truncate's marks on them (if any) pass to the caller:
    /// - [`FreeError::AlreadyFree`]: freed behind the truncate's back;
    /// - [`FreeError::NotMarked`]: unmarked behind the truncate's back (gets may
    ///   have succeeded on it since the drain);
    /// - [`FreeError::Busy`]: still marked and busy after [`FREE_BUSY_RETRIES`]
    ///   tries, as above. Retry with [`PageMeta::free_marked`], or unmark it.
    ///
    /// [`PageMeta::free_marked`]: crate::meta::PageMeta::free_marked
    /// [`PageMeta::unmark_truncating`]: crate::meta::PageMeta::unmark_truncating
    /// [`PageMeta::get_speculative`]: crate::meta::PageMeta::get_speculative
    pub fn free(self) -> Result<Freed, FreeSetError> {
        let (memmap, extents, _, _) = self.into_parts();
        let mut freed = 0;
        let mut failed = 0;
        let mut first_error = None;
        // Every unit is tried (a bad unit is counted and the pass goes on), so
        // the closure never stops it; a unit that cannot be had was already
        // refused by `mark` and is skipped, as before.
        let mut units = Units::new(memmap, extents);
        loop {
            let pass = units.try_for_each_unit(|unit| {
                let mut retries = 0;
                let result = loop {
                    // SAFETY: this truncate marked the unit (`mark` refuses a
                    // unit already marked, so the mark is its own), and its
                    // unmapper unmapped it everywhere with the TLBs shot down
                    // (the `Unmapper` promise) before this `Drained` state
                    // existed.
                    match unsafe { unit.meta.free_marked() } {
                        Err(FreeError::Busy { .. }) if retries < FREE_BUSY_RETRIES => {
                            // Still marked: a transient undone by its own getter at
                            // once, or a count taken behind our back (the bound).
                            retries += 1;
                            spin_wait_hint();
                        }
                        result => break result,
                    }
                };
                match result {
                    Ok(()) => freed += 1,
                    Err(error) => {
                        failed += 1;
                        first_error.get_or_insert(FreeSetError {
                            head: unit.head,
                            error,
                            freed: 0,
                            failed: 0,
                        });
                    }
                }
                Ok::<(), core::convert::Infallible>(())
            });
            match pass {
                Ok(()) => break,
                Err(UnitsError::Set(_)) => continue,
                Err(UnitsError::Stopped(never)) => match never {},
            }
        }
        match first_error {
            None => Ok(Freed { units: freed }),
            Some(e) => Err(FreeSetError { freed, failed, ..e }),
        }
    }
}

impl<'m, M: MemoryMap + ?Sized, I: Iterator<Item = Extent> + Clone, S> Truncate<'m, M, I, S> {
    /// Units in the set (as marked).
    pub fn units_marked(&self) -> u64 {
        self.units
    }

    /// Cancels the truncate: clears every mark it made. After `unmap` the
    /// entries are not restored; the pages simply become mappable and gettable
    /// again.
    pub fn cancel(self) -> Cancelled {
        let (memmap, extents, units, _) = self.into_parts();
        let mut cleared = 0;
        for unit in Units::new(memmap, extents).take(units as usize).flatten() {
            // SAFETY: this truncate marked exactly the first `units` units of
            // its set (`mark` refuses a unit marked by anyone else) and owns
            // those marks until it frees or cancels.
            if unsafe { unit.meta.unmark_truncating() }.is_ok() {
                cleared += 1;
            }
        }
        Cancelled { units: cleared }
    }

    fn units(&self) -> impl Iterator<Item = Result<Unit<'m>, SetError>> + use<'m, M, I, S> {
        Units::new(self.memmap, self.extents.clone()).take(self.units as usize)
    }

    fn into_parts(self) -> (&'m M, I, u64, u64) {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so reading `extents` out
        // of it moves it exactly once; the other fields are `Copy`.
        let extents = unsafe { core::ptr::read(&this.extents) };
        (this.memmap, extents, this.units, this.first_busy)
    }

    fn into_state<T>(self) -> Truncate<'m, M, I, T> {
        let (memmap, extents, units, first_busy) = self.into_parts();
        Truncate {
            memmap,
            extents,
            units,
            first_busy,
            state: PhantomData,
        }
    }
}

impl<M: MemoryMap + ?Sized, I: Iterator<Item = Extent> + Clone, S> Drop for Truncate<'_, M, I, S> {
    fn drop(&mut self) {
        for unit in Units::new(self.memmap, self.extents.clone())
            .take(self.units as usize)
            .flatten()
        {
            // SAFETY: as in `cancel`: these are this truncate's own marks.
            let _ = unsafe { unit.meta.unmark_truncating() };
        }
    }
}
