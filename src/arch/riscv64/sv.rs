//! RISC-V supervisor paging for RV64: Sv39, Sv48 and Sv57 (RISC-V Privileged
//! Architecture 20211203, §4.4 "Sv39: Page-Based 39-bit Virtual-Memory
//! System", §4.5 "Sv48", §4.6 "Sv57"; the entry: [`super::pte`]). The same
//! formats serve the VS-stage of a guest (vsatp), which has the same layout.
//!
//! Levels, root first (pagepin level → the spec's `i` and VPN field → leaf):
//!
//! | Sv39 | Sv48 | Sv57 | spec `i` | VPN field | leaf size          |
//! |------|------|------|----------|-----------|--------------------|
//! |      |      | 0    | 4        | VPN\[4\]  | 256 TiB petapage   |
//! |      | 0    | 1    | 3        | VPN\[3\]  | 512 GiB terapage   |
//! | 0    | 1    | 2    | 2        | VPN\[2\]  | 1 GiB gigapage     |
//! | 1    | 2    | 3    | 1        | VPN\[1\]  | 2 MiB megapage     |
//! | 2    | 3    | 4    | 0        | VPN\[0\]  | 4 KiB page         |
//!
//! Every VPN field is 9 bits (512 eight-byte PTEs per 4 KiB table), and "any
//! level of the page table may be a leaf PTE" (§4.4.1, §4.5.1, §4.6.1). The
//! PPN is 44 bits in every mode (Sv39: PPN\[2\] is 26 bits, Sv48: PPN\[3\] 17
//! bits, Sv57: PPN\[4\] 8 bits): 56-bit physical addresses.
//!
//! Canonical addresses (§4.4.1): "instruction fetch addresses and load and
//! store effective addresses, which are 64 bits, must have bits 63–39 all
//! equal to bit 38, or else a page-fault exception will occur" (bit 47 for
//! Sv48, bit 56 for Sv57).
//!
//! [`Perms`]: V = 0 is absent; R, W, X → [`Perms::READ`], [`Perms::WRITE`],
//! [`Perms::EXEC`]; U → [`Perms::USER`]; G → [`Perms::GLOBAL`] (of the leaf
//! only: a G bit in a pointer, which makes everything below global, is not
//! propagated); A, D → [`Perms::ACCESSED`], [`Perms::DIRTY`]. Pointers carry
//! no permissions: RISC-V has no hierarchical permissions. SUM and MXR
//! (sstatus) change what the supervisor may access; they are not modelled.
//! [`MemType`] is Svpbmt's PBMT (0 PMA, 1 NC, 2 IO) with the `SVPBMT`
//! parameter, and always 0 without it.
//!
//! Decoding errors are the hart's page faults: reserved bits 60:54, bit 63
//! (N) and, without Svpbmt, bits 62:61 ([`DecodeError::ReservedBits`]); W
//! without R and PBMT = 3 ([`DecodeError::ReservedEncoding`]); D, A, U or PBMT
//! set in a pointer and a misaligned superpage's low PPN bits
//! ([`DecodeError::ReservedBits`]); a pointer at the last level
//! ([`DecodeError::TableNotAllowed`]).
//!
//! **Svnapot** (Chapter 5): a NAPOT leaf (N = 1, PPN\[0\]\[3:0\] = `1000`)
//! maps 64 KiB, and each of the 16 PTEs that software writes for it translates
//! its own 4 KiB page *by the virtual address*: the PA is the PPN with its
//! low four bits replaced by VPN\[0\]\[3:0\]. [`PagingFormat::decode`] sees only
//! the raw entry and its level, not the address, so it cannot say which page
//! a NAPOT PTE maps, and refuses bit 63 as [`DecodeError::ReservedBits`] (as a
//! hart without Svnapot does): GUP-fast stops there with a typed error and
//! never pins a wrong page. [`Sv::napot_leaf`] decodes such a PTE for a given
//! address, for a kernel's slow path. (A `decode` that took the entry's index
//! would let the walker handle them; see the module docs of
//! [`crate::arch::riscv64`].)

use super::pte::{self, N, PPN, R, RWX, Regime, V, W};
use crate::table::{
    DecodeError, EncodeError, Entry, Geometry, LeafEntry, LevelShape, PagingFormat, PhysAddr,
    VirtAddr,
};

/// Supervisor paging of `LEVELS` levels (3: Sv39, 4: Sv48, 5: Sv57), with
/// Svpbmt enabled (menvcfg.PBMTE = 1) when `SVPBMT` is true. Any other
/// `LEVELS` is a compile error where the format is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sv<const LEVELS: usize, const SVPBMT: bool = false>;

/// Sv39: 3 levels, 39-bit virtual addresses (satp.MODE = 8).
pub type Sv39 = Sv<3>;
/// Sv48: 4 levels, 48-bit virtual addresses (satp.MODE = 9).
pub type Sv48 = Sv<4>;
/// Sv57: 5 levels, 57-bit virtual addresses (satp.MODE = 10).
pub type Sv57 = Sv<5>;

/// The geometry of `levels` levels of 9 index bits over 4 KiB pages, leaves
/// at every level; the root indexes `root_extra` more bits (the G-stage's 2).
///
/// # Panics
///
/// Unless `levels` is 3, 4 or 5 (a compile error in a `const`).
pub(super) const fn geometry(levels: usize, root_extra: u32) -> Geometry {
    assert!(
        levels >= 3 && levels <= 5,
        "RV64 translation modes have 3, 4 or 5 levels"
    );
    let root = LevelShape::leaves(9 + root_extra);
    let rest = LevelShape::leaves(9);
    match levels {
        3 => Geometry::new(12, &[root, rest, rest]),
        4 => Geometry::new(12, &[root, rest, rest, rest]),
        _ => Geometry::new(12, &[root, rest, rest, rest, rest]),
    }
}

/// A 64 KiB NAPOT leaf, decoded for one virtual address by [`Sv::napot_leaf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NapotLeaf {
    /// The 64 KiB block (its first address, 64 KiB aligned), with the leaf's
    /// permissions and memory type.
    pub block: LeafEntry,
    /// The 4 KiB page the address translates to: `block.pa` with bits 15:12
    /// taken from the address.
    pub page: PhysAddr,
}

impl<const LEVELS: usize, const SVPBMT: bool> Sv<LEVELS, SVPBMT> {
    const REGIME: Regime = Regime {
        svpbmt: SVPBMT,
        gstage: false,
    };

    /// satp.MODE for this format: 8 (Sv39), 9 (Sv48) or 10 (Sv57).
    pub const SATP_MODE: u64 = {
        assert!(LEVELS >= 3 && LEVELS <= 5, "Sv39, Sv48 or Sv57");
        LEVELS as u64 + 5
    };

    /// The satp value that selects this format with the root table at `root`
    /// (4 KiB aligned) and address-space ID `asid` (16 bits): MODE in bits
    /// 63:60, ASID in 59:44, the root's PPN in 43:0 (§4.1.11 "Supervisor
    /// Address Translation and Protection (satp) Register").
    pub const fn satp(root: PhysAddr, asid: u16) -> u64 {
        Self::SATP_MODE << 60 | (asid as u64) << 44 | (root.0 >> 12) & ((1 << 44) - 1)
    }

    /// The size of a Svnapot NAPOT leaf: 64 KiB (`napot_bits` = 4, the only
    /// size Chapter 5 defines).
    pub const NAPOT_SIZE: u64 = 64 << 10;

    /// Decodes a Svnapot leaf (N = 1) at the last level, as the hart
    /// translates `va` through it. `Ok(None)` if `raw` is not a valid NAPOT
    /// leaf candidate (V = 0 or N = 0: use [`decode`](PagingFormat::decode)).
    ///
    /// # Errors
    ///
    /// [`DecodeError::NoSuchLevel`] past the last level;
    /// [`DecodeError::ReservedEncoding`] with N and the PPN's low four bits
    /// when N is set anywhere but in a last-level leaf, or PPN\[0\]\[3:0\] is
    /// not `1000` (Chapter 5, Table 5.1: every other encoding is reserved);
    /// the errors of `decode` for the rest of the entry.
    pub fn napot_leaf(
        raw: u64,
        level: usize,
        va: VirtAddr,
    ) -> Result<Option<NapotLeaf>, DecodeError> {
        if level >= LEVELS {
            return Err(DecodeError::NoSuchLevel { level });
        }
        if raw & V == 0 || raw & N == 0 {
            return Ok(None);
        }
        let napot_field = N | 0xf << 10;
        let last = level + 1 == LEVELS;
        let leaf = raw & RWX != 0 && raw & (R | W) != W;
        if !last || !leaf || (raw >> 10) & 0xf != 0b1000 {
            return Err(DecodeError::ReservedEncoding {
                field: raw & napot_field,
            });
        }
        match Self::decode(raw & !napot_field, level)? {
            Entry::Leaf(mut block) => {
                block.pa = PhysAddr(block.pa.0 & !(Self::NAPOT_SIZE - 1));
                let page = PhysAddr(block.pa.0 | va.0 & (Self::NAPOT_SIZE - 1) & !0xfff);
                Ok(Some(NapotLeaf { block, page }))
            }
            // A leaf stays a leaf with N and PPN[3:0] cleared.
            _ => Err(DecodeError::ReservedEncoding {
                field: raw & napot_field,
            }),
        }
    }
}

// SAFETY: (1) V is bit 0, so an all-zero entry is absent; (2) `decode` is a
// pure function of its arguments; (3) it returns a pointer only above the last
// level (`TableNotAllowed` there), a leaf only at levels that hold leaves
// (every level), and a leaf's address is aligned to the level's size because a
// misaligned superpage is an error, never masked into a different block; (4)
// `encode_table` sets V and the PPN (R = W = X = 0, no attributes: decoded
// with every grant); `encode_leaf` sets V and exactly the bits `decode` reads
// back, refusing what it cannot express (no R/W/X, W without R, a memory type
// other than PMA without Svpbmt); V makes every encoding non-zero; (5) they
// accept every aligned address below 2^56; (6) canonical addresses are the
// two sign-extended halves, each an interval in one 2^va_bits window.
unsafe impl<const LEVELS: usize, const SVPBMT: bool> PagingFormat for Sv<LEVELS, SVPBMT> {
    const NAME: &'static str = match (LEVELS, SVPBMT) {
        (3, false) => "riscv64 Sv39",
        (4, false) => "riscv64 Sv48",
        (5, false) => "riscv64 Sv57",
        (3, true) => "riscv64 Sv39 + Svpbmt",
        (4, true) => "riscv64 Sv48 + Svpbmt",
        _ => "riscv64 Sv57 + Svpbmt",
    };

    const GEOMETRY: Geometry = geometry(LEVELS, 0);

    #[inline]
    fn is_canonical(va: VirtAddr) -> bool {
        va.is_sign_extended(Self::GEOMETRY.va_bits())
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

// The PPN field is bits 53:10 in every mode.
static_assertions::const_assert_eq!(PPN, 0x003f_ffff_ffff_fc00);

#[cfg(test)]
mod tests;
