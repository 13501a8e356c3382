//! Run: `CARGO_TARGET_DIR=target/review cargo test --test review_unit_identity`
//!
//! Outside review, black-box: DESIGN.md invariant 7 (unit identity) against a
//! memory map of our own whose units split, merge and are reallocated while
//! their heads are FREE, exactly as the `MemoryMap` contract (points 1-6)
//! allows. A hook inside `unit()` runs between GUP-fast's lookup and its get
//! (on the k-th call, swept over every k), so the answer the walker got is
//! stale by the time it gets.
//!
//! After every call the ledger is checked exactly: every PFN GUP-fast returned
//! is counted on the meta the map names for it *now*, and every meta holds
//! exactly what its owners took plus those pages (so every undo landed on the
//! meta that was got, and nothing leaked). Then everything is released through
//! the public `release` and every meta must be back to what the owners hold.

use std::cell::{Cell, RefCell};

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::Hold;
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapRequest, Perms, PhysAddr, ReclaimNow, TableBuilder,
    VirtAddr,
};
use pagepin::wait::WaitSlot;

mod review_common;
use review_common::{BASE, Layout, PAGES};

const KIB4: u64 = 0x1000;
const MIB2: u64 = 0x20_0000;
const VA: u64 = 0x4000_0000;

/// What the hook does to the unit of the PFN being looked up.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Split the PFN's unit into single pages.
    SplitToSingles,
    /// Split the PFN's unit into 16-page units.
    SplitTo16,
    /// Merge the PFN's 2 MiB block into one 512-page unit.
    Merge512,
    /// Merge the PFN's 32-page group into one unit.
    Merge32,
    /// Free and reallocate the PFN's unit to another owner, who takes a ref.
    ReallocToOwner,
    /// Split into singles and give every new head to an owner (one ref each).
    SplitToOwners,
}

/// The map GUP-fast sees: the layout plus a hook on the k-th `unit()` call.
struct Hooked<'l> {
    layout: &'l Layout,
    calls: Cell<u64>,
    fire_at: Cell<u64>,
    action: Action,
    /// Refs the owners took (per meta index).
    owners: RefCell<Vec<u32>>,
    fired: Cell<bool>,
    /// Fire instead on the first lookup of this page offset.
    fire_on_page: Cell<Option<u64>>,
}

impl Hooked<'_> {
    fn run_hook(&self, i: u64) {
        let l = self.layout;
        let (h, pages) = l.head_of(i);
        let done = match self.action {
            Action::SplitToSingles => pages > 1 && l.reshape(h, pages, 1),
            Action::SplitTo16 => pages > 16 && l.reshape(h, pages, 16),
            Action::Merge512 => {
                let g = Layout::group(i, 512);
                pages < 512 && l.reshape(g, 512, 512)
            }
            Action::Merge32 => {
                let g = Layout::group(i, 32);
                pages < 32 && l.head_of(g).0 == g && l.reshape(g, 32, 32)
            }
            Action::ReallocToOwner => {
                let ok = l.reshape(h, pages, pages);
                if ok {
                    l.metas[h as usize].get(Hold::Ref, 1).unwrap();
                    self.owners.borrow_mut()[h as usize] += 1;
                }
                ok
            }
            Action::SplitToOwners => {
                let ok = pages > 1 && l.reshape(h, pages, 1);
                if ok {
                    for p in h..h + pages {
                        l.metas[p as usize].get(Hold::Ref, 1).unwrap();
                        self.owners.borrow_mut()[p as usize] += 1;
                    }
                }
                ok
            }
        };
        self.fired.set(self.fired.get() || done);
    }
}

// SAFETY: as `Layout`; the hook only reshapes through `Layout::reshape`.
unsafe impl MemoryMap for Hooked<'_> {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        // The answer is computed first, then the hook runs: the caller holds a
        // stale answer, as if the map changed between its lookup and its get.
        let answer = self.layout.unit(pfn);
        let n = self.calls.get() + 1;
        self.calls.set(n);
        if pfn.0 >= BASE && pfn.0 - BASE < PAGES as u64 {
            let i = pfn.0 - BASE;
            if n == self.fire_at.get() {
                self.run_hook(i);
            } else if self.fire_on_page.get() == Some(i) {
                self.fire_on_page.set(None);
                self.run_hook(i);
            }
        }
        answer
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.layout.wait_slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.layout.wake(head);
    }

    fn layout_version(&self) -> Option<u64> {
        self.layout.layout_version()
    }
}

/// The mapping of one scenario.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    /// Initial unit size.
    unit: u64,
    /// Segments cut differently (see `Layout::with_units`).
    segments: &'static [(u64, u64, u64)],
    /// Leaf size of the mapping (4 KiB or 2 MiB) over the whole 1024 pages.
    leaf: u64,
    /// Page offset and page count of the GUP range.
    from: u64,
    pages: u64,
}

/// Runs one GUP-fast call with the hook at call `k`; returns the number of
/// `unit()` calls made and whether the hook changed anything. Panics (fails)
/// on a ledger mismatch.
fn run_one(
    sc: Scenario,
    action: Action,
    versioned: bool,
    k: u64,
    hold: Hold,
) -> Result<(u64, bool), String> {
    let mut segments = vec![(0, PAGES as u64, sc.unit)];
    segments.extend_from_slice(sc.segments);
    let layout = Layout::with_units(&segments, versioned);
    let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut pool: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut pool) }, unsafe { ReclaimNow::new() })
            .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(
                VirtAddr(VA),
                PhysAddr(BASE * KIB4),
                PAGES as u64 * KIB4,
                sc.leaf,
            )
            .with_perms(Perms::READ | Perms::WRITE | Perms::USER),
        )
    }
    .unwrap();
    let hooked = Hooked {
        layout: &layout,
        calls: Cell::new(0),
        fire_at: Cell::new(k),
        action,
        owners: RefCell::new(vec![0; PAGES]),
        fired: Cell::new(false),
        fire_on_page: Cell::new(None),
    };
    let gup = Gup::new(tables.walker(), &hooked);
    // SAFETY: nothing frees tables in this test.
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = vec![Pfn(0); sc.pages as usize];
    let flags = match hold {
        Hold::Pin => GupFlags::PIN | GupFlags::WRITE,
        Hold::Ref => GupFlags::empty(),
    };
    let taken = gup
        .get_pages(
            &guard,
            VirtAddr(VA + sc.from * KIB4),
            sc.pages * KIB4,
            flags,
            &mut out,
        )
        .unwrap();
    let calls = hooked.calls.get();
    hooked.fire_at.set(0); // no more hooks: the checks below look up too
    let ctx = format!("{sc:?} {action:?} versioned={versioned} k={k} {hold:?} -> {taken:?}");

    // The PFNs are the mapping's, in order.
    for (i, p) in out[..taken.pages].iter().enumerate() {
        assert_eq!(p.0, BASE + sc.from + i as u64, "wrong PFN at {i}: {ctx}");
    }
    assert_eq!(
        taken.pages as u64 == sc.pages,
        taken.stop == Stop::Complete,
        "{ctx}"
    );
    // The ledger: owners plus the returned pages, each on its meta *now*.
    let owners: Vec<u32> = hooked.owners.borrow().clone();
    let mut gup_held = [0u32; PAGES];
    for p in &out[..taken.pages] {
        let u = layout.unit(*p).unwrap();
        gup_held[(u.head.0 - BASE) as usize] += 1;
    }
    for i in 0..PAGES {
        let m = &layout.metas[i];
        let (refs, pins) = match hold {
            Hold::Ref => (owners[i] + gup_held[i], 0),
            Hold::Pin => (owners[i], gup_held[i]),
        };
        if (m.refs(), m.pins()) != (refs, pins) {
            return Err(format!(
                "meta {i} holds (refs, pins) = {:?}, the ledger says {:?}: {ctx}",
                (m.refs(), m.pins()),
                (refs, pins)
            ));
        }
    }
    // Release what was taken, through the public API, and what owners took.
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&layout, &out[..taken.pages], hold) }
        .unwrap_or_else(|e| panic!("release: {e}: {ctx}"));
    for (i, &n) in hooked.owners.borrow().iter().enumerate() {
        for _ in 0..n {
            // SAFETY: gives back a count this code took above.
            let _ = unsafe { layout.metas[i].put(Hold::Ref, 1) }.unwrap();
        }
    }
    assert!(
        layout.metas.iter().all(|m| m.load().is_idle()),
        "left over counts after release: {ctx}"
    );
    Ok((calls, hooked.fired.get()))
}

/// Sweeps k over every `unit()` call a hook-less run makes (and a few more);
/// fails with the first ledger mismatch and the number of them.
fn sweep_versions(sc: Scenario, action: Action, versions: &[bool]) -> u64 {
    let mut fired = 0;
    let mut failures = Vec::new();
    for &versioned in versions {
        for hold in [Hold::Ref, Hold::Pin] {
            let (calls, _) = run_one(sc, action, versioned, 0, hold).unwrap();
            for k in 1..=calls + 2 {
                match run_one(sc, action, versioned, k, hold) {
                    Ok((_, true)) => fired += 1,
                    Ok((_, false)) => {}
                    Err(e) => failures.push(e),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} ledger mismatches, first: {}",
        failures.len(),
        failures[0]
    );
    fired
}

fn sweep(sc: Scenario, action: Action) -> u64 {
    sweep_versions(sc, action, &[false, true])
}

const SMALL_LEAVES_OVER_2M: Scenario = Scenario {
    segments: &[],
    unit: 512,
    leaf: KIB4,
    from: 5,
    pages: 100,
};
const HUGE_LEAF_OVER_4K: Scenario = Scenario {
    segments: &[],
    unit: 1,
    leaf: MIB2,
    from: 0,
    pages: 512,
};
const HUGE_LEAF_OVER_2M: Scenario = Scenario {
    segments: &[],
    unit: 512,
    leaf: MIB2,
    from: 0,
    pages: 1024,
};
const HUGE_LEAF_OVER_64: Scenario = Scenario {
    segments: &[],
    unit: 64,
    leaf: MIB2,
    from: 30,
    pages: 700,
};
const SMALL_LEAVES_OVER_16: Scenario = Scenario {
    segments: &[],
    unit: 16,
    leaf: KIB4,
    from: 3,
    pages: 200,
};
const SMALL_LEAVES_OVER_4K: Scenario = Scenario {
    segments: &[],
    unit: 1,
    leaf: KIB4,
    from: 0,
    pages: 96,
};

/// Singles, then a unit that starts exactly where a chunk or batch of 32
/// gets ends (the walker may have looked it up before the chunk ended).
const HUGE_LEAF_CHUNK_BOUNDARY: Scenario = Scenario {
    segments: &[(32, 32, 32), (96, 64, 64), (200, 33, 33)],
    unit: 1,
    leaf: MIB2,
    from: 0,
    pages: 512,
};
const SMALL_LEAVES_BATCH_BOUNDARY: Scenario = Scenario {
    segments: &[(32, 64, 64), (127, 40, 40), (200, 100, 100)],
    unit: 1,
    leaf: KIB4,
    from: 0,
    pages: 400,
};
const SMALL_LEAVES_UNALIGNED: Scenario = Scenario {
    segments: &[(31, 33, 33), (64, 31, 31), (95, 66, 66)],
    unit: 1,
    leaf: KIB4,
    from: 1,
    pages: 300,
};

const BOUNDARY_SCENARIOS: [Scenario; 3] = [
    HUGE_LEAF_CHUNK_BOUNDARY,
    SMALL_LEAVES_BATCH_BOUNDARY,
    SMALL_LEAVES_UNALIGNED,
];
const BOUNDARY_ACTIONS: [Action; 4] = [
    Action::SplitToSingles,
    Action::SplitToOwners,
    Action::ReallocToOwner,
    Action::Merge32,
];

/// Every boundary scenario and action, against a map without a layout
/// version (GUP-fast must look every unit up again).
#[test]
fn boundary_reshapes_without_layout_version() {
    for sc in BOUNDARY_SCENARIOS {
        for action in BOUNDARY_ACTIONS {
            assert!(
                sweep_versions(sc, action, &[false]) > 0,
                "{sc:?} {action:?}"
            );
        }
    }
}

/// The same with a layout version (contract point 6): the second lookups may
/// be skipped only when no change happened *since the lookup that is used*.
#[test]

fn boundary_reshapes_with_layout_version() {
    let mut failed = Vec::new();
    for sc in BOUNDARY_SCENARIOS {
        for action in BOUNDARY_ACTIONS {
            let r = std::panic::catch_unwind(|| sweep_versions(sc, action, &[true]));
            if let Err(e) = r {
                let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
                failed.push(msg);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} combos failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn split_under_small_leaves_over_a_2m_unit() {
    assert!(sweep(SMALL_LEAVES_OVER_2M, Action::SplitToSingles) > 0);
    assert!(sweep(SMALL_LEAVES_OVER_2M, Action::SplitTo16) > 0);
    assert!(sweep(SMALL_LEAVES_OVER_2M, Action::SplitToOwners) > 0);
}

#[test]
fn split_under_a_huge_leaf_over_a_2m_unit() {
    assert!(sweep(HUGE_LEAF_OVER_2M, Action::SplitToSingles) > 0);
    assert!(sweep(HUGE_LEAF_OVER_2M, Action::SplitToOwners) > 0);
    assert!(sweep(HUGE_LEAF_OVER_2M, Action::SplitTo16) > 0);
}

#[test]
fn split_under_a_huge_leaf_over_64_page_units() {
    assert!(sweep(HUGE_LEAF_OVER_64, Action::SplitToSingles) > 0);
    assert!(sweep(HUGE_LEAF_OVER_64, Action::SplitTo16) > 0);
    assert!(sweep(HUGE_LEAF_OVER_64, Action::SplitToOwners) > 0);
}

#[test]
fn merge_under_a_huge_leaf_over_4k_units() {
    assert!(sweep(HUGE_LEAF_OVER_4K, Action::Merge32) > 0);
    assert!(sweep(HUGE_LEAF_OVER_4K, Action::Merge512) > 0);
}

#[test]
fn merge_under_small_leaves() {
    assert!(sweep(SMALL_LEAVES_OVER_4K, Action::Merge32) > 0);
    assert!(sweep(SMALL_LEAVES_OVER_16, Action::Merge512) > 0);
    assert!(sweep(SMALL_LEAVES_OVER_16, Action::Merge32) > 0);
}

#[test]
fn realloc_to_another_owner_between_lookup_and_get() {
    for sc in [
        SMALL_LEAVES_OVER_2M,
        HUGE_LEAF_OVER_4K,
        HUGE_LEAF_OVER_2M,
        SMALL_LEAVES_OVER_16,
    ] {
        assert!(sweep(sc, Action::ReallocToOwner) > 0, "{sc:?}");
    }
}

/// A split right before the get must not be reported as taken on the old
/// head: a pointed check of the simplest case, with its expected outcome.
#[test]
fn split_before_the_get_of_a_huge_leaf_is_changed_and_undone() {
    for versioned in [false, true] {
        // Call 1 is the lookup of the leaf's first page.
        let layout = Layout::new(512, versioned);
        let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
        let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
        let mut pool: Vec<PhysAddr> = memory.frame_pas().collect();
        let mut tables =
            // SAFETY: no walker or MMU reads these tables while the builder unmaps.
            // The pool's frames are this code's own, in no other pool.
            TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut pool) }, unsafe { ReclaimNow::new() })
                .unwrap();
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe {
            tables.map(
                &MapRequest::new(VirtAddr(VA), PhysAddr(BASE * KIB4), MIB2, MIB2)
                    .with_perms(Perms::READ | Perms::WRITE),
            )
        }
        .unwrap();
        let hooked = Hooked {
            layout: &layout,
            calls: Cell::new(0),
            fire_at: Cell::new(1),
            action: Action::SplitToSingles,
            owners: RefCell::new(vec![0; PAGES]),
            fired: Cell::new(false),
            fire_on_page: Cell::new(None),
        };
        let gup = Gup::new(tables.walker(), &hooked);
        // SAFETY: nothing frees tables in this test.
        let guard = unsafe { TablesNeverFreed::new() };
        let mut out = vec![Pfn(0); 512];
        let taken = gup
            .get_pages(&guard, VirtAddr(VA), MIB2, GupFlags::PIN, &mut out)
            .unwrap();
        assert!(hooked.fired.get());
        hooked.fire_at.set(0);
        // The single RMW on the old head counted 512 pages it no longer owns:
        // either the walk stopped (Changed) with nothing taken from that get, or
        // it went on taking the new units one by one.
        match taken.stop {
            Stop::Changed { va } => assert_eq!(va, VirtAddr(VA), "{taken:?}"),
            Stop::Complete => {}
            other => panic!("unexpected stop {other:?}"),
        }
        assert_eq!(layout.metas[0].pins() as usize, taken.pages.min(1));
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&layout, &out[..taken.pages], Hold::Pin) }.unwrap();
        assert!(layout.metas.iter().all(|m| m.load().is_idle()));
    }
}

/// Finding 1, pointed: 4 KiB leaves over pages 0..63 of a versioned map;
/// pages 0..30 are one-page units, 31..63 one 33-page unit. Between the
/// walker's lookup of page 31 and its get, the 33-page unit (idle) is split
/// into one-page units and reallocated, the version bumped (contract points 3
/// and 6). Page 31 is the last leaf of the first batch of 32; pages 32..63 are
/// the second batch.
#[test]

fn stale_cached_unit_survives_into_the_next_batch() {
    let layout = Layout::with_units(&[(31, 33, 33)], true);
    let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut pool: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut pool) }, unsafe { ReclaimNow::new() })
            .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(VirtAddr(VA), PhysAddr(BASE * KIB4), 64 * KIB4, KIB4)
                .with_perms(Perms::READ | Perms::WRITE),
        )
    }
    .unwrap();
    let hooked = Hooked {
        layout: &layout,
        calls: Cell::new(0),
        fire_at: Cell::new(0),
        action: Action::SplitToSingles,
        owners: RefCell::new(vec![0; PAGES]),
        fired: Cell::new(false),
        fire_on_page: Cell::new(Some(31)),
    };
    let gup = Gup::new(tables.walker(), &hooked);
    // SAFETY: nothing frees tables in this test.
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = vec![Pfn(0); 64];
    let taken = gup
        .get_pages(&guard, VirtAddr(VA), 64 * KIB4, GupFlags::PIN, &mut out)
        .unwrap();
    assert!(hooked.fired.get(), "the split happened");
    // Whatever was taken must be counted where the map says now.
    for p in &out[..taken.pages] {
        let i = (p.0 - BASE) as usize;
        assert_eq!(
            layout.head_of(i as u64),
            (i as u64, 1),
            "every page is its own unit now"
        );
    }
    let pins: Vec<u32> = (0..64).map(|i| layout.metas[i].pins()).collect();
    let expected: Vec<u32> = (0..64).map(|i| u32::from(i < taken.pages)).collect();
    assert_eq!(
        pins, expected,
        "each page taken is pinned on its own (current) head; {taken:?}"
    );
}
