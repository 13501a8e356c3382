//! The drain: waiting until every unit of an unmapped set is idle, and the
//! waiter's side of the wake-up handshake (`crate::wait`'s fenced
//! store-buffering pair: register, then re-check; release, then wake).

use core::fmt;
#[cfg(loom)]
use core::mem::ManuallyDrop;

use heapless::Vec;

use super::{
    BusyUnit, DrainError, Drained, Extent, Failed, LeaseRegistry, StillBusy, Truncate, Unmapped,
};
use crate::memmap::{MemoryMap, Unit};
use crate::meta::PageMeta;
use crate::sync::op_count;
use crate::wait::{Clock, Parked, WaitSlot, WaitTicket, Waiter};

/// How a drain waits: a waiter, a clock and an optional deadline (in the clock's
/// nanoseconds).
#[derive(Clone, Copy)]
pub struct Wait<'w> {
    /// Parks the draining thread.
    pub waiter: &'w dyn Waiter,
    /// Measures the deadline.
    pub clock: &'w dyn Clock,
    /// When to give up; `None` waits for ever.
    pub deadline_ns: Option<u64>,
}

impl fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("deadline_ns", &self.deadline_ns)
            .finish_non_exhaustive()
    }
}

impl<'m, M: MemoryMap + ?Sized, I: Iterator<Item = Extent> + Clone> Truncate<'m, M, I, Unmapped> {
    /// Checks, without waiting, whether every unit is idle (Linux's
    /// `dax_layout_busy_page`): if so the set is drained.
    ///
    /// # Errors
    ///
    /// [`StillBusy`] with the first `N` busy units and the total, and the
    /// truncate back, still `Unmapped`.
    pub fn try_drain<const N: usize>(
        self,
    ) -> Result<Truncate<'m, M, I, Drained>, Failed<Self, StillBusy<N>>> {
        let mut busy = StillBusy {
            first: Vec::new(),
            total: 0,
        };
        // Units idle when marked stay idle: a set idle when marked has nothing
        // to scan, a busy one is scanned from its first busy unit on.
        let units = (self.first_busy < self.units).then(|| self.units());
        for unit in units
            .into_iter()
            .flatten()
            .skip(self.first_busy as usize)
            .flatten()
        {
            let w = unit.meta.load();
            if !w.is_idle() {
                busy.total += 1;
                let _ = busy.first.push(BusyUnit {
                    head: unit.head,
                    refs: w.refs(),
                    pins: w.pins(),
                });
            }
        }
        if busy.total == 0 {
            Ok(self.into_state())
        } else {
            Err(Failed {
                truncate: self,
                error: busy,
            })
        }
    }

    /// Waits until every unit of the set is idle.
    ///
    /// Scans the set; on the first busy unit it registers in that unit's wait
    /// slot, re-checks, and parks until a release on the slot wakes it (or the
    /// deadline passes), then resumes the scan there. It holds no lock while it
    /// waits.
    ///
    /// # Errors
    ///
    /// [`DrainError::TimedOut`] naming a unit still busy at the deadline, with
    /// the truncate back, still `Unmapped`.
    pub fn drain(
        self,
        wait: &Wait<'_>,
    ) -> Result<Truncate<'m, M, I, Drained>, Failed<Self, DrainError>> {
        match self.wait_idle::<RegisterThenCheck>(wait) {
            Ok(()) => Ok(self.into_state()),
            Err(error) => Err(Failed {
                truncate: self,
                error,
            }),
        }
    }

    /// [`drain`](Self::drain), first revoking every lease of `leases` that
    /// overlaps the set: each revoke callback is called with no registry lock
    /// held, then the drain waits (to the same deadline) for those leases to be
    /// dropped, then for the pages.
    ///
    /// # Errors
    ///
    /// [`DrainError::LeaseHeld`] naming a revoked lease still held at the
    /// deadline, or [`DrainError::TimedOut`]; the truncate back, still
    /// `Unmapped`.
    pub fn drain_with_leases<const L: usize>(
        self,
        leases: &LeaseRegistry<'_, L>,
        wait: &Wait<'_>,
    ) -> Result<Truncate<'m, M, I, Drained>, Failed<Self, DrainError>> {
        let revoked =
            leases.take_overlapping(|lease| self.extents.clone().any(|e| e.overlaps(lease)));
        for (id, revoke) in &revoked {
            revoke.revoke(*id);
        }
        let slot = leases.released_slot();
        for (id, _) in &revoked {
            let gone = || !leases.is_held(*id);
            // Register, then re-check: a drop between the two is seen by the
            // re-check; one after it bumps the slot (`crate::wait`'s handshake).
            let ticket = slot.register();
            let timed_out = !gone()
                && wait.waiter.park(
                    &|| gone() || slot.woken_since(&ticket),
                    wait.clock,
                    wait.deadline_ns,
                ) == Parked::TimedOut;
            // Cannot fail: `ticket` came from `slot`'s `register` just above.
            let _ = slot.deregister(ticket);
            if timed_out && !gone() {
                return Err(Failed {
                    truncate: self,
                    error: DrainError::LeaseHeld(*id),
                });
            }
        }
        self.drain(wait)
    }

    /// The drain loop, with the handshake `H` (the shipped drain's is
    /// [`RegisterThenCheck`]; the broken twins' exist only under `cfg(loom)`).
    fn wait_idle<H: Handshake>(&self, wait: &Wait<'_>) -> Result<(), DrainError> {
        // One pass from the first unit busy at the mark: a unit found idle stays
        // idle, so after a park the scan resumes at the unit it parked on. A
        // set idle when marked has nothing to scan.
        if self.first_busy >= self.units {
            return Ok(());
        }
        for unit in self.units().skip(self.first_busy as usize).flatten() {
            while !unit.meta.is_idle() {
                self.park_on::<H>(unit, wait)?;
            }
        }
        Ok(())
    }

    /// Waits for one busy unit: register, re-check, park.
    fn park_on<H: Handshake>(&self, unit: Unit<'_>, wait: &Wait<'_>) -> Result<(), DrainError> {
        let slot = self.memmap.wait_slot(unit.head);
        let Some(ticket) = H::register(slot, unit.meta) else {
            return Ok(());
        };
        op_count::park();
        let parked = wait
            .waiter
            .park(&|| slot.woken_since(&ticket), wait.clock, wait.deadline_ns);
        // Cannot fail: `ticket` came from `slot`'s `register` just above.
        let _ = slot.deregister(ticket);
        let w = unit.meta.load();
        if parked == Parked::TimedOut && !w.is_idle() {
            return Err(DrainError::TimedOut(BusyUnit {
                head: unit.head,
                refs: w.refs(),
                pins: w.pins(),
            }));
        }
        Ok(())
    }
}

/// The waiter's side of the drain's wake-up handshake: register in `slot`
/// for a unit whose `meta` the scan found busy, or find it idle.
trait Handshake {
    /// A ticket to park with, or `None` if the unit is idle (registration
    /// ended).
    fn register(slot: &WaitSlot, meta: &PageMeta) -> Option<WaitTicket>;
}

/// The drain's handshake: register (with the slot's SeqCst fence), then
/// re-check the word. A release before the registration is seen by the
/// re-check; one after it finds the waiter and wakes it (`crate::wait`).
enum RegisterThenCheck {}

impl Handshake for RegisterThenCheck {
    #[inline]
    fn register(slot: &WaitSlot, meta: &PageMeta) -> Option<WaitTicket> {
        // The waiter's side of the handshake: the registration (with its
        // SeqCst fence) comes before the re-check below.
        let ticket = slot.register();
        if meta.is_idle() {
            // Cannot fail: `ticket` came from `slot`'s `register` just above.
            let _ = slot.deregister(ticket);
            return None;
        }
        Some(ticket)
    }
}

#[cfg(loom)]
#[doc(hidden)]
pub mod broken {
    //! The drain's broken twins, for the loom models only.
    use super::*;

    /// Checks the count (in the scan) and registers after, without re-checking.
    enum CheckThenRegister {}

    impl Handshake for CheckThenRegister {
        fn register(slot: &WaitSlot, _meta: &PageMeta) -> Option<WaitTicket> {
            Some(slot.register())
        }
    }

    /// Registers without the waiter-side fence, then re-checks.
    enum RegisterWithoutFence {}

    impl Handshake for RegisterWithoutFence {
        fn register(slot: &WaitSlot, meta: &PageMeta) -> Option<WaitTicket> {
            let ticket = slot.register_without_fence();
            if meta.is_idle() {
                // Cannot fail: `ticket` came from `slot`'s `register` just above.
                let _ = slot.deregister(ticket);
                return None;
            }
            Some(ticket)
        }
    }

    /// Which handshake mistake the drain makes.
    #[derive(Debug, Clone, Copy)]
    pub enum Mistake {
        /// Checks the count, then registers, and parks without re-checking.
        CheckThenRegister,
        /// Registers without the waiter-side SeqCst fence.
        NoWaiterFence,
    }

    /// [`Truncate::drain`] with `mistake`.
    ///
    /// # Errors
    ///
    /// As [`Truncate::drain`].
    #[allow(clippy::type_complexity)]
    pub fn drain<'m, M: MemoryMap + ?Sized, I: Iterator<Item = Extent> + Clone>(
        truncate: Truncate<'m, M, I, Unmapped>,
        wait: &Wait<'_>,
        mistake: Mistake,
    ) -> Result<Truncate<'m, M, I, Drained>, Failed<Truncate<'m, M, I, Unmapped>, DrainError>> {
        // A lost wake-up makes loom abort the model from inside the wait; the
        // truncate must not then run its cancelling `Drop` (loom operations
        // during that unwind abort the process instead of failing the test).
        let truncate = ManuallyDrop::new(truncate);
        let result = match mistake {
            Mistake::CheckThenRegister => truncate.wait_idle::<CheckThenRegister>(wait),
            Mistake::NoWaiterFence => truncate.wait_idle::<RegisterWithoutFence>(wait),
        };
        let truncate = ManuallyDrop::into_inner(truncate);
        match result {
            Ok(()) => Ok(truncate.into_state()),
            Err(error) => Err(Failed { truncate, error }),
        }
    }
}
