//! Page tables: the traits a kernel implements for its formats and its memory,
//! a generic lockless walker, and a table builder.
//!
//! | concept | module | what it holds |
//! |---|---|---|
//! | paging format | [`format`] | [`PagingFormat`], [`Geometry`], the `Toy` format (the `host` feature) |
//! | entries | [`entry`] | [`Entry`], [`Perms`], [`MemType`], [`EntryLoc`], [`EntrySnapshot`] |
//! | table access | [`access`], [`direct`] | [`TableAccess`]; [`DirectMap`] (a kernel's direct or identity map); `HostMemory` over `HostFrame`s (the `host` feature) |
//! | walker | [`walk`] | [`Walker`]: translate, and walk a range leaf by leaf |
//! | builder | [`build`] | [`TableBuilder`]: map and unmap in caller-provided frames |
//! | frames and retirement | [`pool`] | [`FramePool`], the [`Retire`] hook, [`ReclaimNow`] |
//! | addresses | [`addr`] | [`PhysAddr`], [`VirtAddr`], [`VaRange`] |
//! | errors | [`error`] | one enum per operation |
//!
//! The x86_64 formats are in [`crate::arch::x86_64`].
//!
//! A kernel with its own format implements [`PagingFormat`] for a zero-sized
//! type and [`TableAccess`] over its direct map; the walker and the builder are
//! generic over both.
//!
//! ```
//! use pagepin::arch::x86_64::Paging4Level;
//! use pagepin::table::*;
//!
//! let frames: Vec<HostFrame> = (0..16).map(|_| HostFrame::new()).collect();
//! let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
//! let mut pool_frames: Vec<PhysAddr> = memory.frame_pas().collect();
//! // SAFETY: the pool's frames are this example's own, in no other pool.
//! let pool = unsafe { FramePool::new(&mut pool_frames) };
//! // SAFETY: no walker or MMU reads these tables while the builder unmaps.
//! let mut tables = TableBuilder::<Paging4Level, _, _>::new(&memory, pool, unsafe { ReclaimNow::new() }).unwrap();
//!
//! let user_rw = Perms::READ | Perms::WRITE | Perms::USER;
//! // SAFETY: the example's own pages, never freed while mapped.
//! unsafe {
//!     tables
//!         .map(&MapRequest::new(VirtAddr(0x40_0000), PhysAddr(0x8000_0000), 0x3000, 0x1000)
//!             .with_perms(user_rw))
//! }
//! .unwrap();
//! match tables.walker().translate(VirtAddr(0x40_1234)).unwrap() {
//!     WalkItem::Leaf(leaf) => {
//!         assert_eq!(leaf.pa, PhysAddr(0x8000_1234));
//!         assert_eq!((leaf.size, leaf.perms), (0x1000, user_rw));
//!     }
//!     WalkItem::Hole(hole) => panic!("absent at level {}", hole.level),
//! }
//! let unmapped = tables.unmap(VirtAddr(0x40_0000), 0x3000).unwrap();
//! assert_eq!((unmapped.leaves, unmapped.tables), (3, 3));
//! assert_eq!(tables.pool().free_count(), 15); // all but the root
//! ```

pub mod access;
pub mod addr;
pub mod build;
#[cfg(not(loom))]
pub mod direct;
pub mod entry;
pub mod error;
pub mod format;
#[cfg(feature = "host")]
pub mod host;
pub mod interop;
pub mod pool;
pub mod walk;

pub use access::TableAccess;
pub use addr::{PhysAddr, VaRange, VirtAddr};
pub use build::{LeafSizes, MapRequest, TableBuilder, Unmapped};
#[cfg(not(loom))]
pub use direct::DirectMap;
pub use entry::{Entry, EntryLoc, EntrySnapshot, LeafEntry, MemType, Perms, TableEntry};
pub use error::{
    AccessError, DecodeError, EncodeError, MapError, PoolFull, RangeError, RetireError, UnmapError,
    WalkError, WalkErrorKind,
};
#[cfg(feature = "host")]
pub use format::toy::Toy;
pub use format::{Geometry, LevelShape, MAX_INDEX_BITS, MAX_LEVELS, PagingFormat};
#[cfg(feature = "host")]
pub use host::{HOST_FRAME_ENTRIES, HOST_FRAME_SIZE, HostFrame, HostMemory, HostMemoryError};
pub use pool::{FramePool, ReclaimNow, Retire};
pub use walk::{HoleItem, LeafItem, Walk, WalkItem, Walker};

#[cfg(all(test, not(loom)))]
mod tests;
