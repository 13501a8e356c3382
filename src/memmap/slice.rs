//! [`SliceMemMap`]: a memory map over a slice of [`PageMeta`] (one per base
//! page from a first PFN), with fixed regions of larger or layout-managed
//! units: what a kernel whose units never change size can use as it is, and
//! the model of what a kernel's own map does.

use core::fmt;

use heapless::Vec;

use super::{MemoryMap, OutsideMap, Pfn, SingleUnits, Unit};
use crate::meta::PageMeta;
use crate::wait::{WaitSlot, WaitTable};

/// A region of the map with its own allocation-unit size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// The first PFN of the region (a multiple of `unit_pages`).
    pub first: Pfn,
    /// The number of base pages (a multiple of `unit_pages`).
    pub pages: u64,
    /// The allocation-unit size in base pages (a power of two).
    pub unit_pages: u64,
    /// Whether the region is layout-managed (DAX-like).
    pub layout_managed: bool,
}

/// Why a region could not be added.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionError {
    /// `unit_pages` is not a power of two, or `first`/`pages` are not multiples
    /// of it, or `pages` is zero.
    Misaligned,
    /// The region reaches outside the map's metas.
    OutsideMap,
    /// The region overlaps one added before.
    Overlaps,
    /// The map holds no more regions.
    Full,
    /// A page of the region holds a reference or a pin: regrouping it into
    /// new units would count its holds on a meta that no longer counts for it.
    Held {
        /// The first page found held.
        pfn: Pfn,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionError::Misaligned => "region not aligned to its unit size",
            RegionError::OutsideMap => "region outside the memory map",
            RegionError::Overlaps => "region overlaps another",
            RegionError::Full => "no room for another region",
            RegionError::Held { pfn } => return write!(f, "page {pfn} of the region is held"),
        })
    }
}

impl core::error::Error for RegionError {}

/// A memory map over `metas`, one per base page from PFN `first` on. Pages
/// outside every [`Region`] are units of one page, not layout-managed. Waiters
/// park in a [`WaitTable`] of `WAIT_SLOTS` slots.
///
/// # The top of the PFN space
///
/// A map may reach the last PFN, `u64::MAX`. Its bounds are therefore kept
/// inclusive: [`last`](Self::last) is the last PFN it describes, never "the
/// first PFN past it", which for such a map would be 2^64 and not fit a
/// `u64`. (Exclusive ends, `first + pages`, overflow exactly there; every
/// bound here is computed as `first + (pages - 1)`.) Metas past PFN `u64::MAX`
/// — a slice longer than the PFNs left above `first` — describe no PFN and
/// are never returned.
///
/// Which map counts on a meta is a promise (see [`new`](Self::new)):
///
/// ```compile_fail,E0133
/// use pagepin::memmap::{Pfn, SliceMemMap};
/// use pagepin::meta::PageMeta;
/// let metas = [PageMeta::new_allocated()];
/// let map = SliceMemMap::<1>::new(Pfn(0x8_0000), &metas);
/// ```
pub struct SliceMemMap<'a, const REGIONS: usize = 8, const WAIT_SLOTS: usize = 64> {
    first: Pfn,
    metas: &'a [PageMeta],
    regions: Vec<Region, REGIONS>,
    waits: WaitTable<WAIT_SLOTS>,
}

impl<'a, const REGIONS: usize, const WAIT_SLOTS: usize> SliceMemMap<'a, REGIONS, WAIT_SLOTS> {
    /// A map of `metas`, the first describing PFN `first`.
    ///
    /// # Safety
    ///
    /// The metas are counted, marked and freed through this map only (or
    /// through maps whose units agree with this one's for every page that
    /// holds a count), for as long as any of them holds a reference or a pin.
    /// Two maps over the same metas with different units would let GUP-fast
    /// count a page on its unit's head through one while a truncate through
    /// the other frees that page on its own meta, pinned. (This map's own
    /// layout changes, [`add_region`](Self::add_region), are refused while a
    /// page they regroup is held.)
    pub unsafe fn new(first: Pfn, metas: &'a [PageMeta]) -> Self {
        SliceMemMap {
            first,
            metas,
            regions: Vec::new(),
            waits: WaitTable::new(),
        }
    }

    /// Adds a region of larger (or layout-managed) units.
    ///
    /// # Errors
    ///
    /// [`RegionError`] as its variants say (a held page of the region is
    /// [`RegionError::Held`]); the map is unchanged.
    pub fn add_region(&mut self, region: Region) -> Result<(), RegionError> {
        let Region {
            first,
            pages,
            unit_pages,
            ..
        } = region;
        if !unit_pages.is_power_of_two()
            || pages == 0
            || first.0 % unit_pages != 0
            || pages % unit_pages != 0
        {
            return Err(RegionError::Misaligned);
        }
        // Inclusive, so that a region ending at the last PFN is not taken
        // for one that wraps: `pages >= 1` was checked above.
        let last = first
            .0
            .checked_add(pages - 1)
            .ok_or(RegionError::OutsideMap)?;
        let Some(map_last) = self.last() else {
            return Err(RegionError::OutsideMap);
        };
        if first.0 < self.first.0 || last > map_last.0 {
            return Err(RegionError::OutsideMap);
        }
        // Every region added was checked the same way, so `r.first +
        // (r.pages - 1)` does not overflow either; two inclusive intervals
        // overlap when each starts at or before the other's last page.
        if self
            .regions
            .iter()
            .any(|r| first.0 <= r.first.0 + (r.pages - 1) && r.first.0 <= last)
        {
            return Err(RegionError::Overlaps);
        }
        // Inside the map (checked above): `first - self.first` indexes a meta,
        // and so does every page up to `last`.
        let start = (first.0 - self.first.0) as usize;
        let held = self.metas[start..]
            .iter()
            .take(pages as usize)
            .position(|meta| !meta.is_idle());
        if let Some(offset) = held {
            return Err(RegionError::Held {
                pfn: Pfn(first.0 + offset as u64),
            });
        }
        self.regions.push(region).map_err(|_| RegionError::Full)
    }

    /// The last PFN the map describes (inclusive), `None` for a map of no
    /// pages. For a map that reaches the top of the PFN space this is
    /// `Pfn(u64::MAX)`; see [the type's docs](Self#the-top-of-the-pfn-space).
    pub fn last(&self) -> Option<Pfn> {
        let pages = u64::try_from(self.metas.len()).unwrap_or(u64::MAX);
        // `pages - 1` does not wrap (`pages >= 1`). Saturating: metas past PFN
        // `u64::MAX` describe no PFN, so the last PFN described is then
        // `u64::MAX` itself, which is what saturation gives.
        pages
            .checked_sub(1)
            .map(|below| Pfn(self.first.0.saturating_add(below)))
    }

    /// The number of PFNs the map describes: its metas, less any past PFN
    /// `u64::MAX`. `u64`, not `usize`: a map of every PFN would not fit.
    pub fn pages(&self) -> u64 {
        // `last - first` does not wrap (`last >= first`); `+ 1` saturates only
        // for a map of all 2^64 PFNs, which no slice holds.
        self.last()
            .map_or(0, |last| (last.0 - self.first.0).saturating_add(1))
    }

    /// The first PFN of the map.
    pub fn first(&self) -> Pfn {
        self.first
    }

    /// The meta of `pfn` itself (not necessarily the counting one).
    #[inline]
    pub fn meta_of(&self, pfn: Pfn) -> Option<&'a PageMeta> {
        let index = usize::try_from(pfn.0.checked_sub(self.first.0)?).ok()?;
        self.metas.get(index)
    }

    /// The wait table.
    pub fn waits(&self) -> &WaitTable<WAIT_SLOTS> {
        &self.waits
    }
}

impl<const REGIONS: usize, const WAIT_SLOTS: usize> fmt::Debug
    for SliceMemMap<'_, REGIONS, WAIT_SLOTS>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SliceMemMap")
            .field("first", &self.first)
            .field("pages", &self.metas.len())
            .field("regions", &self.regions)
            .finish()
    }
}

// SAFETY: (1) the unit is computed from the region containing `pfn` (aligned to
// its unit size) or is `pfn` alone, and `meta_of` checks the PFN is in the map;
// (2) every PFN of a unit computes the same head and so the same slice element;
// (3) regions never change once added (no split or merge is offered, `add_region`
// takes `&mut self`), and a tail's meta is never reported; (4) the metas are a
// borrowed slice that cannot move while `&self` lives; (5) `wake` runs
// `WaitSlot::wake` on the table's fixed slot for the head, and host waiters
// poll; (6) the layout version is a constant: no unit ever changes.
unsafe impl<const REGIONS: usize, const WAIT_SLOTS: usize> MemoryMap
    for SliceMemMap<'_, REGIONS, WAIT_SLOTS>
{
    const PAGE_SHIFT: u32 = 12;

    #[inline]
    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        let outside = OutsideMap { pfn };
        let own = self.meta_of(pfn).ok_or(outside)?;
        // `pfn - r.first < r.pages` with a wrapping subtraction is
        // `r.first <= pfn <= r.first + (r.pages - 1)` without forming the
        // region's end (which is 2^64 for a region at the top): for
        // `pfn < r.first` the difference wraps to `2^64 - (r.first - pfn) >=
        // 2^64 - r.first >= r.pages` (`add_region` checked that the region's
        // last page fits), so the test fails as it should.
        match self
            .regions
            .iter()
            .find(|r| pfn.0.wrapping_sub(r.first.0) < r.pages)
        {
            Some(r) => {
                // `unit_pages` is a power of two (`add_region`), so `- 1` does
                // not wrap; masking cannot overflow.
                let head = pfn.0 & !(r.unit_pages - 1);
                Ok(Unit {
                    head: Pfn(head),
                    pages: r.unit_pages,
                    meta: self.meta_of(Pfn(head)).ok_or(outside)?,
                    layout_managed: r.layout_managed,
                })
            }
            // A page outside every region is a unit of its own: its own meta
            // counts (looked up once).
            None => Ok(Unit {
                head: pfn,
                pages: 1,
                meta: own,
                layout_managed: false,
            }),
        }
    }

    #[inline]
    fn single_units(&self, pfn: Pfn) -> Option<SingleUnits<'_>> {
        let start = usize::try_from(pfn.0.checked_sub(self.first.0)?).ok()?;
        if start >= self.metas.len() {
            return None;
        }
        // The run ends at the first region at or after `pfn` (a page inside a
        // region is no single-page unit here, whatever its unit size), or at
        // the end of the map. `add_region` checked that each region lies
        // inside the map, so `r.first - self.first` fits the slice's index.
        let mut end = self.metas.len();
        for r in &self.regions {
            if pfn.0.wrapping_sub(r.first.0) < r.pages {
                return None;
            }
            if r.first.0 > pfn.0 {
                let offset = usize::try_from(r.first.0 - self.first.0).unwrap_or(usize::MAX);
                end = end.min(offset);
            }
        }
        // `start < end`: `pfn` is in the map and in no region, and every
        // region that starts after it starts after `start`.
        Some(SingleUnits {
            first: pfn,
            metas: self.metas.get(start..end)?,
            layout_managed: false,
        })
    }

    #[inline]
    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.waits.slot(head)
    }

    /// Bumps the slot; host waiters ([`SpinWaiter`](crate::wait::SpinWaiter))
    /// poll it, so there is nobody else to wake.
    #[inline]
    fn wake(&self, head: Pfn) {
        self.waits.wake(head);
    }

    /// Always 0: the units of a `SliceMemMap` never change once it is shared,
    /// so GUP-fast never needs to look a unit up twice.
    #[inline]
    fn layout_version(&self) -> Option<u64> {
        Some(0)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn metas(n: usize) -> Vec<PageMeta> {
        (0..n).map(|_| PageMeta::new_allocated()).collect()
    }

    #[test]
    fn runs_of_single_page_units_agree_with_unit_and_stop_at_regions() {
        let metas = metas(2048);
        // SAFETY: this map is the only one counting on these metas.
        let mut map = unsafe { SliceMemMap::<4>::new(Pfn(0x1000), &metas) };
        map.add_region(Region {
            first: Pfn(0x1200),
            pages: 512,
            unit_pages: 512,
            layout_managed: false,
        })
        .unwrap();
        // From 0x1100 to the region.
        let run = map.single_units(Pfn(0x1100)).unwrap();
        assert_eq!((run.first, run.metas.len()), (Pfn(0x1100), 0x100));
        for pfn in (0x1100..0x1200).map(Pfn) {
            let (a, b) = (run.unit(pfn).unwrap(), map.unit(pfn).unwrap());
            assert_eq!(
                (a.head, a.pages, a.layout_managed),
                (b.head, b.pages, b.layout_managed)
            );
            assert!(core::ptr::eq(a.meta, b.meta));
        }
        assert!(run.unit(Pfn(0x1200)).is_none());
        assert!(run.unit(Pfn(0x10ff)).is_none());
        // Inside the region, outside the map: none.
        assert!(map.single_units(Pfn(0x1300)).is_none());
        assert!(map.single_units(Pfn(0xfff)).is_none());
        assert!(map.single_units(Pfn(0x1800)).is_none());
        // After the region, to the end of the map.
        let run = map.single_units(Pfn(0x1400)).unwrap();
        assert_eq!((run.first, run.metas.len()), (Pfn(0x1400), 0x400));
    }

    #[test]
    fn units_come_from_regions_not_from_leaves() {
        let metas = metas(2048);
        // SAFETY: this map is the only one counting on these metas.
        let mut map = unsafe { SliceMemMap::<4>::new(Pfn(0x1000), &metas) };
        map.add_region(Region {
            first: Pfn(0x1200),
            pages: 1024,
            unit_pages: 512,
            layout_managed: true,
        })
        .unwrap();
        let small = map.unit(Pfn(0x1001)).unwrap();
        assert_eq!(
            (small.head, small.pages, small.layout_managed),
            (Pfn(0x1001), 1, false)
        );
        let a = map.unit(Pfn(0x1200)).unwrap();
        let b = map.unit(Pfn(0x13ff)).unwrap();
        assert_eq!((a.head, a.pages), (Pfn(0x1200), 512));
        assert!(core::ptr::eq(a.meta, b.meta), "one counting meta per unit");
        assert!(b.layout_managed);
        assert_eq!(map.unit(Pfn(0x1400)).unwrap().head, Pfn(0x1400));
        assert_eq!(
            map.unit(Pfn(0xfff)).unwrap_err(),
            OutsideMap { pfn: Pfn(0xfff) }
        );
        assert_eq!(
            map.unit(Pfn(0x1800)).unwrap_err(),
            OutsideMap { pfn: Pfn(0x1800) }
        );
        assert_eq!(
            map.unit(Pfn(u64::MAX)).unwrap_err(),
            OutsideMap { pfn: Pfn(u64::MAX) }
        );
    }

    #[test]
    fn bad_regions_are_refused() {
        let metas = metas(1024);
        // SAFETY: this map is the only one counting on these metas.
        let mut map = unsafe { SliceMemMap::<1>::new(Pfn(0), &metas) };
        let region = |first, pages, unit_pages| Region {
            first: Pfn(first),
            pages,
            unit_pages,
            layout_managed: false,
        };
        assert_eq!(
            map.add_region(region(0, 512, 3)),
            Err(RegionError::Misaligned)
        );
        assert_eq!(
            map.add_region(region(1, 512, 512)),
            Err(RegionError::Misaligned)
        );
        assert_eq!(
            map.add_region(region(0, 0, 512)),
            Err(RegionError::Misaligned)
        );
        assert_eq!(
            map.add_region(region(512, 1024, 512)),
            Err(RegionError::OutsideMap)
        );
        assert_eq!(
            map.add_region(region(!511, 512, 512)),
            Err(RegionError::OutsideMap)
        );
        map.add_region(region(0, 512, 512)).unwrap();
        assert_eq!(
            map.add_region(region(512, 512, 512)),
            Err(RegionError::Full)
        );
        // SAFETY: this map is the only one counting on these metas.
        let mut map = unsafe { SliceMemMap::<2>::new(Pfn(0), &metas) };
        map.add_region(region(0, 512, 512)).unwrap();
        assert_eq!(
            map.add_region(region(256, 256, 256)),
            Err(RegionError::Overlaps)
        );
    }

    #[test]
    fn a_map_may_reach_the_last_pfn() {
        let metas = metas(1024);
        let first = Pfn(u64::MAX - 1023);
        // SAFETY: this map is the only one counting on these metas.
        let mut map = unsafe { SliceMemMap::<4>::new(first, &metas) };
        assert_eq!(
            (map.first(), map.last(), map.pages()),
            (first, Some(Pfn(u64::MAX)), 1024)
        );
        // A region ending at the last PFN is no wrap.
        map.add_region(Region {
            first: Pfn(u64::MAX - 511),
            pages: 512,
            unit_pages: 512,
            layout_managed: true,
        })
        .unwrap();
        // Overlap with it is still found without forming its end.
        assert_eq!(
            map.add_region(Region {
                first: Pfn(u64::MAX - 255),
                pages: 256,
                unit_pages: 256,
                layout_managed: false,
            }),
            Err(RegionError::Overlaps)
        );
        let top = map.unit(Pfn(u64::MAX)).unwrap();
        assert_eq!((top.head, top.pages), (Pfn(u64::MAX - 511), 512));
        assert!(core::ptr::eq(top.meta, &metas[512]));
        assert!(core::ptr::eq(
            map.meta_of(Pfn(u64::MAX)).unwrap(),
            &metas[1023]
        ));
        let below = map.unit(Pfn(u64::MAX - 512)).unwrap();
        assert_eq!((below.head, below.pages), (Pfn(u64::MAX - 512), 1));
        assert_eq!(
            map.unit(Pfn(first.0 - 1)).unwrap_err().pfn,
            Pfn(first.0 - 1)
        );
    }

    #[test]
    fn metas_past_the_last_pfn_describe_nothing() {
        let metas = metas(8);
        // SAFETY: this map is the only one counting on these metas.
        let map = unsafe { SliceMemMap::<1>::new(Pfn(u64::MAX - 3), &metas) };
        assert_eq!((map.last(), map.pages()), (Some(Pfn(u64::MAX)), 4));
        assert!(core::ptr::eq(
            map.meta_of(Pfn(u64::MAX)).unwrap(),
            &metas[3]
        ));
        // SAFETY: this map is the only one counting on these metas.
        let empty = unsafe { SliceMemMap::<1>::new(Pfn(u64::MAX), &[]) };
        assert_eq!((empty.last(), empty.pages()), (None, 0));
        assert!(empty.unit(Pfn(u64::MAX)).is_err());
        let mut empty = empty;
        assert_eq!(
            empty.add_region(Region {
                first: Pfn(u64::MAX),
                pages: 1,
                unit_pages: 1,
                layout_managed: false,
            }),
            Err(RegionError::OutsideMap)
        );
    }
}
