//! Run: `cargo test --test table_aarch64_malformed`
//!
//! Bad input to the aarch64 and EPT formats gets a typed error, never a panic,
//! a hang or a read outside the table memory: random raw tables walked with
//! every granule, both stages and EPT; block descriptors where the granule has
//! none; the block encoding at level 3; indices beyond a short start table;
//! EPT misconfigurations met during a walk.

use pagepin::arch::aarch64::*;
use pagepin::arch::x86_64::{Ept4Level, Ept5Level};
use pagepin::sync::Ordering;
use pagepin::table::*;
use proptest::prelude::*;

mod malformed_common;
use malformed_common::Rng;

const CASES: u32 = if cfg!(miri) { 2 } else { 128 };
/// 128 KiB of tables: two 64 KiB tables, eight 16 KiB ones.
const FRAMES: usize = 32;
const BASE: PhysAddr = PhysAddr(0x100_0000);
/// Items taken from one walk: garbage can describe billions of leaves.
const MAX_ITEMS: usize = 1024;

impl Rng {
    /// Empty, garbage, or a valid-looking descriptor (any type bits, random
    /// attributes) pointing into, next to or far from the table memory, at
    /// 4 KiB alignment (so often misaligned for larger granules).
    fn entry(&mut self) -> u64 {
        let r = self.next();
        let attrs = self.next() & 0xfff0_0000_0000_0fff;
        let into = BASE.0 + (r >> 8) % (FRAMES as u64 + 2) * 4096;
        match r % 8 {
            0 | 1 => 0,
            2 => self.next(),
            3..=6 => into | attrs,
            _ => (self.next() & 0x000f_ffff_ffff_f000) | attrs,
        }
    }
}

/// The shared garbage walk, with half the start addresses moved inside the
/// format's window (its canonical range, or the one below it for TTBR1).
fn walk_garbage<F: PagingFormat>(frames: &[HostFrame], vas: &[(u64, u64)]) {
    let window = 1u64 << F::GEOMETRY.va_bits();
    let vas = vas.iter().map(|&(start, len)| {
        let start = if start & 1 == 0 {
            start % window
        } else {
            start
        };
        (start, len)
    });
    malformed_common::walk_garbage::<F>(frames, BASE, MAX_ITEMS, vas);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_tables_give_items_or_typed_errors(
        seed in 1..u64::MAX,
        vas in prop::collection::vec((any::<u64>(), 1..u64::MAX >> 16), 1..6),
    ) {
        let frames: Vec<HostFrame> = (0..FRAMES).map(|_| HostFrame::new()).collect();
        let mut rng = Rng(seed);
        for frame in &frames {
            for word in &frame.entries {
                // Relaxed: single-threaded setup.
                word.store(rng.entry(), Ordering::Relaxed);
            }
        }
        walk_garbage::<Stage1G4K48>(&frames, &vas);
        walk_garbage::<Stage1G4K39>(&frames, &vas);
        walk_garbage::<Stage1G4K48Ttbr1>(&frames, &vas);
        walk_garbage::<Stage1G16K48>(&frames, &vas);
        walk_garbage::<Stage1G16K36>(&frames, &vas);
        walk_garbage::<Stage1G64K48>(&frames, &vas);
        walk_garbage::<Stage1G64K42>(&frames, &vas);
        walk_garbage::<Stage2G4K40>(&frames, &vas);
        walk_garbage::<Stage2G16K40>(&frames, &vas);
        walk_garbage::<Stage2G64K48>(&frames, &vas);
        walk_garbage::<Ept4Level>(&frames, &vas);
        walk_garbage::<Ept5Level>(&frames, &vas);
    }
}

/// Host memory of `n` frames whose words are set from `(frame, index, raw)`.
fn memory_with(n: usize, words: &[(usize, usize, u64)]) -> Vec<HostFrame> {
    let frames: Vec<HostFrame> = (0..n).map(|_| HostFrame::new()).collect();
    for &(frame, index, raw) in words {
        // Relaxed: single-threaded setup.
        frames[frame].entries[index].store(raw, Ordering::Relaxed);
    }
    frames
}

fn pa(frame: u64) -> u64 {
    BASE.0 + frame * 4096
}

fn decode_error<F: PagingFormat>(frames: &[HostFrame], va: u64) -> (EntryLoc, DecodeError) {
    let memory = HostMemory::new(frames, BASE).unwrap();
    let walker = Walker::<F, _>::new(&memory, BASE);
    match walker
        .translate(VirtAddr(va))
        .expect_err("a typed error")
        .kind
    {
        WalkErrorKind::Decode { loc, error, .. } => (loc, error),
        kind => panic!("not a decode error: {kind:?}"),
    }
}

const TABLE: u64 = 0b11;
const BLOCK: u64 = 0b01;

#[test]
fn blocks_where_the_granule_has_none_stop_the_walk() {
    // 4 KiB: a level 0 block (needs FEAT_LPA2).
    let frames = memory_with(1, &[(0, 0, BLOCK)]);
    assert_eq!(
        decode_error::<Stage1G4K48>(&frames, 0x1000).1,
        DecodeError::LeafNotAllowed { level: 0 }
    );
    // 16 KiB, 48-bit: root (level 0) → level 1 table with a block (needs LPA2).
    let frames = memory_with(8, &[(0, 0, pa(4) | TABLE), (4, 0, BLOCK)]);
    assert_eq!(
        decode_error::<Stage1G16K48>(&frames, 0x4000),
        (
            EntryLoc {
                table: PhysAddr(pa(4)),
                index: 0,
                level: 1
            },
            DecodeError::LeafNotAllowed { level: 1 }
        )
    );
    // 64 KiB, 48-bit: a block at the start level, Arm level 1 (needs LPA).
    let frames = memory_with(16, &[(0, 0, BLOCK)]);
    assert_eq!(
        decode_error::<Stage1G64K48>(&frames, 0x1_0000).1,
        DecodeError::LeafNotAllowed { level: 0 }
    );
    // Stage 2 has the same block levels.
    assert_eq!(
        decode_error::<Stage2G64K48>(&frames, 0x1_0000).1,
        DecodeError::LeafNotAllowed { level: 0 }
    );
}

#[test]
fn the_block_encoding_at_level_3_is_a_typed_error() {
    // 4 KiB, 39-bit: level 1 → level 2 → level 3 entry 1 holding 0b01.
    let frames = memory_with(
        3,
        &[
            (0, 0, pa(1) | TABLE),
            (1, 0, pa(2) | TABLE),
            (2, 1, 0x8000 | BLOCK),
        ],
    );
    assert_eq!(
        decode_error::<Stage1G4K39>(&frames, 0x1000),
        (
            EntryLoc {
                table: PhysAddr(pa(2)),
                index: 1,
                level: 2
            },
            DecodeError::ReservedEncoding { field: BLOCK }
        )
    );
}

#[test]
fn indices_beyond_a_short_start_table_are_refused() {
    let frames = memory_with(4, &[]);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    // 16 KiB, 48-bit: two start entries; bit 48 and above are not canonical,
    // so no address indexes past them.
    let walker = Walker::<Stage1G16K48, _>::new(&memory, BASE);
    assert_eq!(
        walker.translate(VirtAddr(1 << 48)).unwrap_err().kind,
        WalkErrorKind::NonCanonical
    );
    assert_eq!(
        walker.walk(VirtAddr(0xffff_ffff_c000), 0x8000).unwrap_err(),
        RangeError::NonCanonical {
            va: VirtAddr(1 << 48)
        }
    );
    let beyond = |index, level| EntryLoc {
        table: BASE,
        index,
        level,
    };
    assert_eq!(
        walker.reload(beyond(2, 0)),
        Err(AccessError::Unreachable {
            table: BASE,
            index: 2
        })
    );
    // 64 KiB, 48-bit: 64 start entries.
    let frames = memory_with(16, &[]);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let walker = Walker::<Stage1G64K48, _>::new(&memory, BASE);
    assert!(walker.reload(beyond(63, 0)).is_ok());
    assert!(matches!(
        walker.reload(beyond(64, 0)),
        Err(AccessError::Unreachable { index: 64, .. })
    ));
    // Stage 2, 4 KiB, 40-bit IPA: 1024 concatenated start entries, not 1025.
    let walker = Walker::<Stage2G4K40, _>::new(&memory, BASE);
    assert!(walker.reload(beyond(1023, 0)).is_ok());
    assert!(walker.reload(beyond(1024, 0)).is_err());
}

#[test]
fn ept_misconfigurations_stop_the_walk() {
    // PML4E 0 → PDPT; PDPTE 0 write-only; PDPTE 1 → PD whose PDE 0 is a 2 MiB
    // leaf of memory type 7.
    let frames = memory_with(
        3,
        &[
            (0, 0, pa(1) | 0b111),
            (1, 0, pa(2) | 0b010),
            (1, 1, pa(2) | 0b111),
            (2, 0, 0x20_0000 | 1 << 7 | 7 << 3 | 0b001),
        ],
    );
    assert_eq!(
        decode_error::<Ept4Level>(&frames, 0x1000).1,
        DecodeError::ReservedEncoding { field: 0b010 }
    );
    assert_eq!(
        decode_error::<Ept4Level>(&frames, 1 << 30).1,
        DecodeError::ReservedEncoding { field: 7 << 3 }
    );
}
