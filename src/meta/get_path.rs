//! The two candidate get paths, as zero-sized types behind one sealed trait.
//!
//! Both give the same guarantees (a refused get leaves the word as it was; a
//! successful one is an Acquire RMW on the word). They differ in cost and in what
//! other threads can observe:
//!
//! - [`CasLoop`]: load, check, `compare_exchange`. Never makes a change it has to
//!   undo; retries when another thread changed the word in between.
//! - [`FetchAddUndo`]: one `fetch_add`, check the value it returned, undo on
//!   refusal. Wait-free when it succeeds, but its increment is visible before it
//!   is checked: the allocator's `FREE → allocated` compare-exchange retries over
//!   such transients, the field layout reserves headroom for them
//!   ([`HEADROOM`](super::word::HEADROOM)), and an undo that leaves a truncating
//!   page idle is a final put ([`Wake::Due`](super::Wake::Due)).
//!
//! [`DefaultGetPath`] is the one [`PageMeta::get`] uses. The choice is made with
//! the benchmark figures of the get-path benchmark (`benches/`); until those exist
//! it is the compare-exchange loop, the path whose refusals are invisible to
//! other threads.

use super::{GetError, Hold, PageMeta};

mod sealed {
    pub trait Sealed {}
}

/// A strategy for taking a reference or pin. Implemented only by [`CasLoop`] and
/// [`FetchAddUndo`].
pub trait GetPath: sealed::Sealed {
    /// A short name for reports and benchmarks.
    const NAME: &'static str;

    /// Takes `n` pages of `hold` on `meta` (see [`PageMeta::get`]).
    ///
    /// # Errors
    ///
    /// As [`PageMeta::get`].
    fn get(meta: &PageMeta, hold: Hold, n: u32) -> Result<(), GetError>;
}

/// Load, check, compare-exchange; retry on interference.
#[derive(Debug, Clone, Copy, Default)]
pub struct CasLoop;

/// `fetch_add`, check the returned value, undo on refusal.
#[derive(Debug, Clone, Copy, Default)]
pub struct FetchAddUndo;

impl sealed::Sealed for CasLoop {}
impl sealed::Sealed for FetchAddUndo {}

impl GetPath for CasLoop {
    const NAME: &'static str = "cas-loop";

    #[inline]
    fn get(meta: &PageMeta, hold: Hold, n: u32) -> Result<(), GetError> {
        meta.get_cas_loop(hold, n)
    }
}

impl GetPath for FetchAddUndo {
    const NAME: &'static str = "fetch-add-undo";

    #[inline]
    fn get(meta: &PageMeta, hold: Hold, n: u32) -> Result<(), GetError> {
        meta.get_fetch_add(hold, n)
    }
}

/// The get path [`PageMeta::get`] uses.
pub type DefaultGetPath = CasLoop;
