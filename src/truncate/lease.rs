//! Leases: revocable long-term pins on layout-managed pages.
//!
//! Linux refuses long-term pins (RDMA registration, vfio) on filesystem-DAX
//! pages outright, because a truncate could wait forever for them; the lease
//! scheme discussed for it never shipped. Here a device driver that needs a
//! long-lived pin on such pages first takes a [`Lease`] on their extent from a
//! [`LeaseRegistry`], with a [`Revoke`] callback. A truncate whose set overlaps
//! the lease calls the callback (with no registry lock held), and waits, up to a
//! deadline, for the holder to release its pins and drop the lease; a holder
//! that has not by then makes the drain fail with an error naming the lease.
//! The pinned pages are never freed under it: the drain still waits for every
//! pin.
//!
//! Pins under a lease are ordinary pins (`GupFlags::PIN` without `LONGTERM`):
//! the lease, not the flag, is what makes them long-lived, and revocable.
//!
//! Dropping a lease wakes the drain waiting for it: the registry has a
//! [`WaitSlot`] (the drain registers, then re-checks; the drop removes the lease,
//! then wakes — the fenced handshake of [`crate::wait`]) and, for kernels whose
//! waiters really sleep, a wake hook ([`LeaseRegistry::with_wake`]).

use core::fmt;

use heapless::Vec;
use spin::Mutex;

use super::extent::Extent;
use crate::wait::WaitSlot;

/// Names a lease in a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u32);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease #{}", self.0)
    }
}

/// The holder's side of a lease: asked to give its pages back.
pub trait Revoke: Sync {
    /// The lease `lease` is revoked: release its pins and drop it soon. Called
    /// with no registry lock held, from the truncating thread; must not block on
    /// the truncate.
    fn revoke(&self, lease: LeaseId);
}

/// The registry is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegistryFull;

impl fmt::Display for RegistryFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the lease registry is full")
    }
}

impl core::error::Error for RegistryFull {}

#[derive(Clone, Copy)]
struct Entry<'r> {
    id: LeaseId,
    extent: Extent,
    revoke: &'r dyn Revoke,
    revoked: bool,
}

struct Inner<'r, const N: usize> {
    next: u32,
    leases: Vec<Entry<'r>, N>,
}

/// A bounded registry of up to `N` leases. Its lock is held only to add, remove
/// or look up entries, never while a callback runs or a drain waits.
pub struct LeaseRegistry<'r, const N: usize> {
    inner: Mutex<Inner<'r, N>>,
    /// Where a drain waits for revoked leases to be dropped.
    released: WaitSlot,
    /// Wakes the kernel's sleeping waiters after a drop bumped `released`.
    on_release: Option<&'r (dyn Fn() + Sync)>,
}

impl<const N: usize> fmt::Debug for LeaseRegistry<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseRegistry")
            .field("leases", &self.inner.lock().leases.len())
            .finish()
    }
}

impl<'r, const N: usize> Default for LeaseRegistry<'r, N> {
    fn default() -> Self {
        LeaseRegistry::new()
    }
}

impl<'r, const N: usize> LeaseRegistry<'r, N> {
    /// An empty registry whose drains poll (or are woken through the slot
    /// alone, as [`SpinWaiter`](crate::wait::SpinWaiter) is).
    pub fn new() -> Self {
        LeaseRegistry {
            inner: Mutex::new(Inner {
                next: 1,
                leases: Vec::new(),
            }),
            released: WaitSlot::new(),
            on_release: None,
        }
    }

    /// An empty registry that calls `wake` when a lease drop finds a drain
    /// registered (the kernel wakes its sleeping waiter there).
    pub fn with_wake(wake: &'r (dyn Fn() + Sync)) -> Self {
        LeaseRegistry {
            on_release: Some(wake),
            ..LeaseRegistry::new()
        }
    }

    /// The slot a drain waits in for revoked leases to be dropped.
    pub(crate) fn released_slot(&self) -> &WaitSlot {
        &self.released
    }

    /// Grants a lease on `extent`; `revoke` is called when a truncate needs the
    /// pages back.
    ///
    /// # Errors
    ///
    /// [`RegistryFull`] when `N` leases are held.
    pub fn grant(
        &self,
        extent: Extent,
        revoke: &'r dyn Revoke,
    ) -> Result<Lease<'_, 'r, N>, RegistryFull> {
        const {
            assert!(
                N < u32::MAX as usize,
                "a registry holds fewer than 2^32 - 1 leases"
            )
        };
        let mut inner = self.inner.lock();
        if inner.leases.is_full() {
            return Err(RegistryFull);
        }
        // Ids are `u32` names, not counts: they wrap after 2^32 - 1 grants
        // (a long-lived kernel gets there), skipping 0. A lease held across the
        // wrap still owns its id, and a drop removes its entry by id, so an
        // id in use is skipped: two held leases never share one. At most
        // `N - 1` are held here (not full), so the loop skips at most that
        // many and always finds a free id (`N < 2^32 - 1`, asserted above).
        let mut id = inner.next;
        while inner.leases.iter().any(|e| e.id.0 == id) {
            id = next_id(id);
        }
        inner.next = next_id(id);
        let id = LeaseId(id);
        inner
            .leases
            .push(Entry {
                id,
                extent,
                revoke,
                revoked: false,
            })
            .map_err(|_| RegistryFull)?;
        Ok(Lease {
            registry: self,
            id,
            extent,
        })
    }

    /// Leases currently held.
    pub fn len(&self) -> usize {
        self.inner.lock().leases.len()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is still held.
    pub fn is_held(&self, id: LeaseId) -> bool {
        self.inner.lock().leases.iter().any(|e| e.id == id)
    }

    /// Marks every lease overlapping `overlaps` revoked and returns them (id and
    /// callback), for the caller to call with the lock released.
    pub(crate) fn take_overlapping(
        &self,
        overlaps: impl Fn(&Extent) -> bool,
    ) -> Vec<(LeaseId, &'r dyn Revoke), N> {
        let mut inner = self.inner.lock();
        let mut out = Vec::new();
        for e in inner.leases.iter_mut().filter(|e| overlaps(&e.extent)) {
            e.revoked = true;
            // Cannot overflow: `out` has the registry's capacity.
            let _ = out.push((e.id, e.revoke));
        }
        out
    }

    fn release(&self, id: LeaseId) {
        {
            let mut inner = self.inner.lock();
            if let Some(i) = inner.leases.iter().position(|e| e.id == id) {
                inner.leases.swap_remove(i);
            }
        }
        // The releaser's side of the handshake (its fence is in `wake`), with
        // the lock released: a drain registered in the slot is woken.
        if self.released.wake() {
            if let Some(wake) = self.on_release {
                wake();
            }
        }
    }

    fn is_revoked(&self, id: LeaseId) -> bool {
        self.inner
            .lock()
            .leases
            .iter()
            .any(|e| e.id == id && e.revoked)
    }
}

/// The lease id after `id`: wrapping (ids are names, see `grant`), never 0.
#[inline]
fn next_id(id: u32) -> u32 {
    id.wrapping_add(1).max(1)
}

/// A held lease; dropping it releases it (release the pins first).
#[must_use = "dropping a lease releases it at once"]
pub struct Lease<'g, 'r, const N: usize> {
    registry: &'g LeaseRegistry<'r, N>,
    id: LeaseId,
    extent: Extent,
}

impl<const N: usize> fmt::Debug for Lease<'_, '_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("extent", &self.extent)
            .finish()
    }
}

impl<const N: usize> Lease<'_, '_, N> {
    /// The lease's name.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The pages it covers.
    pub fn extent(&self) -> Extent {
        self.extent
    }

    /// Whether a truncate has revoked it (the holder should release and drop it).
    pub fn is_revoked(&self) -> bool {
        self.registry.is_revoked(self.id)
    }
}

impl<const N: usize> Drop for Lease<'_, '_, N> {
    fn drop(&mut self) {
        self.registry.release(self.id);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Nop;

    impl Revoke for Nop {
        fn revoke(&self, _lease: LeaseId) {}
    }

    #[test]
    fn ids_wrap_past_u32_max_without_reusing_a_held_one() {
        let registry = LeaseRegistry::<4>::new();
        let extent = Extent::new(crate::memmap::Pfn(0x100), 1);
        let first = registry.grant(extent, &Nop).unwrap();
        assert_eq!(first.id(), LeaseId(1));
        // Two billion grants later: the next id is the last one.
        registry.inner.lock().next = u32::MAX;
        let last = registry.grant(extent, &Nop).unwrap();
        assert_eq!(last.id(), LeaseId(u32::MAX));
        // The wrap skips 0 and lease #1, still held.
        let wrapped = registry.grant(extent, &Nop).unwrap();
        assert_eq!(wrapped.id(), LeaseId(2));
        assert_eq!(registry.len(), 3);
        // Dropping the wrapped lease removes its own entry only.
        drop(wrapped);
        assert!(registry.is_held(first.id()) && registry.is_held(last.id()));
        assert!(!registry.is_held(LeaseId(2)));
        drop((first, last));
        assert!(registry.is_empty());
    }
}
