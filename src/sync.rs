//! The only place pagepin takes its atomics from.
//!
//! Under `cfg(loom)` every type here is loom's model of it, so the loom models in
//! `tests/loom_*.rs` explore the orderings of the real code, not of a copy. Nothing
//! else in the crate names `core::sync::atomic` or `loom` directly.
//!
//! [`op_count`] is test instrumentation: with the `op-count` feature it counts, per
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
/// thread-local storage; pagepin's own tests, examples and benchmarks enable it.
/// A kernel build leaves it off, and then [`op_count::rmw`] and [`op_count::park`]
/// are empty inline functions.
///
/// Every atomic RMW instruction pagepin executes is counted once, including a
/// compare-exchange that fails (it still took the cache line exclusively).
pub mod op_count {
    /// Counts taken since the last [`reset`] on the calling thread.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct OpCounts {
        /// Atomic read-modify-write instructions (`fetch_*`, `swap`, each
        /// compare-exchange attempt).
        pub rmw: u64,
        /// Times a thread parked waiting for a wake-up.
        pub park: u64,
    }

    #[cfg(feature = "op-count")]
    mod imp {
        extern crate std;
        use super::OpCounts;
        use core::cell::Cell;

        std::thread_local! {
            static COUNTS: Cell<OpCounts> = const { Cell::new(OpCounts { rmw: 0, park: 0 }) };
        }

        #[inline]
        pub fn rmw() {
            COUNTS.with(|c| {
                let mut v = c.get();
                v.rmw += 1;
                c.set(v);
            });
        }

        #[inline]
        pub fn park() {
            COUNTS.with(|c| {
                let mut v = c.get();
                v.park += 1;
                c.set(v);
            });
        }

        pub fn get() -> OpCounts {
            COUNTS.with(Cell::get)
        }

        pub fn reset() {
            COUNTS.with(|c| c.set(OpCounts::default()));
        }
    }

    #[cfg(not(feature = "op-count"))]
    mod imp {
        use super::OpCounts;

        #[inline(always)]
        pub fn rmw() {}

        #[inline(always)]
        pub fn park() {}

        pub fn get() -> OpCounts {
            OpCounts::default()
        }

        pub fn reset() {}
    }

    /// Records one atomic read-modify-write on the calling thread.
    #[inline(always)]
    pub fn rmw() {
        imp::rmw();
    }

    /// Records one park on the calling thread.
    #[inline(always)]
    pub fn park() {
        imp::park();
    }

    /// The calling thread's counts since its last [`reset`]; all zero without the
    /// `op-count` feature.
    pub fn get() -> OpCounts {
        imp::get()
    }

    /// Resets the calling thread's counts to zero.
    pub fn reset() {
        imp::reset();
    }

    /// Whether counting is compiled in (the `op-count` feature).
    pub const ENABLED: bool = cfg!(feature = "op-count");
}
