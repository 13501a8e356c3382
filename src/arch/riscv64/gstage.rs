//! The RISC-V hypervisor extension's G-stage (guest-physical → supervisor
//! physical): Sv39x4, Sv48x4 and Sv57x4 (RISC-V Privileged Architecture
//! 20211203, §8.5.1 "Guest Physical Address Translation", §8.2.10
//! "Hypervisor Guest Address Translation and Protection Register (hgatp)").
//!
//! §8.5.1: "the virtual-memory schemes Sv32x4, Sv39x4, Sv48x4, and Sv57x4 are
//! defined ... identical to Sv32, Sv39, Sv48, and Sv57, respectively, except
//! for the following differences: 1. The guest physical address is widened by
//! 2 bits to 34, 41, 50, or 59 bits, respectively. 2. The root page table is
//! 16 KiB instead of 4 KiB, and bits 1:0 of hgatp.PPN must be zero; the
//! extra two index bits select among four concatenated 4 KiB tables."
//! Guest-physical addresses are zero-extended: bits 63:41 (63:50, 63:59) must
//! be zero, or a guest-page fault occurs.
//!
//! | Sv39x4 | Sv48x4 | Sv57x4 | entries | leaf size |
//! |--------|--------|--------|---------|-----------|
//! |        |        | 0      | 2048    | 256 TiB   |
//! |        | 0      | 1      | 2048/512| 512 GiB   |
//! | 0      | 1      | 2      | 2048/512| 1 GiB     |
//! | 1      | 2      | 3      | 512     | 2 MiB     |
//! | 2      | 3      | 4      | 512     | 4 KiB     |
//!
//! (The root, level 0, has 2048 entries; every other table 512.) The root is
//! one 16 KiB-aligned block of four tables: build it with
//! [`TableBuilder::with_root`](crate::table::TableBuilder::with_root).
//!
//! The PTE is the one of [`super::pte`], read as §8.5.1 says: "all G-stage
//! translations are treated as U-mode accesses", so a leaf must have U = 1 to
//! be usable at all. pagepin's [`Perms`] for a G-stage leaf are R, W and X
//! when U = 1, and none when U = 0 (every access faults; A and D are still
//! reported); [`Perms::USER`] is never reported, and the encoder refuses it and
//! sets U on every leaf itself. The G bit "is not currently used by G-stage
//! translation; software should clear it": it is ignored, [`Perms::GLOBAL`] is
//! never reported and the encoder refuses it. Svpbmt applies with
//! henvcfg.PBMTE (the `SVPBMT` parameter). Svnapot NAPOT leaves are refused as
//! in [`super::Sv`].

use super::pte::{self, Regime};
use super::sv::geometry;
use crate::table::{
    DecodeError, EncodeError, Entry, Geometry, LeafEntry, PagingFormat, PhysAddr, VirtAddr,
};

/// The G-stage of `LEVELS` levels (3: Sv39x4, 4: Sv48x4, 5: Sv57x4), with
/// henvcfg.PBMTE = 1 when `SVPBMT` is true. Any other `LEVELS` is a compile
/// error where the format is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GStage<const LEVELS: usize, const SVPBMT: bool = false>;

/// Sv39x4: 41-bit guest-physical addresses, 3 levels (hgatp.MODE = 8).
pub type Sv39x4 = GStage<3>;
/// Sv48x4: 50-bit guest-physical addresses, 4 levels (hgatp.MODE = 9).
pub type Sv48x4 = GStage<4>;
/// Sv57x4: 59-bit guest-physical addresses, 5 levels (hgatp.MODE = 10).
pub type Sv57x4 = GStage<5>;

impl<const LEVELS: usize, const SVPBMT: bool> GStage<LEVELS, SVPBMT> {
    const REGIME: Regime = Regime {
        svpbmt: SVPBMT,
        gstage: true,
    };

    /// The root is four concatenated 4 KiB tables.
    pub const ROOT_TABLES: usize = 4;

    /// The root's size and alignment in bytes: 16 KiB.
    pub const ROOT_BYTES: u64 = 16 << 10;

    /// hgatp.MODE for this format: 8 (Sv39x4), 9 (Sv48x4) or 10 (Sv57x4).
    pub const HGATP_MODE: u64 = {
        assert!(LEVELS >= 3 && LEVELS <= 5, "Sv39x4, Sv48x4 or Sv57x4");
        LEVELS as u64 + 5
    };

    /// The hgatp value selecting this format with the root at `root` and
    /// virtual-machine ID `vmid` (14 bits, VMIDLEN ≤ 14): MODE in bits 63:60,
    /// VMID in 57:44, the root's PPN in 43:0. `None` if `root` is not 16 KiB
    /// aligned ("bits 1:0 of hgatp.PPN must be zero"), not below 2^56, or
    /// `vmid` does not fit.
    pub const fn hgatp(root: PhysAddr, vmid: u16) -> Option<u64> {
        if root.0 & (Self::ROOT_BYTES - 1) != 0 || root.0 >> 56 != 0 || vmid >> 14 != 0 {
            return None;
        }
        Some(Self::HGATP_MODE << 60 | (vmid as u64) << 44 | root.0 >> 12)
    }
}

// SAFETY: as for `Sv` (the same PTE, decoded and encoded by `pte`), with
// (3) the root level indexing 11 bits (2048 entries, which `with_root`
// checks are reachable) and (6) the canonical set being the one interval
// `0 .. 2^va_bits`. (4) holds because the encoder sets U on every leaf, so
// the R/W/X it writes are decoded back.
unsafe impl<const LEVELS: usize, const SVPBMT: bool> PagingFormat for GStage<LEVELS, SVPBMT> {
    const NAME: &'static str = match (LEVELS, SVPBMT) {
        (3, false) => "riscv64 G-stage Sv39x4",
        (4, false) => "riscv64 G-stage Sv48x4",
        (5, false) => "riscv64 G-stage Sv57x4",
        (3, true) => "riscv64 G-stage Sv39x4 + Svpbmt",
        (4, true) => "riscv64 G-stage Sv48x4 + Svpbmt",
        _ => "riscv64 G-stage Sv57x4 + Svpbmt",
    };

    const GEOMETRY: Geometry = geometry(LEVELS, 2);

    #[inline]
    fn is_canonical(gpa: VirtAddr) -> bool {
        gpa.0 >> Self::GEOMETRY.va_bits() == 0
    }

    #[inline]
    fn decode(raw: u64, level: usize) -> Result<Entry, DecodeError> {
        if level >= Self::GEOMETRY.depth() {
            return Err(DecodeError::NoSuchLevel { level });
        }
        pte::decode(&Self::GEOMETRY, Self::REGIME, raw, level)
    }

    fn encode_table(table: PhysAddr, level: usize) -> Result<u64, EncodeError> {
        pte::encode_table(&Self::GEOMETRY, table, level)
    }

    fn encode_leaf(leaf: &LeafEntry, level: usize) -> Result<u64, EncodeError> {
        pte::encode_leaf(&Self::GEOMETRY, Self::REGIME, leaf, level)
    }
}

#[cfg(test)]
mod tests;
