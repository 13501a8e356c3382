//! The race, on the live MMU tables: CPUs 1.. pin random ranges of a mapped
//! "file" with GUP-fast and write through the pinned pages' physical
//! addresses; CPU 0 maps the file's slots and truncates them with the typestate
//! protocol, freeing, poisoning and reusing data pages and page-table pages.
//! The structure of `examples/pin_race.rs`, on bare metal.
//!
//! # Memory
//!
//! Physical (all RAM, identity-mapped; `-m 2G`):
//!
//! | range | what |
//! |---|---|
//! | `DATA_BASE ..` 48 MiB | 24 layout-managed units of 2 MiB, each split into 512 single-page units or merged while free (`units`) |
//! | then 6 MiB | 24 blocks of 64 single-page units |
//! | `GIANT_BASE` (1 GiB) .. 2 GiB | one layout-managed unit of 1 GiB |
//!
//! Virtual (the file, in the kernel's own tables at `file_va`, a PML4 slot of
//! its own with 4 levels and a PML5 slot of its own with 5): 16 slots of 2 MiB,
//! each empty, or one 2 MiB leaf over a 2 MiB unit (whole, or split into
//! single pages), or 64 leaves of 4 KiB over single-page units; and at
//! `file_va + 1 GiB` one slot that is empty or a 1 GiB leaf over the 1 GiB
//! unit. Half the truncates of a 2 MiB slot map the same unit at the same
//! slot again at once, with the same leaf entry, split if it was whole and
//! merged if it was split.
//!
//! # Checks (per pinned page, while pinned)
//!
//! Every data page holds its allocation's generation in its first word
//! (`POISON` while free); the walker checks that word against the unit's
//! current generation, checks that the unit is mapped at the slot it was pinned
//! through, that the meta that counts for the page now (the memory map's
//! answer) holds a pin (DESIGN.md invariant 7: a pin counted on a unit that
//! was split in the meantime is on the wrong meta), writes its own word of
//! the page (word `1 + cpu`) and reads it back,
//! and checks again before releasing that the generation has not changed. A
//! stop for malformed tables, a PFN outside the memory map or missing
//! permissions is a violation too. At the end every page must be idle and
//! unmarked.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use pagepin::guard::WalkGuard;
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::{GetErrorKind, Hold, PageMeta};
use pagepin::table::{
    LeafSizes, MapRequest, PagingFormat, Perms, PhysAddr, Retire, TableAccess, TableBuilder,
    VaRange, VirtAddr, WalkItem, Walker,
};
use pagepin::truncate::{
    Extent, FileMapping, TableUnmapper, TlbShootdown, Truncate, Unmapper, Wait,
};
use pagepin::wait::{Clock, SpinWaiter};

use crate::shootdown::MAX_CPUS;
use crate::tables::{EPOCH, EpochTables, IdentityTables, IpiShootdown, IrqOffTables, IrqOffWalk};
use crate::units::{HUGE_PAGES, KernelMemMap, METAS};
use crate::{cpu, println};
use pagepin::wait::WaitSlot;

pub const KIB4: u64 = 4 << 10;
pub const MIB2: u64 = 2 << 20;
const GIB1: u64 = 1 << 30;

/// The first data page.
pub const DATA_BASE: u64 = 0x3c00_0000;
pub const HUGE_UNITS: u64 = 24;
const SMALL_BLOCKS: u64 = 24;
const SMALL_SLOT_PAGES: u64 = 64;
pub const SMALL_BASE: u64 = DATA_BASE + HUGE_UNITS * MIB2;
const SMALL_END: u64 = SMALL_BASE + SMALL_BLOCKS * SMALL_SLOT_PAGES * KIB4;
/// The 1 GiB unit.
pub const GIANT_BASE: u64 = GIB1;
pub const GIANT_PAGES: u64 = GIB1 / KIB4;
/// The end of the memory map (and of RAM with `-m 2G`).
pub const RAM_END: u64 = 2 * GIB1;
static_assertions::const_assert!(SMALL_END <= GIANT_BASE);

/// Slots of 2 MiB; slot `GIANT_SLOT` is the 1 GiB one.
const SLOTS: usize = 16;
const GIANT_SLOT: usize = SLOTS;
/// The writer picks the 1 GiB slot in one round of this many.
const GIANT_ODDS: u64 = 40;

/// Allocation units with instrumentation, indexed by head: every page of
/// the 2 MiB units (each may be a head, the units split), the single pages,
/// the 1 GiB unit.
const UNITS: usize = (HUGE_UNITS * HUGE_PAGES + SMALL_BLOCKS * SMALL_SLOT_PAGES + 1) as usize;
const GIANT_UNIT: usize = UNITS - 1;

/// The first word of a free page.
const POISON: u64 = 0xdead_dead_dead_dead;
/// The most pages one GUP call takes.
const MAX_WALKER_PAGES: usize = 600;

static MEMMAP: spin::Once<KernelMemMap> = spin::Once::new();

/// Per unit: the generation of its current allocation.
static GENERATION: [AtomicU64; UNITS] = [const { AtomicU64::new(0) }; UNITS];
/// Per unit: 1 + the slot it is mapped at, 0 when not mapped.
static OWNER: [AtomicU64; UNITS] = [const { AtomicU64::new(0) }; UNITS];

static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
/// Set by CPU 0 when its rounds are done.
static STOP: AtomicBool = AtomicBool::new(false);
/// Walkers that have finished and published their counts.
static FINISHED: AtomicUsize = AtomicUsize::new(0);

/// What a walker counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkerCounts {
    /// GUP-fast calls.
    pub calls: u64,
    /// Base pages pinned.
    pub pins: u64,
    /// Base pages pinned through the 1 GiB leaf.
    pub giant_pins: u64,
    /// Calls stopped by an entry that changed under the walk.
    pub changed: u64,
    /// Calls refused by a truncating or free page.
    pub refused: u64,
}

static COUNTS: [spin::Mutex<WalkerCounts>; MAX_CPUS] = [const {
    spin::Mutex::new(WalkerCounts {
        calls: 0,
        pins: 0,
        giant_pins: 0,
        changed: 0,
        refused: 0,
    })
}; MAX_CPUS];

/// What the truncating CPU counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterCounts {
    /// Slots truncated (marked, unmapped, drained, freed).
    pub truncates: u64,
    /// Of them, 1 GiB slots.
    pub giant_truncates: u64,
    /// Shootdowns (each acknowledged by every other CPU).
    pub shootdowns: u64,
    /// 2 MiB units split into single pages (while free).
    pub splits: u64,
    /// 2 MiB units merged back (while free).
    pub merges: u64,
    /// Truncated 2 MiB slots mapped again at once over the same unit with
    /// the same leaf entry (split or merged the other way).
    pub remaps: u64,
    /// Stalled walkers answered (`stall=N`).
    pub stalls_answered: u64,
    /// Of them, those whose page's slot was truncated for them.
    pub stall_truncates: u64,
    /// Of those, the units mapped again at once at another empty slot, with
    /// the same unit sizes.
    pub relocations: u64,
}

/// Records a violation (the first ten are printed). In a stretch boot (a
/// broken-build boot) the first one ends the boot with a failure: a pin
/// counted on the wrong meta can leave CPU 0's drain waiting for ever.
pub fn violation(args: core::fmt::Arguments<'_>) {
    // Relaxed: a count, read after every CPU finished.
    if VIOLATIONS.fetch_add(1, Ordering::Relaxed) < 10 {
        println!("violation on CPU {}: {args}", crate::apic::id());
    }
    // Relaxed: written before the SIPIs.
    if FAIL_FAST.load(Ordering::Relaxed) {
        println!("pagepin-qemu FAILED: a violation in a stretch boot (stopped at the first)");
        crate::serial::exit(crate::serial::EXIT_FAILURE);
    }
}

/// Violations so far.
pub fn violations() -> u64 {
    // Relaxed: read after the walkers' FINISHED Release, by CPU 0.
    VIOLATIONS.load(Ordering::Relaxed)
}

/// The boot's race options (`main::Config`), set by CPU 0 before the SIPIs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `unmap=leaves`: a truncate of a 2 MiB slot clears its leaf in place
    /// and never detaches the table holding it (see [`LeafUnmapper`]).
    pub unmap_leaves: bool,
    /// `layout=unversioned`: the memory map keeps no layout version.
    pub versioned: bool,
    /// `stretch=N` (non-zero): the boot stops at its first violation.
    pub fail_fast: bool,
    /// `stretch2m=1`: [`Stretched`] also waits on every lookup that answers
    /// a whole 2 MiB unit.
    pub stretch_2m: bool,
    /// `stall=N` (non-zero): one GUP-fast call in N of each walker stalls in
    /// its first lookup (see [`Stretched`]).
    pub stall_every: u64,
}

/// [`Options::unmap_leaves`].
static UNMAP_LEAVES: AtomicBool = AtomicBool::new(false);
/// [`Options::fail_fast`].
static FAIL_FAST: AtomicBool = AtomicBool::new(false);
/// [`Options::stretch_2m`].
static STRETCH_2M: AtomicBool = AtomicBool::new(false);
/// [`Options::stall_every`].
static STALL_EVERY: AtomicU64 = AtomicU64::new(0);
/// A stalled walker's request (`stall=N`): 1 + the PFN it has just looked
/// up, 0 when none. One walker at a time; CPU 0 answers it at its next round.
static STALLED: AtomicU64 = AtomicU64::new(0);
/// How long a stalled walker waits for CPU 0's answer at most, in TSC ticks
/// (about a second: CPU 0 answers at its next round, which may be a 1 GiB
/// slot's allocation or poisoning).
const STALL_MAX_TICKS: u64 = 1 << 31;

/// Frees every page and builds the memory map (CPU 0, before any walker).
pub fn init(options: Options) {
    // Relaxed: written before the SIPIs, which order them for the APs.
    UNMAP_LEAVES.store(options.unmap_leaves, Ordering::Relaxed);
    FAIL_FAST.store(options.fail_fast, Ordering::Relaxed);
    STRETCH_2M.store(options.stretch_2m, Ordering::Relaxed);
    STALL_EVERY.store(options.stall_every, Ordering::Relaxed);
    for meta in &METAS {
        // SAFETY: before any walker runs and before any allocation, the data
        // pages are the kernel's own and no file VA maps them: only the
        // kernel's direct map does (the boot tables' identity map, then the
        // builder's of 0..2 GiB), which GUP-fast never walks (the walkers pin
        // file VAs only). No truncate exists yet to have marked one.
        if let Err(e) = unsafe { meta.free() } {
            violation(format_args!("initial free failed: {e}"));
        }
    }
    MEMMAP.call_once(|| KernelMemMap::new(options.versioned));
}

fn memmap() -> &'static KernelMemMap {
    MEMMAP.get().expect("race::init runs first")
}

/// Word `word` (of 512) of data page `pfn`, through the identity map.
fn page_word(pfn: Pfn, word: usize) -> &'static AtomicU64 {
    let pa = pfn.0 * KIB4;
    assert!(
        (DATA_BASE..RAM_END).contains(&pa) && word < 512,
        "{pfn} is not a data page"
    );
    let va = pa + 8 * word as u64;
    // SAFETY: `va` is 8-aligned and inside the data pages, which the kernel's
    // tables identity-map (VA == PA, 0..2 GiB) and which are RAM that no Rust
    // object occupies (the kernel image ends below `DATA_BASE`, checked at
    // boot); every access to them in this kernel is through these atomics.
    unsafe { &*(va as *const AtomicU64) }
}

/// The instrumentation index of the unit whose head is `head`.
fn unit_index(head: Pfn) -> Option<usize> {
    let pa = head.0 * KIB4;
    if (DATA_BASE..SMALL_BASE).contains(&pa) {
        Some(((pa - DATA_BASE) / KIB4) as usize)
    } else if (SMALL_BASE..SMALL_END).contains(&pa) {
        Some((HUGE_UNITS * HUGE_PAGES + (pa - SMALL_BASE) / KIB4) as usize)
    } else if pa == GIANT_BASE {
        Some(GIANT_UNIT)
    } else {
        None
    }
}

/// The file's first virtual address: its own PML4 slot (4-level) or PML5 slot
/// (5-level, above the 48-bit space).
pub fn file_va(levels: usize) -> u64 {
    if levels == 5 { 1 << 48 } else { 1 << 39 }
}

fn slot_va(file_va: u64, slot: usize) -> u64 {
    if slot == GIANT_SLOT {
        file_va + GIB1
    } else {
        file_va + slot as u64 * MIB2
    }
}

/// The slot `va` lies in.
fn slot_of(file_va: u64, va: u64) -> usize {
    if va >= file_va + GIB1 {
        GIANT_SLOT
    } else {
        ((va - file_va) / MIB2) as usize
    }
}

/// xorshift64*.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Truncates CPU 0 has finished (for [`Stretched`]).
static TRUNCATES_DONE: AtomicU64 = AtomicU64::new(0);

/// The memory map as the walkers see it in a *stretch* boot (`stretch=N`):
/// a lookup answers from the map at once, but before it returns that answer
/// it waits until CPU 0 has finished four more truncates, or for at most `N`
/// pause loops of 100: every eighth lookup, and with `stretch2m=1` every
/// lookup that answers a whole 2 MiB unit (where the split-and-remap race
/// is). GUP-fast looks a page's unit up between its load of the
/// entry and its get, so this widens the window in which the entry can be
/// cleared, the unit freed, split and allocated again (the window the
/// re-checks close) from a few instructions to four truncates, whatever the
/// host's load does to the vCPUs' relative speed; and the answer GUP-fast
/// gets is the one from before the window, as if the walker had been
/// preempted right after the lookup. (Bounded: the walker may hold pins that
/// the truncate's drain waits for.)
///
/// With `stall=N` one GUP-fast call in `N` is *armed* by its walker: its first
/// lookup (after its first entry load, before its first get, so the walker
/// holds no pin CPU 0's drain could wait for) answers from the map, then
/// publishes the PFN in [`STALLED`] and waits (at most [`STALL_MAX_TICKS`])
/// until CPU 0, at its next round, has truncated the slot that page is
/// mapped at and mapped the unit again at once at another empty slot, with
/// the same unit sizes (the stall handshake of `examples/dax_truncate.rs`,
/// aimed at the entry re-check: the unit and its answer are the same again,
/// only the entry the walker loaded is gone). An armed lookup is not
/// stretched otherwise. Test instrumentation of this kernel only; pagepin is
/// unchanged.
struct Stretched {
    map: &'static KernelMemMap,
    spins: u64,
    calls: core::cell::Cell<u64>,
    /// The next lookup stalls (`stall=N`; set by the walker before a call).
    armed: core::cell::Cell<bool>,
}

/// The stall of an armed lookup of `pfn` (see [`Stretched`]).
fn stall(pfn: Pfn) {
    // Relaxed, here and in the writer: a scheduling hint that carries no
    // data; every order the race relies on is pagepin's own.
    if STALLED
        .compare_exchange(0, pfn.0 + 1, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        // Another walker is stalled: this call goes on at once.
        return;
    }
    let start = cpu::rdtsc();
    // Relaxed: as above (STALLED); STOP is a flag that publishes nothing.
    while STALLED.load(Ordering::Relaxed) == pfn.0 + 1 {
        // Relaxed: as above.
        if STOP.load(Ordering::Relaxed) || cpu::rdtsc().wrapping_sub(start) > STALL_MAX_TICKS {
            // Given up: withdraw the request (unless answered meanwhile).
            // Relaxed: as above.
            let _ = STALLED.compare_exchange(pfn.0 + 1, 0, Ordering::Relaxed, Ordering::Relaxed);
            break;
        }
        cpu::pause(100);
    }
}

// SAFETY: every answer is the inner map's, unchanged, only returned later: as
// if the calling CPU had been interrupted between the inner lookup's return
// and this one's, which no map can prevent and which the contract allows
// (an answer may be stale by the time the caller uses it; GUP-fast re-checks
// it after its get). Every other point holds as it does for `KernelMemMap`,
// whose methods these are.
unsafe impl MemoryMap for Stretched {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        let answer = self.map.unit(pfn);
        if self.armed.replace(false) {
            // A unit of a 2 MiB or 64-page slot (the 1 GiB unit has no other
            // slot to go to).
            if answer
                .as_ref()
                .is_ok_and(|u| u.head.0 * KIB4 < SMALL_END && u.head.0 * KIB4 >= DATA_BASE)
            {
                stall(pfn);
            }
            return answer;
        }
        let calls = self.calls.get().wrapping_add(1);
        self.calls.set(calls);
        // Relaxed: written before the SIPIs.
        let whole_2m = STRETCH_2M.load(Ordering::Relaxed)
            && answer
                .as_ref()
                .is_ok_and(|u| u.pages == HUGE_PAGES && u.head.0 * KIB4 < SMALL_BASE);
        if self.spins != 0 && (whole_2m || calls.is_multiple_of(8)) {
            // Relaxed: only a progress hint; nothing is read through it.
            let start = TRUNCATES_DONE.load(Ordering::Relaxed);
            for _ in 0..self.spins {
                // Relaxed: as above.
                if TRUNCATES_DONE.load(Ordering::Relaxed) >= start + 4 {
                    break;
                }
                cpu::pause(100);
            }
        }
        answer
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.map.wait_slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.map.wake(head);
    }

    fn layout_version(&self) -> Option<u64> {
        self.map.layout_version()
    }
}

/// The walker of CPU `cpu` (1..): pins, checks, writes and releases until CPU 0
/// says stop; then publishes its counts. The walk guard is interrupts-off, or
/// an epoch read section if the boot set up [`EPOCH`] (`guard=epoch`);
/// `stretch` is the spin of [`Stretched`] (0: none).
///
/// The guard is picked at run time and the two have different domains, so the
/// walker (and its `Gup`) is made in each arm, of that arm's domain: with
/// `Walker::new_in`, for the domain of the retire hook CPU 0's builder has in
/// this boot, since the builder is CPU 0's and out of reach here (its root
/// comes through `ROOT`).
pub fn walker<F: PagingFormat>(cpu: usize, root: PhysAddr, file_va: u64, seed: u64, stretch: u64) {
    let map = Stretched {
        map: memmap(),
        spins: stretch,
        calls: core::cell::Cell::new(0),
        armed: core::cell::Cell::new(false),
    };
    match EPOCH.get() {
        Some(epoch) => {
            // SAFETY: `root` is the root of CPU 0's builder, the only one
            // that detaches tables reachable from it. `EPOCH` is set, so this
            // is a `guard=epoch` boot, whose builder retires every table it
            // detaches through `IpiRetire::with_epoch(EPOCH)`, of domain
            // `EpochTables` (`main::run`).
            let walker =
                unsafe { Walker::<F, _, EpochTables>::new_in(&IdentityTables::WALKER, root) };
            let gup = Gup::new(walker, &map);
            match epoch.reader() {
                Ok(reader) => walk(cpu, &gup, &map, &reader, file_va, seed),
                Err(e) => violation(format_args!("epoch reader: {e}")),
            }
        }
        None => {
            // SAFETY: `root` is the root of CPU 0's builder, the only one
            // that detaches tables reachable from it. `EPOCH` is not set
            // (and is set, if at all, before the SIPIs), so this is a
            // `guard=irq-off` boot, whose builder retires every table it
            // detaches through `IpiRetire::new()`, of domain `IrqOffTables`
            // (`main::run`).
            let walker =
                unsafe { Walker::<F, _, IrqOffTables>::new_in(&IdentityTables::WALKER, root) };
            let gup = Gup::new(walker, &map);
            // SAFETY: this CPU is online (`shootdown::set_online` counted it
            // before GO), so the retire hook of the tables this guard can
            // guard (domain `IrqOffTables`: `IpiRetire::new()`) reuses a
            // detached table only after a shootdown started after the
            // detachment was acknowledged by this CPU too. (The
            // `broken-no-ack` build breaks this promise on purpose.)
            let guard = unsafe { IrqOffWalk::new() };
            walk(cpu, &gup, &map, &guard, file_va, seed);
        }
    }
}

/// The walkers' GUP-fast: pagepin's, or in a broken build its broken twin
/// without the entry re-check (`broken-no-recheck`) or the unit re-check
/// (`broken-no-unit-recheck`), called by name (the library's `broken-twins`
/// feature).
fn get_pages<F: PagingFormat, D, G: WalkGuard<Domain = D>>(
    gup: &Gup<'_, F, IdentityTables, Stretched, D>,
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

fn walk<F: PagingFormat, D, G: WalkGuard<Domain = D>>(
    cpu: usize,
    gup: &Gup<'_, F, IdentityTables, Stretched, D>,
    map: &Stretched,
    guard: &G,
    file_va: u64,
    seed: u64,
) {
    // Relaxed: written before the SIPIs.
    let stall_every = STALL_EVERY.load(Ordering::Relaxed);
    let mut rng = Rng(seed.wrapping_add(0x9e37_79b9 * cpu as u64) | 1);
    let mut out = [Pfn(0); MAX_WALKER_PAGES];
    // Per page held: its unit's instrumentation index and generation when checked.
    let mut seen: [Option<(usize, u64)>; MAX_WALKER_PAGES] = [None; MAX_WALKER_PAGES];
    let mut counts = WalkerCounts::default();
    // Relaxed: only a flag; the counts are published by FINISHED's Release.
    while !STOP.load(Ordering::Relaxed) {
        let r = rng.next();
        let pages = 1 + (r >> 20) % MAX_WALKER_PAGES as u64;
        let (start, end) = if r.is_multiple_of(8) {
            let start = slot_va(file_va, GIANT_SLOT) + ((r >> 8) % GIANT_PAGES) * KIB4;
            (start, slot_va(file_va, GIANT_SLOT) + GIB1)
        } else {
            let slot = (r % SLOTS as u64) as usize;
            let start = slot_va(file_va, slot) + ((r >> 8) % 512) * KIB4;
            (start, slot_va(file_va, SLOTS - 1) + MIB2)
        };
        let len = (pages * KIB4).min(end - start);
        counts.calls += 1;
        map.armed
            .set(stall_every != 0 && (r >> 40).is_multiple_of(stall_every));
        let taken = get_pages(
            gup,
            guard,
            VirtAddr(start),
            len,
            GupFlags::PIN | GupFlags::WRITE,
            &mut out,
        );
        // Not armed for the next call (this one may have stopped before any
        // lookup).
        map.armed.set(false);
        let taken = match taken {
            Ok(taken) => taken,
            Err(e) => {
                violation(format_args!("GUP refused a valid range: {e}"));
                continue;
            }
        };
        match taken.stop {
            Stop::Complete | Stop::Absent { .. } | Stop::OutputFull { .. } => {}
            Stop::Changed { .. } => counts.changed += 1,
            Stop::Refused {
                kind: GetErrorKind::Truncating | GetErrorKind::Free,
                ..
            } => counts.refused += 1,
            other => violation(format_args!("unexpected stop at {start:#x}: {other}")),
        }
        let held = &out[..taken.pages];
        let stamp = counts.calls;
        for (i, &pfn) in held.iter().enumerate() {
            let va = start + i as u64 * KIB4;
            let through = slot_of(file_va, va);
            let unit = memmap().unit(pfn);
            let Some((unit, ui)) = unit.ok().and_then(|u| Some((u, unit_index(u.head)?))) else {
                violation(format_args!("took {pfn} (at {va:#x}), not a data unit"));
                seen[i] = None;
                continue;
            };
            // Invariant 7 (unit identity): the pin is on the meta that counts
            // for the page now. The map's answer is current: this walker's
            // pin, if it is on that meta, keeps the unit from being split or
            // merged. `pins()` loads the word (Acquire), and coherence makes
            // this CPU's own get visible to it; other pins only add. So 0
            // pins means ours is on another meta (a unit that changed under
            // the get, which GUP-fast's unit re-check exists to catch).
            if unit.meta.pins() == 0 {
                violation(format_args!(
                    "{pfn} pinned at {va:#x}, but the meta that counts for it now (head {}, {} pages) holds no pin",
                    unit.head, unit.pages
                ));
            }
            // Relaxed: the instrumentation was written before the unit's
            // allocate, a Release RMW that the get (Acquire) read from.
            let generation = GENERATION[ui].load(Ordering::Relaxed);
            let owner = OWNER[ui].load(Ordering::Relaxed);
            let contents = page_word(pfn, 0).load(Ordering::Relaxed);
            seen[i] = Some((ui, generation));
            if contents == POISON || contents != generation {
                violation(format_args!(
                    "{pfn} pinned at {va:#x} holds {contents:#x}, generation {generation}"
                ));
            }
            if owner != through as u64 + 1 {
                violation(format_args!(
                    "{pfn} pinned through slot {through} but mapped at slot {}",
                    owner as i64 - 1
                ));
            }
            // The write a device would make into the pinned page (this CPU's
            // own word of it), read back.
            let mine = page_word(pfn, 1 + cpu);
            // Relaxed: only this CPU writes this word.
            mine.store(stamp, Ordering::Relaxed);
            if mine.load(Ordering::Relaxed) != stamp {
                violation(format_args!("{pfn}: write through its PA did not stick"));
            }
            if through == GIANT_SLOT {
                counts.giant_pins += 1;
            }
        }
        // Still the same allocation, up to the release.
        for (&pfn, &seen) in held.iter().zip(&seen) {
            let Some((ui, generation)) = seen else {
                continue;
            };
            // Relaxed: as above; a change would be a reuse under the pin.
            let now = GENERATION[ui].load(Ordering::Relaxed);
            let contents = page_word(pfn, 0).load(Ordering::Relaxed);
            if now != generation || contents != generation {
                violation(format_args!(
                    "{pfn} reallocated or poisoned while pinned: generation {generation} -> {now}, contents {contents:#x}"
                ));
            }
        }
        // SAFETY: `held` is what this walker's GUP-fast call above pinned
        // (`Hold::Pin` on each PFN, into its own output), not released yet:
        // this is the one release of those pins.
        if let Err(e) = unsafe { release(memmap(), held, Hold::Pin) } {
            violation(format_args!("release failed: {e}"));
        }
        counts.pins += held.len() as u64;
    }
    *COUNTS[cpu].lock() = counts;
    // Release: CPU 0's Acquire load of FINISHED sees the counts (also under
    // their lock) and every access this walker made.
    FINISHED.fetch_add(1, Ordering::Release);
}

/// The counts of walker `cpu` (after [`wait_finished`]).
pub fn counts(cpu: usize) -> WalkerCounts {
    *COUNTS[cpu].lock()
}

/// Stops the walkers and waits until `walkers` of them have finished.
pub fn wait_finished(walkers: usize) {
    // Relaxed: a flag; nothing is published through it.
    STOP.store(true, Ordering::Relaxed);
    // Acquire: pairs with each walker's Release increment.
    while FINISHED.load(Ordering::Acquire) < walkers {
        core::hint::spin_loop();
    }
}

/// Nanoseconds from the TSC, taking one tick as one nanosecond (uncalibrated:
/// the drain waits without a deadline, the clock only has to move forward).
struct TscClock;

impl Clock for TscClock {
    fn now_ns(&self) -> u64 {
        cpu::rdtsc()
    }
}

#[derive(Clone, Copy)]
enum SlotState {
    Empty,
    /// A 2 MiB leaf over 2 MiB unit `unit`: one unit of 512 pages, or
    /// (`split`) 512 units of one page, each its own allocation.
    Huge {
        unit: u64,
        split: bool,
    },
    /// 64 leaves of 4 KiB over block `block` of single pages.
    Small {
        block: u64,
    },
    /// The 1 GiB leaf over the 1 GiB unit.
    Giant,
}

/// Allocates the unit at `head` (`pages` pages) for `slot`: new generation in
/// every page, owner, then the meta's Release allocate.
fn allocate(head: Pfn, pages: u64, slot: usize) {
    let Some(ui) = unit_index(head) else {
        violation(format_args!("allocate: {head} is no unit"));
        return;
    };
    // Relaxed: only this CPU writes the instrumentation; walkers read it after
    // the allocate below (Release), through their get (Acquire).
    let generation = GENERATION[ui].load(Ordering::Relaxed) + 1;
    GENERATION[ui].store(generation, Ordering::Relaxed);
    for i in 0..pages {
        page_word(Pfn(head.0 + i), 0).store(generation, Ordering::Relaxed);
    }
    OWNER[ui].store(slot as u64 + 1, Ordering::Relaxed);
    let meta = memmap().unit(head).map(|u| u.meta);
    match meta.map(PageMeta::allocate) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => violation(format_args!("allocate {head}: {e}")),
        Err(e) => violation(format_args!("allocate: {e}")),
    }
}

/// Poisons the `pages` pages from `first` and clears their units' owners (after
/// they were freed).
fn poison(first: Pfn, pages: u64, unit_pages: u64) {
    for i in 0..pages {
        // Relaxed: nobody may hold these pages; a walker that still reads them
        // is what the checks catch.
        page_word(Pfn(first.0 + i), 0).store(POISON, Ordering::Relaxed);
    }
    for u in (0..pages).step_by(unit_pages as usize) {
        if let Some(ui) = unit_index(Pfn(first.0 + u)) {
            // Relaxed: as in `allocate`, only this CPU writes it.
            OWNER[ui].store(0, Ordering::Relaxed);
        }
    }
}

/// Which of `len` free units to allocate: half the time the one freed last
/// (an allocator's hot list: the unit a walker may still be looking at comes
/// back at once, under another slot), else one at random.
fn reuse(r: u64, pick: usize, len: usize) -> usize {
    if r & (1 << 40) != 0 {
        len - 1
    } else {
        pick % len
    }
}

/// Allocates 2 MiB unit `unit` (free) for `slot`, split into single pages
/// or merged, changing the memory map first if it is the other way now.
fn allocate_huge(unit: u64, split: bool, slot: usize, counts: &mut WriterCounts) {
    let head = (DATA_BASE + unit * MIB2) / KIB4;
    if memmap().is_split(unit) != split && memmap().set_split(unit, split) {
        if split {
            counts.splits += 1;
        } else {
            counts.merges += 1;
        }
    }
    if split {
        // Each page its own allocation (generation, owner), as separate
        // owners would get them from an allocator.
        for p in 0..HUGE_PAGES {
            allocate(Pfn(head + p), 1, slot);
        }
    } else {
        allocate(Pfn(head), HUGE_PAGES, slot);
    }
}

/// Why [`LeafUnmapper`] failed.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the fields are read by Debug, in the violation message"
)]
enum LeafUnmapError {
    /// The walk to the slot's leaf failed.
    Walk(pagepin::table::WalkError),
    /// The slot is not mapped by the 2 MiB leaf over the extent.
    NotTheLeaf(VirtAddr),
    /// The leaf's entry could not be reached.
    Access(pagepin::table::AccessError),
}

/// The unmapper of a 2 MiB slot in an `unmap=leaves` boot: clears the slot's
/// 2 MiB leaf in place and shoots it down, and never detaches the table that
/// holds it (the builder's unmap detaches a table left empty). The entry
/// above the leaf stays the same, so when the slot is mapped again with the
/// same leaf entry, GUP-fast's entry re-check cannot tell the two mappings
/// apart: only the unit re-check can see that the unit changed (split) in
/// between. Nothing is detached, so no table goes to the retire hook.
struct LeafUnmapper<'t, 'b, F, R> {
    tables: &'t mut TableBuilder<'b, F, IdentityTables, R>,
    va: VirtAddr,
    first: Pfn,
    tlb: IpiShootdown,
}

// SAFETY: `unmap_extent` takes only the extent of the one 2 MiB unit its slot
// maps (anything else is `NotTheLeaf`), checks that the slot's leaf in the
// live tables is that 2 MiB leaf over that unit, clears it, then flushes the
// 2 MiB through `IpiShootdown` (`invlpg` here and on every online CPU,
// acknowledged: see its SAFETY comment) before it returns `Ok`. The writer
// maps a unit at one slot at a time and truncates it before mapping it
// elsewhere, so the slot was its only file mapping: no entry a walker or an
// MMU can reach maps it at a file VA any more, and no TLB translates one to
// it. (The identity map of 0..2 GiB is the kernel's direct map, which the
// promise excludes.)
unsafe impl<F: PagingFormat, R: Retire> Unmapper for LeafUnmapper<'_, '_, F, R> {
    type Error = LeafUnmapError;

    fn unmap_extent(&mut self, extent: Extent) -> Result<(), LeafUnmapError> {
        if extent.first != self.first || extent.pages != HUGE_PAGES {
            return Err(LeafUnmapError::NotTheLeaf(self.va));
        }
        let item = self
            .tables
            .walker()
            .translate(self.va)
            .map_err(LeafUnmapError::Walk)?;
        let leaf = match item {
            WalkItem::Leaf(leaf)
                if leaf.leaf_va == self.va
                    && leaf.size == MIB2
                    && leaf.leaf_pa.0 == self.first.0 * KIB4 =>
            {
                leaf
            }
            _ => return Err(LeafUnmapError::NotTheLeaf(self.va)),
        };
        let loc = leaf.entry.loc;
        // SAFETY: the store below is the one the builder's own unmap makes
        // for a leaf of its mapping (0, Relaxed), to the 2 MiB leaf the
        // builder mapped over this unit (checked above); it only skips the
        // detach of a table left empty, which stays attached: the builder
        // keeps no count of a table's entries (it scans), so its next map
        // there reuses the table and a later unmap may detach it.
        let word = unsafe { IdentityTables::BUILDER.entry(loc.table, loc.index) }
            .map_err(LeafUnmapError::Access)?;
        // Relaxed, as the builder's own leaf clear: a cleared entry publishes
        // nothing. A walker that loaded the old value is caught by GUP-fast's
        // re-checks, which are ordered after this store by the page
        // metadata's Release free (after the drain) and the walker's Acquire
        // get.
        word.store(0, Ordering::Relaxed);
        if let Ok(range) = VaRange::new(self.va, MIB2) {
            self.tlb.flush(0, range, LeafSizes::of(MIB2));
        }
        Ok(())
    }
}

/// Truncates `extent` with the typestate protocol through `unmapper`;
/// returns the units freed (`None` after a violation).
fn truncate<U: Unmapper>(unmapper: &mut U, extent: Extent) -> Option<u64> {
    let clock = TscClock;
    let wait = Wait {
        waiter: &SpinWaiter,
        clock: &clock,
        deadline_ns: None,
    };
    // The protocol: mark (no new pins), unmap (clear the leaves, invlpg + IPI
    // shootdown acknowledged by every CPU), drain (every pin released), free.
    Truncate::mark(memmap(), core::iter::once(extent))
        .map_err(|e| violation(format_args!("mark: {e}")))
        .and_then(|t| {
            t.unmap(unmapper)
                .map_err(|e| violation(format_args!("unmap: {e:?}")))
        })
        .and_then(|t| {
            t.drain(&wait)
                .map_err(|e| violation(format_args!("drain: {e}")))
        })
        .and_then(|t| t.free().map_err(|e| violation(format_args!("free: {e}"))))
        .ok()
        .map(|freed| freed.units)
}

/// Maps `len` bytes of file pages from `pa` at file VA `va` in `leaf`-sized
/// leaves, user read-write (a refusal is a violation).
///
/// # Safety
///
/// As `TableBuilder::map`'s: the writer owns `pa .. pa + len` (they were
/// free, never allocated or freed by their last truncate, and have just been
/// allocated for this slot), records the mapping in its slot state, and
/// truncates the slot (unmap, then free) before the pages go to anyone else;
/// no truncate has them marked.
unsafe fn map_file<F: PagingFormat, R: Retire>(
    tables: &mut TableBuilder<'_, F, IdentityTables, R>,
    va: VirtAddr,
    pa: u64,
    len: u64,
    leaf: u64,
) {
    let perms = Perms::READ | Perms::WRITE | Perms::USER | Perms::ACCESSED | Perms::DIRTY;
    let req = MapRequest::new(va, PhysAddr(pa), len, leaf).with_perms(perms);
    // SAFETY: this function's contract, passed on. (A refused map may leave
    // part of the range mapped: the slot state records the whole, and the
    // slot's truncate unmaps whatever is there.)
    if let Err(e) = unsafe { tables.map(&req) } {
        violation(format_args!("map {va} failed: {e}"));
    }
}

/// CPU 0's side: `rounds` operations, each mapping an empty slot or truncating
/// a mapped one, on `tables` (the live tables every CPU runs on). A 2 MiB
/// slot is mapped over a unit that is merged or split (the memory map changed
/// while the unit is free); half its truncates map the same unit at the same
/// slot again at once, with the same leaf entry, split if it was merged and
/// merged if it was split (the refault that only GUP-fast's unit re-check can
/// tell from the old mapping).
pub fn writer<F: PagingFormat, R: Retire>(
    tables: &mut TableBuilder<'_, F, IdentityTables, R>,
    file_va: u64,
    rounds: u64,
    seed: u64,
) -> WriterCounts {
    let mut rng = Rng(seed ^ 0x5851_f42d_4c95_7f2d | 1);
    let mut state = [SlotState::Empty; SLOTS + 1];
    let mut huge_free = heapless::Vec::<u64, { HUGE_UNITS as usize }>::new();
    let mut small_free = heapless::Vec::<u64, { SMALL_BLOCKS as usize }>::new();
    for unit in 0..HUGE_UNITS {
        let _ = huge_free.push(unit);
    }
    for block in 0..SMALL_BLOCKS {
        let _ = small_free.push(block);
    }
    // Relaxed: written before the SIPIs.
    let unmap_leaves = UNMAP_LEAVES.load(Ordering::Relaxed);
    let mut counts = WriterCounts::default();
    for _ in 0..rounds {
        let r = rng.next();
        // A stalled walker (`stall=N`): this round truncates the 2 MiB or
        // 64-page slot its page is mapped at, and maps the unit again at
        // another slot. Relaxed: see `stall`.
        let stalled = STALLED.load(Ordering::Relaxed);
        let target = stalled_slot(stalled, &state);
        // The 1 GiB slot in one round of `GIANT_ODDS`: mapping it writes the
        // generation into 262144 pages, and poisoning it as many.
        let slot = if let Some(target) = target {
            target
        } else if r.is_multiple_of(GIANT_ODDS) {
            GIANT_SLOT
        } else {
            ((r / GIANT_ODDS) % SLOTS as u64) as usize
        };
        let va = VirtAddr(slot_va(file_va, slot));
        let pick = (r >> 16) as usize;
        match state[slot] {
            SlotState::Empty if slot == GIANT_SLOT => {
                allocate(Pfn(GIANT_BASE / KIB4), GIANT_PAGES, slot);
                // SAFETY: the giant unit is only ever mapped at this slot; the
                // slot is empty, so it was never allocated or its truncate
                // here freed it (a failed one keeps the slot mapped), and it
                // was just allocated again; `state` records it below.
                unsafe { map_file(tables, va, GIANT_BASE, GIB1, GIB1) };
                state[slot] = SlotState::Giant;
            }
            SlotState::Empty => {
                if r & (1 << 32) == 0 && !huge_free.is_empty() {
                    let unit = huge_free.swap_remove(reuse(r, pick, huge_free.len()));
                    let split = r & (1 << 33) != 0;
                    allocate_huge(unit, split, slot, &mut counts);
                    // SAFETY: `huge_free` holds units never allocated or
                    // freed by their truncate (a failed one leaks the unit);
                    // this one was just allocated for the slot, which `state`
                    // records below.
                    unsafe { map_file(tables, va, DATA_BASE + unit * MIB2, MIB2, MIB2) };
                    state[slot] = SlotState::Huge { unit, split };
                } else if !small_free.is_empty() {
                    let block = small_free.swap_remove(reuse(r, pick, small_free.len()));
                    let pa = SMALL_BASE + block * SMALL_SLOT_PAGES * KIB4;
                    for i in 0..SMALL_SLOT_PAGES {
                        allocate(Pfn(pa / KIB4 + i), 1, slot);
                    }
                    // SAFETY: as for `huge_free`: `small_free` holds blocks
                    // never allocated or freed by their truncate; this one's
                    // pages were just allocated for the slot, recorded below.
                    unsafe { map_file(tables, va, pa, SMALL_SLOT_PAGES * KIB4, KIB4) };
                    state[slot] = SlotState::Small { block };
                }
            }
            mapped => {
                let (first, pages, unit_pages) = match mapped {
                    SlotState::Huge { unit, split } => (
                        DATA_BASE + unit * MIB2,
                        HUGE_PAGES,
                        if split { 1 } else { HUGE_PAGES },
                    ),
                    SlotState::Small { block } => (
                        SMALL_BASE + block * SMALL_SLOT_PAGES * KIB4,
                        SMALL_SLOT_PAGES,
                        1,
                    ),
                    SlotState::Giant => (GIANT_BASE, GIANT_PAGES, GIANT_PAGES),
                    SlotState::Empty => unreachable!("matched above"),
                };
                let extent = Extent::new(Pfn(first / KIB4), pages);
                let freed = if unmap_leaves && matches!(mapped, SlotState::Huge { .. }) {
                    let mut unmapper = LeafUnmapper {
                        tables: &mut *tables,
                        va,
                        first: extent.first,
                        tlb: IpiShootdown::default(),
                    };
                    let freed = truncate(&mut unmapper, extent);
                    counts.shootdowns += unmapper.tlb.flushes;
                    freed
                } else {
                    // SAFETY: the extent's pages have one file mapping, this
                    // slot's (the writer maps a unit or block at one slot at a
                    // time and truncates it before mapping it elsewhere), in
                    // the one address space, `tables`; it is registered just
                    // below, and a truncate through this unmapper runs only if
                    // that succeeded. (The identity map of 0..2 GiB is the
                    // kernel's direct map, which the promise excludes.)
                    let mut unmapper = unsafe {
                        TableUnmapper::<_, _, _, _, 1>::new(
                            core::slice::from_mut(&mut *tables),
                            12,
                            IpiShootdown::default(),
                        )
                    };
                    let mapping = FileMapping {
                        space: 0,
                        va,
                        first: extent.first,
                        pages,
                    };
                    let freed = match unmapper.add_mapping(mapping) {
                        Ok(()) => truncate(&mut unmapper, extent),
                        Err(e) => {
                            violation(format_args!("unmapper: {e}"));
                            None
                        }
                    };
                    counts.shootdowns += unmapper.tlb().flushes;
                    freed
                };
                match freed {
                    Some(units) if units == pages / unit_pages => {}
                    Some(units) => violation(format_args!("freed {units} units")),
                    // The truncate failed (a violation, counted): the unit
                    // may still be mapped at this slot, marked or pinned. The
                    // slot keeps it, leaked: never poisoned, freed for reuse
                    // or mapped anywhere else, so every unit `map_file` maps
                    // has been unmapped and freed by its last truncate.
                    None => {}
                }
                if freed.is_some() {
                    poison(extent.first, pages, unit_pages);
                    state[slot] = SlotState::Empty;
                    // For a stalled walker: another empty slot for the unit.
                    let elsewhere = target.and_then(|_| {
                        (0..SLOTS)
                            .map(|i| (pick + i) % SLOTS)
                            .find(|&s| s != slot && matches!(state[s], SlotState::Empty))
                    });
                    if target.is_some() {
                        counts.stall_truncates += 1;
                    }
                    match mapped {
                        SlotState::Huge { unit, split } if elsewhere.is_some() => {
                            // The same unit at another slot at once, with the
                            // same unit sizes: the stalled walker's answer holds
                            // again, only the entry it loaded is gone.
                            let to = elsewhere.unwrap_or(slot);
                            allocate_huge(unit, split, to, &mut counts);
                            let to_va = VirtAddr(slot_va(file_va, to));
                            // SAFETY: the truncate above freed the unit (this is
                            // its success path), no other slot maps it, it was
                            // just allocated for `to`, recorded below.
                            unsafe { map_file(tables, to_va, first, MIB2, MIB2) };
                            state[to] = SlotState::Huge { unit, split };
                            counts.relocations += 1;
                        }
                        SlotState::Small { block } if elsewhere.is_some() => {
                            // As above, the block's 64 single pages.
                            let to = elsewhere.unwrap_or(slot);
                            for i in 0..SMALL_SLOT_PAGES {
                                allocate(Pfn(first / KIB4 + i), 1, to);
                            }
                            let to_va = VirtAddr(slot_va(file_va, to));
                            // SAFETY: as for a unit: the truncate above freed the
                            // block, just allocated for `to`, recorded below.
                            unsafe {
                                map_file(tables, to_va, first, SMALL_SLOT_PAGES * KIB4, KIB4)
                            };
                            state[to] = SlotState::Small { block };
                            counts.relocations += 1;
                        }
                        SlotState::Huge { unit, split } if r & (1 << 40) != 0 => {
                            // The same unit at the same slot again, with the same
                            // leaf entry, over units of the other size.
                            allocate_huge(unit, !split, slot, &mut counts);
                            // SAFETY: as for a relocation: the truncate above
                            // freed the unit, just allocated again for this
                            // slot, recorded below.
                            unsafe { map_file(tables, va, first, MIB2, MIB2) };
                            state[slot] = SlotState::Huge {
                                unit,
                                split: !split,
                            };
                            counts.remaps += 1;
                        }
                        SlotState::Huge { unit, .. } => {
                            let _ = huge_free.push(unit);
                        }
                        SlotState::Small { block } => {
                            let _ = small_free.push(block);
                        }
                        SlotState::Giant => counts.giant_truncates += 1,
                        SlotState::Empty => {}
                    }
                }
                counts.truncates += 1;
                // Relaxed: a progress hint for stretched walkers (after the
                // remap, so that a stretched lookup's window holds it).
                TRUNCATES_DONE.fetch_add(1, Ordering::Relaxed);
                // Detached tables whose shootdown is done: poisoned and back in
                // the pool, to be zero-filled and reused by the next map.
                if let Err(e) = tables.reclaim() {
                    violation(format_args!("reclaim: {e}"));
                }
            }
        }
        if stalled != 0 {
            // Let the walker go on (unless it gave up already). Relaxed: see
            // `stall`.
            let _ = STALLED.compare_exchange(stalled, 0, Ordering::Relaxed, Ordering::Relaxed);
            counts.stalls_answered += 1;
        }
    }
    counts
}

/// The slot a stalled walker's page (`stalled`: 1 + its PFN, or 0) is
/// mapped at, if it is a 2 MiB or 64-page slot that is mapped (CPU 0 only:
/// it alone writes `OWNER` and the slots' state).
fn stalled_slot(stalled: u64, state: &[SlotState]) -> Option<usize> {
    let pfn = Pfn(stalled.checked_sub(1)?);
    let ui = unit_index(memmap().unit(pfn).ok()?.head)?;
    // Relaxed: only this CPU writes OWNER.
    let slot = usize::try_from(OWNER[ui].load(Ordering::Relaxed).checked_sub(1)?).ok()?;
    (slot < SLOTS && !matches!(state[slot], SlotState::Empty)).then_some(slot)
}

/// After the walkers finished: every page idle and unmarked.
pub fn check_idle() {
    for (i, meta) in METAS.iter().enumerate() {
        let w = meta.load();
        if !w.is_idle() || w.is_truncating() {
            violation(format_args!("page {i} ends as {w:?}"));
        }
    }
}
