//! Deliberately broken twins of `PageMeta`'s transitions, compiled only under
//! `cfg(loom)` so the loom models can show that they catch each mistake
//! (DESIGN.md, invariant 8). Each twin is a plain load followed by a plain store,
//! or a blind subtraction, with Relaxed orderings — never "SeqCst without a
//! fence", which loom would flag while C++ allows it.
//!
//! Nothing outside `tests/loom_*.rs` may call these.

use super::{Hold, MetaFlags, MetaWord, PageMeta};
use crate::sync::Ordering;

/// Marks truncating with a load and a store instead of one RMW: a get between the
/// two is overwritten, so the truncate can see zero references while one is held.
pub fn mark_truncating_load_store(meta: &PageMeta) -> bool {
    let cur = meta.word.load(Ordering::Relaxed);
    if cur & (MetaFlags::TRUNCATING | MetaFlags::FREE).bits() != 0 {
        return false;
    }
    meta.word
        .store(cur | MetaFlags::TRUNCATING.bits(), Ordering::Relaxed);
    true
}

/// Frees with a load and a Relaxed store: a get between the two is erased, and the
/// page is freed under its holder.
pub fn free_load_store(meta: &PageMeta) -> bool {
    let cur = MetaWord(meta.word.load(Ordering::Relaxed));
    if cur.is_free() || !cur.is_idle() {
        return false;
    }
    meta.word.store(MetaWord::FREE.0, Ordering::Relaxed);
    true
}

/// Allocates with a load and a Relaxed store: erases transient increments and
/// publishes nothing, so a getter does not see what the allocator wrote first.
pub fn allocate_load_store(meta: &PageMeta) -> bool {
    let cur = MetaWord(meta.word.load(Ordering::Relaxed));
    if !cur.is_free() {
        return false;
    }
    meta.word
        .store(MetaWord::ALLOCATED_IDLE.0, Ordering::Relaxed);
    true
}

/// Releases with a blind `fetch_sub` and checks afterwards: a release of what was
/// never taken has already borrowed from the neighbouring field.
pub fn put_fetch_sub(meta: &PageMeta, hold: Hold, n: u32) -> bool {
    let old = MetaWord(
        meta.word
            .fetch_sub(MetaWord(0).plus(hold, n).0, Ordering::Relaxed),
    );
    old.count(hold) >= n
}

/// Releases with a Relaxed load, a check of the field, then a blind `fetch_sub`:
/// the check and the subtraction are two steps, so two releases of one count can
/// both pass the check before either subtracts, and the second borrows from the
/// neighbouring field. Run one after the other, it refuses the second release
/// correctly: only a real race catches it.
pub fn put_check_then_fetch_sub(meta: &PageMeta, hold: Hold, n: u32) -> bool {
    // Relaxed: the twin's mistake is the gap after this load, not its ordering.
    let cur = MetaWord(meta.word.load(Ordering::Relaxed));
    if cur.count(hold) < n {
        return false;
    }
    // Relaxed: blind, as `put_fetch_sub`.
    meta.word
        .fetch_sub(MetaWord(0).plus(hold, n).0, Ordering::Relaxed);
    true
}

/// Releases with a Relaxed load, a check of the field and a Relaxed store of the
/// decremented word: two racing releases of one count both pass the check and
/// both store the same word, so both report success while the count dropped by
/// one (one release is lost). Run one after the other, it refuses the second.
pub fn put_load_store(meta: &PageMeta, hold: Hold, n: u32) -> bool {
    // Relaxed: the twin's mistake is the gap after this load, not its ordering.
    let cur = MetaWord(meta.word.load(Ordering::Relaxed));
    if cur.count(hold) < n {
        return false;
    }
    // Relaxed: a plain store where `put` has a compare-exchange.
    meta.word.store(cur.minus(hold, n).0, Ordering::Relaxed);
    true
}
