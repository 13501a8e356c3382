//! Releasing what GUP-fast took: by PFN slice (in any grouping) or by run.
//!
//! Both count on the memory map's counting metas, so pages a huge leaf took in
//! one RMW may be released one by one, and pages taken one by one may be
//! released as one run: a run is released with one RMW per allocation unit (per
//! [`MAX_BATCH`] pages) it covers.

use super::outcome::{ReleaseError, ReleaseErrorKind};
use crate::memmap::{MemoryMap, Pfn};
use crate::meta::{Hold, MAX_BATCH};

/// Releases `pages` base pages of `hold` starting at `first`, one RMW per
/// allocation unit (and per [`MAX_BATCH`] pages); a release that leaves a
/// truncating unit idle wakes its waiter through `memmap`.
///
/// # Errors
///
/// [`ReleaseError`] naming the first page not released: outside the memory map,
/// or its meta refused (releasing what was never taken). Pages before it were
/// released.
///
/// # Safety
///
/// The caller holds a `hold` on each of the pages (taken by a GUP-fast call
/// whose result it owns, not yet released) and gives them up, as for
/// [`PageMeta::put`](crate::meta::PageMeta::put): releasing another holder's
/// count lets a truncate free a page that holder still uses for DMA. A
/// [`HeldPages`](super::HeldPages) handle releases its own pages safely.
pub unsafe fn release_run<M: MemoryMap + ?Sized>(
    memmap: &M,
    first: Pfn,
    pages: u64,
    hold: Hold,
) -> Result<(), ReleaseError> {
    // Refused up front: a run past the last PFN would go on at PFN 0, another
    // owner's pages.
    if pages != 0 && first.0.checked_add(pages - 1).is_none() {
        return Err(ReleaseError {
            released: 0,
            pfn: first,
            kind: ReleaseErrorKind::Wraps { pages },
        });
    }
    let mut done = 0u64;
    while done < pages {
        // No overflow: `done < pages` and `first + (pages - 1)` fits (above).
        let pfn = Pfn(first.0 + done);
        let fail = |kind| ReleaseError {
            released: done as usize,
            pfn,
            kind,
        };
        let unit = memmap
            .unit(pfn)
            .map_err(|e| fail(ReleaseErrorKind::OutsideMap(e)))?;
        let count = if unit.pages == 1 {
            1
        } else {
            // At least 1: `pfn` is in its unit (the map's contract), and the
            // `max` keeps a broken map from stalling the loop.
            let in_unit = unit.pages_from(pfn).max(1);
            (pages - done).min(in_unit).min(MAX_BATCH as u64) as u32
        };
        // SAFETY: the caller holds a `hold` on each page of the run; `count`
        // of them count on this unit's meta (the memory map's answer).
        let wake =
            unsafe { unit.meta.put(hold, count) }.map_err(|e| fail(ReleaseErrorKind::Put(e)))?;
        if wake.is_due() {
            memmap.wake(unit.head);
        }
        done += count as u64;
    }
    Ok(())
}

/// Releases every page of `pfns` (as GUP-fast filled them, or any subset in any
/// order): runs of consecutive PFNs are released with one RMW per unit.
///
/// # Errors
///
/// [`ReleaseError`] naming the first page not released; `released` counts the
/// pages of `pfns` before it, which were released.
///
/// # Safety
///
/// The caller holds a `hold` on each page of `pfns` (taken by a GUP-fast call
/// whose result it owns, not yet released) and gives them up, as for
/// [`PageMeta::put`](crate::meta::PageMeta::put): releasing another holder's
/// count lets a truncate free a page that holder still uses for DMA. A
/// [`HeldPages`](super::HeldPages) handle releases its own pages safely.
///
/// ```compile_fail,E0133
/// use pagepin::gup::release;
/// use pagepin::memmap::{MemoryMap, Pfn};
/// use pagepin::meta::Hold;
/// fn unpin_someone_elses<M: MemoryMap>(memmap: &M, pfns: &[Pfn]) {
///     let _ = release(memmap, pfns, Hold::Pin);
/// }
/// ```
pub unsafe fn release<M: MemoryMap + ?Sized>(
    memmap: &M,
    pfns: &[Pfn],
    hold: Hold,
) -> Result<(), ReleaseError> {
    // One pass: each step looks up the unit of the next PFN and extends the
    // group over the PFNs that follow it consecutively inside that unit (at
    // most `MAX_BATCH`): a unit of one page costs one lookup and one RMW, with
    // no separate scan for runs.
    let mut i = 0;
    while i < pfns.len() {
        let first = pfns[i];
        let fail = |kind| ReleaseError {
            released: i,
            pfn: first,
            kind,
        };
        let unit = memmap
            .unit(first)
            .map_err(|e| fail(ReleaseErrorKind::OutsideMap(e)))?;
        let mut count = 1;
        if unit.pages != 1 {
            let rest = &pfns[i..];
            let in_unit = unit.pages_from(first).max(1);
            let limit = (rest.len() as u64).min(in_unit).min(MAX_BATCH as u64) as usize;
            // No overflow: `count < limit <= pages_from(first)`, so `first +
            // count` is a PFN of the unit.
            while count < limit && rest[count].0 == first.0 + count as u64 {
                count += 1;
            }
        }
        // SAFETY: the caller holds a `hold` on each page of `pfns`; `count` of
        // them count on this unit's meta (the memory map's answer).
        let wake = unsafe { unit.meta.put(hold, count as u32) }
            .map_err(|e| fail(ReleaseErrorKind::Put(e)))?;
        if wake.is_due() {
            memmap.wake(unit.head);
        }
        i += count;
    }
    Ok(())
}
