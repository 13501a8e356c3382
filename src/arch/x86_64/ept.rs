//! Intel EPT (extended page tables): the second stage of VMX, guest-physical to
//! host-physical, with 4-level and 5-level walks (Intel SDM Vol. 3C §29.3.2
//! "EPT Translation Mechanism", Tables 29-1 to 29-8 "Format of an EPT ...
//! Entry"; §28.3 in editions before 2023).
//!
//! Levels, root first (pagepin level → SDM name → what it may hold):
//!
//! | 4-level | 5-level | table      | entry maps                  |
//! |---------|---------|------------|-----------------------------|
//! |         | 0       | EPT PML5   | an EPT PML4 table           |
//! | 0       | 1       | EPT PML4   | an EPT PDPT                 |
//! | 1       | 2       | EPT PDPT   | an EPT page directory, or 1 GiB |
//! | 2       | 3       | EPT PD     | an EPT page table, or 2 MiB |
//! | 3       | 4       | EPT PT     | 4 KiB                       |
//!
//! Entry bits: 0 read, 1 write, 2 execute (for supervisor-mode linear
//! addresses when mode-based execute control is on), 5:3 memory type and 6
//! ignore-PAT (leaves; reserved in table entries), 7 leaf (PDPTE, PDE;
//! reserved in PML4E and PML5E, ignored in PTEs), 8 accessed, 9 dirty
//! (leaves), 10 user-mode execute (ignored here: mode-based execute control
//! is not modelled), address bits 12 (4 KiB), 21 (2 MiB) or 30 (1 GiB) up to
//! MAXPHYADDR − 1; bits 11 and 52-63 (verify-guest-paging, paging-write,
//! supervisor shadow stack, suppress #VE, software) are ignored.
//!
//! An entry is present when any of bits 2:0 is set; a non-present entry is
//! absent whatever else it holds. Decoding fails with a typed error where the
//! processor reports an EPT misconfiguration: write without read (bits 2:0 =
//! `010` or `110`, [`DecodeError::ReservedEncoding`]), a reserved memory type
//! (2, 3 or 7, [`DecodeError::ReservedEncoding`]), reserved bits set
//! ([`DecodeError::ReservedBits`]: bits 7:3 of a PML4E/PML5E — bit 7 as
//! [`DecodeError::LeafNotAllowed`] —, bits 6:3 of a table-pointing PDPTE/PDE,
//! bits 29:12 or 20:12 of a 1 GiB or 2 MiB leaf, address bits at or above
//! MAXPHYADDR).
//!
//! Assumptions, because the hardware makes them configurable: execute-only
//! translations are supported (IA32_VMX_EPT_VPID_CAP bit 0), as are 1 GiB
//! leaves (bit 17); accessed and dirty flags are on (EPTP bit 6) — with them off
//! bits 8 and 9 are ignored by the processor but still decoded here.
//!
//! [`Perms`] are [`Perms::READ`], [`Perms::WRITE`], [`Perms::EXEC`],
//! [`Perms::ACCESSED`] and [`Perms::DIRTY`]; the R/W/X bits of table entries
//! restrict everything below them. EPT has neither user nor global
//! translations: [`Perms::USER`] and [`Perms::GLOBAL`] are never decoded and the
//! encoder refuses them. The [`MemType`] of a leaf is `EPT memory type | ignore
//! PAT << 3` (0..=15).
//!
//! Guest-physical addresses are the walk's "virtual" addresses: canonical means
//! below 2^48 (4-level) or 2^57 (5-level).

use super::shape;
use crate::table::{
    DecodeError, EncodeError, Entry, Geometry, LeafEntry, MemType, PagingFormat, Perms, PhysAddr,
    TableEntry, VirtAddr,
};

/// EPT with `LEVELS` levels (4, or 5 with a 5-level EPTP) on a processor whose
/// MAXPHYADDR is `MAXPHYADDR` (32..=52). A mismatched parameter is a compile
/// error where the format is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ept<const LEVELS: usize, const MAXPHYADDR: u32 = 52>;

/// 4-level EPT: 48-bit guest-physical addresses.
pub type Ept4Level = Ept<4>;

/// 5-level EPT: 57-bit guest-physical addresses.
pub type Ept5Level = Ept<5>;

const READ: u64 = 1 << 0;
const WRITE: u64 = 1 << 1;
const EXEC: u64 = 1 << 2;
/// Bits 2:0: the access rights; any of them set makes the entry present.
const RWX: u64 = READ | WRITE | EXEC;
/// Bits 5:3 of a leaf: the EPT memory type.
const MEM_TYPE: u64 = 0b111 << 3;
/// Bit 6 of a leaf: ignore PAT.
const IGNORE_PAT: u64 = 1 << 6;
/// Bit 7 of a PDPTE or PDE: the entry maps a page.
const LEAF: u64 = 1 << 7;
const ACCESSED: u64 = 1 << 8;
const DIRTY: u64 = 1 << 9;

/// Whether `mem_type` (0..=7) is a reserved EPT memory type: 2, 3 and 7 (0 UC,
/// 1 WC, 4 WT, 5 WP, 6 WB).
const fn mem_type_reserved(mem_type: u8) -> bool {
    matches!(mem_type, 2 | 3 | 7)
}

impl<const LEVELS: usize, const MAXPHYADDR: u32> Ept<LEVELS, MAXPHYADDR> {
    /// Address bits 12..MAXPHYADDR.
    const ADDR: u64 = shape::addr_mask(MAXPHYADDR);
    /// Address-field bits at and above MAXPHYADDR (up to bit 51).
    const ABOVE_MAXPHYADDR: u64 = shape::above_maxphyaddr(MAXPHYADDR);

    /// The SDM's number of the paging structure at `level`.
    #[inline]
    const fn sdm_level(level: usize) -> usize {
        shape::sdm_level(LEVELS, level)
    }

    /// The access rights of a present entry.
    #[inline]
    fn rights(raw: u64) -> Perms {
        let mut perms = Perms::empty();
        perms.set(Perms::READ, raw & READ != 0);
        perms.set(Perms::WRITE, raw & WRITE != 0);
        perms.set(Perms::EXEC, raw & EXEC != 0);
        perms
    }

    /// `Err(ReservedBits)` unless `bits` is 0.
    #[inline]
    fn check_reserved(bits: u64) -> Result<(), DecodeError> {
        if bits == 0 {
            Ok(())
        } else {
            Err(DecodeError::ReservedBits { bits })
        }
    }
}

// SAFETY: (1) bits 2:0 clear decode as absent, so 0 does; (2) `decode` is a
// pure function of its arguments; (3) it returns tables only above the EPT PT,
// leaves only in PDPTEs, PDEs and PTEs (bit 7 in a PML4E/PML5E is an error),
// and masks a leaf's address to its size; (4) the encoders set exactly the bits
// `decode` reads; a table entry sets R, W and X (restricting nothing), and
// encoded entries have R, W or X set, so they are never zero; (5) they accept
// every aligned address below 2^MAXPHYADDR; (6) the canonical set is the one
// interval 0..2^va_bits.
unsafe impl<const LEVELS: usize, const MAXPHYADDR: u32> PagingFormat for Ept<LEVELS, MAXPHYADDR> {
    const NAME: &'static str = if LEVELS == 5 {
        "x86_64 EPT 5-level"
    } else {
        "x86_64 EPT 4-level"
    };

    const GEOMETRY: Geometry = shape::geometry(LEVELS, MAXPHYADDR);

    #[inline]
    fn is_canonical(gpa: VirtAddr) -> bool {
        gpa.0 >> Self::GEOMETRY.va_bits() == 0
    }

    fn decode(raw: u64, level: usize) -> Result<Entry, DecodeError> {
        if level >= Self::GEOMETRY.depth() {
            return Err(DecodeError::NoSuchLevel { level });
        }
        if raw & RWX == 0 {
            return Ok(Entry::Absent);
        }
        if raw & (READ | WRITE) == WRITE {
            return Err(DecodeError::ReservedEncoding { field: raw & RWX });
        }
        Self::check_reserved(raw & Self::ABOVE_MAXPHYADDR)?;
        let leaf_shift = match Self::sdm_level(level) {
            1 => 12,
            2 | 3 if raw & LEAF != 0 => Self::GEOMETRY.shift_at(level),
            2 | 3 => {
                // Bits 6:3 of an entry referencing a table are reserved.
                Self::check_reserved(raw & (MEM_TYPE | IGNORE_PAT))?;
                0
            }
            // EPT PML4E, PML5E: bits 7:3 are reserved; bit 7 would be a leaf.
            _ if raw & LEAF != 0 => return Err(DecodeError::LeafNotAllowed { level }),
            _ => {
                Self::check_reserved(raw & (MEM_TYPE | IGNORE_PAT))?;
                0
            }
        };
        if leaf_shift == 0 {
            return Ok(Entry::Table(TableEntry {
                table: PhysAddr(raw & Self::ADDR),
                // R/W/X restrict what is below; there is no user distinction.
                grants: Self::rights(raw) | Perms::USER,
            }));
        }
        // `leaf_shift` is 12 or a level's shift (below `va_bits < 64`), and
        // not 0 here: the shift is in range and the `- 1` does not wrap.
        let offset = (1u64 << leaf_shift) - 1;
        Self::check_reserved(raw & offset & !0xfff)?;
        let mem_type = ((raw & MEM_TYPE) >> 3) as u8;
        if mem_type_reserved(mem_type) {
            return Err(DecodeError::ReservedEncoding {
                field: raw & MEM_TYPE,
            });
        }
        let mut perms = Self::rights(raw);
        perms.set(Perms::ACCESSED, raw & ACCESSED != 0);
        perms.set(Perms::DIRTY, raw & DIRTY != 0);
        Ok(Entry::Leaf(LeafEntry {
            pa: PhysAddr(raw & Self::ADDR & !offset),
            perms,
            mem_type: MemType(mem_type | u8::from(raw & IGNORE_PAT != 0) << 3),
        }))
    }

    fn encode_table(table: PhysAddr, level: usize) -> Result<u64, EncodeError> {
        if !Self::GEOMETRY.holds_tables(level) {
            return Err(EncodeError::NoSuchLevel { level });
        }
        if table.0 & !Self::ADDR != 0 {
            return Err(EncodeError::UnencodableAddress { pa: table });
        }
        Ok(table.0 | RWX)
    }

    fn encode_leaf(leaf: &LeafEntry, level: usize) -> Result<u64, EncodeError> {
        if level >= Self::GEOMETRY.depth() {
            return Err(EncodeError::NoSuchLevel { level });
        }
        let size = Self::GEOMETRY
            .leaf_size(level)
            .ok_or(EncodeError::LeafNotAllowed { level })?;
        // `size` is a leaf size (a power of two, at least 4 KiB): no wrap.
        if leaf.pa.0 & !Self::ADDR != 0 || leaf.pa.0 & (size - 1) != 0 {
            return Err(EncodeError::UnencodableAddress { pa: leaf.pa });
        }
        let perms = leaf.perms;
        let rights = perms & (Perms::READ | Perms::WRITE | Perms::EXEC);
        let write_only = perms.contains(Perms::WRITE) && !perms.contains(Perms::READ);
        if rights.is_empty() || write_only || perms.intersects(Perms::USER | Perms::GLOBAL) {
            return Err(EncodeError::UnsupportedPerms { perms });
        }
        let mem_type = leaf.mem_type.0;
        if mem_type > 0b1111 || mem_type_reserved(mem_type & 0b111) {
            return Err(EncodeError::UnsupportedMemType {
                mem_type: leaf.mem_type,
            });
        }
        let flag = |cond: bool, bit: u64| if cond { bit } else { 0 };
        let mut raw = leaf.pa.0;
        raw |= flag(perms.contains(Perms::READ), READ);
        raw |= flag(perms.contains(Perms::WRITE), WRITE);
        raw |= flag(perms.contains(Perms::EXEC), EXEC);
        raw |= u64::from(mem_type & 0b111) << 3;
        raw |= flag(mem_type & 0b1000 != 0, IGNORE_PAT);
        raw |= flag(Self::sdm_level(level) > 1, LEAF);
        raw |= flag(perms.contains(Perms::ACCESSED), ACCESSED);
        raw |= flag(perms.contains(Perms::DIRTY), DIRTY);
        Ok(raw)
    }
}

#[cfg(test)]
mod tests;
