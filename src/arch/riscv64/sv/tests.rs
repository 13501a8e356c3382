//! Sv39/Sv48/Sv57 decoding checked against the RISC-V Privileged Architecture
//! 20211203: §4.3.1 Table 4.5 "Encoding of PTE R/W/X fields", §4.3.2 "Virtual
//! Address Translation Process" (steps 3, 4 and 6), §4.4.1 Figures 4.19-4.21
//! (Sv39 virtual address, physical address, PTE), §4.5.1 and §4.6.1 (Sv48,
//! Sv57), Chapter 5 (Svnapot, Table 5.1) and Chapter 6 (Svpbmt, Table 6.1).

use super::*;
use crate::arch::riscv64::pte::{A, D, G, PBMT, U, X};
use crate::table::{MemType, Perms, TableEntry};

const RD: Perms = Perms::READ;
const WR: Perms = Perms::WRITE;
const EX: Perms = Perms::EXEC;

/// A raw PTE with PPN = `pa >> 12` and the given low bits.
const fn pte(pa: u64, bits: u64) -> u64 {
    (pa >> 12) << 10 | bits
}

fn leaf(pa: u64, perms: Perms, mem_type: u8) -> Result<Entry, DecodeError> {
    Ok(Entry::Leaf(LeafEntry {
        pa: PhysAddr(pa),
        perms,
        mem_type: MemType(mem_type),
    }))
}

fn table(pa: u64) -> Result<Entry, DecodeError> {
    Ok(Entry::Table(TableEntry {
        table: PhysAddr(pa),
        grants: Perms::GRANTS,
    }))
}

#[test]
fn geometry_of_the_three_modes() {
    // §4.4.1: 39-bit VAs, three 9-bit VPN fields, 4 KiB pages.
    assert_eq!(Sv39::GEOMETRY.depth(), 3);
    assert_eq!(Sv39::GEOMETRY.va_bits(), 39);
    assert_eq!(Sv39::GEOMETRY.entries(0), Some(512));
    assert_eq!(Sv39::GEOMETRY.leaf_size(0), Some(1 << 30));
    assert_eq!(Sv39::GEOMETRY.leaf_size(1), Some(2 << 20));
    assert_eq!(Sv39::GEOMETRY.leaf_size(2), Some(4 << 10));
    // §4.5.1: 48 bits, 4 levels, terapages; §4.6.1: 57 bits, 5 levels,
    // petapages.
    assert_eq!((Sv48::GEOMETRY.depth(), Sv48::GEOMETRY.va_bits()), (4, 48));
    assert_eq!(Sv48::GEOMETRY.leaf_size(0), Some(512 << 30));
    assert_eq!((Sv57::GEOMETRY.depth(), Sv57::GEOMETRY.va_bits()), (5, 57));
    assert_eq!(Sv57::GEOMETRY.leaf_size(0), Some(256 << 40));
    // VPN[2] of Sv39 is VA bits 38:30.
    assert_eq!(Sv39::GEOMETRY.index(VirtAddr(0x7f_c000_0000), 0), 511);
    assert_eq!(Sv39::GEOMETRY.index(VirtAddr(0x0000_0000_0020_1000), 1), 1);
    assert_eq!(Sv39::GEOMETRY.index(VirtAddr(0x0000_0000_0020_1000), 2), 1);
    assert_eq!(
        (Sv39::SATP_MODE, Sv48::SATP_MODE, Sv57::SATP_MODE),
        (8, 9, 10)
    );
    assert_eq!(Sv39::NAME, "riscv64 Sv39");
    assert_eq!(Sv::<4, true>::NAME, "riscv64 Sv48 + Svpbmt");
}

#[test]
fn satp_fields() {
    // §4.1.11: MODE 63:60, ASID 59:44, PPN 43:0.
    assert_eq!(
        Sv48::satp(PhysAddr(0x8020_1000), 0x1234),
        9 << 60 | 0x1234 << 44 | 0x80201
    );
    assert_eq!(Sv57::satp(PhysAddr(0x1000), 0) >> 60, 10);
}

#[test]
fn canonical_addresses_are_sign_extended() {
    // §4.4.1: bits 63:39 must all equal bit 38.
    assert!(Sv39::is_canonical(VirtAddr(0x3f_ffff_ffff)));
    assert!(!Sv39::is_canonical(VirtAddr(0x40_0000_0000)));
    assert!(Sv39::is_canonical(VirtAddr(0xffff_ffc0_0000_0000)));
    assert!(!Sv39::is_canonical(VirtAddr(0xffff_ff80_0000_0000)));
    assert!(Sv48::is_canonical(VirtAddr(0x7fff_ffff_ffff)));
    assert!(!Sv48::is_canonical(VirtAddr(0x8000_0000_0000)));
    assert!(Sv48::is_canonical(VirtAddr(0xffff_8000_0000_0000)));
    assert!(Sv57::is_canonical(VirtAddr(0x00ff_ffff_ffff_ffff)));
    assert!(!Sv57::is_canonical(VirtAddr(0x0100_0000_0000_0000)));
    assert!(Sv57::is_canonical(VirtAddr(0xff00_0000_0000_0000)));
}

#[test]
fn v_clear_is_absent_whatever_else_is_set() {
    // §4.3.2 step 3: V = 0 is invalid; the other bits are free for software.
    for raw in [0, !V, pte(0x8000_0000, R | W | X), 1 << 63] {
        for level in 0..3 {
            assert_eq!(Sv39::decode(raw, level), Ok(Entry::Absent));
        }
    }
    assert_eq!(
        Sv39::decode(0, 3),
        Err(DecodeError::NoSuchLevel { level: 3 })
    );
    assert_eq!(Sv57::decode(0, 4), Ok(Entry::Absent));
}

#[test]
fn rwx_encodings() {
    // Table 4.5: 000 pointer, 001 read-only, 010 reserved, 011 read-write,
    // 100 execute-only, 101 read-execute, 110 reserved, 111 read-write-execute.
    let pa = 0x8000_5000;
    assert_eq!(Sv39::decode(pte(pa, V), 0), table(pa));
    assert_eq!(Sv39::decode(pte(pa, V | R), 2), leaf(pa, RD, 0));
    assert_eq!(
        Sv39::decode(pte(pa, V | W), 2),
        Err(DecodeError::ReservedEncoding { field: W })
    );
    assert_eq!(Sv39::decode(pte(pa, V | R | W), 2), leaf(pa, RD | WR, 0));
    assert_eq!(Sv39::decode(pte(pa, V | X), 2), leaf(pa, EX, 0));
    assert_eq!(Sv39::decode(pte(pa, V | R | X), 2), leaf(pa, RD | EX, 0));
    assert_eq!(
        Sv39::decode(pte(pa, V | W | X), 2),
        Err(DecodeError::ReservedEncoding { field: W | X })
    );
    assert_eq!(
        Sv39::decode(pte(pa, V | R | W | X), 2),
        leaf(pa, RD | WR | EX, 0)
    );
}

#[test]
fn u_g_a_d_and_rsw() {
    // Figure 4.21: U 4, G 5, A 6, D 7; RSW 9:8 is for software.
    let pa = 0x8000_5000;
    assert_eq!(
        Sv48::decode(pte(pa, V | R | W | U | G | A | D | 0b11 << 8), 3),
        leaf(
            pa,
            RD | WR | Perms::USER | Perms::GLOBAL | Perms::ACCESSED | Perms::DIRTY,
            0
        )
    );
    // A pointer may be global (everything below is) and have RSW bits.
    assert_eq!(Sv48::decode(pte(pa, V | G | 0b11 << 8), 1), table(pa));
}

#[test]
fn a_pointer_at_the_last_level_is_a_page_fault() {
    // §4.3.2 step 4: "if i < 0, stop and raise a page-fault exception".
    assert_eq!(
        Sv39::decode(pte(0x8000_5000, V), 2),
        Err(DecodeError::TableNotAllowed { level: 2 })
    );
    assert_eq!(
        Sv57::decode(pte(0x8000_5000, V), 4),
        Err(DecodeError::TableNotAllowed { level: 4 })
    );
}

#[test]
fn d_a_u_and_pbmt_are_reserved_in_pointers() {
    // §4.4.1: "For non-leaf PTEs, the D, A, and U bits are reserved";
    // Chapter 6: "For non-leaf PTEs, bits 62–61 are reserved".
    for bit in [U, A, D] {
        assert_eq!(
            Sv39::decode(pte(0x8000_5000, V | bit), 1),
            Err(DecodeError::ReservedBits { bits: bit })
        );
    }
    assert_eq!(
        Sv::<3, true>::decode(pte(0x8000_5000, V | 1 << 61), 1),
        Err(DecodeError::ReservedBits { bits: 1 << 61 })
    );
}

#[test]
fn reserved_high_bits() {
    // Figure 4.21: bits 60:54 reserved; 62:61 PBMT and 63 N reserved
    // without Svpbmt and Svnapot.
    let base = pte(0x8000_5000, V | R);
    for bit in 54..=63 {
        assert_eq!(
            Sv39::decode(base | 1 << bit, 2),
            Err(DecodeError::ReservedBits { bits: 1 << bit }),
            "bit {bit}"
        );
    }
    // With Svpbmt, 62:61 are PBMT, the rest stays reserved.
    for bit in (54..=60).chain([63]) {
        assert_eq!(
            Sv::<3, true>::decode(base | 1 << bit, 2),
            Err(DecodeError::ReservedBits { bits: 1 << bit })
        );
    }
}

#[test]
fn the_ppn_is_bits_53_to_10() {
    // 44-bit PPN: the highest page below 2^56 decodes; Sv39's PPN[2] is 26
    // bits (PTE bits 53:28).
    let top = (1u64 << 56) - 4096;
    assert_eq!(Sv39::decode(pte(top, V | R), 2), leaf(top, RD, 0));
    assert_eq!(pte(top, 0), PPN);
    assert_eq!(PPN >> 28, (1 << 26) - 1);
}

#[test]
fn misaligned_superpages_are_page_faults() {
    // §4.3.2 step 6: a leaf at i > 0 must have PPN[i−1:0] = 0.
    assert_eq!(
        Sv39::decode(pte(0x8020_0000, V | R), 1),
        leaf(0x8020_0000, RD, 0)
    );
    assert_eq!(
        Sv39::decode(pte(0x8020_1000, V | R), 1),
        Err(DecodeError::ReservedBits { bits: 1 << 10 })
    );
    assert_eq!(
        Sv39::decode(pte(0x8020_0000, V | R), 0),
        Err(DecodeError::ReservedBits {
            bits: pte(0x20_0000, 0)
        })
    );
    assert_eq!(
        Sv39::decode(pte(0x4000_0000, V | R), 0),
        leaf(0x4000_0000, RD, 0)
    );
    // Sv48 terapage, Sv57 petapage.
    assert_eq!(
        Sv48::decode(pte(512 << 30, V | R | X), 0),
        leaf(512 << 30, RD | EX, 0)
    );
    assert_eq!(
        Sv48::decode(pte(513 << 30, V | R), 0),
        Err(DecodeError::ReservedBits {
            bits: pte(1 << 30, 0)
        })
    );
    assert_eq!(
        Sv57::decode(pte(256 << 40, V | R), 0),
        leaf(256 << 40, RD, 0)
    );
}

#[test]
fn svpbmt_memory_types() {
    // Table 6.1: 0 PMA, 1 NC, 2 IO, 3 reserved.
    type P = Sv<3, true>;
    let base = pte(0x8000_5000, V | R | W);
    assert_eq!(P::decode(base, 2), leaf(0x8000_5000, RD | WR, 0));
    assert_eq!(P::decode(base | 1 << 61, 2), leaf(0x8000_5000, RD | WR, 1));
    assert_eq!(P::decode(base | 2 << 61, 2), leaf(0x8000_5000, RD | WR, 2));
    assert_eq!(
        P::decode(base | 3 << 61, 2),
        Err(DecodeError::ReservedEncoding { field: PBMT })
    );
}

#[test]
fn svnapot_leaves_are_refused_by_decode_and_read_by_napot_leaf() {
    // Table 5.1: N = 1, PPN[0][3:0] = 1000 is a 64 KiB NAPOT leaf; the PA is
    // the PPN with bits 3:0 replaced by VPN[0][3:0].
    let raw = N | pte(0x8011_8000, V | R | W | A | D);
    assert_eq!(
        Sv39::decode(raw, 2),
        Err(DecodeError::ReservedBits { bits: N })
    );
    let got = Sv39::napot_leaf(raw, 2, VirtAddr(0x40_3000 + 0x123)).unwrap();
    let block = LeafEntry {
        pa: PhysAddr(0x8011_0000),
        perms: RD | WR | Perms::ACCESSED | Perms::DIRTY,
        mem_type: MemType(0),
    };
    assert_eq!(
        got,
        Some(NapotLeaf {
            block,
            page: PhysAddr(0x8011_3000)
        })
    );
    // Not N: not a NAPOT leaf.
    assert_eq!(
        Sv39::napot_leaf(pte(0x8011_8000, V | R), 2, VirtAddr(0)),
        Ok(None)
    );
    // Reserved NAPOT encodings: PPN[0][3:0] ≠ 1000, N above the last level, N
    // in a pointer.
    let field = |raw: u64| {
        Err(DecodeError::ReservedEncoding {
            field: raw & (N | 0xf << 10),
        })
    };
    let bad = N | pte(0x8011_4000, V | R);
    assert_eq!(Sv39::napot_leaf(bad, 2, VirtAddr(0)), field(bad));
    let bad = N | pte(0x8011_8000, V | R);
    assert_eq!(Sv39::napot_leaf(bad, 1, VirtAddr(0)), field(bad));
    let bad = N | pte(0x8011_8000, V);
    assert_eq!(Sv39::napot_leaf(bad, 2, VirtAddr(0)), field(bad));
    // The rest of the entry is still checked.
    assert_eq!(
        Sv39::napot_leaf(raw | 1 << 54, 2, VirtAddr(0)),
        Err(DecodeError::ReservedBits { bits: 1 << 54 })
    );
}

#[test]
fn encoders_round_trip_and_refuse_what_they_cannot_say() {
    let perms = RD | WR | EX | Perms::USER | Perms::GLOBAL | Perms::ACCESSED | Perms::DIRTY;
    for level in 0..3 {
        let size = Sv39::GEOMETRY.leaf_size(level).unwrap();
        let leaf = LeafEntry {
            pa: PhysAddr(size * 3),
            perms,
            mem_type: MemType(0),
        };
        let raw = Sv39::encode_leaf(&leaf, level).unwrap();
        assert_eq!(Sv39::decode(raw, level), Ok(Entry::Leaf(leaf)));
        let misaligned = LeafEntry {
            pa: PhysAddr(size * 3 + 4096),
            ..leaf
        };
        if level < 2 {
            assert_eq!(
                Sv39::encode_leaf(&misaligned, level),
                Err(EncodeError::UnencodableAddress { pa: misaligned.pa })
            );
        }
    }
    let raw = Sv48::encode_table(PhysAddr(0x8000_3000), 2).unwrap();
    assert_eq!(raw, pte(0x8000_3000, V));
    assert_eq!(Sv48::decode(raw, 2), table(0x8000_3000));
    assert_eq!(
        Sv48::encode_table(PhysAddr(0x8000_3000), 3),
        Err(EncodeError::NoSuchLevel { level: 3 })
    );
    assert_eq!(
        Sv48::encode_table(PhysAddr(1 << 56), 0),
        Err(EncodeError::UnencodableAddress {
            pa: PhysAddr(1 << 56)
        })
    );
    let mk = |perms, mem_type| LeafEntry {
        pa: PhysAddr(0x1000),
        perms,
        mem_type: MemType(mem_type),
    };
    for bad in [Perms::empty(), WR, WR | EX, Perms::USER | Perms::ACCESSED] {
        assert_eq!(
            Sv39::encode_leaf(&mk(bad, 0), 2),
            Err(EncodeError::UnsupportedPerms { perms: bad })
        );
    }
    assert_eq!(
        Sv39::encode_leaf(&mk(RD, 1), 2),
        Err(EncodeError::UnsupportedMemType {
            mem_type: MemType(1)
        })
    );
    for mem_type in 0..3 {
        let leaf = mk(RD | WR, mem_type);
        let raw = Sv::<3, true>::encode_leaf(&leaf, 2).unwrap();
        assert_eq!(Sv::<3, true>::decode(raw, 2), Ok(Entry::Leaf(leaf)));
    }
    assert_eq!(
        Sv::<3, true>::encode_leaf(&mk(RD, 3), 2),
        Err(EncodeError::UnsupportedMemType {
            mem_type: MemType(3)
        })
    );
    assert_eq!(
        Sv39::encode_leaf(&mk(RD, 0), 3),
        Err(EncodeError::NoSuchLevel { level: 3 })
    );
    // The encoders write X and U where the spec puts them.
    assert_eq!(
        Sv39::encode_leaf(&mk(EX | Perms::USER, 0), 2),
        Ok(pte(0x1000, V | X | U))
    );
}
