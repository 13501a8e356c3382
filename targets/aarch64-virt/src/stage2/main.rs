//! pagepin's stage 2 on the real MMU model (issue 16, part 2): a hypervisor
//! at EL2 on QEMU `virt` (`virtualization=on`, `-cpu max`, 4 CPUs) runs a
//! guest at EL1 under stage-2 tables built by pagepin, pins guest memory
//! through the live stage 2 with GUP-fast for a "device", and balloons guest
//! memory out and back in with the truncate typestate API and leases, while
//! the guest touches that memory.
//!
//! # The VM
//!
//! Format [`Stage2G4K40`]: 4 KiB granule, 40-bit IPAs, three levels starting
//! at Arm level 1 with **two concatenated tables** (1024 entries, an 8 KiB
//! root aligned to 8 KiB, built with `TableBuilder::with_root`); VTCR_EL2 says
//! the same (T0SZ = 24, SL0 = 1), VTTBR_EL2 = root | VMID 1, HCR_EL2.VM = 1.
//! The IPA space:
//!
//! - the guest's code page and the control page at IPA = PA (near 1 GiB,
//!   root table 0), read-only (the code page executable);
//! - guest RAM: [`CHUNKS`] chunks of 2 MiB from [`IPA_RAM`] (root index 513,
//!   in the *second* concatenated table). A chunk is backed by one 2 MiB
//!   block of host memory, either as one 2 MiB unit mapped by one stage-2
//!   block entry ("huge") or split into single-page units of which the first
//!   [`SMALL_PAGES`] are mapped by 4 KiB page entries ("small");
//! - probe mappings (random 1 GiB blocks, 2 MiB blocks and pages, random
//!   S2AP, AF, XN, MemAttr and shareability, output anywhere below 2^40,
//!   some on both sides of the concatenation boundary 0x80_0000_0000 and at
//!   the ends of the IPA space) that nothing accesses: they are there for the
//!   `AT` comparison.
//!
//! Every data page of guest RAM holds, in word 0, its IPA tag: the IPA it
//! is mapped at, with the low 12 bits the low bits of its unit's generation;
//! words 1-2 are the two vCPUs' tokens, word 3 the device's token.
//!
//! # The CPUs
//!
//! - **CPU 0, the hypervisor's balloon**: [`ROUNDS`] times it picks a chunk;
//!   an empty one is populated with a fresh host block (new generation, IPA
//!   tags written, `PageMeta::allocate`, stage-2 map); a mapped one is
//!   ballooned out: `Truncate::mark` its PFN extent → `unmap` through
//!   pagepin's `TableUnmapper` whose TLB hook does `DSB ISHST`, `TLBI
//!   IPAS2E1IS` per leaf, `DSB ISH`, `TLBI VMALLE1IS`, `DSB ISH`, `ISB` (one
//!   `TLBI VMALLS12E1IS` for more than 64 leaves) → `drain_with_leases`
//!   (revoking the device's lease if it overlaps) → `free` → poison → and,
//!   half the time, populated again at once with another block. After each
//!   operation it compares pagepin's walk with the MMU's for a sample of
//!   IPAs (below). Page tables the unmap detaches go to an `EpochRetire` and
//!   are reused after the device's epoch allows.
//! - **CPU 1, the device**: pins random guest-physical ranges with
//!   `Gup::get_pages` (`PIN | WRITE`) under an epoch guard, through the live
//!   stage-2 tables; for every page checks it is allocated, pinned on the
//!   meta that counts for it now, that its IPA tag and the hypervisor's record
//!   name the IPA it was pinned through and its generation is the unit's;
//!   writes a token (its DMA) through the identity map, holds, checks that
//!   nothing changed, releases. One call in eight is a **long-term pin under a
//!   lease**: it looks the PFN run up, takes a `LeaseRegistry` lease on it,
//!   pins, and keeps the pages (writing them) until the balloon revokes the
//!   lease (or a long while), then releases and drops the lease.
//! - **CPUs 2 and 3, the guest's two vCPUs** at EL1, stage 1 off (VA = IPA),
//!   loop over guest RAM: for every page the control page says is mapped, load
//!   word 0 and check the IPA tag, store a token. A load or store that takes a
//!   stage-2 fault (a page being ballooned out) traps to EL2 (`guest_trap`),
//!   which checks it is a translation fault in guest RAM, counts it and skips
//!   the instruction. A wrong tag (a stale stage-2 translation to a freed,
//!   poisoned or reused frame) is reported by the guest with `hvc #1`: a
//!   violation. The guest's accesses are what a device's DMA races with.
//!
//! # The MMU as the oracle: `AT S12E1R` / `AT S12E1W`
//!
//! CPU 0 has the VM's VTTBR_EL2/VTCR_EL2/HCR_EL2.VM loaded and EL1's stage 1
//! off (SCTLR_EL1.M = 0), so `AT S12E1R va` translates va = IPA through
//! stage 2 alone, exactly as the guest's accesses do. HCR_EL2.DC = 1 on CPU 0
//! (it never runs the guest) makes the disabled stage 1 Normal write-back, so
//! PAR_EL1.ATTR shows stage 2's memory type (FWB = 0: the less cacheable of
//! the two stages, nibble by nibble; Device wins). For each sampled IPA,
//! pagepin's `Walker::translate` must agree: absent ⇔ a stage-2 translation
//! fault; access flag clear ⇔ an access flag fault; READ ⇔ S12E1R succeeds
//! (else a permission fault), WRITE ⇔ S12E1W succeeds; the PA; the memory type
//! (Device kind, or per-nibble cacheability) and shareability. A difference is
//! a mismatch, printed with the IPA, both answers and the raw entries.
//!
//! The boot ends with
//! `pagepin-qemu arch=aarch64 mode=stage2 cpus=4 granule=4k levels=3 checks=<n> mismatches=<n> violations=<n>`
//! and exits through PSCI SYSTEM_OFF, or with status 1 through semihosting if
//! anything failed.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod el2;
#[path = "../platform.rs"]
mod platform;

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pagepin::arch::aarch64::{Shareability, Stage2G4K40, stage2_mem_type};
use pagepin::guard::{Epoch, EpochRetire, WalkGuard};
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::{GetErrorKind, Hold, PageMeta};
use pagepin::table::{
    DirectMap, Entry, FramePool, LeafSizes, MapError, MapRequest, MemType, PagingFormat, Perms,
    PhysAddr, TableAccess, TableBuilder, VaRange, VirtAddr, WalkErrorKind, WalkItem, Walker,
};
use pagepin::truncate::{
    Extent, Failed, FileMapping, LeaseId, LeaseRegistry, Revoke, TableUnmapper, TlbShootdown,
    Truncate, Wait,
};
use pagepin::wait::{Clock, SpinWaiter, WaitSlot, WaitTable};

/// The stage-2 format.
type Format = Stage2G4K40;

/// CPUs: 0 balloons, 1 is the device, 2 and 3 run the guest.
const CPUS: u64 = 4;
/// Base page.
const PAGE: u64 = 4096;
/// A chunk of guest RAM, and a block of host memory.
const CHUNK: u64 = 2 << 20;
/// Base pages per chunk.
const CHUNK_PAGES: u64 = CHUNK / PAGE;
/// Chunks of guest RAM.
const CHUNKS: usize = 16;
/// Pages a small chunk maps (its first ones).
const SMALL_PAGES: u64 = 64;
/// Guest RAM's first IPA: root index 513, in the second concatenated table.
const IPA_RAM: u64 = 0x80_4000_0000;
/// Host memory backing guest RAM: [`BLOCKS`] blocks of 2 MiB from here.
const BACKING: u64 = 0x4400_0000;
/// Host blocks (more than chunks: a balloon's refill takes a fresh one).
const BLOCKS: u64 = 24;
/// The first backing PFN.
const FIRST_PFN: u64 = BACKING >> 12;
/// Backing pages (one meta each).
const BACKING_PAGES: usize = (BLOCKS * CHUNK_PAGES) as usize;
/// Stage-2 table frames: the 8 KiB root (two frames) and the pool.
const S2_FRAMES: usize = 256;
/// The VM's VMID.
const VMID: u64 = 1;
/// CPU 0's balloon operations.
const ROUNDS: u64 = 6000;
/// Random probe mappings for the `AT` comparison.
const PROBES: usize = 48;
/// The most pages one device pin takes.
const MAX_PIN: usize = 32;
/// How long the device keeps a leased pin unless the lease is revoked.
const LEASE_HOLD_NS: u64 = 50_000_000;
/// What a free page holds in words 0-3 (its tag is no IPA of guest RAM).
const POISON: u64 = 0xdead_dead_dead_dead;

/// The stage-2 tables: every table the MMU and GUP-fast walk is one of these
/// frames (frames 0-1: the concatenated root).
#[repr(C, align(8192))]
struct S2Tables([[AtomicU64; 512]; S2_FRAMES]);

static S2: S2Tables = S2Tables([const { [const { AtomicU64::new(0) }; 512] }; S2_FRAMES]);

/// The control page the guest reads (mapped read-only at IPA = PA): word 0 =
/// stop, word 1 = chunks, words 8.. = pages mapped per chunk (0 while it is
/// ballooned out).
#[repr(C, align(4096))]
struct Control {
    stop: AtomicU64,
    chunks: AtomicU64,
    _pad: [AtomicU64; 6],
    pages: [AtomicU64; CHUNKS],
}

static CONTROL: Control = Control {
    stop: AtomicU64::new(0),
    chunks: AtomicU64::new(0),
    _pad: [const { AtomicU64::new(0) }; 6],
    pages: [const { AtomicU64::new(0) }; CHUNKS],
};

/// The metas of the backing pages, all free at boot.
static METAS: [PageMeta; BACKING_PAGES] = [const { PageMeta::new_free() }; BACKING_PAGES];
/// Test instrumentation per unit head: the generation of its allocation.
static GENERATION: [AtomicU64; BACKING_PAGES] = [const { AtomicU64::new(0) }; BACKING_PAGES];
/// Test instrumentation per page: the IPA it is mapped at (0: none).
static IPA_OF: [AtomicU64; BACKING_PAGES] = [const { AtomicU64::new(0) }; BACKING_PAGES];
/// Per host block: set while its pages are single-page units (split).
static SPLIT: [AtomicBool; BLOCKS as usize] = [const { AtomicBool::new(false) }; BLOCKS as usize];

static STARTED: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
/// The device's counters.
static PINNED: AtomicU64 = AtomicU64::new(0);
static PIN_CALLS: AtomicU64 = AtomicU64::new(0);
static CHANGED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static LEASES_TAKEN: AtomicU64 = AtomicU64::new(0);
static LEASES_REVOKED: AtomicU64 = AtomicU64::new(0);
/// The guest's counters (per vCPU CPU index): good loads, skipped faults
/// (from the guest), stage-2 faults the hypervisor handled.
static TOUCHES: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static GUEST_SKIPS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static S2_FAULTS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// The index of `pfn`'s meta.
fn index(pfn: u64) -> usize {
    (pfn - FIRST_PFN) as usize
}

/// Word `word` (0..8) of backing page `pfn`, through the identity map.
///
/// # Panics
///
/// If `pfn` is not a backing page.
fn page_word(pfn: u64, word: usize) -> &'static AtomicU64 {
    assert!((FIRST_PFN..FIRST_PFN + BACKING_PAGES as u64).contains(&pfn) && word < 8);
    let pa = (pfn << 12) + 8 * word as u64;
    // SAFETY: `pa` is 8-aligned, inside the backing blocks, RAM above the
    // kernel image (the linker script's ASSERT) and below the end of RAM
    // (`-m 256M`), so no Rust object overlaps it; every CPU's access (MMU off:
    // physical) goes through `AtomicU64` references like this one, and the
    // guest's through its own aligned 64-bit loads and stores.
    unsafe { &*(pa as *const AtomicU64) }
}

/// The unit containing backing page `pfn`: its head and size in pages.
fn unit_of(pfn: u64) -> (u64, u64) {
    let block = (pfn - FIRST_PFN) / CHUNK_PAGES;
    // Relaxed: a stale answer is what GUP-fast's unit re-check is for; after
    // a successful get (Acquire, reading from the Release `allocate` that
    // followed the flip) the answer is current and stays so while the count
    // is held (a block is split or merged only while its pages are free).
    if SPLIT[block as usize].load(Ordering::Relaxed) {
        (pfn, 1)
    } else {
        (pfn & !(CHUNK_PAGES - 1), CHUNK_PAGES)
    }
}

/// The host memory that backs guest RAM: 2 MiB units, or single pages while
/// their block is split; all of it layout-managed (balloonable).
struct BackingMap {
    waits: WaitTable<64>,
}

// SAFETY: (1) `unit` returns the block containing `pfn` (head aligned down
// to 512 pages) or `pfn` alone, after checking `pfn` is a backing page; (2)
// every PFN of a unit computes the same head, size and meta from the same
// `SPLIT` flag; a block is split or merged only by CPU 0, while all its
// pages are free, before the Release `allocate` of its new units; the metas
// of pages that are no unit's head stay free (only heads are allocated); (3)
// the metas are a static array; (4) `wake` bumps the slot `wait_slot`
// returns and the only waiter, `SpinWaiter`, polls it.
unsafe impl MemoryMap for BackingMap {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        if !(FIRST_PFN..FIRST_PFN + BACKING_PAGES as u64).contains(&pfn.0) {
            return Err(OutsideMap { pfn });
        }
        let (head, pages) = unit_of(pfn.0);
        Ok(Unit {
            head: Pfn(head),
            pages,
            meta: &METAS[index(head)],
            layout_managed: true,
        })
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.waits.slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.waits.wake(head);
    }
}

/// The device's doorbell: a lease revocation is a flag its loop polls.
struct Doorbell {
    revoked: AtomicBool,
}

impl Revoke for Doorbell {
    fn revoke(&self, _lease: LeaseId) {
        // Release: pairs with the device's Acquire load; nothing else is
        // published through it (the lease registry has its own lock).
        self.revoked.store(true, Ordering::Release);
    }
}

static DOORBELL: Doorbell = Doorbell {
    revoked: AtomicBool::new(false),
};

pagepin::epoch_brand!(
    /// The brand of the device's epoch: the domain of the device's reader and
    /// of the stage-2 builder's `EpochRetire`, so the device's GUP-fast
    /// through the stage-2 tables compiles only under a reader of that epoch.
    enum Stage2Tables
);

/// The state CPU 0 writes once before the other CPUs start.
struct Shared {
    memmap: BackingMap,
    /// The one epoch of brand [`Stage2Tables`]: one reader slot, the device's.
    epoch: Epoch<Stage2Tables, 1>,
    leases: LeaseRegistry<'static, 2>,
    access: DirectMap<'static>,
    root: PhysAddr,
    vm: el2::Vm,
}

/// A static written once, by CPU 0, before any other CPU reads it.
struct Once<T>(UnsafeCell<MaybeUninit<T>>);

// SAFETY: CPU 0 writes the value exactly once, before it publishes it (the
// Release store of `SHARED_READY`); every other access is a shared read after
// that publication.
unsafe impl<T: Sync> Sync for Once<T> {}

static SHARED: Once<Shared> = Once(UnsafeCell::new(MaybeUninit::uninit()));
static SHARED_READY: AtomicBool = AtomicBool::new(false);
/// Per CPU: where `guest_run` saves the hypervisor's registers.
static mut SAVE: [el2::SaveArea; CPUS as usize] = [[0; 13]; CPUS as usize];

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
    if VIOLATIONS.fetch_add(1, Ordering::Relaxed) < 16 {
        println!("violation (CPU {}): {}", el2::cpu_index(), what);
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

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// The generic timer as pagepin's clock.
struct CounterClock;

impl Clock for CounterClock {
    fn now_ns(&self) -> u64 {
        let (count, freq) = el2::counter();
        (u128::from(count) * 1_000_000_000 / u128::from(freq)) as u64
    }
}

/// Guest RAM: read, write, execute, access flag set.
fn ram_perms() -> Perms {
    Perms::READ | Perms::WRITE | Perms::EXEC | Perms::ACCESSED
}

/// Normal, inner and outer write-back, inner shareable.
fn write_back() -> MemType {
    stage2_mem_type(0b1111, Shareability::Inner)
}

/// The IPA of chunk `chunk`.
fn chunk_ipa(chunk: usize) -> u64 {
    IPA_RAM + chunk as u64 * CHUNK
}

/// The IPA tag of a page at `ipa` of a unit of generation `generation`.
fn tag(ipa: u64, generation: u64) -> u64 {
    ipa | (generation & 0xfff)
}

type Tables =
    TableBuilder<'static, Format, DirectMap<'static>, EpochRetire<'static, Stage2Tables, 1, 32>>;

/// A walker of the stage-2 tables (the builder's, or the device's over the
/// same root), of their domain.
type S2Walker<'a> = Walker<'a, Format, DirectMap<'static>, Stage2Tables>;

/// The stage-2 TLB hook of the balloon's `TableUnmapper`: [`el2::flush_ipa_range`]
/// stepping by the smallest leaf the unmap cleared.
struct Stage2Tlb {
    flushes: u64,
}

// SAFETY: `flush` runs `el2::flush_ipa_range` on CPU 0, which holds the VM's
// VTTBR_EL2 (VMID 1, the only VM): `DSB ISHST`, then `TLBI IPAS2E1IS` every
// `step` bytes of the range (stage-2 entries of every level for the IPA;
// `step` is the smallest leaf the unmap cleared, so every cleared leaf and
// every detached table's walk-cache entry is hit) or one `TLBI VMALLS12E1IS`,
// then `DSB ISH`, `TLBI VMALLE1IS` (the combined stage 1+2 entries), `DSB
// ISH`, `ISB`: broadcast to every CPU of the inner-shareable domain (all
// four) and complete when it returns. There is one address space (`_space`
// is always 0). Broken on purpose by two builds: `broken-no-tlbi` (barriers
// only) and `broken-no-vmalle1` (no `TLBI VMALLE1IS`).
unsafe impl TlbShootdown for Stage2Tlb {
    fn flush(&mut self, _space: usize, range: VaRange, sizes: LeafSizes) {
        if cfg!(feature = "broken-no-tlbi") {
            // BROKEN: the barriers only, no invalidation.
            el2::tables_written();
        } else {
            // No leaf cleared (only tables detached): any invalidation in the
            // range drops their walk-cache entries; step by pages.
            let step = sizes.smallest().unwrap_or(PAGE);
            el2::flush_ipa_range(range.start().0, range.size(), step);
        }
        self.flushes += 1;
    }
}

/// What a chunk of guest RAM is backed by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Ballooned out: nothing mapped.
    Empty,
    /// Host block `block`: one 2 MiB unit under one block entry, or
    /// (`split`) single-page units of which the first [`SMALL_PAGES`] are
    /// mapped by page entries.
    Backed { block: u64, split: bool },
}

/// What CPU 0 counted.
#[derive(Default)]
struct BalloonStats {
    populated: u64,
    ballooned: u64,
    refilled: u64,
    flushes: u64,
    at: AtStats,
}

/// The `AT` comparison's counters.
#[derive(Default, Clone, Copy)]
struct AtStats {
    ipas: u64,
    checks: u64,
    mismatches: u64,
}

/// Populates empty chunk `chunk` with host block `block` (free): a new
/// generation, the IPA tags, the allocation, the stage-2 map, then tells the
/// guest how many pages it may touch.
fn populate(tables: &mut Tables, chunk: usize, block: u64, split: bool) -> ChunkState {
    let head = FIRST_PFN + block * CHUNK_PAGES;
    let ipa = chunk_ipa(chunk);
    // Relaxed: published by the Release `allocate` calls below (see
    // `unit_of`).
    SPLIT[block as usize].store(split, Ordering::Relaxed);
    let (pages, unit_pages) = if split {
        (SMALL_PAGES, 1)
    } else {
        (CHUNK_PAGES, CHUNK_PAGES)
    };
    let mut p = 0;
    while p < pages {
        let unit = head + p;
        // Relaxed (every store here): only CPU 0 writes generations, tags and
        // IPAs; the device reads them after its Acquire get, which reads from
        // the Release `allocate` below; the guest reads a page only through
        // the stage-2 mapping made after it (`tables_written`).
        let generation = GENERATION[index(unit)].load(Ordering::Relaxed) + 1;
        GENERATION[index(unit)].store(generation, Ordering::Relaxed);
        for q in unit..unit + unit_pages {
            let page_ipa = ipa + (q - head) * PAGE;
            page_word(q, 0).store(tag(page_ipa, generation), Ordering::Relaxed);
            for word in 1..4 {
                page_word(q, word).store(0, Ordering::Relaxed);
            }
            IPA_OF[index(q)].store(page_ipa, Ordering::Relaxed);
        }
        if let Err(e) = METAS[index(unit)].allocate() {
            violation(format_args!("allocate PFN {unit:#x}: {e}"));
        }
        p += unit_pages;
    }
    let leaf = if split { PAGE } else { CHUNK };
    let req = MapRequest::new(VirtAddr(ipa), PhysAddr(head << 12), pages * PAGE, leaf)
        .with_perms(ram_perms())
        .with_mem_type(write_back());
    // SAFETY: host block `block` came out of the free mask, which gets a block
    // back only after its balloon freed it (a failed balloon never puts its
    // block back), so no truncate has it marked; its units were just
    // allocated to this chunk. The chunk's balloon registers exactly this
    // mapping (chunk IPA -> block) with its `TableUnmapper` and unmaps it
    // before it frees the block; a failed map leaves the chunk backed, and
    // ballooned out like any other.
    if let Err(e) = unsafe { tables.map(&req) } {
        violation(format_args!("map chunk {chunk}: {e}"));
    }
    el2::tables_written();
    // Relaxed: the guest polls it (a stale value only makes it fault or skip
    // pages); the mapping it announces is already visible (DSB above).
    CONTROL.pages[chunk].store(pages, Ordering::Relaxed);
    ChunkState::Backed { block, split }
}

/// Balloons chunk `chunk` out with the typestate API; returns its block to
/// `free`.
fn balloon(
    shared: &'static Shared,
    tables: &mut Tables,
    chunk: usize,
    state: ChunkState,
    free: &mut u64,
    r: u64,
    stats: &mut BalloonStats,
) -> bool {
    let ChunkState::Backed { block, split } = state else {
        return false;
    };
    let first = FIRST_PFN + block * CHUNK_PAGES;
    let pages = if split { SMALL_PAGES } else { CHUNK_PAGES };
    if r & 1 != 0 {
        // A cooperative balloon: the guest is told first (it may still be
        // touching the chunk). Otherwise it learns only after the free.
        // Relaxed: as in `populate`.
        CONTROL.pages[chunk].store(0, Ordering::Relaxed);
    }
    let memmap = &shared.memmap;
    let extents = core::iter::once(Extent::new(Pfn(first), pages));
    let marked = match Truncate::mark(memmap, extents) {
        Ok(marked) => marked,
        Err(e) => {
            violation(format_args!("mark chunk {chunk}: {e}"));
            return false;
        }
    };
    let tlb = Stage2Tlb { flushes: 0 };
    // SAFETY: the pages of the extent (backing block `block`) have one mapping
    // a walker or an MMU uses: chunk `chunk` of guest RAM in the stage 2 (the
    // one space, `tables`), registered just below, before the unmap; on a
    // refused registration the truncate is cancelled before its unmap. No
    // other stage-2 mapping maps a backing page (the fixed ones map the guest
    // page and the control page; `map_probes` skips outputs in the backing
    // blocks), the guest's stage 1 is off (VA = IPA) and this kernel's own
    // accesses at EL2 are physical (MMU off).
    let mut unmapper = unsafe {
        TableUnmapper::<_, _, _, _, 1>::new(core::slice::from_mut(&mut *tables), 12, tlb)
    };
    let mapping = FileMapping {
        space: 0,
        va: VirtAddr(chunk_ipa(chunk)),
        first: Pfn(first),
        pages,
    };
    if let Err(e) = unmapper.add_mapping(mapping) {
        violation(format_args!("reverse map: {e}"));
        let _ = marked.cancel();
        return false;
    }
    let unmapped = match marked.unmap(&mut unmapper) {
        Ok(unmapped) => unmapped,
        Err(Failed { truncate, error }) => {
            violation(format_args!("unmap chunk {chunk}: {error:?}"));
            let _ = truncate.cancel();
            return false;
        }
    };
    stats.flushes += unmapper.tlb().flushes;
    drop(unmapper);
    let clock = CounterClock;
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: Some(clock.now_ns() + 30_000_000_000),
    };
    let drained = match unmapped.drain_with_leases(&shared.leases, &wait) {
        Ok(drained) => drained,
        Err(Failed { truncate, error }) => {
            violation(format_args!("drain chunk {chunk}: {error}"));
            let _ = truncate.cancel();
            return false;
        }
    };
    if let Err(e) = drained.free() {
        violation(format_args!("free chunk {chunk}: {e}"));
        // The chunk's mapping is gone, but its units may still be marked or
        // held: the block is leaked, never poisoned, put back in `free` or
        // mapped again.
        // Relaxed: as in `populate`.
        CONTROL.pages[chunk].store(0, Ordering::Relaxed);
        return true;
    }
    for p in first..first + pages {
        for word in 0..4 {
            // Relaxed: nobody holds the page (the free succeeded) and no
            // stage-2 translation of it is left (the TLB invalidation
            // completed): a reader of this poison is the bug the checks look
            // for.
            page_word(p, word).store(POISON, Ordering::Relaxed);
        }
        // Relaxed: only CPU 0 writes it; read by the device under a pin.
        IPA_OF[index(p)].store(0, Ordering::Relaxed);
    }
    // Relaxed: as in `populate`.
    CONTROL.pages[chunk].store(0, Ordering::Relaxed);
    *free |= 1 << block;
    stats.ballooned += 1;
    // The TLBs are clean: retired tables whose epoch passed may be reused.
    if let Err(e) = tables.reclaim() {
        violation(format_args!("reclaim: {e}"));
    }
    true
}

/// Picks a set bit of `mask` at random (avoiding `avoid` if another is set)
/// and clears it.
fn take_block(mask: &mut u64, r: u64, avoid: Option<u64>) -> Option<u64> {
    let mut candidates = *mask;
    if let Some(a) = avoid
        && candidates & !(1 << a) != 0
    {
        candidates &= !(1 << a);
    }
    let n = u64::from(candidates.count_ones());
    if n == 0 {
        return None;
    }
    let mut skip = r % n;
    for bit in 0..64 {
        if candidates & (1 << bit) != 0 {
            if skip == 0 {
                *mask &= !(1 << bit);
                return Some(bit);
            }
            skip -= 1;
        }
    }
    None
}

// ---------------------------------------------------------------------------
// The MMU as the oracle.
// ---------------------------------------------------------------------------

/// pagepin's answer for one IPA.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Leaf {
        pa: u64,
        perms: Perms,
        mem_type: MemType,
    },
    Absent,
    Error,
}

/// PAR_EL1.F.
fn par_fault(par: u64) -> bool {
    par & 1 != 0
}

/// The fault kind of PAR_EL1.FST (the level in bits 1:0 dropped).
fn fault_kind(par: u64) -> &'static str {
    match ((par >> 1) & 0x3f) >> 2 {
        0b0000 => "address size",
        0b0001 => "translation",
        0b0010 => "access flag",
        0b0011 => "permission",
        _ => "other",
    }
}

/// PAR_EL1.S: the fault was at stage 2.
fn par_stage2(par: u64) -> bool {
    par & (1 << 9) != 0
}

/// The MAIR-format attribute of a stage-2 MemAttr combined with the
/// disabled stage 1 under HCR_EL2.DC (Normal, inner and outer write-back,
/// read/write-allocate) with FWB = 0 (Arm ARM "Combining the stage 1 and
/// stage 2 attributes"): Device wins (its kind from MemAttr[1:0]); else each
/// of outer and inner is the less cacheable of the two (non-cacheable 0b0100,
/// write-through 0b1011 and write-back 0b1111, allocation hints from stage 1),
/// and a result that is non-cacheable inside and out is reported as 0x44.
fn expected_attr(mem_attr: u8) -> u8 {
    let (outer, inner) = (mem_attr >> 2 & 3, mem_attr & 3);
    if outer == 0 {
        return inner << 2;
    }
    let nibble = |c: u8| match c {
        0b01 => 0b0100,
        0b10 => 0b1011,
        _ => 0b1111,
    };
    nibble(outer) << 4 | nibble(inner)
}

/// Compares pagepin's walk of `ipa` with `AT S12E1R` and `AT S12E1W`.
fn at_compare(walker: &S2Walker<'_>, ipa: u64, stats: &mut AtStats) {
    stats.ipas += 1;
    let answer = match walker.translate(VirtAddr(ipa)) {
        Ok(WalkItem::Leaf(l)) => Answer::Leaf {
            pa: l.leaf_pa.0 + (ipa - l.leaf_va.0),
            perms: l.perms,
            mem_type: l.mem_type,
        },
        Ok(WalkItem::Hole(_)) => Answer::Absent,
        Err(e) if e.kind == WalkErrorKind::NonCanonical => Answer::Absent,
        Err(_) => Answer::Error,
    };
    let (r, w) = (el2::at_s12(ipa, false), el2::at_s12(ipa, true));
    let in_range = ipa < 1 << 40;
    let mut bad: [&str; 6] = [""; 6];
    let mut n_bad = 0;
    let mut flag = |ok: bool, what: &'static str| {
        stats.checks += 1;
        if !ok {
            bad[n_bad.min(5)] = what;
            n_bad += 1;
        }
    };
    let stage2_fault = |par: u64, kind: &str| {
        par_fault(par) && fault_kind(par) == kind && (par_stage2(par) || !in_range)
    };
    match answer {
        Answer::Error => flag(false, "pagepin's walk failed"),
        Answer::Absent => {
            for par in [r, w] {
                flag(
                    stage2_fault(par, "translation") || (!in_range && par_fault(par)),
                    "absent: the MMU translates (or faults otherwise)",
                );
            }
        }
        Answer::Leaf { perms, .. } if !perms.contains(Perms::ACCESSED) => {
            for par in [r, w] {
                flag(
                    stage2_fault(par, "access flag"),
                    "AF clear: no stage-2 access flag fault",
                );
            }
        }
        Answer::Leaf {
            pa,
            perms,
            mem_type,
        } => {
            for (par, right, what) in [
                (r, Perms::READ, "read (S12E1R)"),
                (w, Perms::WRITE, "write (S12E1W)"),
            ] {
                if perms.contains(right) {
                    flag(
                        !par_fault(par) && par & 0x0000_ffff_ffff_f000 == pa & !0xfff,
                        what,
                    );
                } else {
                    flag(stage2_fault(par, "permission"), what);
                }
            }
            let ok = if perms.contains(Perms::READ) {
                Some(r)
            } else if perms.contains(Perms::WRITE) {
                Some(w)
            } else {
                None
            };
            if let Some(par) = ok.filter(|&p| !par_fault(p)) {
                let attr = (par >> 56) as u8;
                let sh = ((par >> 7) & 3) as u8;
                let want = expected_attr(mem_type.0 & 0xf);
                let want_sh = if want & 0xf0 == 0 || want == 0x44 {
                    0b10
                } else {
                    mem_type.0 >> 4
                };
                flag(
                    attr == want && sh == want_sh,
                    "memory type (PAR_EL1.ATTR/SH)",
                );
            }
        }
    }
    if n_bad == 0 {
        return;
    }
    stats.mismatches += n_bad as u64;
    if stats.mismatches > 24 {
        return;
    }
    println!(
        "MISMATCH {}: IPA {ipa:#x}: {:?}",
        Format::NAME,
        &bad[..n_bad.min(6)]
    );
    println!("  pagepin: {answer:x?}");
    println!("  MMU: PAR_EL1 S12E1R {r:#x} S12E1W {w:#x}");
    print_raw_walk(walker, ipa);
}

/// Prints the raw entries of the walk of `ipa`.
fn print_raw_walk(walker: &S2Walker<'_>, ipa: u64) {
    let geo = Format::GEOMETRY;
    let access = &shared().access;
    let mut table = walker.root();
    for level in 0..geo.depth() {
        let index = geo.index(VirtAddr(ipa), level);
        // SAFETY: the word is only loaded.
        let Ok(word) = (unsafe { access.entry(table, index) }) else {
            println!("  raw: level {level}: table {:#x} unreachable", table.0);
            return;
        };
        // Relaxed: CPU 0 wrote the tables itself.
        let raw = word.load(Ordering::Relaxed);
        let decoded = Format::decode(raw, level);
        println!(
            "  raw: level {level} (Arm {}) table {:#x}[{index}] = {raw:#018x} -> {decoded:x?}",
            Format::START_LEVEL + level,
            table.0
        );
        match decoded {
            Ok(Entry::Table(t)) => table = t.table,
            _ => return,
        }
    }
}

/// A probe mapping (for the samples around it).
#[derive(Clone, Copy, Default)]
struct Probe {
    ipa: u64,
    len: u64,
    leaf: u64,
}

/// Maps the probe mappings: fixed ones at the ends of the IPA space and on
/// both sides of the concatenation boundary, then random ones.
fn map_probes(tables: &mut Tables, rng: &mut Rng, probes: &mut [Probe; PROBES]) -> usize {
    const GIB: u64 = 1 << 30;
    let fixed = [
        (0x1000u64, PAGE, PAGE),
        ((1 << 40) - PAGE, PAGE, PAGE),
        ((1 << 40) - 2 * CHUNK, CHUNK, CHUNK),
        (0x80_0000_0000 - GIB, GIB, GIB),
        (0x80_0000_0000, GIB, GIB),
        (0x7f_8000_0000 - CHUNK, 2 * CHUNK, CHUNK),
    ];
    let mut n = 0;
    for i in 0..PROBES + 16 {
        if n == PROBES {
            break;
        }
        let r = rng.next();
        let (ipa, len, leaf) = if let Some(&f) = fixed.get(i) {
            f
        } else {
            let leaf = [PAGE, PAGE, CHUNK, CHUNK, GIB][(r % 5) as usize];
            let count = if leaf == GIB { 1 } else { 1 + (r >> 4) % 8 };
            let len = leaf * count;
            // Anywhere from 4 GiB to the top of the IPA space.
            let ipa = (4 * GIB + rng.below((1 << 40) - 4 * GIB - len)) & !(leaf - 1);
            (ipa, len, leaf)
        };
        let pa = rng.below((1 << 40) - len) & !(leaf - 1);
        let mut perms = Perms::empty();
        perms.set(Perms::READ, (r >> 8) & 3 != 0);
        perms.set(Perms::WRITE, (r >> 10) & 1 != 0);
        perms.set(Perms::EXEC, (r >> 11) & 1 != 0);
        perms.set(Perms::ACCESSED, (r >> 12) & 7 != 0);
        perms.set(
            Perms::DIRTY,
            perms.contains(Perms::WRITE) && (r >> 15) & 3 == 0,
        );
        // Every valid MemAttr: Device (00xx), Normal with outer and inner
        // cacheability 01, 10, 11 each.
        let mem_attr = loop {
            let m = (rng.next() & 0xf) as u8;
            if m & 0b1100 == 0 || m & 0b11 != 0 {
                break m;
            }
        };
        let sh =
            [Shareability::Non, Shareability::Outer, Shareability::Inner][((r >> 20) % 3) as usize];
        if pa < BACKING + BLOCKS * CHUNK && BACKING < pa + len {
            // Guest RAM's backing is mapped at its chunks only: the balloon's
            // unmapper knows no other mapping of it (see `balloon`).
            continue;
        }
        let req = MapRequest::new(VirtAddr(ipa), PhysAddr(pa), len, leaf)
            .with_perms(perms)
            .with_mem_type(stage2_mem_type(mem_attr, sh));
        // SAFETY: the output is any PA below 2^40 but guest RAM's backing
        // (skipped above), memory this kernel does not own: the probes break
        // the letter of the promise on purpose, to have the MMU decode every
        // output address. Its point holds: the backing blocks are the only
        // memory this kernel ever frees, and nothing accesses or pins
        // through a probe mapping (the guest touches guest RAM only, the
        // device pins only guest RAM's IPAs and the memory map has no unit
        // outside the backing, `AT` translates without accessing memory);
        // the probes are never unmapped.
        match unsafe { tables.map(&req) } {
            Ok(()) => {
                probes[n] = Probe { ipa, len, leaf };
                n += 1;
            }
            Err(MapError::Overlap { .. }) => {}
            Err(e) => violation(format_args!(
                "probe map {ipa:#x} -> {pa:#x} len {len:#x} leaf {leaf:#x}: {e}"
            )),
        }
    }
    n
}

/// Compares every probe mapping's edges and a random inside, fixed IPAs,
/// and every chunk's first and last pages.
fn at_sweep(walker: &S2Walker<'_>, probes: &[Probe], rng: &mut Rng, stats: &mut AtStats) {
    let (code, _) = el2::guest_page_range();
    let control = core::ptr::addr_of!(CONTROL) as u64;
    for ipa in [
        0,
        code,
        control,
        control + PAGE,
        0x80_0000_0000 - 1,
        1 << 40,
        !0xfff,
    ] {
        at_compare(walker, ipa, stats);
    }
    for p in probes {
        let last = p.ipa + (p.len - 1);
        for ipa in [
            p.ipa,
            last,
            p.ipa + rng.below(p.len),
            p.ipa.wrapping_sub(1),
            last + 1,
        ] {
            at_compare(walker, ipa, stats);
        }
        let mut at = p.ipa + p.leaf;
        while at < p.ipa + p.len && at - p.ipa <= 4 * p.leaf {
            at_compare(walker, at - 1, stats);
            at_compare(walker, at, stats);
            at += p.leaf;
        }
    }
    for chunk in 0..CHUNKS {
        at_compare(walker, chunk_ipa(chunk), stats);
        at_compare(walker, chunk_ipa(chunk) + SMALL_PAGES * PAGE - 8, stats);
        at_compare(walker, chunk_ipa(chunk) + SMALL_PAGES * PAGE, stats);
        at_compare(walker, chunk_ipa(chunk) + CHUNK - 1, stats);
    }
}

// ---------------------------------------------------------------------------
// CPU 0: the balloon.
// ---------------------------------------------------------------------------

/// CPU 0's rounds: populate, balloon out (and sometimes refill at once),
/// compare with the MMU after each.
fn balloon_rounds(
    shared: &'static Shared,
    tables: &mut Tables,
    chunks: &mut [ChunkState; CHUNKS],
    free: &mut u64,
    stats: &mut BalloonStats,
) {
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let walker = tables.walker();
    for _ in 0..ROUNDS {
        let r = rng.next();
        let chunk = (r % CHUNKS as u64) as usize;
        match chunks[chunk] {
            ChunkState::Empty => {
                if let Some(block) = take_block(free, r >> 8, None) {
                    chunks[chunk] = populate(tables, chunk, block, (r >> 16) & 1 != 0);
                    stats.populated += 1;
                }
            }
            state @ ChunkState::Backed { block, .. } => {
                if balloon(shared, tables, chunk, state, free, r >> 20, stats) {
                    chunks[chunk] = ChunkState::Empty;
                    if (r >> 24) & 1 != 0
                        && let Some(fresh) = take_block(free, r >> 32, Some(block))
                    {
                        chunks[chunk] = populate(tables, chunk, fresh, (r >> 28) & 1 != 0);
                        stats.refilled += 1;
                    }
                }
            }
        }
        // The MMU's view of what just changed, and of one IPA anywhere in
        // guest RAM.
        let ipa = chunk_ipa(chunk);
        for at in [
            ipa,
            ipa + (SMALL_PAGES - 1) * PAGE,
            ipa + SMALL_PAGES * PAGE,
            ipa + CHUNK - PAGE,
        ] {
            at_compare(&walker, at, &mut stats.at);
        }
        at_compare(
            &walker,
            IPA_RAM + rng.below(CHUNKS as u64 * CHUNK),
            &mut stats.at,
        );
    }
}

// ---------------------------------------------------------------------------
// CPU 1: the device.
// ---------------------------------------------------------------------------

/// Checks a page the device holds pinned, pinned through `ipa`; returns its
/// generation.
fn check_pinned(pfn: u64, ipa: u64, what: &str) -> u64 {
    if !(FIRST_PFN..FIRST_PFN + BACKING_PAGES as u64).contains(&pfn) {
        violation(format_args!(
            "{what}: PFN {pfn:#x} at IPA {ipa:#x} is no backing page"
        ));
        return 0;
    }
    let (head, _) = unit_of(pfn);
    let meta = &METAS[index(head)];
    if meta.pins() == 0 || meta.is_free() {
        violation(format_args!(
            "{what}: PFN {pfn:#x} at IPA {ipa:#x}: the meta that counts for it (head {head:#x}) is {:?}",
            meta.load()
        ));
    }
    // Relaxed (three loads): ordered after CPU 0's writes by the Acquire get
    // that pinned the page.
    let generation = GENERATION[index(head)].load(Ordering::Relaxed);
    let mapped_at = IPA_OF[index(pfn)].load(Ordering::Relaxed);
    let word = page_word(pfn, 0).load(Ordering::Relaxed);
    if mapped_at != ipa || word != tag(ipa, generation) {
        violation(format_args!(
            "{what}: PFN {pfn:#x} pinned through IPA {ipa:#x}: the hypervisor maps it at {mapped_at:#x}, \
             its word 0 is {word:#x}, its unit's generation {generation}"
        ));
    }
    generation
}

/// CPU 1: pin, check, write, hold, check, release, until told to stop.
fn device(shared: &'static Shared) {
    let reader = shared.epoch.reader().expect("the device's reader slot");
    // SAFETY: `shared.root` is the root of CPU 0's `tables`, the only builder
    // of the stage-2 tables; every table it detaches is retired through its
    // `EpochRetire` over `shared.epoch`, of domain `Stage2Tables`, and nothing
    // else frees a table reachable from that root.
    let walker = unsafe { S2Walker::new_in(&shared.access, shared.root) };
    let gup = Gup::new(walker, &shared.memmap);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = [Pfn(0); MAX_PIN];
    let mut seen = [0u64; MAX_PIN];
    let (mut pinned, mut calls, mut changed, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let (mut leases, mut revoked) = (0u64, 0u64);
    let mut token = 0xd3a0_0000_0000_0000u64;
    let clock = CounterClock;
    // Relaxed: a stop flag; nothing is published through it.
    while !STOP.load(Ordering::Relaxed) {
        let r = rng.next();
        let chunk = (r % CHUNKS as u64) as usize;
        // Mostly inside the pages a small chunk maps; sometimes anywhere.
        let page = if (r >> 8) & 3 != 0 {
            (r >> 12) % SMALL_PAGES
        } else {
            (r >> 12) % CHUNK_PAGES
        };
        let pages = (1 + (r >> 24) % MAX_PIN as u64).min(CHUNK_PAGES - page);
        let start = chunk_ipa(chunk) + page * PAGE;
        let len = pages * PAGE;
        let leased = (r >> 40).is_multiple_of(8);
        // A lease first (before the pins: a balloon that finds no lease would
        // wait for the pins until its deadline): on the PFN run the IPA range
        // maps now (every chunk's backing is contiguous).
        let lease = if leased {
            let guard = reader.enter();
            let first = match walker.translate(VirtAddr(start)) {
                Ok(WalkItem::Leaf(l)) => Some((l.leaf_pa.0 + (start - l.leaf_va.0)) >> 12),
                _ => None,
            };
            drop(guard);
            let Some(first) = first else {
                continue;
            };
            // Release: pairs with nothing in particular; reset before the
            // grant that a revoke can follow.
            DOORBELL.revoked.store(false, Ordering::Release);
            match shared
                .leases
                .grant(Extent::new(Pfn(first), pages), &DOORBELL)
            {
                Ok(lease) => Some(lease),
                Err(e) => {
                    violation(format_args!("lease: {e}"));
                    continue;
                }
            }
        } else {
            None
        };
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
            other => violation(format_args!("unexpected stop at IPA {start:#x}: {other}")),
        }
        let held = &out[..taken.pages];
        // Under a lease the pins must be the leased pages (the chunk may have
        // been refilled between the look-up and the pin: then give up).
        let in_lease = lease.as_ref().is_none_or(|l| {
            held.iter()
                .enumerate()
                .all(|(i, p)| p.0 == l.extent().first.0 + i as u64)
        });
        token += 1;
        for (i, &pfn) in held.iter().enumerate() {
            let ipa = start + i as u64 * PAGE;
            seen[i] = check_pinned(pfn.0, ipa, "pinned");
            // Relaxed: the device's DMA into the pinned page; read back below
            // by this CPU.
            page_word(pfn.0, 3).store(token, Ordering::Relaxed);
        }
        // Hold: a short while, or under a lease until it is revoked (or
        // [`LEASE_HOLD_NS`]), writing the pages again and again.
        let long = lease.is_some() && in_lease && !held.is_empty();
        let (rounds, until) = if long {
            leases += 1;
            (u64::MAX, clock.now_ns() + LEASE_HOLD_NS)
        } else {
            ((r >> 56) & 0x3f, u64::MAX)
        };
        for _ in 0..rounds {
            // Acquire: pairs with the Release in `Doorbell::revoke`.
            if long && DOORBELL.revoked.load(Ordering::Acquire) {
                revoked += 1;
                break;
            }
            if long && clock.now_ns() > until {
                break;
            }
            for &pfn in held {
                // Relaxed: as above.
                page_word(pfn.0, 3).store(token, Ordering::Relaxed);
            }
            core::hint::spin_loop();
        }
        for (i, &pfn) in held.iter().enumerate() {
            let ipa = start + i as u64 * PAGE;
            let generation = check_pinned(pfn.0, ipa, "still pinned");
            // Relaxed: while the pin is held nobody else writes it.
            let mine = page_word(pfn.0, 3).load(Ordering::Relaxed);
            if generation != seen[i] || mine != token {
                violation(format_args!(
                    "PFN {:#x} changed while pinned: generation {} -> {generation}, token {mine:#x} (wrote {token:#x})",
                    pfn.0, seen[i]
                ));
            }
        }
        // SAFETY: `held` is what the device's `get_pages` call above pinned
        // (`taken.pages` PFNs, one `Hold::Pin` each, into its own `out`), not
        // released yet: this is the one release of those pins.
        if let Err(e) = unsafe { release(&shared.memmap, held, Hold::Pin) } {
            violation(format_args!("release: {e}"));
        }
        // The pins are released: the lease may go (a revoked one wakes the
        // balloon's drain).
        drop(lease);
        pinned += held.len() as u64;
    }
    // Relaxed: published to CPU 0 by the Release increment of DONE.
    PINNED.fetch_add(pinned, Ordering::Relaxed);
    PIN_CALLS.fetch_add(calls, Ordering::Relaxed);
    CHANGED.fetch_add(changed, Ordering::Relaxed);
    REFUSED.fetch_add(refused, Ordering::Relaxed);
    LEASES_TAKEN.fetch_add(leases, Ordering::Relaxed);
    LEASES_REVOKED.fetch_add(revoked, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------
// CPUs 2-3: the guest's vCPUs.
// ---------------------------------------------------------------------------

/// A vCPU: installs the VM and runs the guest until it stops.
fn vcpu(shared: &'static Shared, cpu: u64) {
    let (code, _) = el2::guest_page_range();
    el2::enter_vm(&shared.vm, code);
    let control = core::ptr::addr_of!(CONTROL) as u64;
    // SAFETY: this CPU's own save area, used by nobody else; `enter_vm` ran;
    // the stage 2 maps the guest page (read, execute; its first 2 KiB are the
    // VBAR_EL1 vectors) and the control page; `guest_trap` returns 1 only for
    // the guest's `hvc #0` or an unexpected exit.
    let exit = unsafe {
        let save = &mut (*core::ptr::addr_of_mut!(SAVE))[cpu as usize];
        el2::run_guest(
            el2::guest_entry_pa(),
            [cpu - 1, control, IPA_RAM, cpu << 56],
            save,
        )
    };
    // Relaxed: published to CPU 0 by the Release increment of DONE.
    TOUCHES[cpu as usize].store(exit.touches, Ordering::Relaxed);
    GUEST_SKIPS[cpu as usize].store(exit.faults, Ordering::Relaxed);
}

/// A guest exit (from `guest_sync`): 0 resumes the guest, 1 ends the run.
#[unsafe(no_mangle)]
extern "C" fn guest_trap(frame: &mut el2::GuestFrame) -> u64 {
    let (esr, far, hpfar, elr) = el2::syndrome();
    let cpu = el2::cpu_index() as usize;
    match esr >> 26 {
        // HVC from AArch64: the guest's calls.
        0x16 => match esr & 0xffff {
            0 => 1,
            1 => {
                violation(format_args!(
                    "the guest read {:#x} at IPA {:#x}: not the page's IPA tag (a stale stage-2 translation)",
                    frame[1], frame[0]
                ));
                0
            }
            _ => {
                violation(format_args!(
                    "the guest took an EL1 exception (ELR_EL2 {elr:#x})"
                ));
                1
            }
        },
        // A data abort from the guest: a stage-2 fault (its stage 1 is off).
        0x24 => {
            let ipa = (hpfar & 0xf_ffff_ffff_fff0) << 8 | (far & 0xfff);
            let dfsc = esr & 0x3f;
            let in_ram = (IPA_RAM..IPA_RAM + CHUNKS as u64 * CHUNK).contains(&ipa);
            if dfsc >> 2 != 0b0001 || !in_ram || ipa != far {
                violation(format_args!(
                    "guest data abort ESR_EL2 {esr:#x} (DFSC {dfsc:#x}) at IPA {ipa:#x} (FAR {far:#x}): \
                     only translation faults in guest RAM are expected"
                ));
                return 1;
            }
            // Relaxed: a per-CPU counter, published by DONE.
            S2_FAULTS[cpu].fetch_add(1, Ordering::Relaxed);
            // Skip the load or store (a load leaves its register as it was).
            el2::set_elr(elr + 4);
            0
        }
        ec => {
            violation(format_args!(
                "unexpected guest exit EC {ec:#x} ESR_EL2 {esr:#x} FAR {far:#x} ELR {elr:#x}"
            ));
            1
        }
    }
}

// ---------------------------------------------------------------------------
// Boot.
// ---------------------------------------------------------------------------

/// CPU 0's entry from `_start` at EL2, MMU off.
#[unsafe(no_mangle)]
extern "C" fn stage2_main() -> ! {
    println!(
        "pagepin-qemu: stage 2 at EL2, {} ({} levels, Arm start level {}, {} concatenated tables)",
        Format::NAME,
        Format::DEPTH,
        Format::START_LEVEL,
        Format::CONCATENATED_TABLES
    );
    let mmfr0 = el2::mmfr0();
    if (mmfr0 >> 28) & 0xf == 0xf || (mmfr0 & 0xf) < 0b010 {
        println!(
            "pagepin-qemu FAILED: this CPU lacks the 4 KiB granule or 40-bit PAs (use -cpu max)"
        );
        el2::semihosting_exit(4);
    }
    let base = S2.0.as_ptr() as u64;
    let root = PhysAddr(base);
    // SAFETY: (1) the frames of `S2` are RAM identity-mapped for every CPU
    // (all run with their MMU off: VA = PA), readable and writable, the same
    // memory for every CPU; (2) they are only ever accessed atomically:
    // through `AtomicU64` references and by the MMU's walks; (3) the range
    // does not wrap.
    let access =
        unsafe { DirectMap::identity(root, PhysAddr(base + (S2_FRAMES as u64) * PAGE - 1)) };
    let vm = el2::Vm {
        vtcr: el2::vtcr_g4k40(),
        vttbr: root.0 | VMID << 48,
    };
    // SAFETY: CPU 0 alone runs; nothing reads `SHARED` before `SHARED_READY`.
    unsafe {
        (*SHARED.0.get()).write(Shared {
            memmap: BackingMap {
                waits: WaitTable::new(),
            },
            epoch: Epoch::new().expect("the first and only epoch of brand Stage2Tables"),
            leases: LeaseRegistry::new(),
            access,
            root,
            vm,
        });
    }
    // SAFETY: just written, and never written again.
    let shared: &'static Shared = unsafe { (*SHARED.0.get()).assume_init_ref() };

    // The pool: every frame but the root's two.
    static mut FRAMES: [PhysAddr; S2_FRAMES] = [PhysAddr(0); S2_FRAMES];
    // SAFETY: CPU 0 alone touches `FRAMES`, here, once.
    let frames = unsafe { &mut *core::ptr::addr_of_mut!(FRAMES) };
    for (i, f) in frames.iter_mut().enumerate() {
        *f = PhysAddr(base + i as u64 * PAGE);
    }
    let root_frames = Format::CONCATENATED_TABLES;
    // SAFETY: every unmap's TLB shootdown (the `Stage2Tlb` hook, inside
    // `unmap`) completes before the builder's next map. (That the device walks
    // under a reader of this epoch is in the types: its walker has the
    // hook's domain, `Stage2Tables`.)
    let retire = unsafe { EpochRetire::<_, 1, 32>::new(&shared.epoch) };
    // SAFETY: the root is `S2`'s first two frames (8 KiB, aligned to 8 KiB by
    // `S2Tables`' `repr(align)`), the pool its other frames, each listed once:
    // the two do not overlap, and nothing but this builder writes `S2` (the
    // MMUs and the device's walker only read the tables it publishes). No
    // other pool or builder exists.
    let built = unsafe {
        Tables::with_root(
            &shared.access,
            root,
            FramePool::new(&mut frames[root_frames..]),
            retire,
        )
    };
    let mut tables = match built {
        Ok(tables) => tables,
        Err(e) => {
            println!("pagepin-qemu FAILED: TableBuilder::with_root: {e}");
            el2::semihosting_exit(4);
        }
    };

    // The guest's code page and the control page, at IPA = PA.
    let (code, code_end) = el2::guest_page_range();
    let control = core::ptr::addr_of!(CONTROL) as u64;
    let fixed = [
        MapRequest::new(VirtAddr(code), PhysAddr(code), code_end - code, PAGE)
            .with_perms(Perms::READ | Perms::EXEC | Perms::ACCESSED),
        MapRequest::new(VirtAddr(control), PhysAddr(control), PAGE, PAGE)
            .with_perms(Perms::READ | Perms::ACCESSED),
    ];
    for req in &fixed {
        // SAFETY: the guest's code page and the control page are this
        // kernel's own statics, never freed and never unmapped (the memory
        // map has no unit there: GUP-fast pins neither).
        if let Err(e) = unsafe { tables.map(&req.with_mem_type(write_back())) } {
            println!("pagepin-qemu FAILED: mapping the guest's code or control page: {e}");
            el2::semihosting_exit(4);
        }
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut probes = [Probe::default(); PROBES];
    let n_probes = map_probes(&mut tables, &mut rng, &mut probes);

    // Guest RAM: every chunk backed, huge and small alternately.
    let mut chunks = [ChunkState::Empty; CHUNKS];
    let mut free: u64 = (1 << BLOCKS) - 1;
    for (chunk, state) in chunks.iter_mut().enumerate() {
        let block = take_block(&mut free, 0, None).expect("a free block");
        *state = populate(&mut tables, chunk, block, chunk % 2 == 1);
    }
    // Relaxed: read by the guest after it starts (PSCI CPU_ON orders it).
    CONTROL.chunks.store(CHUNKS as u64, Ordering::Relaxed);

    // CPU 0 holds the VM's registers too: its AT instructions translate
    // through the VM's stage 2 and its TLB maintenance names the VMID.
    el2::enter_vm(&vm, code);
    el2::set_default_cacheable(true);
    let walker = tables.walker();
    let mut stats = BalloonStats::default();
    at_sweep(&walker, &probes[..n_probes], &mut rng, &mut stats.at);
    println!(
        "pagepin-qemu: stage 2 root {:#x} (VTTBR_EL2 {:#x}, VTCR_EL2 {:#x}); {} probe mappings; AT S12E1R/W vs pagepin at boot: {} IPAs, {} checks, {} mismatches",
        root.0, vm.vttbr, vm.vtcr, n_probes, stats.at.ipas, stats.at.checks, stats.at.mismatches
    );

    // Release: publishes `SHARED` to the other CPUs.
    SHARED_READY.store(true, Ordering::Release);
    for cpu in 1..CPUS {
        let status = el2::cpu_on(cpu, el2::secondary_entry_pa(), el2::stack_top(cpu));
        if status != 0 {
            println!("pagepin-qemu FAILED: PSCI CPU_ON({cpu}) returned {status}");
            el2::semihosting_exit(4);
        }
    }
    let clock = CounterClock;
    let start = clock.now_ns();
    // Acquire: pairs with each CPU's Release increment.
    while STARTED.load(Ordering::Acquire) < (CPUS - 1) as u32 {
        if clock.now_ns() - start > 10_000_000_000 {
            println!("pagepin-qemu FAILED: the secondary CPUs did not start");
            el2::semihosting_exit(4);
        }
        core::hint::spin_loop();
    }
    println!(
        "pagepin-qemu: 4 CPUs at EL2: CPU 0 balloons ({ROUNDS} rounds), CPU 1 pins for a device, CPUs 2-3 run the guest at EL1 (VMID {VMID})"
    );

    balloon_rounds(shared, &mut tables, &mut chunks, &mut free, &mut stats);

    // Stop the device and the guest.
    // Relaxed (both): polled; nothing is published through them.
    STOP.store(true, Ordering::Relaxed);
    CONTROL.stop.store(1, Ordering::Relaxed);
    let stop_at = clock.now_ns();
    // Acquire: pairs with each CPU's Release increment after its counters.
    while DONE.load(Ordering::Acquire) < (CPUS - 1) as u32 {
        if clock.now_ns() - stop_at > 20_000_000_000 {
            violation(format_args!("a CPU did not stop"));
            break;
        }
        core::hint::spin_loop();
    }
    // Balloon everything out, then compare with the MMU once more.
    let mut final_rng = Rng(0x1234_5678_9abc_def1);
    for (chunk, state) in chunks.iter_mut().enumerate() {
        let r = final_rng.next();
        if balloon(shared, &mut tables, chunk, *state, &mut free, r, &mut stats) {
            *state = ChunkState::Empty;
        }
    }
    at_sweep(&walker, &probes[..n_probes], &mut rng, &mut stats.at);
    for (i, meta) in METAS.iter().enumerate() {
        let w = meta.load();
        if !w.is_free() || !w.is_idle() || w.is_truncating() {
            violation(format_args!(
                "page {:#x} ends as {w:?}",
                FIRST_PFN + i as u64
            ));
        }
    }
    if !shared.leases.is_empty() {
        violation(format_args!("{} leases left", shared.leases.len()));
    }
    let elapsed_ms = (clock.now_ns() - start) / 1_000_000;
    // Relaxed: the other CPUs' counters were published by DONE (Acquire above).
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let touches = load(&TOUCHES[2]) + load(&TOUCHES[3]);
    let skips = load(&GUEST_SKIPS[2]) + load(&GUEST_SKIPS[3]);
    let faults = load(&S2_FAULTS[2]) + load(&S2_FAULTS[3]);
    let pinned = load(&PINNED);
    if touches == 0 || pinned == 0 || stats.ballooned == 0 {
        violation(format_args!(
            "nothing raced: guest touches {touches}, pages pinned {pinned}, balloons {}",
            stats.ballooned
        ));
    }
    if skips > faults {
        violation(format_args!(
            "the guest skipped {skips} loads but the hypervisor handled {faults} stage-2 faults"
        ));
    }
    println!(
        "pagepin-qemu: {elapsed_ms} ms; balloon: populated {}, ballooned out {}, refilled at once {}, stage-2 shootdowns {}; \
         device: GUP calls {}, pages pinned and checked {pinned}, stopped by a changed entry {}, refused (truncating/free) {}, \
         leases {} (revoked by a balloon {}); guest: pages touched and tag-checked {touches}, stage-2 faults taken and skipped {faults} \
         (loads among them {skips}); AT S12E1R/W: {} IPAs, {} checks, {} mismatches",
        stats.populated,
        stats.ballooned,
        stats.refilled,
        stats.flushes,
        load(&PIN_CALLS),
        load(&CHANGED),
        load(&REFUSED),
        load(&LEASES_TAKEN),
        load(&LEASES_REVOKED),
        stats.at.ipas,
        stats.at.checks,
        stats.at.mismatches,
    );
    let violations = load(&VIOLATIONS);
    let mismatches = stats.at.mismatches;
    if violations != 0 || mismatches != 0 {
        println!("pagepin-qemu FAILED: {violations} violations, {mismatches} mismatches");
    }
    // checks: AT comparisons, pinned pages checked by the device, guest
    // pages whose tag the guest checked.
    let checks = stats.at.checks + pinned + touches;
    println!(
        "pagepin-qemu arch=aarch64 mode=stage2 cpus={CPUS} granule=4k levels={} checks={checks} mismatches={mismatches} violations={violations}",
        Format::DEPTH
    );
    if violations == 0 && mismatches == 0 {
        el2::system_off()
    } else {
        el2::semihosting_exit(1)
    }
}

/// CPUs 1-3, from `secondary_entry` at EL2.
#[unsafe(no_mangle)]
extern "C" fn secondary_main() -> ! {
    let shared = shared();
    let cpu = el2::cpu_index();
    // Release: CPU 0 counts the started CPUs.
    STARTED.fetch_add(1, Ordering::Release);
    match cpu {
        1 => device(shared),
        _ => vcpu(shared, cpu),
    }
    // Release: publishes this CPU's counters to CPU 0.
    DONE.fetch_add(1, Ordering::Release);
    el2::halt()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!(
        "pagepin-qemu FAILED: panic on CPU {}: {info}",
        el2::cpu_index()
    );
    el2::semihosting_exit(2)
}
