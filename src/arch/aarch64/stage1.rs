//! VMSAv8-64 stage 1 translation of the EL1&0 (or EL2&0) regime, with 4, 16
//! and 64 KiB granules (Arm ARM DDI 0487, D8.3 "Translation table descriptor
//! formats", D8.4 "Memory access control"; D5.3/D5.4 before edition J).
//!
//! Block and page descriptors (bits 1:0 and the address: [`super::descriptor`]):
//!
//! ```text
//! 4:2   AttrIndx    → MemType bits 2:0          5      NS (ignored)
//! 7:6   AP[2:1]     AP[1] → USER (EL0 access), AP[2] clear → WRITE
//! 9:8   SH          → MemType bits 4:3 (0b01 reserved: an error)
//! 10    AF          → ACCESSED                  11     nG; clear → GLOBAL
//! 50    GP (ignored) 51 DBM                     52     contiguous hint
//! 53    PXN         54 UXN                      55-63  software, PBHA (ignored)
//! ```
//!
//! Table descriptors: 59 PXNTable, 60 UXNTable, 61 APTable[0] (no EL0 access
//! below), 62 APTable[1] (no writes below), 63 NSTable (ignored); bits 11:2 and
//! 58:52 are ignored.
//!
//! How the bits become [`Perms`]:
//!
//! - Every valid leaf is [`Perms::READ`]: the privileged level can always read.
//!   [`Perms::USER`] is AP\[1\]: EL0 may access the page too.
//! - [`Perms::EXEC`] means executable *at the privilege the permissions
//!   describe*: UXN clear for a [`Perms::USER`] leaf, PXN clear for a
//!   privileged one. The encoder sets the other privilege's execute-never bit
//!   (a user page is never executable by the kernel, a kernel page never by
//!   EL0).
//! - [`Perms::WRITE`] is AP\[2\] clear, or DBM set (FEAT_HAFDBS dirty-state
//!   tracking: the hardware clears AP\[2\] on the first write). [`Perms::DIRTY`]
//!   is DBM set with AP\[2\] clear. The encoder writes a writable leaf without
//!   [`Perms::DIRTY`] as AP\[2\] = 0 with DBM clear (writable on every CPU, no
//!   dirty tracking), and refuses [`Perms::DIRTY`] without [`Perms::WRITE`].
//! - Table descriptors take away [`Perms::USER`] (APTable\[0\]),
//!   [`Perms::WRITE`] (APTable\[1\]) and [`Perms::EXEC`] when *either* XNTable
//!   bit is set. The walker's grants cannot tell which privilege a leaf is
//!   executed at, so it errs on the safe side: a leaf reported executable
//!   always is. A user leaf under APTable\[0\] becomes a privileged leaf, so
//!   its [`Perms::EXEC`] is then PXN clear, not UXN clear
//!   ([`limit_leaf`](PagingFormat::limit_leaf); found by the MMU sweep of
//!   `targets/aarch64-virt`, which checks every walk against `AT` and real
//!   instruction fetches).
//!
//! Canonical addresses: the TTBR0 range (`0 .. 2^VA_BITS`, bits above
//! `VA_BITS` zero) or, with `TTBR1 = true`, the TTBR1 range (`2^64 - 2^VA_BITS
//! ..`, bits above all ones). Top-byte-ignore is not modelled: a tagged address
//! is not canonical. Output addresses have 48 bits (no FEAT_LPA/FEAT_LPA2;
//! 52-bit VAs and level −1 are not supported).

use super::descriptor::{self, CONTIGUOUS, Shape};
use super::granule::{arm_level, assert_granule, bits_per_level, contiguous_entries, depth_for};
use super::mem_type::SH_RESERVED;
use crate::table::{
    DecodeError, EncodeError, Entry, Geometry, LeafEntry, MemType, PagingFormat, Perms, PhysAddr,
    TableEntry, VirtAddr,
};

/// Stage 1 translation with a `2^GRANULE_SHIFT`-byte granule
/// ([`GRANULE_4K`](super::GRANULE_4K), [`GRANULE_16K`](super::GRANULE_16K),
/// [`GRANULE_64K`](super::GRANULE_64K)) over `VA_BITS`-bit virtual addresses
/// (`TxSZ = 64 − VA_BITS`), in the TTBR0 range or, with `TTBR1`, the TTBR1
/// range.
///
/// The walk starts at the highest Arm level the input size needs, whose table
/// may have fewer entries than a full one; pagepin level 0 is that start
/// level. `VA_BITS` must be 25..=48 and give a walk of 2 to 4 levels (so
/// 16 KiB needs at least 26 bits and 64 KiB at least 30); anything else is a
/// compile error where the format is used.
///
/// | granule | `VA_BITS` | levels | start level (Arm) | start entries |
/// |---------|-----------|--------|-------------------|---------------|
/// | 4 KiB   | 48        | 4      | 0                 | 512           |
/// | 4 KiB   | 39        | 3      | 1                 | 512           |
/// | 16 KiB  | 48        | 4      | 0                 | 2             |
/// | 16 KiB  | 47        | 3      | 1                 | 2048          |
/// | 64 KiB  | 48        | 3      | 1                 | 64            |
/// | 64 KiB  | 42        | 2      | 2                 | 8192          |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stage1<const GRANULE_SHIFT: u32, const VA_BITS: u32, const TTBR1: bool = false>;

/// 4 KiB granule, 48-bit VAs: 4 levels (Arm 0-3).
pub type Stage1G4K48 = Stage1<12, 48>;
/// 4 KiB granule, 48-bit VAs in the TTBR1 (upper) range.
pub type Stage1G4K48Ttbr1 = Stage1<12, 48, true>;
/// 4 KiB granule, 39-bit VAs: 3 levels (Arm 1-3).
pub type Stage1G4K39 = Stage1<12, 39>;
/// 16 KiB granule, 48-bit VAs: 4 levels, 2 entries at Arm level 0.
pub type Stage1G16K48 = Stage1<14, 48>;
/// 16 KiB granule, 47-bit VAs: 3 levels (Arm 1-3).
pub type Stage1G16K47 = Stage1<14, 47>;
/// 16 KiB granule, 36-bit VAs: 2 levels (Arm 2-3).
pub type Stage1G16K36 = Stage1<14, 36>;
/// 64 KiB granule, 48-bit VAs: 3 levels, 64 entries at Arm level 1.
pub type Stage1G64K48 = Stage1<16, 48>;
/// 64 KiB granule, 42-bit VAs: 2 levels (Arm 2-3).
pub type Stage1G64K42 = Stage1<16, 42>;

/// AttrIndx, bits 4:2.
const ATTR_INDX: u64 = 0b111 << 2;
/// AP[1]: EL0 access.
const AP_EL0: u64 = 1 << 6;
/// AP[2]: read-only.
const AP_RDONLY: u64 = 1 << 7;
/// SH, bits 9:8.
const SH: u64 = 0b11 << 8;
/// AF: the access flag.
const AF: u64 = 1 << 10;
/// nG: not global.
const NG: u64 = 1 << 11;
/// DBM: dirty bit modifier.
const DBM: u64 = 1 << 51;
/// PXN: privileged execute-never.
const PXN: u64 = 1 << 53;
/// UXN: unprivileged execute-never.
const UXN: u64 = 1 << 54;
/// PXNTable.
const PXN_TABLE: u64 = 1 << 59;
/// UXNTable.
const UXN_TABLE: u64 = 1 << 60;
/// APTable[0]: no EL0 access below.
const AP_TABLE_NO_EL0: u64 = 1 << 61;
/// APTable[1]: no writes below.
const AP_TABLE_RDONLY: u64 = 1 << 62;

impl<const GRANULE_SHIFT: u32, const VA_BITS: u32, const TTBR1: bool>
    Stage1<GRANULE_SHIFT, VA_BITS, TTBR1>
{
    /// The number of levels of the walk.
    pub const DEPTH: usize = {
        assert_granule(GRANULE_SHIFT);
        assert!(
            VA_BITS >= 25 && VA_BITS <= 48,
            "stage 1 VA sizes are 25..=48 bits"
        );
        depth_for(GRANULE_SHIFT, VA_BITS, bits_per_level(GRANULE_SHIFT))
    };

    /// The Arm level the walk starts at (TCR_ELx.TxSZ = `64 − VA_BITS` selects
    /// it): pagepin level `l` is Arm level `START_LEVEL + l`.
    pub const START_LEVEL: usize = arm_level(Self::DEPTH, 0);

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
    /// number of entries of its group: the hint says the group's naturally
    /// aligned entries map one contiguous output range with the same
    /// attributes, so one TLB entry may cache them all. It never changes what an
    /// address translates to; [`decode`](PagingFormat::decode) ignores it.
    pub fn contiguous_group(raw: u64, level: usize) -> Option<usize> {
        match Self::decode(raw, level) {
            Ok(Entry::Leaf(_)) if raw & CONTIGUOUS != 0 => Self::contiguous_entries(level),
            _ => None,
        }
    }

    /// The grants a table descriptor leaves to everything below it.
    fn table_grants(raw: u64) -> Perms {
        let mut grants = Perms::GRANTS;
        grants.set(Perms::USER, raw & AP_TABLE_NO_EL0 == 0);
        grants.set(Perms::WRITE, raw & AP_TABLE_RDONLY == 0);
        grants.set(Perms::EXEC, raw & (PXN_TABLE | UXN_TABLE) == 0);
        grants
    }

    /// The leaf at `pa` that the attribute bits of `raw` describe.
    fn leaf(raw: u64, pa: PhysAddr) -> Result<Entry, DecodeError> {
        let sh = ((raw & SH) >> 8) as u8;
        if sh == SH_RESERVED {
            return Err(DecodeError::ReservedEncoding { field: raw & SH });
        }
        let user = raw & AP_EL0 != 0;
        let dbm = raw & DBM != 0;
        let read_only = raw & AP_RDONLY != 0;
        let mut perms = Perms::READ;
        perms.set(Perms::USER, user);
        perms.set(Perms::WRITE, !read_only || dbm);
        perms.set(Perms::DIRTY, dbm && !read_only);
        perms.set(Perms::EXEC, raw & if user { UXN } else { PXN } == 0);
        perms.set(Perms::ACCESSED, raw & AF != 0);
        perms.set(Perms::GLOBAL, raw & NG == 0);
        let attr_indx = ((raw & ATTR_INDX) >> 2) as u8;
        Ok(Entry::Leaf(LeafEntry {
            pa,
            perms,
            mem_type: MemType(attr_indx | sh << 3),
        }))
    }
}

// SAFETY: (1) bit 0 (valid) clear decodes as absent, so 0 does; (2) `decode`
// is a pure function of its arguments; (3) `descriptor::shape` returns tables
// only above Arm level 3 (never at the last level), leaves only at level 3 and
// at levels that hold blocks, which are exactly the geometry's leaf levels,
// with the address masked to the level's size; (4) the encoders set the valid
// and type bits and exactly the attribute bits `leaf` and `table_grants` read
// back (a table entry restricts nothing); (5) they accept every address of the
// 48-bit output field aligned to the level; (6) the canonical set is one
// interval: the bottom or the top `2^VA_BITS` bytes.
unsafe impl<const GRANULE_SHIFT: u32, const VA_BITS: u32, const TTBR1: bool> PagingFormat
    for Stage1<GRANULE_SHIFT, VA_BITS, TTBR1>
{
    const NAME: &'static str = match GRANULE_SHIFT {
        12 => "aarch64 stage 1, 4 KiB granule",
        14 => "aarch64 stage 1, 16 KiB granule",
        _ => "aarch64 stage 1, 64 KiB granule",
    };

    const GEOMETRY: Geometry = super::granule::geometry(GRANULE_SHIFT, VA_BITS, Self::DEPTH);

    #[inline]
    fn is_canonical(va: VirtAddr) -> bool {
        // Through `GEOMETRY` (whose `va_bits` is `VA_BITS`), so that using the
        // format evaluates `DEPTH`'s assertion `25 <= VA_BITS <= 48`: the
        // shifts are in range.
        let va_bits = Self::GEOMETRY.va_bits();
        let upper = va.0 >> va_bits;
        if TTBR1 {
            upper == u64::MAX >> va_bits
        } else {
            upper == 0
        }
    }

    fn decode(raw: u64, level: usize) -> Result<Entry, DecodeError> {
        if level >= Self::DEPTH {
            return Err(DecodeError::NoSuchLevel { level });
        }
        match descriptor::shape(raw, GRANULE_SHIFT, Self::DEPTH, level)? {
            Shape::Invalid => Ok(Entry::Absent),
            Shape::Table(table) => Ok(Entry::Table(TableEntry {
                table,
                grants: Self::table_grants(raw),
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
        if !perms.contains(Perms::READ) || (dirty && !write) {
            return Err(EncodeError::UnsupportedPerms { perms });
        }
        let sh = leaf.mem_type.0 >> 3;
        if leaf.mem_type.0 > 0b11_111 || sh == SH_RESERVED {
            return Err(EncodeError::UnsupportedMemType {
                mem_type: leaf.mem_type,
            });
        }
        let flag = |cond: bool, bit: u64| if cond { bit } else { 0 };
        let user = perms.contains(Perms::USER);
        let no_exec = !perms.contains(Perms::EXEC);
        let mut raw = base;
        raw |= u64::from(leaf.mem_type.0 & 0b111) << 2 | u64::from(sh) << 8;
        raw |= flag(user, AP_EL0);
        raw |= flag(!write, AP_RDONLY);
        raw |= flag(dirty, DBM);
        raw |= flag(perms.contains(Perms::ACCESSED), AF);
        raw |= flag(!perms.contains(Perms::GLOBAL), NG);
        raw |= if user {
            PXN | flag(no_exec, UXN)
        } else {
            UXN | flag(no_exec, PXN)
        };
        Ok(raw)
    }

    /// A user leaf under a table descriptor with APTable\[0\] (no EL0 access
    /// below) is reachable only from EL1, so its [`Perms::EXEC`] (UXN clear:
    /// executable at EL0) no longer says anything: it is executable at EL1 only
    /// if PXN is clear and the leaf does not grant EL0 write access (Arm ARM
    /// D8.4 "Memory access control": memory writable at EL0 is implicitly PXN; whether that looks at
    /// the leaf's AP or at the hierarchical result, a leaf reported executable
    /// then always is).
    #[inline]
    fn limit_leaf(raw: u64, leaf: Perms, grants: Perms) -> Perms {
        let mut perms = leaf.limited_by(grants);
        if leaf.contains(Perms::USER) && !grants.contains(Perms::USER) {
            let el0_writable = raw & AP_RDONLY == 0 || raw & DBM != 0;
            let el1_exec = raw & PXN == 0 && !el0_writable;
            perms.set(Perms::EXEC, el1_exec && grants.contains(Perms::EXEC));
        }
        perms
    }
}

#[cfg(test)]
mod tests;
