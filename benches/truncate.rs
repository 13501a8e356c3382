//! cargo bench --bench truncate
//!
//! Truncate of 1 GiB (262 144 single-page units, mapped by 4 KiB leaves in one
//! address space): `mark` + `unmap` + `drain` + `free` through the typestate API,
//! against the baseline of one `fetch_or` pass over the same metas, measured in
//! the same run. Figures are per 4 KiB page. Also: `mark` alone against the
//! same baseline, and the same truncate while one page is pinned and released
//! by another thread once the drain waits for it.
//!
//! Setup (allocating the pages and mapping them again) is outside the timing.

use std::sync::atomic::{AtomicBool, Ordering as StdOrdering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pagepin::arch::x86_64::Paging4Level;
use pagepin::memmap::{MemoryMap, Pfn, SliceMemMap};
use pagepin::meta::{Hold, PageMeta};
use pagepin::sync::{AtomicU64, Ordering};
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapRequest, Perms, PhysAddr, ReclaimNow, TableBuilder,
    VirtAddr,
};
use pagepin::truncate::{Extent, FileMapping, NoTlbShootdown, TableUnmapper, Truncate, Wait};
use pagepin::wait::{Clock, SpinWaiter};

const KIB4: u64 = 4 << 10;
const GIB1: u64 = 1 << 30;
const PAGES: usize = (GIB1 / KIB4) as usize;
const DATA: u64 = GIB1;
const VA: u64 = 0x80_0000_0000;

struct StdClock(Instant);

impl Clock for StdClock {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

fn bench(c: &mut Criterion) {
    let metas: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let memmap = unsafe { SliceMemMap::<1>::new(Pfn(DATA >> 12), &metas) };
    let frames: Vec<HostFrame> = (0..600).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut spaces = [TableBuilder::<Paging4Level, _, _>::new(
        &memory,
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        unsafe { FramePool::new(&mut slots) },
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        unsafe { ReclaimNow::new() },
    )
    .unwrap()];
    let request = MapRequest::new(VirtAddr(VA), PhysAddr(DATA), GIB1, KIB4)
        .with_perms(Perms::READ | Perms::WRITE);
    let extent = Extent::new(Pfn(DATA >> 12), PAGES as u64);
    let clock = StdClock(Instant::now());
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: None,
    };

    let mut g = c.benchmark_group("truncate/1GiB");
    g.throughput(Throughput::Elements(PAGES as u64));
    g.sample_size(10);
    g.bench_function("baseline: one fetch_or pass", |b| {
        // The same metas, seen as the plain 8-byte atomics they are.
        let words = as_words(&metas);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for w in words {
                    w.fetch_or(1 << 61, Ordering::Relaxed);
                }
                total += start.elapsed();
                for w in words {
                    w.fetch_and(!(1 << 61), Ordering::Relaxed);
                }
            }
            total
        })
    });

    g.bench_function("mark (one compare-exchange pass)", |b| {
        // `Truncate::mark` alone over the same metas, the figure to hold
        // against the `fetch_or` pass: the mark is a load and a
        // compare-exchange per unit, so it never sets `TRUNCATING` on a free
        // word. The cancel that clears the marks is outside the timing.
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let marked = Truncate::mark(&memmap, core::iter::once(extent)).unwrap();
                total += start.elapsed();
                assert_eq!(marked.cancel().units, PAGES as u64);
            }
            total
        })
    });

    let mut truncate_once = |pinned: bool| -> Duration {
        for m in &metas {
            let _ = m.allocate();
        }
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { spaces[0].map(&request) }.unwrap();
        let pinned_pfn = Pfn((DATA >> 12) + PAGES as u64 / 2);
        let pinned_meta = memmap.unit(pinned_pfn).unwrap().meta;
        if pinned {
            pinned_meta.get(Hold::Pin, 1).unwrap();
        }
        // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
        let mut unmapper =
            unsafe { TableUnmapper::<_, _, _, _, 1>::new(&mut spaces, 12, NoTlbShootdown) };
        unmapper
            .add_mapping(FileMapping {
                space: 0,
                va: VirtAddr(VA),
                first: extent.first,
                pages: PAGES as u64,
            })
            .unwrap();
        let started = AtomicBool::new(false);
        std::thread::scope(|s| {
            if pinned {
                s.spawn(|| {
                    // The device finishes its DMA once the truncate is under way.
                    while !started.load(StdOrdering::Acquire) || !pinned_meta.is_truncating() {
                        std::hint::spin_loop();
                    }
                    // SAFETY: gives back a count this code took above.
                    if unsafe { pinned_meta.put(Hold::Pin, 1) }.unwrap().is_due() {
                        memmap.wake(pinned_pfn);
                    }
                });
            }
            let start = Instant::now();
            started.store(true, StdOrdering::Release);
            let freed = Truncate::mark(&memmap, core::iter::once(extent))
                .unwrap()
                .unmap(&mut unmapper)
                .unwrap()
                .drain(&wait)
                .unwrap()
                .free()
                .unwrap();
            let elapsed = start.elapsed();
            assert_eq!(freed.units, PAGES as u64);
            elapsed
        })
    };
    g.bench_function("mark+unmap+drain+free", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| truncate_once(false)).sum())
    });
    g.bench_function("mark+unmap+drain+free, one pin released meanwhile", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| truncate_once(true)).sum())
    });
    g.finish();
}

/// The metas' words: `PageMeta` is `repr(transparent)` over one `AtomicU64`.
fn as_words(metas: &[PageMeta]) -> &[AtomicU64] {
    // SAFETY: `PageMeta` is `#[repr(transparent)]` over `AtomicU64` (size and
    // alignment const-asserted in pagepin), so the slices have the same layout;
    // the words are only accessed atomically.
    unsafe { core::slice::from_raw_parts(metas.as_ptr().cast::<AtomicU64>(), metas.len()) }
}

criterion_group!(benches, bench);
criterion_main!(benches);
