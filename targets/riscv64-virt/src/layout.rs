//! The memory layout of one build: the translation mode (a cargo feature)
//! decides the format; pages are 4 KiB and blocks 2 MiB megapages in every
//! mode. `run.sh` boots with `-m 256M` (RAM 0x8000_0000..0x9000_0000).

use core::sync::atomic::AtomicU64;

/// Bytes per base page.
pub const PAGE: u64 = 1 << PAGE_SHIFT;
pub const PAGE_SHIFT: u32 = 12;
/// Bytes per block: a 2 MiB megapage.
pub const BLOCK: u64 = 1 << BLOCK_SHIFT;
pub const BLOCK_SHIFT: u32 = 21;
/// Start of RAM on QEMU `virt` (the kernel is loaded here).
pub const RAM_BASE: u64 = 0x8000_0000;
/// `-m 256M`.
pub const RAM_END: u64 = 0x9000_0000;
/// The devices (SiFive test 0x10_0000, CLINT 0x0200_0000, PLIC, the UART
/// 0x1000_0000): the first GiB, identity-mapped by one gigapage.
pub const DEVICE_BASE: u64 = 0;
pub const DEVICE_LEN: u64 = 1 << 30;
pub const DEVICE_LEAF: u64 = 1 << 30;
/// Page-mapped slots' single-page units (24 blocks of 64 pages: 6 MiB).
pub const SMALL_BASE: u64 = 0x8400_0000;
/// Block-mapped slots' 2 MiB units.
pub const HUGE_BASE: u64 = 0x8800_0000;
pub const HUGE_UNITS: u64 = 16;
/// Page-table frames in the static pool.
pub const TABLE_FRAMES: usize = 64;
/// Hart 0's map/truncate operations.
pub const ROUNDS: u64 = 3000;

#[cfg(not(any(feature = "sv48", feature = "sv57")))]
mod mode {
    pub type Format = pagepin::arch::riscv64::Sv39;
    pub const MODE: &str = "sv39";
}

#[cfg(all(feature = "sv48", not(feature = "sv57")))]
mod mode {
    pub type Format = pagepin::arch::riscv64::Sv48;
    pub const MODE: &str = "sv48";
}

#[cfg(feature = "sv57")]
mod mode {
    pub type Format = pagepin::arch::riscv64::Sv57;
    pub const MODE: &str = "sv57";
}

pub use mode::*;

/// A page-table frame: one 4 KiB table.
#[repr(C, align(4096))]
pub struct Frame(pub [AtomicU64; 512]);

/// The first PFN with a meta: the first small page.
pub const DATA_FIRST: u64 = SMALL_BASE >> PAGE_SHIFT;
/// The first PFN past the data pages.
pub const DATA_END: u64 = (HUGE_BASE + HUGE_UNITS * BLOCK) >> PAGE_SHIFT;
/// Metas: one per base page from [`DATA_FIRST`] to [`DATA_END`].
pub const METAS: usize = (DATA_END - DATA_FIRST) as usize;

const _: () = assert!(HUGE_BASE.is_multiple_of(BLOCK) && DATA_END << PAGE_SHIFT <= RAM_END);
const _: () = assert!(SMALL_BASE + 24 * 64 * PAGE <= HUGE_BASE);
const _: () = assert!(RAM_END.is_multiple_of(BLOCK));
