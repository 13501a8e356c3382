//! [`HeldPages`]: the pages a GUP-fast call took, as a handle that releases
//! them when dropped, so a kernel cannot leak a DMA pin by forgetting to.

use core::fmt;

use super::outcome::{ReleaseError, Stop};
use super::release::release;
use crate::memmap::{MemoryMap, Pfn};
use crate::meta::Hold;

/// The base pages a GUP-fast call took (references or pins, per
/// [`hold`](Self::hold)), in address order; dropping the handle releases them.
///
/// It borrows the caller's PFN slice (no allocation) and the memory map the
/// counts live on. Made by [`Gup::get_held`](super::Gup::get_held).
///
/// ```
/// use pagepin::arch::x86_64::Paging4Level;
/// use pagepin::guard::TablesNeverFreed;
/// use pagepin::gup::{Gup, GupFlags, Stop};
/// use pagepin::memmap::{SliceMemMap, MemoryMap, Pfn};
/// use pagepin::meta::PageMeta;
/// use pagepin::table::*;
///
/// let metas: Vec<PageMeta> = (0..16).map(|_| PageMeta::new_allocated()).collect();
/// // SAFETY: this map is the only one counting on `metas`.
/// let memmap = unsafe { SliceMemMap::<1>::new(Pfn(0x8_0000), &metas) };
/// let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
/// let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
/// let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
/// let mut tables =
///     // SAFETY: no walker or MMU reads these tables while the builder unmaps.
///     // SAFETY: the pool's frames are this example's own, in no other pool.
///     TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() })
///         .unwrap();
/// // SAFETY: the example's own pages, never freed while mapped.
/// unsafe {
///     tables
///         .map(&MapRequest::new(VirtAddr(0x40_0000), PhysAddr(0x8000_0000), 0x4000, 0x1000)
///             .with_perms(Perms::READ | Perms::WRITE))
/// }
/// .unwrap();
/// let gup = Gup::new(tables.walker(), &memmap);
/// // SAFETY: no table is freed while this single thread walks.
/// let guard = unsafe { TablesNeverFreed::new() };
/// let mut out = [Pfn(0); 4];
/// {
///     let held = gup
///         .get_held(&guard, VirtAddr(0x40_0000), 0x4000, GupFlags::PIN | GupFlags::WRITE, &mut out)
///         .unwrap();
///     assert_eq!((held.pfns().len(), held.stop()), (4, Stop::Complete));
///     assert_eq!(memmap.unit(Pfn(0x8_0000)).unwrap().meta.pins(), 1);
///     // ... hand `held.pfns()` to the device; the DMA completes ...
/// } // dropped: released
/// assert!(metas.iter().all(PageMeta::is_idle));
/// ```
///
/// The PFN slice stays borrowed while the handle lives, so it cannot be
/// overwritten under pages still held:
///
/// Nor can the PFNs outlive the handle (they would name pages no longer
/// held):
///
/// ```compile_fail,E0505
/// use pagepin::gup::HeldPages;
/// use pagepin::memmap::{MemoryMap, Pfn};
/// fn leak<'a, M: MemoryMap>(held: HeldPages<'a, M>) -> usize {
///     let pfns: &[Pfn] = held.pfns();
///     drop(held); // released
///     pfns.len()
/// }
/// ```
///
/// ```compile_fail
/// # use pagepin::gup::{Gup, GupFlags};
/// # use pagepin::memmap::{MemoryMap, Pfn};
/// # use pagepin::guard::WalkGuard;
/// # use pagepin::table::{PagingFormat, TableAccess, VirtAddr};
/// # fn f<F: PagingFormat, A: TableAccess, M: MemoryMap, D, G: WalkGuard<Domain = D>>(gup: Gup<'_, F, A, M, D>, guard: &G) {
/// let mut out = [Pfn(0); 4];
/// let held = gup.get_held(guard, VirtAddr(0), 0x4000, GupFlags::PIN, &mut out).unwrap();
/// out[0] = Pfn(0); // `out` is borrowed by `held`
/// drop(held);
/// # }
/// ```
#[must_use = "dropping the handle releases the pages at once"]
pub struct HeldPages<'a, M: MemoryMap + ?Sized> {
    memmap: &'a M,
    pfns: &'a [Pfn],
    hold: Hold,
    stop: Stop,
}

impl<'a, M: MemoryMap + ?Sized> HeldPages<'a, M> {
    /// The handle of `pfns`, held as `hold` on `memmap`'s counting metas.
    pub(crate) fn new(memmap: &'a M, pfns: &'a [Pfn], hold: Hold, stop: Stop) -> Self {
        HeldPages {
            memmap,
            pfns,
            hold,
            stop,
        }
    }

    /// The PFNs taken, in address order, borrowed from the handle: they cannot
    /// be handed to a device after the handle released the pages.
    pub fn pfns(&self) -> &[Pfn] {
        self.pfns
    }

    /// Whether they are references or pins.
    pub fn hold(&self) -> Hold {
        self.hold
    }

    /// Why the walk stopped: [`Stop::Complete`] if it took the whole range.
    pub fn stop(&self) -> Stop {
        self.stop
    }

    /// Releases the pages now, reporting a failure that dropping would have
    /// to swallow.
    ///
    /// # Errors
    ///
    /// [`ReleaseError`] for the first page that could not be released (its
    /// count was released behind the handle's back: a bug outside it). Every
    /// other page was released all the same, as dropping does.
    pub fn release(self) -> Result<(), ReleaseError> {
        let this = core::mem::ManuallyDrop::new(self);
        release_all(this.memmap, this.pfns, this.hold)
    }

    /// Gives up the handle without releasing: the caller now owns the counts
    /// (for example, a driver that keeps a pin for the lifetime of a DMA
    /// mapping and releases it with the `unsafe` [`release`](super::release)
    /// later).
    /// Returns the PFNs and how they are held.
    pub fn into_raw(self) -> (&'a [Pfn], Hold) {
        let this = core::mem::ManuallyDrop::new(self);
        (this.pfns, this.hold)
    }
}

impl<M: MemoryMap + ?Sized> Drop for HeldPages<'_, M> {
    fn drop(&mut self) {
        // A failure means a count was released behind the handle's back; the
        // other pages are released all the same, and there is nothing more a
        // destructor can do (`release` reports it).
        let _ = release_all(self.memmap, self.pfns, self.hold);
    }
}

/// Releases every page of `pfns` that can be: a page whose put is refused is
/// skipped and the pages after it are still released, so one stray release
/// behind the handle's back does not leak the rest (a leaked pin is a unit no
/// truncate can ever drain). Returns the first refusal, its `released`
/// counting from the start of `pfns`.
fn release_all<M: MemoryMap + ?Sized>(
    memmap: &M,
    pfns: &[Pfn],
    hold: Hold,
) -> Result<(), ReleaseError> {
    let mut first_error = None;
    let mut done = 0;
    while done < pfns.len() {
        // SAFETY: the handle holds a `hold` on each of its pages (GUP-fast took
        // them for it) and has released none of `pfns[done..]`: a refused put
        // changes nothing, so the pages from the refused one on are still held
        // (but for counts released behind the handle's back, which the word
        // refuses again).
        match unsafe { release(memmap, &pfns[done..], hold) } {
            Ok(()) => break,
            Err(mut error) => {
                // No overflow: `error.released < pfns.len() - done`.
                error.released += done;
                done = error.released + 1;
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl<M: MemoryMap + ?Sized> fmt::Debug for HeldPages<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldPages")
            .field("pages", &self.pfns.len())
            .field("hold", &self.hold)
            .field("stop", &self.stop)
            .finish()
    }
}
