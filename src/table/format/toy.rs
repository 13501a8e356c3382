//! A toy format for small models: 2 levels of 4 entries over 4 KiB pages, so a
//! whole address space is 64 KiB and a loom model walks at most two entries.
//!
//! ```text
//! VA (16 bits):  15-14 level-0 index | 13-12 level-1 index | 11-0 offset
//! level 0 entry: a table (4 × 4 KiB pages) or a 16 KiB huge leaf
//! level 1 entry: a 4 KiB leaf
//!
//! entry bits:  0 VALID | 1 LEAF | 2 WRITE | 3 EXEC | 4 USER
//!              5 ACCESSED | 6 DIRTY | 7 GLOBAL | 8-11 reserved
//!              12-39 physical address | 40-63 reserved
//! ```
//!
//! Stricter than real formats, so malformed input is easy to produce: an
//! invalid entry must be all zero, a table entry has no permission bits, a
//! level-1 entry must be a leaf, a huge leaf's address is 16 KiB-aligned, and
//! there is one memory type (0). A valid leaf is always readable. The format
//! uses no atomics itself, so it works unchanged under `cfg(loom)` with any
//! [`TableAccess`](crate::table::TableAccess) over loom's atomics.

use crate::table::addr::{PhysAddr, VirtAddr};
use crate::table::entry::{Entry, LeafEntry, MemType, Perms, TableEntry};
use crate::table::error::{DecodeError, EncodeError};
use crate::table::format::{Geometry, LevelShape, PagingFormat};

/// The toy format (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Toy;

const VALID: u64 = 1 << 0;
const LEAF: u64 = 1 << 1;
const WRITE: u64 = 1 << 2;
const EXEC: u64 = 1 << 3;
const USER: u64 = 1 << 4;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const GLOBAL: u64 = 1 << 7;
const ATTRS: u64 = WRITE | EXEC | USER | ACCESSED | DIRTY | GLOBAL;
/// Bits 12-39.
const ADDR: u64 = ((1 << 40) - 1) & !0xfff;

/// The format's permission bits and the [`Perms`] they stand for.
const PERM_BITS: [(u64, Perms); 6] = [
    (WRITE, Perms::WRITE),
    (EXEC, Perms::EXEC),
    (USER, Perms::USER),
    (ACCESSED, Perms::ACCESSED),
    (DIRTY, Perms::DIRTY),
    (GLOBAL, Perms::GLOBAL),
];

// SAFETY: (1) an all-zero entry has VALID clear and decodes as absent; (2)
// `decode` is a pure function of its arguments; (3) tables only at level 0 and
// leaves only at levels that hold them (both), with the address masked to the
// leaf size; (4) the encoders set exactly the bits `decode` reads back, and
// always VALID; (5) they accept every aligned address below 2^40; (6) the
// canonical set is the one interval 0..2^16.
unsafe impl PagingFormat for Toy {
    const NAME: &'static str = "toy 2-level";

    const GEOMETRY: Geometry = Geometry::new(12, &[LevelShape::leaves(2), LevelShape::leaves(2)]);

    #[inline]
    fn is_canonical(va: VirtAddr) -> bool {
        va.0 >> Self::GEOMETRY.va_bits() == 0
    }

    fn decode(raw: u64, level: usize) -> Result<Entry, DecodeError> {
        if level >= Self::GEOMETRY.depth() {
            return Err(DecodeError::NoSuchLevel { level });
        }
        if raw & VALID == 0 {
            return match raw {
                0 => Ok(Entry::Absent),
                bits => Err(DecodeError::ReservedBits { bits }),
            };
        }
        let reserved = if raw & LEAF == 0 {
            !(VALID | ADDR)
        } else {
            // A leaf's address is aligned to the leaf size. `level < depth`
            // (checked above) and its shift is 12 or 14: in range, no wrap.
            let offset = (1 << Self::GEOMETRY.shift_at(level)) - 1;
            !(VALID | LEAF | ATTRS | ADDR) | (ADDR & offset)
        };
        if raw & reserved != 0 {
            return Err(DecodeError::ReservedBits {
                bits: raw & reserved,
            });
        }
        let pa = PhysAddr(raw & ADDR);
        if raw & LEAF == 0 {
            // `level < depth` (checked above): `level + 1` does not overflow.
            if level + 1 == Self::GEOMETRY.depth() {
                return Err(DecodeError::TableNotAllowed { level });
            }
            return Ok(Entry::Table(TableEntry {
                table: pa,
                grants: Perms::GRANTS,
            }));
        }
        let perms = PERM_BITS
            .iter()
            .filter(|(bit, _)| raw & bit != 0)
            .fold(Perms::READ, |perms, (_, p)| perms | *p);
        Ok(Entry::Leaf(LeafEntry {
            pa,
            perms,
            mem_type: MemType(0),
        }))
    }

    fn encode_table(table: PhysAddr, level: usize) -> Result<u64, EncodeError> {
        if !Self::GEOMETRY.holds_tables(level) {
            return Err(EncodeError::NoSuchLevel { level });
        }
        if table.0 & !ADDR != 0 {
            return Err(EncodeError::UnencodableAddress { pa: table });
        }
        Ok(table.0 | VALID)
    }

    fn encode_leaf(leaf: &LeafEntry, level: usize) -> Result<u64, EncodeError> {
        let size = Self::GEOMETRY
            .leaf_size(level)
            .ok_or(EncodeError::NoSuchLevel { level })?;
        // `size` is a leaf size (4 or 16 KiB): no wrap.
        if leaf.pa.0 & !ADDR != 0 || leaf.pa.0 & (size - 1) != 0 {
            return Err(EncodeError::UnencodableAddress { pa: leaf.pa });
        }
        if !leaf.perms.contains(Perms::READ) {
            return Err(EncodeError::UnsupportedPerms { perms: leaf.perms });
        }
        if leaf.mem_type != MemType(0) {
            return Err(EncodeError::UnsupportedMemType {
                mem_type: leaf.mem_type,
            });
        }
        let attrs = PERM_BITS
            .iter()
            .filter(|(_, p)| leaf.perms.contains(*p))
            .fold(0, |raw, (bit, _)| raw | bit);
        Ok(leaf.pa.0 | VALID | LEAF | attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(pa: u64, perms: Perms) -> Entry {
        Entry::Leaf(LeafEntry {
            pa: PhysAddr(pa),
            perms,
            mem_type: MemType(0),
        })
    }

    #[test]
    fn decodes_each_kind_of_entry() {
        assert_eq!(Toy::decode(0, 0), Ok(Entry::Absent));
        assert_eq!(Toy::decode(0, 1), Ok(Entry::Absent));
        assert_eq!(
            Toy::decode(0x5000 | VALID, 0),
            Ok(Entry::Table(TableEntry {
                table: PhysAddr(0x5000),
                grants: Perms::GRANTS
            }))
        );
        assert_eq!(
            Toy::decode(0x8000 | VALID | LEAF | WRITE | DIRTY, 0),
            Ok(leaf(0x8000, Perms::READ | Perms::WRITE | Perms::DIRTY))
        );
        assert_eq!(
            Toy::decode(0x5000 | VALID | LEAF | USER | EXEC, 1),
            Ok(leaf(0x5000, Perms::READ | Perms::USER | Perms::EXEC))
        );
    }

    #[test]
    fn rejects_malformed_entries() {
        let reserved = |bits| Err(DecodeError::ReservedBits { bits });
        assert_eq!(Toy::decode(0x5000, 0), reserved(0x5000));
        assert_eq!(Toy::decode(VALID | 1 << 8, 1), reserved(1 << 8));
        assert_eq!(Toy::decode(VALID | LEAF | 1 << 40, 1), reserved(1 << 40));
        // A huge leaf's address is 16 KiB-aligned.
        assert_eq!(Toy::decode(0x5000 | VALID | LEAF, 0), reserved(0x1000));
        // Table entries carry no permissions.
        assert_eq!(Toy::decode(0x4000 | VALID | WRITE, 0), reserved(WRITE));
        assert_eq!(
            Toy::decode(0x4000 | VALID, 1),
            Err(DecodeError::TableNotAllowed { level: 1 })
        );
        assert_eq!(
            Toy::decode(0, 2),
            Err(DecodeError::NoSuchLevel { level: 2 })
        );
    }

    #[test]
    fn encoding_round_trips_and_refuses_what_it_cannot_hold() {
        for bits in 0..=Perms::all().bits() {
            let perms = Perms::from_bits_truncate(bits) | Perms::READ;
            for (level, pa) in [(0, 0xc000), (1, 0x3000)] {
                let entry = LeafEntry {
                    pa: PhysAddr(pa),
                    perms,
                    mem_type: MemType(0),
                };
                let raw = Toy::encode_leaf(&entry, level).unwrap();
                assert_eq!(Toy::decode(raw, level), Ok(Entry::Leaf(entry)));
            }
        }
        let raw = Toy::encode_table(PhysAddr(0x7000), 0).unwrap();
        assert_eq!(
            Toy::decode(raw, 0),
            Ok(Entry::Table(TableEntry {
                table: PhysAddr(0x7000),
                grants: Perms::GRANTS
            }))
        );
        let entry = |pa, perms, mem_type| LeafEntry {
            pa: PhysAddr(pa),
            perms,
            mem_type: MemType(mem_type),
        };
        assert_eq!(
            Toy::encode_table(PhysAddr(0x7000), 1),
            Err(EncodeError::NoSuchLevel { level: 1 })
        );
        assert_eq!(
            Toy::encode_table(PhysAddr(0x7800), 0),
            Err(EncodeError::UnencodableAddress {
                pa: PhysAddr(0x7800)
            })
        );
        assert_eq!(
            Toy::encode_leaf(&entry(0x1000, Perms::READ, 0), 0),
            Err(EncodeError::UnencodableAddress {
                pa: PhysAddr(0x1000)
            })
        );
        assert_eq!(
            Toy::encode_leaf(&entry(1 << 40, Perms::READ, 0), 1),
            Err(EncodeError::UnencodableAddress {
                pa: PhysAddr(1 << 40)
            })
        );
        assert_eq!(
            Toy::encode_leaf(&entry(0x1000, Perms::WRITE, 0), 1),
            Err(EncodeError::UnsupportedPerms {
                perms: Perms::WRITE
            })
        );
        assert_eq!(
            Toy::encode_leaf(&entry(0x1000, Perms::READ, 1), 1),
            Err(EncodeError::UnsupportedMemType {
                mem_type: MemType(1)
            })
        );
        assert_eq!(
            Toy::encode_leaf(&entry(0x1000, Perms::READ, 0), 2),
            Err(EncodeError::NoSuchLevel { level: 2 })
        );
    }

    #[test]
    fn canonical_addresses_are_the_low_64_kib() {
        assert!(Toy::is_canonical(VirtAddr(0xffff)));
        assert!(!Toy::is_canonical(VirtAddr(0x1_0000)));
        assert_eq!(Toy::GEOMETRY.leaf_size(0), Some(0x4000));
        assert_eq!(Toy::GEOMETRY.entries(0), Some(4));
    }
}
