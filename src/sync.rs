//! The only place pagepin takes its atomics from.
//!
//! Under `cfg(loom)` every type here is loom's model of it, so the loom models in
//! `tests/loom_*.rs` explore the orderings of the real code, not of a copy. Nothing
//! else in the crate names `core::sync::atomic` or `loom` directly.
//!
//! `op_count` is test instrumentation: with the `op-count` feature it counts, per
//! thread, the atomic read-modify-write instructions and the parks pagepin executes,
//! so tests can assert "one RMW per huge leaf" or "one park per set" exactly. Without
//! the feature the counting calls compile to nothing.

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

/// Tells the processor (or, under loom, the model scheduler) that this thread is
/// waiting for another one to make progress.
///
/// Every retry loop that waits on *another* thread's write (not a CAS loop that
/// retries its own update) calls this: under loom a waiting loop that does not
/// yield is reported as a livelock.
#[inline]
pub fn spin_wait_hint() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Per-thread counters of atomic read-modify-writes and parks (test instrumentation).
///
/// Counting is enabled by the `op-count` feature, which brings in `std` for
/// thread-local storage: `cargo test --features op-count` runs the tests that
/// assert exact counts. A kernel build leaves it off, and then
/// [`op_count::rmw`] and [`op_count::park`] are empty inline functions (and,
/// without the `host` feature either, the module is crate-private).
///
/// Every atomic RMW instruction pagepin executes is counted once, including a
/// compare-exchange that fails (it still took the cache line exclusively).
#[cfg(any(feature = "op-count", feature = "host"))]
pub mod op_count;
#[cfg(not(any(feature = "op-count", feature = "host")))]
pub(crate) mod op_count;
