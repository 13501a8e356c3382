//! Page tables in host memory, for tests, examples and benchmarks (the `host`
//! feature): [`HostFrame`]s that pretend to be physical memory, reached through
//! [`HostMemory`]. A kernel implements [`TableAccess`] over its direct map
//! ([`DirectMap`](super::DirectMap)) instead.

use core::fmt;

use super::access::TableAccess;
use super::addr::PhysAddr;
use super::error::AccessError;
use crate::sync::AtomicU64;

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
/// // SAFETY: nothing is stored.
/// unsafe {
///     assert!(memory.entry(PhysAddr(0x10_1000), 511).is_ok());
///     assert!(memory.entry(PhysAddr(0x10_1000), 512).is_err()); // past the slice
///     assert!(memory.entry(PhysAddr(0x10_0800), 0).is_err()); // misaligned table
/// }
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
    unsafe fn entry(&self, table: PhysAddr, index: usize) -> Result<&AtomicU64, AccessError> {
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

    #[inline]
    unsafe fn entries(&self, table: PhysAddr, index: usize, n: usize) -> Option<&[AtomicU64]> {
        // Entries inside one frame only (a larger table asks `entry` for each):
        // the same frame `entry` finds, and the same words, by position.
        if table.0 % HOST_FRAME_SIZE != 0 {
            return None;
        }
        let frame = usize::try_from(table.0.checked_sub(self.base.0)? / HOST_FRAME_SIZE).ok()?;
        self.frames
            .get(frame)?
            .entries
            .get(index..index.checked_add(n)?)
    }
}

// Host frames are loom atomics under `cfg(loom)`, usable only inside a model.
/// Why host memory cannot be set up.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostMemoryError {
    /// The base address is not aligned to a frame.
    MisalignedBase {
        /// The base address.
        base: PhysAddr,
    },
    /// The frames would extend past the end of the physical address space.
    TooLarge,
}

impl fmt::Display for HostMemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMemoryError::MisalignedBase { base } => {
                write!(f, "host memory base {base} is not frame-aligned")
            }
            HostMemoryError::TooLarge => {
                f.write_str("host memory exceeds the physical address space")
            }
        }
    }
}

impl core::error::Error for HostMemoryError {}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use super::*;
    use crate::sync::Ordering;
    use std::vec::Vec;

    #[test]
    fn runs_of_entries_are_the_words_entry_returns() {
        let frames: Vec<HostFrame> = (0..2).map(|_| HostFrame::new()).collect();
        let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
        let table = PhysAddr(0x10_1000);
        // SAFETY: a test of the access alone: nothing is stored through
        // these words, nothing walks these frames.
        let entries = |t, i, n| unsafe { memory.entries(t, i, n) };
        // SAFETY: as above.
        let entry = |t, i| unsafe { memory.entry(t, i) };
        let words = entries(table, 500, 12).unwrap();
        assert_eq!(words.len(), 12);
        for (i, word) in words.iter().enumerate() {
            assert!(core::ptr::eq(word, entry(table, 500 + i).unwrap()));
        }
        // Past the frame (a larger table asks entry by entry), outside the
        // memory, misaligned: none.
        assert!(entries(table, 500, 13).is_none());
        assert!(entries(PhysAddr(0x10_2000), 0, 1).is_none());
        assert!(entries(PhysAddr(0x10_0800), 0, 1).is_none());
    }

    #[test]
    fn host_memory_reaches_exactly_its_frames() {
        let frames: Vec<HostFrame> = (0..3).map(|_| HostFrame::new()).collect();
        let mem = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
        // Relaxed: single-threaded test.
        // SAFETY: a test of the access alone: these frames hold no tables, nothing walks them.
        unsafe { mem.entry(PhysAddr(0x10_2000), 7) }
            .unwrap()
            .store(42, Ordering::Relaxed);
        assert_eq!(frames[2].entries[7].load(Ordering::Relaxed), 42);
        // A table spanning frames (as a 64 KiB-granule table would).
        assert!(core::ptr::eq(
            // SAFETY: the word is only loaded.
            unsafe { mem.entry(PhysAddr(0x10_0000), 512 * 2 + 7) }.unwrap(),
            &frames[2].entries[7]
        ));
        // SAFETY: the word is only loaded.
        let err = |table, index| unsafe { mem.entry(PhysAddr(table), index) }.unwrap_err();
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
