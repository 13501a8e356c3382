//! The pagepin test kernel for QEMU's aarch64 `virt` machine (4 CPUs).
//!
//! It runs pagepin's protocol on the **live MMU tables**: the tables the CPUs
//! translate through are built and edited by pagepin's `TableBuilder`, walked
//! by GUP-fast on three CPUs while the fourth truncates.
//!
//! # What it does
//!
//! 1. CPU 0 (MMU off) builds the tables with `TableBuilder` in a static frame
//!    pool: an identity map of RAM (Normal write-back, blocks) and of the GIC
//!    and the PL011 UART (Device-nGnRnE), then turns the MMU on (MAIR, TCR for
//!    the granule and VA size, TTBR0, SCTLR). The same root table also holds
//!    the "file": [`SLOTS`] virtual slots of one block each at [`SLOT_BASE`].
//! 2. CPU 0 starts CPUs 1-3 with PSCI `CPU_ON`; each turns its MMU on with the
//!    same tables and becomes a walker.
//! 3. The walkers pin random ranges of the file with `Gup::get_pages`
//!    (`PIN | WRITE`), then, through the identity map, check and **write** every
//!    pinned page: it holds its allocation's generation (never poison), its
//!    unit is mapped at the slot it was pinned through, a token the walker
//!    writes stays until release, and the generation does not change until the
//!    release. They also read the first pinned page through its slot address
//!    (the MMU's view on that CPU): it must be that page or no translation
//!    (a fault, caught by the vectors: [`arch::probe`]).
//! 4. CPU 0 runs [`ROUNDS`] operations on random slots: an empty slot gets a
//!    newly allocated unit (one block over a block-sized unit, or
//!    [`SMALL_SLOT_PAGES`] pages over single-page units) and is mapped, then
//!    read back *through the MMU* at its slot address; a mapped slot is
//!    truncated with the typestate API: `Truncate::mark` → `unmap` (the
//!    [`SlotUnmapper`]: `TableBuilder::unmap`, then `TLBI VAE1IS` per leaf,
//!    `DSB ISH`, `ISB`; the slot reads its contents through the MMU before and
//!    faults after) → `try_drain`/`drain` (a `SpinWaiter` and a clock from
//!    CNTVCT_EL0/CNTFRQ_EL0) → `free`; the data pages are then poisoned and
//!    reused, and the page tables the unmap detached are retired, poisoned
//!    once safe, and reused by later maps.
//! 5. CPU 0 stops the walkers, checks every page is idle and unmarked, and
//!    prints, last,
//!    `pagepin-qemu arch=aarch64 mode=race cpus=4 granule=<4k|64k> levels=<n> checks=<n> mismatches=0 violations=<n>`
//!    (`checks`: base pages pinned and checked by the walkers; the line
//!    before it gives CPU 0's rounds and the slots truncated), then exits QEMU through PSCI SYSTEM_OFF
//!    (status 0) if there was no violation, or prints a failure marker first and
//!    exits with status 1 through semihosting. Any exception prints ESR, FAR and
//!    ELR and exits with status 3.
//!
//! # The walk guard: an epoch, not interrupts-off
//!
//! GUP-fast reads page-table pages that CPU 0 may detach and reuse. On aarch64
//! "interrupts off while walking" protects nothing by itself: the broadcast
//! `TLBI ... IS` that completes an unmap interrupts nobody, so the freer learns
//! nothing about walks in progress. It would take an acknowledged SGI round
//! (GICv3, ICC_SGI1R_EL1) before every table reuse, i.e. an interrupt
//! controller driver, interrupt handlers and vectors that return. The epoch
//! guard (`pagepin::guard::Epoch`, one `EpochReader` per walking CPU) needs
//! none of that, works the same on the host (`examples/pin_race.rs`) and makes
//! table reuse wait only for the walks that could have seen the table:
//! [`KernelRetire`] retires a detached table with the epoch of its detachment
//! and poisons and reuses it once `Epoch::is_safe`. The hardware walkers are
//! kept off a retired table by the TLB invalidation, which completes (DSB ISH)
//! before any retired table is poisoned.
//!
//! The epoch's brand, [`KernelTables`], is the domain of both halves: of
//! [`KernelRetire`] and of the walkers' readers. The walkers' `Walker` and
//! `Gup` carry that domain too, so their GUP-fast takes a reader of this
//! epoch and nothing else: a walk under another guard does not compile.
//!
//! QEMU's TCG does not model Arm's weak memory ordering: a run here shows the
//! protocol works on the architecture's MMU, TLB maintenance and PSCI, not that
//! its orderings are minimal (the loom models in `tests/` do that).
//!
//! # Broken builds
//!
//! `--features broken-no-drain` frees, poisons and reuses a truncated unit
//! without waiting for its pins when `try_drain` finds it busy;
//! `--features broken-early-table-reuse` poisons and reuses retired page
//! tables without waiting for the epoch; `--features broken-no-tlbi` skips the
//! TLB invalidation after unmapping. `run.sh 4k --broken FEATURE --runs 20`
//! boots one repeatedly and reports how often the checks catch it.
//!
//! `--broken broken-no-recheck` and `--broken broken-no-unit-recheck` make the
//! walkers call pagepin's broken twin of GUP-fast instead
//! (`pagepin::gup::broken::get_pages`, the library's `broken-twins` feature),
//! without its entry re-check or its unit-identity re-check, with the
//! kernel's `stretch` feature,
//! which makes a walking CPU's `MemoryMap::unit` spin 10 ms (between
//! GUP-fast's entry load and its get) on every lookup of a block-sized unit
//! and on every 32nd other call. The unit re-check matters
//! because CPU 0 also truncates a block-mapped slot and maps the same
//! 2 MiB (512 MiB) unit at the same slot again, split into single-page units
//! or merged back, with the same block entry; each walker checks that every
//! page it holds is pinned on the meta that counts for it now
//! (`memory::counting_meta`), DESIGN.md's invariant 7. A stretch boot stops
//! at its first violation.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod arch;
mod layout;
mod memory;
mod platform;

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pagepin::arch::aarch64::{Shareability, stage1_mem_type};
use pagepin::guard::{Epoch, WalkGuard};
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, Pfn};
use pagepin::meta::{GetErrorKind, Hold};
use pagepin::table::{
    FramePool, LeafEntry, MapRequest, MemType, PagingFormat, Perms, PhysAddr, TableBuilder,
    UnmapError, VirtAddr, Walker,
};
use pagepin::truncate::{Extent, Failed, Truncate, Unmapper, Wait};
use pagepin::wait::{Clock, SpinWaiter, WaitTable};

use arch::BootContext;
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
const SLOT_BASE: u64 = 0x100_0000_0000;
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

/// The test's shared state, written once by CPU 0 (once its MMU is on) before
/// the other CPUs start.
struct Shared {
    memmap: KernelMemMap,
    /// The one epoch of brand [`KernelTables`]: the walkers' readers, and the
    /// retire hook's grace periods.
    epoch: Epoch<KernelTables, WALKERS>,
}

/// A static written once, by CPU 0, before any other CPU reads it.
struct Once<T>(UnsafeCell<MaybeUninit<T>>);

// SAFETY: CPU 0 writes the value exactly once, before it publishes it (the
// Release store of `SHARED_READY`, or PSCI CPU_ON for the boot contexts); every
// other access is a shared read after that publication.
unsafe impl<T: Sync> Sync for Once<T> {}

static SHARED: Once<Shared> = Once(UnsafeCell::new(MaybeUninit::uninit()));
static SHARED_READY: AtomicBool = AtomicBool::new(false);
static BOOT: Once<[BootContext; CPUS as usize]> = Once(UnsafeCell::new(MaybeUninit::uninit()));
/// The root table (TTBR0).
static ROOT: AtomicU64 = AtomicU64::new(0);

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
    if cfg!(feature = "stretch") {
        // A broken-build boot: detected; stop here (a pin on the wrong meta
        // can leave CPU 0 waiting for ever).
        println!("pagepin-qemu FAILED: violation in a stretch (broken-build) boot");
        arch::semihosting_exit(1);
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
fn file_perms() -> Perms {
    Perms::READ | Perms::WRITE | Perms::ACCESSED | Perms::GLOBAL
}

fn normal() -> MemType {
    stage1_mem_type(arch::ATTR_NORMAL, Shareability::Inner)
}

/// The virtual address of slot `slot`.
fn slot_va(slot: usize) -> u64 {
    SLOT_BASE + slot as u64 * BLOCK
}

/// What a slot maps.
#[derive(Clone, Copy)]
enum SlotState {
    Empty,
    /// One block over block-sized unit `unit`; with `split`, the block's
    /// pages are single-page units (the memory map's `SPLIT`), mapped by the
    /// same block entry.
    Huge {
        unit: u64,
        split: bool,
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
            SlotState::Huge { unit, .. } => Some((
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

type Tables<'a> = TableBuilder<'a, Format, IdentityTables, KernelRetire>;

/// The kernel's [`Unmapper`]: its reverse map is the slot table (which slot
/// maps which PFNs); it clears the leaves through the builder (detaching and
/// retiring the tables that become empty) and shoots the TLBs down on every
/// CPU before it returns.
struct SlotUnmapper<'t, 'a> {
    tables: &'t mut Tables<'a>,
    slots: &'t [SlotState; SLOTS],
}

// SAFETY: the file's pages are mapped at their slots only (`slots` is the
// reverse map: CPU 0 maps a unit at a slot and records it there, and nothing
// else maps file pages at other VAs), so `unmap_extent` clears, through the
// builder, every slot leaf over a page of the extent, then (`flush_tlb_range`)
// `TLBI VAE1IS` per leaf and `DSB ISH`: when it returns `Ok`, no entry the
// walkers or the MMUs can reach maps a page of the extent at a slot, and no
// CPU's TLB still translates a slot VA to one. (The identity map of RAM is
// the kernel's direct map, which the promise excludes.) The `broken-no-tlbi`
// build breaks the promise on purpose: it skips the invalidation.
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
            if cfg!(feature = "broken-no-tlbi") {
                // BROKEN: no TLB invalidation, only the barriers.
                arch::tables_written();
            } else {
                arch::flush_tlb_range(va, len, leaf);
            }
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
    /// Block-sized units split or merged and mapped again at their slot.
    remaps: u64,
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
        SlotState::Huge { unit, split } => {
            if split {
                for p in 0..pages {
                    poison(first + p, 1);
                }
            } else {
                poison(first, pages);
            }
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
        let split = (r >> 33) & 1 != 0;
        allocate_huge(memmap, unit, split, slot);
        (
            SlotState::Huge { unit, split },
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
    // SAFETY: `pa .. pa + len` is the unit(s) CPU 0 just took out of its free
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
}

/// The head of the unit containing `pfn` (now).
fn unit_head(pfn: u64) -> u64 {
    memory::unit_of(pfn).0
}

/// Allocates block-sized unit `unit` for `slot`: merged (one unit) or split
/// into single-page units. The unit is free (CPU 0 took it from the free
/// mask), so flipping its split flag is allowed.
fn allocate_huge(memmap: &KernelMemMap, unit: u64, split: bool, slot: usize) {
    let head = (HUGE_BASE >> PAGE_SHIFT) + unit * UNIT_PAGES;
    // Relaxed: published by the Release `allocate` calls below (see
    // `memory::unit_of`).
    memory::SPLIT[unit as usize].store(split, Ordering::Relaxed);
    if split {
        for p in 0..UNIT_PAGES {
            allocate(memmap, head + p, 1, slot);
        }
    } else {
        allocate(memmap, head, UNIT_PAGES, slot);
    }
}

/// Maps block-sized unit `unit` (free, taken out of `huge_free` here) at
/// empty `slot` again, split or merged: the same block entry as before, over
/// units of another size (what GUP-fast's unit re-check is for).
fn remap_huge(
    shared: &'static Shared,
    tables: &mut Tables<'_>,
    slots: &mut [SlotState; SLOTS],
    slot: usize,
    huge_free: &mut u64,
    unit: u64,
    split: bool,
) {
    if *huge_free & (1 << unit) == 0 {
        return;
    }
    *huge_free &= !(1 << unit);
    allocate_huge(&shared.memmap, unit, split, slot);
    let req = MapRequest::new(
        VirtAddr(slot_va(slot)),
        PhysAddr(HUGE_BASE + unit * BLOCK),
        BLOCK,
        BLOCK,
    )
    .with_perms(file_perms())
    .with_mem_type(normal());
    // SAFETY: as in `map_slot`: the unit was in `huge_free` (its truncate
    // freed it; checked above), CPU 0 allocated it again for this slot, and
    // `slots[slot]` records it below for the slot's truncate to unmap before
    // it frees it (a failed map leaves it allocated, never freed).
    // `broken-no-drain` breaks this on purpose, as there.
    if let Err(e) = unsafe { tables.map(&req) } {
        violation(format_args!("remap slot {slot}: {e}"));
        return;
    }
    arch::tables_written();
    slots[slot] = SlotState::Huge { unit, split };
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
            SlotState::Huge { unit, split } if (r >> 40) & 1 != 0 => {
                // Truncate, then split or merge the unit and map it at the
                // same slot again with the same block entry.
                truncate_slot(shared, tables, &mut slots, slot, masks, &mut stats);
                remap_huge(
                    shared,
                    tables,
                    &mut slots,
                    slot,
                    &mut huge_free,
                    unit,
                    !split,
                );
                stats.remaps += 1;
            }
            _ => truncate_slot(shared, tables, &mut slots, slot, masks, &mut stats),
        }
    }
    for slot in 0..SLOTS {
        let masks = (&mut huge_free, &mut small_free);
        truncate_slot(shared, tables, &mut slots, slot, masks, &mut stats);
    }
    stats
}

/// The walkers' GUP-fast: pagepin's, or in a broken build its broken twin
/// without the entry re-check (`broken-no-recheck`) or the unit re-check
/// (`broken-no-unit-recheck`), called by name.
fn get_pages<G: WalkGuard<Domain = KernelTables>>(
    gup: &Gup<'_, Format, IdentityTables, KernelMemMap, KernelTables>,
    guard: &G,
    start: VirtAddr,
    len: u64,
    flags: GupFlags,
    out: &mut [Pfn],
) -> Result<pagepin::gup::Taken, pagepin::gup::GupError> {
    #[cfg(feature = "broken-no-recheck")]
    let taken = pagepin::gup::broken::get_pages(
        gup,
        pagepin::gup::broken::Dropped::Recheck,
        guard,
        start,
        len,
        flags,
        out,
    );
    #[cfg(feature = "broken-no-unit-recheck")]
    let taken = pagepin::gup::broken::get_pages(
        gup,
        pagepin::gup::broken::Dropped::UnitRecheck,
        guard,
        start,
        len,
        flags,
        out,
    );
    #[cfg(not(any(feature = "broken-no-recheck", feature = "broken-no-unit-recheck")))]
    let taken = gup.get_pages(guard, start, len, flags, out);
    taken
}

/// CPUs 1-3: pin, check, write, check again, release, until told to stop.
fn walker(shared: &'static Shared, cpu: u64) {
    let reader = shared
        .epoch
        .reader()
        .expect("a reader slot per walking CPU");
    // Relaxed: published before this CPU started (SHARED_READY).
    let root = PhysAddr(ROOT.load(Ordering::Relaxed));
    // SAFETY: `root` is the root of CPU 0's `tables`, the only builder of
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
        let taken = match get_pages(&gup, &reader, VirtAddr(start), len, flags, &mut out) {
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
            // Invariant 7: the pin is on the meta that counts for the page
            // now (held pins keep the unit from being split or merged).
            if memory::counting_meta(pfn.0).pins() == 0 {
                violation(format_args!(
                    "PFN {:#x} pinned, but the meta that counts for it (head {:#x}) holds no pin",
                    pfn.0, head
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
    arch::semihosting_exit(4)
}

/// CPU 0's entry from `_start`: MMU off, identity addresses.
#[unsafe(no_mangle)]
extern "C" fn kernel_main() -> ! {
    arch::install_vectors();
    if !arch::granule_supported(PAGE_SHIFT) {
        fail_early("this CPU does not support the granule");
    }

    // The frame pool: every frame of the static table area.
    let mut frames = [PhysAddr(0); TABLE_FRAMES];
    for (slot, frame) in frames.iter_mut().zip(TABLES.iter()) {
        *slot = PhysAddr(frame as *const _ as u64);
    }
    // The hook finds the epoch only when it retires a table (after the MMU is
    // on and `SHARED` is written): see `memory::epoch`.
    let retire = KernelRetire::new();
    // SAFETY: the frames are the `TABLES` static's, each listed once, memory
    // nothing else uses: only this builder writes them (as page tables), and
    // the MMUs and the walkers read them only as the tables it publishes. No
    // other pool or builder exists.
    let pool = unsafe { FramePool::new(&mut frames) };
    let Ok(mut tables) = Tables::new(&IDENTITY, pool, retire) else {
        fail_early("TableBuilder::new");
    };
    let kernel_rwx = Perms::READ | Perms::WRITE | Perms::EXEC | Perms::ACCESSED | Perms::GLOBAL;
    let device = stage1_mem_type(arch::ATTR_DEVICE, Shareability::Non);
    let maps = [
        // GICv3 distributor and redistributors, PL011 UART: Device-nGnRnE.
        MapRequest::new(
            VirtAddr(DEVICE_BASE),
            PhysAddr(DEVICE_BASE),
            DEVICE_LEN,
            DEVICE_LEAF,
        )
        .with_perms(Perms::READ | Perms::WRITE | Perms::ACCESSED | Perms::GLOBAL)
        .with_mem_type(device),
        // All of RAM (kernel image, stacks, tables, data pages): Normal.
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
        // UART and GIC are the kernel's alone, and so is all of RAM for the
        // whole run. Its data pages go to the file and back (`allocate`, a
        // truncate's free) but never to an owner outside the kernel, and
        // GUP-fast never walks these VAs (the walkers pin slot VAs only), so
        // through this mapping nobody pins a freed page; no truncate exists
        // yet.
        if unsafe { tables.map(req) }.is_err() {
            fail_early("identity map");
        }
    }
    let root = tables.root();
    // Relaxed: read by the walkers after SHARED_READY (Release below).
    ROOT.store(root.0, Ordering::Relaxed);
    let tcr = arch::tcr(PAGE_SHIFT, VA_BITS);
    // SAFETY: the tables identity-map all of RAM (code, data, stacks, tables)
    // as Normal memory and the UART and GIC as Device memory, in the format
    // `tcr` describes (granule and VA size of `Format`).
    let sctlr = unsafe { arch::enable_mmu(arch::MAIR, tcr, root.0) };

    println!(
        "pagepin-qemu: MMU on, {} ({} levels, {} KiB pages, {} KiB blocks), root {:#x}",
        Format::NAME,
        Format::DEPTH,
        PAGE >> 10,
        BLOCK >> 10,
        root.0
    );
    // The epoch only now, with the MMU on: `Epoch::new` claims the brand with
    // an exclusive RMW (see `memory::epoch`).
    let epoch = Epoch::new().expect("the first and only epoch of brand KernelTables");
    // SAFETY: CPU 0 alone runs; nothing has read `SHARED` and nothing will
    // before `SHARED_READY` is set below.
    unsafe {
        (*SHARED.0.get()).write(Shared {
            memmap: KernelMemMap::new(WaitTable::new()),
            epoch,
        });
    }
    // SAFETY: just written, and never written again.
    let shared: &'static Shared = unsafe { (*SHARED.0.get()).assume_init_ref() };
    // Release: publishes `SHARED` and `ROOT` to the walkers.
    SHARED_READY.store(true, Ordering::Release);

    // Boot contexts: written before CPU_ON and cleaned to memory, since the
    // secondaries read them with their MMU (and caches) still off.
    let boot = BOOT.0.get();
    let mut contexts = [BootContext {
        stack_top: 0,
        mair: arch::MAIR,
        tcr,
        ttbr0: root.0,
        sctlr,
        vbar: arch::vbar(),
        cpu: 0,
    }; CPUS as usize];
    for (cpu, ctx) in contexts.iter_mut().enumerate() {
        ctx.cpu = cpu as u64;
        ctx.stack_top = arch::stack_top(cpu as u64);
    }
    // SAFETY: no other CPU runs yet; they read `BOOT` only after CPU_ON.
    unsafe { (*boot).write(contexts) };
    arch::clean_to_poc(boot as u64, core::mem::size_of_val(&contexts) as u64);
    for cpu in 1..CPUS {
        // SAFETY: written above; a shared reference to one element.
        let ctx = unsafe { &(*boot).assume_init_ref()[cpu as usize] };
        let status = arch::cpu_on(cpu, arch::secondary_entry_pa(), ctx as *const _ as u64);
        if status != 0 {
            println!("pagepin-qemu FAILED: PSCI CPU_ON({cpu}) returned {status}");
            arch::semihosting_exit(4);
        }
    }
    let clock = CounterClock;
    let start = clock.now_ns();
    // Acquire: pairs with each walker's Release increment.
    while STARTED.load(Ordering::Acquire) < WALKERS as u32 {
        if clock.now_ns() - start > 10_000_000_000 {
            println!("pagepin-qemu FAILED: the secondary CPUs did not start");
            arch::semihosting_exit(4);
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
         truncates that waited for pins {}; units split or merged and remapped {}; page tables retired {}, poisoned and reused {}",
        elapsed_ms,
        CALLS.load(Ordering::Relaxed),
        CHANGED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
        PROBE_FAULTS.load(Ordering::Relaxed),
        stats.waited,
        stats.remaps,
        retire.retired,
        retire.reused,
    );
    if violations != 0 {
        println!("pagepin-qemu FAILED: {violations} violations");
    }
    println!(
        "pagepin-qemu: rounds={ROUNDS} pins={pins} truncates={}",
        stats.truncates
    );
    // checks: the pinned pages the walkers checked (each one's contents,
    // generation, owner and token); the race has no MMU comparison, so no
    // mismatches.
    println!(
        "pagepin-qemu arch=aarch64 mode=race cpus={CPUS} granule={GRANULE} levels={} checks={pins} mismatches=0 violations={violations}",
        Format::DEPTH,
    );
    if violations == 0 {
        arch::system_off()
    } else {
        arch::semihosting_exit(1)
    }
}

/// CPUs 1-3, from `secondary_entry` with the MMU on.
#[unsafe(no_mangle)]
extern "C" fn secondary_main(ctx: &'static BootContext) -> ! {
    let shared = shared();
    // Release: CPU 0 counts the started walkers.
    STARTED.fetch_add(1, Ordering::Release);
    walker(shared, ctx.cpu);
    // Release: publishes this walker's counters to CPU 0.
    DONE.fetch_add(1, Ordering::Release);
    arch::halt()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!(
        "pagepin-qemu FAILED: panic on CPU {}: {info}",
        arch::cpu_index()
    );
    arch::semihosting_exit(2)
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
    Format::encode_leaf(&leaf, Format::DEPTH - 1).unwrap_or(!0)
}
