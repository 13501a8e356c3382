//! The slow-path hook: where GUP-fast stops on an absent or insufficient
//! mapping, a caller-supplied handler may fix the mapping and the walk continues.

use super::GupFlags;
use crate::table::VirtAddr;

/// Fixes a mapping GUP-fast could not use (Linux's fault-in on the slow path).
///
/// Called with no walk guard held (the handler may change and free page tables),
/// at most once per address per call: if the walk stops at the same address
/// again, the call ends there.
pub trait FaultHandler {
    /// Makes `va` present (and writable or user-accessible, as `flags` require).
    /// Returns whether it did; `false` ends the call at `va`.
    fn fault(&mut self, va: VirtAddr, flags: GupFlags) -> bool;
}

/// No slow path: the call ends where the fast path stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFault;

impl FaultHandler for NoFault {
    #[inline]
    fn fault(&mut self, _va: VirtAddr, _flags: GupFlags) -> bool {
        false
    }
}

impl<F: FnMut(VirtAddr, GupFlags) -> bool> FaultHandler for F {
    #[inline]
    fn fault(&mut self, va: VirtAddr, flags: GupFlags) -> bool {
        self(va, flags)
    }
}
