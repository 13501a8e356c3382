//! Errors of the page-table layer: one small enum per operation.

use core::fmt;

use super::addr::{PhysAddr, VirtAddr};
use super::entry::{EntryLoc, MemType, Perms};

/// Why a virtual range was refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RangeError {
    /// The range has length 0.
    Empty,
    /// The range runs past the end of the 64-bit address space.
    Wraps,
    /// `va`, inside the range, is not canonical for the format (for x86_64: the
    /// range starts or ends outside the canonical halves, or spans the hole
    /// between them).
    NonCanonical {
        /// The first offending address found.
        va: VirtAddr,
    },
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::Empty => f.write_str("empty virtual range"),
            RangeError::Wraps => f.write_str("virtual range wraps around the address space"),
            RangeError::NonCanonical { va } => write!(f, "non-canonical virtual address {va}"),
        }
    }
}

impl core::error::Error for RangeError {}

/// Why a raw entry does not decode.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The format has no such level.
    NoSuchLevel {
        /// The level asked for.
        level: usize,
    },
    /// Bits that must be zero at this level are set (x86_64: address bits at or
    /// above MAXPHYADDR, bits 13-20 of a 2 MiB leaf, bits 13-29 of a 1 GiB leaf).
    ReservedBits {
        /// The offending bits, in place.
        bits: u64,
    },
    /// The entry is a leaf at a level that cannot hold leaves (x86_64: PS set in
    /// a PML4E or PML5E).
    LeafNotAllowed {
        /// The level of the entry.
        level: usize,
    },
    /// The entry points to a table at the last level, where only leaves exist.
    TableNotAllowed {
        /// The level of the entry.
        level: usize,
    },
    /// A field holds a value the architecture reserves (aarch64: descriptor type
    /// `0b01` at level 3, shareability `0b01`; EPT: write access without read
    /// access, or memory type 2, 3 or 7, which the processor reports as an EPT
    /// misconfiguration).
    ReservedEncoding {
        /// The offending field, in place (its bits of the raw entry).
        field: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NoSuchLevel { level } => write!(f, "the format has no level {level}"),
            DecodeError::ReservedBits { bits } => write!(f, "reserved bits {bits:#x} are set"),
            DecodeError::LeafNotAllowed { level } => {
                write!(f, "leaf entry at level {level}, which cannot hold leaves")
            }
            DecodeError::TableNotAllowed { level } => {
                write!(f, "table entry at the last level ({level})")
            }
            DecodeError::ReservedEncoding { field } => {
                write!(f, "field {field:#x} holds a reserved value")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why an entry cannot be encoded.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The format has no such level (or, for a table entry, the level is the last
    /// one, which points to no table).
    NoSuchLevel {
        /// The level asked for.
        level: usize,
    },
    /// The level cannot hold a leaf.
    LeafNotAllowed {
        /// The level asked for.
        level: usize,
    },
    /// The address is not aligned to what the entry maps, or does not fit the
    /// entry's address field.
    UnencodableAddress {
        /// The address.
        pa: PhysAddr,
    },
    /// The format cannot express these permissions (x86_64: a present page is
    /// always readable, so a leaf without [`Perms::READ`]).
    UnsupportedPerms {
        /// The permissions asked for.
        perms: Perms,
    },
    /// The format has no such memory type.
    UnsupportedMemType {
        /// The memory type asked for.
        mem_type: MemType,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::NoSuchLevel { level } => {
                write!(f, "no entry of this kind exists at level {level}")
            }
            EncodeError::LeafNotAllowed { level } => {
                write!(f, "level {level} cannot hold leaves")
            }
            EncodeError::UnencodableAddress { pa } => {
                write!(f, "physical address {pa} cannot be encoded in this entry")
            }
            EncodeError::UnsupportedPerms { perms } => {
                write!(f, "permissions {perms:?} cannot be expressed")
            }
            EncodeError::UnsupportedMemType { mem_type } => {
                write!(f, "memory type {} does not exist", mem_type.0)
            }
        }
    }
}

impl core::error::Error for EncodeError {}

/// Why a table's entry cannot be reached through a
/// [`TableAccess`](super::TableAccess).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessError {
    /// The entry lies outside the memory the access can reach.
    Unreachable {
        /// The table's physical address.
        table: PhysAddr,
        /// The entry's index.
        index: usize,
    },
    /// The table's address is not aligned as the access requires.
    Misaligned {
        /// The table's physical address.
        table: PhysAddr,
    },
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::Unreachable { table, index } => {
                write!(f, "entry {index} of the table at {table} is not reachable")
            }
            AccessError::Misaligned { table } => write!(f, "table address {table} is misaligned"),
        }
    }
}

impl core::error::Error for AccessError {}

/// A failed walk: the address being translated and what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WalkError {
    /// The virtual address whose translation failed.
    pub va: VirtAddr,
    /// What went wrong.
    pub kind: WalkErrorKind,
}

/// What went wrong in a walk.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalkErrorKind {
    /// The address is not canonical for the format.
    NonCanonical,
    /// A table entry points to memory the table access cannot reach.
    Access {
        /// The entry that could not be loaded.
        loc: EntryLoc,
        /// Why.
        error: AccessError,
    },
    /// An entry does not decode.
    Decode {
        /// The entry.
        loc: EntryLoc,
        /// Its raw value.
        raw: u64,
        /// Why.
        error: DecodeError,
    },
    /// The format's decoder broke its contract (a table entry at the last level,
    /// or a leaf at a level that holds none); the walk stops instead of trusting it.
    FormatContract {
        /// The entry.
        loc: EntryLoc,
        /// Its raw value.
        raw: u64,
    },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "walk of {}: ", self.va)?;
        match self.kind {
            WalkErrorKind::NonCanonical => f.write_str("non-canonical address"),
            WalkErrorKind::Access { loc, error } => write!(f, "level {}: {error}", loc.level),
            WalkErrorKind::Decode { loc, raw, error } => {
                write!(f, "level {} entry {raw:#x}: {error}", loc.level)
            }
            WalkErrorKind::FormatContract { loc, raw } => write!(
                f,
                "level {} entry {raw:#x}: the format decoded an entry the level cannot hold",
                loc.level
            ),
        }
    }
}

impl core::error::Error for WalkError {}

/// A frame pool cannot take a frame back: it already holds as many frames as it
/// was created with, so the frame did not come from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolFull {
    /// The frame that was not taken back.
    pub frame: PhysAddr,
}

impl fmt::Display for PoolFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame pool is full; frame {} is not one of its own",
            self.frame
        )
    }
}

impl core::error::Error for PoolFull {}

/// A retire hook could not take a detached table; the table is the caller's
/// again (detached, reused by nobody).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetireError {
    /// The pool the hook gave the table to cannot take it.
    PoolFull(PoolFull),
    /// The hook's list of tables waiting for their grace period is full, and
    /// no walk holding them back ended within its bounded wait (for example a
    /// read section the caller itself holds open across the unmap).
    Backlog {
        /// The table not retired.
        table: PhysAddr,
    },
}

impl fmt::Display for RetireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetireError::PoolFull(e) => write!(f, "retire: {e}"),
            RetireError::Backlog { table } => write!(
                f,
                "retire: table {table} not taken: the hook's grace-period list is full"
            ),
        }
    }
}

impl core::error::Error for RetireError {}

/// Why a mapping (or building the root table) was refused. Nothing was written.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapError {
    /// The virtual range is empty, wraps or is not canonical.
    Range(RangeError),
    /// The format has no leaves of this size.
    LeafSizeNotAllowed {
        /// The size asked for.
        size: u64,
    },
    /// The virtual start is not aligned to the leaf size.
    MisalignedVa {
        /// The virtual start.
        va: VirtAddr,
    },
    /// The physical start is not aligned to the leaf size.
    MisalignedPa {
        /// The physical start.
        pa: PhysAddr,
    },
    /// The length is not a multiple of the leaf size.
    MisalignedLen {
        /// The length.
        len: u64,
    },
    /// The physical range runs past the end of the 64-bit address space.
    PaWraps,
    /// Something is already mapped in the range.
    Overlap {
        /// The first virtual address found mapped.
        va: VirtAddr,
    },
    /// The frame pool holds fewer free frames than the new tables need.
    PoolExhausted {
        /// Tables the mapping needs.
        needed: usize,
        /// Frames free in the pool.
        free: usize,
    },
    /// The format cannot encode the leaves asked for.
    Encode(EncodeError),
    /// The existing tables could not be walked.
    Walk(WalkError),
    /// A frame of the pool is not reachable through the table access.
    Access(AccessError),
    /// The retire hook could not give its reclaimed tables back to the pool.
    Reclaim(PoolFull),
    /// The format's root table is larger than one pool frame (a concatenated
    /// start level: aarch64 stage 2, the RISC-V G-stage's 16 KiB root), so
    /// [`TableBuilder::new`](super::TableBuilder::new) cannot take it from the
    /// pool: build it with [`TableBuilder::with_root`](super::TableBuilder::with_root).
    RootLargerThanFrame {
        /// Entries of the root table.
        root_entries: usize,
        /// Entries one frame of the format's page size holds.
        frame_entries: usize,
    },
    /// The pool lists a frame twice: the builder would make it two tables.
    DuplicateFrame {
        /// The frame listed twice.
        frame: PhysAddr,
    },
    /// The root given to [`TableBuilder::with_root`](super::TableBuilder::with_root)
    /// is not aligned to its whole size (the MMU finds a concatenated start
    /// level by the address bits above it).
    MisalignedRoot {
        /// The root given.
        root: PhysAddr,
        /// The root table's size in bytes, the alignment it needs.
        size: u64,
    },
    /// The root given to [`TableBuilder::with_root`](super::TableBuilder::with_root)
    /// overlaps a frame of the pool: that frame would be handed out as a table
    /// inside the root.
    RootInPool {
        /// The pool frame inside the root.
        frame: PhysAddr,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Range(e) => write!(f, "map: {e}"),
            MapError::LeafSizeNotAllowed { size } => {
                write!(f, "map: the format has no {size:#x}-byte leaves")
            }
            MapError::MisalignedVa { va } => write!(f, "map: virtual start {va} is misaligned"),
            MapError::MisalignedPa { pa } => write!(f, "map: physical start {pa} is misaligned"),
            MapError::MisalignedLen { len } => {
                write!(f, "map: length {len:#x} is not a multiple of the leaf size")
            }
            MapError::PaWraps => f.write_str("map: physical range wraps"),
            MapError::Overlap { va } => write!(f, "map: {va} is already mapped"),
            MapError::PoolExhausted { needed, free } => {
                write!(
                    f,
                    "map: needs {needed} new tables, the pool has {free} frames"
                )
            }
            MapError::Encode(e) => write!(f, "map: {e}"),
            MapError::Walk(e) => write!(f, "map: {e}"),
            MapError::Access(e) => write!(f, "map: {e}"),
            MapError::Reclaim(e) => write!(f, "map: reclaim: {e}"),
            MapError::RootLargerThanFrame {
                root_entries,
                frame_entries,
            } => write!(
                f,
                "the root table has {root_entries} entries, a pool frame holds \
                 {frame_entries}: build it with TableBuilder::with_root"
            ),
            MapError::DuplicateFrame { frame } => {
                write!(f, "the frame pool lists {frame} twice")
            }
            MapError::MisalignedRoot { root, size } => {
                write!(f, "root {root} is not aligned to its size {size:#x}")
            }
            MapError::RootInPool { frame } => {
                write!(f, "pool frame {frame} lies inside the root table")
            }
        }
    }
}

impl core::error::Error for MapError {}

/// Why an unmap was refused or stopped.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnmapError {
    /// The virtual range is empty, wraps or is not canonical. Nothing was changed.
    Range(RangeError),
    /// The range covers only part of a leaf (leaves are not split). Nothing was
    /// changed.
    SplitsLeaf {
        /// The first virtual address of the leaf.
        leaf_va: VirtAddr,
        /// The leaf's size.
        size: u64,
    },
    /// The tables could not be walked. Nothing was changed.
    Walk(WalkError),
    /// A detached table could not be retired (see [`RetireError`]). The
    /// leaves in the range are cleared; the table is detached and belongs to
    /// the caller.
    Retire(RetireError),
}

impl fmt::Display for UnmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnmapError::Range(e) => write!(f, "unmap: {e}"),
            UnmapError::SplitsLeaf { leaf_va, size } => write!(
                f,
                "unmap: the range covers part of the {size:#x}-byte leaf at {leaf_va}"
            ),
            UnmapError::Walk(e) => write!(f, "unmap: {e}"),
            UnmapError::Retire(e) => write!(f, "unmap: {e}"),
        }
    }
}

impl core::error::Error for UnmapError {}
