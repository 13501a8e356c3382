//! Shared by the outside review's tests (`tests/review_*.rs`): a memory map
//! whose units can be split and merged while free, as the `MemoryMap`
//! contract allows, over `PAGES` base pages from PFN `BASE`.
// Each test file uses the part it needs.
#![allow(dead_code)]

use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::PageMeta;
use pagepin::sync::{AtomicU64, Ordering};
use pagepin::wait::{WaitSlot, WaitTable};

/// The first PFN of the map.
pub const BASE: u64 = 0x1000;
/// Base pages in the map.
pub const PAGES: usize = 1024;

/// A memory map whose units can be reshaped. Each PFN's answer is one word
/// (`head offset << 32 | pages`), so no answer is ever torn. Non-head metas are
/// kept FREE (contract point 3).
pub struct Layout {
    pub metas: Vec<PageMeta>,
    pub shape: Vec<AtomicU64>,
    pub version: Option<AtomicU64>,
    pub waits: WaitTable<64>,
}

impl Layout {
    /// A map of `PAGES` pages in units of `unit` pages, heads allocated.
    pub fn new(unit: u64, versioned: bool) -> Layout {
        Layout::with_units(&[(0, PAGES as u64, unit)], versioned)
    }

    /// A map of `PAGES` pages: each `(first, pages, unit)` cuts its pages into
    /// units of `unit` from `first` on (later segments win); heads allocated.
    pub fn with_units(segments: &[(u64, u64, u64)], versioned: bool) -> Layout {
        let mut answer = vec![(0u64, 1u64); PAGES];
        for i in 0..PAGES as u64 {
            answer[i as usize] = (i, 1);
        }
        for &(first, pages, unit) in segments {
            for i in first..first + pages {
                answer[i as usize] = (i - (i - first) % unit, unit);
            }
        }
        let metas = (0..PAGES)
            .map(|i| {
                if answer[i].0 == i as u64 {
                    PageMeta::new_allocated()
                } else {
                    PageMeta::new_free()
                }
            })
            .collect();
        let shape = answer
            .iter()
            .map(|&(h, n)| AtomicU64::new((h << 32) | n))
            .collect();
        Layout {
            metas,
            shape,
            version: versioned.then(|| AtomicU64::new(0)),
            waits: WaitTable::new(),
        }
    }

    pub fn head_of(&self, i: u64) -> (u64, u64) {
        let w = self.shape[i as usize].load(Ordering::Acquire);
        (w >> 32, w & 0xffff_ffff)
    }

    /// Reshapes `first .. first + pages` into units of `unit` pages: frees
    /// every head there (all must be idle, else nothing changes and `false`),
    /// rewrites the answers, bumps the version, then allocates the new heads.
    pub fn reshape(&self, first: u64, pages: u64, unit: u64) -> bool {
        let mut freed = Vec::new();
        for i in first..first + pages {
            let (h, _) = self.head_of(i);
            if h == i {
                // SAFETY: this code owns the page and nothing maps it.
                if unsafe { self.metas[i as usize].free() }.is_err() {
                    for &f in &freed {
                        self.metas[f as usize].allocate().unwrap();
                    }
                    return false;
                }
                freed.push(i);
            }
        }
        for i in first..first + pages {
            let h = i - (i - first) % unit;
            self.shape[i as usize].store((h << 32) | unit, Ordering::Relaxed);
        }
        if let Some(v) = &self.version {
            v.fetch_add(1, Ordering::Release);
        }
        for h in (first..first + pages).step_by(unit as usize) {
            self.metas[h as usize].allocate().unwrap();
        }
        true
    }

    /// The extent of the unit (or aligned group) around `i` of `pages` pages.
    pub fn group(i: u64, pages: u64) -> u64 {
        i - i % pages
    }
}

// SAFETY: every answer is one word naming a unit that contains the PFN (1),
// all PFNs of a unit are written before any head is allocated again (2, 3,
// through `reshape`), metas never move (4), wake goes through the wait table
// (5), and the version is bumped with a Release RMW after every change and
// before any allocation (6).
unsafe impl MemoryMap for Layout {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        let i = pfn
            .0
            .checked_sub(BASE)
            .filter(|&i| i < PAGES as u64)
            .ok_or(OutsideMap { pfn })?;
        let (h, pages) = self.head_of(i);
        Ok(Unit {
            head: Pfn(BASE + h),
            pages,
            meta: &self.metas[h as usize],
            layout_managed: false,
        })
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.waits.slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.waits.wake(head);
    }

    fn layout_version(&self) -> Option<u64> {
        self.version.as_ref().map(|v| v.load(Ordering::Acquire))
    }
}
