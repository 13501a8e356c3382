//! The unmap step: clear every entry, in every address space, that maps a page
//! of the set, and shoot down the TLBs that may cache them.

use core::fmt;

use heapless::Vec;

use super::extent::Extent;
use crate::memmap::Pfn;
use crate::table::{
    LeafSizes, PagingFormat, Retire, TableAccess, TableBuilder, UnmapError, VaRange, VirtAddr,
};

/// Removes the mappings of pages, everywhere.
///
/// Implementations must clear the leaf entries (or the entries pointing to
/// their tables) before any table is freed, and must not return until no CPU
/// can still translate through the cleared entries (TLB shootdown done). GUP-fast
/// walks that already loaded an entry are caught by their re-check and by the
/// marks; it is the *later* accesses through stale TLB entries that the
/// shootdown prevents.
///
/// # Safety
///
/// When [`unmap_extent`](Self::unmap_extent) returns `Ok`, no page-table
/// entry that GUP-fast walks or that a CPU uses for anyone but the page's next
/// owner maps a page of the extent, and no CPU can still translate to one
/// through a TLB entry: the truncate frees the pages next, and a mapping left
/// behind lets GUP-fast pin (or a CPU write) a page after its reuse. (A
/// kernel's direct map of all RAM is not such a mapping: GUP-fast does not
/// walk it, and through it only a page's owner touches the page.) A truncate
/// whose unmap fails frees nothing.
///
/// An unmapper that unmaps nothing is a promise broken; it takes `unsafe`:
///
/// ```compile_fail,E0200
/// use pagepin::truncate::{Extent, Unmapper};
/// struct Nothing;
/// impl Unmapper for Nothing {
///     type Error = ();
///     fn unmap_extent(&mut self, _extent: Extent) -> Result<(), ()> {
///         Ok(())
///     }
/// }
/// ```
pub unsafe trait Unmapper {
    /// Why an unmap failed.
    type Error: fmt::Debug;

    /// Unmaps every mapping of the pages of `extent` in every address space.
    ///
    /// # Errors
    ///
    /// Whatever stops the implementation; the pages may be partly unmapped.
    fn unmap_extent(&mut self, extent: Extent) -> Result<(), Self::Error>;
}

/// Invalidates the translations of a virtual range in one address space on every
/// CPU (x86_64: `invlpg` plus an IPI round every CPU acknowledges; aarch64:
/// `TLBI VAE1IS` per page plus `DSB ISH`).
///
/// # Safety
///
/// [`flush`](Self::flush) returns only when no CPU can translate an address
/// of `range` in address space `space` through a TLB or paging-structure
/// cache entry made before the call: [`TableUnmapper`] reports the pages
/// unmapped (and the truncate frees them) on its word.
pub unsafe trait TlbShootdown {
    /// Flushes `range` of address space `space` everywhere; returns when done.
    /// `sizes` are the sizes of the leaves the unmap cleared in the range:
    /// one invalidation per [`smallest`](LeafSizes::smallest) size reaches
    /// every one of them (an empty set: only tables were detached, whose
    /// paging-structure cache entries any invalidation in the range drops).
    fn flush(&mut self, space: usize, range: VaRange, sizes: LeafSizes);
}

/// The TLB hook of tables no MMU walks ([`HostMemory`](crate::table::HostMemory)
/// tables in tests, examples and benchmarks): nothing caches their
/// translations, so there is nothing to flush. A kernel's tables always need a
/// real shootdown.
#[cfg(feature = "host")]
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTlbShootdown;

// SAFETY: for tables no MMU walks (this type's only use, said above) nothing
// caches a translation, so every flush is complete at once.
#[cfg(feature = "host")]
unsafe impl TlbShootdown for NoTlbShootdown {
    #[inline]
    fn flush(&mut self, _space: usize, _range: VaRange, _sizes: LeafSizes) {}
}

/// Where a run of a file's pages is mapped: pages `first ..= first + (pages -
/// 1)` at `va` in address space `space` (an index into the unmapper's
/// builders). The run may end at the last PFN and its virtual range at the
/// last byte of the address space; neither is an overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileMapping {
    /// The address space.
    pub space: usize,
    /// The virtual address of `first`.
    pub va: VirtAddr,
    /// The first page mapped.
    pub first: Pfn,
    /// The number of base pages mapped.
    pub pages: u64,
}

/// Why [`TableUnmapper`] failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableUnmapError {
    /// A mapping names an address space the unmapper has no builder for.
    NoSuchSpace {
        /// The index.
        space: usize,
    },
    /// The builder refused (e.g. the extent covers part of a huge leaf).
    Unmap {
        /// The address space.
        space: usize,
        /// Why.
        error: UnmapError,
    },
    /// The mapping's address arithmetic overflows: its pages run past the
    /// last PFN, or the virtual range of the pages to unmap runs past the
    /// top of the address space.
    BadMapping(FileMapping),
    /// The mapping table is full.
    Full,
    /// The extent asked for runs past the last PFN (`first + (pages - 1)`
    /// overflows); nothing was unmapped.
    ExtentWraps(Extent),
    /// The unmapper's `page_shift` is 64 or more: no page size.
    BadPageShift {
        /// The shift given to [`TableUnmapper::new`].
        page_shift: u32,
    },
}

impl fmt::Display for TableUnmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableUnmapError::NoSuchSpace { space } => write!(f, "no address space {space}"),
            TableUnmapError::Unmap { space, error } => write!(f, "space {space}: {error}"),
            TableUnmapError::BadMapping(m) => write!(f, "mapping {m:?} overflows"),
            TableUnmapError::Full => f.write_str("mapping table full"),
            TableUnmapError::ExtentWraps(e) => write!(
                f,
                "extent at {} of {} pages runs past the last PFN",
                e.first, e.pages
            ),
            TableUnmapError::BadPageShift { page_shift } => {
                write!(f, "page shift {page_shift} is not below 64")
            }
        }
    }
}

impl core::error::Error for TableUnmapError {}

/// An [`Unmapper`] over pagepin's own tables: a set of address spaces (table
/// builders), the file mappings in them (up to `N`), and a TLB hook.
pub struct TableUnmapper<'s, 'b, F, A: ?Sized, R, T, const N: usize> {
    spaces: &'s mut [TableBuilder<'b, F, A, R>],
    mappings: Vec<FileMapping, N>,
    page_shift: u32,
    tlb: T,
}

impl<F, A: ?Sized, R, T, const N: usize> fmt::Debug for TableUnmapper<'_, '_, F, A, R, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableUnmapper")
            .field("spaces", &self.spaces.len())
            .field("mappings", &self.mappings)
            .finish()
    }
}

impl<'s, 'b, F, A, R, T, const N: usize> TableUnmapper<'s, 'b, F, A, R, T, N>
where
    F: PagingFormat,
    A: TableAccess + ?Sized,
    R: Retire,
    T: TlbShootdown,
{
    /// An unmapper over `spaces`, whose PFNs are of `2^page_shift`-byte pages
    /// (the memory map's base page, [`MemoryMap::PAGE_SHIFT`]), flushing
    /// through `tlb`. A `page_shift` of 64 or more makes every
    /// [`unmap_extent`](Unmapper::unmap_extent) fail with
    /// [`TableUnmapError::BadPageShift`].
    ///
    /// [`MemoryMap::PAGE_SHIFT`]: crate::memmap::MemoryMap::PAGE_SHIFT
    ///
    /// # Safety
    ///
    /// Before a truncate through this unmapper reaches its unmap step, every
    /// mapping of a page it truncates, in every address space a walker or an
    /// MMU uses, is one of `spaces` and registered with
    /// [`add_mapping`](Self::add_mapping) (the unmapper clears only what it is
    /// told about, and the truncate then frees the pages).
    pub unsafe fn new(
        spaces: &'s mut [TableBuilder<'b, F, A, R>],
        page_shift: u32,
        tlb: T,
    ) -> Self {
        TableUnmapper {
            spaces,
            mappings: Vec::new(),
            page_shift,
            tlb,
        }
    }

    /// Records that `mapping` exists (the kernel's reverse map).
    ///
    /// # Errors
    ///
    /// [`TableUnmapError::Full`] when `N` mappings are recorded.
    pub fn add_mapping(&mut self, mapping: FileMapping) -> Result<(), TableUnmapError> {
        self.mappings
            .push(mapping)
            .map_err(|_| TableUnmapError::Full)
    }

    /// The address spaces.
    pub fn spaces(&mut self) -> &mut [TableBuilder<'b, F, A, R>] {
        self.spaces
    }

    /// The TLB hook.
    pub fn tlb(&mut self) -> &mut T {
        &mut self.tlb
    }
}

// SAFETY: `unmap_extent` unmaps every registered mapping that meets the extent
// and flushes through `T` (an `unsafe` promise of completeness) before it
// returns `Ok`; the constructor's caller promised that the registered mappings
// are all the mappings of the pages.
unsafe impl<F, A, R, T, const N: usize> Unmapper for TableUnmapper<'_, '_, F, A, R, T, N>
where
    F: PagingFormat,
    A: TableAccess + ?Sized,
    R: Retire,
    T: TlbShootdown,
{
    type Error = TableUnmapError;

    /// # Errors
    ///
    /// [`TableUnmapError::ExtentWraps`] and [`TableUnmapError::BadPageShift`]
    /// before anything is unmapped; the others as their variants say, the
    /// mappings before the failing one unmapped.
    fn unmap_extent(&mut self, extent: Extent) -> Result<(), TableUnmapError> {
        // PFN intervals are inclusive (`first ..= last`) throughout: an extent
        // or a mapping that ends at the last PFN, `u64::MAX`, has no exclusive
        // end in a `u64`, and is not a wrap.
        if extent.pages == 0 {
            return Ok(());
        }
        // `pages >= 1`: the `- 1` does not wrap; the sum is checked.
        let last = extent
            .first
            .0
            .checked_add(extent.pages - 1)
            .ok_or(TableUnmapError::ExtentWraps(extent))?;
        // `page_shift` is the caller's: a shift of 64 or more is an error,
        // not a debug panic or a silently wrapped shift.
        let page = 1u64
            .checked_shl(self.page_shift)
            .ok_or(TableUnmapError::BadPageShift {
                page_shift: self.page_shift,
            })?;
        for m in &self.mappings {
            if m.pages == 0 {
                continue;
            }
            let bad = TableUnmapError::BadMapping(*m);
            let m_last = m.first.0.checked_add(m.pages - 1).ok_or(bad)?;
            // The pages of both: `a ..= b`, empty when `a > b`.
            let (a, b) = (extent.first.0.max(m.first.0), last.min(m_last));
            if a > b {
                continue;
            }
            // `a >= m.first` and `b >= a`: the subtractions do not wrap; the
            // products and the sums are checked. `b - a + 1` overflows only for
            // all 2^64 PFNs; `len` is at least one page, so `va + (len - 1)`
            // (the builder's check) may end at `u64::MAX`.
            let offset = (a - m.first.0).checked_mul(page).ok_or(bad)?;
            let len = (b - a)
                .checked_add(1)
                .and_then(|pages| pages.checked_mul(page))
                .ok_or(bad)?;
            let va = VirtAddr(m.va.0.checked_add(offset).ok_or(bad)?);
            let space = self
                .spaces
                .get_mut(m.space)
                .ok_or(TableUnmapError::NoSuchSpace { space: m.space })?;
            let done = space
                .unmap(va, len)
                .map_err(|error| TableUnmapError::Unmap {
                    space: m.space,
                    error,
                })?;
            if let Ok(range) = VaRange::new(va, len) {
                self.tlb.flush(m.space, range, done.sizes);
            }
        }
        Ok(())
    }
}
