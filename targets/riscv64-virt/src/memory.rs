//! The kernel's side of pagepin's traits: table access over the identity map,
//! the memory map of the data pages, and the epoch-deferred table retirement.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pagepin::guard::Epoch;
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Unit};
use pagepin::meta::PageMeta;
use pagepin::table::{
    AccessError, DirectMap, FramePool, PhysAddr, PoolFull, Retire, RetireError, TableAccess,
};
use pagepin::wait::{WaitSlot, WaitTable};

use crate::WALKERS;
use crate::layout::*;

/// The page-table frames: every table the MMU and GUP-fast walk is one of
/// these (the builder's pool holds exactly them).
pub static TABLES: [Frame; TABLE_FRAMES] =
    [const { Frame([const { AtomicU64::new(0) }; FRAME_WORDS]) }; TABLE_FRAMES];
const FRAME_WORDS: usize = (PAGE / 8) as usize;

/// The metas of the data pages, all free at boot.
pub static METAS: [PageMeta; METAS_LEN] = [const { PageMeta::new_free() }; METAS_LEN];
const METAS_LEN: usize = crate::layout::METAS;
/// Test instrumentation per unit head: the generation of its allocation.
pub static GENERATION: [AtomicU64; METAS_LEN] = [const { AtomicU64::new(0) }; METAS_LEN];
/// Test instrumentation per unit head: 1 + the slot it is mapped at, 0 if none.
pub static OWNER: [AtomicU64; METAS_LEN] = [const { AtomicU64::new(0) }; METAS_LEN];

/// The index of `pfn`'s meta.
pub fn meta_index(pfn: u64) -> usize {
    (pfn - DATA_FIRST) as usize
}

/// Word `word` (0..8) of data page `pfn`, through the identity map.
///
/// # Panics
///
/// If `pfn` is not a data page.
pub fn page_word(pfn: u64, word: usize) -> &'static AtomicU64 {
    assert!((DATA_FIRST..DATA_END).contains(&pfn) && word < 8);
    let pa = (pfn << PAGE_SHIFT) + 8 * word as u64;
    // SAFETY: `pa` is 8-aligned, inside the data pages, which are RAM
    // identity-mapped as Normal memory for the whole run (VA = PA), above the
    // kernel image (linker script ASSERT) and below RAM_END (layout
    // assertions), so no Rust object overlaps them; every access to them, by
    // every CPU, goes through `AtomicU64` references like this one.
    unsafe { &*(pa as *const AtomicU64) }
}

/// Table access over the identity map: a table's physical address is the
/// address of one of the [`TABLES`] frames.
#[derive(Debug, Clone, Copy)]
pub struct IdentityTables;

/// The one instance.
pub static IDENTITY: IdentityTables = IdentityTables;

/// pagepin's identity-map access to the [`TABLES`] frames (VA = PA): the
/// kernel runs identity-mapped, with the MMU off and with the tables built here.
fn direct() -> DirectMap<'static> {
    let first = TABLES.as_ptr().expose_provenance() as u64;
    let last = first + (TABLE_FRAMES as u64) * PAGE - 1;
    // SAFETY: (1) every 8-aligned address of `first ..= last` is a word of the
    // `TABLES` static (VA = PA: the kernel runs identity-mapped), live for the
    // whole run, its provenance exposed above; (2) the frames are arrays of
    // `AtomicU64` that nothing reinterprets, so every access is atomic (the
    // MMU's table walks are single-copy atomic 64-bit reads); (3) the static
    // does not wrap the address space.
    unsafe { DirectMap::identity(PhysAddr(first), PhysAddr(last)) }
}

// SAFETY: (1)-(3) as pagepin's `DirectMap` (`direct`): the word of `(table,
// index)` is the `TABLES` element at that physical address, the same every
// call; distinct entries are distinct elements; only atomic accesses. The
// frame check adds no access.
unsafe impl TableAccess for IdentityTables {
    unsafe fn entry(&self, table: PhysAddr, index: usize) -> Result<&AtomicU64, AccessError> {
        if !table.0.is_multiple_of(PAGE) {
            return Err(AccessError::Misaligned { table });
        }
        // SAFETY: `word`'s promise is this function's, passed on: our caller
        // stores to the word only what the tables' builder would.
        let word = unsafe { direct().word(table, index) }?;
        let frame = (table.0 - TABLES.as_ptr() as u64) / PAGE;
        check_not_freed(frame as usize, table);
        Ok(word)
    }
}

/// Per table frame: set while the frame is free (poisoned, in the pool).
/// Test instrumentation for DESIGN.md invariant 6, "a walk never reads a
/// page-table page after it was freed".
static FRAME_FREE: [AtomicBool; TABLE_FRAMES] = [const { AtomicBool::new(false) }; TABLE_FRAMES];

/// A walking CPU (1-3) must never reach a free table frame; CPU 0, the only
/// writer, reaches one when the builder takes it from the pool and zero-fills
/// it, which makes it live again.
///
/// No false alarm in a correct kernel: a frame is marked free only after the
/// epoch showed every walk that could have loaded a pointer to it has ended
/// (their reads happen before the mark), and it is marked live by CPU 0's
/// zero-fill before the Release store that publishes it again (a walk that
/// Acquire-loads that pointer sees the frame live).
fn check_not_freed(frame: usize, table: PhysAddr) {
    // Relaxed (both): ordered as the doc comment says, by the epoch and by the
    // table pointer's Release/Acquire; the flag publishes nothing itself.
    if FRAME_FREE[frame].load(Ordering::Relaxed) {
        if crate::arch::cpu_index() == 0 {
            FRAME_FREE[frame].store(false, Ordering::Relaxed);
        } else {
            crate::violation(format_args!(
                "a walk reached the page table at {:#x} after it was freed",
                table.0
            ));
        }
    }
}

/// The memory map of the data pages: page-mapped units are single pages, the
/// units from `HUGE_BASE` on are one block each; all of them are the "file"
/// (layout-managed). Waiters spin (`SpinWaiter`) on a hashed wait table.
pub struct KernelMemMap {
    waits: WaitTable<64>,
}

impl KernelMemMap {
    /// The map, with its wait table.
    pub fn new(waits: WaitTable<64>) -> KernelMemMap {
        KernelMemMap { waits }
    }
}

// SAFETY: (1) `unit` returns the block containing `pfn` (head aligned down to
// the block's pages) or `pfn` alone, after checking `pfn` is a data page; (2)
// the split is fixed by address, so every PFN of a unit computes the same head,
// size and meta, and units are never split or merged; (3) the metas are a
// static array; (4) `wake` bumps the slot `wait_slot` returns (same hash) and
// the only waiter kind, `SpinWaiter`, polls it.
unsafe impl MemoryMap for KernelMemMap {
    const PAGE_SHIFT: u32 = PAGE_SHIFT;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        if !(DATA_FIRST..DATA_END).contains(&pfn.0) {
            return Err(OutsideMap { pfn });
        }
        let unit_pages = BLOCK / PAGE;
        let (head, pages) = if pfn.0 >= HUGE_BASE >> PAGE_SHIFT {
            (pfn.0 & !(unit_pages - 1), unit_pages)
        } else {
            (pfn.0, 1)
        };
        Ok(Unit {
            head: Pfn(head),
            pages,
            meta: &METAS[meta_index(head)],
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

pagepin::epoch_brand!(
    /// The brand of the kernel's one epoch (`Shared::epoch`): the domain of
    /// the walking harts' readers and of [`KernelRetire`], so GUP-fast over the
    /// live tables compiles only under a reader of that epoch.
    pub enum KernelTables
);

/// The builder's retire hook: a detached table waits for the epoch (no walk
/// that could have loaded a pointer to it is still inside its read section),
/// is then poisoned with [`crate::poison_entry`] and given back to the pool,
/// whose next `take` (a stack) reuses it.
///
/// Tables are poisoned only in `reclaim`, never in `retire`: the builder calls
/// `retire` inside `unmap`, before the unmapper's TLB invalidation, when a
/// hardware walker may still hold the table in its walk cache.
pub struct KernelRetire<'e> {
    epoch: &'e Epoch<KernelTables, WALKERS>,
    pending: [(PhysAddr, u64); TABLE_FRAMES],
    len: usize,
    /// Tables retired.
    pub retired: u64,
    /// Tables poisoned and given back.
    pub reused: u64,
}

impl<'e> KernelRetire<'e> {
    /// A hook over `epoch`.
    pub fn new(epoch: &'e Epoch<KernelTables, WALKERS>) -> KernelRetire<'e> {
        KernelRetire {
            epoch,
            pending: [(PhysAddr(0), 0); TABLE_FRAMES],
            len: 0,
            retired: 0,
            reused: 0,
        }
    }

    /// Whether a table retired in `epoch` may be reused.
    fn safe(&self, epoch: u64) -> bool {
        // BROKEN build: no grace period at all.
        cfg!(feature = "broken-early-table-reuse") || self.epoch.is_safe(epoch)
    }
}

// SAFETY: (1) a table goes back to the pool only in `reclaim`, once the epoch
// shows no walk that could have loaded a pointer to it is inside its read
// section: the walks of these tables run under guards of this hook's domain,
// `KernelTables`, i.e. readers of the one live epoch of that brand, the one
// this hook holds; (2) the unmapper's `sfence.vma` and the acknowledged remote
// fences run right after each `unmap`, before the builder's next `map` can
// reuse a given-back frame. (The `broken-early-table-reuse` build breaks (1)
// on purpose, and `broken-no-remote-fence` (2).)
unsafe impl Retire for KernelRetire<'_> {
    type Domain = KernelTables;

    unsafe fn retire(
        &mut self,
        table: PhysAddr,
        _pool: &mut FramePool<'_>,
    ) -> Result<(), RetireError> {
        let epoch = self.epoch.retire_epoch();
        // Never full: there are only TABLE_FRAMES tables, and the root is
        // never retired. (Were it full, the table would wait in no list: the
        // hook's backlog, and the table stays the builder's.)
        let slot = self
            .pending
            .get_mut(self.len)
            .ok_or(RetireError::Backlog { table })?;
        *slot = (table, epoch);
        self.len += 1;
        self.retired += 1;
        Ok(())
    }

    fn reclaim(&mut self, pool: &mut FramePool<'_>) -> Result<(), PoolFull> {
        // The builder is out of frames: wait for the walks holding the oldest
        // retirement back (one GUP-fast call each).
        while pool.free_count() == 0
            && self.len > 0
            && !self.pending[..self.len].iter().any(|&(_, e)| self.safe(e))
        {
            core::hint::spin_loop();
        }
        let poison = crate::poison_entry();
        let mut i = 0;
        while i < self.len {
            let (table, epoch) = self.pending[i];
            if self.safe(epoch) {
                for index in 0..FRAME_WORDS {
                    // SAFETY: the poison goes into a table the builder
                    // detached and retired, which no walk can reach any more
                    // (`safe`: the epoch is past every walk that could have
                    // loaded a pointer to it) and which the builder zero-fills
                    // before it publishes the frame again: no walker of the
                    // live tables sees this store. Broken on purpose by
                    // `broken-early-table-reuse` (`safe` does not wait: a walk
                    // may still read the poison) and `broken-no-remote-fence`
                    // (another hart's TLB may still translate through the
                    // table).
                    let word = unsafe { IDENTITY.entry(table, index) }
                        .map_err(|_| PoolFull { frame: table })?;
                    // Relaxed: a retired table is reachable by no walk; the
                    // builder zero-fills it again and publishes it with a
                    // Release store before any walk can reach it.
                    word.store(poison, Ordering::Relaxed);
                }
                let frame = ((table.0 - TABLES.as_ptr() as u64) / PAGE) as usize;
                // Relaxed: see `check_not_freed`.
                FRAME_FREE[frame].store(true, Ordering::Relaxed);
                // SAFETY: `table` is a table the builder detached and handed
                // to `retire` (that call's contract), kept out of the pool
                // since; `safe` found the epoch past every walk that could
                // have loaded a pointer to it, and the unmapper's fences ran
                // after that `unmap`: `sfence.vma` on hart 0 and a full
                // `sfence.vma` on every other hart, acknowledged (see this
                // impl's SAFETY comment). So the pool owns it alone now.
                // Broken on purpose by two builds: `broken-early-table-reuse`
                // (its `safe` does not wait for the epoch) and
                // `broken-no-remote-fence` (the other harts' TLBs may still
                // hold translations through the table).
                unsafe { pool.give_back(table) }?;
                self.reused += 1;
                self.len -= 1;
                self.pending[i] = self.pending[self.len];
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}
