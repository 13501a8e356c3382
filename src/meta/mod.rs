//! `PageMeta`: the per-page metadata word — reference count, exact pin count and
//! state bits in one 8-byte atomic.
//!
//! Every transition the pinning and truncate protocols need is one read-modify-write
//! (or a compare-exchange loop) on this one word. "Mark truncating" and "take a
//! reference" are therefore totally ordered with no fence: either the reference
//! comes first and the truncate sees it and waits, or the mark comes first and the
//! reference is refused.
//!
//! # What the one word does not remove
//!
//! - GUP-fast's re-check of the page-table entries after its get is sound without a
//!   fence only because the get is Acquire and every free/allocate transition is a
//!   Release RMW on this same word, so the release sequence that starts at the free
//!   is never broken. **A plain store anywhere in the word's history breaks that
//!   argument**: every state transition here is a compare-exchange from an exact
//!   observed value, never a store.
//! - Waking a truncate is a second location (the memory map's wait table).
//!   "Register as waiter, then re-check the word" against "release, then check for
//!   waiters" is store-buffering and needs `fence(SeqCst)` (or a lock) on both
//!   sides; this module only reports, through [`Wake`], that a wake is due.
//!
//! Every compare-exchange is the strong form: an uncontended operation is exactly
//! one RMW (a weak one may fail spuriously on LL/SC machines and under miri),
//! which the operation counters of `crate::sync::op_count` let tests assert.

mod error;
#[cfg(feature = "host")]
mod get_path;
pub mod word;

#[cfg(loom)]
#[doc(hidden)]
pub mod broken;

pub use error::{
    AllocError, FreeError, GetError, GetErrorKind, MarkError, PutError, UnmarkError, Wake,
};
#[cfg(feature = "host")]
pub use get_path::{CasLoop, DefaultGetPath, FetchAddUndo, GetPath, SafeGetPath};
pub use word::{COUNT_MAX, HEADROOM, Hold, MAX_BATCH, MAX_CPUS, MetaFlags, MetaWord};

use crate::sync::{AtomicU64, Ordering, op_count, spin_wait_hint};

/// The metadata of one page (or of the head page of an allocation unit): one
/// 8-byte atomic word.
///
/// # Layout and value ranges
///
/// | bits  | field        | values |
/// |-------|--------------|--------|
/// | 0-29  | `refs`       | committed 0..=[`COUNT_MAX`] (805 306 367); up to 2^30 − 1 while speculative increments are in flight |
/// | 30-59 | `pins`       | as `refs` |
/// | 60    | `FREE`       | set: owned by the allocator; counts are 0 apart from in-flight speculative increments |
/// | 61    | `TRUNCATING` | set: a truncate has marked the page; no new get succeeds |
/// | 62-63 | reserved     | always 0 |
///
/// `FREE` and `TRUNCATING` together is unreachable, not even transiently:
/// [`mark_truncating`] is a compare-exchange that sets `TRUNCATING` only on an
/// allocated word (it refuses a free page without touching it), and [`free`]
/// clears `TRUNCATING` in the same compare-exchange that sets `FREE`.
/// The widths and the headroom arithmetic are in [`word`]'s constants: [`MAX_BATCH`] pages per RMW, [`MAX_CPUS`] concurrent speculative
/// getters, [`HEADROOM`] = their product.
///
/// # Operations
///
/// | operation | from | to | fails (word unchanged) |
/// |---|---|---|---|
/// | [`get`] (`n` refs or pins) | allocated, not truncating | count + n | free, truncating, over [`COUNT_MAX`] |
/// | [`put`] (`n` refs or pins) | count ≥ n | count − n | free, count < n |
/// | [`mark_truncating`] | allocated, unmarked | + `TRUNCATING` | free, already marked |
/// | [`free_marked`] | marked, idle | `FREE` | free, not marked, busy |
/// | [`unmark_truncating`] | marked | − `TRUNCATING` | not marked |
/// | [`free`] | allocated, idle | `FREE` | free, busy |
/// | [`allocate`] | exactly `FREE` | allocated, idle | not free |
///
/// `n` is 1..=[`MAX_BATCH`]; a huge leaf's base pages are taken in one RMW.
///
/// [`get`]: PageMeta::get
/// [`put`]: PageMeta::put
/// [`mark_truncating`]: PageMeta::mark_truncating
/// [`unmark_truncating`]: PageMeta::unmark_truncating
/// [`free`]: PageMeta::free
/// [`free_marked`]: PageMeta::free_marked
/// [`allocate`]: PageMeta::allocate
///
/// ```
/// use pagepin::meta::{Hold, PageMeta};
///
/// let page = PageMeta::new_allocated();
/// page.get(Hold::Pin, 512).unwrap(); // a 2 MiB leaf of 4 KiB pages, one RMW
/// page.mark_truncating().unwrap();
/// assert!(page.get(Hold::Ref, 1).is_err()); // no new references
/// for _ in 0..511 {
///     // SAFETY: gives back the pin taken above.
///     assert!(!unsafe { page.put(Hold::Pin, 1) }.unwrap().is_due());
/// }
/// // SAFETY: gives back the pin taken above.
/// assert!(unsafe { page.put(Hold::Pin, 1) }.unwrap().is_due()); // the final put wakes the truncate
/// // SAFETY: the example owns the page; nothing maps it.
/// unsafe { page.free() }.unwrap();
/// ```
#[repr(transparent)]
pub struct PageMeta {
    word: AtomicU64,
}

#[cfg(not(loom))]
static_assertions::assert_eq_size!(PageMeta, u64);
#[cfg(not(loom))]
static_assertions::const_assert_eq!(core::mem::align_of::<PageMeta>(), 8);

#[inline]
const fn valid_batch(n: u32) -> bool {
    n != 0 && n <= MAX_BATCH
}

/// The reason `w` refuses a get of `n` more pages of `hold`, if any.
#[inline]
const fn refusal(w: MetaWord, hold: Hold, n: u32) -> Option<GetErrorKind> {
    if w.is_free() {
        Some(GetErrorKind::Free)
    } else if w.is_truncating() {
        Some(GetErrorKind::Truncating)
    } else if w.count(hold) as u64 + n as u64 > COUNT_MAX as u64 {
        Some(GetErrorKind::CountLimit)
    } else {
        None
    }
}

/// Whether a release that produced `new` left a truncating page idle.
#[inline]
const fn wake_after(new: MetaWord) -> Wake {
    if new.is_truncating() && new.is_idle() {
        Wake::Due
    } else {
        Wake::NotDue
    }
}

impl PageMeta {
    /// A free page (owned by the allocator).
    #[cfg(not(loom))]
    pub const fn new_free() -> PageMeta {
        PageMeta {
            word: AtomicU64::new(MetaWord::FREE.0),
        }
    }

    /// An allocated page that nobody references.
    #[cfg(not(loom))]
    pub const fn new_allocated() -> PageMeta {
        PageMeta {
            word: AtomicU64::new(MetaWord::ALLOCATED_IDLE.0),
        }
    }

    /// A free page (owned by the allocator).
    #[cfg(loom)]
    pub fn new_free() -> PageMeta {
        PageMeta {
            word: AtomicU64::new(MetaWord::FREE.0),
        }
    }

    /// An allocated page that nobody references.
    #[cfg(loom)]
    pub fn new_allocated() -> PageMeta {
        PageMeta {
            word: AtomicU64::new(MetaWord::ALLOCATED_IDLE.0),
        }
    }

    /// The current value of the word.
    ///
    /// Acquire: pairs with the Release of [`put`](Self::put) and
    /// [`free`](Self::free), so a caller that sees the page idle (a drain) also
    /// sees every access the holders made to the page before releasing it.
    #[inline]
    pub fn load(&self) -> MetaWord {
        MetaWord(self.word.load(Ordering::Acquire))
    }

    /// The reference count (see [`load`](Self::load)).
    #[inline]
    pub fn refs(&self) -> u32 {
        self.load().refs()
    }

    /// The pin count (see [`load`](Self::load)).
    #[inline]
    pub fn pins(&self) -> u32 {
        self.load().pins()
    }

    /// Whether the page is free.
    #[inline]
    pub fn is_free(&self) -> bool {
        self.load().is_free()
    }

    /// Whether the page is marked truncating.
    #[inline]
    pub fn is_truncating(&self) -> bool {
        self.load().is_truncating()
    }

    /// Whether the page holds no reference and no pin.
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.load().is_idle()
    }

    /// Takes `n` references or pins (`n` base pages of one huge leaf) with the
    /// compare-exchange loop (the speculative path, for kernels that meet its
    /// precondition, is [`get_speculative`](Self::get_speculative)).
    ///
    /// A successful get is an Acquire RMW: it pairs with the Release of
    /// [`allocate`](Self::allocate) and [`free`](Self::free) (through the word's
    /// release sequence), which is what makes GUP-fast's page-table re-check sound.
    ///
    /// # Errors
    ///
    /// [`GetErrorKind::Free`], [`GetErrorKind::Truncating`],
    /// [`GetErrorKind::CountLimit`] (the count would exceed [`COUNT_MAX`]) and
    /// [`GetErrorKind::InvalidCount`] (`n` is 0 or above [`MAX_BATCH`]). The word is
    /// as it was; if [`GetError::wake`] is `Due`, wake the page's waiter.
    #[inline]
    pub fn get(&self, hold: Hold, n: u32) -> Result<(), GetError> {
        self.get_cas_loop(hold, n)
    }

    /// [`get`](Self::get) with an explicit get path that has no precondition
    /// ([`SafeGetPath`]: [`CasLoop`]). The speculative path is
    /// [`get_speculative`](Self::get_speculative), which is `unsafe`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    #[cfg(feature = "host")]
    #[inline]
    pub fn get_with<P: SafeGetPath>(&self, hold: Hold, n: u32) -> Result<(), GetError> {
        // SAFETY: `P: SafeGetPath`, whose implementors promise that `P::get` has
        // no precondition.
        unsafe { P::get(self, hold, n) }
    }

    /// [`get`](Self::get) on the speculative path: one `fetch_add`, check the
    /// value it returned, undo on refusal.
    ///
    /// # Safety
    ///
    /// At any moment, at most [`MAX_CPUS`] *contexts* may be between their
    /// `fetch_add` and their undo on the same word. A context is anything that can
    /// be suspended between the two while another getter runs: on one CPU the
    /// task, softirq, hardirq and NMI levels can each interrupt the one below it
    /// mid-get, and a task preempted mid-get leaves its increment in place while
    /// the next task runs. So the caller guarantees, for instance, preemption off
    /// across the call and `CPUs × (levels that call this) ≤ MAX_CPUS` (4 levels
    /// on 256 CPUs). More contexts than that can carry a count into the
    /// neighbouring field, corrupting the word (a pin count that reads zero while
    /// a device still writes to the page). See [`HEADROOM`].
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get); [`GetError::wake`] may be `Due` (the undo was the
    /// final put on a truncating page): wake the page's waiter.
    ///
    /// ```
    /// use pagepin::meta::{Hold, PageMeta};
    ///
    /// let page = PageMeta::new_allocated();
    /// // SAFETY: one thread, no interrupt handler gets on `page`: one context
    /// // between the add and the undo, and MAX_CPUS ≥ 1.
    /// unsafe { page.get_speculative(Hold::Pin, 1) }.unwrap();
    /// // SAFETY: gives back the pin taken above.
    /// assert!(!unsafe { page.put(Hold::Pin, 1) }.unwrap().is_due());
    /// ```
    #[inline]
    pub unsafe fn get_speculative(&self, hold: Hold, n: u32) -> Result<(), GetError> {
        // SAFETY: `get_fetch_add`'s precondition is this function's, which the
        // caller meets.
        unsafe { self.get_fetch_add(hold, n) }
    }

    /// The compare-exchange get path.
    #[inline]
    fn get_cas_loop(&self, hold: Hold, n: u32) -> Result<(), GetError> {
        if !valid_batch(n) {
            return Err(GetError {
                kind: GetErrorKind::InvalidCount,
                wake: Wake::NotDue,
            });
        }
        // Relaxed: only a guess of the current value; the compare-exchange below
        // validates it, and a refusal based on it touches nothing.
        let mut cur = MetaWord(self.word.load(Ordering::Relaxed));
        loop {
            if let Some(kind) = refusal(cur, hold, n) {
                return Err(GetError {
                    kind,
                    wake: Wake::NotDue,
                });
            }
            op_count::rmw();
            // Success Acquire: pairs with the Release of `allocate`/`free` (and
            // `put`), whose release sequences this RMW reads from, so the page
            // contents and page-table writes before them are visible to the new
            // holder and to GUP-fast's re-check. Failure Relaxed: the returned value
            // is again only a guess for the next iteration.
            match self.word.compare_exchange(
                cur.0,
                cur.plus(hold, n).0,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = MetaWord(actual),
            }
        }
    }

    /// The speculative get path.
    ///
    /// # Safety
    ///
    /// As [`get_speculative`](Self::get_speculative): at most [`MAX_CPUS`]
    /// contexts between their add and their undo on this word.
    #[inline]
    unsafe fn get_fetch_add(&self, hold: Hold, n: u32) -> Result<(), GetError> {
        if !valid_batch(n) {
            return Err(GetError {
                kind: GetErrorKind::InvalidCount,
                wake: Wake::NotDue,
            });
        }
        op_count::rmw();
        // Acquire: as the success ordering of the compare-exchange path. The add
        // cannot carry into the next field: by the caller's precondition at most
        // MAX_CPUS − 1 other contexts hold an unchecked increment, so the old
        // value is at most COUNT_MAX + (MAX_CPUS − 1) × MAX_BATCH and
        // n ≤ MAX_BATCH (see `word`).
        let old = MetaWord(
            self.word
                .fetch_add(MetaWord(0).plus(hold, n).0, Ordering::Acquire),
        );
        match refusal(old, hold, n) {
            None => Ok(()),
            Some(kind) => Err(GetError {
                kind,
                wake: self.undo(hold, n, old.plus(hold, n)),
            }),
        }
    }

    /// Removes a speculative increment of `n` pages of `hold` that was refused.
    /// `guess` is the value the word had right after the increment.
    ///
    /// Not a blind `fetch_sub`: if a caller released something it never took while
    /// the increment was visible, the field may now be below `n`, and a blind
    /// subtraction would borrow from the neighbouring field. The field is checked
    /// and, in that (caller-bug) case, only what is left of it is removed; the
    /// result is the same as if the bogus release had consumed a committed count.
    #[cold]
    fn undo(&self, hold: Hold, n: u32, guess: MetaWord) -> Wake {
        let mut cur = guess;
        loop {
            let take = if cur.count(hold) >= n {
                n
            } else {
                cur.count(hold)
            };
            let new = cur.minus(hold, take);
            op_count::rmw();
            // Relaxed: the undo publishes nothing (the refused getter touched no
            // page data) and, being an RMW, it continues every release sequence it
            // lands in. The value it returns is exact either way, and that is what
            // decides the wake.
            match self
                .word
                .compare_exchange(cur.0, new.0, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return wake_after(new),
                Err(actual) => cur = MetaWord(actual),
            }
        }
    }

    /// Releases `n` references or pins taken with [`get`](Self::get).
    ///
    /// Release: pairs with the Acquire of [`free`](Self::free) and of the drain's
    /// [`load`](Self::load), so everything the holder did to the page happens
    /// before the page is freed or reused.
    ///
    /// Returns [`Wake::Due`] when the page is truncating and this was its last
    /// count: the caller must wake the page's waiter.
    ///
    /// # Errors
    ///
    /// [`PutError::Free`] on a free page, [`PutError::NotHeld`] when the count is
    /// below `n` (releasing what was never taken), [`PutError::InvalidCount`] when
    /// `n` is 0 or above [`MAX_BATCH`]. The word is unchanged.
    ///
    /// # Safety
    ///
    /// The caller holds `n` counts of kind `hold` on this meta (taken by a get
    /// whose result it owns) and gives them up. The word counts holds, not
    /// holders: a put of counts someone else holds succeeds while the count is
    /// high enough, and lets a truncate drain and free a page that holder still
    /// uses for DMA. The errors catch only what the word can see (more puts
    /// than gets in all).
    #[inline]
    pub unsafe fn put(&self, hold: Hold, n: u32) -> Result<Wake, PutError> {
        if !valid_batch(n) {
            return Err(PutError::InvalidCount);
        }
        // Relaxed: a guess, validated by the compare-exchange.
        let mut cur = MetaWord(self.word.load(Ordering::Relaxed));
        loop {
            if cur.is_free() {
                return Err(PutError::Free);
            }
            let held = cur.count(hold);
            if held < n {
                return Err(PutError::NotHeld {
                    hold,
                    held,
                    requested: n,
                });
            }
            let new = cur.minus(hold, n);
            op_count::rmw();
            // Success Release: pairs with the Acquire of `free` and of the drain's
            // load (see above). Failure Relaxed: a new guess.
            match self
                .word
                .compare_exchange(cur.0, new.0, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return Ok(wake_after(new)),
                Err(actual) => cur = MetaWord(actual),
            }
        }
    }

    /// Marks the page truncating: from now on every get is refused. Returns the
    /// word as marked: if it is idle, the page stays idle (no get can succeed
    /// any more), so a drain need not look at it again.
    ///
    /// A compare-exchange from the exact value it checked, so `TRUNCATING` is
    /// only ever set on an allocated, unmarked word: a free page is refused
    /// without being touched, and `FREE | TRUNCATING` never exists, not even for
    /// an instant (an earlier `fetch_or` version set the bit first and took it
    /// back on seeing `FREE`, so a second mark racing it saw a mark no truncate
    /// owned). Uncontended, it is one load and one RMW — what a `fetch_or` whose
    /// old value is used compiles to on x86 anyway.
    ///
    /// Relaxed suffices: the mark's only job is its place in this word's
    /// modification order relative to each get. A get ordered before it is seen by
    /// the drain's later Acquire load of the same word; a get ordered after it sees
    /// `TRUNCATING` and is refused. No other location is involved.
    ///
    /// # Errors
    ///
    /// [`MarkError::AlreadyTruncating`] if the page is marked (by another
    /// truncate, or by this one if its set lists the unit twice: marks are not
    /// shared, a truncate owns the pages it marked), [`MarkError::Free`] on a free
    /// page. The word is unchanged either way.
    #[inline]
    pub fn mark_truncating(&self) -> Result<MetaWord, MarkError> {
        // Relaxed: a guess, validated by the compare-exchange.
        let mut cur = MetaWord(self.word.load(Ordering::Relaxed));
        loop {
            if cur.is_free() {
                return Err(MarkError::Free);
            }
            if cur.is_truncating() {
                return Err(MarkError::AlreadyTruncating);
            }
            let marked = MetaWord(cur.0 | MetaFlags::TRUNCATING.bits());
            op_count::rmw();
            // Success Relaxed: see the doc comment; being an RMW it continues the
            // release sequence of the last `allocate`/`free`, so the Acquire of a
            // later get still synchronises with them. Failure Relaxed: a new guess
            // (a get, a put or another mark came in between).
            match self
                .word
                .compare_exchange(cur.0, marked.0, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(marked),
                Err(actual) => cur = MetaWord(actual),
            }
        }
    }

    /// Clears the truncating mark (a cancelled truncate): gets succeed again.
    ///
    /// The mark carries no owner (the word has no room for one), so only the
    /// party that set it may clear it; [`Truncate`](crate::truncate::Truncate)
    /// does so for its own marks when it is cancelled or dropped.
    ///
    /// # Safety
    ///
    /// The caller set this mark with [`mark_truncating`](Self::mark_truncating)
    /// and owns it (no truncate that marked the page is still using the mark).
    /// Clearing a mark a truncate owns lets a get succeed on a page that
    /// truncate has drained (breaking DESIGN.md invariant 2), and lets that
    /// truncate's cancel or drop later clear the mark of another truncate that
    /// marked the page since; its `free` then refuses the unit (`NotMarked`) rather
    /// than free it under the new holder.
    ///
    /// # Errors
    ///
    /// [`UnmarkError::NotTruncating`] if the page was not marked; the word is
    /// unchanged (clearing a clear bit changes nothing).
    #[inline]
    pub unsafe fn unmark_truncating(&self) -> Result<(), UnmarkError> {
        op_count::rmw();
        // Release: pairs with the Acquire of the next successful get, so whatever
        // the cancelled truncate did before giving the page back is visible to the
        // next holder.
        let old = MetaWord(
            self.word
                .fetch_and(!MetaFlags::TRUNCATING.bits(), Ordering::Release),
        );
        if old.is_truncating() {
            Ok(())
        } else {
            Err(UnmarkError::NotTruncating)
        }
    }

    /// Frees an idle page (clearing `TRUNCATING` if set): the allocator owns it.
    ///
    /// # Errors
    ///
    /// [`FreeError::AlreadyFree`], or [`FreeError::Busy`] while the page holds a
    /// reference or pin — including a transient speculative increment on a
    /// truncating page, which its getter is about to undo (drain and retry). The
    /// word is unchanged.
    ///
    /// # Safety
    ///
    /// The caller owns the page (it is the allocator's to take back) and no
    /// page-table entry that GUP-fast walks, or that a CPU uses for anyone but
    /// the page's owner, maps it (a kernel's direct map of all RAM is not such
    /// an entry): an idle word says nobody holds the page *now*, not that
    /// nothing can reach it, and a page freed while mapped is reallocated and
    /// then pinned for DMA through the old mapping. A page a truncate marked is that truncate's to free
    /// ([`Truncate::free`](crate::truncate::Truncate::free)).
    #[inline]
    pub unsafe fn free(&self) -> Result<(), FreeError> {
        // Relaxed: a guess, validated by the compare-exchange.
        let mut cur = MetaWord(self.word.load(Ordering::Relaxed));
        loop {
            if cur.is_free() {
                return Err(FreeError::AlreadyFree);
            }
            if !cur.is_idle() {
                return Err(FreeError::Busy {
                    refs: cur.refs(),
                    pins: cur.pins(),
                });
            }
            op_count::rmw();
            // Success AcqRel. Acquire: pairs with the Release of every `put`, so
            // the holders' accesses happen before the page is reused. Release:
            // heads the release sequence that a later get's Acquire reads from, so
            // the unmap (page-table clears) before this free is visible to a
            // walker whose get lands after it — GUP-fast's re-check relies on it.
            // Failure Relaxed: a new guess.
            match self.word.compare_exchange(
                cur.0,
                MetaWord::FREE.0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = MetaWord(actual),
            }
        }
    }

    /// Frees a page a drained truncate marked: one compare-exchange from exactly
    /// `TRUNCATING` (marked, idle) to `FREE`, without a load first. Unlike
    /// [`free`](Self::free) it never frees a page that is not marked: a page
    /// whose mark was cleared behind the truncate's back (a stray
    /// [`unmark_truncating`](Self::unmark_truncating)) may have been got and
    /// mapped again since the drain, so freeing it could free it under a holder
    /// or a mapping.
    ///
    /// # Errors
    ///
    /// The word is unchanged in every case:
    /// - [`FreeError::AlreadyFree`]: the page is free (freed behind the truncate's
    ///   back);
    /// - [`FreeError::NotMarked`]: the page is allocated but not marked;
    /// - [`FreeError::Busy`]: marked, but a count is not zero. After a drain this
    ///   is either a transient speculative increment ([`get_speculative`](PageMeta::get_speculative)) that its
    ///   getter undoes at once (retry), or a count taken while the mark was
    ///   cleared behind the truncate's back and the page marked again (retrying
    ///   will not help).
    ///
    /// # Safety
    ///
    /// The caller marked the page itself (the mark has no owner in the word)
    /// and has since unmapped it everywhere and shot the TLBs down, as
    /// [`Truncate`](crate::truncate::Truncate) does before its `free`: a marked,
    /// idle page may still be mapped.
    #[inline]
    pub unsafe fn free_marked(&self) -> Result<(), FreeError> {
        let mut expected = MetaWord(MetaFlags::TRUNCATING.bits());
        loop {
            op_count::rmw();
            // Success AcqRel, as in `free`: Acquire pairs with the Release of
            // every `put`, Release heads the release sequence a later get's
            // Acquire reads from. Failure Relaxed: the value only decides the
            // error (or, for a marked idle word, is exactly `expected` again).
            match self.word.compare_exchange(
                expected.0,
                MetaWord::FREE.0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => {
                    let actual = MetaWord(actual);
                    if actual.is_free() {
                        return Err(FreeError::AlreadyFree);
                    }
                    if !actual.is_truncating() {
                        return Err(FreeError::NotMarked);
                    }
                    if !actual.is_idle() {
                        return Err(FreeError::Busy {
                            refs: actual.refs(),
                            pins: actual.pins(),
                        });
                    }
                    // Marked and idle is exactly `TRUNCATING` (the reserved bits
                    // are never set), so this is unreachable in practice; retrying
                    // from the value seen keeps it a CAS from an exact value.
                    expected = actual;
                }
            }
        }
    }

    /// Allocates a free page: exactly `FREE` becomes allocated and idle.
    ///
    /// A free page may carry a transient speculative increment (a getter on the
    /// fetch-add path that is about to see `FREE` and undo). The compare-exchange
    /// is from the exact free value, so it waits for such transients to go away
    /// instead of erasing them; each lasts only until its getter's undo.
    ///
    /// # Errors
    ///
    /// [`AllocError::NotFree`] if the page is not free; the word is unchanged.
    #[inline]
    pub fn allocate(&self) -> Result<(), AllocError> {
        loop {
            // Relaxed: a guess, validated by the compare-exchange.
            let cur = MetaWord(self.word.load(Ordering::Relaxed));
            if !cur.is_free() {
                return Err(AllocError::NotFree);
            }
            if cur != MetaWord::FREE {
                // A speculative getter's increment, about to be undone.
                spin_wait_hint();
                continue;
            }
            op_count::rmw();
            // Success AcqRel. Acquire: pairs with the Release of `free`, so the
            // previous owner's accesses happen before the new owner's. Release:
            // heads the release sequence a getter's Acquire reads from, so what the
            // allocator wrote before allocating is visible to every holder.
            // Failure Relaxed: the loop reloads.
            if self
                .word
                .compare_exchange(
                    MetaWord::FREE.0,
                    MetaWord::ALLOCATED_IDLE.0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Ok(());
            }
        }
    }
}

impl core::fmt::Debug for PageMeta {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("PageMeta").field(&self.load()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
