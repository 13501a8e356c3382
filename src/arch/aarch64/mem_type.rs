//! How aarch64 leaves' memory attributes are packed into a [`MemType`].
//!
//! | bits of `MemType` | stage 1                       | stage 2                   |
//! |-------------------|-------------------------------|---------------------------|
//! | 2:0               | AttrIndx (a MAIR_ELx field)   | MemAttr[2:0]              |
//! | 3                 | SH[0]                         | MemAttr[3]                |
//! | 4                 | SH[1]                         | SH[0]                     |
//! | 5                 | —                             | SH[1]                     |
//!
//! that is, stage 1: `AttrIndx | SH << 3`; stage 2: `MemAttr | SH << 4`.
//! Shareability `0b01` is reserved in both and never encoded or decoded.

use crate::table::MemType;

/// The shareability field (SH\[1:0\]) of a block or page descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Shareability {
    /// Non-shareable (`0b00`).
    Non = 0b00,
    /// Outer Shareable (`0b10`).
    Outer = 0b10,
    /// Inner Shareable (`0b11`).
    Inner = 0b11,
}

/// Shareability `0b01`: reserved.
pub(super) const SH_RESERVED: u8 = 0b01;

/// The stage-1 memory type of AttrIndx `attr_indx` (0..=7; higher bits are
/// dropped) with shareability `sh`.
///
/// ```
/// use pagepin::arch::aarch64::{Shareability, stage1_mem_type};
/// assert_eq!(stage1_mem_type(1, Shareability::Inner).0, 0b11_001);
/// ```
#[inline]
pub const fn stage1_mem_type(attr_indx: u8, sh: Shareability) -> MemType {
    MemType((attr_indx & 0b111) | (sh as u8) << 3)
}

/// The stage-2 memory type of MemAttr\[3:0\] `mem_attr` (0..=15; higher bits
/// are dropped; HCR_EL2.FWB = 0 encodings) with shareability `sh`.
///
/// ```
/// use pagepin::arch::aarch64::{Shareability, stage2_mem_type};
/// // Normal, Outer and Inner Write-Back, Inner Shareable.
/// assert_eq!(stage2_mem_type(0b1111, Shareability::Inner).0, 0b11_1111);
/// ```
#[inline]
pub const fn stage2_mem_type(mem_attr: u8, sh: Shareability) -> MemType {
    MemType((mem_attr & 0b1111) | (sh as u8) << 4)
}
