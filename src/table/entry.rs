//! Decoded page-table entries, their permissions, and where an entry lives.

use bitflags::bitflags;

use super::addr::PhysAddr;

bitflags! {
    /// What a mapping allows, and the status bits the MMU keeps in a leaf, in a
    /// form common to every paging format.
    ///
    /// The *grants* ([`Perms::GRANTS`]: read, write, execute, user) can be
    /// restricted by the table entries above a leaf (x86_64's R/W, U/S and XD
    /// bits in non-leaf entries, aarch64's APTable/XNTable): the walker reports a
    /// leaf's *effective* grants, the intersection along the walk
    /// ([`Perms::limited_by`]). The status bits (accessed, dirty, global) belong to
    /// the leaf alone.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Perms: u32 {
        /// Data reads are allowed.
        const READ = 1 << 0;
        /// Data writes are allowed.
        const WRITE = 1 << 1;
        /// Instruction fetches are allowed (x86_64: XD clear).
        const EXEC = 1 << 2;
        /// User mode may access the page (x86_64: U/S set).
        const USER = 1 << 3;
        /// The MMU has used the entry (x86_64: A).
        const ACCESSED = 1 << 4;
        /// The page has been written through this leaf (x86_64: D).
        const DIRTY = 1 << 5;
        /// The translation is global: not tagged with an address-space ID
        /// (x86_64: G; aarch64: nG clear).
        const GLOBAL = 1 << 6;
    }
}

impl Perms {
    /// The permissions that table entries above a leaf can take away.
    pub const GRANTS: Perms = Perms::READ
        .union(Perms::WRITE)
        .union(Perms::EXEC)
        .union(Perms::USER);

    /// `self` with its grants restricted to `grants` (the grants of a table entry
    /// above the leaf); the status bits are kept.
    #[inline]
    pub const fn limited_by(self, grants: Perms) -> Perms {
        self.intersection(grants.union(Perms::GRANTS.complement()))
    }
}

/// A format-specific memory-type index carried by a leaf: x86_64's PAT index
/// (`PAT·4 + PCD·2 + PWT`, selecting an entry of the IA32_PAT MSR), aarch64's
/// AttrIndx (selecting a MAIR field). 0 is write-back on both with the reset
/// values of those registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MemType(pub u8);

/// A decoded leaf entry (a page, or a block / huge page): it maps the naturally
/// aligned block of the level's leaf size at `pa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeafEntry {
    /// The first physical address of the block (aligned to the leaf size).
    pub pa: PhysAddr,
    /// The leaf's own permissions and status bits (before any restriction by
    /// the table entries above it).
    pub perms: Perms,
    /// The leaf's memory type.
    pub mem_type: MemType,
}

/// A decoded entry that points to the next-level table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableEntry {
    /// The physical address of the next-level table.
    pub table: PhysAddr,
    /// The grants ([`Perms::GRANTS`]) this entry leaves to everything below it;
    /// a format without hierarchical permissions returns all of them.
    pub grants: Perms,
}

/// What one raw entry says, at the level it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry {
    /// Nothing is mapped through this entry.
    Absent,
    /// The entry points to a table one level down.
    Table(TableEntry),
    /// The entry maps a block of the level's leaf size.
    Leaf(LeafEntry),
}

/// Where an entry lives: a table's physical address, the index in it, and the
/// table's level (0 = the root, the start level of the walk). The level decides
/// how the entry is loaded (see [`Walker::reload`](super::Walker::reload)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryLoc {
    /// The table holding the entry.
    pub table: PhysAddr,
    /// The entry's index in the table.
    pub index: usize,
    /// The table's level, 0 for the root.
    pub level: usize,
}

/// An entry as the walker read it: its location and its exact raw value, so a
/// caller can re-read it later and compare (GUP-fast's re-check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntrySnapshot {
    /// Where the entry lives.
    pub loc: EntryLoc,
    /// The raw 64-bit value that was loaded.
    pub raw: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiting_keeps_status_bits_and_intersects_grants() {
        let leaf = Perms::READ | Perms::WRITE | Perms::USER | Perms::DIRTY | Perms::GLOBAL;
        assert_eq!(
            leaf.limited_by(Perms::READ | Perms::USER | Perms::EXEC),
            Perms::READ | Perms::USER | Perms::DIRTY | Perms::GLOBAL
        );
        assert_eq!(leaf.limited_by(Perms::GRANTS), leaf);
        assert_eq!(
            leaf.limited_by(Perms::empty()),
            Perms::DIRTY | Perms::GLOBAL
        );
    }
}
