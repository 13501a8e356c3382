//! cargo run --release --example dax_truncate [-- --seconds S --threads N --seed N]
//!
//! The main job of pagepin, on the host: a DAX file of 1 GiB on layout-managed
//! memory, mapped at once into two address spaces of different formats, pinned
//! and referenced by lockless GUP-fast walkers (some of them under revocable
//! leases) while one thread truncates it and punches holes in it, and the
//! allocator splits and merges the freed units and gives them back to the file
//! at other offsets.
//!
//! # The world
//!
//! - **Memory**: 640 physical blocks of 2 MiB (1.25 GiB, so units can move),
//!   each either one 2 MiB unit or 512 units of 4 KiB. [`DaxMap`] is the
//!   `MemoryMap` over a `Vec<PageMeta>`: a per-block split flag says which,
//!   and a layout version is bumped (Release) after every split or merge and
//!   before any involved head is allocated again; the tail metas of a whole
//!   block stay `FREE` (the contract's points 3 and 6). A block is split when
//!   4 KiB units are needed and merged back as soon as all its 512 units are
//!   free. Free lists are LIFO, as real allocators tend to be: a block freed
//!   by a truncate is often the next one handed out, split or merged, at the
//!   same file offset (a refault of the same block, which leaves the page-table
//!   entries bit-for-bit what a walker read before the split: only the unit
//!   re-check can see it) or at another one (which only the entry re-check sees).
//! - **The file**: 512 file blocks of 2 MiB. Each is empty, backed by one
//!   physically contiguous aligned block (one 2 MiB unit, or 512 4 KiB units of
//!   one split block in order), or by 4 KiB units scattered over many blocks,
//!   with holes after a hole punch.
//! - **Two address spaces**: x86_64 4-level paging, mapping a contiguous file
//!   block with one 2 MiB leaf (over one unit: one RMW per pin; over 512 4 KiB
//!   units: 512 RMWs) and a scattered one with 4 KiB leaves; and aarch64
//!   stage 1 (4 KiB granule, 48-bit VA), always 4 KiB leaves. The same extent is
//!   mapped by a huge leaf in one space and by small leaves in the other, and
//!   both count on the head the memory map names.
//! - **Walk guard**: one `Epoch`, one `EpochReader` per walker guarding its
//!   walks in both spaces. Tables the truncate's unmaps detach are retired
//!   through the epoch, **poisoned** once no walker can still read them (every
//!   entry a present, writable user page of the first data page), then reused
//!   by the builders.
//!
//! # The threads
//!
//! - **Walkers** (`--threads`, default 3) GUP-pin or reference random ranges of
//!   1 to 600 pages in a random space, check every page they hold (below), and
//!   release. Now and then one takes a long-term pin on up to 16 pages under
//!   leases (one per PFN run), and keeps it until its `Revoke` callback fires.
//! - **The truncater** (the calling thread) truncates a whole file block or
//!   punches a random run of 4 KiB pages (only in blocks mapped with 4 KiB
//!   leaves in both spaces: a builder unmap cannot split a huge leaf), through
//!   the typestate: `mark`, `unmap` in both spaces through [`FileUnmapper`] (the
//!   file's reverse map, each space's builder, a counting `TlbShootdown`),
//!   `drain_with_leases` with a 20 ms deadline (a timed-out drain is retried
//!   and counted, never freed), `free`. Then the pages are poisoned, the units
//!   go back to the allocator (merging a block whose units are all free), and a
//!   random not-full file block is refilled with newly allocated units
//!   (splitting a block if 4 KiB units are needed), new generations, and mapped
//!   again in both spaces.
//!
//! # Waiting
//!
//! The drain really sleeps: [`Parker`] parks the truncater's thread
//! (`std::thread::park_timeout`), and [`DaxMap::wake`] (after
//! `WaitSlot::wake` reports a registered waiter) and the lease registry's wake
//! hook unpark it. Permit semantics come from both the slot's wake count (the
//! condition the parker polls) and the thread's park token.
//!
//! # Leases: pin, lease, re-check
//!
//! A walker cannot lease before it pins: it learns the PFNs from GUP-fast. So it
//! pins (an ordinary pin), grants a lease on each PFN run it got, then loads
//! every pinned unit's meta and gives everything back if one is marked
//! truncating. Against the truncater's `mark` → `take_overlapping` (inside
//! `drain_with_leases`, under the registry lock) this cannot miss: if the
//! grant takes the registry lock first, the truncater's scan sees the lease and
//! revokes it; if the scan comes first, the truncater's marks happen before its
//! unlock, which happens before the grant's lock, which is before the walker's
//! load, so the walker sees the mark (a held pin keeps the unit from being
//! freed and unmarked meanwhile). Either way the drain is not left waiting for
//! a pin nobody was asked to release.
//!
//! # The oracle
//!
//! Every data page holds its allocation's generation (`POISON` while free);
//! every unit head records its generation and the file page it is mapped at.
//! For every page a walker holds, while holding it:
//!
//! - it is allocated: its contents are its unit's generation, not poison;
//! - it is the page its mapping said: its unit is at the file page the walker
//!   took it through (in either space; invariant 3);
//! - unit identity (invariant 7): the meta that counts for it *now*
//!   (`unit(pfn).meta`) holds a count of the walker's kind (the walker's own
//!   pin or reference must be visible there);
//! - it is not reallocated until released: at release time its unit has the
//!   same head and generation.
//!
//! Stops for malformed tables, PFNs outside the map, missing permissions, and
//! failed releases are violations too. At the end every page is idle and
//! unmarked and every lease is gone.
//!
//! # Test pressure
//!
//! A GUP-fast call's windows (from an entry's load to the get, and from the
//! unit lookup to the get) are nanoseconds wide, and a truncate of the one
//! block a walker is in them for is rare. To show that the re-checks are
//! needed, one GUP-fast call in [`STALL_EVERY`] arms a stall: its first
//! [`DaxMap::unit`] lookup returns only after the truncater has had a go at
//! the file block holding that page, or after [`STALL_MAX`] (the walker
//! publishes the PFN in `DaxMap::stalled`; the truncater, at its next step,
//! truncates that block or punches a hole in it, and half of the time refills
//! it at once, at the same offset, with the other unit size; the LIFO
//! allocator hands the same physical block back, so the entries come back
//! bit for bit, while the unit that counts for the page changed). The stall
//! comes after the lookup, so the walker's answer is the old one. A lookup is
//! allowed to be slow (a cache miss, an interrupt, a preempted virtual CPU),
//! and the stall only schedules the truncater adversarially: it changes
//! nothing the protocol relies on. With the re-checks the run stays clean;
//! run without one (`--broken no-recheck` or `--broken no-unit-recheck`,
//! built with `--features broken-twins`, which calls
//! `pagepin::gup::broken::get_pages` instead of `Gup::get_pages`) it reports
//! violations. Time spent
//! stalled is left out of `ns_per_op`. Walkers and the truncater also prefer
//! a hot eighth of the file half of the time.
//!
//! The last line printed is
//!
//! `pagepin-summary threads=<n> gets=<n> pins=<n> truncates=<n> splits=<n> leases_revoked=<n> violations=<n> ns_per_op=<float>`
//!
//! `threads` counts the walkers and the truncater; `gets` and `pins` are base
//! pages referenced and pinned by GUP-fast; `truncates` are truncate protocol
//! runs (whole file blocks and hole punches); `splits` counts layout changes
//! (2 MiB units split into 4 KiB units, and merged back); `leases_revoked`
//! counts leases whose holders gave their pins back on revocation;
//! `ns_per_op` is walker wall time per GUP-fast call (pin or reference, check
//! and release of up to 600 pages), stalls left out. Runs over 10 s print a
//! progress line on stderr every 5 s. The process exits with status 1 on a
//! violation.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pagepin::arch::aarch64::Stage1G4K48;
use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::{Epoch, EpochReader, WalkGuard};
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::{GetErrorKind, Hold, PageMeta};
use pagepin::table::{
    FramePool, HostFrame, HostMemory, LeafSizes, MapRequest, Perms, PhysAddr, PoolFull, Retire,
    RetireError, TableAccess, TableBuilder, VaRange, VirtAddr,
};
use pagepin::truncate::{
    Extent, Failed, Lease, LeaseId, LeaseRegistry, Revoke, TlbShootdown, Truncate, Unmapper, Wait,
};
use pagepin::wait::{Clock, Parked, WaitSlot, WaitTable, Waiter};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
/// Base pages of a 2 MiB block.
const BLOCK_PAGES: u64 = 512;
/// Physical 2 MiB blocks of layout-managed memory (1.25 GiB).
const BLOCKS: u64 = 640;
/// The first data byte (PA 1 GiB) and its PFN.
const DATA_BASE: u64 = 1 << 30;
const BASE_PFN: u64 = DATA_BASE >> 12;
const DATA_PAGES: u64 = BLOCKS * BLOCK_PAGES;
/// File blocks of 2 MiB (a 1 GiB file) and file pages.
const FILE_BLOCKS: u64 = 512;
const FILE_PAGES: u64 = FILE_BLOCKS * BLOCK_PAGES;
/// Where the file is mapped in each space: x86_64 (0) and aarch64 (1).
const FILE_VA: [u64; 2] = [0x40_0000_0000, 0x80_0000_0000];
const SPACES: usize = 2;
/// Contents of a free page.
const POISON: u64 = u64::MAX;
/// A file page with no page behind it.
const HOLE: u64 = u64::MAX;
/// What a freed page table is filled with before reuse, per format: a
/// present, writable, user 4 KiB leaf to the first data page (x86_64: P, RW,
/// US; aarch64: page descriptor, AP[1] for EL0, AF), the most misleading thing
/// a walker reading a freed table could find.
const POISON_ENTRY: [u64; 2] = [DATA_BASE | 0x7, DATA_BASE | 0b11 | (1 << 6) | (1 << 10)];
/// Table frames per address space: a fully 4 KiB-mapped file needs 512 leaf
/// tables plus the levels above; retired tables wait for the epoch.
const TABLE_FRAMES: usize = 1024;
const MAX_WALKER_PAGES: usize = 600;
/// The most pages a long-term (leased) pin holds, and its leases (one per
/// PFN run).
const LONG_PAGES: u64 = 16;
pagepin::epoch_brand!(
    /// The brand of the one epoch guarding both address spaces' tables.
    enum DaxTables
);

/// Epoch reader slots: the most walkers.
const READERS: usize = 16;
/// Lease registry capacity: every walker's runs.
const LEASES: usize = READERS * LONG_PAGES as usize;
/// How long a drain waits before it is retried.
const DRAIN_DEADLINE: Duration = Duration::from_millis(20);
/// A drain retried this often (with the same set) is a stuck unit: a violation
/// (it happens only in broken builds that leaked a count).
const DRAIN_TRIES: u32 = 25;
/// File blocks left not full (empty or with holes) before the truncater refills.
const NOT_FULL_TARGET: usize = 2;
/// The hot part of the file (in file blocks): walkers and the truncater pick
/// it half of the time.
const HOT_BLOCKS: u64 = FILE_BLOCKS / 8;
/// Test pressure (module docs): one GUP-fast call in `STALL_EVERY` stalls in
/// its first unit lookup, for at most `STALL_MAX`.
const STALL_EVERY: u64 = 512;
const STALL_MAX: Duration = Duration::from_millis(2);

/// Configuration of one run.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How long the truncater runs.
    pub seconds: f64,
    /// Walker threads.
    pub threads: usize,
    /// Random seed.
    pub seed: u64,
    /// Print a progress line on stderr every 5 s.
    pub progress: bool,
    /// Run GUP-fast without one of its checks (`--broken`, with the
    /// `broken-twins` feature): a run that shows what the check catches.
    #[cfg(feature = "broken-twins")]
    pub broken: Option<pagepin::gup::broken::Dropped>,
}

impl Default for Config {
    /// The default run: 5 s, 3 walkers.
    fn default() -> Config {
        Config {
            seconds: 5.0,
            threads: 3,
            seed: 0x1234_5678,
            progress: false,
            #[cfg(feature = "broken-twins")]
            broken: None,
        }
    }
}

/// What a run counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Walkers plus the truncater.
    pub threads: usize,
    /// Base pages referenced.
    pub gets: u64,
    /// Base pages pinned (long-term pins included).
    pub pins: u64,
    /// Truncate protocol runs (whole blocks and hole punches).
    pub truncates: u64,
    /// Of which hole punches.
    pub punches: u64,
    /// Layout changes: splits and merges.
    pub splits: u64,
    /// Of which merges.
    pub merges: u64,
    /// Leases whose holders gave their pins back on revocation.
    pub leases_revoked: u64,
    /// Leases granted.
    pub leases_granted: u64,
    /// Drains that timed out and were retried.
    pub drain_retries: u64,
    /// Times the drain parked its thread.
    pub parks: u64,
    /// TLB shootdowns (one per space and unmapped range).
    pub shootdowns: u64,
    /// Page tables retired, poisoned and reused.
    pub tables_retired: u64,
    /// GUP-fast calls that stopped on a changed entry or unit.
    pub changed: u64,
    /// GUP-fast calls refused by a truncating or free page.
    pub refused: u64,
    /// Invariant violations.
    pub violations: u64,
    /// Walker wall time per GUP-fast call.
    pub ns_per_op: f64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Walker time spent stalled by the test pressure (excluded from
    /// `ns_per_op`), summed over walkers.
    pub stalled_s: f64,
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

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn index(pfn: Pfn) -> usize {
    (pfn.0 - BASE_PFN) as usize
}

thread_local! {
    /// Whether this thread's next unit lookup stalls (test pressure).
    static STALL_ARMED: Cell<bool> = const { Cell::new(false) };
    /// Nanoseconds this thread spent stalled.
    static STALLED_NS: Cell<u64> = const { Cell::new(0) };
}

/// The memory map: 640 blocks, each one 2 MiB unit or 512 4 KiB units.
pub struct DaxMap {
    metas: Vec<PageMeta>,
    /// Per block: 1 if split into 4 KiB units.
    split: Vec<AtomicU8>,
    version: AtomicU64,
    waits: WaitTable<256>,
    /// The thread that drains (parks in `Parker`).
    truncater: OnceLock<std::thread::Thread>,
    /// Test pressure: 1 + the PFN a walker is stalled before looking up (0:
    /// none); the truncater sets it back to 0 when it has had its go.
    stalled: AtomicU64,
}

impl DaxMap {
    fn new() -> DaxMap {
        DaxMap {
            metas: (0..DATA_PAGES).map(|_| PageMeta::new_free()).collect(),
            split: (0..BLOCKS).map(|_| AtomicU8::new(0)).collect(),
            version: AtomicU64::new(0),
            waits: WaitTable::new(),
            truncater: OnceLock::new(),
            stalled: AtomicU64::new(0),
        }
    }

    fn meta(&self, pfn: Pfn) -> &PageMeta {
        &self.metas[index(pfn)]
    }

    /// The unit of `pfn`, without test pressure (the oracle's lookups).
    fn lookup(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        let offset = pfn
            .0
            .checked_sub(BASE_PFN)
            .filter(|&o| o < DATA_PAGES)
            .ok_or(OutsideMap { pfn })?;
        let block = offset / BLOCK_PAGES;
        // Relaxed: a split or merge is made before the new heads' allocations
        // (Release RMWs) in program order; a walker whose get reads from such an
        // allocation (Acquire) sees it. An older answer is what the unit
        // re-check is for.
        let (head, pages) = if self.split[block as usize].load(Ordering::Relaxed) == 1 {
            (pfn, 1)
        } else {
            (Pfn(BASE_PFN + block * BLOCK_PAGES), BLOCK_PAGES)
        };
        Ok(Unit {
            head,
            pages,
            meta: self.meta(head),
            layout_managed: true,
        })
    }

    /// Changes block `block`'s layout (split: `to_split`, else merge). Every
    /// meta of the block must be free (its head and, when split, every unit).
    fn set_layout(&self, block: u64, to_split: bool) {
        let first = Pfn(BASE_PFN + block * BLOCK_PAGES);
        assert!(
            (0..BLOCK_PAGES).all(|i| self.meta(Pfn(first.0 + i)).is_free()),
            "a layout change on a block with a live unit"
        );
        // Relaxed: see `lookup`; the allocations that follow are Release.
        self.split[block as usize].store(u8::from(to_split), Ordering::Relaxed);
        // Release: after the change, before any head it involves is allocated
        // again (contract point 6); pairs with the Acquire in `layout_version`.
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Test pressure (module docs): tells the truncater this thread is about
    /// to look `pfn` up, and waits until the truncater has truncated (and
    /// maybe refilled) the file block holding it, or `STALL_MAX`.
    fn stall(&self, pfn: Pfn) {
        // Relaxed, here and in the truncater: a scheduling hint that carries
        // no data; every order the test relies on is the library's own.
        if self
            .stalled
            .compare_exchange(0, pfn.0 + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let begin = Instant::now();
        while self.stalled.load(Ordering::Relaxed) == pfn.0 + 1 {
            if begin.elapsed() >= STALL_MAX {
                // Given up: withdraw the request (unless taken meanwhile).
                let _ = self.stalled.compare_exchange(
                    pfn.0 + 1,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        STALLED_NS.set(STALLED_NS.get() + begin.elapsed().as_nanos() as u64);
    }

    fn unpark_truncater(&self) {
        if let Some(t) = self.truncater.get() {
            t.unpark();
        }
    }
}

// SAFETY: (1) a block's answer holds `pfn` (the block head's 512-page unit, or
// the page itself); (2) every PFN of a block reads the same split flag, so one
// answer per unit; (3) `set_layout` runs only with every meta of the block free
// (asserted; the tails of a whole block are never allocated), and the
// truncater allocates the new heads after it, with `PageMeta::allocate`;
// (4) the metas live in a `Vec` that is never resized while the map lives;
// (5) `wake` runs `WaitSlot::wake` on the head's slot and unparks the thread
// parked there; `wait_slot` is a pure hash; (6) the version is bumped with a
// Release RMW after every change and before the allocations, read with Acquire.
unsafe impl MemoryMap for DaxMap {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        let unit = self.lookup(pfn);
        if STALL_ARMED.get() {
            // After the lookup: the walker's answer may go stale meanwhile,
            // between its entry load and lookup on one side and its get on
            // the other, the two windows the re-checks close.
            STALL_ARMED.set(false);
            self.stall(pfn);
        }
        unit
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.waits.slot(head)
    }

    fn wake(&self, head: Pfn) {
        if self.waits.wake(head) {
            self.unpark_truncater();
        }
    }

    fn layout_version(&self) -> Option<u64> {
        // Acquire: pairs with the Release bump in `set_layout`.
        Some(self.version.load(Ordering::Acquire))
    }
}

/// A waiter that parks the thread (`park_timeout`), woken by `DaxMap::wake`
/// and the lease registry's hook.
struct Parker {
    parks: AtomicU64,
}

impl Waiter for Parker {
    fn park(
        &self,
        ready: &dyn Fn() -> bool,
        clock: &dyn Clock,
        deadline_ns: Option<u64>,
    ) -> Parked {
        loop {
            if ready() {
                return Parked::Ready;
            }
            let now = clock.now_ns();
            let left = match deadline_ns {
                Some(d) if now >= d => return Parked::TimedOut,
                Some(d) => d - now,
                None => u64::MAX,
            };
            // Relaxed: a statistic.
            self.parks.fetch_add(1, Ordering::Relaxed);
            // A wake (unpark) between `ready()` and here leaves the token, so
            // this returns at once; the cap only bounds the deadline's lateness.
            std::thread::park_timeout(Duration::from_nanos(left.min(5_000_000)));
        }
    }
}

struct StdClock(Instant);

impl Clock for StdClock {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The test instrumentation of the data pages.
struct Oracle {
    /// Per page: its allocation's generation, or `POISON` while free.
    contents: Vec<AtomicU64>,
    /// Per unit head: the generation of its current allocation.
    generation: Vec<AtomicU64>,
    /// Per unit head: 1 + the file page it is mapped at, 0 when unmapped.
    owner: Vec<AtomicU64>,
    violations: AtomicU64,
}

impl Oracle {
    fn new() -> Oracle {
        let n = DATA_PAGES as usize;
        Oracle {
            contents: (0..n).map(|_| AtomicU64::new(POISON)).collect(),
            generation: (0..n).map(|_| AtomicU64::new(0)).collect(),
            owner: (0..n).map(|_| AtomicU64::new(0)).collect(),
            violations: AtomicU64::new(0),
        }
    }

    fn violation(&self, what: std::fmt::Arguments<'_>) {
        // Relaxed: a counter.
        if self.violations.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("violation: {what}");
        }
    }
}

/// The builders' retire hook: detached tables wait for the epoch, are then
/// poisoned (a walker that still read them would see garbage) and given back.
struct PoisonRetire<'a> {
    epoch: &'a Epoch<DaxTables, READERS>,
    memory: &'a HostMemory<'a>,
    poison: u64,
    pending: Vec<(PhysAddr, u64)>,
    retired: u64,
}

// SAFETY: a retired table is given back (poisoned) only when the epoch says
// no walker that could have loaded it is still reading; host tables have no
// MMU, so no TLB can cache them.
unsafe impl Retire for PoisonRetire<'_> {
    type Domain = DaxTables;

    unsafe fn retire(
        &mut self,
        table: PhysAddr,
        pool: &mut FramePool<'_>,
    ) -> Result<(), RetireError> {
        self.pending.push((table, self.epoch.retire_epoch()));
        self.retired += 1;
        if self.pending.len() > TABLE_FRAMES / 8 {
            self.reclaim(pool).map_err(RetireError::PoolFull)?;
        }
        Ok(())
    }

    fn reclaim(&mut self, pool: &mut FramePool<'_>) -> Result<(), PoolFull> {
        // With the pool empty the builder is about to fail: wait for the walks
        // that hold the oldest retirements back (each is one GUP call long).
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
                    // Relaxed: no walker can reach this table any more (the
                    // epoch says so); the builder's Release store that
                    // publishes it again after zero-filling orders these.
                    word.store(self.poison, Ordering::Relaxed);
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

type X86Builder<'a> = TableBuilder<'a, Paging4Level, HostMemory<'a>, PoisonRetire<'a>>;
type ArmBuilder<'a> = TableBuilder<'a, Stage1G4K48, HostMemory<'a>, PoisonRetire<'a>>;

/// The TLB hook: counts shootdowns (host tables have no TLB to flush; a
/// kernel's `invlpg` + IPI round, or `TLBI VAE1IS` + `DSB ISH`, goes here).
#[derive(Default)]
struct CountingTlb {
    flushes: u64,
}

// SAFETY: host tables: no MMU walks them, so no TLB caches them (a kernel's `invlpg` + IPI round or `TLBI` goes here).
unsafe impl TlbShootdown for CountingTlb {
    fn flush(&mut self, _space: usize, _range: VaRange, _sizes: LeafSizes) {
        self.flushes += 1;
    }
}

/// The file's unmapper: its reverse map (data page → file page) says where an
/// extent is mapped; both spaces map the file at the same offsets, so each
/// extent is one `unmap` per space, then its TLB shootdown.
///
/// pagepin's `TableUnmapper` serves one format and scans its list of
/// mappings for each extent; a 1 GiB file truncated by scattered 4 KiB
/// extents wants an indexed reverse map over two formats, which is what a
/// kernel's `Unmapper` implementation is for.
struct FileUnmapper<'s, 'a> {
    x86: &'s mut X86Builder<'a>,
    arm: &'s mut ArmBuilder<'a>,
    rmap: &'s [u64],
    tlb: &'s mut CountingTlb,
}

// SAFETY: the file's reverse map lists every mapping of its pages in both spaces; each is unmapped through its builder and flushed through `CountingTlb` before `Ok`.
unsafe impl Unmapper for FileUnmapper<'_, '_> {
    type Error = String;

    fn unmap_extent(&mut self, extent: Extent) -> Result<(), String> {
        let file_page = match self.rmap[index(extent.first)] {
            0 => return Err(format!("{} is not mapped", extent.first)),
            f => f - 1,
        };
        let len = extent.pages * KIB4;
        for (space, &base) in FILE_VA.iter().enumerate() {
            let va = VirtAddr(base + file_page * KIB4);
            let done = match space {
                0 => self.x86.unmap(va, len),
                _ => self.arm.unmap(va, len),
            };
            let done = done.map_err(|e| format!("space {space}: {e}"))?;
            let range = VaRange::new(va, len).map_err(|e| format!("{e}"))?;
            self.tlb.flush(space, range, done.sizes);
        }
        Ok(())
    }
}

/// A walker's side of its leases: the revoke callback raises a flag the
/// walker polls.
struct Holder {
    revoked: AtomicBool,
}

impl Revoke for Holder {
    fn revoke(&self, _lease: LeaseId) {
        // Release: pairs with the walker's Acquire load; nothing else is
        // published, the walker only needs to see the flag.
        self.revoked.store(true, Ordering::Release);
    }
}

/// Shared walker state.
struct Shared<'a, 'r> {
    x86: Gup<'a, Paging4Level, HostMemory<'a>, DaxMap, DaxTables>,
    arm: Gup<'a, Stage1G4K48, HostMemory<'a>, DaxMap, DaxTables>,
    map: &'a DaxMap,
    oracle: &'a Oracle,
    epoch: &'a Epoch<DaxTables, READERS>,
    leases: &'a LeaseRegistry<'r, LEASES>,
    holders: &'r [Holder],
    stop: AtomicBool,
    /// GUP-fast calls so far (progress line).
    calls: AtomicU64,
    /// The check GUP-fast runs without (`--broken`).
    #[cfg(feature = "broken-twins")]
    broken: Option<pagepin::gup::broken::Dropped>,
}

#[derive(Default, Clone, Copy)]
struct WalkerCounts {
    gets: u64,
    pins: u64,
    changed: u64,
    refused: u64,
    calls: u64,
    leases_granted: u64,
    leases_revoked: u64,
    stalled_ns: u64,
}

/// What a walker recorded about a page it holds.
#[derive(Clone, Copy)]
struct Held {
    head: Pfn,
    generation: u64,
}

/// Checks every page of `pfns` (taken from file page `file_first` on, in
/// order) while held with `hold`, and records each one's unit.
fn check_held(s: &Shared<'_, '_>, pfns: &[Pfn], file_first: u64, hold: Hold, out: &mut Vec<Held>) {
    out.clear();
    let oracle = s.oracle;
    for (i, &pfn) in pfns.iter().enumerate() {
        let file_page = file_first + i as u64;
        let unit = match s.map.lookup(pfn) {
            Ok(unit) => unit,
            Err(e) => {
                oracle.violation(format_args!("took a page outside the map: {e}"));
                out.push(Held {
                    head: pfn,
                    generation: POISON,
                });
                continue;
            }
        };
        let h = index(unit.head);
        // Relaxed loads: the get (Acquire) read from the allocation (Release)
        // that these values were written before; a held unit is not freed, so
        // they do not change while held.
        let generation = oracle.generation[h].load(Ordering::Relaxed);
        let contents = oracle.contents[index(pfn)].load(Ordering::Relaxed);
        let owner = oracle.owner[h].load(Ordering::Relaxed);
        if contents == POISON || contents != generation {
            oracle.violation(format_args!(
                "{pfn} held with contents {contents:#x}, its unit's generation {generation}"
            ));
        }
        let mapped_at = (owner as i64 - 1) + (pfn.0 - unit.head.0) as i64;
        if owner == 0 || mapped_at != file_page as i64 {
            oracle.violation(format_args!(
                "{pfn} taken at file page {file_page} but its unit puts it at {mapped_at}"
            ));
        }
        if unit.meta.load().count(hold) == 0 {
            oracle.violation(format_args!(
                "unit identity: {pfn} held ({hold:?}) but the meta that counts for it \
                 (head {}) holds none",
                unit.head
            ));
        }
        out.push(Held {
            head: unit.head,
            generation,
        });
    }
}

/// Checks that the held pages were not reallocated, then releases them.
fn release_held(s: &Shared<'_, '_>, pfns: &[Pfn], held: &[Held], hold: Hold) {
    for (&pfn, h) in pfns.iter().zip(held) {
        let now = s.map.lookup(pfn).ok();
        // Relaxed: see `check_held`.
        let generation = now.map(|u| s.oracle.generation[index(u.head)].load(Ordering::Relaxed));
        if now.map(|u| u.head) != Some(h.head) || generation != Some(h.generation) {
            s.oracle.violation(format_args!(
                "{pfn} reallocated or moved to another unit while held"
            ));
        }
    }
    // SAFETY: the pages were taken above by this code and are released once.
    if let Err(e) = unsafe { release(s.map, pfns, hold) } {
        s.oracle.violation(format_args!("release failed: {e}"));
    }
}

/// One GUP-fast call in `space`; `stall` arms the test pressure for its
/// first unit lookup.
#[allow(clippy::too_many_arguments)]
fn gup<G: WalkGuard<Domain = DaxTables>>(
    s: &Shared<'_, '_>,
    guard: &G,
    space: usize,
    start: u64,
    len: u64,
    flags: GupFlags,
    out: &mut [Pfn],
    stall: bool,
) -> Option<(usize, Stop)> {
    STALL_ARMED.set(stall);
    let va = VirtAddr(FILE_VA[space] + start * KIB4);
    #[cfg(feature = "broken-twins")]
    let taken = match (space, s.broken) {
        (0, Some(d)) => {
            pagepin::gup::broken::get_pages(&s.x86, d, guard, va, len * KIB4, flags, out)
        }
        (_, Some(d)) => {
            pagepin::gup::broken::get_pages(&s.arm, d, guard, va, len * KIB4, flags, out)
        }
        (0, None) => s.x86.get_pages(guard, va, len * KIB4, flags, out),
        (_, None) => s.arm.get_pages(guard, va, len * KIB4, flags, out),
    };
    #[cfg(not(feature = "broken-twins"))]
    let taken = match space {
        0 => s.x86.get_pages(guard, va, len * KIB4, flags, out),
        _ => s.arm.get_pages(guard, va, len * KIB4, flags, out),
    };
    STALL_ARMED.set(false);
    match taken {
        Ok(t) => Some((t.pages, t.stop)),
        Err(e) => {
            s.oracle
                .violation(format_args!("GUP refused a valid range: {e}"));
            None
        }
    }
}

fn classify(s: &Shared<'_, '_>, stop: &Stop, c: &mut WalkerCounts) {
    match stop {
        Stop::Complete | Stop::Absent { .. } | Stop::OutputFull { .. } => {}
        Stop::Changed { .. } => c.changed += 1,
        Stop::Refused {
            kind: GetErrorKind::Truncating | GetErrorKind::Free,
            ..
        } => c.refused += 1,
        other => s.oracle.violation(format_args!("unexpected stop: {other}")),
    }
}

/// A long-term pin under leases.
struct LongHold<'g, 'r> {
    pfns: Vec<Pfn>,
    held: Vec<Held>,
    leases: Vec<Lease<'g, 'r, LEASES>>,
}

/// A random range of the file: (first page, pages), in the hot eighth half of
/// the time.
fn pick_range(rng: &mut Rng, max_pages: u64) -> (u64, u64) {
    let r = rng.next();
    let span = if r & 1 == 0 { HOT_BLOCKS } else { FILE_BLOCKS } * BLOCK_PAGES;
    let start = (r >> 1) % span;
    let pages = (1 + (r >> 32) % max_pages).min(FILE_PAGES - start);
    (start, pages)
}

fn walker<'a, 'r>(s: &Shared<'a, 'r>, me: usize, seed: u64) -> WalkerCounts {
    let reader: EpochReader<'_, DaxTables, READERS> =
        s.epoch.reader().expect("a reader slot per walker");
    let holders: &'r [Holder] = s.holders;
    let holder = &holders[me];
    let mut rng = Rng(seed | 1);
    let mut out = vec![Pfn(0); MAX_WALKER_PAGES];
    let mut held = Vec::with_capacity(MAX_WALKER_PAGES);
    let mut c = WalkerCounts::default();
    let mut long: Option<LongHold<'a, 'r>> = None;
    while !s.stop.load(Ordering::Relaxed) {
        // A revoked long-term pin: check it, give the pins back, drop the leases.
        // Acquire: pairs with the Release store in `Holder::revoke`.
        if long.is_some() && holder.revoked.load(Ordering::Acquire) {
            let l = long.take().expect("checked");
            release_held(s, &l.pfns, &l.held, Hold::Pin);
            c.leases_revoked += l.leases.len() as u64;
            drop(l.leases);
        }
        let space = rng.below(SPACES as u64) as usize;
        if long.is_none() && rng.below(64) == 0 {
            long = take_long(s, holder, &reader, space, &mut rng, &mut c, &mut out);
            continue;
        }
        let (start, pages) = pick_range(&mut rng, MAX_WALKER_PAGES as u64);
        let pin = rng.next() & 1 == 0;
        let mut flags = GupFlags::WRITE | GupFlags::USER;
        if pin {
            flags |= GupFlags::PIN;
        }
        let hold = if pin { Hold::Pin } else { Hold::Ref };
        c.calls += 1;
        if c.calls % 256 == 0 {
            // Relaxed: a progress counter.
            s.calls.fetch_add(256, Ordering::Relaxed);
        }
        let stall = rng.below(STALL_EVERY) == 0;
        let Some((taken, stop)) = gup(s, &reader, space, start, pages, flags, &mut out, stall)
        else {
            continue;
        };
        classify(s, &stop, &mut c);
        let pfns = &out[..taken];
        check_held(s, pfns, start, hold, &mut held);
        release_held(s, pfns, &held, hold);
        if pin {
            c.pins += taken as u64;
        } else {
            c.gets += taken as u64;
        }
    }
    if let Some(l) = long.take() {
        release_held(s, &l.pfns, &l.held, Hold::Pin);
        drop(l.leases);
    }
    c.stalled_ns = STALLED_NS.get();
    c
}

/// Pins up to `LONG_PAGES` pages, leases their PFN runs, and re-checks that
/// no unit is marked truncating (module docs: "pin, lease, re-check").
#[allow(clippy::too_many_arguments)]
fn take_long<'a, 'r>(
    s: &Shared<'a, 'r>,
    me: &'r Holder,
    reader: &EpochReader<'_, DaxTables, READERS>,
    space: usize,
    rng: &mut Rng,
    c: &mut WalkerCounts,
    out: &mut [Pfn],
) -> Option<LongHold<'a, 'r>> {
    let (start, pages) = pick_range(rng, LONG_PAGES);
    let flags = GupFlags::WRITE | GupFlags::USER | GupFlags::PIN;
    c.calls += 1;
    let (taken, stop) = gup(s, reader, space, start, pages, flags, out, false)?;
    classify(s, &stop, c);
    if taken == 0 {
        return None;
    }
    c.pins += taken as u64;
    let pfns = out[..taken].to_vec();
    let mut held = Vec::with_capacity(taken);
    check_held(s, &pfns, start, Hold::Pin, &mut held);
    // Relaxed: no lease of this walker is held now; a late revoke of an old
    // lease only makes this hold end early.
    me.revoked.store(false, Ordering::Relaxed);
    let mut leases = Vec::new();
    let mut i = 0;
    while i < pfns.len() {
        let mut n = 1;
        while i + n < pfns.len() && pfns[i + n].0 == pfns[i].0 + n as u64 {
            n += 1;
        }
        match s.leases.grant(Extent::new(pfns[i], n as u64), me) {
            Ok(lease) => leases.push(lease),
            Err(_) => {
                release_held(s, &pfns, &held, Hold::Pin);
                return None;
            }
        }
        i += n;
    }
    c.leases_granted += leases.len() as u64;
    // The re-check after the grant: a unit marked before our grant took the
    // registry lock may have been scanned for leases already.
    if held.iter().any(|h| s.map.meta(h.head).is_truncating()) {
        release_held(s, &pfns, &held, Hold::Pin);
        return None;
    }
    Some(LongHold { pfns, held, leases })
}

/// How the x86_64 space maps a file block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Nothing mapped.
    Empty,
    /// One 2 MiB leaf over one physically contiguous, aligned block (one
    /// 2 MiB unit or 512 4 KiB units in order). Never hole-punched.
    Huge,
    /// 4 KiB leaves (scattered 4 KiB units, maybe with holes).
    Small,
}

/// The allocator (the truncater's alone; the memory map sees its layout
/// changes through `DaxMap::set_layout`).
struct Alloc {
    split: Vec<bool>,
    /// Whole blocks: free? Split blocks: free 4 KiB units.
    whole_free: Vec<bool>,
    split_free: Vec<u32>,
    page_free: Vec<bool>,
    /// LIFO free lists; entries may be stale (checked when popped).
    wholes: Vec<u64>,
    smalls: Vec<u64>,
    splits: u64,
    merges: u64,
}

impl Alloc {
    fn new() -> Alloc {
        Alloc {
            split: vec![false; BLOCKS as usize],
            whole_free: vec![true; BLOCKS as usize],
            split_free: vec![0; BLOCKS as usize],
            page_free: vec![false; DATA_PAGES as usize],
            wholes: (0..BLOCKS).rev().collect(),
            smalls: Vec::new(),
            splits: 0,
            merges: 0,
        }
    }

    /// A free whole block, taken.
    fn whole(&mut self) -> Option<u64> {
        while let Some(b) = self.wholes.pop() {
            if !self.split[b as usize] && self.whole_free[b as usize] {
                self.whole_free[b as usize] = false;
                return Some(b);
            }
        }
        None
    }

    /// A free whole block, split into 512 free 4 KiB units (none taken).
    fn split_one(&mut self, map: &DaxMap) -> Option<u64> {
        let b = self.whole()?;
        map.set_layout(b, true);
        self.splits += 1;
        self.split[b as usize] = true;
        self.split_free[b as usize] = BLOCK_PAGES as u32;
        for i in 0..BLOCK_PAGES as usize {
            self.page_free[b as usize * BLOCK_PAGES as usize + i] = true;
        }
        Some(b)
    }

    /// A free 4 KiB unit, taken (splitting a whole block if none is free).
    fn small(&mut self, map: &DaxMap) -> Option<u64> {
        loop {
            while let Some(i) = self.smalls.pop() {
                let b = i / BLOCK_PAGES;
                if self.split[b as usize] && self.page_free[i as usize] {
                    self.page_free[i as usize] = false;
                    self.split_free[b as usize] -= 1;
                    return Some(i);
                }
            }
            let b = self.split_one(map)?;
            // Pushed in reverse: the block's pages come out in order.
            self.smalls
                .extend((0..BLOCK_PAGES).rev().map(|i| b * BLOCK_PAGES + i));
        }
    }

    /// A whole block split and all 512 of its 4 KiB units taken.
    fn contiguous_smalls(&mut self, map: &DaxMap) -> Option<u64> {
        let b = self.split_one(map)?;
        for i in 0..BLOCK_PAGES as usize {
            self.page_free[b as usize * BLOCK_PAGES as usize + i] = false;
        }
        self.split_free[b as usize] = 0;
        Some(b)
    }

    /// Gives back the freed unit at data page `head` of `pages` pages; merges
    /// a split block whose units are all free.
    fn free(&mut self, map: &DaxMap, head: u64, pages: u64) {
        let b = head / BLOCK_PAGES;
        if pages == BLOCK_PAGES {
            self.whole_free[b as usize] = true;
            self.wholes.push(b);
            return;
        }
        self.page_free[head as usize] = true;
        self.split_free[b as usize] += 1;
        self.smalls.push(head);
        if self.split_free[b as usize] == BLOCK_PAGES as u32 {
            map.set_layout(b, false);
            self.merges += 1;
            self.split[b as usize] = false;
            for i in 0..BLOCK_PAGES as usize {
                self.page_free[b as usize * BLOCK_PAGES as usize + i] = false;
            }
            self.whole_free[b as usize] = true;
            self.wholes.push(b);
        }
    }
}

/// The truncater: the file, the allocator, both address spaces.
struct Truncater<'a, 'r> {
    map: &'a DaxMap,
    oracle: &'a Oracle,
    leases: &'a LeaseRegistry<'r, LEASES>,
    parker: &'a Parker,
    clock: &'a StdClock,
    x86: X86Builder<'a>,
    arm: ArmBuilder<'a>,
    tlb: CountingTlb,
    alloc: Alloc,
    /// Per file page: its data page index, or `HOLE`.
    file: Vec<u64>,
    kind: Vec<Kind>,
    /// Per file block: pages mapped.
    mapped: Vec<u32>,
    /// File blocks not full, and whether each is listed.
    not_full: Vec<u64>,
    listed: Vec<bool>,
    /// Per data page: 1 + the file page it is mapped at, 0 if none.
    rmap: Vec<u64>,
    generation: u64,
    truncates: u64,
    punches: u64,
    drain_retries: u64,
    rng: Rng,
}

impl Truncater<'_, '_> {
    /// Allocates the unit at data page `head` of `pages` pages for file page
    /// `file_page`: new generation, contents, owner, reverse map, then the
    /// meta's Release `allocate`.
    fn allocate(&mut self, head: u64, pages: u64, file_page: u64) {
        self.generation += 1;
        let g = self.generation;
        let o = self.oracle;
        let h = head as usize;
        // Relaxed stores: published by the Release `allocate` below, which a
        // walker's successful get (Acquire) reads from.
        o.generation[h].store(g, Ordering::Relaxed);
        for i in 0..pages as usize {
            o.contents[h + i].store(g, Ordering::Relaxed);
            self.rmap[h + i] = file_page + i as u64 + 1;
            self.file[(file_page + i as u64) as usize] = head + i as u64;
        }
        o.owner[h].store(file_page + 1, Ordering::Relaxed);
        if let Err(e) = self.map.metas[h].allocate() {
            o.violation(format_args!("allocate failed: {e}"));
        }
    }

    fn map_range(&mut self, space: usize, file_page: u64, data_page: u64, pages: u64, leaf: u64) {
        let va = VirtAddr(FILE_VA[space] + file_page * KIB4);
        let pa = PhysAddr(DATA_BASE + data_page * KIB4);
        let perms = Perms::READ | Perms::WRITE | Perms::USER;
        let req = MapRequest::new(va, pa, pages * KIB4, leaf).with_perms(perms);
        let done = match space {
            // SAFETY: the pages mapped are this code's, unmapped before they are freed.
            0 => unsafe { self.x86.map(&req) },
            // SAFETY: the pages mapped are this code's, unmapped before they are freed.
            _ => unsafe { self.arm.map(&req) },
        };
        if let Err(e) = done {
            self.oracle
                .violation(format_args!("map of space {space} failed: {e}"));
        }
    }

    /// Maps file pages `first .. first + pages` (all backed) with 4 KiB
    /// leaves in the spaces `spaces`, one request per run of consecutive PFNs.
    fn map_small(&mut self, first: u64, pages: u64, spaces: &[usize]) {
        let mut f = first;
        while f < first + pages {
            let d = self.file[f as usize];
            let mut n = 1;
            while f + n < first + pages && self.file[(f + n) as usize] == d + n {
                n += 1;
            }
            for &space in spaces {
                self.map_range(space, f, d, n, KIB4);
            }
            f += n;
        }
    }

    fn list_not_full(&mut self, block: u64) {
        if !self.listed[block as usize] {
            self.listed[block as usize] = true;
            self.not_full.push(block);
        }
    }

    /// Fills the holes of file block `block` with new units and maps them.
    /// An empty block gets one 2 MiB unit, 512 4 KiB units of one block in
    /// order, or scattered 4 KiB units; `prefer` picks the first
    /// (`Some(true)`) or the second (`Some(false)`).
    fn refill(&mut self, block: u64, prefer: Option<bool>) {
        let first = block * BLOCK_PAGES;
        if self.kind[block as usize] == Kind::Empty {
            let r = match prefer {
                Some(true) => 0,
                Some(false) => 50,
                None => self.rng.below(100),
            };
            let whole = if r < 40 {
                self.alloc.whole().map(|b| (b, true))
            } else if r < 75 {
                self.alloc.contiguous_smalls(self.map).map(|b| (b, false))
            } else {
                None
            };
            if let Some((b, one_unit)) = whole {
                let head = b * BLOCK_PAGES;
                if one_unit {
                    self.allocate(head, BLOCK_PAGES, first);
                } else {
                    for i in 0..BLOCK_PAGES {
                        self.allocate(head + i, 1, first + i);
                    }
                }
                self.map_range(0, first, head, BLOCK_PAGES, MIB2);
                self.map_range(1, first, head, BLOCK_PAGES, KIB4);
                self.kind[block as usize] = Kind::Huge;
                self.mapped[block as usize] = BLOCK_PAGES as u32;
                return;
            }
            self.kind[block as usize] = Kind::Small;
        }
        // 4 KiB units for every hole, then map the runs of new pages.
        let mut f = first;
        while f < first + BLOCK_PAGES {
            if self.file[f as usize] != HOLE {
                f += 1;
                continue;
            }
            let run_start = f;
            while f < first + BLOCK_PAGES && self.file[f as usize] == HOLE {
                let Some(d) = self.alloc.small(self.map) else {
                    self.oracle.violation(format_args!("out of memory"));
                    return;
                };
                self.allocate(d, 1, f);
                self.mapped[block as usize] += 1;
                f += 1;
            }
            self.map_small(run_start, f - run_start, &[0, 1]);
        }
    }

    /// The extents (PFN runs, whole units) of file pages `first .. first +
    /// pages`, with the file page each starts at.
    fn extents(&self, first: u64, pages: u64) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        let mut prev: Option<(u64, u64)> = None;
        for f in first..first + pages {
            let d = self.file[f as usize];
            if d == HOLE {
                prev = None;
                continue;
            }
            match (prev, out.last_mut()) {
                (Some((pf, pd)), Some(e)) if pf + 1 == f && pd + 1 == d => e.pages += 1,
                _ => out.push(Extent::new(Pfn(BASE_PFN + d), 1)),
            }
            prev = Some((f, d));
        }
        out
    }

    /// Runs the truncate protocol over `extents` of file pages `first ..
    /// first + pages`; on success the pages become holes and their units go
    /// back to the allocator.
    fn truncate(&mut self, first: u64, pages: u64) -> bool {
        let extents = self.extents(first, pages);
        if extents.is_empty() {
            return false;
        }
        let map = self.map;
        let o = self.oracle;
        let marked = match Truncate::mark(map, extents.iter().copied()) {
            Ok(t) => t,
            Err(e) => {
                o.violation(format_args!("mark: {e}"));
                return false;
            }
        };
        let mut unmapper = FileUnmapper {
            x86: &mut self.x86,
            arm: &mut self.arm,
            rmap: &self.rmap,
            tlb: &mut self.tlb,
        };
        let mut unmapped = match marked.unmap(&mut unmapper) {
            Ok(t) => t,
            Err(Failed { truncate, error }) => {
                let _ = truncate.cancel();
                o.violation(format_args!("unmap: {error}"));
                return false;
            }
        };
        let mut tries = 0;
        let drained = loop {
            let wait = Wait {
                waiter: self.parker,
                clock: self.clock,
                deadline_ns: Some(self.clock.now_ns() + DRAIN_DEADLINE.as_nanos() as u64),
            };
            match unmapped.drain_with_leases(self.leases, &wait) {
                Ok(t) => break t,
                Err(Failed { truncate, error }) => {
                    self.drain_retries += 1;
                    tries += 1;
                    if tries == DRAIN_TRIES {
                        // Only a leaked count gets here: leave the pages
                        // unmapped and allocated (lost), unmarked.
                        let _ = truncate.cancel();
                        o.violation(format_args!("drain stuck: {error}"));
                        return false;
                    }
                    unmapped = truncate;
                }
            }
        };
        match drained.free() {
            Ok(_) => {}
            Err(e) => o.violation(format_args!("free: {e}")),
        }
        // Poison the freed pages (nobody may see this while holding them),
        // then give the units back.
        for e in &extents {
            let mut d = index(e.first) as u64;
            let end = d + e.pages;
            while d < end {
                let pages = map.lookup(Pfn(BASE_PFN + d)).map_or(1, |u| u.pages);
                // Relaxed: see `allocate`.
                o.owner[d as usize].store(0, Ordering::Relaxed);
                for i in d..d + pages {
                    o.contents[i as usize].store(POISON, Ordering::Relaxed);
                    let f = self.rmap[i as usize] - 1;
                    self.rmap[i as usize] = 0;
                    self.file[f as usize] = HOLE;
                    self.mapped[(f / BLOCK_PAGES) as usize] -= 1;
                }
                self.alloc.free(map, d, pages);
                d += pages;
            }
        }
        let block = first / BLOCK_PAGES;
        if self.mapped[block as usize] == 0 {
            self.kind[block as usize] = Kind::Empty;
        }
        self.list_not_full(block);
        self.truncates += 1;
        true
    }

    /// Truncates file block `block` whole or (4 KiB leaves only) punches a
    /// random run of pages in it; true if something was truncated.
    fn truncate_or_punch(&mut self, block: u64, r: u64) -> bool {
        let first = block * BLOCK_PAGES;
        match self.kind[block as usize] {
            Kind::Empty => false,
            Kind::Small if (r >> 40) % 5 < 2 => {
                let start = (r >> 20) % BLOCK_PAGES;
                let pages = (1 + (r >> 48) % 64).min(BLOCK_PAGES - start);
                let done = self.truncate(first + start, pages);
                self.punches += u64::from(done);
                done
            }
            _ => self.truncate(first, BLOCK_PAGES),
        }
    }

    /// One step: answer a stalled walker (test pressure), or truncate a whole
    /// block or punch a hole at random; then refill.
    fn step(&mut self) {
        let r = self.rng.next();
        // Relaxed: see `DaxMap::stall`.
        let stalled = self.map.stalled.load(Ordering::Relaxed);
        let target = stalled
            .checked_sub(1)
            .and_then(|pfn| pfn.checked_sub(BASE_PFN))
            .filter(|&d| d < DATA_PAGES)
            .and_then(|d| self.rmap[d as usize].checked_sub(1))
            .map(|f| f / BLOCK_PAGES);
        if let Some(block) = target {
            // The adversary: truncate the block the walker is about to count
            // on, and half of the time refill it at once, at the same offset,
            // with the other unit size (the LIFO allocator hands the same
            // physical block back: the entries come back bit for bit).
            let huge = self.kind[block as usize] == Kind::Huge;
            let one_unit = huge
                && self
                    .map
                    .lookup(Pfn(BASE_PFN + self.file[(block * BLOCK_PAGES) as usize]))
                    .is_ok_and(|u| u.pages == BLOCK_PAGES);
            if self.truncate_or_punch(block, r) && r & (1 << 62) != 0 {
                if let Some(i) = self.not_full.iter().position(|&b| b == block) {
                    self.not_full.swap_remove(i);
                    self.listed[block as usize] = false;
                    let prefer = huge.then_some(!one_unit);
                    self.refill(block, prefer);
                }
            }
        } else {
            let span = if r & 1 == 0 { HOT_BLOCKS } else { FILE_BLOCKS };
            self.truncate_or_punch((r >> 1) % span, r);
        }
        if stalled != 0 {
            // Let the walker go on (unless it gave up already).
            let _ =
                self.map
                    .stalled
                    .compare_exchange(stalled, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
        while self.not_full.len() > NOT_FULL_TARGET {
            let i = self.rng.below(self.not_full.len() as u64) as usize;
            let b = self.not_full.swap_remove(i);
            self.listed[b as usize] = false;
            self.refill(b, None);
        }
    }
}

/// Runs the job with `config`.
pub fn run(config: Config) -> Summary {
    let map = DaxMap::new();
    let oracle = Oracle::new();
    let frames: Vec<HostFrame> = (0..SPACES * TABLE_FRAMES)
        .map(|_| HostFrame::new())
        .collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).expect("aligned base");
    let mut pas: Vec<PhysAddr> = memory.frame_pas().collect();
    let (x86_pas, arm_pas) = pas.split_at_mut(TABLE_FRAMES);
    let epoch = Epoch::<DaxTables, READERS>::new().expect("the only epoch of its brand");
    let retire = |space: usize| PoisonRetire {
        epoch: &epoch,
        memory: &memory,
        poison: POISON_ENTRY[space],
        pending: Vec::new(),
        retired: 0,
    };
    // SAFETY: the frames are this code's own, listed once, in no other pool.
    let x86 =
        X86Builder::new(&memory, unsafe { FramePool::new(x86_pas) }, retire(0)).expect("a root");
    // SAFETY: the frames are this code's own, listed once, in no other pool.
    let arm =
        ArmBuilder::new(&memory, unsafe { FramePool::new(arm_pas) }, retire(1)).expect("a root");
    let wake = || map.unpark_truncater();
    let holders: Vec<Holder> = (0..READERS)
        .map(|_| Holder {
            revoked: AtomicBool::new(false),
        })
        .collect();
    let leases = LeaseRegistry::<LEASES>::with_wake(&wake);
    let parker = Parker {
        parks: AtomicU64::new(0),
    };
    let begin = Instant::now();
    let clock = StdClock(begin);
    let _ = map.truncater.set(std::thread::current());
    let mut t = Truncater {
        map: &map,
        oracle: &oracle,
        leases: &leases,
        parker: &parker,
        clock: &clock,
        x86,
        arm,
        tlb: CountingTlb::default(),
        alloc: Alloc::new(),
        file: vec![HOLE; FILE_PAGES as usize],
        kind: vec![Kind::Empty; FILE_BLOCKS as usize],
        mapped: vec![0; FILE_BLOCKS as usize],
        not_full: Vec::new(),
        listed: vec![false; FILE_BLOCKS as usize],
        rmap: vec![0; DATA_PAGES as usize],
        generation: 0,
        truncates: 0,
        punches: 0,
        drain_retries: 0,
        rng: Rng(config.seed ^ 0x5851_f42d_4c95_7f2d | 1),
    };
    // The whole file, mapped before the walkers start.
    for block in 0..FILE_BLOCKS {
        t.refill(block, None);
    }
    let shared = Shared {
        x86: Gup::new(t.x86.walker(), &map),
        arm: Gup::new(t.arm.walker(), &map),
        map: &map,
        oracle: &oracle,
        epoch: &epoch,
        leases: &leases,
        holders: &holders,
        stop: AtomicBool::new(false),
        calls: AtomicU64::new(0),
        #[cfg(feature = "broken-twins")]
        broken: config.broken,
    };
    let start = Instant::now();
    let walked: Vec<WalkerCounts> = std::thread::scope(|sc| {
        let walkers: Vec<_> = (0..config.threads)
            .map(|i| {
                let shared = &shared;
                let seed = config.seed.wrapping_add(0x9e37_79b9 * (i as u64 + 1));
                sc.spawn(move || walker(shared, i, seed))
            })
            .collect();
        let mut next_progress = Duration::from_secs(5);
        while start.elapsed().as_secs_f64() < config.seconds {
            t.step();
            if config.progress && start.elapsed() >= next_progress {
                next_progress += Duration::from_secs(5);
                eprintln!(
                    "dax_truncate: {:.0} s: gup_calls={} truncates={} splits={} violations={}",
                    start.elapsed().as_secs_f64(),
                    // Relaxed: statistics.
                    shared.calls.load(Ordering::Relaxed),
                    t.truncates,
                    t.alloc.splits + t.alloc.merges,
                    oracle.violations.load(Ordering::Relaxed),
                );
            }
        }
        // Relaxed: the walkers only need to see it eventually.
        shared.stop.store(true, Ordering::Relaxed);
        walkers
            .into_iter()
            .map(|w| w.join().expect("walker thread"))
            .collect()
    });
    let elapsed = start.elapsed();
    // Nothing left behind: every page idle and unmarked, every lease gone.
    for (i, meta) in map.metas.iter().enumerate() {
        let w = meta.load();
        if !w.is_idle() || w.is_truncating() {
            oracle.violation(format_args!("data page {i} ends as {w:?}"));
        }
    }
    if !leases.is_empty() {
        oracle.violation(format_args!("{} leases left at the end", leases.len()));
    }
    let sum = |f: fn(&WalkerCounts) -> u64| walked.iter().map(f).sum::<u64>();
    let calls = sum(|c| c.calls);
    Summary {
        threads: config.threads + 1,
        gets: sum(|c| c.gets),
        pins: sum(|c| c.pins),
        truncates: t.truncates,
        punches: t.punches,
        splits: t.alloc.splits + t.alloc.merges,
        merges: t.alloc.merges,
        leases_revoked: sum(|c| c.leases_revoked),
        leases_granted: sum(|c| c.leases_granted),
        drain_retries: t.drain_retries,
        // Relaxed: read after the threads were joined.
        parks: parker.parks.load(Ordering::Relaxed),
        shootdowns: t.tlb.flushes,
        tables_retired: t.x86.retire_hook().retired + t.arm.retire_hook().retired,
        changed: sum(|c| c.changed),
        refused: sum(|c| c.refused),
        violations: oracle.violations.load(Ordering::Relaxed),
        ns_per_op: (elapsed.as_nanos() as f64 * config.threads as f64
            - sum(|c| c.stalled_ns) as f64)
            / calls.max(1) as f64,
        stalled_s: sum(|c| c.stalled_ns) as f64 / 1e9,
        seconds: begin.elapsed().as_secs_f64(),
    }
}

fn main() {
    let mut config = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&arg));
        match arg.as_str() {
            "--seconds" => config.seconds = value.parse().unwrap_or_else(|_| usage(&arg)),
            "--threads" => config.threads = value.parse().unwrap_or_else(|_| usage(&arg)),
            "--seed" => config.seed = value.parse().unwrap_or_else(|_| usage(&arg)),
            #[cfg(feature = "broken-twins")]
            "--broken" => {
                config.broken = Some(match value.as_str() {
                    "no-recheck" => pagepin::gup::broken::Dropped::Recheck,
                    "no-unit-recheck" => pagepin::gup::broken::Dropped::UnitRecheck,
                    _ => usage(&arg),
                })
            }
            _ => usage(&arg),
        }
    }
    if config.threads == 0
        || config.threads > READERS
        || config.seconds.is_nan()
        || config.seconds <= 0.0
    {
        usage("--threads/--seconds");
    }
    config.progress = config.seconds > 10.0;
    let s = run(config);
    println!(
        "truncates: {} ({} hole punches), layout changes: {} ({} merges), drains retried: {}, \
         truncater parks: {}, TLB shootdowns: {}, page tables retired/poisoned/reused: {}",
        s.truncates,
        s.punches,
        s.splits,
        s.merges,
        s.drain_retries,
        s.parks,
        s.shootdowns,
        s.tables_retired
    );
    println!(
        "walkers: {} leases granted, {} revoked; stops: {} changed under the walk, {} refused \
         by truncating or free pages; stalled {:.2} s; wall {:.2} s",
        s.leases_granted, s.leases_revoked, s.changed, s.refused, s.stalled_s, s.seconds
    );
    println!(
        "pagepin-summary threads={} gets={} pins={} truncates={} splits={} leases_revoked={} \
         violations={} ns_per_op={:.1}",
        s.threads,
        s.gets,
        s.pins,
        s.truncates,
        s.splits,
        s.leases_revoked,
        s.violations,
        s.ns_per_op
    );
    if s.violations != 0 {
        std::process::exit(1);
    }
}

fn usage(bad: &str) -> ! {
    eprintln!(
        "dax_truncate: bad argument {bad:?}\nusage: dax_truncate [--seconds S] \
         [--threads 1..={READERS}] [--seed N] [--broken no-recheck|no-unit-recheck \
         (built with --features broken-twins)]"
    );
    std::process::exit(2)
}
