//! RISC-V RV64: supervisor paging (Sv39, Sv48, Sv57) and the hypervisor
//! extension's G-stage (Sv39x4, Sv48x4, Sv57x4), from the RISC-V Privileged
//! Architecture, version 20211203 (1.12), with Svpbmt; field by field in each
//! module.
//!
//! | concept | module | what it holds |
//! |---|---|---|
//! | the page-table entry | `pte` | V/R/W/X/U/G/A/D, PPN, reserved bits, PBMT, N; decode and encode shared by both regimes; [`PBMT_PMA`], [`PBMT_NC`], [`PBMT_IO`] |
//! | supervisor paging | `sv` | [`Sv`], [`Sv39`], [`Sv48`], [`Sv57`], satp values, Svnapot leaves ([`NapotLeaf`]) |
//! | the G-stage | `gstage` | [`GStage`], [`Sv39x4`], [`Sv48x4`], [`Sv57x4`], hgatp values |
//!
//! Levels: pagepin level 0 is the root (the spec's `i = LEVELS − 1`); pagepin
//! level `l` is the spec's `i = LEVELS − 1 − l`, indexed by VPN\[i\].
//!
//! Not supported (a typed decode error, never a silent misreading): Svnapot
//! NAPOT leaves in a walk (bit 63 is reported as a reserved bit; see
//! [`Sv::napot_leaf`]: decoding one needs the virtual address, and
//! [`PagingFormat::decode`](crate::table::PagingFormat::decode) gets only the
//! raw entry and its level), Sv32 (RV32), and the Svade/Svadu distinction
//! (A and D are reported as they are; whether the hart sets them or faults is
//! the kernel's business).
//!
//! ```
//! use pagepin::arch::riscv64::{Sv39, Sv39x4};
//! use pagepin::table::*;
//!
//! let frames: Vec<HostFrame> = (0..16).map(|_| HostFrame::new()).collect();
//! let memory = HostMemory::new(&frames, PhysAddr(0x8010_0000)).unwrap();
//! let mut pool_frames: Vec<PhysAddr> = memory.frame_pas().collect();
//! let mut tables =
//!     // SAFETY: no walker or MMU reads these tables while the builder unmaps.
//!     // SAFETY: the pool's frames are this example's own, in no other pool.
//!     TableBuilder::<Sv39, _, _>::new(&memory, unsafe { FramePool::new(&mut pool_frames) }, unsafe { ReclaimNow::new() })
//!         .unwrap();
//! let user_rw = Perms::READ | Perms::WRITE | Perms::USER | Perms::ACCESSED | Perms::DIRTY;
//! // A 2 MiB megapage in the upper (sign-extended) half.
//! // SAFETY: the example's own pages, never freed while mapped.
//! unsafe {
//!     tables
//!         .map(&MapRequest::new(VirtAddr(0xffff_ffc0_0020_0000), PhysAddr(0x8040_0000), 0x20_0000, 0x20_0000)
//!             .with_perms(user_rw))
//! }
//! .unwrap();
//! let leaf = *tables.walker().translate(VirtAddr(0xffff_ffc0_0021_2345)).unwrap().leaf().unwrap();
//! assert_eq!((leaf.pa, leaf.size, leaf.perms), (PhysAddr(0x8041_2345), 0x20_0000, user_rw));
//! assert_eq!(Sv39::satp(tables.root(), 0) >> 60, 8);
//!
//! // The G-stage root is 16 KiB: four concatenated tables, the caller's.
//! let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
//! let root = PhysAddr(0x8020_0000);
//! let memory = HostMemory::new(&frames, root).unwrap();
//! let mut pool_frames: Vec<PhysAddr> = memory.frame_pas().skip(4).collect();
//! // SAFETY: the root's four frames and the pool's are this example's own,
//! // apart; no walker or MMU reads these tables while the builder unmaps.
//! let mut gstage = unsafe {
//!     TableBuilder::<Sv39x4, _, _>::with_root(&memory, root, FramePool::new(&mut pool_frames), ReclaimNow::new())
//! }
//! .unwrap();
//! assert_eq!(Sv39x4::GEOMETRY.entries(0), Some(2048));
//! let guest_ram = Perms::READ | Perms::WRITE | Perms::EXEC;
//! // SAFETY: the example's own pages, never freed while mapped.
//! unsafe {
//!     gstage
//!         .map(&MapRequest::new(VirtAddr(0x1_8000_0000), PhysAddr(0x8000_0000), 0x4000_0000, 0x4000_0000)
//!             .with_perms(guest_ram))
//! }
//! .unwrap();
//! let leaf = *gstage.walker().translate(VirtAddr(0x1_8000_1000)).unwrap().leaf().unwrap();
//! assert_eq!((leaf.pa, leaf.perms), (PhysAddr(0x8000_1000), guest_ram));
//! assert!(Sv39x4::hgatp(root, 1).is_some());
//! ```

mod gstage;
mod pte;
mod sv;

pub use gstage::{GStage, Sv39x4, Sv48x4, Sv57x4};
pub use pte::{PBMT_IO, PBMT_NC, PBMT_PMA};
pub use sv::{NapotLeaf, Sv, Sv39, Sv48, Sv57};
