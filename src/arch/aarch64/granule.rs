//! Translation granules: how many levels a walk of a given input size takes,
//! which levels hold blocks, and the contiguous-hint group sizes (Arm ARM DDI
//! 0487, D8.2 "Translation table walk" and D8.3 "Translation table descriptor
//! formats"; D5.2/D5.3 in editions before J).
//!
//! Arm numbers levels by what they translate: level 3 tables map pages, and a
//! walk starts at level 0, 1, 2 or 3 depending on the granule and the input
//! size. pagepin numbers levels from the root, so pagepin level `l` of a
//! `depth`-level walk is Arm level `4 - depth + l` ([`arm_level`]).

use crate::table::{Geometry, LevelShape, MAX_INDEX_BITS};

/// The 4 KiB granule: `GRANULE_SHIFT` = 12.
pub const GRANULE_4K: u32 = 12;
/// The 16 KiB granule: `GRANULE_SHIFT` = 14.
pub const GRANULE_16K: u32 = 14;
/// The 64 KiB granule: `GRANULE_SHIFT` = 16.
pub const GRANULE_64K: u32 = 16;

/// Output addresses are 48 bits: neither FEAT_LPA (52-bit output with 64 KiB
/// granules) nor FEAT_LPA2 (with 4 KiB and 16 KiB granules) is supported.
pub(super) const OA_BITS: u32 = 48;

/// Descriptor bits 47:12, the widest output-address field without LPA.
pub(super) const OA_FIELD: u64 = ((1 << OA_BITS) - 1) & !0xfff;

/// Panics (a compile error in a `const`) unless `granule_shift` is a granule.
pub(super) const fn assert_granule(granule_shift: u32) {
    assert!(
        granule_shift == GRANULE_4K || granule_shift == GRANULE_16K || granule_shift == GRANULE_64K,
        "the granule shift is 12 (4 KiB), 14 (16 KiB) or 16 (64 KiB)"
    );
}

/// Input-address bits one full table resolves: a table fills one granule
/// with 8-byte descriptors.
pub(super) const fn bits_per_level(granule_shift: u32) -> u32 {
    granule_shift - 3
}

/// The fewest levels (at least 2, at most 4) whose start level resolves at
/// most `max_root_bits` of an `input_bits` input, the other levels one full
/// table each.
///
/// # Panics
///
/// If no such walk exists (used in a `const`: a compile error). Its
/// arithmetic runs only in `const` items too (the formats' `DEPTH`), with a
/// granule shift of 12, 14 or 16 and an input of at most 48 bits; the one
/// subtraction that could wrap, `input_bits - below`, is guarded.
pub(super) const fn depth_for(granule_shift: u32, input_bits: u32, max_root_bits: u32) -> usize {
    let per_level = bits_per_level(granule_shift);
    let mut depth = 2;
    while depth <= 4 {
        let below = granule_shift + (depth as u32 - 1) * per_level;
        if input_bits > below && input_bits - below <= max_root_bits {
            return depth;
        }
        depth += 1;
    }
    panic!("no walk of 2 to 4 levels translates this input size")
}

/// The Arm level of pagepin level `level` in a `depth`-level walk.
///
/// `depth` is a format's `DEPTH`, 2..=4 (`depth_for`), so `4 - depth` does not
/// wrap; callers pass `level < depth`, so the result is at most 3.
#[inline]
pub(super) const fn arm_level(depth: usize, level: usize) -> usize {
    4 - depth + level
}

/// Whether Arm level `arm_level` may hold block descriptors with this granule
/// (without LPA/LPA2): 4 KiB at levels 1 and 2 (1 GiB, 2 MiB); 16 KiB at level
/// 2 (32 MiB); 64 KiB at level 2 (512 MiB). Level 3 holds pages.
#[inline]
pub(super) const fn holds_blocks(granule_shift: u32, arm_level: usize) -> bool {
    match granule_shift {
        GRANULE_4K => arm_level == 1 || arm_level == 2,
        _ => arm_level == 2,
    }
}

/// The number of entries in a contiguous-hint group of leaves at Arm level
/// `arm_level`, `None` where no leaves with the hint exist: 4 KiB: 16 (level
/// 3 pages and level 1 and 2 blocks); 16 KiB: 128 at level 3, 32 at level 2;
/// 64 KiB: 32 at levels 3 and 2.
pub(super) const fn contiguous_entries(granule_shift: u32, arm_level: usize) -> Option<usize> {
    if arm_level != 3 && !holds_blocks(granule_shift, arm_level) {
        return None;
    }
    Some(match (granule_shift, arm_level) {
        (GRANULE_4K, _) => 16,
        (GRANULE_16K, 3) => 128,
        _ => 32,
    })
}

/// The geometry of a `depth`-level walk of an `input_bits` input: the start
/// level takes the bits the full levels below leave; leaves where Arm allows
/// blocks and at level 3.
///
/// # Panics
///
/// If the start level would index more than [`MAX_INDEX_BITS`] bits (a compile
/// error in a `const`). Evaluated only in the formats' `GEOMETRY` consts, with
/// the `depth` that `depth_for` found for the same input size, so
/// `input_bits - granule_shift - (depth - 1) * per_level` is the root's bit
/// count, positive; an overflow would be a compile error, not a wrap.
pub(super) const fn geometry(granule_shift: u32, input_bits: u32, depth: usize) -> Geometry {
    let per_level = bits_per_level(granule_shift);
    let root_bits = input_bits - granule_shift - (depth as u32 - 1) * per_level;
    assert!(root_bits <= MAX_INDEX_BITS, "the start level is too large");
    let mut shapes = [LevelShape::tables(per_level); 4];
    let mut level = 0;
    while level < depth {
        let bits = if level == 0 { root_bits } else { per_level };
        let arm = arm_level(depth, level);
        shapes[level] = if arm == 3 || holds_blocks(granule_shift, arm) {
            LevelShape::leaves(bits)
        } else {
            LevelShape::tables(bits)
        };
        level += 1;
    }
    Geometry::new(granule_shift, shapes.split_at(depth).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_1_start_levels_follow_the_input_size() {
        // One full table at the start level at most: 4-, 3- and 2-level walks.
        let per = |g| bits_per_level(g);
        assert_eq!(depth_for(GRANULE_4K, 48, per(GRANULE_4K)), 4);
        assert_eq!(depth_for(GRANULE_4K, 39, per(GRANULE_4K)), 3);
        assert_eq!(depth_for(GRANULE_4K, 40, per(GRANULE_4K)), 4);
        assert_eq!(depth_for(GRANULE_4K, 30, per(GRANULE_4K)), 2);
        assert_eq!(depth_for(GRANULE_16K, 48, per(GRANULE_16K)), 4);
        assert_eq!(depth_for(GRANULE_16K, 47, per(GRANULE_16K)), 3);
        assert_eq!(depth_for(GRANULE_16K, 36, per(GRANULE_16K)), 2);
        assert_eq!(depth_for(GRANULE_64K, 48, per(GRANULE_64K)), 3);
        assert_eq!(depth_for(GRANULE_64K, 42, per(GRANULE_64K)), 2);
    }

    #[test]
    fn geometries_of_the_common_configurations() {
        // 16 KiB, 48-bit: Arm levels 0-3, 2 entries at level 0, 32 MiB blocks.
        let g = geometry(GRANULE_16K, 48, 4);
        assert_eq!((g.depth(), g.va_bits(), g.entries(0)), (4, 48, Some(2)));
        assert_eq!(g.leaf_size(2), Some(32 << 20));
        assert_eq!(g.leaf_size(1), None, "no level 1 blocks without LPA2");
        // 64 KiB, 48-bit: Arm levels 1-3, 64 entries at level 1.
        let g = geometry(GRANULE_64K, 48, 3);
        assert_eq!((g.entries(0), g.entries(1)), (Some(64), Some(8192)));
        assert_eq!(g.leaf_size(0), None, "no level 1 blocks without LPA");
        assert_eq!(g.leaf_size(1), Some(512 << 20));
        // 4 KiB, 48-bit: no level 0 blocks without LPA2; 1 GiB at level 1.
        let g = geometry(GRANULE_4K, 48, 4);
        assert_eq!(g.leaf_size(0), None);
        assert_eq!(g.leaf_size(1), Some(1 << 30));
        assert_eq!(g.leaf_level(2 << 20), Some(2));
    }

    #[test]
    fn contiguous_groups_per_granule_and_level() {
        assert_eq!(contiguous_entries(GRANULE_4K, 3), Some(16));
        assert_eq!(contiguous_entries(GRANULE_4K, 2), Some(16));
        assert_eq!(contiguous_entries(GRANULE_4K, 1), Some(16));
        assert_eq!(contiguous_entries(GRANULE_4K, 0), None);
        assert_eq!(contiguous_entries(GRANULE_16K, 3), Some(128));
        assert_eq!(contiguous_entries(GRANULE_16K, 2), Some(32));
        assert_eq!(contiguous_entries(GRANULE_16K, 1), None);
        assert_eq!(contiguous_entries(GRANULE_64K, 3), Some(32));
        assert_eq!(contiguous_entries(GRANULE_64K, 2), Some(32));
        assert_eq!(contiguous_entries(GRANULE_64K, 1), None);
    }
}
