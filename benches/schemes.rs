//! cargo bench --bench schemes
//!
//! The schemes of the 2018 LKML thread (and pagepin's) — the very modules the
//! loom models of `tests/loom_schemes.rs` check — over real x86_64 4-level
//! tables in host memory: 32 MiB of 4 KiB leaves (8192 pages). Every figure is
//! per 4 KiB page (`Throughput::Elements`); compare each with the floor of the
//! same group and run.
//!
//! - `schemes/walker`: one thread pins and unpins every page (one `pin` per
//!   page: a translate from the root, the scheme's get and checks; then the
//!   unpin) while a second thread truncates one page at a time and reallocates
//!   and remaps it, round the whole range, for as long as the walker runs.
//!   Floors: `floor` is one PTE load and one `fetch_add` per page, then one
//!   `fetch_sub` per page (as `benches/gup.rs`); `walk floor` is the same with
//!   the translate from the root every scheme's walker does instead of the PTE
//!   load. The schemes' figures include the walks and the interference of the
//!   truncater; the floors run without it.
//! - `schemes/truncate`: no pins; the truncate of every page of the range, one
//!   page per call (`one page`) or the whole range in one call (`batch`), where
//!   each scheme pays its per-call cost (scheme (1)'s grace period, scheme (2)'s
//!   fence) once. Reallocating and remapping between iterations is not timed.
//!   Floor: one PTE load and one `fetch_or` per page.
//!
//! The grace period here is pagepin's `Epoch` with idle readers: a fence, an
//! RMW and a scan of 8 slots. A kernel's `synchronize_rcu()` waits for every
//! CPU to pass a quiescent state (milliseconds); the figure of scheme (1) is a
//! lower bound.

#[path = "../tests/schemes/mod.rs"]
mod schemes;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use pagepin::arch::x86_64::Paging4Level;
use pagepin::memmap::Pfn;
use pagepin::sync::Ordering;
use pagepin::table::{
    EntryLoc, FramePool, HostFrame, HostMemory, MapRequest, Perms, PhysAddr, ReclaimNow,
    TableAccess, TableBuilder, VirtAddr, WalkItem, Walker,
};
use schemes::flag_fence::FlagFence;
use schemes::grace::GracePeriod;

pagepin::epoch_brand!(
    /// The epoch of scheme (1)'s benchmarks.
    enum AfterMark
);
pagepin::epoch_brand!(
    /// The epoch of scheme (1b)'s benchmarks.
    enum AfterUnmap
);
use schemes::one_word::{GUP, INLINE, NO_RECHECK, Pagepin};
use schemes::pte_recheck::PteRecheck;
use schemes::split_ref::SplitRef;
use schemes::{Scheme, remap};

/// 32 MiB of 4 KiB pages.
const PAGES: usize = 8192;
const PAGE: u64 = 4096;
/// The physical address of the first data page.
const DATA: u64 = 1 << 30;
const BASE: Pfn = Pfn(DATA >> 12);
/// The virtual address of the range.
const VA: u64 = 0x80_0000_0000;

/// The tables, and each page's leaf entry and its mapped value.
struct Host<'a> {
    memory: HostMemory<'a>,
    root: PhysAddr,
    leaves: Vec<EntryLoc>,
    raws: Vec<u64>,
}

impl Host<'_> {
    fn walker(&self) -> Walker<'_, Paging4Level, HostMemory<'_>> {
        Walker::new(&self.memory, self.root)
    }

    fn va(i: usize) -> VirtAddr {
        VirtAddr(VA + i as u64 * PAGE)
    }

    /// Gives every page of `pages` back to the scheme and maps it again.
    fn reallocate_all<S: Scheme>(&self, scheme: &S, pages: &[S::Page]) {
        for (i, (&loc, &raw)) in self.leaves.iter().zip(&self.raws).enumerate() {
            scheme.reallocate(pages, i);
            remap(&self.memory, loc, raw);
        }
    }
}

/// (i) One walker pins and unpins every page while a truncater runs.
fn bench_walker<S: Scheme>(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    host: &Host<'_>,
) {
    let scheme = S::new();
    let pages: Vec<S::Page> = (0..PAGES).map(|_| scheme.new_page()).collect();
    let stop = AtomicBool::new(false);
    let (pinned, tried, truncated) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            let mut n = 0u64;
            // Relaxed: a stop request; it orders nothing (the scope's join does).
            while !stop.load(Ordering::Relaxed) {
                scheme.truncate(&host.memory, &host.leaves[i..=i], &pages, BASE, i, || ());
                scheme.reallocate(&pages, i);
                remap(&host.memory, host.leaves[i], host.raws[i]);
                // A stride coprime with the range: the truncater moves across it.
                i = (i + 97) % PAGES;
                n += 1;
            }
            // Relaxed: a statistic, read after the scope's join.
            truncated.store(n, Ordering::Relaxed);
        });
        let local = scheme.local();
        let walker = host.walker();
        g.bench_function(S::NAME, |b| {
            b.iter(|| {
                let mut ok = 0u64;
                for i in 0..PAGES {
                    if let Some(j) = scheme.pin(&local, &walker, Host::va(i), &pages, BASE) {
                        scheme.unpin(&pages, BASE, j);
                        ok += 1;
                    }
                }
                // Relaxed: statistics, read after the scope's join.
                pinned.fetch_add(ok, Ordering::Relaxed);
                tried.fetch_add(PAGES as u64, Ordering::Relaxed);
            })
        });
        drop(local);
        // Relaxed: see the truncater's loop.
        stop.store(true, Ordering::Relaxed);
    });
    // Relaxed: the threads have joined.
    let (pinned, tried) = (
        pinned.load(Ordering::Relaxed),
        tried.load(Ordering::Relaxed),
    );
    println!(
        "    {}: {:.2}% of {} pins succeeded; {} truncations meanwhile",
        S::NAME,
        100.0 * pinned as f64 / tried.max(1) as f64,
        tried,
        truncated.load(Ordering::Relaxed)
    );
}

/// (ii) Truncate every page, one per call or all in one call; no pins.
fn bench_truncate<S: Scheme>(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    host: &Host<'_>,
) {
    let scheme = S::new();
    let pages: Vec<S::Page> = (0..PAGES).map(|_| scheme.new_page()).collect();
    g.bench_function(format!("{} one page", S::NAME), |b| {
        b.iter_custom(|iters| {
            let mut time = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for i in 0..PAGES {
                    scheme.truncate(&host.memory, &host.leaves[i..=i], &pages, BASE, i, || ());
                }
                time += start.elapsed();
                host.reallocate_all(&scheme, &pages);
            }
            time
        })
    });
    g.bench_function(format!("{} batch", S::NAME), |b| {
        b.iter_custom(|iters| {
            let mut time = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                scheme.truncate(&host.memory, &host.leaves, &pages, BASE, 0, || ());
                time += start.elapsed();
                host.reallocate_all(&scheme, &pages);
            }
            time
        })
    });
}

fn bench(c: &mut Criterion) {
    let frames: Vec<HostFrame> = (0..64).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() })
            .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(VirtAddr(VA), PhysAddr(DATA), PAGES as u64 * PAGE, PAGE)
                .with_perms(Perms::READ | Perms::WRITE | Perms::USER),
        )
    }
    .unwrap();
    let (leaves, raws) = (0..PAGES)
        .map(|i| match tables.walker().translate(Host::va(i)).unwrap() {
            WalkItem::Leaf(l) => (l.entry.loc, l.entry.raw),
            WalkItem::Hole(_) => unreachable!("mapped above"),
        })
        .unzip();
    let host = Host {
        memory,
        root: tables.root(),
        leaves,
        raws,
    };
    // The floors' words: plain atomics, as dense as the schemes' metas.
    let words: Vec<AtomicU64> = (0..PAGES).map(|_| AtomicU64::new(0)).collect();
    let ptes: Vec<_> = host
        .leaves
        .iter()
        // SAFETY: the word is only loaded.
        .map(|loc| unsafe { host.memory.entry(loc.table, loc.index) }.unwrap())
        .collect();

    let mut g = c.benchmark_group("schemes/walker");
    g.throughput(Throughput::Elements(PAGES as u64));
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("floor (pte load + fetch_add; fetch_sub)", |b| {
        b.iter(|| {
            for (pte, word) in ptes.iter().zip(&words) {
                // Relaxed: the floor orders nothing; it counts instructions.
                black_box(pte.load(Ordering::Relaxed));
                // Acquire/Release: as a get and a put would.
                word.fetch_add(1 << 30, Ordering::Acquire);
            }
            for word in &words {
                word.fetch_sub(1 << 30, Ordering::Release);
            }
        })
    });
    let walker = host.walker();
    g.bench_function("walk floor (translate + fetch_add; fetch_sub)", |b| {
        b.iter(|| {
            for (i, word) in words.iter().enumerate() {
                black_box(walker.translate(Host::va(i)).unwrap());
                // Acquire: as a get would.
                word.fetch_add(1 << 30, Ordering::Acquire);
            }
            for word in &words {
                // Release: as a put would.
                word.fetch_sub(1 << 30, Ordering::Release);
            }
        })
    });
    bench_walker::<GracePeriod<false, AfterMark>>(&mut g, &host);
    bench_walker::<GracePeriod<true, AfterUnmap>>(&mut g, &host);
    bench_walker::<FlagFence<true>>(&mut g, &host);
    bench_walker::<FlagFence<false>>(&mut g, &host);
    bench_walker::<SplitRef>(&mut g, &host);
    bench_walker::<PteRecheck>(&mut g, &host);
    bench_walker::<Pagepin<GUP>>(&mut g, &host);
    bench_walker::<Pagepin<INLINE>>(&mut g, &host);
    bench_walker::<Pagepin<NO_RECHECK>>(&mut g, &host);
    g.finish();

    let mut g = c.benchmark_group("schemes/truncate");
    g.throughput(Throughput::Elements(PAGES as u64));
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("floor (pte load + fetch_or)", |b| {
        b.iter(|| {
            for (pte, word) in ptes.iter().zip(&words) {
                // Relaxed: the floor orders nothing; it counts instructions.
                black_box(pte.load(Ordering::Relaxed));
                // Relaxed: as pagepin's mark.
                word.fetch_or(1 << 61, Ordering::Relaxed);
            }
        })
    });
    bench_truncate::<GracePeriod<false, AfterMark>>(&mut g, &host);
    bench_truncate::<GracePeriod<true, AfterUnmap>>(&mut g, &host);
    bench_truncate::<FlagFence<true>>(&mut g, &host);
    bench_truncate::<SplitRef>(&mut g, &host);
    bench_truncate::<PteRecheck>(&mut g, &host);
    bench_truncate::<Pagepin<GUP>>(&mut g, &host);
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
