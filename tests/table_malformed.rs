//! Run: `cargo test --test table_malformed`
//!
//! Bad input gets a typed error, never a panic, a hang or a read outside the
//! table memory: random raw tables (random words, pointers into, next to and
//! far from the table memory, huge leaves with reserved bits), cyclic tables,
//! non-canonical, empty and wrapping ranges, reserved bits, PS where no leaf may
//! be, and tables the access cannot reach.

use pagepin::arch::x86_64::{Paging4Level, Paging5Level};
use pagepin::sync::Ordering;
use pagepin::table::*;
use proptest::prelude::*;

mod malformed_common;
use malformed_common::Rng;

const CASES: u32 = if cfg!(miri) { 4 } else { 256 };
const FRAMES: usize = 6;
const BASE: PhysAddr = PhysAddr(0x10_0000);
/// Items taken from one walk: garbage tables full of pointers can describe
/// billions of leaves; the walk must make progress, not finish.
const MAX_ITEMS: usize = 2048;

impl Rng {
    /// A word that is sometimes empty, sometimes garbage, often a present entry
    /// pointing into, next to or far from the table memory.
    fn entry(&mut self) -> u64 {
        let r = self.next();
        let flags = self.next() & 0x8000_0000_0000_0fff;
        match r % 8 {
            0 | 1 => 0,
            2 => self.next(),
            3..=5 => (BASE.0 + (r >> 8) % FRAMES as u64 * 4096) | flags | 1,
            6 => {
                (BASE.0.wrapping_sub(4096) + (r >> 8) % 3 * (FRAMES as u64 + 1) * 4096) | flags | 1
            }
            _ => (self.next() & 0x000f_ffff_ffff_f000) | flags | 1,
        }
    }
}

fn walk_garbage<F: PagingFormat>(frames: &[HostFrame], vas: &[(u64, u64)]) {
    malformed_common::walk_garbage::<F>(frames, BASE, MAX_ITEMS, vas.iter().copied());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_tables_give_items_or_typed_errors(
        seed in 1..u64::MAX,
        vas in prop::collection::vec((any::<u64>(), any::<u64>()), 1..8),
        small in prop::collection::vec((0..0x1_0000u64, 1..0x1_0000u64), 1..8),
    ) {
        let frames: Vec<HostFrame> = (0..FRAMES).map(|_| HostFrame::new()).collect();
        let mut rng = Rng(seed);
        for frame in &frames {
            for word in &frame.entries {
                // Relaxed: single-threaded setup.
                word.store(rng.entry(), Ordering::Relaxed);
            }
        }
        // Sign-extend half the addresses so the canonical halves are hit often.
        let canonical: Vec<(u64, u64)> = vas
            .iter()
            .map(|&(va, len)| (((va << 16) as i64 >> 16) as u64, len >> (va % 64)))
            .collect();
        walk_garbage::<Paging4Level>(&frames, &vas);
        walk_garbage::<Paging4Level>(&frames, &canonical);
        walk_garbage::<Paging5Level>(&frames, &canonical);
        walk_garbage::<X86M36>(&frames, &canonical);
        walk_garbage::<Toy>(&frames, &small);
    }
}

/// A processor with MAXPHYADDR = 36: most random addresses are reserved bits.
type X86M36 = pagepin::arch::x86_64::X86Paging<4, 36>;

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

fn kind(result: Result<WalkItem, WalkError>) -> WalkErrorKind {
    result.expect_err("a typed error").kind
}

#[test]
fn cyclic_tables_terminate() {
    // Root entry 0 points to the root itself: the walk goes down four levels
    // and reads the root as a page table of 4 KiB leaves.
    let frames = memory_with(1, &[(0, 0, pa(0) | 0x3)]);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let walker = Walker::<Paging4Level, _>::new(&memory, BASE);
    let WalkItem::Leaf(leaf) = walker.translate(VirtAddr(0x10)).unwrap() else {
        panic!("the cycle ends in a leaf at the last level");
    };
    assert_eq!((leaf.level, leaf.pa), (3, PhysAddr(pa(0) + 0x10)));
    // The toy format refuses a table at its last level.
    let frames = memory_with(1, &[(0, 0, pa(0) | 1)]);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let toy = Walker::<Toy, _>::new(&memory, BASE);
    assert_eq!(
        kind(toy.translate(VirtAddr(0))),
        WalkErrorKind::Decode {
            loc: EntryLoc {
                table: BASE,
                index: 0,
                level: 1
            },
            raw: pa(0) | 1,
            error: DecodeError::TableNotAllowed { level: 1 },
        }
    );
}

#[test]
fn bad_ranges_are_typed_errors() {
    let frames = memory_with(1, &[]);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let walker = Walker::<Paging4Level, _>::new(&memory, BASE);
    let err = |start, len| walker.walk(VirtAddr(start), len).unwrap_err();
    assert_eq!(err(0x1000, 0), RangeError::Empty);
    assert_eq!(err(u64::MAX, 2), RangeError::Wraps);
    assert_eq!(
        err(0x0000_8000_0000_0000, 1),
        RangeError::NonCanonical {
            va: VirtAddr(0x0000_8000_0000_0000)
        }
    );
    // Spanning the hole between the halves: the end is not canonical.
    assert_eq!(
        err(0x0000_7fff_ffff_f000, 0x2000),
        RangeError::NonCanonical {
            va: VirtAddr(0x0000_8000_0000_0fff)
        }
    );
    // From the lower half into the upper one: leaves the start's window.
    assert_eq!(
        err(0x0000_7fff_ffff_f000, 0xffff_0000_0000_2000),
        RangeError::NonCanonical {
            va: VirtAddr(0x0001_0000_0000_0000)
        }
    );
    assert_eq!(
        err(0xffff_7fff_ffff_f000, 0x2000),
        RangeError::NonCanonical {
            va: VirtAddr(0xffff_7fff_ffff_f000)
        }
    );
    assert_eq!(
        kind(walker.translate(VirtAddr(0x0001_0000_0000_0000))),
        WalkErrorKind::NonCanonical
    );
    // The top page of the address space is a valid one-page range.
    let items: Vec<_> = walker
        .walk(VirtAddr(0xffff_ffff_ffff_f000), 0x1000)
        .unwrap()
        .collect();
    assert!(matches!(
        items[..],
        [Ok(WalkItem::Hole(HoleItem { level: 0, .. }))]
    ));
}

#[test]
fn malformed_entries_stop_the_walk_with_their_location() {
    let pdpt = pa(1);
    let pd = pa(2);
    let frames = memory_with(
        3,
        &[
            (0, 0, pdpt | 0x3),                 // PML4E 0 → PDPT
            (0, 1, pdpt | 0x83),                // PML4E 1: PS set, reserved
            (0, 2, pa(9) | 0x3),                // PML4E 2: past the table memory
            (1, 0, pd | 0x3),                   // PDPTE 0 → PD
            (1, 1, 0x4000_2000 | 0x83),         // PDPTE 1: 1 GiB leaf with bit 13 set
            (2, 0, 0x20_0000 | 1 << 20 | 0x83), // PDE 0: 2 MiB leaf with bit 20 set
        ],
    );
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let walker = Walker::<Paging4Level, _>::new(&memory, BASE);
    assert_eq!(
        kind(walker.translate(VirtAddr(1 << 39))),
        WalkErrorKind::Decode {
            loc: EntryLoc {
                table: BASE,
                index: 1,
                level: 0
            },
            raw: pdpt | 0x83,
            error: DecodeError::LeafNotAllowed { level: 0 },
        }
    );
    assert_eq!(
        kind(walker.translate(VirtAddr(2 << 39))),
        WalkErrorKind::Access {
            loc: EntryLoc {
                table: PhysAddr(pa(9)),
                index: 0,
                level: 1
            },
            error: AccessError::Unreachable {
                table: PhysAddr(pa(9)),
                index: 0
            },
        }
    );
    assert!(matches!(
        kind(walker.translate(VirtAddr(1 << 30))),
        WalkErrorKind::Decode {
            error: DecodeError::ReservedBits { bits: 0x2000 },
            ..
        }
    ));
    assert!(matches!(
        kind(walker.translate(VirtAddr(0x1234))),
        WalkErrorKind::Decode {
            error: DecodeError::ReservedBits { bits: 0x10_0000 },
            ..
        }
    ));
    // A walk yields the holes before the first bad entry (PDEs 1-511), then the
    // error (PDPTE 1), then ends.
    let mut walk = walker.walk(VirtAddr(0x20_0000), 1 << 40).unwrap();
    for _ in 1..512 {
        assert!(matches!(
            walk.next(),
            Some(Ok(WalkItem::Hole(HoleItem { level: 2, .. })))
        ));
    }
    assert!(matches!(
        walk.next(),
        Some(Err(WalkError {
            va: VirtAddr(0x4000_0000),
            ..
        }))
    ));
    assert!(walk.next().is_none());
    // Re-reading a location outside the format's table is refused.
    assert_eq!(
        walker.reload(EntryLoc {
            table: BASE,
            index: 512,
            level: 0
        }),
        Err(AccessError::Unreachable {
            table: BASE,
            index: 512
        })
    );
    assert_eq!(
        walker.reload(EntryLoc {
            table: BASE,
            index: 0,
            level: 4
        }),
        Err(AccessError::Unreachable {
            table: BASE,
            index: 0
        })
    );
}
