//! The layout of the metadata word: field positions, widths, limits and the
//! headroom arithmetic, as constants with compile-time assertions.
//!
//! ```text
//!  63 62 | 61         | 60   | 59 ............ 30 | 29 ............. 0
//!  rsvd  | TRUNCATING | FREE | pins (30 bits)     | refs (30 bits)
//! ```
//!
//! # Why these widths
//!
//! A single read-modify-write adds at most [`MAX_BATCH`] = 2^18 base pages (one
//! 1 GiB leaf of 4 KiB pages). The speculative get path (`fetch_add`, check the
//! old value, undo on refusal) makes its increment visible before it has checked
//! anything, so a field may transiently hold, on top of its committed value, one
//! unchecked batch from every context that is between its `fetch_add` and its undo.
//! [`MAX_CPUS`] bounds those contexts. They are not CPUs: on one CPU a task can be
//! interrupted between its add and its undo by a softirq, that by a hardirq, that
//! by an NMI, and each may get on the same word (a task preempted mid-get is one
//! more). With preemption off across the get and gets from all four levels, a
//! CPU contributes up to 4 contexts, so 1024 contexts cover 256 CPUs. Nothing in
//! the word can enforce that bound, so choosing the speculative path is `unsafe`
//! ([`PageMeta::get_speculative`](super::PageMeta::get_speculative)); the
//! compare-exchange path never makes an unchecked increment and needs no bound.
//! The headroom is
//!
//! ```text
//! HEADROOM  = MAX_BATCH × MAX_CPUS = 2^18 × 2^10 = 2^28 = 268_435_456
//! COUNT_MAX = 2^30 − 1 − HEADROOM              = 805_306_367
//! ```
//!
//! A get commits only if `old + n ≤ COUNT_MAX`, where `old` already includes
//! everyone else's transient increments, so the committed value never exceeds
//! [`COUNT_MAX`], and committed plus all transients never exceeds
//! `COUNT_MAX + HEADROOM = 2^30 − 1`: no carry ever reaches the neighbouring field.
//! [`COUNT_MAX`] is 3072 full 1 GiB batches, or 805 million 4 KiB pages.
//!
//! Releases never subtract blindly: they are compare-exchange loops that check the
//! field first (see [`PageMeta::put`](super::PageMeta::put)), so there is no borrow
//! to guard against and no guard bits are needed.
//!
//! # Choice: a pin is not also a reference
//!
//! Linux counts a pin as 1024 references ("maybe pinned"). Here pins and references
//! are separate exact fields; a page is *idle* when both are zero. A pin therefore
//! costs one field update, not two, and `pins` is exact for every page size.

use bitflags::bitflags;
use static_assertions::const_assert;

/// Bit position of the reference count.
pub(crate) const REFS_SHIFT: u32 = 0;
/// Bit position of the pin count.
pub(crate) const PINS_SHIFT: u32 = 30;
/// Width of each count field in bits.
pub(crate) const COUNT_BITS: u32 = 30;
/// Mask of one count field, shifted down to bit 0.
pub(crate) const COUNT_FIELD_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Largest number of base pages one read-modify-write adds or removes: a 1 GiB leaf
/// of 4 KiB pages. Larger leaves take several RMWs.
pub const MAX_BATCH: u32 = 1 << 18;
/// Largest number of contexts that may hold an unchecked speculative increment on
/// the same word at once (the fetch-add get path, whose `unsafe` precondition
/// this is). A context is whatever can sit between its add and its undo while
/// another getter runs: per CPU, the task (with preemption off across the get;
/// otherwise every preempted task counts) plus each interrupt level that gets —
/// softirq, hardirq, NMI — so up to 4 per CPU, 256 CPUs with all four. The name
/// is historical: it bounds contexts, not CPUs. Kernels with more must use the
/// compare-exchange get path, which needs no headroom.
pub const MAX_CPUS: u32 = 1 << 10;
/// Room left above [`COUNT_MAX`] for in-flight speculative increments: one full
/// batch from each of [`MAX_CPUS`] contexts.
pub const HEADROOM: u64 = MAX_BATCH as u64 * MAX_CPUS as u64;
/// Largest committed value of either count.
pub const COUNT_MAX: u32 = ((1u64 << COUNT_BITS) - 1 - HEADROOM) as u32;

const_assert!(HEADROOM == 1 << 28);
const_assert!(COUNT_MAX == 805_306_367);
// Committed maximum plus every possible transient still fits in the field.
const_assert!(COUNT_MAX as u64 + HEADROOM <= COUNT_FIELD_MASK);
// A whole batch fits under the limit (a 1 GiB leaf can be taken at all).
const_assert!(MAX_BATCH <= COUNT_MAX);
// The fields and flags do not overlap and stay inside the word.
const_assert!(REFS_SHIFT + COUNT_BITS <= PINS_SHIFT);
const_assert!(PINS_SHIFT + COUNT_BITS <= MetaFlags::FREE.bits().trailing_zeros());
const_assert!(
    MetaFlags::FREE.bits().trailing_zeros() < MetaFlags::TRUNCATING.bits().trailing_zeros()
);
const_assert!(MetaFlags::all().bits() & RESERVED_MASK == 0);
const_assert!((COUNT_FIELD_MASK << REFS_SHIFT) & (COUNT_FIELD_MASK << PINS_SHIFT) == 0);
const_assert!(
    ((COUNT_FIELD_MASK << REFS_SHIFT) | (COUNT_FIELD_MASK << PINS_SHIFT)) & MetaFlags::all().bits()
        == 0
);

/// Bits that no operation ever sets (62 and 63).
pub(crate) const RESERVED_MASK: u64 = 0b11 << 62;

bitflags! {
    /// State bits of the metadata word.
    ///
    /// `FREE` and `TRUNCATING` are never set together, not even transiently:
    /// marking is a compare-exchange that sets `TRUNCATING` only on an allocated
    /// word, and freeing clears `TRUNCATING` in the same compare-exchange.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MetaFlags: u64 {
        /// The page is free (owned by the allocator): no reference or pin may be
        /// taken. Counts are zero, except for transient speculative increments
        /// that their getters are about to undo.
        const FREE = 1 << 60;
        /// A truncate (layout break) has marked the page: no new reference or pin
        /// may be taken; existing ones drain.
        const TRUNCATING = 1 << 61;
    }
}

/// Which count an operation changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hold {
    /// A plain reference (short-term; Linux's `get_page`).
    Ref,
    /// A DMA pin (Linux's `pin_user_pages`), counted exactly.
    Pin,
}

impl Hold {
    /// Bit position of this count's field.
    #[inline]
    pub(crate) const fn shift(self) -> u32 {
        match self {
            Hold::Ref => REFS_SHIFT,
            Hold::Pin => PINS_SHIFT,
        }
    }
}

/// A decoded value of the metadata word, as one load or RMW returned it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetaWord(pub(crate) u64);

impl MetaWord {
    /// The word of a free page: `FREE`, counts zero.
    pub const FREE: MetaWord = MetaWord(MetaFlags::FREE.bits());
    /// The word of an allocated page that nobody references: all zero.
    pub const ALLOCATED_IDLE: MetaWord = MetaWord(0);

    /// The raw 64-bit value.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The reference count (including transient speculative increments).
    #[inline]
    pub const fn refs(self) -> u32 {
        self.count(Hold::Ref)
    }

    /// The pin count (including transient speculative increments).
    #[inline]
    pub const fn pins(self) -> u32 {
        self.count(Hold::Pin)
    }

    /// The count of `hold`.
    #[inline]
    pub const fn count(self, hold: Hold) -> u32 {
        ((self.0 >> hold.shift()) & COUNT_FIELD_MASK) as u32
    }

    /// The state bits.
    #[inline]
    pub const fn flags(self) -> MetaFlags {
        MetaFlags::from_bits_truncate(self.0)
    }

    /// Whether `FREE` is set.
    #[inline]
    pub const fn is_free(self) -> bool {
        self.0 & MetaFlags::FREE.bits() != 0
    }

    /// Whether `TRUNCATING` is set.
    #[inline]
    pub const fn is_truncating(self) -> bool {
        self.0 & MetaFlags::TRUNCATING.bits() != 0
    }

    /// Whether both counts are zero.
    #[inline]
    pub const fn is_idle(self) -> bool {
        self.0 & ((COUNT_FIELD_MASK << REFS_SHIFT) | (COUNT_FIELD_MASK << PINS_SHIFT)) == 0
    }

    /// The word with `n` pages of `hold` added. The caller has checked the field.
    #[inline]
    pub(crate) const fn plus(self, hold: Hold, n: u32) -> MetaWord {
        MetaWord(self.0 + ((n as u64) << hold.shift()))
    }

    /// The word with `n` pages of `hold` removed. The caller has checked the field.
    #[inline]
    pub(crate) const fn minus(self, hold: Hold, n: u32) -> MetaWord {
        MetaWord(self.0 - ((n as u64) << hold.shift()))
    }
}

impl core::fmt::Debug for MetaWord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MetaWord")
            .field("refs", &self.refs())
            .field("pins", &self.pins())
            .field("flags", &self.flags())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_decode_independently() {
        let w =
            MetaWord((5u64 << REFS_SHIFT) | (7u64 << PINS_SHIFT) | MetaFlags::TRUNCATING.bits());
        assert_eq!(w.refs(), 5);
        assert_eq!(w.pins(), 7);
        assert!(w.is_truncating());
        assert!(!w.is_free());
        assert!(!w.is_idle());
        assert_eq!(w.flags(), MetaFlags::TRUNCATING);
    }

    #[test]
    fn full_fields_do_not_touch_neighbours() {
        let all_refs = MetaWord(COUNT_FIELD_MASK << REFS_SHIFT);
        assert_eq!(all_refs.refs() as u64, COUNT_FIELD_MASK);
        assert_eq!(all_refs.pins(), 0);
        assert!(all_refs.flags().is_empty());
        let all_pins = MetaWord(COUNT_FIELD_MASK << PINS_SHIFT);
        assert_eq!(all_pins.refs(), 0);
        assert_eq!(all_pins.pins() as u64, COUNT_FIELD_MASK);
        assert!(all_pins.flags().is_empty());
    }

    #[test]
    fn worst_case_transients_stay_in_the_field() {
        // Committed at the limit, then MAX_CPUS unchecked full batches on top.
        let mut w = MetaWord(0).plus(Hold::Pin, COUNT_MAX);
        for _ in 0..MAX_CPUS {
            w = w.plus(Hold::Pin, MAX_BATCH);
        }
        assert_eq!(w.pins() as u64, COUNT_FIELD_MASK);
        assert_eq!(w.refs(), 0);
        assert!(w.flags().is_empty());
        assert_eq!(w.raw() & RESERVED_MASK, 0);
    }

    #[test]
    fn constants_are_the_documented_ones() {
        assert_eq!(MetaWord::FREE.flags(), MetaFlags::FREE);
        assert!(MetaWord::FREE.is_idle());
        assert!(MetaWord::ALLOCATED_IDLE.is_idle());
        assert_eq!(MetaWord(0).plus(Hold::Ref, 1).raw(), 1);
        assert_eq!(MetaWord(0).plus(Hold::Pin, 1).raw(), 1 << 30);
    }
}
