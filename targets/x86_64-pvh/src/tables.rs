//! The kernel's side of pagepin's table traits: table access over the
//! identity map, a static frame pool, the retire hook that waits for the
//! shootdown acknowledgements, the TLB hook, and the interrupts-off walk guard.
//!
//! # Domains
//!
//! pagepin pairs walk guards with retire hooks by type (their `Domain`): a
//! walker has its tables' domain and GUP-fast over it takes only a guard of
//! that domain. This kernel has two pairs, one per `guard=` boot option:
//!
//! - `guard=irq-off` (the default): [`IrqOffWalk`] and [`IpiRetire::new`],
//!   domain [`IrqOffTables`];
//! - `guard=epoch`: the readers of [`EPOCH`] and [`IpiRetire::with_epoch`],
//!   domain [`EpochTables`], the epoch's brand.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pagepin::guard::{Epoch, WalkGuard};
use pagepin::table::{
    AccessError, DirectMap, FramePool, LeafSizes, PhysAddr, PoolFull, Retire, RetireError,
    TableAccess, VaRange,
};
use pagepin::truncate::TlbShootdown;

use crate::shootdown::MAX_CPUS;
use crate::{cpu, shootdown};

/// The domain of [`IrqOffWalk`] and of [`IpiRetire::new`]'s hook: tables
/// reused only after a shootdown IPI sent after their detachment was
/// acknowledged by every CPU, and walks that cannot acknowledge one.
///
/// The tie between the two is this kernel's own promise (`IrqOffWalk::new` is
/// `unsafe`), so pagepin's `Promised` domain would do; a type of the kernel's
/// own makes more mismatches fail to compile: `IrqOffWalk` cannot guard a walk
/// of tables whose builder frees them at once (`ReclaimNow`, `Promised`), of a
/// bare `Walker::new` (`Promised`) or of the `guard=epoch` tables
/// ([`EpochTables`]), and a `TablesNeverFreed` (`Promised`) cannot guard the
/// race's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrqOffTables {}

pagepin::epoch_brand!(
    /// The brand of [`EPOCH`]: the domain of its readers and of
    /// [`IpiRetire::with_epoch`]'s hook (`guard=epoch` boots).
    pub enum EpochTables
);

/// The epoch of `guard=epoch` boots, one reader slot per CPU; set (before the
/// table builder and the SIPIs) only in those boots.
pub static EPOCH: spin::Once<Epoch<EpochTables, MAX_CPUS>> = spin::Once::new();

/// Page-table frames: every table the kernel builds (the identity map and the
/// file region) is one of these.
pub const FRAMES: usize = 96;

/// One 4 KiB page-table frame.
#[repr(C, align(4096))]
pub struct Frame([AtomicU64; 512]);

/// The frames, in `.bss`. The kernel is linked at its load address and runs
/// identity-mapped, so a frame's virtual address is its physical address.
static TABLE_FRAMES: [Frame; FRAMES] =
    [const { Frame([const { AtomicU64::new(0) }; 512]) }; FRAMES];

/// What a reused table is filled with before it goes back to the pool: a
/// present, writable, user entry to the first data page. As a PTE it maps a
/// page that belongs to someone else; as a table pointer it points into data,
/// which [`IdentityTables`] refuses. A walker that still read a freed table
/// would be caught either way.
pub const POISON_ENTRY: u64 = crate::race::DATA_BASE | 0x7;

/// The physical addresses of all frames.
pub fn frame_pas() -> impl Iterator<Item = PhysAddr> {
    let base = TABLE_FRAMES.as_ptr() as u64;
    (0..FRAMES as u64).map(move |i| PhysAddr(base + i * 4096))
}

/// pagepin's identity-map access to the [`TABLE_FRAMES`] (VA == PA): the
/// kernel is linked at its load address and every table it loads in CR3 (the
/// boot tables and the builder's identity map of 0..2 GiB) maps the image at
/// VA == PA.
fn direct() -> DirectMap<'static> {
    let first = TABLE_FRAMES.as_ptr().expose_provenance() as u64;
    let last = first + FRAMES as u64 * 4096 - 1;
    // SAFETY: (1) every 8-aligned address of `first ..= last` is a word of the
    // `TABLE_FRAMES` static, identity-mapped (VA == PA) for every CPU in every
    // table this kernel loads, live for the whole run, its provenance exposed
    // above; (2) the frames are arrays of `AtomicU64` that nothing
    // reinterprets, so every access is atomic (the MMU's walks are atomic
    // 8-byte reads, its A/D updates locked); (3) the static, in the image
    // below 1 GiB, does not wrap the address space.
    unsafe { DirectMap::identity(PhysAddr(first), PhysAddr(last)) }
}

/// Page tables reached through the identity map, pagepin's [`DirectMap`]
/// ([`direct`]): the entry `index` of the table at physical address `table`
/// is the 8-byte word at virtual address `table + 8 * index`. Only tables
/// inside the kernel's frame pool are reachable, so a malformed entry (or the
/// poison above) can never make a walk read other memory.
///
/// Two roles, for one piece of test instrumentation: DESIGN.md's invariant 6
/// ("a walk never reads a page-table page after it was freed"). The retire hook
/// marks a frame freed when it gives it back to the pool; the builder's access
/// ([`IdentityTables::BUILDER`]) clears the mark when it touches the frame again
/// (its zero-fill, before the Release store that publishes the table); a
/// walker's access ([`IdentityTables::WALKER`]) that reaches a frame while it is
/// marked counts a violation (and reads the word anyway, as the MMU would).
#[derive(Debug, Clone, Copy)]
pub struct IdentityTables {
    walker: bool,
}

impl IdentityTables {
    /// The builder's access (and the retire hook's).
    pub const BUILDER: IdentityTables = IdentityTables { walker: false };
    /// The walkers' access.
    pub const WALKER: IdentityTables = IdentityTables { walker: true };
}

/// Per frame: given back to the pool after retirement, not reused yet.
static FREED: [AtomicBool; FRAMES] = [const { AtomicBool::new(false) }; FRAMES];
/// Entry reads of walkers in frames marked freed (each also a violation).
static FREED_READS: AtomicU64 = AtomicU64::new(0);

/// How many entry reads of walkers hit a freed page-table frame.
pub fn freed_reads() -> u64 {
    // Relaxed: a count, read by CPU 0 after the walkers finished.
    FREED_READS.load(Ordering::Relaxed)
}

// SAFETY: (1)-(3) as pagepin's `DirectMap` (`direct`): the word of `(table,
// index)` is the `TABLE_FRAMES` element at physical (and virtual) address
// `table + 8 * index`, the same every call, the one the MMU reads; distinct
// entries are distinct elements; only atomic accesses. The page-alignment and
// index checks only refuse more, and the freed-frame check adds no access to
// the tables.
unsafe impl TableAccess for IdentityTables {
    #[inline]
    unsafe fn entry(&self, table: PhysAddr, index: usize) -> Result<&AtomicU64, AccessError> {
        if !table.0.is_multiple_of(4096) {
            return Err(AccessError::Misaligned { table });
        }
        if index >= 512 {
            return Err(AccessError::Unreachable { table, index });
        }
        // SAFETY: `word`'s promise is this function's, passed on: our caller
        // stores to the word only what the tables' builder would.
        let word = unsafe { direct().word(table, index) }?;
        // In range: the entry is inside the frames (checked by `word`), and a
        // 4 KiB-aligned table holding it is the frame it lies in.
        let frame = ((table.0 - direct().range().0.0) / 4096) as usize;
        // Relaxed: instrumentation. For the builder, a frame is marked only
        // between its give-back and its next use, both on CPU 0. For a walker,
        // a frame it reaches through a published entry was unmarked before that
        // entry's Release store (the walk's Acquire load orders it), so in a
        // correct kernel a walker never sees the mark.
        if FREED[frame].load(Ordering::Relaxed) {
            if self.walker {
                // Relaxed: a count.
                FREED_READS.fetch_add(1, Ordering::Relaxed);
                crate::race::violation(format_args!(
                    "a walk read page-table frame {table} after it was freed"
                ));
            } else {
                FREED[frame].store(false, Ordering::Relaxed);
            }
        }
        Ok(word)
    }
}

/// Fills `table` with [`POISON_ENTRY`] and marks it freed.
///
/// # Safety
///
/// `table` is a table the builder detached and retired, that no walker can
/// reach any more (the builder zero-fills it before it publishes the frame
/// again).
unsafe fn poison(table: PhysAddr) {
    for index in 0..512 {
        // SAFETY: the poison goes into a detached table no walker of the live
        // tables reaches (this function's contract), which the builder
        // zero-fills before it publishes it again.
        if let Ok(word) = unsafe { IdentityTables::BUILDER.entry(table, index) } {
            // Relaxed: the table is detached; a walker that still reads it (a
            // bug this kernel exists to catch) reads garbage either way.
            word.store(POISON_ENTRY, Ordering::Relaxed);
        }
    }
    if let Some(frame) = frame_pas().position(|pa| pa == table) {
        // Relaxed: instrumentation (see `IdentityTables`).
        FREED[frame].store(true, Ordering::Relaxed);
    }
}

/// The retire hook: a detached table is poisoned and given back only once a
/// shootdown that started after its detachment has completed (every CPU
/// acknowledged the IPI, so no walk that could have loaded the old entry is
/// still running).
///
/// With `guard=epoch` (walkers in epoch read sections, interrupts on, so a
/// walker acknowledges a shootdown in the middle of a walk) a table also
/// waits until [`EPOCH`] says no read section that could hold it is open.
///
/// `D` is the hook's domain, and says which of the two it is: only
/// [`IpiRetire::new`] makes an `IpiRetire<IrqOffTables>` (no epoch) and only
/// [`IpiRetire::with_epoch`] an `IpiRetire<EpochTables>` (with one).
pub struct IpiRetire<D> {
    /// The epoch a table also waits for: `Some` exactly when `D` is
    /// [`EpochTables`].
    epoch: Option<&'static Epoch<EpochTables, MAX_CPUS>>,
    /// Detached tables, the shootdown generation that frees them and their
    /// retirement epoch (0 without an epoch).
    pending: heapless::Vec<(PhysAddr, u64, u64), FRAMES>,
    /// Tables retired so far.
    pub retired: u64,
    /// Tables poisoned and given back.
    pub reused: u64,
    domain: PhantomData<fn() -> D>,
}

impl IpiRetire<IrqOffTables> {
    /// The hook of `guard=irq-off` boots, no table pending: a table waits for
    /// the acknowledged shootdown alone, which is all [`IrqOffWalk`] needs.
    pub const fn new() -> IpiRetire<IrqOffTables> {
        IpiRetire {
            epoch: None,
            pending: heapless::Vec::new(),
            retired: 0,
            reused: 0,
            domain: PhantomData,
        }
    }
}

impl IpiRetire<EpochTables> {
    /// The hook of `guard=epoch` boots, no table pending: a table waits for
    /// the acknowledged shootdown and for `epoch`, the one epoch of brand
    /// [`EpochTables`].
    pub const fn with_epoch(
        epoch: &'static Epoch<EpochTables, MAX_CPUS>,
    ) -> IpiRetire<EpochTables> {
        IpiRetire {
            epoch: Some(epoch),
            pending: heapless::Vec::new(),
            retired: 0,
            reused: 0,
            domain: PhantomData,
        }
    }
}

impl<D> IpiRetire<D> {
    /// Poisons `table` and gives it back to `pool`.
    ///
    /// # Safety
    ///
    /// As for `FramePool::give_back`: `table` is a table of `pool`'s builder,
    /// detached, that no walker or MMU can still read.
    unsafe fn give_back(
        &mut self,
        table: PhysAddr,
        pool: &mut FramePool<'_>,
    ) -> Result<(), PoolFull> {
        // SAFETY: `table` is detached and no walker can read it (this
        // function's contract, which is `poison`'s).
        unsafe { poison(table) };
        self.reused += 1;
        // SAFETY: this function's own contract, passed on.
        unsafe { pool.give_back(table) }
    }
}

// SAFETY: pagepin's `Retire` contract: a detached table goes back to the pool
// only from `reclaim`, once (1) every walk under a guard of the hook's domain
// `D` that could have loaded a pointer to it has ended. `D` is one of two
// (the constructors): `IrqOffTables`, whose only guard is `IrqOffWalk`: a
// shootdown started after the detachment (generation `frees_at`, taken in
// `retire`, which the builder calls after its detaching store) has been
// acknowledged by every online CPU, which a CPU inside such a walk cannot do
// (see `IrqOffWalk`); or `EpochTables`, whose guards are the readers of the
// one live epoch of that brand, `self.epoch`: also `is_safe` for the table's
// retirement epoch. And (2) that same completed shootdown invalidated every
// CPU's paging-structure caches for the range (`shootdown::flush` runs
// `invlpg` on each CPU before it acknowledges). The `broken-no-ack` build
// breaks (1) and (2) on purpose.
unsafe impl<D> Retire for IpiRetire<D> {
    type Domain = D;

    unsafe fn retire(
        &mut self,
        table: PhysAddr,
        pool: &mut FramePool<'_>,
    ) -> Result<(), RetireError> {
        self.retired += 1;
        if cfg!(feature = "broken-no-ack") {
            // BROKEN (on purpose): reused before any CPU acknowledged anything.
            // SAFETY: broken on purpose by the `broken-no-ack` build (the
            // only one that gets here): `table` was just detached (this
            // call's contract) but walks may still read it, and no shootdown
            // has run yet.
            return unsafe { self.give_back(table, pool) }.map_err(RetireError::PoolFull);
        }
        // The builder calls this after clearing the entry that pointed to
        // `table`; the unmapper's shootdown (generation `next()`) starts after.
        let frees_at = shootdown::next();
        let epoch = self.epoch.map_or(0, Epoch::retire_epoch);
        // Never full: there are only FRAMES tables. (Were it full, the table
        // would wait in no list: the hook's backlog, and the table stays the
        // builder's.)
        self.pending
            .push((table, frees_at, epoch))
            .map_err(|(table, _, _)| RetireError::Backlog { table })
    }

    fn reclaim(&mut self, pool: &mut FramePool<'_>) -> Result<(), PoolFull> {
        let done = shootdown::completed();
        let mut i = 0;
        while i < self.pending.len() {
            let (table, frees_at, epoch) = self.pending[i];
            let walks_done = self.epoch.is_none_or(|e| e.is_safe(epoch));
            if frees_at <= done && walks_done {
                // SAFETY: `table` is a table the builder detached and handed
                // to `retire` (that call's contract), pending since; the
                // shootdown of generation `frees_at`, started after the
                // detachment, has completed (every online CPU ran `invlpg`
                // over the range and acknowledged, which a CPU inside an
                // `IrqOffWalk` cannot do), and with an epoch `is_safe` passed
                // too: no walk and no paging-structure cache can still read
                // it (see this impl's SAFETY comment).
                unsafe { self.give_back(table, pool) }?;
                self.pending.swap_remove(i);
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

/// The TLB hook of the truncate's unmapper: `invlpg` here plus an acknowledged
/// IPI round (see [`shootdown`]).
#[derive(Debug, Default)]
pub struct IpiShootdown {
    /// Shootdowns made.
    pub flushes: u64,
}

// SAFETY: `shootdown::flush` runs `invlpg` every `step` bytes of the range
// on this CPU (`step` is the smallest leaf the unmap cleared, so every cleared
// leaf is hit; an `invlpg` also drops every paging-structure-cache entry of
// the current PCID, PCIDs being off), then sends the shootdown IPI to every
// other CPU and returns only when every online CPU has acknowledged it, each
// after the same `invlpg`s in its handler. The CPUs that run on the race's
// tables are CPU 0 and the APs `start_aps` counted online
// (`shootdown::set_online`, before `GO` and so before the first truncate), as
// the walkers' `IrqOffWalk::new` also relies on; there is one address space
// (`_space` is always 0).
unsafe impl TlbShootdown for IpiShootdown {
    fn flush(&mut self, _space: usize, range: VaRange, sizes: LeafSizes) {
        self.flushes += 1;
        shootdown::flush(range, sizes.smallest().unwrap_or(4096));
    }
}

/// The walk guard of this kernel: interrupts off on the walking CPU for the
/// whole GUP-fast call (Linux x86's GUP-fast guard).
#[derive(Debug)]
pub struct IrqOffWalk {
    _private: (),
}

impl IrqOffWalk {
    /// # Safety
    ///
    /// The caller promises that every page-table page the guarded walks can
    /// reach is reused only after a shootdown IPI that was sent after the
    /// table was detached has been acknowledged by every CPU that walks with
    /// this guard. The guarded walks are those of walkers of this guard's
    /// domain, [`IrqOffTables`], whose tables go through [`IpiRetire::new`]'s
    /// hook, which waits for every online CPU: what is left to promise is that
    /// the walking CPUs are online (`shootdown::set_online` counted them). On
    /// x86 an IPI is an interrupt, so a CPU with interrupts off cannot
    /// acknowledge it before its walk ends; that wait is the whole protection.
    /// (On aarch64 a broadcast TLBI interrupts nobody: this guard would protect
    /// nothing there.)
    pub const unsafe fn new() -> IrqOffWalk {
        IrqOffWalk { _private: () }
    }
}

/// An interrupts-off section; interrupts come back on (if they were on) when it
/// is dropped.
#[must_use = "the section ends when the guard is dropped"]
pub struct IrqOff {
    restore: bool,
}

impl Drop for IrqOff {
    fn drop(&mut self) {
        if self.restore {
            cpu::sti();
        }
    }
}

// SAFETY: while an `IrqOff` lives this CPU has interrupts off (`cli` is also a
// compiler barrier, so the walk's loads stay inside the section) and cannot
// acknowledge a shootdown IPI. The walks it guards are of tables of domain
// `IrqOffTables`. By the constructor's promise, such a table detached at any
// moment is reused only after a shootdown *sent after the detachment* was
// acknowledged by this CPU, i.e. after the section that may have loaded the
// old entry has ended: the acknowledgement is a Release store made after the
// section, the reuser's wait an Acquire load of it, so every load of the walk
// happens before the reuse. A section that begins after this CPU acknowledged
// starts after the handler's Acquire load of the shootdown generation, which
// the initiator bumped (Release) after the detaching store: its walk sees the
// table detached and cannot reach it.
unsafe impl WalkGuard for IrqOffWalk {
    type Domain = IrqOffTables;
    type Guard<'g> = IrqOff;

    fn enter(&self) -> IrqOff {
        let restore = cpu::interrupts_enabled();
        cpu::cli();
        IrqOff { restore }
    }
}
