//! The memory layout of one build: the granule (a cargo feature) decides the
//! format, the block size, where the data pages are and how much RAM the boot
//! needs (`run.sh` passes `-m` to match [`RAM_END`]).

use core::sync::atomic::AtomicU64;

/// Bytes per base page (the granule; also the memory map's base page).
pub const PAGE: u64 = 1 << PAGE_SHIFT;
/// Bytes per block (the format's leaf one level above pages).
pub const BLOCK: u64 = 1 << BLOCK_SHIFT;
/// Start of RAM on QEMU `virt`.
pub const RAM_BASE: u64 = 0x4000_0000;
/// GICv3 (distributor at 0x0800_0000, redistributors from 0x080a_0000) and the
/// PL011 UART (0x0900_0000): identity-mapped as Device-nGnRnE.
pub const DEVICE_BASE: u64 = 0x0800_0000;
/// Length of the device window.
pub const DEVICE_LEN: u64 = 0x0200_0000;

#[cfg(not(feature = "granule-64k"))]
mod granule {
    use super::AtomicU64;

    /// 4 KiB granule, 48-bit VAs: 4 levels (Arm 0-3), 2 MiB blocks.
    pub type Format = pagepin::arch::aarch64::Stage1G4K48;
    pub const GRANULE: &str = "4k";
    pub const PAGE_SHIFT: u32 = 12;
    pub const BLOCK_SHIFT: u32 = 21;
    pub const VA_BITS: u32 = 48;
    /// 2 MiB blocks over the device window.
    pub const DEVICE_LEAF: u64 = 1 << 21;
    /// `-m 256M`.
    pub const RAM_END: u64 = 0x5000_0000;
    /// Page-mapped slots' single-page units (24 blocks of 64 pages: 6 MiB).
    pub const SMALL_BASE: u64 = 0x4400_0000;
    /// Block-mapped slots' 2 MiB units.
    pub const HUGE_BASE: u64 = 0x4800_0000;
    pub const HUGE_UNITS: u64 = 16;
    /// Page-table frames in the static pool.
    pub const TABLE_FRAMES: usize = 64;
    /// CPU 0's map/truncate operations.
    pub const ROUNDS: u64 = 3000;

    /// A page-table frame: one 4 KiB table.
    #[repr(C, align(4096))]
    pub struct Frame(pub [AtomicU64; 512]);
}

#[cfg(feature = "granule-64k")]
mod granule {
    use super::AtomicU64;

    /// 64 KiB granule, 48-bit VAs: 3 levels (Arm 1-3, 64 entries at level 1),
    /// 512 MiB blocks.
    pub type Format = pagepin::arch::aarch64::Stage1G64K48;
    pub const GRANULE: &str = "64k";
    pub const PAGE_SHIFT: u32 = 16;
    pub const BLOCK_SHIFT: u32 = 29;
    pub const VA_BITS: u32 = 48;
    /// 64 KiB pages over the device window (blocks are 512 MiB).
    pub const DEVICE_LEAF: u64 = 1 << 16;
    /// `-m 2G`: three 512 MiB units above the first 512 MiB.
    pub const RAM_END: u64 = 0xc000_0000;
    /// Page-mapped slots' single-page units (24 blocks of 64 pages: 96 MiB).
    pub const SMALL_BASE: u64 = 0x5000_0000;
    /// Block-mapped slots' 512 MiB units.
    pub const HUGE_BASE: u64 = 0x6000_0000;
    pub const HUGE_UNITS: u64 = 3;
    pub const TABLE_FRAMES: usize = 32;
    pub const ROUNDS: u64 = 3000;

    /// A page-table frame: one 64 KiB table.
    #[repr(C, align(65536))]
    pub struct Frame(pub [AtomicU64; 8192]);
}

pub use granule::*;

/// The first PFN with a meta: the first small page.
pub const DATA_FIRST: u64 = SMALL_BASE >> PAGE_SHIFT;
/// The first PFN past the data pages.
pub const DATA_END: u64 = (HUGE_BASE + HUGE_UNITS * BLOCK) >> PAGE_SHIFT;
/// Metas: one per base page from [`DATA_FIRST`] to [`DATA_END`].
pub const METAS: usize = (DATA_END - DATA_FIRST) as usize;

const _: () = assert!(HUGE_BASE.is_multiple_of(BLOCK) && DATA_END << PAGE_SHIFT <= RAM_END);
const _: () = assert!(SMALL_BASE + 24 * 64 * PAGE <= HUGE_BASE);
const _: () = assert!(RAM_END.is_multiple_of(BLOCK) && DEVICE_BASE.is_multiple_of(DEVICE_LEAF));
