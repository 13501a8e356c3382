//! cargo run --example ownership_kernel
//!
//! How a Theseus-style kernel plugs pagepin in: resources are values. A
//! mapping is a [`MappedPages`] that unmaps itself when dropped; a DMA pin is a
//! `#[must_use]` `HeldPages` handle (pagepin's) that releases its pins when dropped;
//! a truncate takes the file's `MappedPages` by value and drops them in its
//! unmap step. There is no global state (no `static`, no `static mut`): the
//! memory, the page metadata, the address space and the epoch are created in
//! `run` and passed by reference.
//!
//! Everything above the `Demo` marker is the **glue** a kernel writes; below it:
//!
//! 1. an anonymous buffer is mapped, pinned for DMA (`PIN | WRITE | USER`),
//!    written by the "device" through its PFNs, unpinned by dropping the
//!    handle, and unmapped by dropping the mapping;
//! 2. a memory-mapped file of two discontiguous extents is pinned by a device
//!    thread, which keeps its `HeldPages` for a while; meanwhile the file is
//!    truncated through the typestate API: mark, unmap (the `MappedPages` are
//!    handed over and dropped), drain (waits for the device to drop its
//!    handle), free. After it the pages are free, GUP-fast finds nothing, and
//!    the emptied page tables go back to the pool once the epoch allows.
//!
//! Page tables are pagepin's own (`TableBuilder` over `HostMemory`), with an
//! epoch walk guard and deferred table freeing (`EpochRetire`): what a kernel
//! without interrupts-off-and-IPI table freeing uses. The last line is
//! `ownership_kernel: pinned=<n> truncated=<n> violations=<n>`; the exit status
//! is non-zero on a violation.

use std::fmt;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::time::{Duration, Instant};

use spin::Mutex;

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::{Epoch, EpochReader, EpochRetire};
use pagepin::gup::{Gup, GupFlags, HeldPages, Stop};
use pagepin::memmap::{MemoryMap, Pfn, Region, SliceMemMap};
use pagepin::meta::PageMeta;
use pagepin::sync::Ordering;
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapError, MapRequest, Perms, PhysAddr, TableBuilder,
    UnmapError, VirtAddr, Walker,
};
use pagepin::truncate::{Extent, Failed, Truncate, Unmapper, Wait};
use pagepin::wait::{Clock, SpinWaiter};

const KIB4: u64 = 4 << 10;
/// Walking threads (epoch reader slots).
const READERS: usize = 4;
/// Detached page tables waiting for the epoch.
const RETIRE_CAP: usize = 16;

// ---------------------------------------------------------------------------
// Glue: an address space whose mappings are owned values.
// ---------------------------------------------------------------------------

pagepin::epoch_brand!(
    /// The brand of the kernel's one epoch: the domain of its tables' walkers.
    enum KernelTables
);

type Tables<'k> = TableBuilder<
    'k,
    Paging4Level,
    HostMemory<'k>,
    EpochRetire<'k, KernelTables, READERS, RETIRE_CAP>,
>;

/// One address space: its page tables behind a lock (writers), readable
/// without it (GUP-fast).
struct AddressSpace<'k> {
    tables: Mutex<Tables<'k>>,
    /// GUP-fast's walker, of the epoch's domain (handed out by the builder).
    walker: Walker<'k, Paging4Level, HostMemory<'k>, KernelTables>,
    /// TLB shootdowns (bare metal: `invlpg` and an IPI round, or `TLBI ...IS`).
    shootdowns: StdAtomicU64,
}

impl<'k> AddressSpace<'k> {
    fn new(tables: Tables<'k>) -> AddressSpace<'k> {
        AddressSpace {
            walker: tables.walker(),
            tables: Mutex::new(tables),
            shootdowns: StdAtomicU64::new(0),
        }
    }

    /// Maps `pages` frames from `first` at `va`; the mapping lives as long as
    /// the returned value.
    fn map(
        &self,
        va: VirtAddr,
        first: Pfn,
        pages: u64,
        perms: Perms,
    ) -> Result<MappedPages<'_, 'k>, MapError> {
        let req =
            MapRequest::new(va, PhysAddr(first.0 * KIB4), pages * KIB4, KIB4).with_perms(perms);
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { self.tables.lock().map(&req) }?;
        Ok(MappedPages {
            space: self,
            va,
            first,
            pages,
            unmapped: false,
        })
    }

    /// GUP-fast over this address space.
    fn gup<'s, M: MemoryMap>(
        &'s self,
        memmap: &'s M,
    ) -> Gup<'s, Paging4Level, HostMemory<'k>, M, KernelTables> {
        Gup::new(self.walker, memmap)
    }
}

/// A mapping, owned: dropping it unmaps the pages (and shoots the TLBs down).
#[must_use = "dropping a MappedPages unmaps it at once"]
struct MappedPages<'s, 'k> {
    space: &'s AddressSpace<'k>,
    va: VirtAddr,
    first: Pfn,
    pages: u64,
    unmapped: bool,
}

impl MappedPages<'_, '_> {
    /// The frames it maps.
    fn extent(&self) -> Extent {
        Extent::new(self.first, self.pages)
    }

    /// Unmaps now, reporting failure (dropping does the same, silently).
    fn unmap(mut self) -> Result<(), UnmapError> {
        self.unmapped = true;
        self.unmap_now()
    }

    fn unmap_now(&self) -> Result<(), UnmapError> {
        self.space.tables.lock().unmap(self.va, self.pages * KIB4)?;
        self.space.shootdowns.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for MappedPages<'_, '_> {
    fn drop(&mut self) {
        if !self.unmapped {
            self.unmapped = true;
            if let Err(e) = self.unmap_now() {
                panic!("unmapping {:?}: {e}", self.va);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Glue: pins as owned handles.
// ---------------------------------------------------------------------------

/// Why [`pin_pages`] took nothing.
#[derive(Debug)]
#[allow(dead_code)] // read through `Debug` only
enum PinError {
    Range(pagepin::gup::GupError),
    Stopped(Stop),
}

/// Pins every page of `va .. va + len` or none: GUP-fast under `reader`'s
/// epoch read section, the PFNs in `out`; the pins come back as pagepin's
/// `HeldPages`, which releases them when dropped (a partial result is dropped
/// here, so released).
fn pin_pages<'m, M: MemoryMap>(
    space: &'m AddressSpace<'_>,
    memmap: &'m M,
    reader: &EpochReader<'_, KernelTables, READERS>,
    va: VirtAddr,
    len: u64,
    flags: GupFlags,
    out: &'m mut [Pfn],
) -> Result<HeldPages<'m, M>, PinError> {
    let held = space
        .gup(memmap)
        .get_held(reader, va, len, flags, out)
        .map_err(PinError::Range)?;
    match held.stop() {
        Stop::Complete => Ok(held),
        stop => Err(PinError::Stopped(stop)), // `held` is dropped: released
    }
}

// ---------------------------------------------------------------------------
// Glue: the truncate's unmap step takes the file's mappings by value.
// ---------------------------------------------------------------------------

/// The file's mappings, handed to the truncate: unmapping an extent drops
/// every mapping of its pages.
struct FileMappings<'s, 'k> {
    mappings: Vec<MappedPages<'s, 'k>>,
}

// SAFETY: every mapping of the file's pages is a `MappedPages` in this list; dropping one unmaps it and shoots the TLBs down before `Ok`.
unsafe impl Unmapper for FileMappings<'_, '_> {
    type Error = UnmapError;

    fn unmap_extent(&mut self, extent: Extent) -> Result<(), UnmapError> {
        let mut i = 0;
        while i < self.mappings.len() {
            if self.mappings[i].extent().overlaps(&extent) {
                self.mappings.swap_remove(i).unmap()?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

/// The kernel's monotonic clock.
struct Monotonic(Instant);

impl Clock for Monotonic {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

// ---------------------------------------------------------------------------
// Demo.
// ---------------------------------------------------------------------------

const TABLE_BASE: PhysAddr = PhysAddr(0x10_0000);
const TABLE_FRAMES: usize = 16;
/// Data frames: PFN 0x40000 on (PA 1 GiB).
const DATA_PFN: u64 = 0x40000;
const DATA_FRAMES: u64 = 64;
/// The anonymous buffer's frames (first 4) and the file's frames: a layout-
/// managed region of single-page units from `FILE_PFN`.
const BUF_PAGES: u64 = 4;
const FILE_PFN: u64 = DATA_PFN + 32;
/// The file's two extents (4 pages each, not contiguous).
const FILE_EXTENTS: [Extent; 2] = [
    Extent::new(Pfn(FILE_PFN), 4),
    Extent::new(Pfn(FILE_PFN + 12), 4),
];
const BUF_VA: u64 = 0x1000_0000;
const FILE_VA: u64 = 0x2000_0000;

/// What a run counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Base pages pinned.
    pub pinned: u64,
    /// Base pages truncated (freed).
    pub truncated: u64,
    /// Failed checks.
    pub violations: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ownership_kernel: pinned={} truncated={} violations={}",
            self.pinned, self.truncated, self.violations
        )
    }
}

impl Summary {
    fn check(&mut self, ok: bool, what: impl fmt::Display) {
        if !ok {
            self.violations += 1;
            eprintln!("ownership_kernel: violation: {what}");
        }
    }
}

/// The device's DMA: writes `tag` into the first word of every frame it holds
/// pinned; returns how many it found not pinned (it must find none).
fn dma(
    data: &[HostFrame],
    memmap: &SliceMemMap<'_>,
    pinned: &HeldPages<'_, SliceMemMap<'_>>,
    tag: u64,
) -> u64 {
    let mut unpinned = 0;
    for (i, &pfn) in pinned.pfns().iter().enumerate() {
        if memmap.unit(pfn).map_or(true, |u| u.meta.pins() == 0) {
            unpinned += 1;
        }
        let frame = &data[(pfn.0 - DATA_PFN) as usize];
        // Relaxed: the join (or the release's Release put) orders it for the
        // reader.
        frame.entries[0].store(tag + i as u64, Ordering::Relaxed);
    }
    unpinned
}

fn first_word(data: &[HostFrame], pfn: Pfn) -> u64 {
    data[(pfn.0 - DATA_PFN) as usize].entries[0].load(Ordering::Relaxed)
}

/// Runs the demo.
pub fn run() -> Summary {
    let mut s = Summary::default();
    // Boot: memory, metadata, the memory map, the epoch, one address space.
    let table_frames: Vec<HostFrame> = (0..TABLE_FRAMES).map(|_| HostFrame::new()).collect();
    let data: Vec<HostFrame> = (0..DATA_FRAMES).map(|_| HostFrame::new()).collect();
    let metas: Vec<PageMeta> = (0..DATA_FRAMES)
        .map(|_| PageMeta::new_allocated())
        .collect();
    let memory = HostMemory::new(&table_frames, TABLE_BASE).expect("aligned tables");
    // SAFETY: this map is the only one counting on these metas.
    let mut memmap = unsafe { SliceMemMap::new(Pfn(DATA_PFN), &metas) };
    memmap
        .add_region(Region {
            first: Pfn(FILE_PFN),
            pages: 16,
            unit_pages: 1,
            layout_managed: true,
        })
        .expect("the file region fits");
    let epoch = Epoch::<KernelTables, READERS>::new().expect("the only epoch of its brand");
    let mut pool: Vec<PhysAddr> = memory.frame_pas().collect();
    // SAFETY: host tables have no MMU and no TLB, so nothing caches them past
    // an unmap. (That every walk is inside a read section of a reader of
    // `epoch` is in the types: the walkers have its domain.)
    let retire = unsafe { EpochRetire::new(&epoch) };
    let tables =
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        TableBuilder::new(&memory, unsafe { FramePool::new(&mut pool) }, retire).expect("a root table");
    let space = AddressSpace::new(tables);
    let reader = epoch.reader().expect("a reader slot");
    let clock = Monotonic(Instant::now());
    let user_rw = Perms::READ | Perms::WRITE | Perms::USER;
    let dma_flags = GupFlags::PIN | GupFlags::WRITE | GupFlags::USER;

    // 1. An anonymous buffer: map, pin, DMA, unpin (drop), unmap (drop).
    {
        let buf = space
            .map(VirtAddr(BUF_VA), Pfn(DATA_PFN), BUF_PAGES, user_rw)
            .expect("map the buffer");
        let mut out = vec![Pfn(0); BUF_PAGES as usize];
        match pin_pages(
            &space,
            &memmap,
            &reader,
            buf.va,
            BUF_PAGES * KIB4,
            dma_flags,
            &mut out,
        ) {
            Ok(pinned) => {
                let expected: Vec<Pfn> = (0..BUF_PAGES).map(|i| Pfn(DATA_PFN + i)).collect();
                s.check(
                    pinned.pfns() == expected,
                    "the PFNs are the buffer's frames",
                );
                s.pinned += pinned.pfns().len() as u64;
                let unpinned = dma(&data, &memmap, &pinned, 0xb0f0);
                s.check(unpinned == 0, "the device wrote only pinned frames");
                // `pinned` is dropped here: unpinned.
            }
            Err(e) => s.check(false, format_args!("pin the buffer: {e:?}")),
        }
        s.check(
            (0..BUF_PAGES).all(|i| first_word(&data, Pfn(DATA_PFN + i)) == 0xb0f0 + i),
            "the device's writes are in the buffer's frames",
        );
        s.check(
            metas.iter().all(|m| m.load().is_idle()),
            "dropping the handle unpinned",
        );
        // `buf` is dropped here: unmapped.
    }
    let walker = space.walker;
    s.check(
        walker
            .translate(VirtAddr(BUF_VA))
            .is_ok_and(|t| t.leaf().is_none()),
        "dropping the mapping unmapped it",
    );

    // 2. A memory-mapped file, pinned by a device, truncated meanwhile.
    let mut file = FileMappings {
        mappings: Vec::new(),
    };
    let mut va = FILE_VA;
    for e in FILE_EXTENTS {
        match space.map(VirtAddr(va), e.first, e.pages, user_rw) {
            Ok(m) => file.mappings.push(m),
            Err(e) => s.check(false, format_args!("map the file: {e}")),
        }
        va += e.pages * KIB4;
    }
    let file_pages: u64 = FILE_EXTENTS.iter().map(|e| e.pages).sum();
    let mut out = vec![Pfn(0); file_pages as usize];
    let pinned = match pin_pages(
        &space,
        &memmap,
        &reader,
        VirtAddr(FILE_VA),
        file_pages * KIB4,
        dma_flags,
        &mut out,
    ) {
        Ok(pinned) => pinned,
        Err(e) => {
            s.check(false, format_args!("pin the file: {e:?}"));
            return s;
        }
    };
    let expected: Vec<Pfn> = FILE_EXTENTS
        .iter()
        .flat_map(|e| (0..e.pages).map(move |i| Pfn(e.first.0 + i)))
        .collect();
    s.check(
        pinned.pfns() == expected,
        "the PFNs follow the file's extents",
    );
    s.pinned += file_pages;
    let (freed, unpinned) = std::thread::scope(|scope| {
        // The device owns the pin handle now; it finishes its DMA later and
        // drops it.
        let device = scope.spawn(|| {
            let pinned = pinned;
            std::thread::sleep(Duration::from_millis(10));
            dma(&data, &memmap, &pinned, 0xf11e)
        });
        let truncate = Truncate::mark(&memmap, FILE_EXTENTS.into_iter())
            .map_err(|e| format!("mark: {e}"))
            .and_then(|t| {
                t.unmap(&mut file)
                    .map_err(|Failed { error, .. }| format!("unmap: {error}"))
            })
            .and_then(|t| {
                let wait = Wait {
                    waiter: &SpinWaiter,
                    clock: &clock,
                    deadline_ns: Some(clock.now_ns() + 10_000_000_000),
                };
                t.drain(&wait)
                    .map_err(|Failed { error, .. }| format!("drain: {error}"))
            })
            .and_then(|t| t.free().map_err(|e| format!("free: {e}")));
        (truncate, device.join().expect("the device thread"))
    });
    s.check(unpinned == 0, "the device wrote only pinned frames");
    match freed {
        Ok(freed) => {
            s.check(freed.units == file_pages, "every page of the file freed");
            s.truncated += file_pages;
        }
        Err(e) => s.check(false, e),
    }
    s.check(file.mappings.is_empty(), "the truncate took every mapping");
    s.check(
        expected
            .iter()
            .enumerate()
            .all(|(i, &p)| first_word(&data, p) == 0xf11e + i as u64),
        "the device's writes landed in the file's frames",
    );

    // After the truncate: free, unreachable, nothing pinned.
    s.check(
        expected
            .iter()
            .all(|&p| memmap.unit(p).is_ok_and(|u| u.meta.is_free())),
        "the file's frames are free",
    );
    let mut out = vec![Pfn(0); file_pages as usize];
    let again = pin_pages(
        &space,
        &memmap,
        &reader,
        VirtAddr(FILE_VA),
        file_pages * KIB4,
        dma_flags,
        &mut out,
    );
    s.check(
        matches!(again, Err(PinError::Stopped(Stop::Absent { .. }))),
        format_args!("GUP-fast after the truncate: {:?}", again.as_ref().err()),
    );
    drop(again);
    s.check(
        metas.iter().all(|m| m.load().is_idle()),
        "nothing left pinned",
    );
    // The emptied page tables were retired; no reader is inside, so they all
    // come back.
    let mut tables = space.tables.lock();
    s.check(tables.reclaim().is_ok(), "reclaim");
    s.check(
        tables.pool().free_count() == TABLE_FRAMES - 1,
        format_args!(
            "every table but the root back in the pool: {}",
            tables.pool().free_count()
        ),
    );
    s.check(
        space.shootdowns.load(Ordering::Relaxed) == 3,
        "one shootdown per mapping dropped",
    );
    s
}

fn main() {
    let summary = run();
    println!("{summary}");
    if summary.violations != 0 {
        std::process::exit(1);
    }
}
