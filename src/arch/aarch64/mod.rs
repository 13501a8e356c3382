//! aarch64 (VMSAv8-64): stage 1 and stage 2 translation with 4, 16 and 64 KiB
//! granules.
//!
//! | concept | module | what it holds |
//! |---|---|---|
//! | granules and levels | `granule` | [`GRANULE_4K`], [`GRANULE_16K`], [`GRANULE_64K`]; start levels, block levels, contiguous groups |
//! | descriptor shape | `descriptor` | valid and type bits, address fields, RES0 address bits |
//! | stage 1 | `stage1` | [`Stage1`] and its aliases |
//! | stage 2 | `stage2` | [`Stage2`] and its aliases |
//! | memory types | `mem_type` | [`Shareability`], [`stage1_mem_type`], [`stage2_mem_type`] |
//!
//! Levels: pagepin level 0 is the *start level* of the walk, which Arm numbers
//! 0 to 2 depending on the granule and the input size; the types' `START_LEVEL`
//! gives the Arm number, and pagepin level `l` is Arm level `START_LEVEL + l`.
//!
//! Not supported (a compile error or a decode error, never a silent
//! misreading): FEAT_LPA and FEAT_LPA2 (52-bit output addresses, level 0
//! blocks with 4 KiB granules, level 1 blocks with 16 and 64 KiB granules, level
//! −1), 52-bit input addresses, HCR_EL2.FWB = 1 stage 2 memory attributes,
//! FEAT_XNX beyond "executable everywhere or not", and the single-privilege
//! regimes (EL2 without E2H, EL3), whose AP\[1\] is RES1.
//!
//! ```
//! use pagepin::arch::aarch64::{Shareability, Stage1G16K48, stage1_mem_type};
//! use pagepin::table::*;
//!
//! // 16 KiB tables: pool frames 16 KiB apart on a 16 KiB-aligned base.
//! let frames: Vec<HostFrame> = (0..4 * 8).map(|_| HostFrame::new()).collect();
//! let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
//! let mut pool_frames: Vec<PhysAddr> = memory.frame_pas().step_by(4).collect();
//! // SAFETY: the pool's frames are this example's own, in no other pool.
//! let pool = unsafe { FramePool::new(&mut pool_frames) };
//! // SAFETY: no walker or MMU reads these tables while the builder unmaps.
//! let mut tables = TableBuilder::<Stage1G16K48, _, _>::new(&memory, pool, unsafe { ReclaimNow::new() }).unwrap();
//! assert_eq!(Stage1G16K48::START_LEVEL, 0);
//! assert_eq!(Stage1G16K48::GEOMETRY.entries(0), Some(2));
//!
//! let user_rw = Perms::READ | Perms::WRITE | Perms::USER | Perms::ACCESSED;
//! let normal = stage1_mem_type(1, Shareability::Inner);
//! // SAFETY: the example's own pages, never freed while mapped.
//! unsafe {
//!     tables
//!         .map(&MapRequest::new(VirtAddr(0x200_0000), PhysAddr(0x8000_0000), 0x200_0000, 0x200_0000)
//!             .with_perms(user_rw)
//!             .with_mem_type(normal))
//! }
//! .unwrap();
//! let leaf = *tables.walker().translate(VirtAddr(0x200_4321)).unwrap().leaf().unwrap();
//! assert_eq!((leaf.pa, leaf.size, leaf.perms), (PhysAddr(0x8000_4321), 32 << 20, user_rw));
//! assert_eq!(leaf.mem_type, normal);
//! ```

mod descriptor;
mod granule;
mod mem_type;
mod stage1;
mod stage2;

pub use granule::{GRANULE_4K, GRANULE_16K, GRANULE_64K};
pub use mem_type::{Shareability, stage1_mem_type, stage2_mem_type};
pub use stage1::{
    Stage1, Stage1G4K39, Stage1G4K48, Stage1G4K48Ttbr1, Stage1G16K36, Stage1G16K47, Stage1G16K48,
    Stage1G64K42, Stage1G64K48,
};
pub use stage2::{Stage2, Stage2G4K40, Stage2G4K48, Stage2G16K40, Stage2G64K48};
