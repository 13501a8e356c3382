//! Table access: from a table's physical address and an index to the atomic
//! word that holds the entry.
//!
//! Every entry is read with one atomic 64-bit load, so a walker racing a writer
//! sees either the old or the new entry, never a torn mix.
//!
//! # Implementing it in a kernel
//!
//! With a *direct map* (all of physical memory mapped at a fixed virtual offset,
//! as Linux's `PAGE_OFFSET` or the x86_64 crate's `OffsetPageTable`), the entry of
//! `(table, index)` is at virtual address `offset + table + 8 * index`; check the
//! physical address against the top of the direct map, then turn the address
//! into `&AtomicU64`. An *identity map* is the same with an offset of 0.
//! Page-table pages must only ever be accessed atomically (no plain writes while
//! a walker may read them), and they must stay mapped for as long as the
//! returned references live: a lockless walker relies on the walk guard (an
//! epoch or RCU read section, with table freeing deferred) for that.

use super::addr::PhysAddr;
use super::error::{AccessError, HostMemoryError};
use crate::sync::{AtomicU64, Ordering};

/// Reaches the entries of page tables by physical address.
///
/// # Safety
///
/// Implementors promise that, for as long as `&self` lives:
///
/// 1. `entry(table, index)` returns the one atomic word that holds entry `index`
///    of the table at physical address `table` — the word the MMU and every
///    other walker of the same tables use — or an error; it returns the same
///    word every time it is called with the same arguments.
/// 2. Distinct `(table, index)` pairs inside one table, and distinct tables,
///    never share a word.
/// 3. The words are only ever accessed atomically.
/// 4. [`load`](Self::load), if overridden, returns what `word.load(order)`
///    returns, by making exactly that load (it may check or count first).
///
/// The builder writes page tables through these references and the MMU and
/// GUP-fast act on what they contain, so a word in the wrong place is memory
/// unsafety outside this crate.
///
/// The word is `crate::sync`'s `AtomicU64`: under `cfg(loom)` that is loom's
/// model type, larger than 8 bytes, so an implementation that reinterprets raw
/// table memory as atomics is only valid in normal builds; loom models
/// implement the trait over their own loom atomics (as `tests/loom_common`).
pub unsafe trait TableAccess {
    /// The word of entry `index` in the table at `table`.
    ///
    /// # Errors
    ///
    /// [`AccessError::Unreachable`] when the entry lies outside the memory this
    /// access reaches, [`AccessError::Misaligned`] when `table` is not aligned as
    /// the access requires.
    fn entry(&self, table: PhysAddr, index: usize) -> Result<&AtomicU64, AccessError>;

    /// Loads a word [`entry`](Self::entry) returned. Every load a walk or
    /// GUP-fast makes of a table entry goes through here, including the
    /// re-checks of words it resolved earlier, so an access that audits table
    /// lifetimes (a debugging kernel, the loom models, whose freed tables are
    /// `loom::cell::UnsafeCell`s) sees each of them. The default is the load
    /// itself.
    #[inline(always)]
    fn load(&self, word: &AtomicU64, order: Ordering) -> u64 {
        // The caller's ordering (see `table::walk`: Acquire for entries that
        // may point to tables, Relaxed at leaf-only levels).
        word.load(order)
    }
}

/// The size of a [`HostFrame`] in bytes.
pub const HOST_FRAME_SIZE: u64 = 4096;

/// The number of 64-bit entries in a [`HostFrame`].
pub const HOST_FRAME_ENTRIES: usize = (HOST_FRAME_SIZE / 8) as usize;

/// A 4 KiB-aligned frame of host memory that can hold a page table.
#[repr(C, align(4096))]
pub struct HostFrame {
    /// The frame's words.
    pub entries: [AtomicU64; HOST_FRAME_ENTRIES],
}

static_assertions::const_assert_eq!(HOST_FRAME_SIZE, 4096);
#[cfg(not(loom))]
static_assertions::assert_eq_size!(HostFrame, [u8; 4096]);

impl HostFrame {
    /// A zero-filled frame.
    pub fn new() -> HostFrame {
        HostFrame {
            entries: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Default for HostFrame {
    fn default() -> HostFrame {
        HostFrame::new()
    }
}

/// Page tables in ordinary memory: a caller-provided slice of [`HostFrame`]s that
/// *pretends* to be physical memory starting at `base`.
///
/// The physical address of byte `k` of the slice is `base + k`, so tests and
/// examples can use realistic addresses such as `0x10_0000`. Tables must be
/// frame-aligned. This is what the tests, the examples and a host-side GUP-fast
/// walk; a kernel implements [`TableAccess`] over its direct map instead.
///
/// ```
/// use pagepin::table::{HostFrame, HostMemory, PhysAddr, TableAccess};
///
/// let frames = [HostFrame::new(), HostFrame::new()];
/// let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
/// assert!(memory.entry(PhysAddr(0x10_1000), 511).is_ok());
/// assert!(memory.entry(PhysAddr(0x10_1000), 512).is_err()); // past the slice
/// assert!(memory.entry(PhysAddr(0x10_0800), 0).is_err()); // misaligned table
/// ```
#[derive(Clone, Copy)]
pub struct HostMemory<'a> {
    frames: &'a [HostFrame],
    base: PhysAddr,
}

impl<'a> HostMemory<'a> {
    /// `frames`, with its first byte at physical address `base`.
    ///
    /// # Errors
    ///
    /// [`HostMemoryError::MisalignedBase`] unless `base` is a multiple of
    /// [`HOST_FRAME_SIZE`]; [`HostMemoryError::TooLarge`] if the frames would
    /// extend past physical address `u64::MAX`.
    pub fn new(frames: &'a [HostFrame], base: PhysAddr) -> Result<HostMemory<'a>, HostMemoryError> {
        if base.0 % HOST_FRAME_SIZE != 0 {
            return Err(HostMemoryError::MisalignedBase { base });
        }
        let bytes = (frames.len() as u64)
            .checked_mul(HOST_FRAME_SIZE)
            .ok_or(HostMemoryError::TooLarge)?;
        if bytes != 0 && base.0.checked_add(bytes - 1).is_none() {
            return Err(HostMemoryError::TooLarge);
        }
        Ok(HostMemory { frames, base })
    }

    /// The physical address of the first frame.
    #[inline]
    pub fn base(&self) -> PhysAddr {
        self.base
    }

    /// The number of frames.
    #[inline]
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// The physical address of frame `i`, `None` past the last frame.
    #[inline]
    pub fn frame_pa(&self, i: usize) -> Option<PhysAddr> {
        if i < self.frames.len() {
            // `i < len`, and `new` checked `base + (len * FRAME_SIZE - 1)`
            // (both steps): `base + i * FRAME_SIZE` is at most that, minus a
            // frame.
            Some(PhysAddr(self.base.0 + i as u64 * HOST_FRAME_SIZE))
        } else {
            None
        }
    }

    /// The physical addresses of all frames, in order.
    pub fn frame_pas(
        &self,
    ) -> impl DoubleEndedIterator<Item = PhysAddr> + ExactSizeIterator + use<'a> {
        let base = self.base.0;
        // No overflow, as in `frame_pa`: `i < len`, checked by `new`.
        (0..self.frames.len()).map(move |i| PhysAddr(base + i as u64 * HOST_FRAME_SIZE))
    }
}

impl core::fmt::Debug for HostMemory<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostMemory")
            .field("base", &self.base)
            .field("frames", &self.frames.len())
            .finish()
    }
}

// SAFETY: (1) `entry` computes the word's position from `table - base` and
// `index` alone and returns a reference into the borrowed slice, which lives as
// long as `&self`; (2) distinct positions are distinct words of the slice;
// (3) the slice's words are `AtomicU64`, which has no non-atomic access.
unsafe impl TableAccess for HostMemory<'_> {
    #[inline]
    fn entry(&self, table: PhysAddr, index: usize) -> Result<&AtomicU64, AccessError> {
        if table.0 % HOST_FRAME_SIZE != 0 {
            return Err(AccessError::Misaligned { table });
        }
        let unreachable = AccessError::Unreachable { table, index };
        let frame = table.0.checked_sub(self.base.0).ok_or(unreachable)? / HOST_FRAME_SIZE;
        if index < HOST_FRAME_ENTRIES {
            // The common case: the entry is in the table's first frame.
            let frame = usize::try_from(frame).map_err(|_| unreachable)?;
            return self
                .frames
                .get(frame)
                .map(|f| &f.entries[index])
                .ok_or(unreachable);
        }
        // A table larger than a frame (a 64 KiB granule) continues into the
        // following frames: split the word position into frame and word again.
        // In `u128`: `frame < 2^52` and `index < 2^64`, so the position is
        // below `2^62 + 2^64`, far from overflowing.
        let word = (frame as u128) * HOST_FRAME_ENTRIES as u128 + index as u128;
        let frame = usize::try_from(word / HOST_FRAME_ENTRIES as u128).map_err(|_| unreachable)?;
        let word = (word % HOST_FRAME_ENTRIES as u128) as usize;
        self.frames
            .get(frame)
            .map(|f| &f.entries[word])
            .ok_or(unreachable)
    }
}

// Host frames are loom atomics under `cfg(loom)`, usable only inside a model.
#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use super::*;
    use crate::sync::Ordering;
    use std::vec::Vec;

    #[test]
    fn host_memory_reaches_exactly_its_frames() {
        let frames: Vec<HostFrame> = (0..3).map(|_| HostFrame::new()).collect();
        let mem = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
        // Relaxed: single-threaded test.
        mem.entry(PhysAddr(0x10_2000), 7)
            .unwrap()
            .store(42, Ordering::Relaxed);
        assert_eq!(frames[2].entries[7].load(Ordering::Relaxed), 42);
        // A table spanning frames (as a 64 KiB-granule table would).
        assert!(core::ptr::eq(
            mem.entry(PhysAddr(0x10_0000), 512 * 2 + 7).unwrap(),
            &frames[2].entries[7]
        ));
        let err = |table, index| mem.entry(PhysAddr(table), index).unwrap_err();
        assert_eq!(
            err(0x10_3000, 0),
            AccessError::Unreachable {
                table: PhysAddr(0x10_3000),
                index: 0
            }
        );
        assert!(matches!(err(0xf_f000, 0), AccessError::Unreachable { .. }));
        assert!(matches!(
            err(0x10_2000, 512),
            AccessError::Unreachable { .. }
        ));
        assert!(matches!(
            err(0x10_0000, usize::MAX),
            AccessError::Unreachable { .. }
        ));
        assert!(matches!(
            err(u64::MAX - 4095, usize::MAX),
            AccessError::Unreachable { .. }
        ));
        assert_eq!(
            err(0x10_0008, 0),
            AccessError::Misaligned {
                table: PhysAddr(0x10_0008)
            }
        );
        assert_eq!(mem.frame_pas().collect::<Vec<_>>().len(), 3);
        assert_eq!(mem.frame_pa(2), Some(PhysAddr(0x10_2000)));
        assert_eq!(mem.frame_pa(3), None);
    }

    #[test]
    fn host_memory_rejects_bad_bases() {
        let frames = [HostFrame::new()];
        assert_eq!(
            HostMemory::new(&frames, PhysAddr(0x800)).unwrap_err(),
            HostMemoryError::MisalignedBase {
                base: PhysAddr(0x800)
            }
        );
        assert_eq!(
            HostMemory::new(&frames, PhysAddr(u64::MAX - 4095)).map(|m| m.base()),
            Ok(PhysAddr(u64::MAX - 4095))
        );
        let two = [HostFrame::new(), HostFrame::new()];
        assert_eq!(
            HostMemory::new(&two, PhysAddr(u64::MAX - 4095)).unwrap_err(),
            HostMemoryError::TooLarge
        );
    }
}
