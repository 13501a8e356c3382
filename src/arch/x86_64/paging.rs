//! x86_64 4-level and 5-level paging (Intel SDM Vol. 3A §4.5, "4-Level Paging
//! and 5-Level Paging"; AMD APM Vol. 2 §5.3).
//!
//! Levels, root first (pagepin level → SDM name → what it may hold):
//!
//! | 4-level | 5-level | table  | entry maps                  |
//! |---------|---------|--------|-----------------------------|
//! |         | 0       | PML5   | a PML4 table                |
//! | 0       | 1       | PML4   | a PDPT                      |
//! | 1       | 2       | PDPT   | a page directory, or 1 GiB  |
//! | 2       | 3       | PD     | a page table, or 2 MiB      |
//! | 3       | 4       | PT     | 4 KiB                       |
//!
//! Entry bits used (all levels unless noted): 0 P, 1 R/W, 2 U/S, 3 PWT,
//! 4 PCD, 5 A, 6 D (leaves), 7 PS (PDPTE, PDE; must be 0 in PML4E and PML5E)
//! or PAT (PTE), 8 G (leaves), 12 PAT (1 GiB and 2 MiB leaves), the address
//! field from bit 12 (4 KiB), 21 (2 MiB) or 30 (1 GiB) up to MAXPHYADDR − 1,
//! and 63 XD. Bits 9-11 and 52-62 (software bits, protection keys) are
//! ignored; bits MAXPHYADDR..=51, and bits 13-20 (2 MiB) or 13-29 (1 GiB) of a
//! huge leaf, are reserved and decode as [`DecodeError::ReservedBits`]. A
//! non-present entry (P = 0) is absent whatever its other bits hold.
//!
//! Assumptions, written down because the hardware makes them configurable:
//! IA32_EFER.NXE = 1 (otherwise bit 63 is reserved), 1 GiB pages supported
//! (CPUID.80000001H:EDX.Page1GB; otherwise PS in a PDPTE is reserved), and
//! MAXPHYADDR given by the type's second parameter (52, the architectural
//! maximum, by default). A present entry is readable; R/W, U/S and XD of table
//! entries restrict everything below them, which the walker applies.

use super::shape;
use crate::table::{
    DecodeError, EncodeError, Entry, Geometry, LeafEntry, MemType, PagingFormat, Perms, PhysAddr,
    TableEntry, VirtAddr,
};

/// x86_64 paging with `LEVELS` levels (4, or 5 with CR4.LA57) on a processor
/// whose MAXPHYADDR is `MAXPHYADDR` (32..=52).
///
/// A mismatched parameter is a compile error where the format is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct X86Paging<const LEVELS: usize, const MAXPHYADDR: u32 = 52>;

/// 4-level paging: 48-bit virtual addresses, PML4 root.
pub type Paging4Level = X86Paging<4>;

/// 5-level paging (CR4.LA57 = 1): 57-bit virtual addresses, PML5 root.
pub type Paging5Level = X86Paging<5>;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
/// PS in PDPTEs and PDEs.
const PS: u64 = 1 << 7;
/// PAT in PTEs (the same bit as PS).
const PAT_4K: u64 = 1 << 7;
const G: u64 = 1 << 8;
/// PAT in 1 GiB and 2 MiB leaves.
const PAT_HUGE: u64 = 1 << 12;
const XD: u64 = 1 << 63;

/// The leaf-only status bits and the [`Perms`] they stand for.
const STATUS_BITS: [(u64, Perms); 3] =
    [(A, Perms::ACCESSED), (D, Perms::DIRTY), (G, Perms::GLOBAL)];

impl<const LEVELS: usize, const MAXPHYADDR: u32> X86Paging<LEVELS, MAXPHYADDR> {
    /// Address bits 12..MAXPHYADDR.
    const ADDR: u64 = shape::addr_mask(MAXPHYADDR);
    /// Address-field bits at and above MAXPHYADDR (up to bit 51).
    const ABOVE_MAXPHYADDR: u64 = shape::above_maxphyaddr(MAXPHYADDR);

    /// The SDM's number of the paging structure at `level`.
    #[inline]
    const fn sdm_level(level: usize) -> usize {
        shape::sdm_level(LEVELS, level)
    }

    /// The grants of a present entry (leaf or table).
    #[inline]
    fn grants(raw: u64) -> Perms {
        let mut grants = Perms::READ;
        grants.set(Perms::WRITE, raw & RW != 0);
        grants.set(Perms::USER, raw & US != 0);
        grants.set(Perms::EXEC, raw & XD == 0);
        grants
    }
}

// SAFETY: (1) P is bit 0, so an all-zero entry is absent; (2) `decode` is a
// pure function of its arguments; (3) it returns tables only above the PT,
// leaves only in PDPTEs, PDEs and PTEs (PS in a PML4E/PML5E is an error), and
// masks a leaf's address to its size; (4) the encoders set exactly the bits
// `decode` reads (always P), and a table entry sets R/W and U/S and clears XD;
// (5) they accept every aligned address below 2^MAXPHYADDR; (6) canonical
// addresses are the two sign-extended halves, each an interval inside one
// 2^va_bits window.
unsafe impl<const LEVELS: usize, const MAXPHYADDR: u32> PagingFormat
    for X86Paging<LEVELS, MAXPHYADDR>
{
    const NAME: &'static str = if LEVELS == 5 {
        "x86_64 5-level"
    } else {
        "x86_64 4-level"
    };

    const GEOMETRY: Geometry = shape::geometry(LEVELS, MAXPHYADDR);

    #[inline]
    fn is_canonical(va: VirtAddr) -> bool {
        va.is_sign_extended(Self::GEOMETRY.va_bits())
    }

    #[inline]
    fn decode(raw: u64, level: usize) -> Result<Entry, DecodeError> {
        if level >= Self::GEOMETRY.depth() {
            return Err(DecodeError::NoSuchLevel { level });
        }
        if raw & P == 0 {
            return Ok(Entry::Absent);
        }
        if raw & Self::ABOVE_MAXPHYADDR != 0 {
            return Err(DecodeError::ReservedBits {
                bits: raw & Self::ABOVE_MAXPHYADDR,
            });
        }
        let sdm_level = Self::sdm_level(level);
        let leaf_shift = match sdm_level {
            1 => 12,
            2 | 3 if raw & PS != 0 => Self::GEOMETRY.shift_at(level),
            2 | 3 => 0,
            // PML4E, PML5E: PS is reserved (SDM: "must be 0").
            _ if raw & PS != 0 => return Err(DecodeError::LeafNotAllowed { level }),
            _ => 0,
        };
        if leaf_shift == 0 {
            return Ok(Entry::Table(TableEntry {
                table: PhysAddr(raw & Self::ADDR),
                grants: Self::grants(raw),
            }));
        }
        let (pat, offset) = if sdm_level == 1 {
            (PAT_4K, 0)
        } else {
            // Bits 13..leaf_shift of a huge leaf are reserved; bit 12 is PAT.
            // `leaf_shift` is the level's shift (21 or 30, below `va_bits <
            // 64`): the shift is in range and the `- 1` does not wrap.
            (PAT_HUGE, (1 << leaf_shift) - 1)
        };
        let reserved = raw & offset & !(PAT_HUGE | 0xfff);
        if reserved != 0 {
            return Err(DecodeError::ReservedBits { bits: reserved });
        }
        let mut perms = Self::grants(raw);
        for (bit, perm) in STATUS_BITS {
            perms.set(perm, raw & bit != 0);
        }
        let mem_type = (u8::from(raw & pat != 0) << 2)
            | (u8::from(raw & PCD != 0) << 1)
            | u8::from(raw & PWT != 0);
        Ok(Entry::Leaf(LeafEntry {
            pa: PhysAddr(raw & Self::ADDR & !offset),
            perms,
            mem_type: MemType(mem_type),
        }))
    }

    fn encode_table(table: PhysAddr, level: usize) -> Result<u64, EncodeError> {
        if !Self::GEOMETRY.holds_tables(level) {
            return Err(EncodeError::NoSuchLevel { level });
        }
        if table.0 & !Self::ADDR != 0 {
            return Err(EncodeError::UnencodableAddress { pa: table });
        }
        Ok(table.0 | P | RW | US)
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
        if !leaf.perms.contains(Perms::READ) {
            return Err(EncodeError::UnsupportedPerms { perms: leaf.perms });
        }
        if leaf.mem_type.0 > 7 {
            return Err(EncodeError::UnsupportedMemType {
                mem_type: leaf.mem_type,
            });
        }
        let huge = Self::sdm_level(level) > 1;
        let mut raw = leaf.pa.0 | P;
        let flag = |cond: bool, bit: u64| if cond { bit } else { 0 };
        raw |= flag(leaf.perms.contains(Perms::WRITE), RW);
        raw |= flag(leaf.perms.contains(Perms::USER), US);
        raw |= flag(!leaf.perms.contains(Perms::EXEC), XD);
        for (bit, perm) in STATUS_BITS {
            raw |= flag(leaf.perms.contains(perm), bit);
        }
        raw |= flag(leaf.mem_type.0 & 1 != 0, PWT);
        raw |= flag(leaf.mem_type.0 & 2 != 0, PCD);
        raw |= flag(
            leaf.mem_type.0 & 4 != 0,
            if huge { PAT_HUGE } else { PAT_4K },
        );
        raw |= flag(huge, PS);
        Ok(raw)
    }
}

#[cfg(test)]
mod tests;
