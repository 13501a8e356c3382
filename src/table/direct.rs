//! [`DirectMap`]: the [`TableAccess`] of a kernel that maps all of its page
//! tables' physical memory at one fixed offset (a direct map, or an identity
//! map with offset 0), the access nearly every kernel writes.

use core::marker::PhantomData;

use super::access::TableAccess;
use super::addr::PhysAddr;
use super::error::AccessError;
use crate::sync::AtomicU64;

/// Reaches entry `index` of the table at physical address `table` at virtual
/// address `table + 8 × index + offset`, for tables inside the physical range
/// `first ..= last`.
///
/// The offset is added modulo 2^64, so a direct map below its physical memory
/// is an offset that wraps (`offset = va_base.wrapping_sub(pa_base)`).
///
/// ```
/// use pagepin::table::{DirectMap, PhysAddr, TableAccess};
///
/// // A kernel's direct map: physical memory 0 ..= 4 GiB - 1 at
/// // 0xffff_8880_0000_0000 (here a host buffer stands in for it).
/// let frames: Vec<pagepin::table::HostFrame> =
///     (0..2).map(|_| pagepin::table::HostFrame::new()).collect();
/// let base = PhysAddr(0x10_0000); // the buffer's "physical" address
/// let va = frames.as_ptr().expose_provenance() as u64;
/// // SAFETY: the two frames at `va` hold the tables of `base ..= base + 8 KiB - 1`,
/// // live as long as `access` and are only accessed atomically.
/// let access = unsafe { DirectMap::new(va.wrapping_sub(base.0), base, PhysAddr(base.0 + 0x1fff)) };
/// // SAFETY: these frames hold no live tables; nothing walks them.
/// unsafe { access.entry(PhysAddr(0x10_1000), 3) }.unwrap().store(42, core::sync::atomic::Ordering::Relaxed);
/// assert_eq!(frames[1].entries[3].load(core::sync::atomic::Ordering::Relaxed), 42);
/// // SAFETY: nothing is stored.
/// assert!(unsafe { access.entry(PhysAddr(0x10_2000), 0) }.is_err()); // outside the range
/// ```
///
/// The lifetime `'m` is how long the promise of [`new`](Self::new) holds: a
/// kernel whose direct map lives for ever uses `DirectMap<'static>`; one that
/// must exclude walkers while it writes tables non-atomically ties `'m` to a
/// borrow of its memory (the example `examples/unikernel.rs` hands its
/// non-atomic mapper out only through `&mut` of the same memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirectMap<'m> {
    offset: u64,
    first: PhysAddr,
    last: PhysAddr,
    memory: PhantomData<&'m [AtomicU64]>,
}

impl<'m> DirectMap<'m> {
    /// An access to the page tables in physical memory `first ..= last`,
    /// mapped at `physical address + offset` (modulo 2^64).
    ///
    /// # Safety
    ///
    /// For `'m` (every reference the access hands out lives at most that
    /// long), the caller promises:
    ///
    /// 1. every 8-byte-aligned physical address `pa` in `first ..= last - 7`
    ///    is readable and writable at virtual address `pa + offset`, by the
    ///    CPU running the walk, and holds the same memory for every CPU;
    /// 2. that memory is only ever accessed atomically (the MMU's walks and
    ///    atomic loads and stores: no plain writes while a walker may read it);
    /// 3. the virtual addresses `first + offset ..= last + offset` do not wrap
    ///    around the top of the address space.
    pub const unsafe fn new(offset: u64, first: PhysAddr, last: PhysAddr) -> DirectMap<'m> {
        DirectMap {
            offset,
            first,
            last,
            memory: PhantomData,
        }
    }

    /// An identity map of `first ..= last` (offset 0).
    ///
    /// # Safety
    ///
    /// As [`new`](Self::new) with offset 0.
    pub const unsafe fn identity(first: PhysAddr, last: PhysAddr) -> DirectMap<'m> {
        // SAFETY: the caller's promise is `new`'s with offset 0.
        unsafe { DirectMap::new(0, first, last) }
    }

    /// The offset from a physical address to its virtual address.
    pub const fn offset(&self) -> u64 {
        self.offset
    }

    /// The physical range the access reaches: `(first, last)`, inclusive.
    pub const fn range(&self) -> (PhysAddr, PhysAddr) {
        (self.first, self.last)
    }

    /// [`TableAccess::entry`], with the reference living for all of `'m`
    /// rather than the borrow of `self`: for a kernel's own access that wraps
    /// this one (adding checks, or built afresh on each call).
    ///
    /// # Errors
    ///
    /// As [`TableAccess::entry`].
    ///
    /// # Safety
    ///
    /// As [`TableAccess::entry`]: a store keeps the tables' builder right
    /// about them. (A word of a data page, not a table, is the caller's to
    /// write as the page's owner.)
    #[inline]
    pub unsafe fn word(&self, table: PhysAddr, index: usize) -> Result<&'m AtomicU64, AccessError> {
        let word = core::ptr::with_exposed_provenance::<AtomicU64>(self.va(table, index)?);
        // SAFETY: `va` checked that the entry's physical address is 8-byte
        // aligned (the table is, and `8 * index` is) and inside
        // `first ..= last - 7`, so by the constructor's promise (point 1) the
        // word's virtual address is the live, mapped, aligned memory of that
        // entry for all of `'m`; it is only accessed atomically (point 2), so
        // a shared reference to an `AtomicU64` there is sound (what is stored
        // through it is the caller's promise).
        Ok(unsafe { &*word })
    }

    /// The virtual address of entry `index` of the table at `table`, checked
    /// as [`word`](Self::word) says.
    fn va(&self, table: PhysAddr, index: usize) -> Result<usize, AccessError> {
        if table.0 % 8 != 0 {
            return Err(AccessError::Misaligned { table });
        }
        let unreachable = AccessError::Unreachable { table, index };
        // The entry's physical address and its last byte, checked: a corrupt
        // table pointer near 2^64 is an error, not a wrap.
        let pa = (index as u64)
            .checked_mul(8)
            .and_then(|offset| table.0.checked_add(offset))
            .ok_or(unreachable)?;
        let in_range =
            pa >= self.first.0 && pa.checked_add(7).is_some_and(|end| end <= self.last.0);
        if !in_range {
            return Err(unreachable);
        }
        usize::try_from(pa.wrapping_add(self.offset)).map_err(|_| unreachable)
    }
}

// SAFETY: (1) `entry` computes the word's address from its arguments alone
// (`table + 8 * index + offset`), so the same arguments give the same word,
// which the constructor's caller promised is the memory of that entry for every
// CPU; (2) distinct entries of one table and distinct tables are distinct
// physical addresses, and `pa + offset` is injective; (3) promised by the
// constructor's caller (point 2). Every word `word` returns lies inside
// `first ..= last` (checked there), where point 1 applies.
unsafe impl<'m> TableAccess for DirectMap<'m> {
    #[inline]
    unsafe fn entry(&self, table: PhysAddr, index: usize) -> Result<&AtomicU64, AccessError> {
        // SAFETY: the caller's promise is `word`'s.
        unsafe { self.word(table, index) }
    }

    #[inline]
    unsafe fn entries(&self, table: PhysAddr, index: usize, n: usize) -> Option<&[AtomicU64]> {
        let first = self.va(table, index).ok()?;
        // The last word is checked as every word is: both ends inside
        // `first ..= last - 7`.
        self.va(table, index.checked_add(n.checked_sub(1)?)?).ok()?;
        let words = core::ptr::with_exposed_provenance::<AtomicU64>(first);
        // SAFETY: the words of entries `index ..= index + n - 1` are at the
        // physical addresses `table + 8 × index` onwards, every one between
        // the two checked above and so 8-byte aligned inside
        // `first ..= last - 7`; the map is `pa + offset` without wrapping (the
        // constructor's point 3), so they are `n` consecutive words from
        // `first`'s virtual address on, each the live memory of its entry for
        // `'m` (point 1), only ever accessed atomically (point 2): a shared
        // slice of `AtomicU64` over them is sound (what is stored through it
        // is the caller's promise), and word `i` is the one
        // `entry(table, index + i)` returns.
        Some(unsafe { core::slice::from_raw_parts(words, n) })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use super::*;
    use crate::sync::Ordering;
    use crate::table::HostFrame;
    use std::vec::Vec;

    fn frames(n: usize) -> Vec<HostFrame> {
        (0..n).map(|_| HostFrame::new()).collect()
    }

    #[test]
    fn entries_are_the_words_at_the_offset() {
        let frames = frames(3);
        let base = PhysAddr(0x4000_0000);
        let va = frames.as_ptr().expose_provenance() as u64;
        let last = PhysAddr(base.0 + 3 * 4096 - 1);
        // SAFETY: the frames back `base ..= last` at `va`, outlive `access`,
        // and are only accessed atomically.
        let access = unsafe { DirectMap::new(va.wrapping_sub(base.0), base, last) };
        // SAFETY: a test of the access alone: these frames hold no tables, nothing walks them.
        let word = unsafe { access.entry(PhysAddr(base.0 + 4096), 511) }.unwrap();
        word.store(0x1234, Ordering::Relaxed);
        assert_eq!(frames[1].entries[511].load(Ordering::Relaxed), 0x1234);
        assert!(core::ptr::eq(
            word,
            // SAFETY: the word is only loaded.
            unsafe { access.entry(PhysAddr(base.0 + 4096), 511) }.unwrap()
        ));
        assert_eq!(access.range(), (base, last));
    }

    #[test]
    fn runs_of_entries_are_the_words_entry_returns() {
        let frames = frames(2);
        let base = PhysAddr(0x4000_0000);
        let va = frames.as_ptr().expose_provenance() as u64;
        let last = PhysAddr(base.0 + 2 * 4096 - 1);
        // SAFETY: the frames back `base ..= last` at `va`, outlive `access`,
        // and are only accessed atomically.
        let access = unsafe { DirectMap::new(va.wrapping_sub(base.0), base, last) };
        let table = PhysAddr(base.0 + 4096);
        // SAFETY: a test of the access alone: nothing is stored through
        // these words, nothing walks these frames.
        let entries = |t, i, n| unsafe { access.entries(t, i, n) };
        // SAFETY: as above.
        let entry = |t, i| unsafe { access.entry(t, i) };
        let words = entries(table, 500, 12).unwrap();
        assert_eq!(words.len(), 12);
        for (i, word) in words.iter().enumerate() {
            assert!(core::ptr::eq(word, entry(table, 500 + i).unwrap()));
        }
        // Past the end of the range, empty, or overflowing: none.
        assert!(entries(table, 500, 13).is_none());
        assert!(entries(table, 0, 0).is_none());
        assert!(entries(table, usize::MAX, 2).is_none());
    }

    #[test]
    fn out_of_range_misaligned_and_overflowing_entries_are_errors() {
        let frames = frames(1);
        let base = PhysAddr(0x1000);
        let va = frames.as_ptr().expose_provenance() as u64;
        // SAFETY: as above, one frame.
        let access = unsafe { DirectMap::new(va.wrapping_sub(base.0), base, PhysAddr(0x1fff)) };
        // SAFETY: the word is only loaded.
        let err = |table: u64, index: usize| unsafe { access.entry(PhysAddr(table), index) }.err();
        let unreachable = |table, index| {
            Some(AccessError::Unreachable {
                table: PhysAddr(table),
                index,
            })
        };
        assert_eq!(err(0x2000, 0), unreachable(0x2000, 0));
        assert_eq!(err(0x1000, 512), unreachable(0x1000, 512));
        assert_eq!(err(0, 0), unreachable(0, 0));
        assert_eq!(
            err(0x1004, 0),
            Some(AccessError::Misaligned {
                table: PhysAddr(0x1004)
            })
        );
        let top = !7u64;
        assert_eq!(err(top, 1), unreachable(top, 1));
        assert_eq!(err(0x1000, usize::MAX), unreachable(0x1000, usize::MAX));
        assert!(err(0x1000, 511).is_none());
    }
}
