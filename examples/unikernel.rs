//! cargo run --example unikernel
//!
//! How a Hermit-style unikernel plugs pagepin in: one address space, all of
//! physical memory reachable through a direct map, a frame allocator that holds
//! the kernel's `PageMeta` array, page tables built with the `x86_64` crate's
//! `OffsetPageTable` and walked by pagepin's GUP-fast, and an interrupts-off
//! walk guard.
//!
//! The first half of the file is the **glue** a kernel writes (everything
//! above the `Demo` marker): the direct map as a [`TableAccess`], the frame
//! allocator as a [`MemoryMap`] (and as the `x86_64` crate's
//! `FrameAllocator` for page tables), the interrupts-off [`WalkGuard`], and the
//! DAX [`Unmapper`]. The second half is the demo:
//!
//! 1. a virtio-style driver pins a user buffer for DMA with GUP-fast
//!    (`PIN | WRITE | USER`), the "device" writes through the PFNs, the driver
//!    releases the pins, and the buffer is read back through its virtual
//!    addresses with the `x86_64` crate's own translation;
//! 2. a file on a DAX device, mapped with 2 MiB pages, is pinned by a reader and
//!    truncated meanwhile: mark, unmap, `try_drain` (busy: the pin), release,
//!    drain, free. After it the blocks are free and GUP-fast finds nothing.
//!
//! The host stands in for the machine: "physical memory" is one host
//! allocation whose physical addresses start at `PHYS_BASE`, `cli`/`sti`
//! flip a flag, and a TLB shootdown is counted. The last line is
//! `unikernel: pinned=<n> truncated=<n> violations=<n>` (base pages pinned and
//! truncated); the exit status is non-zero on a violation.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::cell::Cell;
use std::fmt;
use std::ptr::NonNull;
use std::time::Instant;

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::WalkGuard;
use pagepin::gup::{Gup, GupFlags, Stop, Taken, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::{GetErrorKind, Hold, PageMeta};
use pagepin::sync::{AtomicU64, Ordering};
use pagepin::table::{
    AccessError, DirectMap, PhysAddr, RangeError, TableAccess, VirtAddr, WalkError, WalkItem,
    Walker,
};
use pagepin::truncate::{Extent, Failed, Truncate, Unmapper, Wait};
use pagepin::wait::{Clock, SpinWaiter, WaitSlot, WaitTable};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size2MiB,
    Size4KiB, Translate,
};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
/// The first physical address of memory (2 MiB-aligned).
const PHYS_BASE: u64 = 0x100_0000;
/// RAM: frames for page tables and anonymous pages, single-page units.
const RAM_FRAMES: u64 = 512;
/// The DAX device right after RAM: 2 MiB blocks, layout-managed.
const DAX_BLOCKS: u64 = 2;
const FRAMES: u64 = RAM_FRAMES + DAX_BLOCKS * 512;

// ---------------------------------------------------------------------------
// Glue: the direct map.
// ---------------------------------------------------------------------------

// Reading the x86_64 crate's `u64` entries as `AtomicU64` needs the two types
// to be laid out alike.
const _: () = assert!(
    size_of::<AtomicU64>() == size_of::<u64>() && align_of::<AtomicU64>() == align_of::<u64>()
);

/// All of physical memory, mapped at a fixed offset (Hermit's and Linux's
/// direct map): physical address `pa` is at virtual address `pa + offset`.
///
/// Through `&self` every word is reached as an `AtomicU64` only, by pagepin's
/// [`DirectMap`] ([`access`]).
/// The one non-atomic writer, the `x86_64` crate's mapper, needs `&mut self`
/// ([`mapper`]), so the borrow checker keeps it from running while pagepin
/// holds a reference into the tables: the kernel builds and edits mappings
/// with the crate while no lockless walk can run (boot, or with the address
/// space's walkers excluded), and changes them under walkers only atomically
/// (the [`DaxUnmapper`]).
///
/// [`access`]: PhysMemory::access
/// [`mapper`]: PhysMemory::mapper
struct PhysMemory {
    /// The virtual address of `PHYS_BASE` (4 KiB-aligned).
    virt: NonNull<u8>,
    bytes: usize,
}

impl PhysMemory {
    /// Boot: `frames` frames of zeroed memory from `PHYS_BASE` on.
    fn new(frames: u64) -> PhysMemory {
        let bytes = (frames * KIB4) as usize;
        let layout = Layout::from_size_align(bytes, KIB4 as usize).expect("a valid layout");
        assert!(bytes > 0);
        // SAFETY: the layout's size is not zero (asserted above).
        let virt = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("host memory");
        PhysMemory { virt, bytes }
    }

    /// pagepin's access to the page tables in this memory, for as long as
    /// `&self` is borrowed: the `&mut self` mapper cannot run meanwhile.
    fn access(&self) -> DirectMap<'_> {
        let va = self.virt.as_ptr().expose_provenance() as u64;
        let last = PhysAddr(PHYS_BASE + self.bytes as u64 - 1);
        // SAFETY: (1) every 8-aligned physical address `pa` of `PHYS_BASE ..=
        // last` is the allocation's byte `pa - PHYS_BASE`, at `pa + offset`,
        // zeroed at boot and live as long as `self` (whose borrow bounds the
        // returned lifetime), with its provenance exposed above; (2) through
        // `&self` the memory is only accessed atomically: the one non-atomic
        // writer, `mapper`, needs `&mut self`, so it cannot run while the
        // access lives; (3) a host allocation does not wrap.
        unsafe { DirectMap::new(va.wrapping_sub(PHYS_BASE), PhysAddr(PHYS_BASE), last) }
    }

    /// The `x86_64` crate's mapper of the tables rooted at `root`.
    fn mapper(&mut self, root: PhysFrame) -> OffsetPageTable<'_> {
        let offset = (root.start_address().as_u64() - PHYS_BASE) as usize;
        assert!(offset + KIB4 as usize <= self.bytes, "the root is memory");
        // The crate reaches table `pa` at `pa + phys_offset`; exposing the
        // allocation's provenance lets those integer-built pointers use it.
        let phys_offset = (self.virt.as_ptr().expose_provenance() as u64).wrapping_sub(PHYS_BASE);
        // SAFETY: (1) `&mut self` is exclusive: no `&AtomicU64` from `word`
        // lives while the mapper does; (2) the root is a 4 KiB-aligned frame of
        // the allocation, and `PageTable` is 512 `u64`s aligned to 4 KiB;
        // (3) the crate's promise that all physical memory is mapped at
        // `phys_offset` holds for every frame it follows: the root and the
        // tables it allocates come from `TableFrames`, which hands out frames
        // of this map only.
        unsafe {
            OffsetPageTable::new(
                &mut *self.virt.as_ptr().add(offset).cast::<PageTable>(),
                x86_64::VirtAddr::new(phys_offset),
            )
        }
    }
}

impl Drop for PhysMemory {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.bytes, KIB4 as usize).expect("as allocated");
        // SAFETY: allocated in `new` with this layout, and freed once.
        unsafe { dealloc(self.virt.as_ptr(), layout) }
    }
}

// ---------------------------------------------------------------------------
// Glue: the frame allocator and its page metadata, as pagepin's memory map.
// ---------------------------------------------------------------------------

/// The kernel's frame allocator: one `PageMeta` per frame (its `struct page`
/// array). RAM frames are single-page units; the DAX device's blocks are
/// 2 MiB layout-managed units, owned by the filesystem.
struct Frames {
    metas: Vec<PageMeta>,
    waits: WaitTable<64>,
}

const FIRST_PFN: u64 = PHYS_BASE / KIB4;
const DAX_PFN: u64 = FIRST_PFN + RAM_FRAMES;
const _: () = assert!(DAX_PFN % 512 == 0, "DAX blocks are 2 MiB-aligned");

impl Frames {
    fn new() -> Frames {
        // RAM starts free; the DAX blocks belong to the filesystem's files.
        let metas = (0..FRAMES)
            .map(|i| {
                if i < RAM_FRAMES {
                    PageMeta::new_free()
                } else {
                    PageMeta::new_allocated()
                }
            })
            .collect();
        Frames {
            metas,
            waits: WaitTable::new(),
        }
    }

    /// Allocates a RAM frame: the FREE → allocated compare-exchange on its meta.
    fn alloc(&self) -> Option<Pfn> {
        let i = self.metas[..RAM_FRAMES as usize]
            .iter()
            .position(|m| m.allocate().is_ok())?;
        Some(Pfn(FIRST_PFN + i as u64))
    }
}

// SAFETY: (1) `unit` returns the frame itself in RAM, or the 2 MiB block
// containing it on the DAX device, or `OutsideMap`; (2) every frame of a block
// computes the same head, size and meta, and the layout never changes; (3) the
// metas are a boxed slice that never moves while `&self` lives; (4) `wake`
// runs `WaitSlot::wake` on the fixed slot `wait_slot` returns.
unsafe impl MemoryMap for Frames {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        let i = pfn
            .0
            .checked_sub(FIRST_PFN)
            .filter(|&i| i < FRAMES)
            .ok_or(OutsideMap { pfn })?;
        let (head, pages, layout_managed) = if i < RAM_FRAMES {
            (i, 1, false)
        } else {
            (i & !511, 512, true)
        };
        Ok(Unit {
            head: Pfn(FIRST_PFN + head),
            pages,
            meta: &self.metas[head as usize],
            layout_managed,
        })
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.waits.slot(head)
    }

    fn wake(&self, head: Pfn) {
        // Hermit would now unblock the tasks sleeping on this slot; the
        // `SpinWaiter` used here polls the slot's wake count instead.
        let _woken = self.waits.wake(head);
    }
}

/// The `x86_64` crate's frame allocator for page tables: RAM frames.
struct TableFrames<'a>(&'a Frames);

// SAFETY: every frame returned was FREE and is now allocated (a compare-
// exchange on its meta), so it is unused and handed out once.
unsafe impl FrameAllocator<Size4KiB> for TableFrames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let pfn = self.0.alloc()?;
        PhysFrame::from_start_address(x86_64::PhysAddr::new(pfn.0 * KIB4)).ok()
    }
}

// ---------------------------------------------------------------------------
// Glue: the interrupts-off walk guard.
// ---------------------------------------------------------------------------

/// The CPU's interrupt flag (RFLAGS.IF) and a count of `cli`s, standing in for
/// the instructions on the host.
struct Cpu {
    interrupts: Cell<bool>,
    clis: Cell<u64>,
}

/// GUP-fast's walk guard in this kernel: interrupts off for the walk, as
/// Linux x86 does it.
///
/// A CPU with interrupts off cannot acknowledge an inter-processor interrupt,
/// so this protects a walk **only if** every page-table page is reused only
/// after an IPI round that every CPU acknowledged (a broadcast TLB shootdown
/// that waits for the acks). On aarch64, whose broadcast `TLBI` interrupts
/// nobody, it protects nothing: use an epoch guard there.
struct IrqsOff<'c> {
    cpu: &'c Cpu,
}

impl<'c> IrqsOff<'c> {
    /// # Safety
    ///
    /// The caller promises that a page-table page walked under this guard is
    /// freed or reused only after an IPI round acknowledged by every CPU that
    /// may be walking.
    unsafe fn new(cpu: &'c Cpu) -> IrqsOff<'c> {
        IrqsOff { cpu }
    }
}

/// Interrupts are off while it lives; dropping it restores the flag.
struct IrqGuard<'g> {
    cpu: &'g Cpu,
    were_on: bool,
}

impl Drop for IrqGuard<'_> {
    fn drop(&mut self) {
        // `sti` if they were on (bare metal: `interrupts::enable()`).
        self.cpu.interrupts.set(self.were_on);
    }
}

// SAFETY: while a guard lives this CPU has interrupts off and cannot
// acknowledge an IPI; the constructor's caller promised that no table page is
// reused before every CPU acknowledged one, so none is reused under the guard.
unsafe impl WalkGuard for IrqsOff<'_> {
    // The IPI round is the kernel's own promise, made in `IrqsOff::new`, not a
    // type: the walkers it guards are `Walker::new`'s.
    type Domain = pagepin::guard::Promised;
    type Guard<'g>
        = IrqGuard<'g>
    where
        Self: 'g;

    fn enter(&self) -> IrqGuard<'_> {
        // `cli` (bare metal: `interrupts::are_enabled()`, `interrupts::disable()`).
        let were_on = self.cpu.interrupts.replace(false);
        self.cpu.clis.set(self.cpu.clis.get() + 1);
        IrqGuard {
            cpu: self.cpu,
            were_on,
        }
    }
}

// ---------------------------------------------------------------------------
// Glue: unmapping a DAX file's blocks (the truncate's unmap step).
// ---------------------------------------------------------------------------

/// The filesystem's reverse map of a DAX file: where its blocks are mapped.
/// Unmapping clears the leaves with atomic stores through the direct map
/// (walkers may be running) and leaves the emptied tables in place, so no
/// table page is ever freed: the interrupts-off guard's promise holds without
/// an IPI round. Then it shoots the TLBs down.
struct DaxUnmapper<'k> {
    memory: DirectMap<'k>,
    root: PhysAddr,
    /// (virtual address, first block page, pages) per mapping.
    mappings: Vec<(VirtAddr, Pfn, u64)>,
    shootdowns: u64,
}

#[derive(Debug)]
#[allow(dead_code)] // read through `Debug` only
enum DaxUnmapError {
    Range(RangeError),
    Walk(WalkError),
    Access(AccessError),
    SplitsLeaf(VirtAddr),
}

// SAFETY: the reverse map lists every mapping of the file's blocks; the leaves are cleared and the TLBs shot down before `Ok`.
unsafe impl Unmapper for DaxUnmapper<'_> {
    type Error = DaxUnmapError;

    fn unmap_extent(&mut self, extent: Extent) -> Result<(), DaxUnmapError> {
        let walker = Walker::<Paging4Level, _>::new(&self.memory, self.root);
        for &(va, first, pages) in &self.mappings {
            let start = extent.first.0.max(first.0);
            let end = (extent.first.0 + extent.pages).min(first.0 + pages);
            if start >= end {
                continue;
            }
            let va = VirtAddr(va.0 + (start - first.0) * KIB4);
            let len = (end - start) * KIB4;
            for item in walker.walk(va, len).map_err(DaxUnmapError::Range)? {
                let WalkItem::Leaf(leaf) = item.map_err(DaxUnmapError::Walk)? else {
                    continue;
                };
                if leaf.va.size() != leaf.size {
                    return Err(DaxUnmapError::SplitsLeaf(leaf.leaf_va));
                }
                let loc = leaf.entry.loc;
                // SAFETY: these tables have no builder: the kernel's unmapper
                // owns the file's leaves and clears them, as a builder's unmap
                // would (its tables are never freed).
                let word = unsafe { self.memory.entry(loc.table, loc.index) }
                    .map_err(DaxUnmapError::Access)?;
                // Relaxed, as pagepin's builder clears leaves: a walker that
                // got a reference after this store re-checks and sees it,
                // ordered by the meta's Release free and the get's Acquire.
                word.store(0, Ordering::Relaxed);
            }
            // `invlpg` per page here, then an IPI round to the other CPUs,
            // waiting for every acknowledgement.
            self.shootdowns += 1;
        }
        Ok(())
    }
}

/// The kernel's monotonic clock (the TSC; the host's `Instant` here).
struct Tsc(Instant);

impl Clock for Tsc {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

// ---------------------------------------------------------------------------
// Demo.
// ---------------------------------------------------------------------------

/// A user buffer of 8 pages for DMA.
const BUF_VA: u64 = 0x4000_0000;
const BUF_PAGES: usize = 8;
/// Where the DAX file is mapped (2 MiB pages).
const FILE_VA: u64 = 0x8000_0000;

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
            "unikernel: pinned={} truncated={} violations={}",
            self.pinned, self.truncated, self.violations
        )
    }
}

impl Summary {
    fn check(&mut self, ok: bool, what: impl fmt::Display) {
        if !ok {
            self.violations += 1;
            eprintln!("unikernel: violation: {what}");
        }
    }
}

/// The "device": a virtio block device completing a read into the pinned
/// frames. It writes only frames that are pinned.
fn device_dma(memory: &DirectMap<'_>, frames: &Frames, pfns: &[Pfn], s: &mut Summary) {
    for (i, &pfn) in pfns.iter().enumerate() {
        let pinned = frames.unit(pfn).is_ok_and(|u| u.meta.pins() > 0);
        s.check(pinned, format_args!("the device wrote unpinned {pfn}"));
        for word in 0..512 {
            // SAFETY: the word is a data page's (the DMA buffer, written as the device would), not a table's.
            if let Ok(w) = unsafe { memory.entry(PhysAddr(pfn.0 * KIB4), word as usize) } {
                // Relaxed: single-threaded; a real completion is ordered by
                // the virtqueue's used-ring barrier.
                w.store(pattern(i, word), Ordering::Relaxed);
            }
        }
    }
}

fn pattern(page: usize, word: u64) -> u64 {
    0xd0a0_0000_0000_0000 | (page as u64) << 16 | word
}

/// Runs the demo.
pub fn run() -> Summary {
    let mut s = Summary::default();
    let mut memory = PhysMemory::new(FRAMES);
    let frames = Frames::new();
    let cpu = Cpu {
        interrupts: Cell::new(true),
        clis: Cell::new(0),
    };

    // Boot: the address space, built with the x86_64 crate (no walker yet).
    let root = frames.alloc().expect("a root frame");
    let root_frame = PhysFrame::containing_address(x86_64::PhysAddr::new(root.0 * KIB4));
    let mut buf_pfns = Vec::new();
    {
        let mut mapper = memory.mapper(root_frame);
        let mut tables = TableFrames(&frames);
        let user = PageTableFlags::PRESENT
            | PageTableFlags::WRITABLE
            | PageTableFlags::USER_ACCESSIBLE
            | PageTableFlags::NO_EXECUTE;
        for i in 0..BUF_PAGES as u64 {
            let pfn = frames.alloc().expect("a buffer frame");
            buf_pfns.push(pfn);
            let page =
                Page::<Size4KiB>::containing_address(x86_64::VirtAddr::new(BUF_VA + i * KIB4));
            let frame = PhysFrame::containing_address(x86_64::PhysAddr::new(pfn.0 * KIB4));
            // SAFETY: the frame is a fresh RAM frame nothing else maps; the
            // flush is skipped (nothing runs on these tables yet).
            unsafe { mapper.map_to(page, frame, user, &mut tables) }
                .expect("map a buffer page")
                .ignore();
        }
        for b in 0..DAX_BLOCKS {
            let va = x86_64::VirtAddr::new(FILE_VA + b * MIB2);
            let pa = x86_64::PhysAddr::new((DAX_PFN + b * 512) * KIB4);
            // SAFETY: the DAX block belongs to the file mapped here and to no
            // other mapping; the flush is skipped as above.
            unsafe {
                mapper.map_to(
                    Page::<Size2MiB>::containing_address(va),
                    PhysFrame::<Size2MiB>::containing_address(pa),
                    user,
                    &mut tables,
                )
            }
            .expect("map a DAX block")
            .ignore();
        }
    }
    let root = PhysAddr(root.0 * KIB4);
    // SAFETY: this kernel never frees a page-table page (the DAX unmapper
    // leaves emptied tables in place), so no table is reused at all.
    let irqs_off = unsafe { IrqsOff::new(&cpu) };

    // 1. virtio DMA into a user buffer.
    {
        let access = memory.access();
        let gup = Gup::new(Walker::<Paging4Level, _>::new(&access, root), &frames);
        let mut pfns = [Pfn(0); BUF_PAGES];
        let flags = GupFlags::PIN | GupFlags::WRITE | GupFlags::USER;
        let taken = gup.get_pages(
            &irqs_off,
            VirtAddr(BUF_VA),
            BUF_PAGES as u64 * KIB4,
            flags,
            &mut pfns,
        );
        let complete = Ok(Taken {
            pages: BUF_PAGES,
            stop: Stop::Complete,
        });
        s.check(taken == complete, format_args!("buffer pin: {taken:?}"));
        s.check(pfns[..] == buf_pfns[..], "the PFNs are the buffer's frames");
        s.check(
            cpu.interrupts.get() && cpu.clis.get() == 1,
            "one interrupts-off section per call, interrupts back on",
        );
        s.pinned += BUF_PAGES as u64;
        device_dma(&access, &frames, &pfns, &mut s);
        // The used ring says the request completed: unpin.
        s.check(
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&frames, &pfns, Hold::Pin) }.is_ok(),
            "release the buffer",
        );
    }
    // The user reads its buffer: through its virtual addresses, translated by
    // the x86_64 crate (an oracle independent of pagepin's walker).
    {
        let mapper = memory.mapper(root_frame);
        let translated: Vec<_> = (0..BUF_PAGES as u64)
            .map(|i| mapper.translate_addr(x86_64::VirtAddr::new(BUF_VA + i * KIB4)))
            .collect();
        // The mapper's `&mut` borrow ends here; reads go through the access.
        let access = memory.access();
        for (i, pa) in translated.into_iter().enumerate() {
            let Some(pa) = pa else {
                s.check(false, format_args!("buffer page {i} unmapped"));
                continue;
            };
            let ok = (0..512).all(|w| {
                // SAFETY: the word is only loaded.
                unsafe { access.entry(PhysAddr(pa.as_u64()), w as usize) }
                    .is_ok_and(|x| x.load(Ordering::Relaxed) == pattern(i, w))
            });
            s.check(ok, format_args!("buffer page {i} holds the device's data"));
        }
    }

    // 2. Truncate a DAX file that a reader has pinned.
    let access = memory.access();
    let gup = Gup::new(Walker::<Paging4Level, _>::new(&access, root), &frames);
    let file = Extent::new(Pfn(DAX_PFN), DAX_BLOCKS * 512);
    let mut held = vec![Pfn(0); 512];
    let flags = GupFlags::PIN | GupFlags::USER;
    let taken = gup.get_pages(&irqs_off, VirtAddr(FILE_VA), MIB2, flags, &mut held);
    s.check(
        taken.is_ok_and(|t| t.pages == 512 && t.stop == Stop::Complete),
        format_args!("pin the first block: {taken:?}"),
    );
    s.check(
        held.iter()
            .enumerate()
            .all(|(i, p)| p.0 == DAX_PFN + i as u64),
        "the pinned PFNs are the file's first block",
    );
    s.pinned += 512;
    let marked = match Truncate::mark(&frames, core::iter::once(file)) {
        Ok(marked) => marked,
        Err(e) => {
            s.check(false, format_args!("mark: {e}"));
            return s;
        }
    };
    let mut unmapper = DaxUnmapper {
        memory: access,
        root,
        mappings: vec![(VirtAddr(FILE_VA), file.first, file.pages)],
        shootdowns: 0,
    };
    let unmapped = match marked.unmap(&mut unmapper) {
        Ok(unmapped) => unmapped,
        Err(Failed { error, .. }) => {
            s.check(false, format_args!("unmap: {error:?}"));
            return s;
        }
    };
    s.check(unmapper.shootdowns == 1, "one shootdown for the mapping");
    let mut again = vec![Pfn(0); 1024];
    let taken = gup.get_pages(&irqs_off, VirtAddr(FILE_VA), 2 * MIB2, flags, &mut again);
    s.check(
        taken
            == Ok(Taken {
                pages: 0,
                stop: Stop::Absent {
                    va: VirtAddr(FILE_VA),
                },
            }),
        format_args!("GUP-fast after the unmap: {taken:?}"),
    );
    // The reader still holds its pin: the truncate is busy.
    let unmapped = match unmapped.try_drain::<2>() {
        Err(Failed { truncate, error }) => {
            let first = error.first.first().map(|b| (b.head, b.pins));
            s.check(
                error.total == 1 && first == Some((Pfn(DAX_PFN), 512)),
                format_args!("busy report: {error}"),
            );
            truncate
        }
        Ok(drained) => {
            s.check(false, "drained with a pin held");
            let _ = drained.cancel();
            return s;
        }
    };
    // The reader's I/O completes.
    // SAFETY: the pages were taken above by this code and are released once.
    s.check(
        unsafe { release(&frames, &held, Hold::Pin) }.is_ok(),
        "release",
    );
    let clock = Tsc(Instant::now());
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: Some(clock.now_ns() + 1_000_000_000),
    };
    match unmapped.drain(&wait).map(|d| d.free()) {
        Ok(Ok(freed)) => {
            s.check(freed.units == DAX_BLOCKS, "both blocks freed");
            s.truncated += file.pages;
        }
        Ok(Err(e)) => s.check(false, format_args!("free: {e}")),
        Err(Failed { error, .. }) => s.check(false, format_args!("drain: {error}")),
    }

    // After the truncate: the blocks are free, nothing can take them, nothing
    // is left pinned.
    for b in 0..DAX_BLOCKS {
        let meta = frames.unit(Pfn(DAX_PFN + b * 512)).map(|u| u.meta);
        s.check(
            meta.is_ok_and(|m| {
                m.is_free() && m.get(Hold::Pin, 1).map_err(|e| e.kind) == Err(GetErrorKind::Free)
            }),
            format_args!("block {b} is free and refuses pins"),
        );
    }
    let taken = gup.get_pages(&irqs_off, VirtAddr(FILE_VA), 2 * MIB2, flags, &mut again);
    s.check(
        taken.is_ok_and(|t| t.pages == 0),
        "GUP-fast takes nothing of the truncated file",
    );
    s.check(
        frames.metas.iter().all(|m| m.load().is_idle()),
        "nothing left pinned or referenced",
    );
    s.check(cpu.interrupts.get(), "interrupts back on");
    s
}

fn main() {
    let summary = run();
    println!("{summary}");
    if summary.violations != 0 {
        std::process::exit(1);
    }
}
