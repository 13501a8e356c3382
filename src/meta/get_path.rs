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
//! [`DefaultGetPath`] is the one [`PageMeta::get`] uses: the compare-exchange
//! loop. Measured with `cargo bench --bench meta_get` (2-core x86_64 host, one
//! run, per 4 KiB page of a 1 GiB set: a pin pass then an unpin pass, each page
//! one entry load and one RMW per pass):
//!
//! | case | floor | cas-loop | fetch-add-undo |
//! |---|---|---|---|
//! | 1 thread, 262 144 pages | 10.2 ns | 10.9 ns (1.06×) | 11.0 ns (1.07×) |
//! | 2 threads, same pages | 6.3 ns | 5.8 ns | 5.9 ns |
//! | 2 threads, same 4 pages (pin+unpin pairs) | — | 71 ns | 60 ns |
//!
//! Inside GUP-fast (4 KiB leaves, `bench_summary`, three alternating runs of
//! each build on a loaded machine) the speculative path pinned at 7.9-8.1 ns per
//! page against 8.3-8.8 for the compare-exchange loop: about 5%, inside the noise
//! of that machine.
//!
//! The paths cost the same except when two CPUs hammer the same few words, where
//! the compare-exchange loop pays for its retries (19%). That case is rare for
//! pinning (it means many pinners of one head page at once), and the speculative
//! path carries a precondition the compare-exchange loop does not: at most
//! [`MAX_CPUS`](super::MAX_CPUS) *contexts* between their add and their undo on
//! one word — not CPUs: an interrupt handler (softirq, hardirq, NMI) that gets on
//! the same word between a get's add and its undo is one more context on the same
//! CPU, and so is a task preempted mid-get. Correctness without preconditions wins
//! the default; a kernel that meets the precondition and sees head-page contention
//! can pick [`FetchAddUndo`], and says so with `unsafe`:
//! [`PageMeta::get_speculative`], or [`GetPath::get`] generically.
//!
//! # Choosing a path is a promise
//!
//! If the precondition is false, racing adds can carry into the neighbouring
//! field and a device can write into freed memory, so choosing the speculative
//! path is `unsafe`, like every promise of that weight in pagepin:
//! [`GetPath::get`] is an `unsafe fn` whose `# Safety` is the path's
//! precondition, and only paths without one ([`SafeGetPath`]: [`CasLoop`]) can
//! be named in the safe [`PageMeta::get_with`]. Without `unsafe`, the fetch-add
//! path does not compile:
//!
//! ```compile_fail,E0277
//! use pagepin::meta::{FetchAddUndo, Hold, PageMeta};
//!
//! let page = PageMeta::new_allocated();
//! page.get_with::<FetchAddUndo>(Hold::Ref, 1).unwrap(); // FetchAddUndo: !SafeGetPath
//! ```
//!
//! ```compile_fail,E0133
//! use pagepin::meta::{Hold, PageMeta};
//!
//! let page = PageMeta::new_allocated();
//! page.get_speculative(Hold::Ref, 1).unwrap(); // an unsafe fn
//! ```
//!
//! ```compile_fail,E0133
//! use pagepin::meta::{FetchAddUndo, GetPath, Hold, PageMeta};
//!
//! let page = PageMeta::new_allocated();
//! FetchAddUndo::get(&page, Hold::Ref, 1).unwrap(); // an unsafe fn
//! ```
//!
//! while the default stays safe:
//!
//! ```
//! use pagepin::meta::{CasLoop, Hold, PageMeta};
//!
//! let page = PageMeta::new_allocated();
//! page.get_with::<CasLoop>(Hold::Ref, 1).unwrap();
//! page.get(Hold::Ref, 1).unwrap();
//! assert_eq!(page.refs(), 2);
//! ```

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
    /// # Safety
    ///
    /// The caller meets this path's precondition: none for [`CasLoop`] (use
    /// the safe [`PageMeta::get_with`]); for [`FetchAddUndo`], the one stated
    /// in [`PageMeta::get_speculative`] (at most
    /// [`MAX_CPUS`](super::MAX_CPUS) contexts between their add and their undo
    /// on `meta`'s word).
    ///
    /// # Errors
    ///
    /// As [`PageMeta::get`].
    unsafe fn get(meta: &PageMeta, hold: Hold, n: u32) -> Result<(), GetError>;
}

/// A get path whose [`GetPath::get`] has no precondition, so choosing it is safe
/// ([`PageMeta::get_with`]). Implemented only by [`CasLoop`].
///
/// # Safety
///
/// Implementors promise that calling [`GetPath::get`] is sound for every
/// caller, in every context (sealed: pagepin makes this promise only for
/// [`CasLoop`]).
pub unsafe trait SafeGetPath: GetPath {}

/// Load, check, compare-exchange; retry on interference. No precondition.
#[derive(Debug, Clone, Copy, Default)]
pub struct CasLoop;

/// `fetch_add`, check the returned value, undo on refusal. Its precondition (at
/// most [`MAX_CPUS`](super::MAX_CPUS) contexts between add and undo) makes
/// choosing it `unsafe`: [`PageMeta::get_speculative`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FetchAddUndo;

impl sealed::Sealed for CasLoop {}
impl sealed::Sealed for FetchAddUndo {}

impl GetPath for CasLoop {
    const NAME: &'static str = "cas-loop";

    /// # Safety
    ///
    /// None: the compare-exchange loop never makes an unchecked increment.
    #[inline]
    unsafe fn get(meta: &PageMeta, hold: Hold, n: u32) -> Result<(), GetError> {
        meta.get_cas_loop(hold, n)
    }
}

// SAFETY: `CasLoop::get` is `get_cas_loop`, which checks the word before every
// change it makes (a compare-exchange from the value it checked), so it needs no
// headroom and no bound on concurrent callers.
unsafe impl SafeGetPath for CasLoop {}

impl GetPath for FetchAddUndo {
    const NAME: &'static str = "fetch-add-undo";

    /// # Safety
    ///
    /// As [`PageMeta::get_speculative`].
    #[inline]
    unsafe fn get(meta: &PageMeta, hold: Hold, n: u32) -> Result<(), GetError> {
        // SAFETY: the caller meets `get_fetch_add`'s precondition, which is this
        // function's (at most MAX_CPUS contexts between add and undo).
        unsafe { meta.get_fetch_add(hold, n) }
    }
}

/// The get path [`PageMeta::get`] uses (safe: [`SafeGetPath`]).
pub type DefaultGetPath = CasLoop;
