//! cargo bench --bench gup
//!
//! GUP-fast pin + unpin of 1 GiB for every format and leaf size the issue lists,
//! against the floor loop over real x86_64 4 KiB leaf entries, all in one run.
//! Figures are per 4 KiB of memory (a 64 KiB page counts as 16).
//!
//! - `floor`: per page, one atomic load of its PTE and one `fetch_add` on a
//!   dense array of 8-byte metas; then one `fetch_sub` per page (the unpin) —
//!   the least any GUP-fast can do.
//! - `<format> <leaf>`: `get_pages` over the whole GiB, then `release` of the
//!   PFNs; the memory map's units are the leaf's size, so a huge leaf costs one
//!   RMW to pin and one to unpin.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use pagepin::arch::aarch64::{Stage1G4K48, Stage1G64K48};
use pagepin::arch::x86_64::{Paging4Level, Paging5Level};
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{Pfn, Region, SliceMemMap};
use pagepin::meta::{Hold, PageMeta};
use pagepin::sync::{AtomicU64, Ordering};
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapRequest, PagingFormat, Perms, PhysAddr, ReclaimNow,
    TableAccess, TableBuilder, VirtAddr, WalkItem,
};

const KIB4: u64 = 4 << 10;
const KIB64: u64 = 64 << 10;
const MIB2: u64 = 2 << 20;
const MIB512: u64 = 512 << 20;
const GIB1: u64 = 1 << 30;
const PAGES: usize = (GIB1 / KIB4) as usize;
const DATA: u64 = GIB1;
const VA: u64 = 0x80_0000_0000;

/// Benchmarks GUP-fast pin + unpin of 1 GiB mapped by `F` with `leaf`-byte
/// leaves over `leaf`-byte units, as `name`.
fn gup_case<F: PagingFormat>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    metas: &[PageMeta],
    leaf: u64,
) {
    // SAFETY: this map is the only one counting on these metas.
    let mut memmap = unsafe { SliceMemMap::<1>::new(Pfn(DATA >> 12), metas) };
    if leaf > KIB4 {
        memmap
            .add_region(Region {
                first: Pfn(DATA >> 12),
                pages: PAGES as u64,
                unit_pages: leaf / KIB4,
                layout_managed: false,
            })
            .unwrap();
    }
    // Tables of the granule's size, after a root that may span several frames.
    let per_table = ((1u64 << F::GEOMETRY.page_shift()) / KIB4) as usize;
    let root_frames =
        ((F::GEOMETRY.entries(0).unwrap() as u64 * 8).div_ceil(KIB4) as usize).max(per_table);
    let frames: Vec<HostFrame> = (0..root_frames + 600 * per_table)
        .map(|_| HostFrame::new())
        .collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory
        .frame_pas()
        .skip(root_frames)
        .step_by(per_table)
        .collect();
    slots.push(PhysAddr(0x10_0000));
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<F, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() }).unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(VirtAddr(VA), PhysAddr(DATA), GIB1, leaf)
                .with_perms(Perms::READ | Perms::WRITE),
        )
    }
    .unwrap();
    let gup = Gup::new(tables.walker(), &memmap);
    // SAFETY: no table is freed while the benchmark walks.
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = vec![Pfn(0); PAGES];
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
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&memmap, &out, Hold::Pin) }.unwrap();
        })
    });
}

/// The floor over the real 4 KiB leaf entries of x86_64 4-level tables.
fn floor_case(g: &mut BenchmarkGroup<'_, WallTime>) {
    let frames: Vec<HostFrame> = (0..600).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() })
            .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe { tables.map(&MapRequest::new(VirtAddr(VA), PhysAddr(DATA), GIB1, KIB4)) }.unwrap();
    let ptes: Vec<&AtomicU64> = (0..PAGES as u64)
        .map(
            |i| match tables.walker().translate(VirtAddr(VA + i * KIB4)).unwrap() {
                WalkItem::Leaf(l) => {
                    // SAFETY: the word is only loaded.
                    unsafe { memory.entry(l.entry.loc.table, l.entry.loc.index) }.unwrap()
                }
                WalkItem::Hole(_) => unreachable!("mapped above"),
            },
        )
        .collect();
    let metas: Vec<AtomicU64> = (0..PAGES).map(|_| AtomicU64::new(0)).collect();
    g.bench_function("floor (pte load + fetch_add; fetch_sub)", |b| {
        b.iter(|| {
            for (pte, meta) in ptes.iter().zip(&metas) {
                std::hint::black_box(pte.load(Ordering::Relaxed));
                meta.fetch_add(1 << 30, Ordering::Acquire);
            }
            for meta in &metas {
                meta.fetch_sub(1 << 30, Ordering::Release);
            }
        })
    });
}

fn bench(c: &mut Criterion) {
    let metas: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new_allocated()).collect();
    let mut g = c.benchmark_group("gup/1GiB");
    g.throughput(Throughput::Elements(PAGES as u64));
    g.sample_size(10);
    floor_case(&mut g);
    gup_case::<Paging4Level>(&mut g, "x86_64 4-level 4k", &metas, KIB4);
    gup_case::<Paging4Level>(&mut g, "x86_64 4-level 2m", &metas, MIB2);
    gup_case::<Paging4Level>(&mut g, "x86_64 4-level 1g", &metas, GIB1);
    gup_case::<Paging5Level>(&mut g, "x86_64 5-level 4k", &metas, KIB4);
    gup_case::<Paging5Level>(&mut g, "x86_64 5-level 2m", &metas, MIB2);
    gup_case::<Paging5Level>(&mut g, "x86_64 5-level 1g", &metas, GIB1);
    gup_case::<Stage1G4K48>(&mut g, "aarch64 4k-granule 4k", &metas, KIB4);
    gup_case::<Stage1G4K48>(&mut g, "aarch64 4k-granule 2m", &metas, MIB2);
    gup_case::<Stage1G64K48>(&mut g, "aarch64 64k-granule 64k", &metas, KIB64);
    gup_case::<Stage1G64K48>(&mut g, "aarch64 64k-granule 512m", &metas, MIB512);
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
