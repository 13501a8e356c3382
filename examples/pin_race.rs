//! cargo run --release --example pin_race [-- --walkers N --ops N --seed N]
//!
//! The host stress run of pagepin: walker threads pin and reference random
//! ranges with GUP-fast over real x86_64 4-level tables, while one writer thread
//! runs the truncate protocol (`pagepin::truncate`'s typestate) on them over and
//! over: mark the pages truncating, unmap (clearing leaves and detaching and
//! retiring empty page tables), drain, free, poison — and reuse both the data
//! pages (new generation, new owner) and
//! the page-table pages (retired through an epoch walk guard, poisoned once no
//! walker can still read them, then zero-filled and reused by the builder).
//!
//! The address space is 16 slots of 2 MiB. A mapped slot is either one 2 MiB leaf
//! over a layout-managed 2 MiB unit (one RMW per pin) or 64 leaves of 4 KiB over
//! single-page units. Every data page holds its allocation's generation; every
//! unit records which slot it is mapped at. A walker checks, for every page it
//! took, while holding it:
//!
//! - the page is allocated: its contents are its generation, not poison
//!   (no get succeeded on a free page);
//! - its unit is mapped at the slot the walker pinned it through (invariant 3:
//!   the reference is on the allocation the entry mapped, not on a reuse);
//! - the generation does not change until the walker releases it (no page is
//!   freed while held).
//!
//! A stop for malformed tables, a PFN outside the memory map, or missing
//! permissions is a violation too (nothing the writer does can produce one). At
//! the end every page must be idle and unmarked. The last line printed is
//!
//! `pagepin-summary threads=<n> gets=<n> pins=<n> truncates=<n> violations=<n> ns_per_op=<float>`
//!
//! `threads` counts walkers and the writer; `gets` and `pins` are base pages
//! referenced and pinned; `truncates` are slots the writer truncated (marked,
//! unmapped, drained, freed); `ns_per_op` is walker wall time per GUP-fast call
//! (pin, check and release of up to 600 pages).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::{Epoch, EpochReader};
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, Pfn, Region, SliceMemMap};
use pagepin::meta::{GetErrorKind, Hold, PageMeta};
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapRequest, Perms, PhysAddr, PoolFull, Retire, RetireError,
    TableAccess, TableBuilder, VirtAddr,
};
use pagepin::truncate::{Extent, FileMapping, NoTlbShootdown, TableUnmapper, Truncate, Wait};
use pagepin::wait::{Clock, SpinWaiter};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
/// Virtual slots of 2 MiB.
const SLOTS: usize = 16;
const SLOT_BASE: u64 = 0x4000_0000;
/// Pages a 4 KiB-mapped slot maps.
const SMALL_SLOT_PAGES: u64 = 64;
/// Data memory: 2 MiB layout-managed units, then single pages.
const DATA_BASE: u64 = 1 << 30;
const HUGE_UNITS: u64 = 24;
const SMALL_BLOCKS: u64 = 24;
const SMALL_BASE: u64 = DATA_BASE + HUGE_UNITS * MIB2;
const DATA_PAGES: u64 = HUGE_UNITS * 512 + SMALL_BLOCKS * SMALL_SLOT_PAGES;
/// Contents of a free page.
const POISON: u64 = u64::MAX;
/// What a freed page table is filled with before reuse: a present, writable,
/// user 4 KiB leaf to the first data page, the most misleading thing a walker
/// reading a freed table could find.
const POISON_ENTRY: u64 = DATA_BASE | 0x7;
const TABLE_FRAMES: usize = 48;
const MAX_WALKER_PAGES: usize = 600;
pagepin::epoch_brand!(
    /// The brand of the race's epoch, guarding the walkers' tables.
    enum RaceTables
);

/// Epoch reader slots (walkers).
const READERS: usize = 8;

/// Configuration of one run.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Walker threads.
    pub walkers: usize,
    /// Writer operations (each maps an empty slot or truncates a mapped one).
    pub ops: u64,
    /// Random seed.
    pub seed: u64,
}

/// What a run counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Walkers plus the writer.
    pub threads: usize,
    /// Base pages referenced.
    pub gets: u64,
    /// Base pages pinned.
    pub pins: u64,
    /// Slots truncated.
    pub truncates: u64,
    /// GUP-fast calls that stopped because an entry changed under them.
    pub changed: u64,
    /// GUP-fast calls refused by a truncating or free page.
    pub refused: u64,
    /// Invariant violations.
    pub violations: u64,
    /// Walker wall time per GUP-fast call.
    pub ns_per_op: f64,
    /// Page tables the writer's unmaps detached and retired (each later
    /// poisoned and reused).
    pub tables_retired: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The data pages and their test instrumentation.
struct Data {
    metas: Vec<PageMeta>,
    /// Per page: its allocation's generation, or `POISON` while free.
    contents: Vec<AtomicU64>,
    /// Per unit head: the generation of its current allocation.
    generation: Vec<AtomicU64>,
    /// Per unit head: 1 + the slot it is mapped at, 0 when unmapped.
    owner: Vec<AtomicU64>,
    violations: AtomicU64,
}

impl Data {
    fn new() -> Data {
        let n = DATA_PAGES as usize;
        Data {
            metas: (0..n).map(|_| PageMeta::new_free()).collect(),
            contents: (0..n).map(|_| AtomicU64::new(POISON)).collect(),
            generation: (0..n).map(|_| AtomicU64::new(0)).collect(),
            owner: (0..n).map(|_| AtomicU64::new(0)).collect(),
            violations: AtomicU64::new(0),
        }
    }

    fn index(pfn: Pfn) -> usize {
        (pfn.0 - (DATA_BASE >> 12)) as usize
    }

    fn violation(&self, what: std::fmt::Arguments<'_>) {
        if self.violations.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("violation: {what}");
        }
    }

    fn memmap(&self) -> SliceMemMap<'_> {
        // SAFETY: this map is the only one counting on these metas.
        let mut map = unsafe { SliceMemMap::new(Pfn(DATA_BASE >> 12), &self.metas) };
        map.add_region(Region {
            first: Pfn(DATA_BASE >> 12),
            pages: HUGE_UNITS * 512,
            unit_pages: 512,
            layout_managed: true,
        })
        .expect("the region fits the map");
        map
    }
}

/// The builder's retire hook: detached tables wait for the epoch, are then
/// poisoned (so a walker that still read them would see garbage) and given back.
struct PoisonRetire<'a> {
    epoch: &'a Epoch<RaceTables, READERS>,
    memory: &'a HostMemory<'a>,
    pending: Vec<(PhysAddr, u64)>,
    retired: u64,
}

// SAFETY: a retired table is given back (poisoned) only when the epoch says
// no walker that could have loaded it is still reading; host tables have no
// MMU, so no TLB can cache them.
unsafe impl Retire for PoisonRetire<'_> {
    type Domain = RaceTables;

    unsafe fn retire(
        &mut self,
        table: PhysAddr,
        pool: &mut FramePool<'_>,
    ) -> Result<(), RetireError> {
        self.pending.push((table, self.epoch.retire_epoch()));
        self.retired += 1;
        if self.pending.len() > TABLE_FRAMES / 2 {
            self.reclaim(pool).map_err(RetireError::PoolFull)?;
        }
        Ok(())
    }

    fn reclaim(&mut self, pool: &mut FramePool<'_>) -> Result<(), PoolFull> {
        // With the pool empty the builder is about to fail: wait for the walks
        // that hold the oldest retirements back (they are one GUP call long).
        while pool.free_count() == 0
            && !self.pending.is_empty()
            && !self.pending.iter().any(|&(_, e)| self.epoch.is_safe(e))
        {
            std::thread::yield_now();
        }
        let mut i = 0;
        while i < self.pending.len() {
            let (table, retired) = self.pending[i];
            if self.epoch.is_safe(retired) {
                for index in 0..512 {
                    // SAFETY: poisons a table this hook retired and the epoch says no walker can still read; it goes back to the pool just below.
                    let word = unsafe { self.memory.entry(table, index) }.expect("a pool frame");
                    word.store(POISON_ENTRY, Ordering::Relaxed);
                }
                // SAFETY: the frame came from this pool and nothing can reach it.
                unsafe { pool.give_back(table) }?;
                self.pending.swap_remove(i);
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum SlotState {
    Empty,
    /// One 2 MiB leaf over huge unit `unit`.
    Huge {
        unit: u64,
    },
    /// 64 leaves of 4 KiB over small block `block`.
    Small {
        block: u64,
    },
}

fn slot_va(slot: usize) -> u64 {
    SLOT_BASE + slot as u64 * MIB2
}

fn walker(
    gup: &Gup<'_, Paging4Level, HostMemory<'_>, SliceMemMap<'_>, RaceTables>,
    data: &Data,
    epoch: &Epoch<RaceTables, READERS>,
    stop: &AtomicBool,
    seed: u64,
) -> (u64, u64, u64, u64, u64) {
    let reader: EpochReader<'_, RaceTables, READERS> =
        epoch.reader().expect("a reader slot per walker");
    let mut rng = Rng(seed | 1);
    let mut out = vec![Pfn(0); MAX_WALKER_PAGES];
    let (mut gets, mut pins, mut changed, mut refused, mut calls) = (0, 0, 0, 0, 0);
    while !stop.load(Ordering::Relaxed) {
        let r = rng.next();
        let slot = (r % SLOTS as u64) as usize;
        let page = (r >> 8) % 512;
        let pages = 1 + (r >> 20) % MAX_WALKER_PAGES as u64;
        let start = slot_va(slot) + page * KIB4;
        let len = (pages * KIB4).min(SLOT_BASE + SLOTS as u64 * MIB2 - start);
        let pin = r & (1 << 40) != 0;
        let mut flags = GupFlags::WRITE | GupFlags::USER;
        if pin {
            flags |= GupFlags::PIN;
        }
        let hold = if pin { Hold::Pin } else { Hold::Ref };
        calls += 1;
        let taken = match gup.get_pages(&reader, VirtAddr(start), len, flags, &mut out) {
            Ok(taken) => taken,
            Err(e) => {
                data.violation(format_args!("GUP refused a valid range: {e}"));
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
            other => data.violation(format_args!("unexpected stop: {other}")),
        }
        let held = &out[..taken.pages];
        let mut generations = Vec::with_capacity(held.len());
        for (i, &pfn) in held.iter().enumerate() {
            let va = start + i as u64 * KIB4;
            let through = ((va - SLOT_BASE) / MIB2) as usize;
            let head = match gup.memmap().unit(pfn) {
                Ok(unit) => unit.head,
                Err(e) => {
                    data.violation(format_args!("took a page outside the map: {e}"));
                    continue;
                }
            };
            let generation = data.generation[Data::index(head)].load(Ordering::Relaxed);
            let contents = data.contents[Data::index(pfn)].load(Ordering::Relaxed);
            let owner = data.owner[Data::index(head)].load(Ordering::Relaxed);
            if contents == POISON || contents != generation {
                data.violation(format_args!(
                    "{pfn} held with contents {contents:#x}, generation {generation}"
                ));
            }
            if owner != through as u64 + 1 {
                data.violation(format_args!(
                    "{pfn} taken through slot {through} but mapped at slot {}",
                    owner as i64 - 1
                ));
            }
            generations.push(generation);
        }
        for (&pfn, &generation) in held.iter().zip(&generations) {
            let head = gup.memmap().unit(pfn).map(|u| u.head).unwrap_or(pfn);
            let now = data.generation[Data::index(head)].load(Ordering::Relaxed);
            if now != generation {
                data.violation(format_args!("{pfn} reallocated while held"));
            }
        }
        // SAFETY: the pages were taken above by this code and are released once.
        if let Err(e) = unsafe { release(gup.memmap(), held, hold) } {
            data.violation(format_args!("release failed: {e}"));
        }
        if pin {
            pins += held.len() as u64;
        } else {
            gets += held.len() as u64;
        }
    }
    (gets, pins, changed, refused, calls)
}

/// Allocates the unit at `head` of `pages` pages for `slot`.
fn allocate(data: &Data, head: Pfn, pages: u64, slot: usize) {
    let h = Data::index(head);
    let generation = data.generation[h].load(Ordering::Relaxed) + 1;
    data.generation[h].store(generation, Ordering::Relaxed);
    for i in 0..pages as usize {
        data.contents[h + i].store(generation, Ordering::Relaxed);
    }
    data.owner[h].store(slot as u64 + 1, Ordering::Relaxed);
    // The allocate is a Release RMW: a walker whose get reads from it sees the
    // generation, contents and owner written above.
    if let Err(e) = data.metas[h].allocate() {
        data.violation(format_args!("allocate failed: {e}"));
    }
}

struct StdClock(Instant);

impl Clock for StdClock {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// Runs the stress with `config`.
pub fn run(config: Config) -> Summary {
    let data = Data::new();
    let memmap = data.memmap();
    let frames: Vec<HostFrame> = (0..TABLE_FRAMES).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).expect("aligned base");
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let epoch = Epoch::<RaceTables, READERS>::new().expect("one race at a time");
    let retire = PoisonRetire {
        epoch: &epoch,
        memory: &memory,
        pending: Vec::new(),
        retired: 0,
    };
    let mut tables =
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, retire)
            .expect("the pool holds a root");
    let gup = Gup::new(tables.walker(), &memmap);
    let stop = AtomicBool::new(false);
    let begin = Instant::now();
    let clock = StdClock(begin);
    let perms = Perms::READ | Perms::WRITE | Perms::USER;
    let (walked, truncates) = std::thread::scope(|s| {
        let walkers: Vec<_> = (0..config.walkers)
            .map(|i| {
                let (gup, data, epoch, stop) = (&gup, &data, &epoch, &stop);
                let seed = config.seed.wrapping_add(0x9e37_79b9 * (i as u64 + 1));
                s.spawn(move || walker(gup, data, epoch, stop, seed))
            })
            .collect();
        let mut rng = Rng(config.seed ^ 0x5851_f42d_4c95_7f2d | 1);
        let mut state = [SlotState::Empty; SLOTS];
        let mut huge_free: Vec<u64> = (0..HUGE_UNITS).collect();
        let mut small_free: Vec<u64> = (0..SMALL_BLOCKS).collect();
        let mut truncates = 0u64;
        for _ in 0..config.ops {
            let r = rng.next();
            let slot = (r % SLOTS as u64) as usize;
            let va = VirtAddr(slot_va(slot));
            match state[slot] {
                SlotState::Empty => {
                    let pick = (r >> 16) as usize;
                    if r & (1 << 32) == 0 && !huge_free.is_empty() {
                        let unit = huge_free.swap_remove(pick % huge_free.len());
                        let pa = DATA_BASE + unit * MIB2;
                        allocate(&data, Pfn(pa >> 12), 512, slot);
                        let req = MapRequest::new(va, PhysAddr(pa), MIB2, MIB2).with_perms(perms);
                        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
                        if let Err(e) = unsafe { tables.map(&req) } {
                            data.violation(format_args!("map failed: {e}"));
                        }
                        state[slot] = SlotState::Huge { unit };
                    } else if !small_free.is_empty() {
                        let block = small_free.swap_remove(pick % small_free.len());
                        let pa = SMALL_BASE + block * SMALL_SLOT_PAGES * KIB4;
                        for i in 0..SMALL_SLOT_PAGES {
                            allocate(&data, Pfn((pa >> 12) + i), 1, slot);
                        }
                        let len = SMALL_SLOT_PAGES * KIB4;
                        let req = MapRequest::new(va, PhysAddr(pa), len, KIB4).with_perms(perms);
                        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
                        if let Err(e) = unsafe { tables.map(&req) } {
                            data.violation(format_args!("map failed: {e}"));
                        }
                        state[slot] = SlotState::Small { block };
                    }
                }
                mapped => {
                    // The truncate protocol, through its typestate: mark, unmap
                    // (in the one address space, no TLB on the host), drain, free.
                    let (first, pages, unit_pages) = match mapped {
                        SlotState::Huge { unit } => (DATA_BASE + unit * MIB2, 512, 512),
                        SlotState::Small { block } => (
                            SMALL_BASE + block * SMALL_SLOT_PAGES * KIB4,
                            SMALL_SLOT_PAGES,
                            1,
                        ),
                        SlotState::Empty => unreachable!("matched above"),
                    };
                    let extent = Extent::new(Pfn(first >> 12), pages);
                    // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
                    let mut unmapper = unsafe {
                        TableUnmapper::<_, _, _, _, 1>::new(
                            core::slice::from_mut(&mut tables),
                            12,
                            NoTlbShootdown,
                        )
                    };
                    let mapping = FileMapping {
                        space: 0,
                        va,
                        first: extent.first,
                        pages,
                    };
                    if let Err(e) = unmapper.add_mapping(mapping) {
                        data.violation(format_args!("unmapper: {e}"));
                    }
                    let wait = Wait {
                        waiter: &SpinWaiter,
                        clock: &clock,
                        deadline_ns: None,
                    };
                    let freed = Truncate::mark(&memmap, core::iter::once(extent))
                        .map_err(|e| format!("mark: {e}"))
                        .and_then(|t| t.unmap(&mut unmapper).map_err(|e| format!("unmap: {e}")))
                        .and_then(|t| t.drain(&wait).map_err(|e| format!("drain: {e}")))
                        .and_then(|t| t.free().map_err(|e| format!("free: {e}")));
                    match freed {
                        Ok(freed) if freed.units == pages / unit_pages => {}
                        other => data.violation(format_args!("truncate: {other:?}")),
                    }
                    // Poison the freed pages; nobody may see this while holding them.
                    let first = Data::index(extent.first);
                    for i in 0..pages as usize {
                        data.contents[first + i].store(POISON, Ordering::Relaxed);
                    }
                    for u in (0..pages as usize).step_by(unit_pages as usize) {
                        data.owner[first + u].store(0, Ordering::Relaxed);
                    }
                    match mapped {
                        SlotState::Huge { unit } => huge_free.push(unit),
                        SlotState::Small { block } => small_free.push(block),
                        SlotState::Empty => {}
                    }
                    state[slot] = SlotState::Empty;
                    truncates += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let walked: Vec<_> = walkers
            .into_iter()
            .map(|w| w.join().expect("walker thread"))
            .collect();
        (walked, truncates)
    });
    let elapsed = begin.elapsed();
    let tables_retired = tables.retire_hook().retired;
    // Nothing left behind: every page idle and unmarked.
    for (i, meta) in data.metas.iter().enumerate() {
        let w = meta.load();
        if !w.is_idle() || w.is_truncating() {
            data.violation(format_args!("page {i} ends as {w:?}"));
        }
    }
    let calls: u64 = walked.iter().map(|w| w.4).sum();
    Summary {
        threads: config.walkers + 1,
        gets: walked.iter().map(|w| w.0).sum(),
        pins: walked.iter().map(|w| w.1).sum(),
        truncates,
        changed: walked.iter().map(|w| w.2).sum(),
        refused: walked.iter().map(|w| w.3).sum(),
        violations: data.violations.load(Ordering::Relaxed),
        ns_per_op: elapsed.as_nanos() as f64 * config.walkers as f64 / calls.max(1) as f64,
        tables_retired,
    }
}

fn main() {
    let mut config = Config {
        walkers: 3,
        ops: 20_000,
        seed: 0x1234_5678,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| usage(&arg))
        };
        match arg.as_str() {
            "--walkers" => config.walkers = value() as usize,
            "--ops" => config.ops = value(),
            "--seed" => config.seed = value(),
            _ => usage(&arg),
        }
    }
    if config.walkers == 0 || config.walkers > READERS {
        usage("--walkers");
    }
    let s = run(config);
    println!(
        "walker stops: {} changed under the walk, {} refused by truncating or free pages; \
         page tables retired, poisoned and reused: {}",
        s.changed, s.refused, s.tables_retired
    );
    println!(
        "pagepin-summary threads={} gets={} pins={} truncates={} violations={} ns_per_op={:.1}",
        s.threads, s.gets, s.pins, s.truncates, s.violations, s.ns_per_op
    );
}

fn usage(bad: &str) -> ! {
    eprintln!(
        "pin_race: bad argument {bad:?}\nusage: pin_race [--walkers 1..={READERS}] [--ops N] [--seed N]"
    );
    std::process::exit(2)
}
