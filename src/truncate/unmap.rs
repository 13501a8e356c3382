//! The unmap step: clear every entry, in every address space, that maps a page
//! of the set, and shoot down the TLBs that may cache them.

use core::fmt;

use heapless::Vec;

use super::extent::Extent;
use crate::memmap::Pfn;
use crate::table::{
    PagingFormat, Retire, TableAccess, TableBuilder, UnmapError, VaRange, VirtAddr,
};

/// Removes the mappings of pages, everywhere.
///
/// Implementations must clear the leaf entries (or the entries pointing to
/// their tables) before any table is freed, and must not return until no CPU
/// can still translate through the cleared entries (TLB shootdown done). GUP-fast
/// walks that already loaded an entry are caught by their re-check and by the
/// marks; it is the *later* accesses through stale TLB entries that the
/// shootdown prevents.
pub trait Unmapper {
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
pub trait TlbShootdown {
    /// Flushes `range` of address space `space` everywhere; returns when done.
    fn flush(&mut self, space: usize, range: VaRange);
}

/// The TLB hook of tables no MMU walks ([`HostMemory`](crate::table::HostMemory)
/// tables in tests, examples and benchmarks): nothing caches their
/// translations, so there is nothing to flush. A kernel's tables always need a
/// real shootdown.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostTlb;

impl TlbShootdown for HostTlb {
    #[inline]
    fn flush(&mut self, _space: usize, _range: VaRange) {}
}

/// Where a run of a file's pages is mapped: pages `first .. first + pages` at
/// `va` in address space `space` (an index into the unmapper's builders).
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
    /// The mapping's address arithmetic overflows.
    BadMapping(FileMapping),
    /// The mapping table is full.
    Full,
}

impl fmt::Display for TableUnmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableUnmapError::NoSuchSpace { space } => write!(f, "no address space {space}"),
            TableUnmapError::Unmap { space, error } => write!(f, "space {space}: {error}"),
            TableUnmapError::BadMapping(m) => write!(f, "mapping {m:?} overflows"),
            TableUnmapError::Full => f.write_str("mapping table full"),
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
    /// (the memory map's base page), flushing through `tlb`.
    pub fn new(spaces: &'s mut [TableBuilder<'b, F, A, R>], page_shift: u32, tlb: T) -> Self {
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

impl<F, A, R, T, const N: usize> Unmapper for TableUnmapper<'_, '_, F, A, R, T, N>
where
    F: PagingFormat,
    A: TableAccess + ?Sized,
    R: Retire,
    T: TlbShootdown,
{
    type Error = TableUnmapError;

    fn unmap_extent(&mut self, extent: Extent) -> Result<(), TableUnmapError> {
        let Some(end) = extent.end() else {
            return Ok(());
        };
        for m in &self.mappings {
            let Some(m_end) = m.first.0.checked_add(m.pages) else {
                return Err(TableUnmapError::BadMapping(*m));
            };
            let (a, b) = (extent.first.0.max(m.first.0), end.min(m_end));
            if a >= b {
                continue;
            }
            let bad = TableUnmapError::BadMapping(*m);
            let page = 1u64 << self.page_shift;
            let offset = (a - m.first.0).checked_mul(page).ok_or(bad)?;
            let len = (b - a).checked_mul(page).ok_or(bad)?;
            let va = VirtAddr(m.va.0.checked_add(offset).ok_or(bad)?);
            let space = self
                .spaces
                .get_mut(m.space)
                .ok_or(TableUnmapError::NoSuchSpace { space: m.space })?;
            space
                .unmap(va, len)
                .map_err(|error| TableUnmapError::Unmap {
                    space: m.space,
                    error,
                })?;
            if let Ok(range) = VaRange::new(va, len) {
                self.tlb.flush(m.space, range);
            }
        }
        Ok(())
    }
}
