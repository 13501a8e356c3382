//! Per-thread counters of atomic read-modify-writes and parks (test
//! instrumentation): see [`crate::sync`].

/// Whether the counters' reading side is part of the build.
macro_rules! api {
    ($($item:item)*) => {
        $(
            #[cfg(any(feature = "op-count", feature = "host"))]
            $item
        )*
    };
}

api! {
    /// Counts taken since the last [`reset`] on the calling thread.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct OpCounts {
        /// Atomic read-modify-write instructions (`fetch_*`, `swap`, each
        /// compare-exchange attempt).
        pub rmw: u64,
        /// Times a thread parked waiting for a wake-up.
        pub park: u64,
    }

    /// The calling thread's counts since its last [`reset`]; all zero without
    /// the `op-count` feature.
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
    #[inline(always)]
    pub fn rmw() {}

    #[inline(always)]
    pub fn park() {}

    #[cfg(feature = "host")]
    pub fn get() -> super::OpCounts {
        super::OpCounts::default()
    }

    #[cfg(feature = "host")]
    pub fn reset() {}
}
