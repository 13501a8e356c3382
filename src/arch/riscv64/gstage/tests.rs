//! G-stage decoding checked against the RISC-V Privileged Architecture
//! 20211203, §8.5.1 "Guest Physical Address Translation" (the ×4 root, GPA
//! widths, U-mode accesses, G bit) and §8.2.10 (hgatp).

use super::*;
use crate::arch::riscv64::pte::{A, D, G, R, U, V, W, X};
use crate::table::{MemType, Perms, TableEntry};

const fn pte(pa: u64, bits: u64) -> u64 {
    (pa >> 12) << 10 | bits
}

fn leaf(pa: u64, perms: Perms) -> Result<Entry, DecodeError> {
    Ok(Entry::Leaf(LeafEntry {
        pa: PhysAddr(pa),
        perms,
        mem_type: MemType(0),
    }))
}

#[test]
fn the_root_is_four_tables_and_the_gpa_two_bits_wider() {
    // Sv39x4: 41-bit GPAs, a 16 KiB root of 2048 entries indexed by GPA
    // bits 40:30.
    assert_eq!(Sv39x4::GEOMETRY.va_bits(), 41);
    assert_eq!(Sv39x4::GEOMETRY.entries(0), Some(2048));
    assert_eq!(Sv39x4::GEOMETRY.entries(1), Some(512));
    assert_eq!(Sv39x4::GEOMETRY.leaf_size(0), Some(1 << 30));
    assert_eq!(Sv39x4::GEOMETRY.index(VirtAddr((1 << 41) - 1), 0), 2047);
    assert_eq!(Sv39x4::GEOMETRY.index(VirtAddr(1 << 40), 0), 1024);
    assert_eq!(
        (Sv48x4::GEOMETRY.va_bits(), Sv48x4::GEOMETRY.depth()),
        (50, 4)
    );
    assert_eq!(Sv48x4::GEOMETRY.leaf_size(0), Some(512 << 30));
    assert_eq!(
        (Sv57x4::GEOMETRY.va_bits(), Sv57x4::GEOMETRY.depth()),
        (59, 5)
    );
    assert_eq!(Sv57x4::GEOMETRY.entries(0), Some(2048));
    assert_eq!(Sv39x4::ROOT_TABLES as u64 * 4096, Sv39x4::ROOT_BYTES);
    assert_eq!(Sv39x4::NAME, "riscv64 G-stage Sv39x4");
}

#[test]
fn gpas_are_zero_extended() {
    // §8.5.1: GPA bits 63:41 must be zero (63:50, 63:59).
    assert!(Sv39x4::is_canonical(VirtAddr((1 << 41) - 1)));
    assert!(!Sv39x4::is_canonical(VirtAddr(1 << 41)));
    assert!(!Sv39x4::is_canonical(VirtAddr(u64::MAX)));
    assert!(Sv48x4::is_canonical(VirtAddr((1 << 50) - 1)));
    assert!(!Sv48x4::is_canonical(VirtAddr(1 << 50)));
    assert!(!Sv57x4::is_canonical(VirtAddr(1 << 59)));
}

#[test]
fn hgatp_fields() {
    // §8.2.10: MODE 63:60, VMID 57:44, PPN 43:0 with bits 1:0 zero for ×4.
    assert_eq!(
        Sv39x4::hgatp(PhysAddr(0x8010_4000), 0x3fff),
        Some(8 << 60 | 0x3fff << 44 | 0x80104)
    );
    assert_eq!(
        Sv48x4::hgatp(PhysAddr(0x8010_4000), 1).map(|h| h >> 60),
        Some(9)
    );
    assert_eq!(Sv57x4::HGATP_MODE, 10);
    assert_eq!(Sv39x4::hgatp(PhysAddr(0x8010_1000), 0), None);
    assert_eq!(Sv39x4::hgatp(PhysAddr(0x8010_4000), 1 << 14), None);
    assert_eq!(Sv39x4::hgatp(PhysAddr(1 << 56), 0), None);
}

#[test]
fn leaves_need_u_and_ignore_g() {
    // §8.5.1: G-stage accesses are U-mode accesses.
    let pa = 0x8000_5000;
    assert_eq!(
        Sv39x4::decode(pte(pa, V | R | W | X | U | A | D), 2),
        leaf(
            pa,
            Perms::READ | Perms::WRITE | Perms::EXEC | Perms::ACCESSED | Perms::DIRTY
        )
    );
    // U = 0: a valid leaf that every guest access faults on.
    assert_eq!(
        Sv39x4::decode(pte(pa, V | R | W | X | A), 2),
        leaf(pa, Perms::ACCESSED)
    );
    // G is not used by the G-stage: not reported.
    assert_eq!(
        Sv39x4::decode(pte(pa, V | R | U | G), 2),
        leaf(pa, Perms::READ)
    );
    assert_eq!(
        Sv39x4::decode(pte(pa, V | W | U), 2),
        Err(DecodeError::ReservedEncoding { field: W })
    );
}

#[test]
fn root_leaves_pointers_and_reserved_bits() {
    // A gigapage in the last of the four concatenated root tables.
    let gpa = (1u64 << 41) - (1 << 30);
    let pa = 0x3_c000_0000;
    assert_eq!(Sv39x4::GEOMETRY.index(VirtAddr(gpa), 0), 2047);
    assert_eq!(Sv39x4::decode(pte(pa, V | R | U), 0), leaf(pa, Perms::READ));
    assert_eq!(
        Sv39x4::decode(pte(pa + 0x1000, V | R | U), 0),
        Err(DecodeError::ReservedBits { bits: 1 << 10 })
    );
    assert_eq!(
        Sv39x4::decode(pte(0x8000_1000, V), 0),
        Ok(Entry::Table(TableEntry {
            table: PhysAddr(0x8000_1000),
            grants: Perms::GRANTS
        }))
    );
    assert_eq!(
        Sv39x4::decode(pte(0x8000_1000, V | U), 0),
        Err(DecodeError::ReservedBits { bits: U })
    );
    assert_eq!(
        Sv39x4::decode(pte(0x8000_1000, V), 2),
        Err(DecodeError::TableNotAllowed { level: 2 })
    );
    assert_eq!(
        Sv39x4::decode(pte(0x8000_1000, V | R | U) | 1 << 61, 2),
        Err(DecodeError::ReservedBits { bits: 1 << 61 })
    );
    assert_eq!(
        GStage::<3, true>::decode(pte(0x8000_1000, V | R | U) | 2 << 61, 2),
        Ok(Entry::Leaf(LeafEntry {
            pa: PhysAddr(0x8000_1000),
            perms: Perms::READ,
            mem_type: MemType(2)
        }))
    );
}

#[test]
fn the_encoder_sets_u_and_refuses_stage1_perms() {
    let leaf = LeafEntry {
        pa: PhysAddr(0x4000_0000),
        perms: Perms::READ | Perms::WRITE | Perms::ACCESSED,
        mem_type: MemType(0),
    };
    let raw = Sv39x4::encode_leaf(&leaf, 0).unwrap();
    assert_eq!(raw, pte(0x4000_0000, V | R | W | U | A));
    assert_eq!(Sv39x4::decode(raw, 0), Ok(Entry::Leaf(leaf)));
    for perms in [Perms::READ | Perms::USER, Perms::READ | Perms::GLOBAL] {
        assert_eq!(
            Sv39x4::encode_leaf(&LeafEntry { perms, ..leaf }, 0),
            Err(EncodeError::UnsupportedPerms { perms })
        );
    }
    assert_eq!(
        Sv39x4::encode_table(PhysAddr(0x8000_1000), 0),
        Ok(pte(0x8000_1000, V))
    );
}
