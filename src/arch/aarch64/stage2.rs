//! VMSAv8-64 stage 2 translation (guest IPA → PA) with 4, 16 and 64 KiB
//! granules (Arm ARM DDI 0487, D8.3 "Translation table descriptor formats",
//! D8.4 "Memory access control", D8.6 "Memory region attributes"; D5 before
//! edition J), for HCR_EL2.FWB = 0.
//!
//! Block and page descriptors (bits 1:0 and the address: [`super::descriptor`]):
//!
//! ```text
//! 5:2   MemAttr[3:0] → MemType bits 3:0   (Normal with MemAttr[1:0] = 00: reserved)
//! 7:6   S2AP[1:0]    S2AP[0] → READ, S2AP[1] → WRITE
//! 9:8   SH           → MemType bits 5:4   (0b01 reserved)
//! 10    AF           → ACCESSED           11     FnXS (ignored)
//! 51    DBM          52 contiguous hint   54:53  XN[1:0]
//! 55-63 software, PBHA (ignored)
//! ```
//!
//! Stage 2 table descriptors carry no attributes: bits 63:59 are RES0 and
//! bits 11:2 and 58:52 are ignored, so a table restricts nothing.
//!
//! How the bits become [`Perms`]:
//!
//! - [`Perms::READ`] is S2AP\[0\]; [`Perms::WRITE`] is S2AP\[1\], or DBM set
//!   (FEAT_HAFDBS: the hardware sets S2AP\[1\] on the first write);
//!   [`Perms::DIRTY`] is DBM with S2AP\[1\] set. A writable leaf without
//!   [`Perms::DIRTY`] is encoded with DBM clear.
//! - [`Perms::EXEC`] is XN\[1:0\] = `00`: executable at EL0 and EL1. With
//!   FEAT_XNX, `01` and `11` allow execution at one of them only; both are
//!   reported as not executable (never more than the hardware allows). The
//!   encoder writes `00` or `10`.
//! - [`Perms::USER`] and [`Perms::GLOBAL`] are stage-1 notions: never decoded,
//!   refused by the encoder. Stage 2 translations are tagged by VMID, not ASID.
//!
//! The start level and its concatenated tables come from the IPA size: the
//! walk with the fewest levels (at least 2) whose start level needs at most 16
//! concatenated tables (VTCR_EL2.SL0 and T0SZ must say the same; see
//! [`Stage2::START_LEVEL`] and [`Stage2::CONCATENATED_TABLES`]). A root of
//! several tables is one contiguous block aligned to its size: build it with
//! [`TableBuilder::with_root`](crate::table::TableBuilder::with_root).

use super::descriptor::{self, CONTIGUOUS, Shape};
use super::granule::{arm_level, assert_granule, bits_per_level, contiguous_entries, depth_for};
use super::mem_type::SH_RESERVED;
use crate::table::{
    DecodeError, EncodeError, Entry, Geometry, LeafEntry, MemType, PagingFormat, Perms, PhysAddr,
    TableEntry, VirtAddr,
};

/// Stage 2 translation with a `2^GRANULE_SHIFT`-byte granule over
/// `IPA_BITS`-bit intermediate physical addresses (32..=48; VTCR_EL2.T0SZ =
/// `64 − IPA_BITS`). Anything else is a compile error where the format is used.
///
/// | granule | `IPA_BITS` | levels | start level (Arm) | concatenated tables | start entries |
/// |---------|------------|--------|-------------------|---------------------|---------------|
/// | 4 KiB   | 40         | 3      | 1                 | 2                   | 1024          |
/// | 4 KiB   | 44         | 4      | 0                 | 1                   | 32            |
/// | 4 KiB   | 48         | 4      | 0                 | 1                   | 512           |
/// | 16 KiB  | 40         | 2      | 2                 | 16                  | 32768         |
/// | 16 KiB  | 48         | 3      | 1                 | 2                   | 4096          |
/// | 64 KiB  | 46         | 2      | 2                 | 16                  | 131072        |
/// | 64 KiB  | 48         | 3      | 1                 | 1                   | 64            |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stage2<const GRANULE_SHIFT: u32, const IPA_BITS: u32>;

/// 4 KiB granule, 40-bit IPAs: start at Arm level 1 with 2 concatenated tables.
pub type Stage2G4K40 = Stage2<12, 40>;
/// 4 KiB granule, 48-bit IPAs: 4 levels.
pub type Stage2G4K48 = Stage2<12, 48>;
/// 16 KiB granule, 40-bit IPAs: start at Arm level 2 with 16 concatenated tables.
pub type Stage2G16K40 = Stage2<14, 40>;
/// 64 KiB granule, 48-bit IPAs: start at Arm level 1 with 64 entries.
pub type Stage2G64K48 = Stage2<16, 48>;

/// MemAttr[3:0], bits 5:2.
const MEM_ATTR: u64 = 0b1111 << 2;
/// S2AP[0]: read access.
const S2AP_READ: u64 = 1 << 6;
/// S2AP[1]: write access.
const S2AP_WRITE: u64 = 1 << 7;
/// SH, bits 9:8.
const SH: u64 = 0b11 << 8;
/// AF: the access flag.
const AF: u64 = 1 << 10;
/// DBM: dirty bit modifier.
const DBM: u64 = 1 << 51;
/// XN[1:0], bits 54:53.
const XN: u64 = 0b11 << 53;
/// XN[1:0] = 10: not executable at EL0 or EL1.
const XN_NEVER: u64 = 0b10 << 53;
/// Bits 63:59 of a stage 2 table descriptor: RES0.
const TABLE_RES0: u64 = 0b1_1111 << 59;

/// Whether MemAttr[3:0] is a reserved encoding: Normal memory (MemAttr[3:2] ≠
/// 00) with MemAttr[1:0] = 00.
const fn mem_attr_reserved(mem_attr: u8) -> bool {
    mem_attr & 0b1100 != 0 && mem_attr & 0b11 == 0
}

impl<const GRANULE_SHIFT: u32, const IPA_BITS: u32> Stage2<GRANULE_SHIFT, IPA_BITS> {
    /// The number of levels of the walk.
    pub const DEPTH: usize = {
        assert_granule(GRANULE_SHIFT);
        assert!(
            IPA_BITS >= 32 && IPA_BITS <= 48,
            "stage 2 IPA sizes are 32..=48 bits"
        );
        // Up to 16 (2^4) concatenated tables at the start level.
        depth_for(GRANULE_SHIFT, IPA_BITS, bits_per_level(GRANULE_SHIFT) + 4)
    };

    /// The Arm level the walk starts at: pagepin level `l` is Arm level
    /// `START_LEVEL + l`.
    pub const START_LEVEL: usize = arm_level(Self::DEPTH, 0);

    /// How many granule-sized tables the start level concatenates (1 when it
    /// fits in one table); the root is that many tables, contiguous and aligned
    /// to their total size.
    pub const CONCATENATED_TABLES: usize = {
        let root_bits = IPA_BITS - GRANULE_SHIFT - (Self::DEPTH as u32 - 1) * (GRANULE_SHIFT - 3);
        let per_table = bits_per_level(GRANULE_SHIFT);
        if root_bits > per_table {
            1 << (root_bits - per_table)
        } else {
            1
        }
    };

    /// The number of entries in a contiguous-hint group of leaves at pagepin
    /// level `level`, `None` if the level holds no leaves (or does not exist).
    #[inline]
    pub const fn contiguous_entries(level: usize) -> Option<usize> {
        if level < Self::DEPTH {
            contiguous_entries(GRANULE_SHIFT, arm_level(Self::DEPTH, level))
        } else {
            None
        }
    }

    /// If `raw` is a valid leaf at `level` with the contiguous hint set, the
    /// number of entries of its group. The hint never changes a translation;
    /// [`decode`](PagingFormat::decode) ignores it.
    pub fn contiguous_group(raw: u64, level: usize) -> Option<usize> {
        match Self::decode(raw, level) {
            Ok(Entry::Leaf(_)) if raw & CONTIGUOUS != 0 => Self::contiguous_entries(level),
            _ => None,
        }
    }

    /// The leaf at `pa` that the attribute bits of `raw` describe.
    fn leaf(raw: u64, pa: PhysAddr) -> Result<Entry, DecodeError> {
        let sh = ((raw & SH) >> 8) as u8;
        if sh == SH_RESERVED {
            return Err(DecodeError::ReservedEncoding { field: raw & SH });
        }
        let mem_attr = ((raw & MEM_ATTR) >> 2) as u8;
        if mem_attr_reserved(mem_attr) {
            return Err(DecodeError::ReservedEncoding {
                field: raw & MEM_ATTR,
            });
        }
        let dbm = raw & DBM != 0;
        let write = raw & S2AP_WRITE != 0;
        let mut perms = Perms::empty();
        perms.set(Perms::READ, raw & S2AP_READ != 0);
        perms.set(Perms::WRITE, write || dbm);
        perms.set(Perms::DIRTY, dbm && write);
        perms.set(Perms::EXEC, raw & XN == 0);
        perms.set(Perms::ACCESSED, raw & AF != 0);
        Ok(Entry::Leaf(LeafEntry {
            pa,
            perms,
            mem_type: MemType(mem_attr | sh << 4),
        }))
    }
}

// SAFETY: (1) bit 0 (valid) clear decodes as absent, so 0 does; (2) `decode`
// is a pure function of its arguments; (3) `descriptor::shape` returns tables
// only above Arm level 3 (never at the last level), leaves only at level 3 and
// at levels that hold blocks, which are exactly the geometry's leaf levels,
// with the address masked to the level's size; (4) the encoders set the valid
// and type bits and exactly the attribute bits `leaf` reads back; a table
// entry has no attributes and decodes with every grant; (5) they accept every
// address of the 48-bit output field aligned to the level; (6) the canonical
// set is the one interval `0 .. 2^IPA_BITS`.
unsafe impl<const GRANULE_SHIFT: u32, const IPA_BITS: u32> PagingFormat
    for Stage2<GRANULE_SHIFT, IPA_BITS>
{
    const NAME: &'static str = match GRANULE_SHIFT {
        12 => "aarch64 stage 2, 4 KiB granule",
        14 => "aarch64 stage 2, 16 KiB granule",
        _ => "aarch64 stage 2, 64 KiB granule",
    };

    const GEOMETRY: Geometry = super::granule::geometry(GRANULE_SHIFT, IPA_BITS, Self::DEPTH);

    #[inline]
    fn is_canonical(ipa: VirtAddr) -> bool {
        // Through `GEOMETRY` (whose `va_bits` is `IPA_BITS`), so that using the
        // format evaluates `DEPTH`'s assertion `32 <= IPA_BITS <= 48`: the
        // shift is in range.
        ipa.0 >> Self::GEOMETRY.va_bits() == 0
    }

    fn decode(raw: u64, level: usize) -> Result<Entry, DecodeError> {
        if level >= Self::DEPTH {
            return Err(DecodeError::NoSuchLevel { level });
        }
        match descriptor::shape(raw, GRANULE_SHIFT, Self::DEPTH, level)? {
            Shape::Invalid => Ok(Entry::Absent),
            Shape::Table(_) if raw & TABLE_RES0 != 0 => Err(DecodeError::ReservedBits {
                bits: raw & TABLE_RES0,
            }),
            Shape::Table(table) => Ok(Entry::Table(TableEntry {
                table,
                grants: Perms::GRANTS,
            })),
            Shape::Leaf(pa) => Self::leaf(raw, pa),
        }
    }

    fn encode_table(table: PhysAddr, level: usize) -> Result<u64, EncodeError> {
        descriptor::encode_table(&Self::GEOMETRY, GRANULE_SHIFT, table, level)
    }

    fn encode_leaf(leaf: &LeafEntry, level: usize) -> Result<u64, EncodeError> {
        let base = descriptor::leaf_base(&Self::GEOMETRY, Self::DEPTH, leaf.pa, level)?;
        let perms = leaf.perms;
        let dirty = perms.contains(Perms::DIRTY);
        let write = perms.contains(Perms::WRITE);
        if perms.intersects(Perms::USER | Perms::GLOBAL) || (dirty && !write) {
            return Err(EncodeError::UnsupportedPerms { perms });
        }
        let mem_attr = leaf.mem_type.0 & 0b1111;
        let sh = leaf.mem_type.0 >> 4;
        if leaf.mem_type.0 > 0b11_1111 || sh == SH_RESERVED || mem_attr_reserved(mem_attr) {
            return Err(EncodeError::UnsupportedMemType {
                mem_type: leaf.mem_type,
            });
        }
        let flag = |cond: bool, bit: u64| if cond { bit } else { 0 };
        let mut raw = base;
        raw |= u64::from(mem_attr) << 2 | u64::from(sh) << 8;
        raw |= flag(perms.contains(Perms::READ), S2AP_READ);
        raw |= flag(write, S2AP_WRITE);
        raw |= flag(dirty, DBM);
        raw |= flag(perms.contains(Perms::ACCESSED), AF);
        raw |= flag(!perms.contains(Perms::EXEC), XN_NEVER);
        Ok(raw)
    }
}

#[cfg(test)]
mod tests;
