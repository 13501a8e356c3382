//! The frame pool the builder takes new tables from, and the retire hook that
//! decides when a detached table may go back to it.

use super::addr::PhysAddr;
use super::error::{PoolFull, RetireError};

/// Free frames for page tables: a caller-provided slice used as a stack. No
/// allocation, and nothing is ever written into a free frame (a walker that
/// still reads a detached table sees the zeros it was left with).
///
/// Frames must be aligned and large enough for the format's largest table and
/// reachable through the builder's table access;
/// [`TableBuilder::new`](super::TableBuilder::new) and
/// [`TableBuilder::with_root`](super::TableBuilder::with_root) check the last two.
///
/// Handing frames to a pool is a promise (see [`new`](Self::new)); without
/// `unsafe` it does not compile:
///
/// ```compile_fail,E0133
/// use pagepin::table::{FramePool, PhysAddr};
/// let mut frames = [PhysAddr(0x10_0000)];
/// let pool = FramePool::new(&mut frames);
/// ```
#[derive(Debug)]
pub struct FramePool<'a> {
    slots: &'a mut [PhysAddr],
    free: usize,
}

impl<'a> FramePool<'a> {
    /// A pool whose free frames are the addresses in `frames`; the slice is the
    /// pool's storage, so it can never hold more frames than it started with.
    ///
    /// # Safety
    ///
    /// Every frame listed is memory the pool owns alone from now on, for as
    /// long as the pool or a builder over it lives: not in use, not in another
    /// pool, not another builder's root, and not freed or reused by anyone
    /// else. A builder writes page tables into these frames; a frame someone
    /// else also uses is either their memory overwritten or a page table they
    /// write under walkers (which then translate through garbage and pin the
    /// wrong pages for DMA). The builders also refuse a frame listed twice
    /// ([`MapError::DuplicateFrame`](super::MapError::DuplicateFrame)). The
    /// tables of a builder that was dropped are still in use while walkers of
    /// them live (a [`Walker`](super::Walker) does not borrow its builder):
    /// they are not free frames for a new pool until those walks are over.
    pub unsafe fn new(frames: &'a mut [PhysAddr]) -> FramePool<'a> {
        let free = frames.len();
        FramePool {
            slots: frames,
            free,
        }
    }

    /// Takes a free frame, `None` when the pool is empty.
    #[inline]
    pub fn take(&mut self) -> Option<PhysAddr> {
        let top = self.free.checked_sub(1)?;
        self.free = top;
        self.slots.get(top).copied()
    }

    /// Returns a frame to the pool.
    ///
    /// # Errors
    ///
    /// [`PoolFull`] when the pool already holds as many frames as it was created
    /// with (so `frame` was never taken from it).
    ///
    /// # Safety
    ///
    /// As for the frames of [`new`](Self::new): the pool owns `frame` alone
    /// from now on. For a table the pool handed out, that is the [`Retire`]
    /// contract: detached, and no walker or MMU can still read it.
    #[inline]
    pub unsafe fn give_back(&mut self, frame: PhysAddr) -> Result<(), PoolFull> {
        let slot = self.slots.get_mut(self.free).ok_or(PoolFull { frame })?;
        *slot = frame;
        // `free < slots.len()` (the slot exists), so `free + 1 <= len`.
        self.free += 1;
        Ok(())
    }

    /// The number of free frames.
    #[inline]
    pub fn free_count(&self) -> usize {
        self.free
    }

    /// The number of frames the pool was created with.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The free frames.
    #[inline]
    pub fn free_frames(&self) -> &[PhysAddr] {
        &self.slots[..self.free]
    }

    /// A frame listed twice among the free ones, if any. Sorts them in
    /// ascending order, so that [`take`](Self::take) (which pops the end)
    /// hands out the highest address first, as it did for frames listed in
    /// ascending order before.
    pub(crate) fn duplicate(&mut self) -> Option<PhysAddr> {
        let free = &mut self.slots[..self.free];
        free.sort_unstable();
        free.windows(2)
            .find(|pair| pair[0] == pair[1])
            .map(|pair| pair[0])
    }
}

/// What happens to a page table once the builder has detached it (cleared the
/// entry that pointed to it, after clearing every leaf in it).
///
/// Lockless walkers may still be reading a detached table, so in a kernel it may
/// be reused only after every walk that could have loaded the old entry has
/// ended: an epoch or RCU reclaimer defers it. [`ReclaimNow`] is right only when
/// no walker runs concurrently with the builder.
///
/// # Safety
///
/// Implementors promise that a table handed to [`retire`](Self::retire) goes
/// back to the pool (from `retire` or from [`reclaim`](Self::reclaim)) only
/// when nothing can still read it as a page table:
///
/// 1. every lockless walk that could have loaded a pointer to it has ended
///    (the walk guard's grace period, [`WalkGuard`](crate::guard::WalkGuard))
///    for every walk under a guard of the hook's [`Domain`](Self::Domain):
///    the builder's walkers carry that domain, and GUP-fast walks them only
///    under such guards;
/// 2. no CPU's paging-structure caches can still use it: the TLB shootdown
///    for its detachment has completed. The builder's caller makes that
///    shootdown after [`unmap`](super::TableBuilder::unmap) returns; a frame
///    given back is reused by a later [`map`](super::TableBuilder::map), so a
///    hook may rely on the caller's shootdown happening before that map (and
///    must say so, `unsafe`, where it is constructed).
///
/// A table reused while a walker or an MMU still reads it is a device pinned
/// through garbage, or a CPU translating through it: memory unsafety.
///
/// Only the builder retires ([`retire`](Self::retire) is `unsafe` to call),
/// so safe code cannot feed a hook a live table:
///
/// ```compile_fail,E0133
/// use pagepin::table::{FramePool, PhysAddr, ReclaimNow, Retire};
/// fn feed(pool: &mut FramePool<'_>, live_table: PhysAddr) {
///     // SAFETY: (not what this example is about)
///     let mut hook = unsafe { ReclaimNow::new() };
///     let _ = hook.retire(live_table, pool);
/// }
/// ```
pub unsafe trait Retire {
    /// The walk guards whose read sections hold these tables back (see
    /// [`guard`](crate::guard#domains-the-guard-and-the-retire-hook-agree-by-type)).
    type Domain;

    /// Takes the detached, all-zero `table`: give it back to `pool` now or keep it
    /// until [`reclaim`](Self::reclaim) finds no walker can still read it.
    ///
    /// # Errors
    ///
    /// [`RetireError::PoolFull`] if the pool refuses the frame,
    /// [`RetireError::Backlog`] if the hook cannot take another table now. On
    /// an error the table is the caller's again (detached, not reused).
    ///
    /// # Safety
    ///
    /// `table` is a table of `pool`'s builder that the builder has just
    /// detached (cleared the entry pointing to it, after every entry in it):
    /// the hook will give it to `pool`, which then owns it alone (see
    /// [`FramePool::give_back`]). The builder is the one caller.
    unsafe fn retire(
        &mut self,
        table: PhysAddr,
        pool: &mut FramePool<'_>,
    ) -> Result<(), RetireError>;

    /// Gives back to `pool` every retired table that no walker can still read.
    /// The builder calls it when the pool has too few frames for a mapping.
    ///
    /// # Errors
    ///
    /// [`PoolFull`] if the pool refuses a frame.
    fn reclaim(&mut self, pool: &mut FramePool<'_>) -> Result<(), PoolFull>;
}

/// Retirement without a grace period: a detached table goes straight back to
/// the pool. Correct only while no lockless walker reads the tables concurrently
/// with the builder and no MMU walks them (single-threaded setup, tests, or
/// tables not yet live): the promise its `unsafe` constructor takes, the mirror
/// image of [`TablesNeverFreed::new`](crate::guard::TablesNeverFreed::new).
///
/// Constructing it without `unsafe` does not compile:
///
/// ```compile_fail
/// let retire = pagepin::table::ReclaimNow;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ReclaimNow {
    _private: (),
}

impl ReclaimNow {
    /// A hook that gives detached tables back at once.
    ///
    /// # Safety
    ///
    /// The caller promises that no walker reads the tables of a builder using
    /// this hook while that builder unmaps, and that no MMU walks them (or that
    /// the TLB shootdown of every unmap completes before the builder's next
    /// `map`), for as long as the hook is in use.
    pub const unsafe fn new() -> ReclaimNow {
        ReclaimNow { _private: () }
    }
}

// SAFETY: the constructor's caller promised that no walker or MMU reads a
// detached table (1, 2 of the contract), so giving it back at once is sound.
unsafe impl Retire for ReclaimNow {
    type Domain = crate::guard::Promised;

    #[inline]
    unsafe fn retire(
        &mut self,
        table: PhysAddr,
        pool: &mut FramePool<'_>,
    ) -> Result<(), RetireError> {
        // SAFETY: the builder detached `table` (this method's contract) and the
        // constructor's caller promised no walker or MMU still reads it.
        unsafe { pool.give_back(table) }.map_err(RetireError::PoolFull)
    }

    #[inline]
    fn reclaim(&mut self, _pool: &mut FramePool<'_>) -> Result<(), PoolFull> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_a_bounded_stack() {
        let mut slots = [PhysAddr(0x1000), PhysAddr(0x2000)];
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        let mut pool = unsafe { FramePool::new(&mut slots) };
        assert_eq!((pool.free_count(), pool.capacity()), (2, 2));
        assert_eq!(
            // SAFETY: the frame came from this pool and nothing can reach it.
            unsafe { pool.give_back(PhysAddr(0x9000)) },
            Err(PoolFull {
                frame: PhysAddr(0x9000)
            })
        );
        assert_eq!(pool.take(), Some(PhysAddr(0x2000)));
        assert_eq!(pool.take(), Some(PhysAddr(0x1000)));
        assert_eq!(pool.take(), None);
        assert_eq!(pool.free_count(), 0);
        // SAFETY: the frame came from this pool and nothing can reach it.
        unsafe { pool.give_back(PhysAddr(0x1000)) }.unwrap();
        assert_eq!(pool.free_frames(), &[PhysAddr(0x1000)]);
        // SAFETY: no walker or MMU reads these (made-up) tables.
        let mut now = unsafe { ReclaimNow::new() };
        // SAFETY: a made-up table of this pool's, detached (no table points
        // to it).
        assert_eq!(unsafe { now.retire(PhysAddr(0x2000), &mut pool) }, Ok(()));
        assert_eq!(pool.free_count(), 2);
        assert_eq!(now.reclaim(&mut pool), Ok(()));
        assert_eq!(pool.free_count(), 2);
    }
}
