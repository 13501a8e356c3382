//! The page-table entry that every RISC-V RV64 translation mode shares (Sv39,
//! Sv48, Sv57 and their G-stage ×4 variants): RISC-V Privileged Architecture,
//! version 20211203 (1.12), §4.4.1 "Addressing and Memory Protection", Figure
//! 4.21 "Sv39 page table entry" (Sv48 and Sv57, §4.5.1 and §4.6.1, differ only
//! in how the PPN splits into fields, which the walk never needs: the PPN is
//! always bits 53:10), with the translation algorithm of §4.3.2 "Virtual
//! Address Translation Process"; Chapter 5 "Svnapot", Chapter 6 "Svpbmt", and
//! §8.5.1 "Guest Physical Address Translation" for the G-stage.
//!
//! ```text
//! bit   0 V      valid; V = 0: the PTE is invalid whatever else it holds
//! bit   1 R      readable      } R = W = X = 0: a pointer to the next level;
//! bit   2 W      writable      } otherwise a leaf. W = 1 with R = 0 is
//! bit   3 X      executable    } reserved (§4.3.1, Table 4.5)
//! bit   4 U      user-mode accessible (reserved in non-leaf PTEs)
//! bit   5 G      global mapping
//! bit   6 A      accessed      (reserved in non-leaf PTEs)
//! bit   7 D      dirty         (reserved in non-leaf PTEs)
//! bits  9:8      RSW, for supervisor software: ignored
//! bits 53:10     PPN: physical address bits 55:12
//! bits 60:54     reserved for future standard use: must be zero
//! bits 62:61     PBMT with Svpbmt (0 PMA, 1 NC, 2 IO, 3 reserved; reserved in
//!                non-leaf PTEs); reserved without it
//! bit  63 N      NAPOT with Svnapot; reserved without it
//! ```
//!
//! A leaf above the last level (a superpage) must have the PPN fields below its
//! level zero: §4.3.2 step 6, "if i > 0 and pte.ppn[i−1:0] ≠ 0, this is a
//! misaligned superpage; stop and raise a page-fault exception". Step 3 raises
//! a page fault for V = 0, for R = 0 with W = 1, and for any reserved bit or
//! encoding; step 4 for a pointer at the last level (i < 0).

use crate::table::{
    DecodeError, EncodeError, Entry, Geometry, LeafEntry, MemType, Perms, PhysAddr, TableEntry,
};

pub(super) const V: u64 = 1 << 0;
pub(super) const R: u64 = 1 << 1;
pub(super) const W: u64 = 1 << 2;
pub(super) const X: u64 = 1 << 3;
pub(super) const U: u64 = 1 << 4;
pub(super) const G: u64 = 1 << 5;
pub(super) const A: u64 = 1 << 6;
pub(super) const D: u64 = 1 << 7;
/// R, W and X: all clear in a pointer to the next level.
pub(super) const RWX: u64 = R | W | X;
/// The PPN field, bits 53:10.
pub(super) const PPN: u64 = ((1 << 44) - 1) << 10;
/// Bits 60:54: reserved for future standard use.
pub(super) const RESERVED: u64 = 0x7f << 54;
/// Bits 62:61: Svpbmt's page-based memory type.
pub(super) const PBMT: u64 = 0b11 << 61;
/// Bit 63: Svnapot's NAPOT bit.
pub(super) const N: u64 = 1 << 63;
/// Physical addresses are 56 bits (a 44-bit PPN of 4 KiB pages).
pub(super) const PA_MASK: u64 = ((1 << 56) - 1) & !0xfff;

/// Svpbmt's PBMT values as [`MemType`]s: 0 = PMA (the physical memory
/// attributes of the region, normally cacheable main memory), 1 = NC
/// (non-cacheable, idempotent, weakly ordered), 2 = IO (non-cacheable,
/// non-idempotent, strongly ordered). 3 is reserved.
pub const PBMT_PMA: MemType = MemType(0);
/// See [`PBMT_PMA`].
pub const PBMT_NC: MemType = MemType(1);
/// See [`PBMT_PMA`].
pub const PBMT_IO: MemType = MemType(2);

/// The physical address a PTE's PPN names.
#[inline]
pub(super) const fn pte_pa(raw: u64) -> u64 {
    // PPN is bits 53:10 and names address bits 55:12.
    ((raw & PPN) >> 10) << 12
}

/// The PPN field holding `pa` (callers check `pa & !PA_MASK == 0`).
#[inline]
pub(super) const fn pa_field(pa: u64) -> u64 {
    (pa >> 12) << 10
}

/// How the two regimes differ in what a PTE means.
#[derive(Debug, Clone, Copy)]
pub(super) struct Regime {
    /// Svpbmt is enabled (menvcfg.PBMTE for VS/S-stage, henvcfg.PBMTE for the
    /// G-stage): bits 62:61 are PBMT, not reserved.
    pub svpbmt: bool,
    /// The G-stage (§8.5.1): every access is a user-mode access, so a leaf
    /// with U = 0 grants nothing; U and G are not reported; the encoder sets U.
    pub gstage: bool,
}

/// Decodes `raw` at `level` of `geometry` (which the caller has checked
/// exists).
pub(super) fn decode(
    geometry: &Geometry,
    regime: Regime,
    raw: u64,
    level: usize,
) -> Result<Entry, DecodeError> {
    if raw & V == 0 {
        return Ok(Entry::Absent);
    }
    // §4.3.2 step 3: reserved bits (60:54 always; 62:61 without Svpbmt; 63
    // without Svnapot, which pagepin does not decode: see `Sv::napot_leaf`).
    let reserved = raw & (RESERVED | N | if regime.svpbmt { 0 } else { PBMT });
    if reserved != 0 {
        return Err(DecodeError::ReservedBits { bits: reserved });
    }
    let rwx = raw & RWX;
    // §4.3.2 step 3 and Table 4.5: W without R is reserved.
    if rwx & (R | W) == W {
        return Err(DecodeError::ReservedEncoding { field: rwx });
    }
    if rwx == 0 {
        // §4.3.2 step 4: a pointer at the last level is a page fault.
        if !geometry.holds_tables(level) {
            return Err(DecodeError::TableNotAllowed { level });
        }
        // §4.4.1: "For non-leaf PTEs, the D, A, and U bits are reserved";
        // Chapter 6: PBMT is reserved in non-leaf PTEs.
        let reserved = raw & (D | A | U | PBMT);
        if reserved != 0 {
            return Err(DecodeError::ReservedBits { bits: reserved });
        }
        // No hierarchical permissions: a pointer restricts nothing.
        return Ok(Entry::Table(TableEntry {
            table: PhysAddr(pte_pa(raw)),
            grants: Perms::GRANTS,
        }));
    }
    if !geometry.holds_leaves(level) {
        // Every level of every RISC-V mode holds leaves; kept for the contract.
        return Err(DecodeError::LeafNotAllowed { level });
    }
    // §4.3.2 step 6: a superpage's PPN fields below its level must be zero.
    // `shift_at(level)` is 12 + 9·k (or 11 more bits at a G-stage root,
    // which is never below 12), below `va_bits < 64`.
    let offset = (1u64 << geometry.shift_at(level)) - 1;
    let misaligned = raw & PPN & pa_field(offset);
    if misaligned != 0 {
        return Err(DecodeError::ReservedBits { bits: misaligned });
    }
    let pbmt = (raw & PBMT) >> 61;
    if pbmt == 3 {
        return Err(DecodeError::ReservedEncoding { field: raw & PBMT });
    }
    let mut perms = Perms::empty();
    // §8.5.1: G-stage accesses are user-mode accesses; U = 0 faults them all.
    let accessible = !regime.gstage || raw & U != 0;
    perms.set(Perms::READ, accessible && raw & R != 0);
    perms.set(Perms::WRITE, accessible && raw & W != 0);
    perms.set(Perms::EXEC, accessible && raw & X != 0);
    perms.set(Perms::USER, !regime.gstage && raw & U != 0);
    perms.set(Perms::GLOBAL, !regime.gstage && raw & G != 0);
    perms.set(Perms::ACCESSED, raw & A != 0);
    perms.set(Perms::DIRTY, raw & D != 0);
    Ok(Entry::Leaf(LeafEntry {
        pa: PhysAddr(pte_pa(raw)),
        perms,
        mem_type: MemType(pbmt as u8),
    }))
}

/// The pointer PTE at `level` to the table at `table`.
pub(super) fn encode_table(
    geometry: &Geometry,
    table: PhysAddr,
    level: usize,
) -> Result<u64, EncodeError> {
    if !geometry.holds_tables(level) {
        return Err(EncodeError::NoSuchLevel { level });
    }
    if table.0 & !PA_MASK != 0 {
        return Err(EncodeError::UnencodableAddress { pa: table });
    }
    Ok(pa_field(table.0) | V)
}

/// The leaf PTE at `level` for `leaf`.
pub(super) fn encode_leaf(
    geometry: &Geometry,
    regime: Regime,
    leaf: &LeafEntry,
    level: usize,
) -> Result<u64, EncodeError> {
    if level >= geometry.depth() {
        return Err(EncodeError::NoSuchLevel { level });
    }
    let size = geometry
        .leaf_size(level)
        .ok_or(EncodeError::LeafNotAllowed { level })?;
    // `size` is a leaf size (a power of two, at least 4 KiB): no wrap.
    if leaf.pa.0 & !PA_MASK != 0 || leaf.pa.0 & (size - 1) != 0 {
        return Err(EncodeError::UnencodableAddress { pa: leaf.pa });
    }
    let perms = leaf.perms;
    let rights = perms & (Perms::READ | Perms::WRITE | Perms::EXEC);
    let write_only = perms.contains(Perms::WRITE) && !perms.contains(Perms::READ);
    let stage1_only = regime.gstage && perms.intersects(Perms::USER | Perms::GLOBAL);
    if rights.is_empty() || write_only || stage1_only {
        return Err(EncodeError::UnsupportedPerms { perms });
    }
    let mem_type = leaf.mem_type.0;
    if mem_type > 2 || (mem_type != 0 && !regime.svpbmt) {
        return Err(EncodeError::UnsupportedMemType {
            mem_type: leaf.mem_type,
        });
    }
    let flag = |cond: bool, bit: u64| if cond { bit } else { 0 };
    let mut raw = pa_field(leaf.pa.0) | V;
    raw |= flag(perms.contains(Perms::READ), R);
    raw |= flag(perms.contains(Perms::WRITE), W);
    raw |= flag(perms.contains(Perms::EXEC), X);
    raw |= flag(regime.gstage || perms.contains(Perms::USER), U);
    raw |= flag(perms.contains(Perms::GLOBAL), G);
    raw |= flag(perms.contains(Perms::ACCESSED), A);
    raw |= flag(perms.contains(Perms::DIRTY), D);
    raw |= u64::from(mem_type) << 61;
    Ok(raw)
}
