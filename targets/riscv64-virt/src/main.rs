//! The pagepin test kernel for QEMU's riscv64 `virt` machine (4 harts,
//! `-bios none`).
//!
//! It runs pagepin's protocol on the **live MMU tables**: the tables the harts
//! translate through (satp: Sv39, Sv48 or Sv57, a cargo feature) are built and
//! edited by pagepin's `TableBuilder`, walked by GUP-fast on three harts while
//! hart 0 truncates.
//!
//! # What it does
//!
//! 1. Every hart starts in M-mode at 0x8000_0000; `arch`'s `_start` opens PMP
//!    to S-mode and `mret`s to S-mode. Hart 0 builds the tables with
//!    `TableBuilder` in a static frame pool: an identity map of the devices
//!    (one gigapage: the SiFive test device, the CLINT, the UART) and of RAM
//!    (megapages), then writes satp (and checks the hart took the mode). The
//!    same root holds the "file": [`SLOTS`] virtual slots of one megapage each
//!    at [`SLOT_BASE`].
//! 2. Harts 1-3 wait for hart 0's tables, write the same satp and become
//!    walkers.
//! 3. The walkers pin random ranges of the file with `Gup::get_pages`
//!    (`PIN | WRITE`), then, through the identity map, check and **write** every
//!    pinned page: it holds its allocation's generation (never poison), its
//!    unit is mapped at the slot it was pinned through, a token the walker
//!    writes stays until release, and the generation does not change until the
//!    release. They also read the first pinned page through its slot address
//!    (the MMU's view on that hart): it must be that page or a page fault
//!    (caught by the M-mode handler: [`arch::probe`]).
//! 4. Hart 0 runs [`ROUNDS`] operations on random slots: an empty slot gets a
//!    newly allocated unit (one megapage over a 2 MiB unit, or
//!    [`SMALL_SLOT_PAGES`] pages over single-page units) and is mapped; the
//!    MMU is the oracle: hart 0 **writes through the slot address** and reads
//!    the word back through the identity map, and reads the generation through
//!    the slot address. A mapped slot is truncated with the typestate API:
//!    `Truncate::mark` → `unmap` (the [`SlotUnmapper`]: `TableBuilder::unmap`,
//!    then `sfence.vma va` per leaf on hart 0 and a **remote fence**: a CLINT
//!    software interrupt to harts 1-3, whose M-mode handler runs `sfence.vma`
//!    and acknowledges; hart 0 waits for every acknowledgement; the slot reads
//!    through the MMU before and faults after) → `try_drain`/`drain` → `free`;
//!    the data pages are then poisoned and reused, and the page tables the
//!    unmap detached are retired, poisoned once the epoch allows, and reused.
//! 5. Hart 0 stops the walkers, checks every page is idle and unmarked, and
//!    prints, last,
//!    `pagepin-qemu arch=riscv64 cpus=4 mode=<sv39|sv48|sv57> levels=<n> rounds=<n> pins=<n> truncates=<n> violations=<n>`,
//!    then exits QEMU through the SiFive test device: status 0 without
//!    violations, 1 with. A trap the kernel does not expect prints mcause, mepc
//!    and mtval and exits with status 3.
//!
//! # The walk guard: an epoch
//!
//! As on aarch64, GUP-fast walks under `pagepin::guard::Epoch` (one reader per
//! walking hart) and detached tables are reused only once `Epoch::is_safe`
//! ([`KernelRetire`]). On RISC-V the remote fence *is* an acknowledged IPI, so
//! "interrupts off while walking" could also protect the tables if the walkers
//! masked the IPI; they cannot here (M-mode interrupts are always taken in
//! S-mode), which is one more reason for the epoch.
//!
//! The epoch's brand, [`KernelTables`], is the domain of both halves: of
//! [`KernelRetire`] and of the walkers' readers. The walkers' `Walker` and
//! `Gup` carry that domain too, so their GUP-fast takes a reader of this
//! epoch and nothing else: a walk under another guard does not compile.
//!
//! QEMU's TCG does not model RVWMO's weak ordering: a run shows the protocol
//! works with the architecture's MMU, `sfence.vma` and IPIs, not that its
//! orderings are minimal (the loom models in `tests/` do that).
//!
//! # Broken builds
//!
//! `--features broken-no-drain` frees, poisons and reuses a truncated unit
//! without waiting for its pins when `try_drain` finds it busy;
//! `--features broken-early-table-reuse` poisons and reuses retired page
//! tables without waiting for the epoch; `--features broken-no-remote-fence`
//! fences only hart 0's TLB after unmapping (no IPI). `run.sh sv39 --broken
//! FEATURE --runs 20` boots one repeatedly and reports how often the checks
//! catch it.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod arch;
mod layout;
mod memory;

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pagepin::guard::Epoch;
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, Pfn};
use pagepin::meta::{GetErrorKind, Hold};
use pagepin::table::{
    FramePool, LeafEntry, MapRequest, MemType, PagingFormat, Perms, PhysAddr, TableBuilder,
    UnmapError, VirtAddr, Walker,
};
use pagepin::truncate::{Extent, Failed, Truncate, Unmapper, Wait};
use pagepin::wait::{Clock, SpinWaiter, WaitTable};

use layout::*;
use memory::{
    IDENTITY, IdentityTables, KernelMemMap, KernelRetire, KernelTables, TABLES, page_word,
};

/// CPUs: CPU 0 truncates, the others walk.
const CPUS: u64 = 4;
/// Walking CPUs, and the epoch's reader slots.
const WALKERS: usize = (CPUS - 1) as usize;
/// Virtual slots of the file, one block each.
const SLOTS: usize = 16;
/// The first slot's virtual address (outside the identity map).
const SLOT_BASE: u64 = 0x20_0000_0000;
/// Pages a page-mapped slot maps (over single-page units).
const SMALL_SLOT_PAGES: u64 = 64;
/// Blocks of [`SMALL_SLOT_PAGES`] pages for page-mapped slots.
const SMALL_BLOCKS: u64 = 24;
/// Base pages per block-sized unit (and per slot).
const UNIT_PAGES: u64 = BLOCK >> PAGE_SHIFT;
/// The most base pages one GUP-fast call takes.
const MAX_WALK: usize = 96;
/// What a free data page holds.
const POISON: u64 = 0xdead_dead_dead_dead;

/// The test's shared state, written once by CPU 0 before the other CPUs start.
struct Shared {
    memmap: KernelMemMap,
    /// The one epoch of brand [`KernelTables`]: the walkers' readers, and the
    /// retire hook's grace periods.
    epoch: Epoch<KernelTables, WALKERS>,
}

/// A static written once, by CPU 0, before any other CPU reads it.
struct Once<T>(UnsafeCell<MaybeUninit<T>>);

// SAFETY: CPU 0 writes the value exactly once, before it publishes it (the
// Release store of `SHARED_READY`); every
// other access is a shared read after that publication.
unsafe impl<T: Sync> Sync for Once<T> {}

static SHARED: Once<Shared> = Once(UnsafeCell::new(MaybeUninit::uninit()));
static SHARED_READY: AtomicBool = AtomicBool::new(false);
/// The satp value (mode and root) every hart writes.
static SATP: AtomicU64 = AtomicU64::new(0);

static STARTED: AtomicU32 = AtomicU32::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static DONE: AtomicU32 = AtomicU32::new(0);
static PINS: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
static CHANGED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
static PROBE_FAULTS: AtomicU64 = AtomicU64::new(0);

/// The shared state (after CPU 0 wrote it).
fn shared() -> &'static Shared {
    // Acquire: pairs with CPU 0's Release store after it wrote `SHARED`.
    while !SHARED_READY.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    // SAFETY: `SHARED_READY` is set only after `SHARED` was written, and it is
    // never written again.
    unsafe { (*SHARED.0.get()).assume_init_ref() }
}

/// Records a violation; prints the first few.
fn violation(what: core::fmt::Arguments<'_>) {
    // Relaxed: a counter, read after the CPUs synchronised through `DONE`.
    if VIOLATIONS.fetch_add(1, Ordering::Relaxed) < 12 {
        println!("violation (CPU {}): {}", arch::cpu_index(), what);
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The generic timer as pagepin's clock.
struct CounterClock;

impl Clock for CounterClock {
    fn now_ns(&self) -> u64 {
        let (count, freq) = arch::counter();
        (u128::from(count) * 1_000_000_000 / u128::from(freq)) as u64
    }
}

/// Leaves of the file: kernel read/write data, Normal write-back memory.
/// (A and D are set: the hart would otherwise set them itself, and a PTE
/// changed by the hardware makes GUP-fast's re-check stop.)
fn file_perms() -> Perms {
    Perms::READ | Perms::WRITE | Perms::ACCESSED | Perms::DIRTY | Perms::GLOBAL
}

/// PBMT = PMA (no Svpbmt): the region's own attributes.
fn normal() -> MemType {
    MemType(0)
}

/// The virtual address of slot `slot`.
fn slot_va(slot: usize) -> u64 {
    SLOT_BASE + slot as u64 * BLOCK
}

/// What a slot maps.
#[derive(Clone, Copy)]
enum SlotState {
    Empty,
    /// One block over block-sized unit `unit`.
    Huge {
        unit: u64,
    },
    /// [`SMALL_SLOT_PAGES`] pages over the single-page units of block `block`.
    Small {
        block: u64,
    },
}

impl SlotState {
    /// The PFNs it maps (first, count) and its leaf size.
    fn mapped(self) -> Option<(u64, u64, u64)> {
        match self {
            SlotState::Empty => None,
            SlotState::Huge { unit } => Some((
                (HUGE_BASE >> PAGE_SHIFT) + unit * UNIT_PAGES,
                UNIT_PAGES,
                BLOCK,
            )),
            SlotState::Small { block } => Some((
                (SMALL_BASE >> PAGE_SHIFT) + block * SMALL_SLOT_PAGES,
                SMALL_SLOT_PAGES,
                PAGE,
            )),
        }
    }
}

type Tables<'a> = TableBuilder<'a, Format, IdentityTables, KernelRetire<'a>>;

/// The kernel's [`Unmapper`]: its reverse map is the slot table (which slot
/// maps which PFNs); it clears the leaves through the builder (detaching and
/// retiring the tables that become empty) and shoots the TLBs down on every
/// CPU before it returns.
struct SlotUnmapper<'t, 'a> {
    tables: &'t mut Tables<'a>,
    slots: &'t [SlotState; SLOTS],
}

// SAFETY: the file's pages are mapped at their slots only (`slots` is the
// reverse map: hart 0 maps a unit at a slot and records it there, and nothing
// else maps file pages at other VAs), so `unmap_extent` clears, through the
// builder, every slot leaf over a page of the extent, then
// (`flush_tlb_range`) `sfence.vma` per leaf on hart 0 and a remote fence that
// every other hart acknowledges after its own `sfence.vma`: when it returns
// `Ok`, no entry the walkers or the MMUs can reach maps a page of the extent
// at a slot, and no hart's TLB still translates a slot VA to one. (The
// identity map of RAM is the kernel's direct map, which the promise
// excludes.) The `broken-no-remote-fence` build breaks the promise on
// purpose: the other harts are not fenced.
unsafe impl Unmapper for SlotUnmapper<'_, '_> {
    type Error = UnmapError;

    fn unmap_extent(&mut self, extent: Extent) -> Result<(), UnmapError> {
        let end = extent.first.0.saturating_add(extent.pages);
        for (slot, state) in self.slots.iter().enumerate() {
            let Some((first, pages, leaf)) = state.mapped() else {
                continue;
            };
            let (a, b) = (extent.first.0.max(first), end.min(first + pages));
            if a >= b {
                continue;
            }
            let va = slot_va(slot) + ((a - first) << PAGE_SHIFT);
            let len = (b - a) << PAGE_SHIFT;
            let probes = [(va, a), (va + len - PAGE, b - 1)];
            // Through the MMU first (this also fills this CPU's TLB with the
            // translations the invalidation must remove).
            for (at, pfn) in probes {
                // Relaxed: CPU 0 wrote the contents itself.
                let expected = page_word(pfn, 0).load(Ordering::Relaxed);
                let seen = arch::probe(at);
                if seen != Some(expected) {
                    violation(format_args!(
                        "before unmap, the MMU reads {seen:x?} at {at:#x}, expected {expected:#x}"
                    ));
                }
            }
            self.tables.unmap(VirtAddr(va), len)?;
            // Local `sfence.vma` per leaf, then the remote fence (left out by
            // `broken-no-remote-fence`).
            arch::flush_tlb_range(va, len, leaf);
            // Unmapped and invalidated: no translation may be left.
            for (at, _) in probes {
                if let Some(seen) = arch::probe(at) {
                    violation(format_args!(
                        "after unmap and TLB invalidation, the MMU still reads {seen:#x} at {at:#x}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Allocates the unit at `head` (`pages` base pages) for `slot`: a new
/// generation in every page, then the meta's Release `allocate`.
fn allocate(memmap: &KernelMemMap, head: u64, pages: u64, slot: usize) -> u64 {
    let index = memory::meta_index(head);
    // Relaxed: only CPU 0 writes generations and owners; a walker reads them
    // after its Acquire get, which reads from the Release `allocate` below.
    let generation = memory::GENERATION[index].load(Ordering::Relaxed) + 1;
    memory::GENERATION[index].store(generation, Ordering::Relaxed);
    for p in 0..pages {
        // Relaxed: published by the Release `allocate` below.
        page_word(head + p, 0).store(generation, Ordering::Relaxed);
        for cpu in 1..CPUS as usize {
            page_word(head + p, cpu).store(0, Ordering::Relaxed);
        }
    }
    memory::OWNER[index].store(slot as u64 + 1, Ordering::Relaxed);
    let meta = memmap.unit(Pfn(head)).expect("a data page").meta;
    if let Err(e) = meta.allocate() {
        // The broken build reuses units whose pins it never drained.
        if !cfg!(feature = "broken-no-drain") {
            violation(format_args!("allocate PFN {head:#x}: {e}"));
        }
    }
    generation
}

/// Poisons the unit at `head` after its free.
fn poison(head: u64, pages: u64) {
    for p in 0..pages {
        for word in 0..CPUS as usize {
            // Relaxed: a walker that could still read this page holds no
            // reference (the free succeeded), so nothing pairs with it; a
            // walker that *does* read it is the bug the checks look for.
            page_word(head + p, word).store(POISON, Ordering::Relaxed);
        }
    }
    // Relaxed: only CPU 0 writes owners.
    memory::OWNER[memory::meta_index(head)].store(0, Ordering::Relaxed);
}

/// Picks a set bit of `mask` at random and clears it.
fn take_bit(mask: &mut u64, r: u64) -> Option<u64> {
    let n = mask.count_ones() as u64;
    if n == 0 {
        return None;
    }
    let mut skip = r % n;
    for bit in 0..64 {
        if *mask & (1 << bit) != 0 {
            if skip == 0 {
                *mask &= !(1 << bit);
                return Some(bit);
            }
            skip -= 1;
        }
    }
    None
}

/// What CPU 0 counted.
#[derive(Default)]
struct TruncaterStats {
    truncates: u64,
    waited: u64,
}

/// Truncates `slot` with the typestate API and returns its units to the free
/// masks.
fn truncate_slot(
    shared: &'static Shared,
    tables: &mut Tables<'_>,
    slots: &mut [SlotState; SLOTS],
    slot: usize,
    free_masks: (&mut u64, &mut u64),
    stats: &mut TruncaterStats,
) {
    let Some((first, pages, _)) = slots[slot].mapped() else {
        return;
    };
    let memmap = &shared.memmap;
    let extents = core::iter::once(Extent::new(Pfn(first), pages));
    let marked = match Truncate::mark(memmap, extents) {
        Ok(marked) => marked,
        Err(e) => {
            violation(format_args!("mark slot {slot}: {e}"));
            return;
        }
    };
    let mut unmapper = SlotUnmapper {
        tables: &mut *tables,
        slots: &*slots,
    };
    let unmapped = match marked.unmap(&mut unmapper) {
        Ok(unmapped) => unmapped,
        Err(Failed { truncate, error }) => {
            violation(format_args!("unmap slot {slot}: {error}"));
            let _ = truncate.cancel();
            return;
        }
    };
    let clock = CounterClock;
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: Some(clock.now_ns() + 20_000_000_000),
    };
    let drained = match unmapped.try_drain::<1>() {
        Ok(drained) => Some(drained),
        Err(Failed { truncate, .. }) => {
            stats.waited += 1;
            if cfg!(feature = "broken-no-drain") {
                // BROKEN: gives up on the pins and frees the pages anyway.
                let _ = truncate.cancel();
                None
            } else {
                match truncate.drain(&wait) {
                    Ok(drained) => Some(drained),
                    Err(Failed { truncate, error }) => {
                        violation(format_args!("drain slot {slot}: {error}"));
                        let _ = truncate.cancel();
                        return;
                    }
                }
            }
        }
    };
    if let Some(Err(e)) = drained.map(|drained| drained.free()) {
        violation(format_args!("free slot {slot}: {e}"));
        // The slot's mapping is gone, but the units may still be marked or
        // held: leaked, never poisoned, put back in the free masks or mapped
        // again.
        slots[slot] = SlotState::Empty;
        return;
    }
    let (huge_free, small_free) = free_masks;
    match slots[slot] {
        SlotState::Huge { unit } => {
            poison(first, pages);
            *huge_free |= 1 << unit;
        }
        SlotState::Small { block } => {
            for p in 0..pages {
                poison(first + p, 1);
            }
            *small_free |= 1 << block;
        }
        SlotState::Empty => {}
    }
    slots[slot] = SlotState::Empty;
    stats.truncates += 1;
    // The TLBs are clean: retired tables whose epoch has passed can be
    // poisoned and reused by the next map.
    if let Err(e) = tables.reclaim() {
        violation(format_args!("reclaim: {e}"));
    }
}

/// Maps a new unit (or units) at empty `slot`, then reads it back through the
/// MMU.
fn map_slot(
    shared: &'static Shared,
    tables: &mut Tables<'_>,
    slots: &mut [SlotState; SLOTS],
    slot: usize,
    free_masks: (&mut u64, &mut u64),
    r: u64,
) {
    let (huge_free, small_free) = free_masks;
    let memmap = &shared.memmap;
    let va = slot_va(slot);
    let (state, pa, len, leaf) = if r & (1 << 32) == 0 && *huge_free != 0 {
        let unit = take_bit(huge_free, r >> 16).expect("a free unit");
        let head = (HUGE_BASE >> PAGE_SHIFT) + unit * UNIT_PAGES;
        allocate(memmap, head, UNIT_PAGES, slot);
        (
            SlotState::Huge { unit },
            HUGE_BASE + unit * BLOCK,
            BLOCK,
            BLOCK,
        )
    } else if *small_free != 0 {
        let block = take_bit(small_free, r >> 16).expect("a free block");
        let first = (SMALL_BASE >> PAGE_SHIFT) + block * SMALL_SLOT_PAGES;
        for p in 0..SMALL_SLOT_PAGES {
            allocate(memmap, first + p, 1, slot);
        }
        let len = SMALL_SLOT_PAGES * PAGE;
        (SlotState::Small { block }, first << PAGE_SHIFT, len, PAGE)
    } else {
        return;
    };
    let req = MapRequest::new(VirtAddr(va), PhysAddr(pa), len, leaf)
        .with_perms(file_perms())
        .with_mem_type(normal());
    // SAFETY: `pa .. pa + len` is the unit(s) hart 0 just took out of its free
    // masks, which get back only units whose truncate freed them (a failed
    // truncate never puts its units back), so no truncate has them marked; they
    // were just allocated to this slot, and `slots[slot]` records the mapping
    // below, so the slot's truncate unmaps them (`SlotUnmapper`) before it
    // frees them. If the map fails, the units stay allocated and out of the
    // masks: never freed. The `broken-no-drain` build breaks this on purpose:
    // its masks also get units whose pins it did not drain, which a walker
    // may still write through as this slot's.
    if let Err(e) = unsafe { tables.map(&req) } {
        violation(format_args!("map slot {slot}: {e}"));
        return;
    }
    slots[slot] = state;
    // The MMU's view: a page of the slot, read through its slot address, holds
    // the new generation (a stale TLB entry from an earlier mapping of the slot
    // would show poison or another unit's generation).
    arch::tables_written();
    let page = (r >> 40) % (len >> PAGE_SHIFT);
    let pfn = (pa >> PAGE_SHIFT) + page;
    let expected = memory::GENERATION[memory::meta_index(unit_head(pfn))].load(Ordering::Relaxed);
    let seen = arch::probe(va + page * PAGE);
    if seen != Some(expected) {
        violation(format_args!(
            "the MMU reads {seen:x?} at slot {slot} page {page}, expected generation {expected}"
        ));
    }
    // And a write through the slot address lands in that page (word 7, which
    // nothing else uses), read back through the identity map.
    let token = 0x5a5a_0000_0000_0000 | r >> 16;
    if !arch::probe_store(va + page * PAGE + 8 * 7, token) {
        violation(format_args!("a write to slot {slot} page {page} faults"));
    }
    // Relaxed: this hart's own store, through another mapping of the same
    // physical word.
    let back = page_word(pfn, 7).load(Ordering::Relaxed);
    if back != token {
        violation(format_args!(
            "wrote {token:#x} at slot {slot} page {page}, PFN {pfn:#x} holds {back:#x}"
        ));
    }
}

/// The head of the unit containing `pfn`.
fn unit_head(pfn: u64) -> u64 {
    if pfn >= HUGE_BASE >> PAGE_SHIFT {
        pfn & !(UNIT_PAGES - 1)
    } else {
        pfn
    }
}

/// CPU 0: the truncater.
fn truncater(shared: &'static Shared, tables: &mut Tables<'_>) -> TruncaterStats {
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let mut slots = [SlotState::Empty; SLOTS];
    let mut huge_free: u64 = (1 << HUGE_UNITS) - 1;
    let mut small_free: u64 = (1 << SMALL_BLOCKS) - 1;
    let mut stats = TruncaterStats::default();
    for _ in 0..ROUNDS {
        let r = rng.next();
        let slot = (r % SLOTS as u64) as usize;
        let masks = (&mut huge_free, &mut small_free);
        match slots[slot] {
            SlotState::Empty => map_slot(shared, tables, &mut slots, slot, masks, r),
            _ => truncate_slot(shared, tables, &mut slots, slot, masks, &mut stats),
        }
    }
    for slot in 0..SLOTS {
        let masks = (&mut huge_free, &mut small_free);
        truncate_slot(shared, tables, &mut slots, slot, masks, &mut stats);
    }
    stats
}

/// CPUs 1-3: pin, check, write, check again, release, until told to stop.
fn walker(shared: &'static Shared, cpu: u64) {
    let reader = shared
        .epoch
        .reader()
        .expect("a reader slot per walking CPU");
    // Relaxed: published before this hart read SHARED (SHARED_READY).
    let root = PhysAddr((SATP.load(Ordering::Relaxed) & ((1 << 44) - 1)) << 12);
    // SAFETY: `root` is the root of hart 0's `tables`, the only builder of
    // these tables; every table it detaches is retired through its hook,
    // `KernelRetire`, of domain `KernelTables`, and nothing else frees a
    // table reachable from `root`.
    let walker = unsafe { Walker::<Format, _, KernelTables>::new_in(&IDENTITY, root) };
    let gup = Gup::new(walker, &shared.memmap);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ cpu.wrapping_mul(0x1234_5678_9abc_def1) | 1);
    let mut out = [Pfn(0); MAX_WALK];
    let mut seen = [0u64; MAX_WALK];
    let (mut pins, mut calls, mut changed, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let mut probe_faults = 0u64;
    let slots_end = slot_va(SLOTS);
    let mut token = cpu << 56;
    // Relaxed: a stop flag; nothing is published through it.
    while !STOP.load(Ordering::Relaxed) {
        let r = rng.next();
        let slot = (r % SLOTS as u64) as usize;
        // Mostly where page-mapped slots have pages; sometimes anywhere.
        let page = if (r >> 8) & 3 != 0 {
            (r >> 12) % (2 * SMALL_SLOT_PAGES)
        } else {
            (r >> 12) % UNIT_PAGES
        };
        let pages = 1 + (r >> 32) % MAX_WALK as u64;
        let start = slot_va(slot) + (page << PAGE_SHIFT);
        let len = (pages << PAGE_SHIFT).min(slots_end - start);
        calls += 1;
        let flags = GupFlags::PIN | GupFlags::WRITE;
        let taken = match gup.get_pages(&reader, VirtAddr(start), len, flags, &mut out) {
            Ok(taken) => taken,
            Err(e) => {
                violation(format_args!("GUP refused a valid range: {e}"));
                continue;
            }
        };
        match taken.stop {
            Stop::Complete | Stop::Absent { .. } | Stop::OutputFull { .. } => {}
            Stop::Changed { .. } => changed += 1,
            Stop::Refused {
                kind: GetErrorKind::Truncating | GetErrorKind::Free,
                ..
            } => refused += 1,
            other => violation(format_args!("unexpected stop: {other}")),
        }
        let held = &out[..taken.pages];
        token += 1;
        for (i, &pfn) in held.iter().enumerate() {
            let through = (start + ((i as u64) << PAGE_SHIFT) - SLOT_BASE) / BLOCK;
            let head = unit_head(pfn.0);
            let index = memory::meta_index(head);
            // Relaxed (three loads): ordered after the allocation's writes by
            // the Acquire get that pinned the page.
            let generation = memory::GENERATION[index].load(Ordering::Relaxed);
            let owner = memory::OWNER[index].load(Ordering::Relaxed);
            let contents = page_word(pfn.0, 0).load(Ordering::Relaxed);
            if contents == POISON || contents != generation {
                violation(format_args!(
                    "PFN {:#x} pinned with contents {contents:#x}, generation {generation}",
                    pfn.0
                ));
            }
            if owner != through + 1 {
                violation(format_args!(
                    "PFN {:#x} pinned through slot {through} but mapped at slot {}",
                    pfn.0,
                    owner as i64 - 1
                ));
            }
            seen[i] = generation;
            // Relaxed: the write a device would do into a pinned page; read
            // back below by this CPU.
            page_word(pfn.0, cpu as usize).store(token, Ordering::Relaxed);
        }
        // The MMU's view on this CPU, through the slot address of the first
        // page taken: while the pin is held the slot maps that page or (once
        // a truncate unmapped it) nothing. Anything else is a stale
        // translation a missing broadcast TLB invalidation left behind.
        if let Some(&pfn) = held.first() {
            match arch::probe(start) {
                None => probe_faults += 1,
                Some(v) if v == seen[0] => {}
                Some(v) => violation(format_args!(
                    "the MMU reads {v:#x} at {start:#x}, where PFN {:#x} (generation {}) is pinned",
                    pfn.0, seen[0]
                )),
            }
        }
        // Hold the pins a little, so truncates find them busy and drain.
        for _ in 0..(r >> 54) {
            core::hint::spin_loop();
        }
        for (i, &pfn) in held.iter().enumerate() {
            let index = memory::meta_index(unit_head(pfn.0));
            // Relaxed: while the pin is held nobody else may write these.
            let generation = memory::GENERATION[index].load(Ordering::Relaxed);
            let contents = page_word(pfn.0, 0).load(Ordering::Relaxed);
            let mine = page_word(pfn.0, cpu as usize).load(Ordering::Relaxed);
            if generation != seen[i] || contents != seen[i] || mine != token {
                violation(format_args!(
                    "PFN {:#x} changed while pinned: generation {} -> {generation}, \
                     contents {contents:#x}, token {mine:#x} (wrote {token:#x})",
                    pfn.0, seen[i]
                ));
            }
        }
        // SAFETY: `held` is what this walker's `get_pages` call above pinned
        // (`taken.pages` PFNs, one `Hold::Pin` each, into its own `out`), not
        // released yet: this is the one release of those pins.
        if let Err(e) = unsafe { release(&shared.memmap, held, Hold::Pin) } {
            violation(format_args!("release: {e}"));
        }
        pins += held.len() as u64;
    }
    // Relaxed: published to CPU 0 by the Release increment of DONE.
    PINS.fetch_add(pins, Ordering::Relaxed);
    CALLS.fetch_add(calls, Ordering::Relaxed);
    CHANGED.fetch_add(changed, Ordering::Relaxed);
    REFUSED.fetch_add(refused, Ordering::Relaxed);
    PROBE_FAULTS.fetch_add(probe_faults, Ordering::Relaxed);
}

/// Stops the boot before the MMU is on (no UART lock: exclusives on
/// Device memory are not to be relied on).
fn fail_early(what: &str) -> ! {
    let _ = core::fmt::Write::write_fmt(
        &mut arch::Uart,
        format_args!("pagepin-qemu FAILED: {what}\n"),
    );
    arch::exit(4)
}

/// Hart 0's entry from `_start`, in S-mode with satp = 0 (bare).
#[unsafe(no_mangle)]
extern "C" fn kernel_main() -> ! {
    // SAFETY: hart 0 alone writes; nothing has read `SHARED` and nothing will
    // before `SHARED_READY` is set below.
    unsafe {
        (*SHARED.0.get()).write(Shared {
            memmap: KernelMemMap::new(WaitTable::new()),
            // Claims the brand with an atomic RMW: fine with satp bare (RAM's
            // PMAs support atomics), unlike on aarch64 with its MMU off.
            epoch: Epoch::new().expect("the first and only epoch of brand KernelTables"),
        });
    }
    // SAFETY: just written, and never written again.
    let shared: &'static Shared = unsafe { (*SHARED.0.get()).assume_init_ref() };

    // The frame pool: every frame of the static table area.
    let mut frames = [PhysAddr(0); TABLE_FRAMES];
    for (slot, frame) in frames.iter_mut().zip(TABLES.iter()) {
        *slot = PhysAddr(frame as *const _ as u64);
    }
    let retire = KernelRetire::new(&shared.epoch);
    // SAFETY: the frames are the `TABLES` static's, each listed once, memory
    // nothing else uses: only this builder writes them (as page tables), and
    // the MMUs and the walkers read them only as the tables it publishes. No
    // other pool or builder exists.
    let pool = unsafe { FramePool::new(&mut frames) };
    let Ok(mut tables) = Tables::new(&IDENTITY, pool, retire) else {
        fail_early("TableBuilder::new");
    };
    let kernel_rwx =
        Perms::READ | Perms::WRITE | Perms::EXEC | Perms::ACCESSED | Perms::DIRTY | Perms::GLOBAL;
    let maps = [
        // The test device, CLINT, PLIC and UART: I/O by their PMAs.
        MapRequest::new(
            VirtAddr(DEVICE_BASE),
            PhysAddr(DEVICE_BASE),
            DEVICE_LEN,
            DEVICE_LEAF,
        )
        .with_perms(Perms::READ | Perms::WRITE | Perms::ACCESSED | Perms::DIRTY | Perms::GLOBAL),
        // All of RAM (kernel image, stacks, tables, data pages).
        MapRequest::new(
            VirtAddr(RAM_BASE),
            PhysAddr(RAM_BASE),
            RAM_END - RAM_BASE,
            BLOCK,
        )
        .with_perms(kernel_rwx)
        .with_mem_type(normal()),
    ];
    for req in &maps {
        // SAFETY: the kernel's identity (direct) map, never unmapped: the
        // devices are the kernel's alone, and so is all of RAM for the whole
        // run. Its data pages go to the file and back (`allocate`, a
        // truncate's free) but never to an owner outside the kernel, and
        // GUP-fast never walks these VAs (the walkers pin slot VAs only), so
        // through this mapping nobody pins a freed page; no truncate exists
        // yet.
        if unsafe { tables.map(req) }.is_err() {
            fail_early("identity map");
        }
    }
    let root = tables.root();
    let satp = Format::satp(root, 0);
    // Relaxed: read by the walkers after SHARED_READY (Release below).
    SATP.store(satp, Ordering::Relaxed);
    arch::tables_written();
    // SAFETY: the tables identity-map all of RAM (code, data, stacks, tables)
    // and the devices, in the format satp's MODE names.
    if !unsafe { arch::enable_satp(satp) } {
        fail_early("the hart does not take this satp mode");
    }
    println!(
        "pagepin-qemu: satp on, {} ({} levels, {} KiB pages, {} KiB blocks), root {:#x}",
        Format::NAME,
        Format::GEOMETRY.depth(),
        PAGE >> 10,
        BLOCK >> 10,
        root.0
    );
    // Release: publishes `SHARED` and `SATP` to the walkers.
    SHARED_READY.store(true, Ordering::Release);
    let clock = CounterClock;
    let start = clock.now_ns();
    // Acquire: pairs with each walker's Release increment.
    while STARTED.load(Ordering::Acquire) < WALKERS as u32 {
        if clock.now_ns() - start > 10_000_000_000 {
            println!("pagepin-qemu FAILED: the other harts did not start");
            arch::exit(4);
        }
        core::hint::spin_loop();
    }
    println!(
        "pagepin-qemu: {CPUS} CPUs up; {ROUNDS} rounds of map/truncate against {WALKERS} pinning CPUs"
    );

    let stats = truncater(shared, &mut tables);

    // Relaxed: the walkers only poll it.
    STOP.store(true, Ordering::Relaxed);
    let stop_at = clock.now_ns();
    // Acquire: pairs with each walker's Release increment after its counters.
    while DONE.load(Ordering::Acquire) < WALKERS as u32 {
        if clock.now_ns() - stop_at > 10_000_000_000 {
            violation(format_args!("a walker did not stop"));
            break;
        }
        core::hint::spin_loop();
    }
    // Every page idle and unmarked at the end.
    for (i, meta) in memory::METAS.iter().enumerate() {
        let w = meta.load();
        if !w.is_idle() || w.is_truncating() {
            violation(format_args!("page {i} ends as {w:?}"));
        }
    }
    let elapsed_ms = (clock.now_ns() - start) / 1_000_000;
    let retire = tables.retire_hook();
    // Relaxed: the walkers' counters were published by DONE (Acquire above).
    let (pins, violations) = (
        PINS.load(Ordering::Relaxed),
        VIOLATIONS.load(Ordering::Relaxed),
    );
    println!(
        "pagepin-qemu: {} ms; GUP calls {}, stopped by a changed entry {}, refused (truncating/free) {}; \
         pinned slots already unmapped in the MMU {}; \
         truncates that waited for pins {}; remote fences (acknowledged IPI rounds) {}; \
         page tables retired {}, poisoned and reused {}",
        elapsed_ms,
        CALLS.load(Ordering::Relaxed),
        CHANGED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
        PROBE_FAULTS.load(Ordering::Relaxed),
        stats.waited,
        arch::SHOOTDOWNS.load(Ordering::Relaxed),
        retire.retired,
        retire.reused,
    );
    if violations != 0 {
        println!("pagepin-qemu FAILED: {violations} violations");
    }
    println!(
        "pagepin-qemu arch=riscv64 cpus={CPUS} mode={MODE} levels={} rounds={ROUNDS} pins={pins} truncates={} violations={violations}",
        Format::GEOMETRY.depth(),
        stats.truncates
    );
    arch::exit(if violations == 0 { 0 } else { 1 })
}

/// Harts 1-3, from `_start` in S-mode with satp = 0: wait for hart 0's
/// tables, translate through them, walk.
#[unsafe(no_mangle)]
extern "C" fn secondary_main(hart: u64) -> ! {
    let shared = shared();
    // Relaxed: published by SHARED_READY, which `shared()` Acquire-loaded.
    let satp = SATP.load(Ordering::Relaxed);
    // SAFETY: hart 0 built these tables to identity-map this kernel and took
    // the mode itself.
    if !unsafe { arch::enable_satp(satp) } {
        violation(format_args!("hart {hart} does not take satp {satp:#x}"));
    }
    // Release: hart 0 counts the started walkers.
    STARTED.fetch_add(1, Ordering::Release);
    walker(shared, hart);
    // Release: publishes this walker's counters to hart 0.
    DONE.fetch_add(1, Ordering::Release);
    arch::halt()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!(
        "pagepin-qemu FAILED: panic on CPU {}: {info}",
        arch::cpu_index()
    );
    arch::exit(2)
}

/// The poison a retired page table is filled with before reuse: at the last
/// level a valid page of the first block-sized unit, above it a table pointer
/// into data memory; either way the most misleading thing a walk that still
/// read the table could find.
fn poison_entry() -> u64 {
    let leaf = LeafEntry {
        pa: PhysAddr(HUGE_BASE),
        perms: file_perms(),
        mem_type: normal(),
    };
    Format::encode_leaf(&leaf, Format::GEOMETRY.depth() - 1).unwrap_or(!0)
}
