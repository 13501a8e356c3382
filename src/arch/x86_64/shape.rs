//! What x86_64 paging and EPT share: the shape of the walk (4 or 5 levels of
//! 512 entries over 4 KiB pages, leaves of 1 GiB and 2 MiB above the PT, and
//! none in the PML4/PML5 or their EPT counterparts) and the address field of
//! an entry, bits 12 up to MAXPHYADDR − 1.

use crate::table::{Geometry, LevelShape};

const FOUR_LEVEL: Geometry = Geometry::new(
    12,
    &[
        LevelShape::tables(9),
        LevelShape::leaves(9),
        LevelShape::leaves(9),
        LevelShape::leaves(9),
    ],
);

const FIVE_LEVEL: Geometry = Geometry::new(
    12,
    &[
        LevelShape::tables(9),
        LevelShape::tables(9),
        LevelShape::leaves(9),
        LevelShape::leaves(9),
        LevelShape::leaves(9),
    ],
);

/// The geometry of a walk of `levels` levels with physical addresses of
/// `maxphyaddr` bits.
///
/// # Panics
///
/// Unless `levels` is 4 or 5 and `maxphyaddr` is 32..=52. Used in a `const`,
/// the panic is a compile error.
pub(super) const fn geometry(levels: usize, maxphyaddr: u32) -> Geometry {
    assert!(
        levels == 4 || levels == 5,
        "x86_64 walks have 4 or 5 levels"
    );
    assert!(
        maxphyaddr >= 32 && maxphyaddr <= 52,
        "MAXPHYADDR is 32..=52"
    );
    if levels == 5 { FIVE_LEVEL } else { FOUR_LEVEL }
}

/// Address bits 12..MAXPHYADDR of an entry.
///
/// Only evaluated in the formats' `const` items (`ADDR`, `ABOVE_MAXPHYADDR`),
/// where an out-of-range shift is a compile error, not a wrap; [`geometry`]
/// also asserts `maxphyaddr` in 32..=52, which keeps both shifts in range.
pub(super) const fn addr_mask(maxphyaddr: u32) -> u64 {
    ((1 << maxphyaddr) - 1) & !0xfff
}

/// Address-field bits at and above MAXPHYADDR (up to bit 51): reserved.
pub(super) const fn above_maxphyaddr(maxphyaddr: u32) -> u64 {
    ((1 << 52) - 1) & !((1 << maxphyaddr) - 1)
}

/// The SDM's number of the paging structure at pagepin's `level` of a walk of
/// `levels` levels (1 = the PT or EPT PT).
///
/// Callers check `level < levels` first (`decode` and `encode_leaf`, its only
/// callers, refuse a level past the last with `NoSuchLevel` before calling),
/// so the subtraction does not wrap.
pub(super) const fn sdm_level(levels: usize, level: usize) -> usize {
    levels - level
}
