//! Shared by the malformed-table tests (`table_malformed.rs`,
//! `table_aarch64_malformed.rs`): a table access that checks every word it hands
//! out lies inside the table memory, a deterministic filler, and the walk of
//! garbage tables that must give items or typed errors, never a panic, a read
//! outside the memory, or more than one load per level per item.

use pagepin::sync::AtomicU64;
use pagepin::table::*;

/// A table access that checks, independently of `HostMemory`, that every word
/// it hands out lies inside the frames, and counts the loads.
pub struct Checked<'a> {
    memory: HostMemory<'a>,
    frames: &'a [HostFrame],
    reads: core::cell::Cell<usize>,
}

// SAFETY: delegates to `HostMemory`, whose contract it inherits unchanged.
unsafe impl TableAccess for Checked<'_> {
    unsafe fn entry(&self, table: PhysAddr, index: usize) -> Result<&AtomicU64, AccessError> {
        self.reads.set(self.reads.get() + 1);
        // SAFETY: the word is only loaded.
        let word = unsafe { self.memory.entry(table, index) }?;
        let start = self.frames.as_ptr() as usize;
        let end = start + core::mem::size_of_val(self.frames);
        let at = word as *const AtomicU64 as usize;
        assert!(
            start <= at && at + 8 <= end,
            "word outside the table memory"
        );
        Ok(word)
    }
}

/// Deterministic filler (xorshift64*), seeded by proptest; each test file adds
/// its own `entry` generator for its formats.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Translates the start of each `(start, len)` and walks up to `max_items`
/// items of the range over the tables rooted at `base` in `frames`: every item
/// tiles the range, every error names the address it stopped at, and no walk
/// loads more than one entry per level per item.
pub fn walk_garbage<F: PagingFormat>(
    frames: &[HostFrame],
    base: PhysAddr,
    max_items: usize,
    vas: impl IntoIterator<Item = (u64, u64)>,
) {
    let checked = Checked {
        memory: HostMemory::new(frames, base).unwrap(),
        frames,
        reads: core::cell::Cell::new(0),
    };
    let depth = F::GEOMETRY.depth();
    let walker = Walker::<F, _>::new(&checked, base);
    for (start, len) in vas {
        checked.reads.set(0);
        match walker.translate(VirtAddr(start)) {
            Ok(item) => assert!(item.va().contains(VirtAddr(start))),
            Err(e) => {
                assert_eq!(e.va, VirtAddr(start));
                assert!(!e.to_string().is_empty());
            }
        }
        assert!(checked.reads.get() <= depth, "one load per level at most");
        let Ok(walk) = walker.walk(VirtAddr(start), len) else {
            continue;
        };
        checked.reads.set(0);
        let mut items = 0;
        let mut next = start;
        for item in walk.take(max_items) {
            items += 1;
            match item {
                Ok(item) => {
                    assert_eq!(item.va().start().0, next, "items tile the range");
                    next = item.va().last().0.wrapping_add(1);
                }
                Err(e) => {
                    assert_eq!(e.va, VirtAddr(next), "the error names the cursor");
                    break;
                }
            }
        }
        assert!(
            checked.reads.get() <= items * depth,
            "bounded loads per item"
        );
    }
}
