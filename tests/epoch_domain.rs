//! Run: `cargo test --test epoch_domain`
//!
//! The tie between an epoch's readers and its retire hook (`guard` module
//! docs, "Domains"): the combinations that compile do what they say, and the
//! brand's claim keeps a second epoch of the same brand from existing. The
//! combinations that must not compile are the `compile_fail` examples in
//! `src/guard.rs`; the first test here is the first of them with the right
//! reader.

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::{BrandTaken, Epoch, EpochRetire, WalkGuard};
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{Pfn, SliceMemMap};
use pagepin::meta::{Hold, PageMeta};
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapRequest, Perms, PhysAddr, TableBuilder, VirtAddr, Walker,
};

const KIB4: u64 = 4096;
const VA: u64 = 0x40_0000;
const DATA: u64 = 0x8000_0000;
const PAGES: usize = 4;

pagepin::epoch_brand!(
    /// The brand of `pins_under_the_tables_epoch_and_holds_their_retirement_back`.
    enum Retirement
);
pagepin::epoch_brand!(
    /// The brand of `a_root_kept_apart_from_its_builder_names_its_domain`.
    enum KeptApart
);
pagepin::epoch_brand!(
    /// The brand of `one_epoch_of_a_brand_lives_at_a_time`.
    enum OneAtATime
);
pagepin::epoch_brand!(
    /// Another brand, independent of `OneAtATime`.
    enum Independent
);
pagepin::epoch_brand!(
    /// The brand two threads race to claim.
    enum Contended
);

#[test]
fn pins_under_the_tables_epoch_and_holds_their_retirement_back() {
    let metas: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let memmap = unsafe { SliceMemMap::<1>::new(Pfn(DATA / KIB4), &metas) };
    let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let epoch = Epoch::<Retirement, 2>::new().unwrap();
    // SAFETY: host tables: no MMU walks them, no TLB caches them.
    let retire = unsafe { EpochRetire::<_, 2, 8>::new(&epoch) };
    let mut tables =
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, retire)
            .unwrap();
    let rw = Perms::READ | Perms::WRITE;
    let len = PAGES as u64 * KIB4;
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&MapRequest::new(VirtAddr(VA), PhysAddr(DATA), len, KIB4).with_perms(rw)) }
        .unwrap();
    let free_after_map = tables.pool().free_count();

    let gup = Gup::new(tables.walker(), &memmap);
    let reader = epoch.reader().unwrap();
    let mut out = [Pfn(0); PAGES];
    let taken = gup
        .get_pages(&reader, VirtAddr(VA), len, GupFlags::PIN, &mut out)
        .unwrap();
    assert_eq!((taken.pages, taken.stop), (PAGES, Stop::Complete));
    assert_eq!(out[0], Pfn(DATA / KIB4));
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &out, Hold::Pin) }.unwrap();
    assert!(metas.iter().all(PageMeta::is_idle));

    // A read section open across the unmap keeps the detached tables (the
    // last-level table and the two above it) out of the pool.
    let section = reader.enter();
    let unmapped = tables.unmap(VirtAddr(VA), len).unwrap();
    assert_eq!(unmapped.leaves, PAGES);
    assert_eq!(unmapped.tables, 3);
    tables.reclaim().unwrap();
    assert_eq!(tables.retire_hook().pending(), 3);
    assert_eq!(tables.pool().free_count(), free_after_map);
    drop(section);
    tables.reclaim().unwrap();
    assert_eq!(tables.retire_hook().pending(), 0);
    assert_eq!(tables.pool().free_count(), free_after_map + 3);
}

#[test]
fn a_root_kept_apart_from_its_builder_names_its_domain() {
    let metas: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let memmap = unsafe { SliceMemMap::<1>::new(Pfn(DATA / KIB4), &metas) };
    let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let epoch = Epoch::<KeptApart, 1>::new().unwrap();
    // SAFETY: host tables: no MMU walks them, no TLB caches them.
    let retire = unsafe { EpochRetire::<_, 1, 8>::new(&epoch) };
    let mut tables =
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, retire)
            .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(VirtAddr(VA), PhysAddr(DATA), KIB4, KIB4)
                .with_perms(Perms::READ | Perms::WRITE),
        )
    }
    .unwrap();
    // A kernel that keeps only the root (a per-process CR3 value, say).
    let root = tables.root();
    // SAFETY: the tables under `root` are retired only through `tables`'
    // hook, an `EpochRetire` of `epoch`, whose domain is `KeptApart`.
    let walker = unsafe { Walker::<Paging4Level, _, KeptApart>::new_in(&memory, root) };
    let reader = epoch.reader().unwrap();
    let mut out = [Pfn(0)];
    let taken = Gup::new(walker, &memmap)
        .get_pages(&reader, VirtAddr(VA), KIB4, GupFlags::PIN, &mut out)
        .unwrap();
    assert_eq!((taken.pages, out[0]), (1, Pfn(DATA / KIB4)));
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &out, Hold::Pin) }.unwrap();
}

#[test]
fn one_epoch_of_a_brand_lives_at_a_time() {
    let first = Epoch::<OneAtATime, 2>::new().unwrap();
    assert_eq!(Epoch::<OneAtATime, 2>::new().unwrap_err(), BrandTaken);
    // The claim is the brand's, whatever the slot count.
    assert_eq!(Epoch::<OneAtATime, 8>::new().unwrap_err(), BrandTaken);
    // Another brand is not held back.
    let other = Epoch::<Independent, 2>::new().unwrap();
    drop(first);
    let second = Epoch::<OneAtATime, 8>::new().unwrap();
    assert_eq!(Epoch::<Independent, 2>::new().unwrap_err(), BrandTaken);
    drop((second, other));
    assert!(Epoch::<Independent, 1>::new().is_ok());
}

#[test]
fn threads_racing_for_a_brand_get_one_epoch() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 500;
    let barrier = Barrier::new(THREADS);
    let won = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    barrier.wait();
                    let epoch = Epoch::<Contended, 1>::new();
                    if epoch.is_ok() {
                        won.fetch_add(1, Ordering::Relaxed);
                    }
                    // Every thread has tried before the winner drops its epoch.
                    barrier.wait();
                    drop(epoch);
                    // The winner has dropped it before the next round's tries.
                    barrier.wait();
                }
            });
        }
    });
    assert_eq!(won.load(Ordering::Relaxed), ROUNDS);
}
