//! What a GUP-fast call asks for.

use bitflags::bitflags;

bitflags! {
    /// Flags of a GUP-fast call.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct GupFlags: u32 {
        /// The caller (or its device) will write: every leaf must be writable.
        const WRITE = 1 << 0;
        /// Take DMA pins (exact pin count) instead of plain references.
        const PIN = 1 << 1;
        /// A long-term pin (RDMA memory registration, vfio): refused on
        /// layout-managed (DAX-like) pages, whose blocks a truncate must be able to
        /// reclaim. Requires `PIN`.
        const LONGTERM = 1 << 2;
        /// Every leaf must be user-accessible (the range is a user buffer).
        const USER = 1 << 3;
    }
}
