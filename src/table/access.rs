//! Table access: from a table's physical address and an index to the atomic
//! word that holds the entry.
//!
//! Every entry is read with one atomic 64-bit load, so a walker racing a writer
//! sees either the old or the new entry, never a torn mix.
//!
//! # Implementing it in a kernel
//!
//! With a *direct map* (all of physical memory mapped at a fixed virtual offset,
//! as Linux's `PAGE_OFFSET` or the x86_64 crate's `OffsetPageTable`), the entry of
//! `(table, index)` is at virtual address `offset + table + 8 * index`; check the
//! physical address against the top of the direct map, then turn the address
//! into `&AtomicU64`. An *identity map* is the same with an offset of 0.
//! Page-table pages must only ever be accessed atomically (no plain writes while
//! a walker may read them), and they must stay mapped for as long as the
//! returned references live: a lockless walker relies on the walk guard (an
//! epoch or RCU read section, with table freeing deferred) for that.

use super::addr::PhysAddr;
use super::error::AccessError;
use crate::sync::{AtomicU64, Ordering};

/// Reaches the entries of page tables by physical address.
///
/// # Safety
///
/// Implementors promise that, for as long as `&self` lives:
///
/// 1. `entry(table, index)` returns the one atomic word that holds entry `index`
///    of the table at physical address `table` — the word the MMU and every
///    other walker of the same tables use — or an error; it returns the same
///    word every time it is called with the same arguments.
/// 2. Distinct `(table, index)` pairs inside one table, and distinct tables,
///    never share a word, for every `index` below the number of entries of
///    the table at `table` (an index past a table's end may reach the next
///    table's words: the walker and the builder never ask for one).
/// 3. The words are only ever accessed atomically.
/// 4. [`load`](Self::load), if overridden, returns what `word.load(order)`
///    returns, by making exactly that load (it may check or count first).
/// 5. [`entries`](Self::entries)`(table, index, n)`, if it returns a slice,
///    returns `n` words, word `i` being the one `entry(table, index + i)`
///    returns.
///
/// The builder writes page tables through these references and the MMU and
/// GUP-fast act on what they contain, so a word in the wrong place is memory
/// unsafety outside this crate.
///
/// The word is `crate::sync`'s `AtomicU64`: under `cfg(loom)` that is loom's
/// model type, larger than 8 bytes, so an implementation that reinterprets raw
/// table memory as atomics is only valid in normal builds; loom models
/// implement the trait over their own loom atomics (as `tests/loom_common`).
pub unsafe trait TableAccess {
    /// The word of entry `index` in the table at `table`.
    ///
    /// # Errors
    ///
    /// [`AccessError::Unreachable`] when the entry lies outside the memory this
    /// access reaches, [`AccessError::Misaligned`] when `table` is not aligned as
    /// the access requires.
    ///
    /// # Safety
    ///
    /// A store through the word keeps the tables' owner (their
    /// [`TableBuilder`](super::TableBuilder)) right about them: it may clear
    /// a leaf or change permission and attribute bits, but must not make a
    /// table reachable that the builder does not know there (a second pointer
    /// to a table) nor point a leaf at a page the caller does not own as
    /// [`map`](super::TableBuilder::map) asks. Either outlives the builder's
    /// unmap and its retire hook's bookkeeping, and walkers then reach a
    /// reused table or a freed page. Loads are always sound;
    /// [`Walker::reload`](super::Walker::reload) and
    /// [`Walker::translate`](super::Walker::translate) read entries without
    /// `unsafe`.
    unsafe fn entry(&self, table: PhysAddr, index: usize) -> Result<&AtomicU64, AccessError>;

    /// The words of entries `index .. index + n` of the table at `table`, if
    /// this access holds them consecutively in memory (a direct or identity
    /// map does) and reaches all of them: GUP-fast resolves a batch of leaves
    /// of one table with one call instead of `n` (contract point 5). `None`
    /// (the default) means "ask [`entry`](Self::entry) for each", which is
    /// always correct. Every load of these words still goes through
    /// [`load`](Self::load).
    ///
    /// # Safety
    ///
    /// As [`entry`](Self::entry): the caller stores to the words only what
    /// the tables' owner would.
    #[inline]
    unsafe fn entries(&self, table: PhysAddr, index: usize, n: usize) -> Option<&[AtomicU64]> {
        let _ = (table, index, n);
        None
    }

    /// Loads a word [`entry`](Self::entry) returned. Every load a walk or
    /// GUP-fast makes of a table entry goes through here, including the
    /// re-checks of words it resolved earlier, so an access that audits table
    /// lifetimes (a debugging kernel, the loom models, whose freed tables are
    /// `loom::cell::UnsafeCell`s) sees each of them. The default is the load
    /// itself.
    #[inline(always)]
    fn load(&self, word: &AtomicU64, order: Ordering) -> u64 {
        // The caller's ordering (see `table::walk`: Acquire for entries that
        // may point to tables, Relaxed at leaf-only levels).
        word.load(order)
    }
}
