//! Run: `CARGO_TARGET_DIR=target/review cargo test --test review_tables_hooked`
//!
//! Outside review, black-box: page tables that change under GUP-fast. A
//! `TableAccess` of our own runs a hook on the k-th entry load (swept over
//! every k): leaves cleared or remapped, the entry above a table cleared
//! (detached) or replaced by a huge leaf (collapse), cycles (a table pointing
//! to itself or to its parent), reserved bits. Never a panic or a hang; the
//! counts match exactly the pages reported taken, each PFN is one that was
//! mapped at that address (before or after the change), and the stop names
//! the first address not taken.

use std::cell::Cell;

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{Pfn, SliceMemMap};
use pagepin::meta::{Hold, PageMeta};
use pagepin::sync::{AtomicU64, Ordering};
use pagepin::table::{
    AccessError, EntryLoc, FramePool, HostFrame, HostMemory, LeafEntry, MapRequest, MemType,
    PagingFormat, Perms, PhysAddr, ReclaimNow, TableAccess, TableBuilder, VirtAddr, Walker,
};

type F = Paging4Level;
const KIB4: u64 = 0x1000;
const MIB2: u64 = 0x20_0000;
const BASE: u64 = 0x1000;
const VA: u64 = 0x4000_0000;
const RW: Perms = Perms::READ.union(Perms::WRITE);

#[derive(Debug, Clone, Copy)]
enum Change {
    ClearLeaf(usize),
    RemapLeaf(usize),
    DetachTable,
    CollapseTable,
    TableToItself,
    PdptToItself,
    Pml4ToItself,
    ReservedInHugeLeaf,
    ClearHugeLeaf,
    ClearPml4,
}

struct Hooked<'a> {
    inner: HostMemory<'a>,
    loads: Cell<u64>,
    fire_at: Cell<u64>,
    hook: Cell<Option<(EntryLoc, u64)>>,
}

// SAFETY: delegates to `HostMemory` (points 1-3); `load` makes exactly the
// load (4) and then, once, stores a new value to some entry, as a concurrent
// writer of the tables would.
unsafe impl TableAccess for Hooked<'_> {
    unsafe fn entry(&self, table: PhysAddr, index: usize) -> Result<&AtomicU64, AccessError> {
        // SAFETY: the word is only loaded.
        unsafe { self.inner.entry(table, index) }
    }

    fn load(&self, word: &AtomicU64, order: Ordering) -> u64 {
        let v = word.load(order);
        let n = self.loads.get() + 1;
        self.loads.set(n);
        if n == self.fire_at.get() {
            if let Some((loc, raw)) = self.hook.get() {
                // SAFETY: stands for a concurrent writer of these host tables (the scenario under test); no retire hook frees them and no MMU walks them, so only the walk's answer is at stake.
                unsafe { self.inner.entry(loc.table, loc.index) }
                    .unwrap()
                    .store(raw, Ordering::Release);
            }
        }
        v
    }
}

struct Locs {
    pt: PhysAddr,
    pde0: EntryLoc,
    pde1: EntryLoc,
    pdpte: EntryLoc,
    pml4e: EntryLoc,
}

fn leaf(pa: u64, level: usize) -> u64 {
    F::encode_leaf(
        &LeafEntry {
            pa: PhysAddr(pa),
            perms: RW,
            mem_type: MemType(0),
        },
        level,
    )
    .unwrap()
}

fn change_to(c: Change, l: &Locs) -> (EntryLoc, u64) {
    let pt = |i| EntryLoc {
        table: l.pt,
        index: i,
        level: 3,
    };
    match c {
        Change::ClearLeaf(i) => (pt(i), 0),
        Change::RemapLeaf(i) => (pt(i), leaf((BASE + 1024 + i as u64) * KIB4, 3)),
        Change::DetachTable => (l.pde0, 0),
        Change::CollapseTable => (l.pde0, leaf((BASE + 1024) * KIB4, 2)),
        Change::TableToItself => (l.pde0, F::encode_table(l.pde0.table, 2).unwrap()),
        Change::PdptToItself => (l.pdpte, F::encode_table(l.pdpte.table, 1).unwrap()),
        Change::Pml4ToItself => (l.pml4e, F::encode_table(l.pml4e.table, 0).unwrap()),
        Change::ReservedInHugeLeaf => (l.pde1, leaf((BASE + 512) * KIB4, 2) | 1 << 13),
        Change::ClearHugeLeaf => (l.pde1, 0),
        Change::ClearPml4 => (l.pml4e, 0),
    }
}

/// One GUP-fast call over 4 KiB leaves (pages 0..511) and a 2 MiB leaf
/// (pages 512..1023) with the change on load `k`; returns the loads made.
fn run_one(change: Change, k: u64, hold: Hold, out_len: usize) -> u64 {
    let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
    let metas: Vec<PageMeta> = (0..1536).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let map: SliceMemMap = unsafe { SliceMemMap::new(Pfn(BASE), &metas) };
    let memory = HostMemory::new(&frames, PhysAddr(0x100_0000_0000)).unwrap();
    let mut pool: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<F, _, _>::new(&memory, unsafe { FramePool::new(&mut pool) }, unsafe { ReclaimNow::new() }).unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(&MapRequest::new(VirtAddr(VA), PhysAddr(BASE * KIB4), MIB2, KIB4).with_perms(RW))
    }
    .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(
                VirtAddr(VA + MIB2),
                PhysAddr((BASE + 512) * KIB4),
                MIB2,
                MIB2,
            )
            .with_perms(RW),
        )
    }
    .unwrap();
    let w = tables.walker();
    let small = *w.translate(VirtAddr(VA)).unwrap().leaf().unwrap();
    let huge = *w.translate(VirtAddr(VA + MIB2)).unwrap().leaf().unwrap();
    let locs = Locs {
        pt: small.entry.loc.table,
        pde0: small.parent.unwrap().loc,
        pde1: huge.entry.loc,
        pdpte: huge.parent.unwrap().loc,
        pml4e: EntryLoc {
            table: tables.root(),
            index: 0,
            level: 0,
        },
    };
    let hooked = Hooked {
        inner: memory,
        loads: Cell::new(0),
        fire_at: Cell::new(k),
        hook: Cell::new(Some(change_to(change, &locs))),
    };
    let gup = Gup::new(Walker::<F, _>::new(&hooked, tables.root()), &map);
    // SAFETY: no table frame is freed or reused here (entries change only).
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = vec![Pfn(0); out_len];
    let flags = if hold == Hold::Pin {
        GupFlags::PIN
    } else {
        GupFlags::empty()
    };
    let t = gup
        .get_pages(&guard, VirtAddr(VA), 2 * MIB2, flags, &mut out)
        .unwrap();
    let loads = hooked.loads.get();
    let ctx = format!("{change:?} k={k} {hold:?} out={out_len}: {t:?}");
    // Each page is one that was mapped there, before or after the change.
    for (i, p) in out[..t.pages].iter().enumerate() {
        let i = i as u64;
        assert!(
            *p == Pfn(BASE + i) || *p == Pfn(BASE + 1024 + i),
            "page {i} is {p:?}: {ctx}"
        );
    }
    // The stop names the first address not taken.
    let first_not_taken = VirtAddr(VA + t.pages as u64 * KIB4);
    match t.stop {
        Stop::Complete => assert_eq!(t.pages, 1024, "{ctx}"),
        Stop::Absent { va }
        | Stop::Changed { va }
        | Stop::OutputFull { va }
        | Stop::NotPermitted { va, .. }
        | Stop::Refused { va, .. }
        | Stop::OutsideMap { va, .. }
        | Stop::LongTermOnLayoutManaged { va, .. } => assert_eq!(va, first_not_taken, "{ctx}"),
        Stop::Malformed(_) => {}
        other => panic!("unknown stop {other:?}"),
    }
    // Exact counts.
    let mut want = vec![0u32; metas.len()];
    for p in &out[..t.pages] {
        want[(p.0 - BASE) as usize] += 1;
    }
    for (i, m) in metas.iter().enumerate() {
        assert_eq!(m.load().count(hold), want[i], "meta {i}: {ctx}");
        assert_eq!(m.load().count(other(hold)), 0, "meta {i}: {ctx}");
    }
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&map, &out[..t.pages], hold) }.unwrap();
    assert!(metas.iter().all(|m| m.load().is_idle()), "{ctx}");
    loads
}

fn other(h: Hold) -> Hold {
    match h {
        Hold::Ref => Hold::Pin,
        Hold::Pin => Hold::Ref,
    }
}

fn sweep(change: Change) {
    for (hold, out_len) in [(Hold::Ref, 1024), (Hold::Pin, 1024), (Hold::Ref, 600)] {
        let loads = run_one(change, 0, hold, out_len);
        for k in 1..=loads + 1 {
            run_one(change, k, hold, out_len);
        }
    }
}

#[test]
fn leaves_cleared_or_remapped_under_the_walk() {
    for i in [0, 5, 31, 32, 63, 511] {
        sweep(Change::ClearLeaf(i));
        sweep(Change::RemapLeaf(i));
    }
}

#[test]
fn tables_detached_or_collapsed_under_the_walk() {
    sweep(Change::DetachTable);
    sweep(Change::CollapseTable);
    sweep(Change::ClearHugeLeaf);
    sweep(Change::ClearPml4);
}

#[test]
fn cycles_and_reserved_bits_under_the_walk() {
    sweep(Change::TableToItself);
    sweep(Change::PdptToItself);
    sweep(Change::Pml4ToItself);
    sweep(Change::ReservedInHugeLeaf);
}

/// Static garbage: a last-level table full of pseudo-random words, and an
/// upper table of them, walked whole. Typed stops only, exact counts.
#[test]
fn random_raw_tables() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
        let metas: Vec<PageMeta> = (0..1024).map(|_| PageMeta::new_allocated()).collect();
        // SAFETY: this map is the only one counting on these metas.
        let map: SliceMemMap = unsafe { SliceMemMap::new(Pfn(BASE), &metas) };
        let memory = HostMemory::new(&frames, PhysAddr(0x100_0000)).unwrap();
        let mut pool: Vec<PhysAddr> = memory.frame_pas().collect();
        let mut tables =
            // SAFETY: no walker or MMU reads these tables while the builder unmaps.
            // The pool's frames are this code's own, in no other pool.
            TableBuilder::<F, _, _>::new(&memory, unsafe { FramePool::new(&mut pool) }, unsafe { ReclaimNow::new() }).unwrap();
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe {
            tables.map(
                &MapRequest::new(VirtAddr(VA), PhysAddr(BASE * KIB4), MIB2, KIB4).with_perms(RW),
            )
        }
        .unwrap();
        let small = *tables
            .walker()
            .translate(VirtAddr(VA))
            .unwrap()
            .leaf()
            .unwrap();
        let (table, level) = if round % 2 == 0 {
            (small.entry.loc.table, 3)
        } else {
            (small.parent.unwrap().loc.table, 2)
        };
        for i in 0..512 {
            let r = rnd();
            // Half of them point into the map's PFNs or the table frames.
            let r = match r % 4 {
                0 => (r & !0x000f_ffff_ffff_f000) | ((BASE + (r >> 40) % 1024) * KIB4),
                1 => (r & !0x000f_ffff_ffff_f000) | (0x100_0000 + (r >> 40) % 8 * KIB4),
                _ => r,
            };
            // SAFETY: corrupts these host tables on purpose (the malformed input under test); no retire hook frees them and no MMU walks them.
            unsafe { memory.entry(table, i) }
                .unwrap()
                .store(r, Ordering::Relaxed);
        }
        let _ = level;
        let gup = Gup::new(tables.walker(), &map);
        // SAFETY: tables are never freed here.
        let guard = unsafe { TablesNeverFreed::new() };
        let mut out = vec![Pfn(0); 4096];
        let t = gup
            .get_pages(&guard, VirtAddr(0), 1 << 31, GupFlags::empty(), &mut out)
            .unwrap();
        let mut want = vec![0u32; 1024];
        for p in &out[..t.pages] {
            want[(p.0 - BASE) as usize] += 1;
        }
        for (i, m) in metas.iter().enumerate() {
            assert_eq!(m.refs(), want[i], "round {round} meta {i}: {t:?}");
        }
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&map, &out[..t.pages], Hold::Ref) }.unwrap();
    }
}
