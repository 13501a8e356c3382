//! Unit tests of the walker and the builder on the toy format (small enough for
//! miri), and of the walker's permission restriction on x86_64 entries.

extern crate std;

use std::vec::Vec;

use super::*;
use crate::arch::x86_64::Paging4Level;
use crate::sync::Ordering;

const BASE: PhysAddr = PhysAddr(0x10_0000);

fn frames(n: usize) -> Vec<HostFrame> {
    (0..n).map(|_| HostFrame::new()).collect()
}

fn items<F: PagingFormat>(
    walker: &Walker<'_, F, HostMemory<'_>>,
    start: u64,
    len: u64,
) -> Vec<WalkItem> {
    walker
        .walk(VirtAddr(start), len)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn toy_huge_and_small_leaves_with_their_parents() {
    let frames = frames(4);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Toy, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() }).unwrap();
    let rw = Perms::READ | Perms::WRITE;
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(&MapRequest::new(VirtAddr(0), PhysAddr(0x8_0000), 0x4000, 0x4000).with_perms(rw))
    }
    .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(&MapRequest::new(
            VirtAddr(0x4000),
            PhysAddr(0x9_0000),
            0x1000,
            0x1000,
        ))
    }
    .unwrap();
    let walker = tables.walker();
    let all = items(&walker, 0x2000, 0xe000);
    let [
        WalkItem::Leaf(huge),
        WalkItem::Leaf(small),
        WalkItem::Hole(h1),
        WalkItem::Hole(h2),
        WalkItem::Hole(h3),
        WalkItem::Hole(h4),
        WalkItem::Hole(h5),
    ] = all[..]
    else {
        panic!("unexpected items {all:?}");
    };
    // The huge leaf, cut to the range: starts at 0x2000, 0x2000 into the leaf.
    assert_eq!(
        (huge.va.start(), huge.va.size()),
        (VirtAddr(0x2000), 0x2000)
    );
    assert_eq!(
        (huge.pa, huge.leaf_pa, huge.leaf_va),
        (PhysAddr(0x8_2000), PhysAddr(0x8_0000), VirtAddr(0))
    );
    assert_eq!(
        (huge.level, huge.size, huge.perms, huge.parent),
        (0, 0x4000, rw, None)
    );
    assert_eq!(
        huge.entry.loc,
        EntryLoc {
            table: tables.root(),
            index: 0,
            level: 0
        }
    );
    let parent = small.parent.unwrap();
    assert_eq!(
        parent.loc,
        EntryLoc {
            table: tables.root(),
            index: 1,
            level: 0
        }
    );
    assert_eq!(
        (small.level, small.pa, small.perms),
        (1, PhysAddr(0x9_0000), Perms::READ)
    );
    assert_eq!(small.entry.loc.table, PhysAddr(parent.raw & !0xfff));
    for (hole, start, level) in [
        (h1, 0x5000, 1),
        (h2, 0x6000, 1),
        (h3, 0x7000, 1),
        (h4, 0x8000, 0),
        (h5, 0xc000, 0),
    ] {
        assert_eq!((hole.va.start(), hole.level), (VirtAddr(start), level));
    }
    assert_eq!(h3.parent, Some(parent));
    assert!(walker.is_unchanged(&small.entry).unwrap() && walker.is_unchanged(&parent).unwrap());

    // Unmapping the small leaf empties and detaches its table: both snapshots
    // GUP-fast would re-check now differ.
    let done = tables.unmap(VirtAddr(0x4000), 0x4000).unwrap();
    assert_eq!(
        done,
        Unmapped {
            leaves: 1,
            tables: 1,
            sizes: LeafSizes::of(0x1000),
        }
    );
    assert!(!walker.is_unchanged(&small.entry).unwrap());
    assert!(!walker.is_unchanged(&parent).unwrap());
    assert_eq!(
        tables.unmap(VirtAddr(0x1000), 0x1000),
        Err(UnmapError::SplitsLeaf {
            leaf_va: VirtAddr(0),
            size: 0x4000
        })
    );
    assert_eq!(
        tables.unmap(VirtAddr(0x8000), 0x8000),
        Ok(Unmapped::default())
    );
    assert_eq!(
        tables.unmap(VirtAddr(0), 0x4000),
        Ok(Unmapped {
            leaves: 1,
            tables: 0,
            sizes: LeafSizes::of(0x4000),
        })
    );
    assert_eq!(tables.pool().free_count(), 3);
}

#[test]
fn refused_maps_change_nothing() {
    let frames = frames(2);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Toy, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() }).unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(&MapRequest::new(
            VirtAddr(0x4000),
            PhysAddr(0x4000),
            0x4000,
            0x4000,
        ))
    }
    .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(&MapRequest::new(
            VirtAddr(0x8000),
            PhysAddr(0x1000),
            0x1000,
            0x1000,
        ))
    }
    .unwrap();
    let before = items(&tables.walker(), 0, 0x1_0000);
    let free = tables.pool().free_count();
    let map = |va, pa, len, size| MapRequest::new(VirtAddr(va), PhysAddr(pa), len, size);
    let cases = [
        (map(0, 0, 0, 0x1000), MapError::Range(RangeError::Empty)),
        (
            map(0xf000, 0, 0x2000, 0x1000),
            MapError::Range(RangeError::NonCanonical {
                va: VirtAddr(0x1_0000),
            }),
        ),
        (
            map(0, 0, 0x2000, 0x2000),
            MapError::LeafSizeNotAllowed { size: 0x2000 },
        ),
        (
            map(0x1000, 0, 0x4000, 0x4000),
            MapError::MisalignedVa {
                va: VirtAddr(0x1000),
            },
        ),
        (
            map(0, 0x1000, 0x4000, 0x4000),
            MapError::MisalignedPa {
                pa: PhysAddr(0x1000),
            },
        ),
        (
            map(0, 0, 0x1800, 0x1000),
            MapError::MisalignedLen { len: 0x1800 },
        ),
        (map(0, !0xfff, 0x2000, 0x1000), MapError::PaWraps),
        (
            map(0, (1 << 40) - 0x1000, 0x2000, 0x1000),
            MapError::Encode(EncodeError::UnencodableAddress {
                pa: PhysAddr(1 << 40),
            }),
        ),
        (
            map(0, 0, 0x1000, 0x1000).with_perms(Perms::WRITE),
            MapError::Encode(EncodeError::UnsupportedPerms {
                perms: Perms::WRITE,
            }),
        ),
        (
            map(0, 0, 0x1000, 0x1000).with_mem_type(MemType(2)),
            MapError::Encode(EncodeError::UnsupportedMemType {
                mem_type: MemType(2),
            }),
        ),
        // Inside the huge leaf, and a huge leaf over the table of a small one.
        (
            map(0x5000, 0, 0x1000, 0x1000),
            MapError::Overlap {
                va: VirtAddr(0x5000),
            },
        ),
        (
            map(0x8000, 0, 0x4000, 0x4000),
            MapError::Overlap {
                va: VirtAddr(0x8000),
            },
        ),
        // A new table needed, no frame free.
        (
            map(0xc000, 0, 0x1000, 0x1000),
            MapError::PoolExhausted { needed: 1, free: 0 },
        ),
    ];
    assert_eq!(free, 0, "root, one table for 0x8000: the pool is empty");
    for (req, want) in cases {
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        assert_eq!(unsafe { tables.map(&req) }, Err(want), "{req:?}");
        assert_eq!(
            items(&tables.walker(), 0, 0x1_0000),
            before,
            "{req:?} changed the tables"
        );
        assert_eq!(tables.pool().free_count(), free);
    }
}

/// Keeps retired tables until reclaimed, and checks at retirement that the
/// table is detached (no root entry points to it) and zero.
struct Deferred<'a> {
    memory: &'a HostMemory<'a>,
    root: PhysAddr,
    held: Vec<PhysAddr>,
}

// SAFETY: tables are held until the test reclaims them, single-threaded, and
// no MMU walks host frames.
unsafe impl Retire for Deferred<'_> {
    type Domain = crate::guard::Promised;

    unsafe fn retire(
        &mut self,
        table: PhysAddr,
        _pool: &mut FramePool<'_>,
    ) -> Result<(), RetireError> {
        for index in 0..4 {
            // Relaxed: single-threaded test.
            // SAFETY: the word is only loaded.
            let raw = unsafe { self.memory.entry(self.root, index) }
                .unwrap()
                .load(Ordering::Relaxed);
            assert_ne!(
                Toy::decode(raw, 0).unwrap(),
                Entry::Table(TableEntry {
                    table,
                    grants: Perms::GRANTS
                })
            );
            assert_eq!(
                // SAFETY: the word is only loaded.
                unsafe { self.memory.entry(table, index) }
                    .unwrap()
                    .load(Ordering::Relaxed),
                0
            );
        }
        self.held.push(table);
        Ok(())
    }

    fn reclaim(&mut self, pool: &mut FramePool<'_>) -> Result<(), PoolFull> {
        while let Some(table) = self.held.pop() {
            // SAFETY: the frame came from this pool and nothing can reach it.
            unsafe { pool.give_back(table) }?;
        }
        Ok(())
    }
}

#[test]
fn retired_tables_are_detached_and_reclaimed_when_the_pool_runs_dry() {
    let frames = frames(3);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let retire = Deferred {
        memory: &memory,
        root: PhysAddr(0x10_2000),
        held: Vec::new(),
    };
    let mut tables =
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        TableBuilder::<Toy, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, retire).unwrap();
    assert_eq!(
        tables.root(),
        PhysAddr(0x10_2000),
        "the pool hands out its last frame first"
    );
    let page = |va| MapRequest::new(VirtAddr(va), PhysAddr(0x5000), 0x1000, 0x1000);
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&page(0x0000)) }.unwrap();
    assert_eq!(
        tables.unmap(VirtAddr(0), 0x4000).unwrap(),
        Unmapped {
            leaves: 1,
            tables: 1,
            sizes: LeafSizes::of(0x1000),
        }
    );
    assert_eq!(
        (tables.retire_hook().held.len(), tables.pool().free_count()),
        (1, 1)
    );
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&page(0x4000)) }.unwrap(); // takes the last free frame
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&page(0x8000)) }.unwrap(); // needs the retired one back
    assert_eq!(
        (tables.retire_hook().held.len(), tables.pool().free_count()),
        (0, 0)
    );
    assert_eq!(
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { tables.map(&page(0xc000)) },
        Err(MapError::PoolExhausted { needed: 1, free: 0 })
    );
    tables.unmap(VirtAddr(0), 0x1_0000).unwrap();
    tables.reclaim().unwrap();
    assert_eq!(tables.pool().free_count(), 2);
}

#[test]
fn new_checks_the_pool_frames() {
    let frames = frames(2);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let mut empty: [PhysAddr; 0] = [];
    assert_eq!(
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Toy, _, _>::new(&memory, unsafe { FramePool::new(&mut empty) }, unsafe {
            ReclaimNow::new()
        })
        .unwrap_err(),
        MapError::PoolExhausted { needed: 1, free: 0 }
    );
    let mut outside = [PhysAddr(0x20_0000)];
    assert_eq!(
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Toy, _, _>::new(&memory, unsafe { FramePool::new(&mut outside) }, unsafe {
            ReclaimNow::new()
        })
        .unwrap_err(),
        MapError::Access(AccessError::Unreachable {
            table: PhysAddr(0x20_0000),
            index: 3
        })
    );
    // Frames above the toy's 40-bit physical addresses cannot be tables.
    let high = HostMemory::new(&frames, PhysAddr(1 << 40)).unwrap();
    let mut slots: Vec<PhysAddr> = high.frame_pas().collect();
    assert_eq!(
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Toy, _, _>::new(&high, unsafe { FramePool::new(&mut slots) }, unsafe {
            ReclaimNow::new()
        })
        .unwrap_err(),
        MapError::Encode(EncodeError::UnencodableAddress {
            pa: PhysAddr(1 << 40)
        })
    );
}

#[test]
fn with_root_uses_the_callers_root_and_checks_it() {
    let frames = frames(3);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let root = memory.frame_pa(0).unwrap();
    // Relaxed: single-threaded test. Stale contents the builder must clear.
    frames[0].entries[3].store(0xdead_0000, Ordering::Relaxed);
    let mut slots: Vec<PhysAddr> = memory.frame_pas().skip(1).collect();
    let mut tables =
        // SAFETY: the root frame is the test's, outside the pool; the pool's
        // frames are the test's; no walker or MMU reads these tables.
        unsafe {
            TableBuilder::<Toy, _, _>::with_root(
                &memory,
                root,
                FramePool::new(&mut slots),
                ReclaimNow::new(),
            )
        }
        .unwrap();
    assert_eq!(tables.root(), root);
    assert_eq!(frames[0].entries[3].load(Ordering::Relaxed), 0);
    assert_eq!(tables.pool().free_count(), 2, "the root is not the pool's");
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(&MapRequest::new(
            VirtAddr(0xc000),
            PhysAddr(0x8_0000),
            0x1000,
            0x1000,
        ))
    }
    .unwrap();
    assert_eq!(tables.pool().free_count(), 1);
    let unmapped = tables.unmap(VirtAddr(0), 0x1_0000).unwrap();
    assert_eq!((unmapped.leaves, unmapped.tables), (1, 1));
    assert_eq!(tables.pool().free_count(), 2, "the root is never retired");

    let mut slots: Vec<PhysAddr> = memory.frame_pas().skip(1).collect();
    assert_eq!(
        // SAFETY: refused before anything is written; the pool's frames are
        // the test's; no walker or MMU reads these tables.
        unsafe {
            TableBuilder::<Toy, _, _>::with_root(
                &memory,
                PhysAddr(0x20_0000),
                FramePool::new(&mut slots),
                ReclaimNow::new(),
            )
        }
        .unwrap_err(),
        MapError::Access(AccessError::Unreachable {
            table: PhysAddr(0x20_0000),
            index: 3
        })
    );
    let mut outside = [PhysAddr(0x20_0000)];
    assert!(matches!(
        // SAFETY: refused before anything is written (the pool's frame is
        // unreachable); no walker or MMU reads these tables.
        unsafe {
            TableBuilder::<Toy, _, _>::with_root(
                &memory,
                root,
                FramePool::new(&mut outside),
                ReclaimNow::new(),
            )
        },
        Err(MapError::Access(AccessError::Unreachable { .. }))
    ));
}

#[test]
fn table_entries_restrict_the_leaf_below() {
    // PML4E without R/W and U/S, PDPTE with XD: the 4 KiB leaf below them says
    // R/W, U/S and executable, and is effectively read-only, supervisor, no-exec.
    let frames = frames(4);
    let pa = |frame: u64| BASE.0 + frame * 0x1000;
    // Relaxed: single-threaded setup.
    let set = |frame: usize, index: usize, raw: u64| {
        frames[frame].entries[index].store(raw, Ordering::Relaxed)
    };
    set(0, 0, pa(1) | 0x1);
    set(1, 0, pa(2) | 0x7 | 1 << 63);
    set(2, 0, pa(3) | 0x7);
    set(3, 0, 0x7000 | 0x7 | 0x60);
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let walker = Walker::<Paging4Level, _>::new(&memory, BASE);
    let WalkItem::Leaf(leaf) = walker.translate(VirtAddr(0x123)).unwrap() else {
        panic!("mapped");
    };
    assert_eq!(leaf.perms, Perms::READ | Perms::ACCESSED | Perms::DIRTY);
    assert_eq!(leaf.pa, PhysAddr(0x7123));
}

#[test]
fn leaf_sizes_are_a_set_of_powers_of_two() {
    let sizes = LeafSizes::of(0x1000).union(LeafSizes::of(2 << 20));
    assert_eq!(sizes.smallest(), Some(0x1000));
    assert!(sizes.contains(2 << 20) && !sizes.contains(1 << 30) && !sizes.contains(0x1800));
    assert_eq!(sizes.iter().collect::<Vec<_>>(), [0x1000, 2 << 20]);
    assert_eq!(LeafSizes::of(0), LeafSizes::NONE);
    assert!(LeafSizes::NONE.is_empty() && LeafSizes::NONE.smallest().is_none());
    assert_eq!(LeafSizes::of(0x1fff), LeafSizes::of(0x1000), "rounded down");
    assert_eq!(LeafSizes::of(u64::MAX).smallest(), Some(1 << 63));
}
