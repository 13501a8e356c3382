//! cargo bench --bench gup
//!
//! GUP-fast pin + unpin of 1 GiB on x86_64 4-level tables, against the floor
//! loop over the very same page-table entries and metas. Figures are per 4 KiB
//! page.
//!
//! - `floor`: per page, one atomic load of its PTE and one `fetch_add` on its
//!   meta; then one `fetch_sub` per page (the unpin) — the least any GUP-fast can
//!   do.
//! - `gup 4k`: 262 144 leaves of 4 KiB over single-page units: `get_pages` over
//!   the whole range, then `release` of the PFNs.
//! - `gup 2m`: 512 leaves of 2 MiB over 2 MiB units (one RMW per leaf to pin,
//!   one per unit to unpin).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{HostMemMap, Pfn, Region};
use pagepin::meta::{Hold, PageMeta};
use pagepin::sync::{AtomicU64, Ordering};
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapRequest, Perms, PhysAddr, ReclaimNow, TableAccess,
    TableBuilder, VirtAddr, WalkItem,
};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
const GIB1: u64 = 1 << 30;
const PAGES: usize = (GIB1 / KIB4) as usize;
const DATA: u64 = GIB1;
const VA: u64 = 0x80_0000_0000;

fn bench(c: &mut Criterion) {
    let metas: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new_allocated()).collect();
    // The floor's metas: plain 8-byte atomics, as dense as `PageMeta`s.
    let floor_metas: Vec<AtomicU64> = (0..PAGES).map(|_| AtomicU64::new(0)).collect();
    // SAFETY: no table is freed while the benchmark walks.
    let guard = unsafe { TablesNeverFreed::new() };
    let mut g = c.benchmark_group("gup/1GiB");
    g.throughput(Throughput::Elements(PAGES as u64));
    g.sample_size(10);
    for leaf in [KIB4, MIB2] {
        let mut memmap = HostMemMap::<1>::new(Pfn(DATA >> 12), &metas);
        if leaf == MIB2 {
            memmap
                .add_region(Region {
                    first: Pfn(DATA >> 12),
                    pages: PAGES as u64,
                    unit_pages: 512,
                    layout_managed: false,
                })
                .unwrap();
        }
        let frames: Vec<HostFrame> = (0..600).map(|_| HostFrame::new()).collect();
        let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
        let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
        let mut tables = TableBuilder::<Paging4Level, _, _>::new(
            &memory,
            FramePool::new(&mut slots),
            ReclaimNow,
        )
        .unwrap();
        tables
            .map(
                &MapRequest::new(VirtAddr(VA), PhysAddr(DATA), GIB1, leaf)
                    .with_perms(Perms::READ | Perms::WRITE | Perms::USER),
            )
            .unwrap();
        let gup = Gup::new(tables.walker(), &memmap);
        let mut out = vec![Pfn(0); PAGES];
        if leaf == KIB4 {
            // The floor runs over the real leaf entries of these tables.
            let ptes: Vec<_> = (0..PAGES as u64)
                .map(
                    |i| match tables.walker().translate(VirtAddr(VA + i * KIB4)).unwrap() {
                        WalkItem::Leaf(l) => {
                            memory.entry(l.entry.loc.table, l.entry.loc.index).unwrap()
                        }
                        WalkItem::Hole(_) => unreachable!("mapped above"),
                    },
                )
                .collect();
            g.bench_function("floor (pte load + fetch_add; fetch_sub)", |b| {
                b.iter(|| {
                    for (pte, meta) in ptes.iter().zip(&floor_metas) {
                        std::hint::black_box(pte.load(Ordering::Relaxed));
                        meta.fetch_add(1 << 30, Ordering::Acquire);
                    }
                    for meta in &floor_metas {
                        meta.fetch_sub(1 << 30, Ordering::Release);
                    }
                })
            });
        }
        let name = if leaf == KIB4 {
            "gup 4k pin+unpin"
        } else {
            "gup 2m pin+unpin"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let taken = gup
                    .get_pages(
                        &guard,
                        VirtAddr(VA),
                        GIB1,
                        GupFlags::PIN | GupFlags::WRITE,
                        &mut out,
                    )
                    .unwrap();
                assert_eq!((taken.pages, taken.stop), (PAGES, Stop::Complete));
                release(&memmap, &out, Hold::Pin).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
