//! An outside review of the vendoring API, black-box: only the public API with
//! the `host` feature, written from README.md, DESIGN.md and the rustdoc.
//!
//! It found eleven holes. Five are fixed and tested here (a handle's drop
//! releasing past a refused page, the `EpochRetire` backlog as a typed error,
//! `with_root`'s misaligned root and root inside the pool, a pool listing a
//! frame twice). The other six were safe code breaking a promise whose breach
//! is DMA into freed memory, and are now `unsafe` to make (`FramePool::new`,
//! `FramePool::give_back`, `TableBuilder::with_root`, `Retire::retire`,
//! `gup::release`/`PageMeta::put`, `SliceMemMap::new`, the `Unmapper` and
//! `TlbShootdown` traits); a test of breaking them would only test a lie in a
//! `SAFETY` comment, so they live on as `compile_fail` doctests instead.
//!
//! Run: `cargo test --test review_api` (and `--features x86_64,aarch64-paging`
//! for the address conversions).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use pagepin::arch::aarch64::Stage2G4K40;
use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::{Epoch, EpochRetire, SlotsFull, TablesNeverFreed, WalkGuard};
use pagepin::gup::{Gup, ReleaseErrorKind};
use pagepin::gup::{GupError, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, Pfn, Region, SliceMemMap};
use pagepin::meta::{Hold, PageMeta};
use pagepin::table::{
    AccessError, DirectMap, FramePool, HostFrame, HostMemory, LeafSizes, MapError, MapRequest,
    Perms, PhysAddr, ReclaimNow, TableAccess, TableBuilder, UnmapError, VaRange, VirtAddr,
};
use pagepin::truncate::{
    DrainError, Extent, FileMapping, TableUnmapper, TlbShootdown, Truncate, Wait,
};
use pagepin::wait::{Clock, SpinWaiter};

// ---------------------------------------------------------------- fixtures

const TABLES_PA: u64 = 0x10_0000;
/// The data pages: PFN 0x8_0000 (2 GiB) on, 4 KiB each.
const DATA_PFN: u64 = 0x8_0000;
const DATA_PA: u64 = DATA_PFN << 12;
const RW: Perms = Perms::READ.union(Perms::WRITE);

fn leak<T>(v: Vec<T>) -> &'static mut [T] {
    Box::leak(v.into_boxed_slice())
}

/// `n` host frames at physical 1 MiB.
fn host(n: usize) -> &'static HostMemory<'static> {
    let frames: &'static [HostFrame] = leak((0..n).map(|_| HostFrame::new()).collect());
    Box::leak(Box::new(
        HostMemory::new(frames, PhysAddr(TABLES_PA)).unwrap(),
    ))
}

fn slots(mem: &HostMemory<'_>) -> &'static mut [PhysAddr] {
    leak(mem.frame_pas().collect())
}

fn metas(n: usize) -> &'static [PageMeta] {
    leak((0..n).map(|_| PageMeta::new_allocated()).collect())
}

fn memmap(n: usize) -> &'static SliceMemMap<'static> {
    // SAFETY: this map is the only one counting on these metas.
    Box::leak(Box::new(unsafe {
        SliceMemMap::new(Pfn(DATA_PFN), metas(n))
    }))
}

type HostBuilder<R> = TableBuilder<'static, Paging4Level, HostMemory<'static>, R>;

/// A builder whose tables no walker reads while it unmaps (single thread).
fn builder(mem: &'static HostMemory<'static>) -> HostBuilder<ReclaimNow> {
    // SAFETY: the tests that use it never unmap while walking, no MMU walks host frames.
    let retire = unsafe { ReclaimNow::new() };
    // SAFETY: the frames are this code's own, listed once, in no other pool.
    TableBuilder::new(mem, unsafe { FramePool::new(slots(mem)) }, retire).unwrap()
}

fn map4k(
    b: &mut HostBuilder<impl pagepin::table::Retire>,
    va: u64,
    pfn: u64,
    pages: u64,
    perms: Perms,
) {
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        b.map(
            &MapRequest::new(VirtAddr(va), PhysAddr(pfn << 12), pages << 12, 0x1000)
                .with_perms(perms),
        )
    }
    .unwrap();
}

fn never_freed() -> TablesNeverFreed {
    // SAFETY: single-threaded tests; no table is freed while a call of these tests walks.
    unsafe { TablesNeverFreed::new() }
}

/// A clock that moves 1 µs on every reading, so deadlines pass without sleeping.
struct Ticking(AtomicU64);
impl Clock for Ticking {
    fn now_ns(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::Relaxed)
    }
}

/// A TLB hook that records what each flush was told.
#[derive(Default)]
struct Recorder(Vec<(usize, VaRange, LeafSizes)>);
// SAFETY: host tables: no MMU walks them; this hook only records the calls.
unsafe impl TlbShootdown for &mut Recorder {
    fn flush(&mut self, space: usize, range: VaRange, sizes: LeafSizes) {
        self.0.push((space, range, sizes));
    }
}

/// Runs `f` on a thread; `Some(result)` if it finished within `secs`, `None` if it hung
/// (the thread is left behind: the test process ends it).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).ok()
}

fn all_idle(m: &SliceMemMap<'_>, first: u64, pages: u64) -> bool {
    (first..first + pages).all(|p| m.meta_of(Pfn(p)).unwrap().is_idle())
}

// ---------------------------------------------------------------- epoch brands

pagepin::epoch_brand!(enum BrandClaimOnce);
pagepin::epoch_brand!(enum BrandForget);
pagepin::epoch_brand!(enum BrandThreads);
pagepin::epoch_brand!(enum BrandSlots);
pagepin::epoch_brand!(enum BrandNest);
pagepin::epoch_brand!(enum BrandLate);
pagepin::epoch_brand!(enum BrandGup);
pagepin::epoch_brand!(enum BrandHang);
pagepin::epoch_brand!(enum BrandCap);
pagepin::epoch_brand!(enum BrandRootA);
pagepin::epoch_brand!(enum BrandRootB);
pagepin::epoch_brand!(enum BrandHook);

// Attacks the one-live-epoch-per-brand rule: a second epoch while the first lives, and the claim's release.
#[test]
fn a_brand_has_one_live_epoch_and_drop_releases_the_claim() {
    let e = Epoch::<BrandClaimOnce, 2>::new().unwrap();
    assert!(Epoch::<BrandClaimOnce, 2>::new().is_err());
    // Another slot count is the same brand, so the same claim.
    assert!(Epoch::<BrandClaimOnce, 7>::new().is_err());
    drop(e);
    let again = Epoch::<BrandClaimOnce, 7>::new().unwrap();
    drop(again);
}

// Attacks the claim with mem::forget: a leaked epoch keeps its brand (no second epoch ever).
#[test]
fn a_forgotten_epoch_keeps_its_brand_claimed() {
    std::mem::forget(Epoch::<BrandForget, 1>::new().unwrap());
    for _ in 0..3 {
        assert!(Epoch::<BrandForget, 1>::new().is_err());
    }
}

// Attacks the brand claim across threads: claim/drop cycles racing on 4 threads never see two live epochs.
#[test]
fn brand_claim_and_drop_cycles_across_threads_never_overlap() {
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static MAX: AtomicUsize = AtomicUsize::new(0);
    static WINS: AtomicUsize = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..2_000 {
                    if let Ok(e) = Epoch::<BrandThreads, 1>::new() {
                        let now = LIVE.fetch_add(1, Ordering::SeqCst) + 1;
                        MAX.fetch_max(now, Ordering::SeqCst);
                        WINS.fetch_add(1, Ordering::Relaxed);
                        std::hint::spin_loop();
                        LIVE.fetch_sub(1, Ordering::SeqCst);
                        drop(e);
                    }
                }
            });
        }
    });
    assert_eq!(MAX.load(Ordering::SeqCst), 1);
    assert!(WINS.load(Ordering::Relaxed) > 0);
    // And the claim is free at the end.
    drop(Epoch::<BrandThreads, 1>::new().unwrap());
}

// Attacks reader-slot exhaustion: the (SLOTS+1)-th reader is a typed error, and dropping one frees its slot.
#[test]
fn reader_slots_exhausted_is_slots_full_and_a_dropped_reader_frees_its_slot() {
    let e = Epoch::<BrandSlots, 2>::new().unwrap();
    let r1 = e.reader().unwrap();
    let r2 = e.reader().unwrap();
    assert_eq!(e.reader().err(), Some(SlotsFull));
    drop(r1);
    let r3 = e.reader().unwrap();
    assert_eq!(e.reader().err(), Some(SlotsFull));
    drop((r2, r3));
    // A zero-slot epoch has no reader at all, and that is an error, not a panic.
    pagepin::epoch_brand!(enum NoSlots);
    let none = Epoch::<NoSlots, 0>::new().unwrap();
    assert_eq!(none.reader().err(), Some(SlotsFull));
}

// Attacks nested read sections: the inner guard's drop must not end the outer section.
#[test]
fn nested_read_sections_hold_until_the_outermost_ends() {
    let e = Epoch::<BrandNest, 2>::new().unwrap();
    let r = e.reader().unwrap();
    let outer = r.enter();
    let inner = r.enter();
    let retired = e.retire_epoch();
    assert!(!e.is_safe(retired));
    drop(inner);
    assert!(
        !e.is_safe(retired),
        "the inner guard ended the outer read section"
    );
    drop(outer);
    assert!(e.is_safe(retired));
}

// Attacks the grace period's bounds: a reader that entered after a retirement does not hold it back, one before does.
#[test]
fn only_readers_entered_before_a_retirement_hold_it_back() {
    let e = Epoch::<BrandLate, 2>::new().unwrap();
    let early = e.reader().unwrap();
    let late = e.reader().unwrap();
    let g_early = early.enter();
    let retired = e.retire_epoch();
    let g_late = late.enter();
    assert!(!e.is_safe(retired));
    drop(g_early);
    assert!(
        e.is_safe(retired),
        "a reader that entered after the retirement held it back"
    );
    drop(g_late);
}

// ---------------------------------------------------------------- GUP-fast and HeldPages

// Attacks HeldPages' basic contract: exact PFNs, pins counted once per page, released on drop.
#[test]
fn held_pages_pin_exactly_and_unpin_on_drop() {
    let mem = host(8);
    let mm = memmap(8);
    let mut b = builder(mem);
    map4k(&mut b, 0x40_0000, DATA_PFN, 4, RW);
    let gup = Gup::new(b.walker(), mm);
    let guard = never_freed();
    let mut out = [Pfn(0); 4];
    {
        let held = gup
            .get_held(
                &guard,
                VirtAddr(0x40_0000),
                0x4000,
                GupFlags::PIN | GupFlags::WRITE,
                &mut out,
            )
            .unwrap();
        assert_eq!(held.stop(), Stop::Complete);
        assert_eq!(held.hold(), Hold::Pin);
        let want: Vec<Pfn> = (0..4).map(|i| Pfn(DATA_PFN + i)).collect();
        assert_eq!(held.pfns(), &want[..]);
        for p in &want {
            assert_eq!(mm.meta_of(*p).unwrap().pins(), 1);
            assert_eq!(mm.meta_of(*p).unwrap().refs(), 0);
        }
    }
    assert!(all_idle(mm, DATA_PFN, 8));
}

// Attacks an `out` slice shorter than the range: OutFull at the first page not taken, the rest untouched.
#[test]
fn out_shorter_than_the_range_stops_out_full_and_takes_only_what_fits() {
    let mem = host(8);
    let mm = memmap(8);
    let mut b = builder(mem);
    map4k(&mut b, 0x40_0000, DATA_PFN, 8, RW);
    let gup = Gup::new(b.walker(), mm);
    let guard = never_freed();
    let mut out = [Pfn(0); 3];
    let held = gup
        .get_held(&guard, VirtAddr(0x40_0000), 0x8000, GupFlags::PIN, &mut out)
        .unwrap();
    assert_eq!(held.pfns().len(), 3);
    assert_eq!(
        held.stop(),
        Stop::OutputFull {
            va: VirtAddr(0x40_3000)
        }
    );
    assert!(all_idle(mm, DATA_PFN + 3, 5));
    held.release().unwrap();
    assert!(all_idle(mm, DATA_PFN, 8));
}

// Attacks an empty `out` slice: nothing taken, no panic (a typed stop or error).
#[test]
fn an_empty_out_slice_takes_nothing() {
    let mem = host(8);
    let mm = memmap(4);
    let mut b = builder(mem);
    map4k(&mut b, 0x40_0000, DATA_PFN, 4, RW);
    let gup = Gup::new(b.walker(), mm);
    let guard = never_freed();
    let mut out: [Pfn; 0] = [];
    match gup.get_held(&guard, VirtAddr(0x40_0000), 0x4000, GupFlags::PIN, &mut out) {
        Ok(held) => {
            assert!(held.pfns().is_empty());
            assert_eq!(
                held.stop(),
                Stop::OutputFull {
                    va: VirtAddr(0x40_0000)
                }
            );
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
    assert!(all_idle(mm, DATA_PFN, 4));
}

// Attacks range validation: zero-length, unaligned, wrapping, non-canonical, straddling the hole, LONGTERM without PIN.
#[test]
fn bad_ranges_and_flags_are_typed_errors_that_take_nothing() {
    let mem = host(8);
    let mm = memmap(4);
    let mut b = builder(mem);
    map4k(&mut b, 0x40_0000, DATA_PFN, 4, RW);
    let gup = Gup::new(b.walker(), mm);
    let guard = never_freed();
    let mut out = [Pfn(0); 8];
    let cases: [(u64, u64, GupFlags); 9] = [
        (0x40_0000, 0, GupFlags::PIN),                   // empty
        (0x40_0800, 0x1000, GupFlags::PIN),              // unaligned start
        (0x40_0000, 0x800, GupFlags::PIN),               // unaligned length
        (0xffff_ffff_ffff_f000, 0x2000, GupFlags::PIN),  // wraps
        (0x0000_8000_0000_0000, 0x1000, GupFlags::PIN),  // non-canonical
        (0x0000_7fff_ffff_f000, 0x2000, GupFlags::PIN),  // runs into the hole
        (0xffff_7fff_ffff_f000, 0x1000, GupFlags::PIN),  // inside the hole
        (u64::MAX - 0xfff + 1, u64::MAX, GupFlags::PIN), // huge length, wraps
        (0x40_0000, 0x1000, GupFlags::LONGTERM),         // LONGTERM without PIN
    ];
    for (start, len, flags) in cases {
        let r = gup.get_pages(&guard, VirtAddr(start), len, flags, &mut out);
        assert!(r.is_err(), "{start:#x}+{len:#x} {flags:?} accepted: {r:?}");
        let r = gup.get_held(&guard, VirtAddr(start), len, flags, &mut out);
        assert!(r.is_err());
    }
    assert!(matches!(
        gup.get_pages(&guard, VirtAddr(0x40_0800), 0x1000, GupFlags::PIN, &mut out),
        Err(GupError::Misaligned { .. })
    ));
    assert!(all_idle(mm, DATA_PFN, 4));
}

// Attacks the canonical edges: the last page of each half is walkable; the first beyond is refused.
#[test]
fn the_last_page_of_each_canonical_half_is_pinnable() {
    let mem = host(16);
    let mm = memmap(4);
    let mut b = builder(mem);
    map4k(&mut b, 0x0000_7fff_ffff_f000, DATA_PFN, 1, RW);
    map4k(&mut b, 0xffff_ffff_ffff_f000, DATA_PFN + 1, 1, RW);
    map4k(&mut b, 0xffff_8000_0000_0000, DATA_PFN + 2, 1, RW);
    let gup = Gup::new(b.walker(), mm);
    let guard = never_freed();
    let mut out = [Pfn(0); 1];
    for (va, pfn) in [
        (0x0000_7fff_ffff_f000u64, DATA_PFN),
        (0xffff_ffff_ffff_f000, DATA_PFN + 1),
        (0xffff_8000_0000_0000, DATA_PFN + 2),
    ] {
        let held = gup
            .get_held(&guard, VirtAddr(va), 0x1000, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(
            (held.pfns(), held.stop()),
            (&[Pfn(pfn)][..], Stop::Complete)
        );
    }
    assert!(all_idle(mm, DATA_PFN, 4));
}

// Attacks partial results: a hole and a read-only page mid-range stop the walk; HeldPages releases exactly the prefix.
#[test]
fn partial_results_hold_exactly_the_prefix() {
    let mem = host(8);
    let mm = memmap(8);
    let mut b = builder(mem);
    map4k(&mut b, 0x40_0000, DATA_PFN, 2, RW);
    // 0x40_2000 is a hole; 0x40_3000 read-only.
    map4k(&mut b, 0x40_3000, DATA_PFN + 3, 1, Perms::READ);
    let gup = Gup::new(b.walker(), mm);
    let guard = never_freed();
    let mut out = [Pfn(0); 4];
    let held = gup
        .get_held(&guard, VirtAddr(0x40_0000), 0x4000, GupFlags::PIN, &mut out)
        .unwrap();
    assert_eq!(held.pfns(), &[Pfn(DATA_PFN), Pfn(DATA_PFN + 1)]);
    assert!(matches!(
        held.stop(),
        Stop::Absent {
            va: VirtAddr(0x40_2000),
            ..
        }
    ));
    drop(held);
    assert!(all_idle(mm, DATA_PFN, 8));
    let held = gup
        .get_held(
            &guard,
            VirtAddr(0x40_3000),
            0x1000,
            GupFlags::PIN | GupFlags::WRITE,
            &mut out,
        )
        .unwrap();
    assert!(held.pfns().is_empty());
    assert!(matches!(
        held.stop(),
        Stop::NotPermitted {
            va: VirtAddr(0x40_3000),
            ..
        }
    ));
    drop(held);
    // A leaf past the memory map: stops with OutsideMap after the pages before it.
    map4k(&mut b, 0x40_4000, DATA_PFN + 7, 2, RW); // PFN +8 is outside an 8-page map
    let gup = Gup::new(b.walker(), mm);
    let held = gup
        .get_held(&guard, VirtAddr(0x40_4000), 0x2000, GupFlags::PIN, &mut out)
        .unwrap();
    assert_eq!(held.pfns(), &[Pfn(DATA_PFN + 7)]);
    assert!(matches!(held.stop(), Stop::OutsideMap { .. }));
    drop(held);
    assert!(all_idle(mm, DATA_PFN, 8));
}

// Attacks huge leaves: a 2 MiB leaf taken from its middle gives the right PFNs, one count each, released on drop.
#[test]
fn part_of_a_huge_leaf_over_one_unit_counts_on_the_head() {
    let mem = host(8);
    // SAFETY: this map is the only one counting on these metas.
    let mut mm = unsafe { SliceMemMap::<1>::new(Pfn(DATA_PFN), metas(512)) };
    mm.add_region(Region {
        first: Pfn(DATA_PFN),
        pages: 512,
        unit_pages: 512,
        layout_managed: true,
    })
    .unwrap();
    let mut b = builder(mem);
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        b.map(
            &MapRequest::new(
                VirtAddr(0x4000_0000),
                PhysAddr(DATA_PA),
                0x20_0000,
                0x20_0000,
            )
            .with_perms(RW),
        )
    }
    .unwrap();
    let gup = Gup::new(b.walker(), &mm);
    let guard = never_freed();
    let mut out = [Pfn(0); 3];
    let held = gup
        .get_held(
            &guard,
            VirtAddr(0x4000_0000 + 0x10_0000),
            0x3000,
            GupFlags::PIN,
            &mut out,
        )
        .unwrap();
    assert_eq!(
        held.pfns(),
        &[
            Pfn(DATA_PFN + 256),
            Pfn(DATA_PFN + 257),
            Pfn(DATA_PFN + 258)
        ]
    );
    assert_eq!(mm.unit(Pfn(DATA_PFN + 300)).unwrap().meta.pins(), 3);
    // A long-term pin on the layout-managed unit is refused, and nothing is taken.
    let mut out2 = [Pfn(0); 1];
    let lt = gup
        .get_held(
            &guard,
            VirtAddr(0x4000_0000),
            0x1000,
            GupFlags::PIN | GupFlags::LONGTERM,
            &mut out2,
        )
        .unwrap();
    assert!(lt.pfns().is_empty());
    assert!(matches!(lt.stop(), Stop::LongTermOnLayoutManaged { .. }));
    drop(lt);
    drop(held);
    assert!(mm.unit(Pfn(DATA_PFN)).unwrap().meta.is_idle());
}

// Attacks explicit release paths: into_raw + release releases once; a second release of the same PFNs is a typed error.
#[test]
fn into_raw_then_release_twice_is_refused_the_second_time() {
    let mem = host(8);
    let mm = memmap(4);
    let mut b = builder(mem);
    map4k(&mut b, 0x40_0000, DATA_PFN, 2, RW);
    let gup = Gup::new(b.walker(), mm);
    let guard = never_freed();
    let mut out = [Pfn(0); 2];
    let held = gup
        .get_held(&guard, VirtAddr(0x40_0000), 0x2000, GupFlags::PIN, &mut out)
        .unwrap();
    let (pfns, hold) = held.into_raw();
    assert_eq!(hold, Hold::Pin);
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(mm, pfns, hold) }.unwrap();
    // SAFETY: the pages were taken above by this code and are released once.
    let again = unsafe { release(mm, pfns, hold) }.unwrap_err();
    assert_eq!(again.released, 0);
    assert!(matches!(again.kind, ReleaseErrorKind::Put(..)));
    assert!(all_idle(mm, DATA_PFN, 4));
}

// Attacks HeldPages' drop when its count was released behind its back: no panic, a typed error from release().
#[test]
fn a_held_handle_whose_pins_were_stolen_reports_instead_of_panicking() {
    let mem = host(8);
    let mm = memmap(4);
    let mut b = builder(mem);
    map4k(&mut b, 0x40_0000, DATA_PFN, 2, RW);
    let gup = Gup::new(b.walker(), mm);
    let guard = never_freed();
    let mut out = [Pfn(0); 2];
    let held = gup
        .get_held(&guard, VirtAddr(0x40_0000), 0x2000, GupFlags::PIN, &mut out)
        .unwrap();
    // SAFETY: gives back a count this code took above.
    let _ = unsafe { mm.meta_of(Pfn(DATA_PFN + 1)).unwrap().put(Hold::Pin, 1) }.unwrap();
    let err = held.release().unwrap_err();
    assert_eq!((err.released, err.pfn), (1, Pfn(DATA_PFN + 1)));
    let mut out = [Pfn(0); 2];
    let held = gup
        .get_held(&guard, VirtAddr(0x40_0000), 0x2000, GupFlags::PIN, &mut out)
        .unwrap();
    // SAFETY: gives back a count this code took above.
    let _ = unsafe { mm.meta_of(Pfn(DATA_PFN)).unwrap().put(Hold::Pin, 1) }.unwrap();
    drop(held); // must not panic
}

// FINDING (minor): a HeldPages whose first page was released behind its back stops at that page
// when dropped and never releases the pages after it: one stray put leaks the rest of the pins,
// and a truncate of them then never drains.
#[test]
fn dropping_a_handle_releases_every_page_it_still_holds() {
    let mem = host(8);
    let mm = memmap(4);
    let mut b = builder(mem);
    map4k(&mut b, 0x40_0000, DATA_PFN, 4, RW);
    let gup = Gup::new(b.walker(), mm);
    let guard = never_freed();
    let mut out = [Pfn(0); 4];
    let held = gup
        .get_held(&guard, VirtAddr(0x40_0000), 0x4000, GupFlags::PIN, &mut out)
        .unwrap();
    // SAFETY: gives back a count this code took above.
    let _ = unsafe { mm.meta_of(Pfn(DATA_PFN)).unwrap().put(Hold::Pin, 1) }.unwrap();
    drop(held);
    let left: Vec<u32> = (0..4)
        .map(|i| mm.meta_of(Pfn(DATA_PFN + i)).unwrap().pins())
        .collect();
    assert_eq!(
        left,
        vec![0, 0, 0, 0],
        "pins left behind by the handle's drop"
    );
}

// Attacks GUP under an epoch reader (the typed pairing): pins, and the section ends with the call.
#[test]
fn gup_under_the_builders_own_epoch_reader_pins_and_leaves_no_section_open() {
    let mem = host(8);
    let mm = memmap(4);
    let epoch = Epoch::<BrandGup, 2>::new().unwrap();
    // SAFETY: host frames: no MMU caches them.
    let retire = unsafe { EpochRetire::<_, 2, 8>::new(&epoch) };
    let mut b =
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(mem, unsafe { FramePool::new(slots(mem)) }, retire).unwrap();
    map4k(&mut b, 0x40_0000, DATA_PFN, 4, RW);
    let reader = epoch.reader().unwrap();
    let gup = Gup::new(b.walker(), mm);
    let mut out = [Pfn(0); 4];
    let held = gup
        .get_held(
            &reader,
            VirtAddr(0x40_0000),
            0x4000,
            GupFlags::PIN,
            &mut out,
        )
        .unwrap();
    assert_eq!(held.pfns().len(), 4);
    // The read section ended with the call: a retirement now is safe at once.
    assert!(epoch.is_safe(epoch.retire_epoch()));
    drop(held);
    // Unmapping retires 3 tables; with no reader inside they come back on reclaim.
    let free_before = b.pool().free_count();
    let u = b.unmap(VirtAddr(0x40_0000), 0x4000).unwrap();
    assert_eq!(u.tables, 3);
    b.reclaim().unwrap();
    assert_eq!(b.pool().free_count(), free_before + 3);
    assert_eq!(b.retire_hook().pending(), 0);
}

// ---------------------------------------------------------------- HeldPages against a truncate

fn truncate_fixture() -> (
    &'static SliceMemMap<'static>,
    &'static mut [HostBuilder<ReclaimNow>],
) {
    let mem = host(8);
    let mm = memmap(4);
    let mut b = builder(mem);
    map4k(&mut b, 0x40_0000, DATA_PFN, 4, RW);
    (mm, leak(vec![b]))
}

// Attacks the drain against a live HeldPages: busy while held (try_drain, deadline), frees only after drop.
#[test]
fn a_truncate_waits_for_a_held_handle_and_frees_after_its_drop() {
    let (mm, spaces) = truncate_fixture();
    let gup = Gup::new(spaces[0].walker(), mm);
    let guard = never_freed();
    let mut out = [Pfn(0); 4];
    let held = gup
        .get_held(&guard, VirtAddr(0x40_0000), 0x4000, GupFlags::PIN, &mut out)
        .unwrap();
    let mut unmapper =
        // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
        unsafe { TableUnmapper::<_, _, _, _, 1>::new(spaces, 12, pagepin::truncate::NoTlbShootdown) };
    unmapper
        .add_mapping(FileMapping {
            space: 0,
            va: VirtAddr(0x40_0000),
            first: Pfn(DATA_PFN),
            pages: 4,
        })
        .unwrap();
    let ext = Extent::new(Pfn(DATA_PFN), 4);
    let unmapped = Truncate::mark(mm, core::iter::once(ext))
        .unwrap()
        .unmap(&mut unmapper)
        .unwrap();
    let unmapped = match unmapped.try_drain::<4>() {
        Ok(_) => panic!("drained while a handle holds the pages"),
        Err(f) => {
            assert_eq!(f.error.total, 4);
            f.truncate
        }
    };
    let clock = Ticking(AtomicU64::new(0));
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: Some(1_000_000),
    };
    let unmapped = match unmapped.drain(&wait) {
        Ok(_) => panic!("drained while a handle holds the pages"),
        Err(f) => {
            assert!(matches!(f.error, DrainError::TimedOut { .. }));
            f.truncate
        }
    };
    drop(held);
    let freed = unmapped
        .try_drain::<1>()
        .map_err(|f| f.error)
        .unwrap()
        .free()
        .unwrap();
    assert_eq!(freed.units, 4);
    assert!(mm.meta_of(Pfn(DATA_PFN)).unwrap().is_free());
}

// Attacks a leaked (mem::forget) HeldPages: the truncate must never free its pages, only time out.
#[test]
fn a_forgotten_handle_keeps_its_pages_from_being_freed() {
    let (mm, spaces) = truncate_fixture();
    let gup = Gup::new(spaces[0].walker(), mm);
    let guard = never_freed();
    let out: &'static mut [Pfn] = leak(vec![Pfn(0); 4]);
    let held = gup
        .get_held(&guard, VirtAddr(0x40_0000), 0x4000, GupFlags::PIN, out)
        .unwrap();
    std::mem::forget(held);
    let mut unmapper =
        // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
        unsafe { TableUnmapper::<_, _, _, _, 1>::new(spaces, 12, pagepin::truncate::NoTlbShootdown) };
    unmapper
        .add_mapping(FileMapping {
            space: 0,
            va: VirtAddr(0x40_0000),
            first: Pfn(DATA_PFN),
            pages: 4,
        })
        .unwrap();
    let unmapped = Truncate::mark(mm, core::iter::once(Extent::new(Pfn(DATA_PFN), 4)))
        .unwrap()
        .unmap(&mut unmapper)
        .unwrap();
    let clock = Ticking(AtomicU64::new(0));
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: Some(100_000),
    };
    let Err(f) = unmapped.drain(&wait) else {
        panic!("drained leaked pins")
    };
    let c = f.truncate.cancel();
    assert_eq!(c.units, 4);
    assert!((DATA_PFN..DATA_PFN + 4).all(|p| mm.meta_of(Pfn(p)).unwrap().pins() == 1));
}

// ---------------------------------------------------------------- epoch retire edges

// Attacks a map that needs frames while the same thread holds a read section of the hook's
// epoch (a nested section): PoolExhausted, not a spin on its own section.
#[test]
fn a_map_with_pending_tables_and_an_open_read_section_does_not_hang() {
    let r = within(5, || {
        let mem = host(5); // root + 3 tables + 1 spare
        let mm = memmap(1);
        let _ = mm;
        let epoch: &'static Epoch<BrandHang, 2> = Box::leak(Box::new(Epoch::new().unwrap()));
        // SAFETY: host frames: no MMU caches them.
        let retire = unsafe { EpochRetire::<_, 2, 8>::new(epoch) };
        let mut b =
            // SAFETY: the frames are this code's own, listed once, in no other pool.
            TableBuilder::<Paging4Level, _, _>::new(mem, unsafe { FramePool::new(slots(mem)) }, retire)
                .unwrap();
        map4k(&mut b, 0x40_0000, DATA_PFN, 1, RW);
        let reader = epoch.reader().unwrap();
        let g = reader.enter();
        b.unmap(VirtAddr(0x40_0000), 0x1000).unwrap();
        // 1 frame free, 3 pending behind our own open section: a map needing 3 tables.
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        let res = unsafe {
            b.map(&MapRequest::new(
                VirtAddr(0x80_0000_0000),
                PhysAddr(DATA_PA),
                0x1000,
                0x1000,
            ))
        };
        drop(g);
        format!("{res:?}")
    });
    let r = r.expect("TableBuilder::map spun forever waiting for its own thread's read section");
    assert!(r.contains("PoolExhausted"), "{r}");
}

// Control for the next test: with room in the retire list, an unmap under an open read section keeps its tables pending.
#[test]
fn an_unmap_under_an_open_read_section_keeps_its_tables_pending() {
    pagepin::epoch_brand!(enum BrandCapOk);
    let mem = host(16);
    let epoch = Epoch::<BrandCapOk, 2>::new().unwrap();
    // SAFETY: host frames: no MMU caches them.
    let retire = unsafe { EpochRetire::<_, 2, 8>::new(&epoch) };
    let mut b =
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(mem, unsafe { FramePool::new(slots(mem)) }, retire).unwrap();
    map4k(&mut b, 0x40_0000, DATA_PFN, 1, RW);
    let free = b.pool().free_count();
    let reader = epoch.reader().unwrap();
    let g = reader.enter();
    assert_eq!(b.unmap(VirtAddr(0x40_0000), 0x1000).unwrap().tables, 3);
    b.reclaim().unwrap();
    assert_eq!(
        (b.retire_hook().pending(), b.pool().free_count()),
        (3, free)
    );
    drop(g);
    b.reclaim().unwrap();
    assert_eq!(
        (b.retire_hook().pending(), b.pool().free_count()),
        (0, free + 3)
    );
}

// Was a finding: EpochRetire with a full list (CAP) spun in `retire` until the readers left; with
// the unmapping thread itself inside a read section of that epoch the unmap never returned. Now a
// typed error after a bounded wait (UnmapError::Retire(RetireError::Backlog)).
#[test]
fn epoch_retire_capacity_full_is_typed_not_a_hang() {
    let r = within(5, || {
        let mem = host(16);
        let epoch: &'static Epoch<BrandCap, 2> = Box::leak(Box::new(Epoch::new().unwrap()));
        // SAFETY: host frames: no MMU caches them.
        let retire = unsafe { EpochRetire::<_, 2, 1>::new(epoch) };
        let mut b =
            // SAFETY: the frames are this code's own, listed once, in no other pool.
            TableBuilder::<Paging4Level, _, _>::new(mem, unsafe { FramePool::new(slots(mem)) }, retire)
                .unwrap();
        map4k(&mut b, 0x40_0000, DATA_PFN, 1, RW);
        let reader = epoch.reader().unwrap();
        let g = reader.enter();
        let res = b.unmap(VirtAddr(0x40_0000), 0x1000);
        let pending = b.retire_hook().pending();
        drop(g);
        format!("{res:?} pending={pending}")
    });
    let r = r.expect("unmap hung with the retire list full");
    // The leaf table goes into the one-entry list; its parent finds the list
    // full and is handed back to the caller.
    assert!(
        r.starts_with("Err(Retire(Backlog { table: PA ") && r.ends_with("pending=1"),
        "{r}"
    );
}

// ---------------------------------------------------------------- builder edges

// Attacks TableBuilder::new vs with_root: new takes its root from the pool; a stage-2 root larger than a frame is refused by new and accepted by with_root.
#[test]
fn new_takes_the_root_from_the_pool_and_refuses_a_concatenated_root() {
    let mem = host(8);
    let pool_slots = slots(mem);
    let n = pool_slots.len();
    // SAFETY: no walker, no MMU.
    // The pool's frames are this code's own, in no other pool.
    let b = TableBuilder::<Paging4Level, _, _>::new(
        mem,
        unsafe { FramePool::new(pool_slots) },
        unsafe { ReclaimNow::new() },
    )
    .unwrap();
    assert_eq!(b.pool().free_count(), n - 1);
    assert!(!b.pool().free_frames().contains(&b.root()));

    let mem2 = host(8);
    // SAFETY: no walker, no MMU.
    // The pool's frames are this code's own, in no other pool.
    let s2 = TableBuilder::<Stage2G4K40, _, _>::new(
        mem2,
        unsafe { FramePool::new(slots(mem2)) },
        unsafe { ReclaimNow::new() },
    );
    assert!(matches!(s2, Err(MapError::RootLargerThanFrame { .. })));
    // with_root: two concatenated frames (8 KiB aligned) outside the pool.
    let mem3 = host(10);
    let all = slots(mem3);
    let root = PhysAddr(TABLES_PA); // 1 MiB: 8 KiB aligned
    let rest = &mut all[2..];
    // SAFETY: no walker, no MMU.
    let s3 = unsafe {
        TableBuilder::<Stage2G4K40, _, _>::with_root(
            mem3,
            root,
            FramePool::new(rest),
            ReclaimNow::new(),
        )
    }
    .unwrap();
    assert_eq!(s3.root(), root);
    assert_eq!(s3.pool().free_count(), 8);
}

// FINDING: with_root documents "root must not be one of the pool's frames" but is safe and does
// not check it: the pool later hands the root out as a table and the mappings alias.
#[test]
fn with_root_refuses_a_root_that_is_a_pool_frame() {
    let mem = host(8);
    let s = slots(mem);
    let root = s[0];
    // SAFETY: the builder refuses this root (one of the pool's frames) before
    // writing anything, which is what the test checks; the pool's frames are
    // the test's; no walker, no MMU.
    let r = unsafe {
        TableBuilder::<Paging4Level, _, _>::with_root(
            mem,
            root,
            FramePool::new(s),
            ReclaimNow::new(),
        )
    };
    assert_eq!(r.err(), Some(MapError::RootInPool { frame: root }));
}

// FINDING: a FramePool listing one frame twice is accepted and hands the same frame out as a PD
// and its PT: the PD's entry 0 becomes a pointer to the data page (read as a table).
#[test]
fn a_pool_with_a_duplicate_frame_is_refused() {
    let mem = host(8);
    let dup = leak(vec![
        PhysAddr(TABLES_PA),
        PhysAddr(TABLES_PA + 0x1000),
        PhysAddr(TABLES_PA + 0x1000),
        PhysAddr(TABLES_PA + 0x2000),
        PhysAddr(TABLES_PA + 0x3000),
    ]);
    // SAFETY: the frames are the test's, in no other pool (listed twice on
    // purpose: the builder refuses before writing anything); no walker, no MMU.
    let r = TableBuilder::<Paging4Level, _, _>::new(mem, unsafe { FramePool::new(dup) }, unsafe {
        ReclaimNow::new()
    });
    assert_eq!(
        r.err(),
        Some(MapError::DuplicateFrame {
            frame: PhysAddr(TABLES_PA + 0x1000)
        })
    );
}

// Attacks unmap's LeafSizes: 4 KiB, 2 MiB and 1 GiB leaves cleared in one range are all reported, smallest 4 KiB.
#[test]
fn unmap_reports_every_leaf_size_it_cleared() {
    let mem = host(16);
    let mut b = builder(mem);
    let base = 0x80_0000_0000u64; // 512 GiB: a fresh PML4 slot
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        b.map(&MapRequest::new(
            VirtAddr(base),
            PhysAddr(0x1_0000_0000),
            0x4000_0000,
            0x4000_0000,
        ))
    }
    .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        b.map(&MapRequest::new(
            VirtAddr(base + 0x4000_0000),
            PhysAddr(0x2_0000_0000),
            0x20_0000,
            0x20_0000,
        ))
    }
    .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        b.map(&MapRequest::new(
            VirtAddr(base + 0x4020_0000),
            PhysAddr(0x3_0000_0000),
            0x2000,
            0x1000,
        ))
    }
    .unwrap();
    let u = b.unmap(VirtAddr(base), 0x4040_0000).unwrap();
    assert_eq!(u.leaves, 4);
    let sizes: Vec<u64> = u.sizes.iter().collect();
    assert_eq!(sizes, vec![0x1000, 0x20_0000, 0x4000_0000]);
    assert_eq!(u.sizes.smallest(), Some(0x1000));
    // An unmap of only a hole clears nothing.
    let u = b.unmap(VirtAddr(base), 0x1000).unwrap();
    assert!(u.sizes.is_empty() && u.leaves == 0);
    // A range cutting a huge leaf is refused before anything changes.
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        b.map(&MapRequest::new(
            VirtAddr(base),
            PhysAddr(0x2_0000_0000),
            0x20_0000,
            0x20_0000,
        ))
    }
    .unwrap();
    assert!(matches!(
        b.unmap(VirtAddr(base), 0x1000),
        Err(UnmapError::SplitsLeaf { .. })
    ));
}

// Attacks LeafSizes' arithmetic at its edges.
#[test]
fn leaf_sizes_edges() {
    assert!(LeafSizes::of(0).is_empty());
    assert_eq!(LeafSizes::of(0).smallest(), None);
    assert!(LeafSizes::of(3).contains(2));
    assert!(!LeafSizes::of(3).contains(3));
    assert_eq!(LeafSizes::of(u64::MAX).smallest(), Some(1 << 63));
    let s = LeafSizes::of(1)
        .union(LeafSizes::of(1 << 63))
        .union(LeafSizes::NONE);
    assert_eq!(s.iter().collect::<Vec<_>>(), vec![1, 1 << 63]);
    assert!(!s.contains(0));
}

// Attacks TableUnmapper's TLB hook: each flush is told the sizes the unmap cleared (2 MiB in one space, 4 KiB in the other).
#[test]
fn the_truncate_tlb_hook_is_told_the_leaf_sizes_per_space() {
    // SAFETY: this map is the only one counting on these metas.
    let mut mm = unsafe { SliceMemMap::<1>::new(Pfn(DATA_PFN), metas(512)) };
    mm.add_region(Region {
        first: Pfn(DATA_PFN),
        pages: 512,
        unit_pages: 512,
        layout_managed: true,
    })
    .unwrap();
    let mut b0 = builder(host(8));
    let mut b1 = builder(host(8));
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        b0.map(
            &MapRequest::new(
                VirtAddr(0x4000_0000),
                PhysAddr(DATA_PA),
                0x20_0000,
                0x20_0000,
            )
            .with_perms(RW),
        )
    }
    .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        b1.map(
            &MapRequest::new(VirtAddr(0x40_0000), PhysAddr(DATA_PA), 0x20_0000, 0x1000)
                .with_perms(RW),
        )
    }
    .unwrap();
    let mut spaces = [b0, b1];
    let mut rec = Recorder::default();
    {
        // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
        let mut un = unsafe { TableUnmapper::<_, _, _, _, 2>::new(&mut spaces, 12, &mut rec) };
        un.add_mapping(FileMapping {
            space: 0,
            va: VirtAddr(0x4000_0000),
            first: Pfn(DATA_PFN),
            pages: 512,
        })
        .unwrap();
        un.add_mapping(FileMapping {
            space: 1,
            va: VirtAddr(0x40_0000),
            first: Pfn(DATA_PFN),
            pages: 512,
        })
        .unwrap();
        let clock = Ticking(AtomicU64::new(0));
        let wait = Wait {
            waiter: &SpinWaiter,
            clock: &clock,
            deadline_ns: None,
        };
        let freed = Truncate::mark(&mm, core::iter::once(Extent::new(Pfn(DATA_PFN), 512)))
            .unwrap()
            .unmap(&mut un)
            .unwrap()
            .drain(&wait)
            .unwrap()
            .free()
            .unwrap();
        assert_eq!(freed.units, 1);
    }
    let by_space = |s: usize| {
        rec.0
            .iter()
            .filter(|f| f.0 == s)
            .fold(LeafSizes::NONE, |acc, f| acc.union(f.2))
    };
    assert_eq!(by_space(0).iter().collect::<Vec<_>>(), vec![0x20_0000]);
    assert_eq!(by_space(1).iter().collect::<Vec<_>>(), vec![0x1000]);
    for (space, va) in spaces.iter().zip([0x4000_0000, 0x40_0000]) {
        assert!(
            space
                .walker()
                .translate(VirtAddr(va))
                .unwrap()
                .leaf()
                .is_none()
        );
    }
}

// ---------------------------------------------------------------- DirectMap bounds

// Attacks DirectMap's bounds: first and last entry reachable, one past, below, misaligned and overflowing are errors.
#[test]
fn direct_map_bounds_are_exact_and_never_panic() {
    let frames: &'static [HostFrame] = leak((0..2).map(|_| HostFrame::new()).collect());
    let va = frames.as_ptr().expose_provenance() as u64;
    let first = PhysAddr(0x10_0000);
    let last = PhysAddr(0x10_1fff);
    // SAFETY: the two frames back `first ..= last` at `va`, live for ever, accessed atomically.
    let dm: DirectMap<'static> = unsafe { DirectMap::new(va.wrapping_sub(first.0), first, last) };
    assert_eq!(dm.range(), (first, last));
    // SAFETY: a test of the access alone: these frames hold no tables, nothing walks them.
    unsafe { dm.entry(first, 0) }
        .unwrap()
        .store(1, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { dm.entry(PhysAddr(0x10_1000), 511) }
        .unwrap()
        .store(2, Ordering::Relaxed);
    assert_eq!(frames[0].entries[0].load(Ordering::Relaxed), 1);
    assert_eq!(frames[1].entries[511].load(Ordering::Relaxed), 2);
    // The same last word through (first, index).
    assert!(std::ptr::eq(
        // SAFETY: the word is only loaded.
        unsafe { dm.entry(first, 1023) }.unwrap(),
        &frames[1].entries[511]
    ));
    assert!(matches!(
        // SAFETY: the word is only loaded.
        unsafe { dm.entry(first, 1024) },
        Err(AccessError::Unreachable { .. })
    ));
    // SAFETY: the word is only loaded.
    assert!(unsafe { dm.entry(PhysAddr(0x10_2000), 0) }.is_err());
    // SAFETY: the word is only loaded.
    assert!(unsafe { dm.entry(PhysAddr(0x0f_f000), 511) }.is_err()); // below `first`
    // SAFETY: the word is only loaded.
    assert!(unsafe { dm.entry(PhysAddr(0x10_0004), 0) }.is_err()); // not 8-byte aligned
    // SAFETY: the word is only loaded.
    assert!(unsafe { dm.entry(first, usize::MAX) }.is_err());
    // SAFETY: the word is only loaded.
    assert!(unsafe { dm.entry(first, usize::MAX / 8 + 1) }.is_err());
    // SAFETY: the word is only loaded.
    assert!(unsafe { dm.entry(PhysAddr(u64::MAX - 7), 0) }.is_err());
    // SAFETY: the word is only loaded.
    assert!(unsafe { dm.entry(PhysAddr(!0xfff), 0x200) }.is_err());
    // SAFETY: the word is only loaded.
    assert!(unsafe { dm.word(first, 1024) }.is_err());
    // last - 7 is the last 8-byte word; a `last` that cuts a word leaves that word out.
    // SAFETY: as above, a sub-range of it.
    let short: DirectMap<'static> =
        unsafe { DirectMap::new(va.wrapping_sub(first.0), first, PhysAddr(0x10_0ffb)) };
    // SAFETY: the word is only loaded.
    assert!(unsafe { short.entry(first, 510) }.is_ok());
    assert!(
        // SAFETY: the word is only loaded.
        unsafe { short.entry(first, 511) }.is_err(),
        "a word only partly inside the range was handed out"
    );
    // An empty (inverted) range reaches nothing.
    // SAFETY: it reaches nothing.
    let empty: DirectMap<'static> =
        unsafe { DirectMap::new(0, PhysAddr(0x2000), PhysAddr(0x1000)) };
    // SAFETY: the word is only loaded.
    assert!(unsafe { empty.entry(PhysAddr(0x1000), 0) }.is_err());
    // SAFETY: the word is only loaded.
    assert!(unsafe { empty.entry(PhysAddr(0x2000), 0) }.is_err());
}

// Attacks a builder over a DirectMap whose pool reaches past the range: refused at construction, typed.
#[test]
fn a_builder_refuses_pool_frames_outside_the_direct_map() {
    let frames: &'static [HostFrame] = leak((0..2).map(|_| HostFrame::new()).collect());
    let va = frames.as_ptr().expose_provenance() as u64;
    let first = PhysAddr(0x10_0000);
    // SAFETY: the two frames back this range at `va`.
    let dm: &'static DirectMap<'static> = Box::leak(Box::new(unsafe {
        DirectMap::new(va.wrapping_sub(first.0), first, PhysAddr(0x10_1fff))
    }));
    let pool = leak(vec![
        PhysAddr(0x10_0000),
        PhysAddr(0x10_1000),
        PhysAddr(0x10_2000),
    ]);
    // SAFETY: no walker, no MMU.
    // The pool's frames are this code's own, in no other pool.
    let r = TableBuilder::<Paging4Level, _, _>::new(dm, unsafe { FramePool::new(pool) }, unsafe {
        ReclaimNow::new()
    });
    assert!(matches!(r, Err(MapError::Access(..))), "{r:?}");
    let pool = leak(vec![PhysAddr(0x10_0800)]);
    // SAFETY: no walker, no MMU.
    // The pool's frames are this code's own, in no other pool.
    let r = TableBuilder::<Paging4Level, _, _>::new(dm, unsafe { FramePool::new(pool) }, unsafe {
        ReclaimNow::new()
    });
    assert!(r.is_err(), "a misaligned table frame was accepted");
    // with_root with an unreachable root.
    let pool = leak(vec![PhysAddr(0x10_1000)]);
    // SAFETY: no walker, no MMU.
    // The root is this code's own memory, outside the pool.
    let r = unsafe {
        TableBuilder::<Paging4Level, _, _>::with_root(
            dm,
            PhysAddr(0x10_2000),
            // SAFETY: the frames are this code's own, listed once, in no other pool.
            FramePool::new(pool),
            ReclaimNow::new(),
        )
    };
    assert!(matches!(r, Err(MapError::Access(..))), "{r:?}");
}

// FINDING: with_root checks only that the root's last entry is reachable, not its alignment: a
// root at 0x10_0800 over a DirectMap is accepted, and its upper half is the pool's first frame.
#[test]
fn with_root_refuses_a_misaligned_root() {
    let frames: &'static [HostFrame] = leak((0..2).map(|_| HostFrame::new()).collect());
    let va = frames.as_ptr().expose_provenance() as u64;
    let first = PhysAddr(0x10_0000);
    // SAFETY: the two frames back this range at `va`.
    let dm: &'static DirectMap<'static> = Box::leak(Box::new(unsafe {
        DirectMap::new(va.wrapping_sub(first.0), first, PhysAddr(0x10_1fff))
    }));
    let pool = leak(vec![PhysAddr(0x10_1000)]);
    // SAFETY: the builder refuses this root (misaligned) before writing
    // anything, which is what the test checks; the pool's frame is the test's;
    // no walker, no MMU.
    let r = unsafe {
        TableBuilder::<Paging4Level, _, _>::with_root(
            dm,
            PhysAddr(0x10_0800),
            FramePool::new(pool),
            ReclaimNow::new(),
        )
    };
    assert_eq!(
        r.err(),
        Some(MapError::MisalignedRoot {
            root: PhysAddr(0x10_0800),
            size: 0x1000
        })
    );
}

// ---------------------------------------------------------------- address conversions

// Attacks the x86_64 crate conversions at the canonical and 52-bit edges (run with --features x86_64).
#[cfg(feature = "x86_64")]
#[test]
fn x86_64_conversions_round_trip_at_the_edges() {
    for va in [0u64, 0x0000_7fff_ffff_ffff, 0xffff_8000_0000_0000, u64::MAX] {
        let x = x86_64::VirtAddr::try_from(VirtAddr(va)).unwrap();
        assert_eq!(x.as_u64(), va);
        assert_eq!(VirtAddr::from(x), VirtAddr(va));
    }
    for va in [
        0x0000_8000_0000_0000u64,
        0xffff_7fff_ffff_ffff,
        0x00ff_ffff_ffff_f000,
        1 << 63,
    ] {
        assert!(x86_64::VirtAddr::try_from(VirtAddr(va)).is_err(), "{va:#x}");
    }
    for pa in [0u64, (1 << 52) - 1, 0x1000] {
        let x = x86_64::PhysAddr::try_from(PhysAddr(pa)).unwrap();
        assert_eq!(PhysAddr::from(x), PhysAddr(pa));
    }
    for pa in [1u64 << 52, u64::MAX] {
        assert!(x86_64::PhysAddr::try_from(PhysAddr(pa)).is_err(), "{pa:#x}");
    }
}

// Attacks the aarch64-paging conversions: every 64-bit value round-trips on a 64-bit host (run with --features aarch64-paging).
#[cfg(feature = "aarch64-paging")]
#[test]
fn aarch64_paging_conversions_round_trip_at_the_edges() {
    use aarch64_paging::descriptor::{PhysicalAddress, VirtualAddress};
    for v in [
        0u64,
        0x0000_ffff_ffff_ffff,
        0xffff_0000_0000_0000,
        u64::MAX,
        1 << 63,
    ] {
        let va = VirtualAddress::try_from(VirtAddr(v)).unwrap();
        assert_eq!(va.0 as u64, v);
        assert_eq!(VirtAddr::from(va), VirtAddr(v));
        let pa = PhysicalAddress::try_from(PhysAddr(v)).unwrap();
        assert_eq!(pa.0 as u64, v);
        assert_eq!(PhysAddr::from(pa), PhysAddr(v));
    }
}
