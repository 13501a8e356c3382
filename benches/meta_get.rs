//! cargo bench --bench meta_get
//!
//! The two get paths of `PageMeta` (compare-exchange loop; fetch-add + undo)
//! against the floor loop, over the metas of 1 GiB of 4 KiB pages (262 144 words,
//! 2 MiB of metadata), one thread and two threads on the same pages.
//!
//! Every figure is per 4 KiB page. The floor is the least any GUP-fast can do
//! per page: one atomic 64-bit load of a page-table entry and one atomic RMW on
//! the page's meta. Each path is measured the same way: a pass that loads the
//! entry and takes a pin on every page, then a pass that releases them all.
//! Compare the `pin+unpin` figures with `floor` of the same run.
//!
//! `meta_get_hot` is the adversarial case for the compare-exchange loop: two
//! threads pinning and unpinning the same 4 pages back to back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pagepin::meta::{CasLoop, FetchAddUndo, GetPath, Hold, PageMeta};

const PAGES: usize = 1 << 18;

struct Memory {
    ptes: Vec<AtomicU64>,
    metas: Vec<PageMeta>,
    /// The floor's words: plain atomics, as dense as the metas.
    floor_words: Vec<AtomicU64>,
}

impl Memory {
    fn new() -> Memory {
        Memory {
            // A present, writable entry per page pointing at page i.
            ptes: (0..PAGES as u64)
                .map(|i| AtomicU64::new((i << 12) | 0x3))
                .collect(),
            metas: (0..PAGES).map(|_| PageMeta::new_allocated()).collect(),
            floor_words: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// One PTE load and one `fetch_add` per page, then one PTE load and one
    /// `fetch_sub` per page.
    fn floor(&self) {
        let words = &self.floor_words;
        for (pte, word) in self.ptes.iter().zip(words) {
            let e = pte.load(Ordering::Relaxed);
            std::hint::black_box(e);
            word.fetch_add(1 << 30, Ordering::Acquire);
        }
        for (pte, word) in self.ptes.iter().zip(words) {
            let e = pte.load(Ordering::Relaxed);
            std::hint::black_box(e);
            word.fetch_sub(1 << 30, Ordering::Release);
        }
    }

    fn pin_unpin<P: GetPath>(&self) {
        for (pte, meta) in self.ptes.iter().zip(&self.metas) {
            let e = pte.load(Ordering::Relaxed);
            std::hint::black_box(e);
            // SAFETY: at most two benchmark threads get on one word at once and
            // no interrupt handler gets: 2 ≤ MAX_CPUS contexts between an add
            // and its undo (the fetch-add path's precondition; none for CasLoop).
            unsafe { P::get(meta, Hold::Pin, 1) }.unwrap();
        }
        for (pte, meta) in self.ptes.iter().zip(&self.metas) {
            let e = pte.load(Ordering::Relaxed);
            std::hint::black_box(e);
            // SAFETY: gives back a count this code took above.
            assert!(!unsafe { meta.put(Hold::Pin, 1) }.unwrap().is_due());
        }
    }
}

/// Runs `f` on `threads` threads at once, `iters` times each; returns wall time.
fn parallel(threads: usize, iters: u64, f: &(dyn Fn() + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..iters {
                    f();
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mem = Memory::new();
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("meta_get/{threads}thread"));
        // Elements = pages pinned and unpinned by all threads together.
        g.throughput(Throughput::Elements((PAGES * threads) as u64));
        g.sample_size(20);
        g.bench_function("floor", |b| {
            b.iter_custom(|iters| parallel(threads, iters, &|| mem.floor()))
        });
        g.bench_function("cas-loop pin+unpin", |b| {
            b.iter_custom(|iters| parallel(threads, iters, &|| mem.pin_unpin::<CasLoop>()))
        });
        g.bench_function("fetch-add-undo pin+unpin", |b| {
            b.iter_custom(|iters| parallel(threads, iters, &|| mem.pin_unpin::<FetchAddUndo>()))
        });
        g.finish();
    }
}

/// Pin and unpin `HOT_PAGES` pages over and over: with two threads every RMW
/// contends for the same few cache lines, where a failed compare-exchange costs a
/// retry and a fetch-add does not.
fn hot<P: GetPath>(metas: &[PageMeta]) {
    for _ in 0..HOT_ROUNDS {
        for meta in metas {
            // SAFETY: as in `pin_unpin`: at most two contexts per word.
            unsafe { P::get(meta, Hold::Pin, 1) }.unwrap();
            // SAFETY: gives back a count this code took above.
            assert!(!unsafe { meta.put(Hold::Pin, 1) }.unwrap().is_due());
        }
    }
}

const HOT_PAGES: usize = 4;
const HOT_ROUNDS: usize = 4096;

fn bench_hot(c: &mut Criterion) {
    let metas: Vec<PageMeta> = (0..HOT_PAGES).map(|_| PageMeta::new_allocated()).collect();
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("meta_get_hot/{threads}thread"));
        // Elements = pin+unpin pairs by all threads together.
        g.throughput(Throughput::Elements(
            (HOT_PAGES * HOT_ROUNDS * threads) as u64,
        ));
        g.sample_size(20);
        g.bench_function("cas-loop pin+unpin", |b| {
            b.iter_custom(|iters| parallel(threads, iters, &|| hot::<CasLoop>(&metas)))
        });
        g.bench_function("fetch-add-undo pin+unpin", |b| {
            b.iter_custom(|iters| parallel(threads, iters, &|| hot::<FetchAddUndo>(&metas)))
        });
        g.finish();
    }
}

criterion_group!(benches, bench, bench_hot);
criterion_main!(benches);
