//! Run: `cargo test --test gup_unit_identity`
//!
//! Unit identity (DESIGN.md invariant 7), deterministically: a memory map whose
//! 2 MiB units are split into 4 KiB units (and merged back) while free, and a
//! hook that runs the whole truncate, split and reallocation between GUP-fast's
//! lookup of a page's unit and its get on the unit's head. The get then
//! succeeds on the old head, which no longer counts for the page:
//!
//! - the page's entry changed: the walk reports `Changed` and undoes its get on
//!   the meta it got (the old head's), not on the page's own new meta (whose
//!   owner holds a pin);
//! - the page was mapped again at the same address with the same raw entry (a
//!   refault of the same block): the entry re-check passes, and only the unit
//!   re-check sees that the head no longer counts for the page.
//!
//! Each runs over 4 KiB leaves (the batched run path) and over a 2 MiB leaf
//! (the huge-leaf path), with a map that keeps a layout version and one that
//! does not.

use std::cell::Cell;

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, Stop, Taken, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::{Hold, MetaWord, PageMeta};
use pagepin::table::{
    EntryLoc, FramePool, HostFrame, HostMemory, MapRequest, Perms, PhysAddr, ReclaimNow,
    TableAccess, TableBuilder, VirtAddr, WalkItem,
};
use pagepin::wait::{WaitSlot, WaitTable};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
/// Pages of a 2 MiB unit.
const BLOCK: u64 = 512;
/// The first data PFN (PA 1 GiB); the map has two 2 MiB blocks.
const BASE: u64 = (1 << 30) >> 12;
const VA: u64 = 0x40_0000;

/// A memory map of two 2 MiB blocks, each one 2 MiB unit or 512 units of
/// 4 KiB, changed only while every head involved is free (the contract).
struct SplitMap {
    metas: Vec<PageMeta>,
    /// Per block: 1 if split into 4 KiB units, 0 if one 2 MiB unit.
    split: [AtomicU8; 2],
    /// Bumped by every split or merge, if the map keeps a version.
    version: Option<AtomicU64>,
    waits: WaitTable<4>,
}

impl SplitMap {
    /// Both blocks whole and allocated (tail metas free, as the contract says).
    fn new(versioned: bool) -> SplitMap {
        let metas = (0..2 * BLOCK)
            .map(|i| {
                if i % BLOCK == 0 {
                    PageMeta::new_allocated()
                } else {
                    PageMeta::new_free()
                }
            })
            .collect();
        SplitMap {
            metas,
            split: [AtomicU8::new(0), AtomicU8::new(0)],
            version: versioned.then(|| AtomicU64::new(0)),
            waits: WaitTable::new(),
        }
    }

    fn meta(&self, pfn: Pfn) -> &PageMeta {
        &self.metas[(pfn.0 - BASE) as usize]
    }

    /// Splits the free 2 MiB unit at `head` into 4 KiB units (all free).
    fn split(&self, head: Pfn) {
        assert!(self.meta(head).is_free(), "split only a free unit");
        let block = ((head.0 - BASE) / BLOCK) as usize;
        // Relaxed: ordered before the heads' allocations (Release RMWs) by
        // program order, which is what the map's contract asks.
        self.split[block].store(1, Ordering::Relaxed);
        if let Some(version) = &self.version {
            // Release: after the change, before any head is allocated again
            // (contract point 6); pairs with the Acquire in `layout_version`.
            version.fetch_add(1, Ordering::Release);
        }
    }
}

// SAFETY: (1) a block's unit holds `pfn`; (2) one answer per unit at a time;
// (3) `split` runs only on a free head whose tails are free, and the tests
// allocate the new heads after it; tails of a whole block stay free; (4) the
// metas live in a `Vec` that is never resized; (5) `wake` bumps the table's
// slot, and nobody parks; (6) the version is bumped with Release after the
// change and before the allocations, and read with Acquire.
unsafe impl MemoryMap for SplitMap {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        let offset = pfn
            .0
            .checked_sub(BASE)
            .filter(|&o| o < 2 * BLOCK)
            .ok_or(OutsideMap { pfn })?;
        let block = (offset / BLOCK) as usize;
        // Relaxed: see `split`; a stale answer is what the re-check is for.
        let (head, pages) = if self.split[block].load(Ordering::Relaxed) == 1 {
            (pfn, 1)
        } else {
            (Pfn(BASE + block as u64 * BLOCK), BLOCK)
        };
        Ok(Unit {
            head,
            pages,
            meta: self.meta(head),
            layout_managed: true,
        })
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.waits.slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.waits.wake(head);
    }

    fn layout_version(&self) -> Option<u64> {
        // Acquire: pairs with the Release bump in `split`.
        self.version.as_ref().map(|v| v.load(Ordering::Acquire))
    }
}

/// Runs the hook the first time the map is asked about `trigger`: between
/// GUP-fast's lookup (which gets the old answer) and its get.
struct Hooked<'a, H: Fn()> {
    map: &'a SplitMap,
    trigger: Pfn,
    hook: H,
    fired: Cell<bool>,
}

// SAFETY: every answer is the inner map's; the hook changes units only as the
// inner map's contract allows (a free head, allocated after the change).
unsafe impl<H: Fn()> MemoryMap for Hooked<'_, H> {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        let answer = self.map.unit(pfn);
        if pfn == self.trigger && !self.fired.replace(true) {
            (self.hook)();
        }
        answer
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.map.wait_slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.map.wake(head)
    }

    fn layout_version(&self) -> Option<u64> {
        self.map.layout_version()
    }
}

fn guard() -> TablesNeverFreed {
    // SAFETY: these tests free no page table (single thread).
    unsafe { TablesNeverFreed::new() }
}

#[derive(Clone, Copy, Debug)]
enum Leaves {
    /// 512 leaves of 4 KiB: the batched run path.
    Small,
    /// One 2 MiB leaf: the huge-leaf path.
    Huge,
}

#[derive(Clone, Copy, Debug)]
enum Refault {
    /// The page's entry is cleared by the unmap and stays clear.
    Changed,
    /// The page is mapped again at the same address by the same raw entry.
    SameEntry,
}

/// Block 0 (head H) is mapped at `VA`. GUP-fast pins the page P = H + 5 (4 KiB
/// leaves) or the whole block (a 2 MiB leaf); between its lookup and its get,
/// the hook truncates H's unit (mark, unmap, free), splits it, allocates H to
/// owner A and P to owner B (who pins P), and, for `SameEntry`, restores the
/// entry. The walk must not return P on H's count, and must undo its get on H.
fn split_under_the_walker(leaves: Leaves, refault: Refault, versioned: bool) {
    let case = format!("{leaves:?} {refault:?} versioned={versioned}");
    let map = SplitMap::new(versioned);
    let head = Pfn(BASE);
    let p = Pfn(BASE + 5);
    let frames: Vec<HostFrame> = (0..16).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() })
            .unwrap();
    let leaf = match leaves {
        Leaves::Small => KIB4,
        Leaves::Huge => MIB2,
    };
    let rw = Perms::READ | Perms::WRITE | Perms::USER;
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables
            .map(&MapRequest::new(VirtAddr(VA), PhysAddr(head.0 << 12), MIB2, leaf).with_perms(rw))
    }
    .unwrap();
    let walker = tables.walker();
    // The entry that maps P (the 2 MiB leaf maps all of the block).
    let p_va = VA + 5 * KIB4;
    let WalkItem::Leaf(item) = walker.translate(VirtAddr(p_va)).unwrap() else {
        panic!("mapped above");
    };
    let loc: EntryLoc = item.entry.loc;
    // SAFETY: the word is only loaded.
    let entry = unsafe { memory.entry(loc.table, loc.index) }.unwrap();
    let raw = item.entry.raw;
    let (start, len, trigger) = match leaves {
        Leaves::Small => (p_va, KIB4, p),
        Leaves::Huge => (VA, MIB2, head),
    };
    let hook = || {
        // The truncate of H's unit: mark, unmap, (nothing to drain), free.
        let h = map.meta(head);
        h.mark_truncating().unwrap();
        // Release: as a kernel's unmap publishes the cleared entry.
        entry.store(0, Ordering::Release);
        // SAFETY: this code marked the page and nothing maps it.
        unsafe { h.free_marked() }.unwrap();
        // The allocator splits the free unit and hands H and P out separately.
        map.split(head);
        h.allocate().unwrap();
        map.meta(p).allocate().unwrap();
        map.meta(p).get(Hold::Pin, 1).unwrap(); // P's new owner pins it
        if let Refault::SameEntry = refault {
            // A refault of the same block: the same raw entry again.
            entry.store(raw, Ordering::Release);
        }
    };
    let hooked = Hooked {
        map: &map,
        trigger,
        hook,
        fired: Cell::new(false),
    };
    let gup = Gup::new(walker, &hooked);
    let mut out = vec![Pfn(0); (len / KIB4) as usize];
    let taken = gup
        .get_pages(&guard(), VirtAddr(start), len, GupFlags::PIN, &mut out)
        .unwrap();
    assert!(hooked.fired.get(), "{case}: the hook ran");
    assert_eq!(
        taken,
        Taken {
            pages: 0,
            stop: Stop::Changed {
                va: VirtAddr(start)
            }
        },
        "{case}: the walk must not return P counted on H"
    );
    // The undo landed on the meta that was got (H's), not on P's own.
    assert_eq!(
        map.meta(head).load(),
        MetaWord::ALLOCATED_IDLE,
        "{case}: H keeps no pin of the walker's"
    );
    assert_eq!(
        map.meta(p).pins(),
        1,
        "{case}: P's owner still holds its pin"
    );
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&map, &[p], Hold::Pin) }.unwrap();
    assert_eq!(map.meta(p).load(), MetaWord::ALLOCATED_IDLE);
}

#[test]
fn split_under_the_walker_with_a_changed_entry_undoes_on_the_meta_it_got() {
    for leaves in [Leaves::Small, Leaves::Huge] {
        for versioned in [false, true] {
            split_under_the_walker(leaves, Refault::Changed, versioned);
        }
    }
}

#[test]
fn split_under_the_walker_with_the_same_entry_is_caught_by_the_unit_recheck() {
    for leaves in [Leaves::Small, Leaves::Huge] {
        for versioned in [false, true] {
            split_under_the_walker(leaves, Refault::SameEntry, versioned);
        }
    }
}

/// Without any change, a versioned map's batches skip the second lookups and a
/// map without a version makes them: both take the same pages, one RMW each.
#[test]
fn an_unchanged_map_takes_everything_with_or_without_a_version() {
    for versioned in [false, true] {
        let map = SplitMap::new(versioned);
        // SAFETY: this code owns the page and nothing maps it.
        unsafe { map.meta(Pfn(BASE + BLOCK)).free() }.unwrap();
        map.split(Pfn(BASE + BLOCK));
        for i in 0..BLOCK {
            map.meta(Pfn(BASE + BLOCK + i)).allocate().unwrap();
        }
        let frames: Vec<HostFrame> = (0..16).map(|_| HostFrame::new()).collect();
        let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
        let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
        let mut tables = TableBuilder::<Paging4Level, _, _>::new(
            &memory,
            // SAFETY: the frames are this code's own, listed once, in no other pool.
            unsafe { FramePool::new(&mut slots) },
            // SAFETY: no walker or MMU reads these tables while the builder unmaps.
            unsafe { ReclaimNow::new() },
        )
        .unwrap();
        let rw = Perms::READ | Perms::WRITE;
        // Block 0 (one unit) by 4 KiB leaves, block 1 (512 units) by a 2 MiB leaf.
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe {
            tables.map(
                &MapRequest::new(VirtAddr(VA), PhysAddr(BASE << 12), MIB2, KIB4).with_perms(rw),
            )
        }
        .unwrap();
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe {
            tables.map(
                &MapRequest::new(
                    VirtAddr(VA + MIB2),
                    PhysAddr((BASE + BLOCK) << 12),
                    MIB2,
                    MIB2,
                )
                .with_perms(rw),
            )
        }
        .unwrap();
        let gup = Gup::new(tables.walker(), &map);
        let mut out = vec![Pfn(0); 2 * BLOCK as usize];
        let taken = gup
            .get_pages(&guard(), VirtAddr(VA), 2 * MIB2, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(
            (taken.pages, taken.stop),
            (2 * BLOCK as usize, Stop::Complete)
        );
        for (i, pfn) in out.iter().enumerate() {
            assert_eq!(pfn.0, BASE + i as u64);
        }
        assert_eq!(
            map.meta(Pfn(BASE)).pins(),
            BLOCK as u32,
            "one head counts block 0"
        );
        for i in 0..BLOCK {
            assert_eq!(
                map.meta(Pfn(BASE + BLOCK + i)).pins(),
                1,
                "block 1 page {i}"
            );
        }
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&map, &out, Hold::Pin) }.unwrap();
        assert_eq!(map.meta(Pfn(BASE)).load(), MetaWord::ALLOCATED_IDLE);
    }
}
