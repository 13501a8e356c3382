//! The paging-format trait: how one translation regime lays out its tables and
//! entries. Formats are zero-sized types; one generic walker and builder serve
//! them all.
//!
//! Levels are numbered from the root: level 0 is the table the walk starts in
//! (x86_64's PML4 or PML5, aarch64's start level), and the last level holds the
//! smallest pages. A format's own level names (x86_64's "PDPT", aarch64's "level
//! 1" for a 64 KiB granule) are given in its documentation.

#[cfg(feature = "host")]
pub mod toy;

use super::addr::{PhysAddr, VirtAddr};
use super::entry::{Entry, LeafEntry, Perms};
use super::error::{DecodeError, EncodeError};

/// The deepest walk any format may have (aarch64 with 4 KiB granules and LPA2,
/// and x86_64 with LA57, use 5).
pub const MAX_LEVELS: usize = 6;

/// The most virtual-address bits one level may index: 17, for an aarch64
/// stage-2 start level of 16 concatenated 64 KiB tables (2^13 entries each).
pub const MAX_INDEX_BITS: u32 = 17;

/// One level of a format: how many virtual-address bits it indexes and whether
/// its entries may be leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LevelShape {
    /// Virtual-address bits indexed at this level: a table here holds
    /// `2^index_bits` entries. The root may hold fewer entries than the other
    /// levels (aarch64 16 KiB granule at 48-bit VAs: 1 bit, 2 entries), or more
    /// (an aarch64 stage-2 start level of up to 16 concatenated tables: 17 bits
    /// with 64 KiB granules).
    pub index_bits: u32,
    /// Whether an entry at this level may be a leaf (a page, block or huge page).
    pub holds_leaves: bool,
}

impl LevelShape {
    /// A level of `index_bits` bits whose entries only point to tables.
    pub const fn tables(index_bits: u32) -> LevelShape {
        LevelShape {
            index_bits,
            holds_leaves: false,
        }
    }

    /// A level of `index_bits` bits whose entries may be leaves (and, above the
    /// last level, tables).
    pub const fn leaves(index_bits: u32) -> LevelShape {
        LevelShape {
            index_bits,
            holds_leaves: true,
        }
    }
}

/// The geometry of a format, derived from its levels and page size: what the
/// walker and builder compute indices, spans and leaf sizes from.
///
/// Build it in a `const` with [`Geometry::new`]: an inconsistent geometry then
/// fails to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    depth: usize,
    page_shift: u32,
    va_bits: u32,
    index_bits: [u32; MAX_LEVELS],
    shift: [u32; MAX_LEVELS],
    holds_leaves: [bool; MAX_LEVELS],
}

impl Geometry {
    /// The geometry of `levels` (root first) over pages of `2^page_shift` bytes.
    ///
    /// # Panics
    ///
    /// If there are no levels or more than [`MAX_LEVELS`], if a level indexes
    /// no bits or more than [`MAX_INDEX_BITS`], if the last level cannot hold leaves, or if the
    /// virtual-address width `page_shift + Σ index_bits` is 64 bits or more (the
    /// walker reasons about entries' spans in `u64`). Used in a `const`, the panic
    /// is a compile error.
    pub const fn new(page_shift: u32, levels: &[LevelShape]) -> Geometry {
        assert!(
            !levels.is_empty() && levels.len() <= MAX_LEVELS,
            "1..=MAX_LEVELS levels"
        );
        assert!(
            levels[levels.len() - 1].holds_leaves,
            "the last level must hold leaves"
        );
        // Checked first, so that `va_bits` starts below 64 and each step below
        // adds at most `MAX_INDEX_BITS` to a value below 64: the sum never
        // overflows before the `< 64` assertion sees it.
        assert!(page_shift < 64, "the page shift must be below 64");
        let mut g = Geometry {
            depth: levels.len(),
            page_shift,
            va_bits: page_shift,
            index_bits: [0; MAX_LEVELS],
            shift: [0; MAX_LEVELS],
            holds_leaves: [false; MAX_LEVELS],
        };
        let mut level = levels.len();
        while level > 0 {
            level -= 1;
            let bits = levels[level].index_bits;
            assert!(
                bits >= 1 && bits <= MAX_INDEX_BITS,
                "a level indexes 1..=MAX_INDEX_BITS bits"
            );
            g.shift[level] = g.va_bits;
            g.index_bits[level] = bits;
            g.holds_leaves[level] = levels[level].holds_leaves;
            g.va_bits += bits;
            assert!(
                g.va_bits < 64,
                "the virtual-address width must stay below 64 bits"
            );
        }
        g
    }

    /// The number of levels.
    #[inline]
    pub const fn depth(&self) -> usize {
        self.depth
    }

    /// log2 of the smallest page size.
    #[inline]
    pub const fn page_shift(&self) -> u32 {
        self.page_shift
    }

    /// The number of virtual-address bits one walk translates.
    #[inline]
    pub const fn va_bits(&self) -> u32 {
        self.va_bits
    }

    /// Whether `level` exists.
    #[inline]
    pub const fn has_level(&self, level: usize) -> bool {
        level < self.depth
    }

    /// The number of entries in a table at `level`, `None` past the last level.
    #[inline]
    pub const fn entries(&self, level: usize) -> Option<usize> {
        if level < self.depth {
            Some(1 << self.index_bits[level])
        } else {
            None
        }
    }

    /// log2 of the span one entry at `level` covers, `None` past the last level.
    #[inline]
    pub const fn entry_shift(&self, level: usize) -> Option<u32> {
        if level < self.depth {
            Some(self.shift[level])
        } else {
            None
        }
    }

    /// Whether entries at `level` may be leaves.
    #[inline]
    pub const fn holds_leaves(&self, level: usize) -> bool {
        level < self.depth && self.holds_leaves[level]
    }

    /// Whether entries at `level` may point to a table (every level but the last).
    #[inline]
    pub const fn holds_tables(&self, level: usize) -> bool {
        level + 1 < self.depth
    }

    /// log2 of the span of an entry at `level`, for a level the caller knows
    /// exists (`level < depth()`, which keeps the index in bounds).
    #[inline]
    pub(crate) const fn shift_at(&self, level: usize) -> u32 {
        self.shift[level]
    }

    /// The size of a leaf at `level`, `None` if the level holds no leaves.
    #[inline]
    pub const fn leaf_size(&self, level: usize) -> Option<u64> {
        if self.holds_leaves(level) {
            Some(1 << self.shift[level])
        } else {
            None
        }
    }

    /// The level whose leaves are `size` bytes, `None` if there is none.
    #[inline]
    pub const fn leaf_level(&self, size: u64) -> Option<usize> {
        let mut level = 0;
        while level < self.depth {
            if self.holds_leaves[level] && size == 1 << self.shift[level] {
                return Some(level);
            }
            level += 1;
        }
        None
    }

    /// The index of `va`'s entry in a table at `level`: only the bits this level
    /// indexes are used, so the result is always below
    /// [`entries(level)`](Self::entries) (0 past the last level).
    #[inline]
    pub const fn index(&self, va: VirtAddr, level: usize) -> usize {
        if level < self.depth {
            // `shift < va_bits < 64` and `1 <= index_bits <= MAX_INDEX_BITS`
            // (`new` asserts both): the shifts are in range, the `- 1` does
            // not wrap, and the masked index fits any `usize` of 32 bits.
            ((va.0 >> self.shift[level]) & ((1 << self.index_bits[level]) - 1)) as usize
        } else {
            0
        }
    }
}

/// A paging format (translation regime): the shape of its tables and the
/// meaning of its entries. Implemented by zero-sized types, one per regime.
///
/// # Contract
///
/// 1. An all-zero entry is [`Entry::Absent`] at every level.
/// 2. [`decode`](Self::decode) is pure and total: for every `raw` and `level` it
///    returns the same result every time, has no side effects and does not
///    panic; a level past the last is [`DecodeError::NoSuchLevel`].
/// 3. `decode` returns [`Entry::Table`] only at levels that
///    [hold tables](Geometry::holds_tables) (never at the last level) and
///    [`Entry::Leaf`] only at levels that [hold leaves](Geometry::holds_leaves);
///    a leaf's `pa` is aligned to the level's leaf size. (The walker checks the
///    first two and stops with an error rather than trust a broken format.)
/// 4. Encoding round-trips: `decode(encode_table(t, l)?, l)` is a table entry for
///    `t` with every grant ([`Perms::GRANTS`](super::Perms::GRANTS)), and
///    `decode(encode_leaf(&leaf, l)?, l)` is `Entry::Leaf(leaf)`. Encoded entries
///    are never zero.
/// 5. The addresses an encoder accepts at one level form an interval of aligned
///    addresses: if `encode_leaf` accepts two addresses at a level, with the
///    same permissions and memory type, it accepts every aligned address between
///    them (so the builder validates a range by its first and last leaf).
/// 6. [`is_canonical`](Self::is_canonical) is convex inside each aligned window
///    of `2^va_bits` addresses: if two addresses of one window are canonical, so
///    is every address between them. Only the low
///    [`va_bits`](Geometry::va_bits) of an address select its entries.
/// 7. [`limit_leaf`](Self::limit_leaf) is pure and never reports a
///    permission the leaf's own permissions limited by the grants
///    ([`Perms::limited_by`](super::Perms::limited_by)) do not have: it may only
///    take more away.
///
/// # Safety
///
/// Implementors promise the contract above. Code built on this trait relies on
/// it for memory safety beyond this crate: the MMU walks the tables the builder
/// writes (4), and GUP-fast takes references to the physical pages that
/// [`decode`](Self::decode) reports (3).
pub unsafe trait PagingFormat: 'static {
    /// A short name for diagnostics ("x86_64 4-level").
    const NAME: &'static str;

    /// The shape of the tables; build it with [`Geometry::new`].
    const GEOMETRY: Geometry;

    /// Whether `va` is canonical: an address the regime can translate at all.
    fn is_canonical(va: VirtAddr) -> bool;

    /// What the raw entry `raw` says at `level`.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the entry is malformed for the level: reserved bits
    /// set, a leaf where none may be, a table at the last level, or no such level.
    fn decode(raw: u64, level: usize) -> Result<Entry, DecodeError>;

    /// The raw entry at `level` that points to the table at `table` and
    /// restricts nothing.
    ///
    /// # Errors
    ///
    /// [`EncodeError::NoSuchLevel`] at the last level or past it,
    /// [`EncodeError::UnencodableAddress`] for an address the entry cannot hold.
    fn encode_table(table: PhysAddr, level: usize) -> Result<u64, EncodeError>;

    /// The raw leaf entry at `level` for `leaf`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::LeafNotAllowed`] or [`EncodeError::NoSuchLevel`] for a
    /// level without leaves, [`EncodeError::UnencodableAddress`] for a misaligned
    /// or too large address, [`EncodeError::UnsupportedPerms`] and
    /// [`EncodeError::UnsupportedMemType`] for attributes the format cannot hold.
    fn encode_leaf(leaf: &LeafEntry, level: usize) -> Result<u64, EncodeError>;

    /// The permissions of the leaf `raw` (whose own permissions `decode`
    /// reported as `leaf`) under table entries that grant `grants`. The
    /// default is [`leaf.limited_by(grants)`](super::Perms::limited_by); a
    /// format whose permission bits mean different things once a grant is
    /// taken away overrides it (aarch64 stage 1: a user leaf under APTable\[0\]
    /// is a privileged leaf, executable only if PXN is clear).
    #[inline]
    fn limit_leaf(raw: u64, leaf: Perms, grants: Perms) -> Perms {
        let _ = raw;
        leaf.limited_by(grants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86_LIKE: Geometry = Geometry::new(
        12,
        &[
            LevelShape::tables(9),
            LevelShape::leaves(9),
            LevelShape::leaves(9),
            LevelShape::leaves(9),
        ],
    );

    /// aarch64, 16 KiB granule, 48-bit VA: the start level has 2 entries.
    const SMALL_ROOT: Geometry = Geometry::new(
        14,
        &[
            LevelShape::tables(1),
            LevelShape::tables(11),
            LevelShape::leaves(11),
            LevelShape::leaves(11),
        ],
    );

    #[test]
    fn spans_and_sizes_of_an_x86_like_geometry() {
        assert_eq!(X86_LIKE.depth(), 4);
        assert_eq!(X86_LIKE.va_bits(), 48);
        assert_eq!(X86_LIKE.entry_shift(0), Some(39));
        assert_eq!(X86_LIKE.entry_shift(3), Some(12));
        assert_eq!(X86_LIKE.entry_shift(4), None);
        assert_eq!(X86_LIKE.leaf_size(0), None);
        assert_eq!(X86_LIKE.leaf_size(1), Some(1 << 30));
        assert_eq!(X86_LIKE.leaf_size(3), Some(4096));
        assert_eq!(X86_LIKE.leaf_level(1 << 21), Some(2));
        assert_eq!(X86_LIKE.leaf_level(1 << 39), None);
        assert_eq!(X86_LIKE.leaf_level(8192), None);
        assert!(X86_LIKE.holds_tables(2) && !X86_LIKE.holds_tables(3));
        assert_eq!(X86_LIKE.index(VirtAddr(0xffff_8000_0020_1000), 0), 256);
        assert_eq!(X86_LIKE.index(VirtAddr(0xffff_8000_0020_1000), 2), 1);
        assert_eq!(X86_LIKE.index(VirtAddr(0xffff_8000_0020_1000), 3), 1);
        assert_eq!(X86_LIKE.index(VirtAddr(u64::MAX), 9), 0);
    }

    /// aarch64 stage 2, 64 KiB granule, 46-bit IPA: 16 concatenated start
    /// tables of 2^13 entries.
    const CONCATENATED_ROOT: Geometry = Geometry::new(
        16,
        &[LevelShape::leaves(MAX_INDEX_BITS), LevelShape::leaves(13)],
    );

    #[test]
    fn a_concatenated_start_level_indexes_past_one_table() {
        assert_eq!(CONCATENATED_ROOT.va_bits(), 46);
        assert_eq!(CONCATENATED_ROOT.entries(0), Some(1 << 17));
        assert_eq!(CONCATENATED_ROOT.leaf_size(0), Some(512 << 20));
        assert_eq!(
            CONCATENATED_ROOT.index(VirtAddr(0x0000_3fff_ffff_ffff), 0),
            (1 << 17) - 1
        );
    }

    #[test]
    fn a_small_start_level_masks_its_index() {
        assert_eq!(SMALL_ROOT.va_bits(), 48);
        assert_eq!(SMALL_ROOT.entries(0), Some(2));
        assert_eq!(SMALL_ROOT.entries(1), Some(2048));
        assert_eq!(SMALL_ROOT.leaf_size(2), Some(32 << 20));
        // Bits above the VA width never reach the start level's index.
        assert_eq!(SMALL_ROOT.index(VirtAddr(0xffff_ffff_ffff_ffff), 0), 1);
        assert_eq!(SMALL_ROOT.index(VirtAddr(0x0001_0000_0000_0000), 0), 0);
    }
}
