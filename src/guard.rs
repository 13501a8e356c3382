//! Walk guards: how page-table pages stay alive under a lockless walk.
//!
//! GUP-fast reads page tables without a lock while another CPU may unmap and
//! free them. A table page may be reused only after every walk that could have
//! loaded a pointer to it has ended. [`WalkGuard`] is the contract; the walk
//! holds a guard from before its first entry load until after its last
//! re-check.
//!
//! # Two ways a kernel implements it
//!
//! - **Interrupts off + acknowledged IPIs** (Linux x86's GUP-fast): the walker
//!   disables interrupts for the walk; the table freer detaches the table, sends
//!   an inter-processor interrupt to every CPU and *waits until each has
//!   acknowledged it* before reusing the page. A CPU with interrupts off cannot
//!   acknowledge, so the freer waits for its walk to end. This protects only if
//!   the freer really waits for an interrupt: on aarch64 a broadcast `TLBI ...IS`
//!   invalidates remote TLBs **without interrupting anyone**, so interrupts-off
//!   alone protects nothing there; the freer must send and wait for an SGI round
//!   (or use the epoch scheme).
//! - **An epoch (RCU-like) read section with deferred freeing**, which works on
//!   every architecture and on the host: [`Epoch`] below. The walker publishes
//!   the epoch it entered in; a detached table is retired with the epoch current
//!   at its detachment and reused only when no walker entered at or before that
//!   epoch is still inside. [`EpochRetire`] plugs this into the table builder
//!   as its [`Retire`] hook.
//!
//! # Domains: the guard and the retire hook agree by type
//!
//! A guard protects only the tables whose detached pages are retired the way it
//! expects: an [`EpochReader`] holds back tables retired through an
//! [`EpochRetire`] of the same [`Epoch`], and nothing else. Each guard and each
//! retire hook names its *domain* (an associated type); a
//! [`TableBuilder`](crate::table::TableBuilder) hands out walkers of its retire
//! hook's domain, and GUP-fast over such a walker accepts only a guard of that
//! domain. An epoch's domain is its *brand*, a type declared with
//! [`epoch_brand!`](crate::epoch_brand) of which at most one [`Epoch`] lives
//! at a time, so a reader of one epoch guarding tables retired through another
//! does not compile:
//!
//! ```compile_fail,E0271
//! use pagepin::arch::x86_64::Paging4Level;
//! use pagepin::guard::{Epoch, EpochRetire};
//! use pagepin::gup::{Gup, GupFlags};
//! use pagepin::memmap::{Pfn, SliceMemMap};
//! use pagepin::table::{FramePool, TableAccess, TableBuilder, VirtAddr};
//! pagepin::epoch_brand!(enum Tables);
//! pagepin::epoch_brand!(enum Other);
//! fn pin<A: TableAccess>(access: &A, pool: FramePool<'_>, memmap: &SliceMemMap<'_>) {
//!     let tables_epoch = Epoch::<Tables, 4>::new().unwrap();
//!     let other_epoch = Epoch::<Other, 4>::new().unwrap();
//!     // SAFETY: (the shootdown promise; not what this example is about)
//!     let retire = unsafe { EpochRetire::<_, 4, 16>::new(&tables_epoch) };
//!     let builder = TableBuilder::<Paging4Level, _, _>::new(access, pool, retire).unwrap();
//!     let gup = Gup::new(builder.walker(), memmap);
//!     let reader = other_epoch.reader().unwrap();
//!     let mut out = [Pfn(0); 1];
//!     // error[E0271]: the reader's domain is `Other`, the tables' is `Tables`.
//!     let _ = gup.get_pages(&reader, VirtAddr(0), 4096, GupFlags::PIN, &mut out);
//! }
//! ```
//!
//! (With `tables_epoch.reader()` it compiles: `tests/epoch_domain.rs` runs
//! it.) Nor does a bare walker take an epoch reader, since nothing says its
//! tables wait for that epoch:
//!
//! ```compile_fail,E0271
//! use pagepin::arch::x86_64::Paging4Level;
//! use pagepin::guard::Epoch;
//! use pagepin::gup::{Gup, GupFlags};
//! use pagepin::memmap::{Pfn, SliceMemMap};
//! use pagepin::table::{PhysAddr, TableAccess, VirtAddr, Walker};
//! pagepin::epoch_brand!(enum Tables);
//! fn pin<A: TableAccess>(access: &A, root: PhysAddr, memmap: &SliceMemMap<'_>) {
//!     let epoch = Epoch::<Tables, 4>::new().unwrap();
//!     let gup = Gup::new(Walker::<Paging4Level, _>::new(access, root), memmap);
//!     let reader = epoch.reader().unwrap();
//!     let mut out = [Pfn(0); 1];
//!     // error[E0271]: the walker's domain is `Promised`, the reader's `Tables`.
//!     let _ = gup.get_pages(&reader, VirtAddr(0), 4096, GupFlags::PIN, &mut out);
//! }
//! ```
//!
//! Guards and hooks whose agreement rests on a caller's `unsafe` promise
//! ([`TablesNeverFreed`], [`ReclaimNow`](crate::table::ReclaimNow), a
//! [`Walker::new`](crate::table::Walker::new) over a bare root) share the
//! domain [`Promised`].

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;

use heapless::Vec;

use crate::sync::{AtomicU64, Ordering, fence, op_count, spin_wait_hint};
use crate::table::{FramePool, PhysAddr, PoolFull, Retire, RetireError};

/// A walk guard: while a guard returned by [`enter`](Self::enter) lives, the
/// page tables the walk can reach stay page tables.
///
/// # Safety
///
/// Implementors promise, for the tables of their [`Domain`](Self::Domain)
/// (those whose detached pages are retired through a [`Retire`] hook of the
/// same domain, or never): while a guard lives, no page-table page that was
/// reachable from the walked root at any moment since the guard was entered is
/// freed, reused for anything but the same page table, or unmapped from the
/// table access. (Entries inside it may change; the page itself stays.)
/// GUP-fast walks a walker of domain `D` only under a guard of domain `D`.
pub unsafe trait WalkGuard {
    /// The tables this guard protects: those retired through a
    /// [`Retire`] hook of the same domain (see the [module docs](self)).
    type Domain;

    /// The guard; the read section ends when it is dropped.
    type Guard<'g>
    where
        Self: 'g;

    /// Enters a read section.
    fn enter(&self) -> Self::Guard<'_>;
}

/// The domain of guards, retire hooks and walkers whose agreement is a caller's
/// `unsafe` promise rather than a type: [`TablesNeverFreed`],
/// [`ReclaimNow`](crate::table::ReclaimNow), and a
/// [`Walker::new`](crate::table::Walker::new) over a bare root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Promised {}

/// A guard for tables that are never freed while walkers run (boot-time tables,
/// single-threaded tests, or a builder with no concurrent walker).
///
/// Its promise is the caller's, so making one without `unsafe` does not
/// compile:
///
/// ```compile_fail,E0133
/// let guard = pagepin::guard::TablesNeverFreed::new();
/// ```
#[derive(Debug)]
pub struct TablesNeverFreed {
    _private: (),
}

impl TablesNeverFreed {
    /// # Safety
    ///
    /// The caller promises that no page-table page reachable by the walks guarded
    /// with this value is freed or reused while any such walk runs.
    pub unsafe fn new() -> TablesNeverFreed {
        TablesNeverFreed { _private: () }
    }
}

// SAFETY: the constructor's caller promised that no reachable table page is
// freed while walks run, which is this trait's whole contract.
unsafe impl WalkGuard for TablesNeverFreed {
    type Domain = Promised;
    type Guard<'g> = ();

    #[inline]
    fn enter(&self) {}
}

/// A slot value: not claimed by any reader.
const UNCLAIMED: u64 = u64::MAX;
/// A slot value: claimed, outside any read section.
const QUIESCENT: u64 = 0;

/// The brand of an [`Epoch`]: a type of which at most one epoch lives at a
/// time, and the [domain](self#domains-the-guard-and-the-retire-hook-agree-by-type)
/// of that epoch's readers and retire hooks. Declare one with
/// [`epoch_brand!`](crate::epoch_brand), which implements this trait soundly.
///
/// # Safety
///
/// [`claim`](Self::claim) returns the same [`BrandClaim`] at every call. (Two
/// brands may share a claim; that only keeps their epochs from living at the
/// same time.)
pub unsafe trait EpochBrand: 'static {
    /// The flag saying whether an epoch of this brand lives.
    fn claim() -> &'static BrandClaim;
}

/// Whether an [`Epoch`] of a brand lives; a `static` per brand, declared by
/// [`epoch_brand!`](crate::epoch_brand).
#[derive(Debug)]
pub struct BrandClaim {
    /// A `core` atomic even under loom: it is a `static` (loom's atomics are
    /// not `const`), and the claim orders nothing a model checks; an epoch's
    /// life is ordered by the ownership of the `Epoch` value itself.
    taken: core::sync::atomic::AtomicBool,
}

impl BrandClaim {
    /// An unclaimed brand.
    #[allow(clippy::new_without_default)] // only `epoch_brand!` makes these, in a `static`
    pub const fn new() -> BrandClaim {
        BrandClaim {
            taken: core::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Declares an [`Epoch`] brand: an uninhabited type implementing
/// [`EpochBrand`](crate::guard::EpochBrand) with a claim of its own.
///
/// ```
/// pagepin::epoch_brand!(
///     /// The epoch of the kernel's user page tables.
///     pub enum UserTables
/// );
/// let epoch = pagepin::guard::Epoch::<UserTables, 8>::new().unwrap();
/// // A second live epoch of the same brand would break the tie between
/// // readers and retire hooks: refused.
/// assert!(pagepin::guard::Epoch::<UserTables, 8>::new().is_err());
/// drop(epoch);
/// assert!(pagepin::guard::Epoch::<UserTables, 8>::new().is_ok());
/// ```
#[macro_export]
macro_rules! epoch_brand {
    ($(#[$attr:meta])* $vis:vis enum $name:ident $(;)?) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {}

        // SAFETY: `claim` returns the one `static` declared here, the same at
        // every call.
        unsafe impl $crate::guard::EpochBrand for $name {
            fn claim() -> &'static $crate::guard::BrandClaim {
                static CLAIM: $crate::guard::BrandClaim = $crate::guard::BrandClaim::new();
                &CLAIM
            }
        }
    };
}

/// An epoch of brand `B` already lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BrandTaken;

impl fmt::Display for BrandTaken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an epoch of this brand already lives")
    }
}

impl core::error::Error for BrandTaken {}

/// An epoch domain of brand `B` with `SLOTS` reader slots (one per walking CPU
/// or thread).
///
/// The global epoch starts at 1 and grows by one at every retirement. A slot
/// holds `u64::MAX` (unclaimed), `0` (claimed, not reading) or the epoch its reader
/// entered in.
pub struct Epoch<B: EpochBrand, const SLOTS: usize> {
    global: AtomicU64,
    slots: [AtomicU64; SLOTS],
    brand: PhantomData<fn() -> B>,
}

impl<B: EpochBrand, const SLOTS: usize> fmt::Debug for Epoch<B, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epoch")
            .field("brand", &core::any::type_name::<B>())
            .field("global", &self.global.load(Ordering::Relaxed))
            .field("slots", &SLOTS)
            .finish()
    }
}

impl<B: EpochBrand, const SLOTS: usize> Drop for Epoch<B, SLOTS> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire `swap` in `new`, so a later epoch of
        // the brand is made after this one's last use.
        B::claim()
            .taken
            .store(false, core::sync::atomic::Ordering::Release);
    }
}

/// Every reader slot of an [`Epoch`] is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotsFull;

impl fmt::Display for SlotsFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("every epoch reader slot is claimed")
    }
}

impl core::error::Error for SlotsFull {}

impl<B: EpochBrand, const SLOTS: usize> Epoch<B, SLOTS> {
    /// The epoch of brand `B`, with no readers, at epoch 1.
    ///
    /// # Errors
    ///
    /// [`BrandTaken`] while another epoch of brand `B` lives: its readers and
    /// retire hooks would carry the same domain as this one's, and the types
    /// could no longer tell them apart.
    ///
    /// The claim is an atomic swap (a read-modify-write) on the brand's
    /// `static`: on aarch64 create the epoch once exclusives work on the
    /// kernel image (MMU on, Normal cacheable memory), not before.
    pub fn new() -> Result<Epoch<B, SLOTS>, BrandTaken> {
        // Acquire: pairs with the Release store in `Drop`, ordering the end of
        // the previous epoch of the brand before this one.
        if B::claim()
            .taken
            .swap(true, core::sync::atomic::Ordering::Acquire)
        {
            return Err(BrandTaken);
        }
        Ok(Epoch {
            global: AtomicU64::new(1),
            slots: core::array::from_fn(|_| AtomicU64::new(UNCLAIMED)),
            brand: PhantomData,
        })
    }

    /// Claims a reader slot: one per walking thread (or CPU).
    ///
    /// # Errors
    ///
    /// [`SlotsFull`] when all `SLOTS` are claimed.
    pub fn reader(&self) -> Result<EpochReader<'_, B, SLOTS>, SlotsFull> {
        for slot in &self.slots {
            op_count::rmw();
            // Relaxed: claiming publishes nothing; the read sections order
            // themselves with their own fences.
            if slot
                .compare_exchange(UNCLAIMED, QUIESCENT, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(EpochReader {
                    slot,
                    global: &self.global,
                    depth: Cell::new(0),
                    brand: PhantomData,
                });
            }
        }
        Err(SlotsFull)
    }

    /// Starts a retirement: call after the entry pointing to a table has been
    /// cleared (and the TLBs shot down). Returns the epoch the table is retired
    /// in; it may be reused once [`is_safe`](Self::is_safe) says so.
    pub fn retire_epoch(&self) -> u64 {
        // SeqCst fence: the reclaimer's side of the store-buffering pair with
        // the fence in `EpochReader::enter`. Either a reader's slot store comes
        // first (and the later scans see it), or the reader's entry loads come
        // after the detaching store (and never reach the table).
        fence(Ordering::SeqCst);
        op_count::rmw();
        // AcqRel: Release pairs with the Acquire load in `enter`: a reader that
        // enters with the new epoch synchronises with this fence-ordered point,
        // so its loads see the detached entry cleared. Acquire: nothing needed,
        // kept symmetric for the RMW's place in the epoch's release sequence.
        //
        // No wrap: the epoch starts at 1 and grows by one per retirement; it
        // would reach `UNCLAIMED` (`u64::MAX`) and then `QUIESCENT` (0), which
        // `is_safe` reads as "no reader", only after 2^64 - 2 retirements of
        // detached tables: centuries at one per nanosecond.
        self.global.fetch_add(1, Ordering::AcqRel)
    }

    /// Whether no reader that could hold a table retired in `retired` is still
    /// inside its read section.
    pub fn is_safe(&self, retired: u64) -> bool {
        self.slots.iter().all(|slot| {
            // Acquire: pairs with the Release store that ends a read section, so
            // the reader's table loads happen before the table's reuse.
            let s = slot.load(Ordering::Acquire);
            s == UNCLAIMED || s == QUIESCENT || s > retired
        })
    }
}

/// A claimed reader slot of an [`Epoch`]: the walk guard of one thread. Not
/// `Sync`: one reader per thread (or CPU). Read sections nest.
pub struct EpochReader<'e, B, const SLOTS: usize> {
    slot: &'e AtomicU64,
    global: &'e AtomicU64,
    /// Open read sections (they nest). `u64`, not `u32`: `mem::forget` of a
    /// guard is safe code that leaves its section open forever, and 2^32
    /// forgotten guards (seconds of work) would wrap a `u32` to 0 and end the
    /// read section of a guard still walking. 2^64 `enter` calls take
    /// centuries at one per nanosecond, so `depth + 1` cannot overflow.
    depth: Cell<u64>,
    brand: PhantomData<fn() -> B>,
}

impl<B, const SLOTS: usize> fmt::Debug for EpochReader<'_, B, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochReader")
            .field("depth", &self.depth.get())
            .finish()
    }
}

impl<B, const SLOTS: usize> Drop for EpochReader<'_, B, SLOTS> {
    fn drop(&mut self) {
        // Release: ends the slot's last read section's ordering (see `leave`).
        // A guard cannot outlive its reader, so no read section is open here.
        self.slot.store(UNCLAIMED, Ordering::Release);
    }
}

/// An open read section of an [`EpochReader`].
#[must_use = "the read section ends when the guard is dropped"]
pub struct EpochGuard<'r, 'e, B, const SLOTS: usize> {
    reader: &'r EpochReader<'e, B, SLOTS>,
}

impl<B, const SLOTS: usize> fmt::Debug for EpochGuard<'_, '_, B, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochGuard").finish_non_exhaustive()
    }
}

impl<B, const SLOTS: usize> Drop for EpochGuard<'_, '_, B, SLOTS> {
    fn drop(&mut self) {
        // This guard's `enter` counted it and it has not been dropped, so
        // `depth >= 1`: the subtraction does not wrap.
        let depth = self.reader.depth.get() - 1;
        self.reader.depth.set(depth);
        if depth == 0 {
            // Release: pairs with the Acquire scan in `Epoch::is_safe`, so every
            // table load of this read section happens before the table's reuse.
            self.reader.slot.store(QUIESCENT, Ordering::Release);
        }
    }
}

// SAFETY: a table of domain `B` is retired only through an `EpochRetire` of
// the one live epoch of brand `B` (the brand's claim), which gives it back only
// when `is_safe` finds no slot that entered at or before its retirement epoch
// still inside a read section (the argument is in `retire_epoch` and `enter`);
// an open guard keeps its slot at its entry epoch.
unsafe impl<B: EpochBrand, const SLOTS: usize> WalkGuard for EpochReader<'_, B, SLOTS> {
    type Domain = B;
    type Guard<'g>
        = EpochGuard<'g, 'g, B, SLOTS>
    where
        Self: 'g;

    fn enter(&self) -> EpochGuard<'_, '_, B, SLOTS> {
        let depth = self.depth.get();
        if depth == 0 {
            // Acquire: pairs with the AcqRel `fetch_add` of `retire_epoch`.
            let epoch = self.global.load(Ordering::Acquire);
            // Release, not Relaxed: pairs with the Acquire scan of
            // `Epoch::is_safe`. A scan that reads this value (an epoch newer than
            // a retirement) calls the slot safe without having seen the store
            // that ended this reader's *previous* read section; the Release makes
            // that section's loads happen before the reclaimer's reuse anyway
            // (C++20 release sequences no longer include later plain stores of
            // the same thread). Found by `tests/loom_schemes.rs`, scheme (1),
            // at `LOOM_MAX_PREEMPTIONS=3`: a walker that reads a page, ends its
            // section and enters the next one. Ordered before the walk's loads
            // by the fence below.
            self.slot.store(epoch, Ordering::Release);
            // SeqCst fence: the reader's side of the store-buffering pair with
            // the fence in `Epoch::retire_epoch` (see there).
            fence(Ordering::SeqCst);
        }
        // Cannot overflow: see `depth` (one increment per `enter`, 2^64 of
        // them take centuries).
        self.depth.set(depth + 1);
        EpochGuard { reader: self }
    }
}

/// How many times [`EpochRetire`] spins waiting for a walk to end before it
/// gives up: a table it cannot keep is [`RetireError::Backlog`], a pool it
/// cannot refill is the builder's `PoolExhausted`. About a millisecond of
/// `spin_loop` hints: GUP-fast's read sections are far shorter, so it is
/// reached only when a section stays open across the builder's call.
pub const EPOCH_WAIT_SPINS: u32 = 1 << 16;

/// The table builder's [`Retire`] hook over an [`Epoch`]: detached tables wait in
/// a bounded list (`CAP`) until no walker can still read them.
pub struct EpochRetire<'e, B: EpochBrand, const SLOTS: usize, const CAP: usize> {
    epoch: &'e Epoch<B, SLOTS>,
    pending: Vec<(PhysAddr, u64), CAP>,
}

impl<B: EpochBrand, const SLOTS: usize, const CAP: usize> fmt::Debug
    for EpochRetire<'_, B, SLOTS, CAP>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochRetire")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<'e, B: EpochBrand, const SLOTS: usize, const CAP: usize> EpochRetire<'e, B, SLOTS, CAP> {
    /// A retire hook over `epoch`. A builder using it hands out walkers of
    /// domain `B`, which GUP-fast walks only under a reader of this epoch: that
    /// half of the contract is in the types.
    ///
    /// # Safety
    ///
    /// The caller promises, for as long as the hook is in use, that the TLB
    /// shootdown for the tables a builder's `unmap` detached completes before
    /// that builder's next `map` (this hook gives tables back when the epoch
    /// allows, and a `map` reuses them; a CPU's paging-structure caches are not
    /// epoch readers).
    ///
    /// ```compile_fail,E0133
    /// pagepin::epoch_brand!(enum Tables);
    /// let epoch = pagepin::guard::Epoch::<Tables, 1>::new().unwrap();
    /// let retire = pagepin::guard::EpochRetire::<_, 1, 4>::new(&epoch);
    /// ```
    ///
    /// A hook that keeps no table would refuse every one (`CAP = 0`):
    ///
    /// ```compile_fail,E0080
    /// pagepin::epoch_brand!(enum Tables);
    /// let epoch = pagepin::guard::Epoch::<Tables, 1>::new().unwrap();
    /// // SAFETY: no MMU walks these tables.
    /// let retire = unsafe { pagepin::guard::EpochRetire::<_, 1, 0>::new(&epoch) };
    /// ```
    pub unsafe fn new(epoch: &'e Epoch<B, SLOTS>) -> Self {
        const {
            assert!(
                CAP >= 1,
                "an EpochRetire keeps at least one table (CAP = 0 refuses every one)"
            )
        };
        EpochRetire {
            epoch,
            pending: Vec::new(),
        }
    }

    /// Tables retired and not yet given back.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

// SAFETY: (1) a table goes back to the pool only when `is_safe` finds no
// reader of the epoch that entered at or before its retirement still inside,
// and the walkers of these tables have domain `B`, which GUP-fast walks only
// under a guard of domain `B`: a reader of this epoch, the only live one of the
// brand; (2) the constructor's caller promised the shootdown of an unmap
// completes before the next map, the only thing that reuses a given-back frame.
unsafe impl<B: EpochBrand, const SLOTS: usize, const CAP: usize> Retire
    for EpochRetire<'_, B, SLOTS, CAP>
{
    type Domain = B;

    unsafe fn retire(
        &mut self,
        table: PhysAddr,
        pool: &mut FramePool<'_>,
    ) -> Result<(), RetireError> {
        let retired = self.epoch.retire_epoch();
        // The list is full: wait for the oldest walks to end. Read sections are
        // short (one GUP-fast call), but one may be open across this unmap (the
        // caller's own, say), so the wait is bounded.
        let mut spins = 0;
        while self.pending.is_full() {
            self.reclaim(pool).map_err(RetireError::PoolFull)?;
            if self.pending.is_full() {
                if spins == EPOCH_WAIT_SPINS {
                    return Err(RetireError::Backlog { table });
                }
                // `spins < EPOCH_WAIT_SPINS`: no overflow.
                spins += 1;
                spin_wait_hint();
            }
        }
        // Cannot fail: the loop above made room.
        let _ = self.pending.push((table, retired));
        Ok(())
    }

    /// Gives back every retired table no walker can still read. If the pool is
    /// empty (the builder is about to fail for want of a frame) and something is
    /// pending, first waits until the oldest walks end, up to
    /// [`EPOCH_WAIT_SPINS`] spins (after which the builder reports the pool
    /// exhausted).
    fn reclaim(&mut self, pool: &mut FramePool<'_>) -> Result<(), PoolFull> {
        let mut spins = 0;
        while spins < EPOCH_WAIT_SPINS
            && pool.free_count() == 0
            && !self.pending.is_empty()
            && !self.pending.iter().any(|&(_, e)| self.epoch.is_safe(e))
        {
            // `spins < EPOCH_WAIT_SPINS`: no overflow.
            spins += 1;
            spin_wait_hint();
        }
        let mut i = 0;
        while i < self.pending.len() {
            let (table, retired) = self.pending[i];
            if self.epoch.is_safe(retired) {
                // SAFETY: `retire`'s caller detached `table` from a builder
                // over `pool`, and `is_safe` found no walk that could hold it
                // (see this impl's SAFETY comment).
                unsafe { pool.give_back(table) }?;
                self.pending.swap_remove(i);
            } else {
                // `i < pending.len() <= CAP`: no overflow.
                i += 1;
            }
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_table_waits_for_the_readers_that_entered_before_it() {
        crate::epoch_brand!(enum Nested);
        let epoch = Epoch::<Nested, 2>::new().unwrap();
        let reader = epoch.reader().unwrap();
        let other = epoch.reader().unwrap();
        assert_eq!(epoch.reader().unwrap_err(), SlotsFull);
        let early = reader.enter();
        let retired = epoch.retire_epoch();
        assert!(
            !epoch.is_safe(retired),
            "a reader entered before the retirement"
        );
        // A reader entering after the retirement does not hold it back.
        let late = other.enter();
        let nested = reader.enter();
        drop(nested);
        assert!(!epoch.is_safe(retired), "the outer section is still open");
        drop(early);
        assert!(epoch.is_safe(retired));
        drop(late);
        drop(other);
        assert!(epoch.reader().is_ok(), "a dropped reader frees its slot");
    }

    #[test]
    fn epoch_retire_gives_tables_back_when_safe() {
        crate::epoch_brand!(enum GiveBack);
        let epoch = Epoch::<GiveBack, 1>::new().unwrap();
        let reader = epoch.reader().unwrap();
        let mut frames = [PhysAddr(0); 2];
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        let mut pool = unsafe { FramePool::new(&mut frames) };
        let a = pool.take().unwrap();
        // SAFETY: the only reader is this epoch's; no MMU walks these frames.
        let mut retire = unsafe { EpochRetire::<_, 1, 4>::new(&epoch) };
        let guard = reader.enter();
        // SAFETY: `a` came from `pool` and no table points to it.
        unsafe { retire.retire(a, &mut pool) }.unwrap();
        retire.reclaim(&mut pool).unwrap();
        assert_eq!((retire.pending(), pool.free_count()), (1, 1));
        drop(guard);
        retire.reclaim(&mut pool).unwrap();
        assert_eq!((retire.pending(), pool.free_count()), (0, 2));
    }
}
