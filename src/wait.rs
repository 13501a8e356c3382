//! The wait table: where a truncate waiting for pages to go idle parks, keyed by
//! the head PFN of the page's allocation unit.
//!
//! The metadata word has no room for a waiter, so waiting is a second location:
//! a fixed array of [`WaitSlot`]s, each shared by every page whose head hashes to
//! it. A slot counts its registered waiters and the wake-ups it has seen.
//!
//! # The handshake (why both sides fence)
//!
//! The waiter registers in the slot, then re-checks the page's word; the releaser
//! changes the word (its final put), then checks the slot for waiters. Two
//! threads each write one location and read the other: store buffering. Without
//! a `fence(SeqCst)` on **both** sides the waiter can miss the release (it sees
//! the page busy) while the releaser misses the registration (it sees no waiter),
//! and the waiter sleeps forever. With both fences, at least one side sees the
//! other's write: the waiter sees the page idle, or the releaser sees the waiter
//! and bumps the slot's wake count. [`WaitSlot::register`] and [`WaitSlot::wake`]
//! carry the two fences; the truncate protocol's drain is the waiting loop.
//!
//! # Parking
//!
//! How a waiter sleeps is the kernel's: a [`Waiter`] parks until a condition
//! holds (the slot's wake count moved) or a deadline passes, measured by a
//! [`Clock`]. Permit semantics come from the wake count itself: a wake that
//! lands between the registration and the park has already moved the count, so
//! the park returns at once. [`SpinWaiter`] is the default (it polls).

use crate::memmap::Pfn;
use crate::sync::{AtomicU64, AtomicUsize, Ordering, fence, op_count, spin_wait_hint};

/// One hashed wait slot.
#[derive(Debug)]
pub struct WaitSlot {
    /// Registered waiters.
    waiters: AtomicUsize,
    /// Wake-ups delivered to this slot so far (a waiter parks until it changes).
    wakes: AtomicU64,
}

impl Default for WaitSlot {
    fn default() -> WaitSlot {
        WaitSlot::new()
    }
}

impl WaitSlot {
    /// A slot with no waiter and no wake-up yet.
    pub fn new() -> WaitSlot {
        WaitSlot {
            waiters: AtomicUsize::new(0),
            wakes: AtomicU64::new(0),
        }
    }

    /// Registers a waiter and returns the wake count to wait past.
    ///
    /// After this returns the caller must re-check its condition (the page's
    /// word) before parking: a release that happened before the registration
    /// was seen by nobody, and the re-check is what sees it.
    #[must_use = "a registration must be ended with `deregister`"]
    pub fn register(&self) -> WaitTicket {
        op_count::rmw();
        // Relaxed: the fence below orders it before the caller's re-check.
        self.waiters.fetch_add(1, Ordering::Relaxed);
        // Acquire: pairs with the Release bump in `wake`, so a wake-up that is
        // already counted here also shows the release that caused it to the
        // re-check.
        let seen = self.wakes.load(Ordering::Acquire);
        // SeqCst fence: the waiter's side of the store-buffering handshake (module
        // docs); pairs with the fence in `WaitTable::wake`. Orders the
        // registration before the caller's re-check of the page.
        fence(Ordering::SeqCst);
        WaitTicket {
            slot: self.id(),
            seen,
        }
    }

    /// This slot's identity for its tickets: its address.
    fn id(&self) -> usize {
        core::ptr::from_ref(self).addr()
    }

    /// The broken twin of [`register`](Self::register) for the loom models: no
    /// waiter-side fence.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn register_without_fence(&self) -> WaitTicket {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let seen = self.wakes.load(Ordering::Acquire);
        WaitTicket {
            slot: self.id(),
            seen,
        }
    }

    /// Ends a registration.
    ///
    /// # Errors
    ///
    /// [`ForeignTicket`] for a ticket of another slot: nothing changes here
    /// (this slot's count stays, so its waiters still get their wake-ups), and
    /// the ticket's own slot keeps the registration, which costs its releasers
    /// only needless wake-ups.
    pub fn deregister(&self, ticket: WaitTicket) -> Result<(), ForeignTicket> {
        let WaitTicket { slot, seen: _ } = ticket;
        if slot != self.id() {
            return Err(ForeignTicket);
        }
        op_count::rmw();
        // Relaxed: a stale non-zero count only costs a releaser one needless
        // bump. No wrap: the ticket was registered here (one increment) and is
        // consumed by this one decrement.
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether a wake-up arrived after `ticket` was taken (for a ticket of
    /// another slot, `true`: the waiter re-checks its condition rather than
    /// sleeping on a count that is not this slot's). Acquire: pairs with the
    /// Release bump in [`WaitTable::wake`], so the release that woke the
    /// waiter is visible to it.
    #[inline]
    pub fn woken_since(&self, ticket: &WaitTicket) -> bool {
        ticket.slot != self.id() || self.wakes.load(Ordering::Acquire) != ticket.seen
    }

    /// Registered waiters (a snapshot).
    #[inline]
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    /// The releaser's side of the handshake: after a release reported
    /// [`Wake::Due`](crate::meta::Wake::Due), bumps the wake count if a waiter is
    /// registered. Returns whether it did (a kernel then wakes its parked
    /// waiters, e.g. through its scheduler).
    pub fn wake(&self) -> bool {
        // SeqCst fence: the releaser's side of the store-buffering handshake
        // (module docs); pairs with the fence in `register`. Orders the caller's
        // release (its RMW on the page word) before this check.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence above.
        if self.waiters.load(Ordering::Relaxed) == 0 {
            return false;
        }
        op_count::rmw();
        // Release: pairs with the Acquire in `woken_since`/`register`, so a waiter
        // that sees the bump also sees the release before it.
        self.wakes.fetch_add(1, Ordering::Release);
        true
    }
}

/// A registration in a [`WaitSlot`]: the wake count it waits past, and which
/// slot it is registered in.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a registration must be ended with `WaitSlot::deregister`"]
pub struct WaitTicket {
    /// The slot's address (identity only, never dereferenced).
    slot: usize,
    seen: u64,
}

/// A [`WaitTicket`] handed to a slot it was not registered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ForeignTicket;

impl core::fmt::Display for ForeignTicket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the wait ticket belongs to another slot")
    }
}

impl core::error::Error for ForeignTicket {}

/// A fixed table of `SLOTS` wait slots, hashed by head PFN. `SLOTS` must be a
/// power of two.
#[derive(Debug)]
pub struct WaitTable<const SLOTS: usize> {
    slots: [WaitSlot; SLOTS],
}

impl<const SLOTS: usize> WaitTable<SLOTS> {
    const POWER_OF_TWO: () = assert!(SLOTS.is_power_of_two(), "SLOTS must be a power of two");

    /// An empty table.
    pub fn new() -> WaitTable<SLOTS> {
        let () = Self::POWER_OF_TWO;
        WaitTable {
            slots: core::array::from_fn(|_| WaitSlot::new()),
        }
    }

    /// The slot of the unit whose head is `head`.
    #[inline]
    pub fn slot(&self, head: Pfn) -> &WaitSlot {
        // Fibonacci hashing: neighbouring heads land in different slots. The
        // multiplication wraps on purpose (a hash is the product mod 2^64;
        // any head, up to `u64::MAX`, has one); `>> 32` and the mask keep the
        // index below `SLOTS`, a power of two (`POWER_OF_TWO`).
        let hash = head.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        &self.slots[(hash >> 32) as usize & (SLOTS - 1)]
    }

    /// Wakes the waiters of `head`'s slot ([`WaitSlot::wake`]); called after a
    /// release reported [`Wake::Due`](crate::meta::Wake::Due). Returns whether a
    /// waiter was registered.
    #[inline]
    pub fn wake(&self, head: Pfn) -> bool {
        self.slot(head).wake()
    }
}

impl<const SLOTS: usize> Default for WaitTable<SLOTS> {
    fn default() -> WaitTable<SLOTS> {
        WaitTable::new()
    }
}

/// A monotonic clock for deadlines (`no_std` has none).
pub trait Clock {
    /// Nanoseconds since an arbitrary fixed origin; never decreases.
    fn now_ns(&self) -> u64;
}

/// How a waiter parked, from [`Waiter::park`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parked {
    /// The condition held (possibly before parking).
    Ready,
    /// The deadline passed first.
    TimedOut,
}

/// Parks the calling thread until a condition holds or a deadline passes.
///
/// A kernel implements it with its scheduler (sleep on a queue that its
/// [`MemoryMap::wake`](crate::memmap::MemoryMap::wake) wakes), or by halting
/// until an interrupt. The condition is cheap and may be polled at any rate;
/// spurious returns are allowed (callers re-check).
pub trait Waiter {
    /// Parks until `ready()` is true (return [`Parked::Ready`]) or `clock` passes
    /// `deadline_ns` (return [`Parked::TimedOut`]); `None` waits forever.
    fn park(&self, ready: &dyn Fn() -> bool, clock: &dyn Clock, deadline_ns: Option<u64>)
    -> Parked;
}

/// The default waiter: polls the condition with a spin-loop hint.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinWaiter;

impl Waiter for SpinWaiter {
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
            if deadline_ns.is_some_and(|d| clock.now_ns() >= d) {
                return Parked::TimedOut;
            }
            spin_wait_hint();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn wake_bumps_only_registered_slots() {
        let table = WaitTable::<8>::new();
        assert!(!table.wake(Pfn(7)), "nobody registered");
        let slot = table.slot(Pfn(7));
        let ticket = slot.register();
        assert!(!slot.woken_since(&ticket));
        assert!(table.wake(Pfn(7)));
        assert!(slot.woken_since(&ticket));
        assert_eq!(slot.waiters(), 1);
        slot.deregister(ticket).unwrap();
        assert_eq!(slot.waiters(), 0);
        assert!(!table.wake(Pfn(7)));
    }

    #[test]
    fn neighbouring_heads_spread() {
        let table = WaitTable::<64>::new();
        let mut used = [false; 64];
        for head in 0..64u64 {
            let slot: *const WaitSlot = table.slot(Pfn(head * 512));
            let index =
                (slot as usize - table.slots.as_ptr() as usize) / core::mem::size_of::<WaitSlot>();
            used[index] = true;
        }
        assert!(used.iter().filter(|u| **u).count() > 32);
    }
}
