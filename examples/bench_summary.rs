//! cargo run --release --example bench_summary
//!
//! A quick (about a minute) run of the key figures, without criterion: each case
//! is timed several times in this run and its median reported, in ns per 4 KiB
//! page, one machine-readable line per case. It measures the build a kernel
//! gets: pagepin without `op-count` (the dev-dependency turns on `host` only).
//!
//! - `floor`: per page, one atomic load of a real 4 KiB leaf entry (read in
//!   place from its table), one `fetch_add` on the 8-byte meta of the PFN that
//!   entry names, and the 8-byte store of that PFN to an output slice — the
//!   least any GUP-fast can do;
//! - `gup4k` / `gup2m`: pagepin's GUP-fast pin of 1 GiB mapped by 4 KiB leaves
//!   (single-page units) / 2 MiB leaves (2 MiB units), over a memory map whose
//!   units never change (its layout version is constant, so the unit re-check
//!   costs one version load per batch);
//! - `release_floor` / `gup4k_unpin`: per page, one 8-byte load of its PFN from
//!   the output and one `fetch_sub` on that PFN's meta / pagepin's `release`
//!   of the same output;
//! - `gup4k_unit_recheck`: the same 4 KiB pin through a map that keeps no layout
//!   version, so every get is followed by a second lookup of its unit;
//! - `linux4k` / `linuxthp`: Linux's own pinning of 1 GiB of prefaulted memory
//!   through io_uring buffer registration (`IORING_REGISTER_BUFFERS`, which pins
//!   with `FOLL_LONGTERM`), in 64 MiB iovecs, with 4 KiB pages / transparent huge
//!   pages; unregistering is the unpin. `na` where the kernel refuses (the reason
//!   is printed);
//! - `truncate1g`: mark + unmap + drain + free of 1 GiB of single-page units
//!   mapped by 4 KiB leaves, against one `fetch_or` pass over the same metas;
//! - scaling: one thread pinning 512 MiB of 4 KiB leaves, then two threads
//!   pinning the two disjoint 512 MiB halves at once (`scale2_ratio`: pages per
//!   second of the two against the one); the same for the floor; and two
//!   threads pinning and releasing the same 2 MiB of 4 KiB units over and over,
//!   against the floor's `fetch_add`/`fetch_sub` on the same 512 metas (ns per
//!   page per thread);
//! - sparse: a 5-level table whose 1 TiB span maps 1 GiB in 512 scattered
//!   2 MiB pieces of 4 KiB leaves: a `Walker` scan of the span, an unmap of
//!   the span, a truncate of the pieces' 512 extents, and GUP-fast over the
//!   pieces (one call each), in ns per mapped page and per walked entry
//!   (walked entries: the leaves and holes a walk of the span yields); the
//!   same over a 64 TiB span, to show the cost does not follow the span;
//!   `dense_scan` is the `Walker` scan of the dense 4 KiB GiB above, for
//!   comparison.
//!
//! The last line is
//!
//! `pagepin-bench gup4k_ns=<f> floor_ns=<f> ratio_floor=<f> release_ratio=<f> gup2m_ns_per_page=<f> linux4k_ns=<f|na> speedup_linux=<f|na> truncate1g_ms=<f> truncate_ratio=<f> scale2_ratio=<f> sparse_ns_per_mapped_page=<f>`
//!
//! where `sparse_ns_per_mapped_page` is the `Walker` scan of the 1 TiB span.

use std::time::{Duration, Instant};

use pagepin::arch::x86_64::{Paging4Level, Paging5Level};
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Region, SliceMemMap, Unit};
use pagepin::meta::{Hold, PageMeta};
use pagepin::sync::{AtomicU64, Ordering};
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapRequest, Perms, PhysAddr, ReclaimNow, TableBuilder,
    VaRange, VirtAddr, WalkItem,
};
use pagepin::truncate::{Extent, FileMapping, NoTlbShootdown, TableUnmapper, Truncate, Wait};
use pagepin::wait::{Clock, SpinWaiter, WaitSlot};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
const GIB1: u64 = 1 << 30;
const TIB1: u64 = 1 << 40;
const PAGES: usize = (GIB1 / KIB4) as usize;
const DATA: u64 = GIB1;
const VA: u64 = 0x80_0000_0000;
const FRAMES_BASE: u64 = 0x10_0000;
const RUNS: usize = 7;
/// The x86_64 leaf entry's output-address bits (51:12).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// One pin in the meta word's pin field, for the floor's `fetch_add`.
const FLOOR_ADD: u64 = 1 << 30;

/// The median of `RUNS` timings of `f`, in ns per 4 KiB page of `pages`
/// pages. `f` returns the time of its measured part.
fn median_ns(pages: usize, mut f: impl FnMut() -> Duration) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| f().as_nanos() as f64 / pages as f64)
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

/// [`median_ns`] over 1 GiB.
fn median_ns_per_page(f: impl FnMut() -> Duration) -> f64 {
    median_ns(PAGES, f)
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

struct StdClock(Instant);

impl Clock for StdClock {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The metas' words: `PageMeta` is `repr(transparent)` over one `AtomicU64`.
fn as_words(metas: &[PageMeta]) -> &[AtomicU64] {
    // SAFETY: `PageMeta` is `#[repr(transparent)]` over `AtomicU64` (size and
    // alignment const-asserted in pagepin), so the slices have the same layout;
    // the words are only accessed atomically.
    unsafe { core::slice::from_raw_parts(metas.as_ptr().cast::<AtomicU64>(), metas.len()) }
}

/// What [`with_mapping`] hands its closure.
struct Mapping<'g, 'm> {
    gup: &'g Gup<'m, Paging4Level, HostMemory<'m>, SliceMemMap<'m, 1>>,
    tables: &'g mut TableBuilder<'m, Paging4Level, HostMemory<'m>, ReclaimNow>,
    /// The 512 leaf tables of the 4 KiB mapping, in address order (empty for
    /// larger leaves).
    leaf_tables: Vec<&'m [AtomicU64; 512]>,
}

/// 1 GiB of metas mapped at `VA` by leaves of `leaf` bytes, over units of
/// `leaf` bytes; runs `f` with GUP-fast, the tables and the leaf tables.
fn with_mapping<R>(leaf: u64, f: impl FnOnce(Mapping<'_, '_>) -> R) -> R {
    let metas: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let mut memmap = unsafe { SliceMemMap::<1>::new(Pfn(DATA >> 12), &metas) };
    if leaf > KIB4 {
        memmap
            .add_region(Region {
                first: Pfn(DATA >> 12),
                pages: PAGES as u64,
                unit_pages: leaf / KIB4,
                layout_managed: false,
            })
            .expect("the region is the map");
    }
    let frames: Vec<HostFrame> = (0..600).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(FRAMES_BASE)).expect("aligned");
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() })
            .expect("a root");
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(VirtAddr(VA), PhysAddr(DATA), GIB1, leaf)
                .with_perms(Perms::READ | Perms::WRITE),
        )
    }
    .expect("the pool holds the tables");
    let leaf_tables = if leaf == KIB4 {
        (0..GIB1 / MIB2)
            .map(
                |k| match tables.walker().translate(VirtAddr(VA + k * MIB2)) {
                    Ok(WalkItem::Leaf(l)) => {
                        assert_eq!(l.entry.loc.index, 0);
                        &frames[((l.entry.loc.table.0 - FRAMES_BASE) / KIB4) as usize].entries
                    }
                    other => panic!("mapped above: {other:?}"),
                },
            )
            .collect()
    } else {
        Vec::new()
    };
    let gup = Gup::new(tables.walker(), &memmap);
    f(Mapping {
        gup: &gup,
        tables: &mut tables,
        leaf_tables,
    })
}

/// The floor's pin pass over `tables` (512 leaves each): per page, one load of
/// the leaf entry, one `fetch_add` on the meta of the PFN it names, one store
/// of that PFN to `out`.
#[inline(never)]
fn floor_pin(tables: &[&[AtomicU64; 512]], metas: &[AtomicU64], out: &mut [Pfn]) {
    let base = DATA >> 12;
    for (table, out) in tables.iter().zip(out.chunks_exact_mut(512)) {
        for (entry, slot) in table.iter().zip(out) {
            // Relaxed: a timing loop; GUP-fast's leaf loads are Relaxed too.
            let pfn = (entry.load(Ordering::Relaxed) & ADDR_MASK) >> 12;
            // Acquire, as GUP-fast's get.
            metas[(pfn - base) as usize].fetch_add(FLOOR_ADD, Ordering::Acquire);
            *slot = Pfn(pfn);
        }
    }
}

/// The floor's release pass: per page, one load of its PFN from `pfns` and
/// one `fetch_sub` on its meta.
#[inline(never)]
fn floor_release(pfns: &[Pfn], metas: &[AtomicU64]) {
    let base = DATA >> 12;
    for pfn in pfns {
        // Release, as pagepin's put.
        metas[(pfn.0 - base) as usize].fetch_sub(FLOOR_ADD, Ordering::Release);
    }
}

/// A memory map that forwards to `M` but keeps no layout version, so GUP-fast
/// looks every unit up again after its get.
struct Unversioned<'a, M>(&'a M);

// SAFETY: every answer is the inner map's, which keeps the contract; the
// default `layout_version` (`None`) is always allowed.
unsafe impl<M: MemoryMap> MemoryMap for Unversioned<'_, M> {
    const PAGE_SHIFT: u32 = M::PAGE_SHIFT;

    #[inline]
    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        self.0.unit(pfn)
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.0.wait_slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.0.wake(head)
    }
}

/// Waits until both threads of [`two_threads`] arrived at round `round`
/// (spinning: a futex wake-up's latency would skew the start by tens of µs;
/// yielding after a while, so that a thread whose partner was descheduled
/// lets it run).
fn spin_barrier(arrived: &std::sync::atomic::AtomicUsize, round: usize) {
    // SeqCst: a timing barrier; both threads' increments are totally ordered.
    arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut spins = 0u32;
    // SeqCst: sees both increments of the round (pairs with the fetch_add).
    while arrived.load(std::sync::atomic::Ordering::SeqCst) < 2 * round {
        spins += 1;
        if spins < 1 << 16 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Runs `f(0)` and `f(1)` on two threads at once, `RUNS` times; each call
/// returns (start, end) of its measured part. The median of the wall times
/// (first start to last end).
fn two_threads(f: impl Fn(usize) -> (Instant, Instant) + Sync) -> Duration {
    let arrived = std::sync::atomic::AtomicUsize::new(0);
    let mut walls: Vec<Duration> = std::thread::scope(|s| {
        let run = |t: usize| {
            let (f, arrived) = (&f, &arrived);
            move || {
                (0..RUNS)
                    .map(|r| {
                        spin_barrier(arrived, 2 * r + 1);
                        let span = f(t);
                        spin_barrier(arrived, 2 * r + 2);
                        span
                    })
                    .collect::<Vec<_>>()
            }
        };
        let a = s.spawn(run(0));
        let b = s.spawn(run(1));
        let (a, b) = (a.join().expect("thread 0"), b.join().expect("thread 1"));
        a.iter()
            .zip(&b)
            .map(|(x, y)| x.1.max(y.1) - x.0.min(y.0))
            .collect()
    });
    walls.sort();
    walls[RUNS / 2]
}

fn main() {
    // SAFETY: no table is freed while these measurements walk (the sparse
    // case's unmaps and truncates run while no walker does).
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = vec![Pfn(0); PAGES];

    // Floor and GUP-fast over 4 KiB leaves, on the same entries.
    let figures = with_mapping(KIB4, |m| {
        let gup = m.gup;
        let metas: Vec<AtomicU64> = (0..PAGES).map(|_| AtomicU64::new(0)).collect();
        let mut floor_out = vec![Pfn(0); PAGES];
        let mut floor_releases = Vec::new();
        let floor = median_ns_per_page(|| {
            let t = timed(|| floor_pin(&m.leaf_tables, &metas, &mut floor_out));
            floor_releases.push(timed(|| {
                floor_release(std::hint::black_box(&floor_out), &metas)
            }));
            t
        });
        floor_releases.sort();
        let release_floor = floor_releases[RUNS / 2].as_nanos() as f64 / PAGES as f64;
        assert!(
            floor_out
                .iter()
                .enumerate()
                .all(|(i, p)| p.0 == (DATA >> 12) + i as u64)
        );
        // The same tables and metas through a map that keeps no layout version:
        // every get is followed by a second lookup (the unit re-check).
        let unversioned = Unversioned(gup.memmap());
        let checked = Gup::new(gup.walker(), &unversioned);
        let gup4k_unit = median_ns_per_page(|| {
            let t = timed(|| {
                let taken = checked
                    .get_pages(&guard, VirtAddr(VA), GIB1, GupFlags::PIN, &mut out)
                    .expect("a valid range");
                assert_eq!((taken.pages, taken.stop), (PAGES, Stop::Complete));
            });
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(gup.memmap(), &out, Hold::Pin) }.expect("pinned above");
            t
        });
        let mut unpins = Vec::new();
        let gup4k = median_ns_per_page(|| {
            let t = timed(|| {
                let taken = gup
                    .get_pages(&guard, VirtAddr(VA), GIB1, GupFlags::PIN, &mut out)
                    .expect("a valid range");
                assert_eq!((taken.pages, taken.stop), (PAGES, Stop::Complete));
            });
            unpins.push(timed(|| {
                // SAFETY: the pages were taken above by this code and are released once.
                unsafe { release(gup.memmap(), &out, Hold::Pin) }.expect("pinned above")
            }));
            t
        });
        unpins.sort();
        let unpin = unpins[RUNS / 2].as_nanos() as f64 / PAGES as f64;
        let scaling = scaling(&m, &metas, &guard);
        // A `Walker` scan of the whole GiB: the dense counterpart of the
        // sparse scan.
        let range = VaRange::new(VirtAddr(VA), GIB1).expect("a valid range");
        let scan = median_ns_per_page(|| {
            let walker = gup.walker();
            let mut leaves = 0;
            let t = timed(|| {
                for item in walker.walk_range(range).expect("a valid range") {
                    if let WalkItem::Leaf(_) = item.expect("well formed") {
                        leaves += 1;
                    }
                }
            });
            assert_eq!(leaves, PAGES);
            t
        });
        (
            floor,
            release_floor,
            gup4k,
            unpin,
            gup4k_unit,
            scaling,
            scan,
        )
    });
    let (floor, release_floor, gup4k, unpin4k, gup4k_unit, scaling, scan4k) = figures;
    println!("case=floor ns_per_page={floor:.2}");
    println!("case=gup4k_pin ns_per_page={gup4k:.2}");
    println!("case=release_floor ns_per_page={release_floor:.2}");
    println!("case=gup4k_unpin ns_per_page={unpin4k:.2}");
    println!("case=gup4k_unit_recheck_pin ns_per_page={gup4k_unit:.2}");
    println!("case=dense_scan ns_per_page={scan4k:.2}");
    scaling.print();

    let gup2m = with_mapping(MIB2, |m| {
        median_ns_per_page(|| {
            let t = timed(|| {
                let taken = m
                    .gup
                    .get_pages(&guard, VirtAddr(VA), GIB1, GupFlags::PIN, &mut out)
                    .expect("a valid range");
                assert_eq!((taken.pages, taken.stop), (PAGES, Stop::Complete));
            });
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(m.gup.memmap(), &out, Hold::Pin) }.expect("pinned above");
            t
        })
    });
    println!("case=gup2m_pin ns_per_page={gup2m:.3}");

    let linux4k = linux::pin_ns_per_page(false);
    let linuxthp = linux::pin_ns_per_page(true);
    for (name, figures) in [("linux4k", &linux4k), ("linuxthp", &linuxthp)] {
        match figures {
            Ok((pin, unpin)) => {
                println!("case={name}_pin ns_per_page={pin:.2}");
                println!("case={name}_unpin ns_per_page={unpin:.2}");
            }
            Err(why) => println!("case={name} na reason=\"{why}\""),
        }
    }

    let (truncate_ns, fetch_or_ns, fetch_or_after_map_ns, steps) = truncate_figures();
    println!("case=fetch_or_pass ns_per_page={fetch_or_ns:.2}");
    println!("case=fetch_or_pass_after_map ns_per_page={fetch_or_after_map_ns:.2}");
    println!("case=truncate1g ns_per_page={truncate_ns:.2}");
    for (step, ns) in ["mark", "unmap", "drain", "free"].iter().zip(steps) {
        println!(
            "truncate1g_step step={step} ns_per_page={ns:.2} ratio_fetch_or={:.2}",
            ns / fetch_or_ns
        );
    }

    let sparse = sparse_figures(&guard, TIB1);
    sparse.print();
    // The same mapped GiB over a 64 times larger span: the cost follows what
    // is mapped (and the tables that map it), not the span.
    sparse_figures(&guard, 64 * TIB1).print();

    let (linux_ns, speedup) = match linux4k {
        Ok((pin, _)) => (format!("{pin:.2}"), format!("{:.1}", pin / gup4k)),
        Err(_) => ("na".into(), "na".into()),
    };
    println!(
        "pagepin-bench gup4k_ns={gup4k:.2} floor_ns={floor:.2} ratio_floor={:.2} release_ratio={:.2} gup2m_ns_per_page={gup2m:.3} linux4k_ns={linux_ns} speedup_linux={speedup} truncate1g_ms={:.2} truncate_ratio={:.2} scale2_ratio={:.2} sparse_ns_per_mapped_page={:.2}",
        gup4k / floor,
        unpin4k / release_floor,
        truncate_ns * PAGES as f64 / 1e6,
        truncate_ns / fetch_or_ns,
        scaling.gup_ratio,
        sparse.scan_per_page,
    );
}

/// The scaling figures.
struct Scaling {
    /// One thread pinning 512 MiB, ns per page.
    gup1: f64,
    /// Two threads pinning disjoint 512 MiB halves at once, ns per page of
    /// the whole GiB (wall time).
    gup2: f64,
    /// Pages per second of the two against the one (`gup1 / gup2`).
    gup_ratio: f64,
    /// The same for the floor.
    floor1: f64,
    floor2: f64,
    /// Two threads pinning and releasing the same 2 MiB of 4 KiB units, ns
    /// per page pinned and released, per thread; the floor's likewise.
    same_gup: f64,
    same_floor: f64,
}

impl Scaling {
    fn print(&self) {
        println!("case=scale1_gup4k_pin ns_per_page={:.2}", self.gup1);
        println!("case=scale2_gup4k_pin ns_per_page={:.2}", self.gup2);
        println!("case=scale1_floor ns_per_page={:.2}", self.floor1);
        println!("case=scale2_floor ns_per_page={:.2}", self.floor2);
        println!(
            "case=scale2_same2m_gup4k_pin_release ns_per_page={:.2}",
            self.same_gup
        );
        println!(
            "case=scale2_same2m_floor ns_per_page={:.2}",
            self.same_floor
        );
        println!(
            "scaling gup_ratio={:.2} floor_ratio={:.2} same2m_ratio_floor={:.2}",
            self.gup_ratio,
            self.floor1 / self.floor2,
            self.same_gup / self.same_floor
        );
    }
}

/// Scaling with two threads, on the 4 KiB mapping (`metas`: the floor's).
fn scaling(m: &Mapping<'_, '_>, metas: &[AtomicU64], guard: &TablesNeverFreed) -> Scaling {
    const HALF: usize = PAGES / 2;
    const SAME: usize = 512;
    const SAME_ROUNDS: usize = 256;
    let gup = m.gup;
    let memmap = gup.memmap();
    let mut outs = vec![vec![Pfn(0); HALF], vec![Pfn(0); HALF]];
    let half_va = |t: usize| VirtAddr(VA + (t * HALF) as u64 * KIB4);
    let pin_half = |t: usize, out: &mut [Pfn]| {
        let taken = gup
            .get_pages(guard, half_va(t), GIB1 / 2, GupFlags::PIN, out)
            .expect("a valid range");
        assert_eq!((taken.pages, taken.stop), (HALF, Stop::Complete));
    };
    // One thread, the first half.
    let gup1 = median_ns(HALF, || {
        let t = timed(|| pin_half(0, &mut outs[0]));
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(memmap, &outs[0], Hold::Pin) }.expect("pinned above");
        t
    });
    let floor_tables = |t: usize| &m.leaf_tables[t * 256..(t + 1) * 256];
    let floor1 = median_ns(HALF, || {
        let t = timed(|| floor_pin(floor_tables(0), metas, &mut outs[0]));
        floor_release(&outs[0], metas);
        t
    });
    // Two threads, one half each.
    let cells: Vec<std::sync::Mutex<Vec<Pfn>>> =
        outs.into_iter().map(std::sync::Mutex::new).collect();
    let gup2 = two_threads(|t| {
        let mut out = cells[t].lock().expect("not poisoned");
        let start = Instant::now();
        pin_half(t, &mut out);
        let end = Instant::now();
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(memmap, &out, Hold::Pin) }.expect("pinned above");
        (start, end)
    })
    .as_nanos() as f64
        / PAGES as f64;
    let floor2 = two_threads(|t| {
        let mut out = cells[t].lock().expect("not poisoned");
        let start = Instant::now();
        floor_pin(floor_tables(t), metas, &mut out);
        let end = Instant::now();
        floor_release(&out, metas);
        (start, end)
    })
    .as_nanos() as f64
        / PAGES as f64;
    // Two threads on the same 2 MiB: pin it and release it, `SAME_ROUNDS` times.
    let same_gup = two_threads(|t| {
        let mut out = cells[t].lock().expect("not poisoned");
        let out = &mut out[..SAME];
        let start = Instant::now();
        for _ in 0..SAME_ROUNDS {
            let taken = gup
                .get_pages(guard, VirtAddr(VA), MIB2, GupFlags::PIN, out)
                .expect("a valid range");
            assert_eq!((taken.pages, taken.stop), (SAME, Stop::Complete));
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(memmap, out, Hold::Pin) }.expect("pinned above");
        }
        (start, Instant::now())
    })
    .as_nanos() as f64
        / (SAME * SAME_ROUNDS) as f64;
    let same_floor = two_threads(|t| {
        let mut out = cells[t].lock().expect("not poisoned");
        let out = &mut out[..SAME];
        let start = Instant::now();
        for _ in 0..SAME_ROUNDS {
            floor_pin(&m.leaf_tables[..1], metas, out);
            floor_release(out, metas);
        }
        (start, Instant::now())
    })
    .as_nanos() as f64
        / (SAME * SAME_ROUNDS) as f64;
    Scaling {
        gup1,
        gup2,
        gup_ratio: gup1 / gup2,
        floor1,
        floor2,
        same_gup,
        same_floor,
    }
}
/// (truncate, fetch_or pass, fetch_or pass after a re-map, the truncate's
/// steps: mark, unmap, drain, free), ns per page, medians of this run.
fn truncate_figures() -> (f64, f64, f64, [f64; 4]) {
    with_mapping(KIB4, |m| {
        let tables = m.tables;
        let memmap_metas: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new_allocated()).collect();
        // SAFETY: this map is the only one counting on these metas.
        let memmap = unsafe { SliceMemMap::<1>::new(Pfn(DATA >> 12), &memmap_metas) };
        let words = as_words(&memmap_metas);
        let fetch_or = median_ns_per_page(|| {
            let t = timed(|| {
                for w in words {
                    w.fetch_or(1 << 61, Ordering::Relaxed);
                }
            });
            for w in words {
                w.fetch_and(!(1 << 61), Ordering::Relaxed);
            }
            t
        });
        let extent = Extent::new(Pfn(DATA >> 12), PAGES as u64);
        let request = MapRequest::new(VirtAddr(VA), PhysAddr(DATA), GIB1, KIB4)
            .with_perms(Perms::READ | Perms::WRITE);
        // The same pass after what precedes each truncate below (an RMW on
        // every meta, then the GiB mapped again: 2 MiB of leaf tables
        // written), so the metas are where the truncate's mark finds them.
        let fetch_or_after_map = median_ns_per_page(|| {
            tables.unmap(VirtAddr(VA), GIB1).expect("mapped");
            // SAFETY: the pages mapped are this code's, unmapped before they are freed.
            unsafe { tables.map(&request) }.expect("unmapped above");
            let t = timed(|| {
                for w in words {
                    w.fetch_or(1 << 61, Ordering::Relaxed);
                }
            });
            for w in words {
                w.fetch_and(!(1 << 61), Ordering::Relaxed);
            }
            t
        });
        let clock = StdClock(Instant::now());
        let wait = Wait {
            waiter: &SpinWaiter,
            clock: &clock,
            deadline_ns: None,
        };
        let mut first = true;
        let mut phases: [Vec<Duration>; 4] = Default::default();
        let truncate = median_ns_per_page(|| {
            if !first {
                for m in &memmap_metas {
                    m.allocate().expect("freed by the last run");
                }
                // SAFETY: the pages mapped are this code's, unmapped before they are freed.
                unsafe { tables.map(&request) }.expect("unmapped by the last run");
            }
            first = false;
            // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
            let mut unmapper = unsafe {
                TableUnmapper::<_, _, _, _, 1>::new(
                    core::slice::from_mut(tables),
                    12,
                    NoTlbShootdown,
                )
            };
            unmapper
                .add_mapping(FileMapping {
                    space: 0,
                    va: VirtAddr(VA),
                    first: extent.first,
                    pages: PAGES as u64,
                })
                .expect("room for one");
            // Each step timed on its own; the truncate is their sum.
            let start = Instant::now();
            let marked =
                Truncate::mark(&memmap, core::iter::once(extent)).expect("allocated, unmarked");
            let t_mark = Instant::now();
            let unmapped = marked.unmap(&mut unmapper).expect("mapped");
            let t_unmap = Instant::now();
            let drained = unmapped.drain(&wait).expect("no pins");
            let t_drain = Instant::now();
            let freed = drained.free().expect("drained");
            let t_free = Instant::now();
            assert_eq!(freed.units, PAGES as u64);
            let steps = [
                t_mark - start,
                t_unmap - t_mark,
                t_drain - t_unmap,
                t_free - t_drain,
            ];
            for (all, step) in phases.iter_mut().zip(steps) {
                all.push(step);
            }
            t_free - start
        });
        let steps = phases.map(|mut all| {
            all.sort();
            all[RUNS / 2].as_nanos() as f64 / PAGES as f64
        });
        (truncate, fetch_or, fetch_or_after_map, steps)
    })
}

#[cfg(target_os = "linux")]
mod linux {
    //! Linux's pinning, through io_uring buffer registration (raw syscalls).

    use std::time::Instant;

    const SYS_IO_URING_SETUP: libc::c_long = 425;
    const SYS_IO_URING_REGISTER: libc::c_long = 427;
    const IORING_REGISTER_BUFFERS: libc::c_uint = 0;
    const IORING_UNREGISTER_BUFFERS: libc::c_uint = 1;
    const LEN: usize = 1 << 30;
    const IOVEC: usize = 64 << 20;

    fn os_error(what: &str) -> String {
        format!("{what}: {}", std::io::Error::last_os_error())
    }

    /// Pins and unpins 1 GiB of prefaulted anonymous memory (`huge`: THP) through
    /// io_uring buffer registration; (pin, unpin) in ns per 4 KiB page, medians
    /// of 7 runs.
    pub fn pin_ns_per_page(huge: bool) -> Result<(f64, f64), String> {
        // io_uring_params is 120 bytes; zeroed means defaults.
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup reads and writes the 120-byte params buffer.
        let fd = unsafe { libc::syscall(SYS_IO_URING_SETUP, 4u32, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(os_error("io_uring_setup"));
        }
        let fd = fd as libc::c_int;
        // 2 MiB-aligned for THP: map 2 MiB more and align inside.
        let map_len = LEN + (2 << 20);
        // SAFETY: an anonymous private mapping; checked below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            // SAFETY: `fd` is the ring opened above.
            unsafe { libc::close(fd) };
            return Err(os_error("mmap"));
        }
        let base = ((raw as usize + (2 << 20) - 1) & !((2 << 20) - 1)) as *mut u8;
        let advice = if huge {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: `base .. base + LEN` lies inside the mapping.
        unsafe { libc::madvise(base.cast(), LEN, advice) };
        for offset in (0..LEN).step_by(4096) {
            // SAFETY: inside the mapping; prefaults the page.
            unsafe { base.add(offset).write_volatile(1) };
        }
        let iovecs: Vec<libc::iovec> = (0..LEN / IOVEC)
            .map(|i| libc::iovec {
                // SAFETY: inside the mapping.
                iov_base: unsafe { base.add(i * IOVEC) }.cast(),
                iov_len: IOVEC,
            })
            .collect();
        let pages = (LEN / 4096) as f64;
        let mut pins = Vec::new();
        let mut unpins = Vec::new();
        let mut failure = None;
        for _ in 0..7 {
            let start = Instant::now();
            // SAFETY: registers `iovecs`, which point into the live mapping.
            let r = unsafe {
                libc::syscall(
                    SYS_IO_URING_REGISTER,
                    fd,
                    IORING_REGISTER_BUFFERS,
                    iovecs.as_ptr(),
                    iovecs.len() as libc::c_uint,
                )
            };
            let pin = start.elapsed();
            if r < 0 {
                failure = Some(os_error("IORING_REGISTER_BUFFERS"));
                break;
            }
            let start = Instant::now();
            // SAFETY: unregisters what was registered above.
            let r = unsafe {
                libc::syscall(
                    SYS_IO_URING_REGISTER,
                    fd,
                    IORING_UNREGISTER_BUFFERS,
                    std::ptr::null::<u8>(),
                    0 as libc::c_uint,
                )
            };
            let unpin = start.elapsed();
            if r < 0 {
                failure = Some(os_error("IORING_UNREGISTER_BUFFERS"));
                break;
            }
            pins.push(pin.as_nanos() as f64 / pages);
            unpins.push(unpin.as_nanos() as f64 / pages);
        }
        // SAFETY: the mapping and the ring created above, no longer used.
        unsafe {
            libc::munmap(raw, map_len);
            libc::close(fd);
        }
        if let Some(why) = failure {
            return Err(why);
        }
        pins.sort_by(f64::total_cmp);
        unpins.sort_by(f64::total_cmp);
        Ok((pins[pins.len() / 2], unpins[unpins.len() / 2]))
    }
}

#[cfg(not(target_os = "linux"))]
mod linux {
    /// Linux's pinning cannot be measured here.
    pub fn pin_ns_per_page(_huge: bool) -> Result<(f64, f64), String> {
        Err("not Linux".into())
    }
}

/// The sparse figures: a 5-level table whose 1 TiB span maps 1 GiB in
/// scattered 2 MiB pieces of 4 KiB leaves.
struct Sparse {
    /// The span, in TiB.
    span_tib: u64,
    /// Items (leaves and holes) a walk of the span yields.
    walked: usize,
    /// Upper-level holes among them.
    holes: usize,
    /// ns per mapped page: the `Walker` scan, the unmap of the span, the
    /// truncate of the pieces' extents, GUP-fast over the pieces.
    scan_per_page: f64,
    unmap_per_page: f64,
    truncate_per_page: f64,
    gup_per_page: f64,
}

impl Sparse {
    fn print(&self) {
        let per_entry = |ns_per_page: f64| ns_per_page * PAGES as f64 / self.walked as f64;
        let span = self.span_tib;
        println!(
            "sparse span_tib={span} mapped_gib=1 pieces={} walked_entries={} holes={}",
            PAGES / 512,
            self.walked,
            self.holes
        );
        for (name, ns) in [
            ("scan", self.scan_per_page),
            ("unmap", self.unmap_per_page),
            ("truncate", self.truncate_per_page),
            ("gup4k_pin", self.gup_per_page),
        ] {
            println!(
                "case=sparse{span}t_{name} ns_per_page={ns:.2} ns_per_walked_entry={:.2}",
                per_entry(ns)
            );
        }
    }
}

/// The sparse figures over a span of `span` bytes (a power of two of at
/// least 1 GiB, at most 64 TiB).
fn sparse_figures(guard: &TablesNeverFreed, span_bytes: u64) -> Sparse {
    const SPAN_VA: u64 = 0x100_0000_0000;
    const PIECES: usize = (GIB1 / MIB2) as usize;
    let slots = span_bytes / MIB2;
    // Piece `i` (the PFNs `DATA + i × 2 MiB ..`) sits at slot `i × 40 503 mod
    // slots` of the span: distinct slots (40 503 is odd, `slots` a power of
    // two), spread over the span.
    let slot_va = |i: usize| SPAN_VA + (i as u64 * 40_503 % slots) * MIB2;
    let metas: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let memmap = unsafe { SliceMemMap::<1>::new(Pfn(DATA >> 12), &metas) };
    let frames: Vec<HostFrame> = (0..1400).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(FRAMES_BASE)).expect("aligned");
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    // SAFETY: (1) the pool's frames are this code's own, in no other pool;
    // (2) no walker or MMU reads these tables while the builder unmaps.
    let (pool, reclaim) = unsafe { (FramePool::new(&mut slots), ReclaimNow::new()) };
    let mut spaces =
        [TableBuilder::<Paging5Level, _, _>::new(&memory, pool, reclaim).expect("a root")];
    let map_all = |tables: &mut TableBuilder<'_, Paging5Level, _, _>| {
        for i in 0..PIECES {
            // SAFETY: the pages mapped are this code's, unmapped before they are freed.
            unsafe {
                tables.map(
                    &MapRequest::new(
                        VirtAddr(slot_va(i)),
                        PhysAddr(DATA + i as u64 * MIB2),
                        MIB2,
                        KIB4,
                    )
                    .with_perms(Perms::READ | Perms::WRITE),
                )
            }
            .expect("the pool holds the tables");
        }
    };
    map_all(&mut spaces[0]);
    let span = VaRange::new(VirtAddr(SPAN_VA), span_bytes).expect("a valid span");
    // The scan: every item of the span.
    let (mut walked, mut holes) = (0, 0);
    let scan_per_page = median_ns_per_page(|| {
        let walker = spaces[0].walker();
        let (mut items, mut hole_items) = (0, 0);
        let t = timed(|| {
            for item in walker.walk_range(span).expect("a valid span") {
                items += 1;
                if let WalkItem::Hole(_) = item.expect("well formed") {
                    hole_items += 1;
                }
            }
        });
        (walked, holes) = (items, hole_items);
        t
    });
    assert_eq!(walked - holes, PAGES);
    // GUP-fast over the pieces, one call each.
    let mut out = vec![Pfn(0); PAGES];
    let gup_per_page = {
        let gup = Gup::new(spaces[0].walker(), &memmap);
        median_ns_per_page(|| {
            let t = timed(|| {
                for (i, out) in out.chunks_exact_mut(512).enumerate() {
                    let taken = gup
                        .get_pages(guard, VirtAddr(slot_va(i)), MIB2, GupFlags::PIN, out)
                        .expect("a valid range");
                    assert_eq!((taken.pages, taken.stop), (512, Stop::Complete));
                }
            });
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&memmap, &out, Hold::Pin) }.expect("pinned above");
            t
        })
    };
    // The unmap of the span.
    let mut first = true;
    let unmap_per_page = median_ns_per_page(|| {
        if !first {
            map_all(&mut spaces[0]);
        }
        first = false;
        let mut leaves = 0;
        let t = timed(|| {
            leaves = spaces[0]
                .unmap(VirtAddr(SPAN_VA), span_bytes)
                .expect("unmappable")
                .leaves;
        });
        assert_eq!(leaves, PAGES);
        t
    });
    // The truncate of the pieces' extents (each mapped once, at its slot).
    let clock = StdClock(Instant::now());
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: None,
    };
    let extent = |i: usize| Extent::new(Pfn((DATA >> 12) + i as u64 * 512), 512);
    let truncate_per_page = median_ns_per_page(|| {
        for m in &metas {
            if m.is_free() {
                m.allocate().expect("freed by the last run");
            }
        }
        map_all(&mut spaces[0]);
        // SAFETY: every mapping of the truncated pages is in these spaces and
        // registered below.
        let mut unmapper =
            unsafe { TableUnmapper::<_, _, _, _, PIECES>::new(&mut spaces, 12, NoTlbShootdown) };
        for i in 0..PIECES {
            unmapper
                .add_mapping(FileMapping {
                    space: 0,
                    va: VirtAddr(slot_va(i)),
                    first: extent(i).first,
                    pages: 512,
                })
                .expect("room for every piece");
        }
        timed(|| {
            let freed = Truncate::mark(&memmap, (0..PIECES).map(extent))
                .expect("allocated, unmarked")
                .unmap(&mut unmapper)
                .expect("mapped")
                .drain(&wait)
                .expect("no pins")
                .free()
                .expect("drained");
            assert_eq!(freed.units, PAGES as u64);
        })
    });
    Sparse {
        span_tib: span_bytes / TIB1,
        walked,
        holes,
        scan_per_page,
        unmap_per_page,
        truncate_per_page,
        gup_per_page,
    }
}
