//! What stage 1 and stage 2 descriptors share (Arm ARM DDI 0487, D8.3
//! "Translation table descriptor formats"): the valid bit, the type bit, and
//! where the output address sits for a table, a block or a page, with the
//! address-field bits that are RES0 without FEAT_LPA/FEAT_LPA2.
//!
//! ```text
//! bits 1:0   x0 invalid (every other bit ignored)
//!            11 table (levels above 3) or page (level 3)
//!            01 block (levels that hold blocks); reserved at level 3
//! table      next-level table address in 47:G; G-1:12 and 51:48 RES0
//! page       output address in 47:G; G-1:12 and 49:48 RES0
//! block      output address in 47:n (n = log2 of the block size);
//!            n-1:17 and 15:12 RES0, 16 nT (FEAT_BBM, ignored); 49:48 RES0
//! ```
//!
//! G is the granule's shift (12, 14, 16). The attribute bits are the stages'
//! own ([`super::stage1`], [`super::stage2`]).

use super::granule::{OA_FIELD, arm_level, bits_per_level, holds_blocks};
use crate::table::{DecodeError, EncodeError, Geometry, PhysAddr};

/// Bit 0: the descriptor is valid.
pub(super) const VALID: u64 = 1 << 0;
/// Bit 1: a table (above level 3) or a page (at level 3); clear: a block.
pub(super) const TABLE_OR_PAGE: u64 = 1 << 1;
/// Bit 16 of a block: nT (FEAT_BBM); not part of the address.
const NT: u64 = 1 << 16;
/// Bits 49:48 of a block or page: OA[49:48] with LPA2, RES0 here.
const LEAF_RES0_HIGH: u64 = 0b11 << 48;
/// Bits 51:48 of a table descriptor: address bits with LPA/LPA2, RES0 here.
const TABLE_RES0_HIGH: u64 = 0xf << 48;
/// Bit 52: the contiguous hint (blocks and pages only).
pub(super) const CONTIGUOUS: u64 = 1 << 52;

/// What a descriptor's type bits and address field say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// Bit 0 clear.
    Invalid,
    /// A table descriptor and the next-level table's address.
    Table(PhysAddr),
    /// A block or page descriptor and its output address.
    Leaf(PhysAddr),
}

/// Bits `high..=low` set (`high >= low`; 0 for `high == low - 1`).
///
/// Both must be at most 63 (the shifts are by `63 - high` and `low`). Every
/// caller passes a granule or block shift minus one (11..=47) or a value of
/// 0 or 12..=16: in range.
const fn bit_range(high: u32, low: u32) -> u64 {
    (u64::MAX >> (63 - high)) & !((1 << low) - 1)
}

/// The shape of `raw` at pagepin level `level` (< `depth`) of a `depth`-level
/// walk with granule `granule_shift`.
///
/// # Errors
///
/// [`DecodeError::ReservedEncoding`] for a block encoding at level 3,
/// [`DecodeError::LeafNotAllowed`] for a block at a level without blocks,
/// [`DecodeError::ReservedBits`] for RES0 address-field bits that are set.
pub(super) fn shape(
    raw: u64,
    granule_shift: u32,
    depth: usize,
    level: usize,
) -> Result<Shape, DecodeError> {
    if raw & VALID == 0 {
        return Ok(Shape::Invalid);
    }
    let arm = arm_level(depth, level);
    if raw & TABLE_OR_PAGE != 0 {
        // Empty for 4 KiB granules (bit_range(11, 12) is 0).
        let below_granule = bit_range(granule_shift - 1, 12);
        let high = if arm == 3 {
            LEAF_RES0_HIGH
        } else {
            TABLE_RES0_HIGH
        };
        check_res0(raw & (below_granule | high))?;
        let address = PhysAddr(raw & OA_FIELD & !bit_range(granule_shift - 1, 0));
        return Ok(if arm == 3 {
            Shape::Leaf(address)
        } else {
            Shape::Table(address)
        });
    }
    if arm == 3 {
        return Err(DecodeError::ReservedEncoding { field: raw & 0b11 });
    }
    if !holds_blocks(granule_shift, arm) {
        return Err(DecodeError::LeafNotAllowed { level });
    }
    // `arm` is 1 or 2 here (a level that holds blocks: `holds_blocks`), so
    // `3 - arm` does not wrap, and the block shift is at most
    // 16 + 2 * 13 = 42.
    let block_shift = granule_shift + (3 - arm as u32) * bits_per_level(granule_shift);
    let offset = bit_range(block_shift - 1, 0);
    check_res0(raw & ((offset & !(NT | 0xfff)) | LEAF_RES0_HIGH))?;
    Ok(Shape::Leaf(PhysAddr(raw & OA_FIELD & !offset)))
}

/// `Err(ReservedBits)` unless `set_res0` is 0.
#[inline]
fn check_res0(set_res0: u64) -> Result<(), DecodeError> {
    if set_res0 == 0 {
        Ok(())
    } else {
        Err(DecodeError::ReservedBits { bits: set_res0 })
    }
}

/// Whether `pa` fits an output-address field aligned to `2^align_shift`.
///
/// `align_shift` is a granule or leaf shift (12..=42), so `align_shift - 1`
/// does not wrap.
#[inline]
pub(super) const fn encodable(pa: PhysAddr, align_shift: u32) -> bool {
    pa.0 & !(OA_FIELD & !bit_range(align_shift - 1, 0)) == 0
}

/// The table descriptor at `level` that points to `table`, in a walk of
/// `geometry` over `2^granule_shift`-byte tables (stage 1 and stage 2 alike).
///
/// # Errors
///
/// [`EncodeError::NoSuchLevel`] at a level that holds no tables,
/// [`EncodeError::UnencodableAddress`] for an address the field cannot hold.
pub(super) fn encode_table(
    geometry: &Geometry,
    granule_shift: u32,
    table: PhysAddr,
    level: usize,
) -> Result<u64, EncodeError> {
    if !geometry.holds_tables(level) {
        return Err(EncodeError::NoSuchLevel { level });
    }
    if !encodable(table, granule_shift) {
        return Err(EncodeError::UnencodableAddress { pa: table });
    }
    Ok(table.0 | TABLE_OR_PAGE | VALID)
}

/// What every leaf descriptor at `level` of a `depth`-level walk of
/// `geometry` starts from: the output address `pa` (checked against the
/// level's block or page size), `VALID`, and the page type at Arm level 3.
/// Stage 1 and stage 2 add their attributes to it.
///
/// # Errors
///
/// [`EncodeError::NoSuchLevel`], [`EncodeError::LeafNotAllowed`] and
/// [`EncodeError::UnencodableAddress`].
pub(super) fn leaf_base(
    geometry: &Geometry,
    depth: usize,
    pa: PhysAddr,
    level: usize,
) -> Result<u64, EncodeError> {
    if level >= depth {
        return Err(EncodeError::NoSuchLevel { level });
    }
    let size = geometry
        .leaf_size(level)
        .ok_or(EncodeError::LeafNotAllowed { level })?;
    if !encodable(pa, size.trailing_zeros()) {
        return Err(EncodeError::UnencodableAddress { pa });
    }
    let page = if arm_level(depth, level) == 3 {
        TABLE_OR_PAGE
    } else {
        0
    };
    Ok(pa.0 | VALID | page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::aarch64::granule::{GRANULE_4K, GRANULE_16K, GRANULE_64K};

    #[test]
    fn bit_ranges() {
        assert_eq!(bit_range(47, 12), 0x0000_ffff_ffff_f000);
        assert_eq!(bit_range(63, 0), u64::MAX);
        assert_eq!(bit_range(15, 12), 0xf000);
        assert_eq!(bit_range(11, 12), 0, "nothing below a 4 KiB granule");
    }

    #[test]
    fn shapes_of_the_type_bits() {
        // 4 KiB, 4 levels: pagepin level 3 is Arm level 3.
        assert_eq!(shape(0x1000, GRANULE_4K, 4, 3), Ok(Shape::Invalid));
        assert_eq!(
            shape(0x5000 | 0b11, GRANULE_4K, 4, 3),
            Ok(Shape::Leaf(PhysAddr(0x5000)))
        );
        assert_eq!(
            shape(0x5000 | 0b11, GRANULE_4K, 4, 2),
            Ok(Shape::Table(PhysAddr(0x5000)))
        );
        assert_eq!(
            shape(0x5000 | 0b01, GRANULE_4K, 4, 3),
            Err(DecodeError::ReservedEncoding { field: 0b01 })
        );
        assert_eq!(
            shape(0b01, GRANULE_4K, 4, 0),
            Err(DecodeError::LeafNotAllowed { level: 0 })
        );
        // 64 KiB, 3 levels: pagepin level 0 is Arm level 1, no blocks there.
        assert_eq!(
            shape(0b01, GRANULE_64K, 3, 0),
            Err(DecodeError::LeafNotAllowed { level: 0 })
        );
        // 16 KiB: bits 13:12 of a page are RES0.
        assert_eq!(
            shape(0x8000 | 0x1000 | 0b11, GRANULE_16K, 4, 3),
            Err(DecodeError::ReservedBits { bits: 0x1000 })
        );
        // A 2 MiB block: nT is not an address bit.
        assert_eq!(
            shape(0x20_0000 | NT | 0b01, GRANULE_4K, 4, 2),
            Ok(Shape::Leaf(PhysAddr(0x20_0000)))
        );
        assert!(encodable(PhysAddr(0x20_0000), 21));
        assert!(!encodable(PhysAddr(0x20_1000), 21));
        assert!(!encodable(PhysAddr(1 << 48), 12));
    }
}
