//! Decoding checked against the bit layouts of the Intel SDM, Vol. 3A §4.5:
//! the tables "Format of a PML5 Entry (PML5E)", "Format of a PML4 Entry
//! (PML4E)", "Format of a Page-Directory-Pointer-Table Entry (PDPTE) that Maps
//! a 1-GByte Page", "... that References a Page Directory", "Format of a
//! Page-Directory Entry that Maps a 2-MByte Page", "... that References a Page
//! Table", and "Format of a Page-Table Entry that Maps a 4-KByte Page"
//! (Tables 4-14 to 4-20 in recent editions).

use super::*;

type Pml4 = Paging4Level;
type Pml5 = Paging5Level;
/// A processor with MAXPHYADDR = 46.
type Pml4M46 = X86Paging<4, 46>;

// 4-level pagepin levels.
const PML4: usize = 0;
const PDPT: usize = 1;
const PD: usize = 2;
const PT: usize = 3;

fn table(pa: u64, grants: Perms) -> Result<Entry, DecodeError> {
    Ok(Entry::Table(TableEntry {
        table: PhysAddr(pa),
        grants,
    }))
}

fn leaf(pa: u64, perms: Perms, mem_type: u8) -> Result<Entry, DecodeError> {
    Ok(Entry::Leaf(LeafEntry {
        pa: PhysAddr(pa),
        perms,
        mem_type: MemType(mem_type),
    }))
}

fn reserved(bits: u64) -> Result<Entry, DecodeError> {
    Err(DecodeError::ReservedBits { bits })
}

const R: Perms = Perms::READ;
const RX: Perms = Perms::READ.union(Perms::EXEC);

#[test]
fn non_present_entries_are_absent_whatever_else_they_hold() {
    for level in 0..4 {
        assert_eq!(Pml4::decode(0, level), Ok(Entry::Absent));
        // P = 0: "the entry is not used", every other bit is ignored.
        assert_eq!(Pml4::decode(!P, level), Ok(Entry::Absent));
    }
    for level in 0..5 {
        assert_eq!(
            Pml5::decode(0xdead_beef_0000_0000, level),
            Ok(Entry::Absent)
        );
    }
    assert_eq!(
        Pml4::decode(0, 4),
        Err(DecodeError::NoSuchLevel { level: 4 })
    );
    assert_eq!(
        Pml5::decode(P, 5),
        Err(DecodeError::NoSuchLevel { level: 5 })
    );
}

#[test]
fn pml4e_and_pml5e_reference_tables_and_reserve_ps() {
    // PML4E: bits 51:12 are the PDPT's address; R/W, U/S and XD restrict the
    // whole 512 GiB region below it.
    assert_eq!(Pml4::decode(0x0010_1000 | P, PML4), table(0x10_1000, RX));
    assert_eq!(
        Pml4::decode(0x0010_1000 | P | RW | US | XD, PML4),
        table(0x10_1000, R | Perms::WRITE | Perms::USER)
    );
    // Bit 7 (PS) is reserved in a PML4E and a PML5E.
    assert_eq!(
        Pml4::decode(0x0010_1000 | P | PS, PML4),
        Err(DecodeError::LeafNotAllowed { level: PML4 })
    );
    assert_eq!(
        Pml5::decode(0x0010_1000 | P | PS, 0),
        Err(DecodeError::LeafNotAllowed { level: 0 })
    );
    assert_eq!(
        Pml5::decode(0x0010_1000 | P | PS, 1),
        Err(DecodeError::LeafNotAllowed { level: 1 })
    );
    // Ignored bits (6, 8-11, 52-62) change nothing.
    let ignored = D | G | 0xe00 | (0x7ff << 52);
    assert_eq!(
        Pml5::decode(0x000f_ffff_ffff_f000 | ignored | P | RW, 0),
        table(0x000f_ffff_ffff_f000, RX | Perms::WRITE)
    );
}

#[test]
fn pdpte_maps_a_1gib_page_or_references_a_page_directory() {
    // PS = 0: bits 51:12 address a page directory.
    assert_eq!(
        Pml4::decode(0x0020_3000 | P | RW, PDPT),
        table(0x20_3000, RX | Perms::WRITE)
    );
    // PS = 1: bits 51:30 address a 1 GiB page; bit 12 is PAT; 29:13 reserved.
    assert_eq!(
        Pml4::decode(0x4000_0000 | P | PS, PDPT),
        leaf(0x4000_0000, RX, 0)
    );
    assert_eq!(
        Pml4::decode(0x4000_0000 | P | PS | PAT_HUGE, PDPT),
        leaf(0x4000_0000, RX, 4)
    );
    assert_eq!(
        Pml4::decode(0x4000_0000 | P | PS | 1 << 13, PDPT),
        reserved(1 << 13)
    );
    assert_eq!(
        Pml4::decode(0x4000_0000 | P | PS | 1 << 29, PDPT),
        reserved(1 << 29)
    );
    assert_eq!(
        Pml4::decode(0x4000_0000 | P | PS | 0x3fff_e000, PDPT),
        reserved(0x3fff_e000)
    );
    // In 5-level paging the PDPT is level 2.
    assert_eq!(
        Pml5::decode(0x8000_0000 | P | PS | US, 2),
        leaf(0x8000_0000, RX | Perms::USER, 0)
    );
}

#[test]
fn pde_maps_a_2mib_page_or_references_a_page_table() {
    assert_eq!(Pml4::decode(0x0030_4000 | P, PD), table(0x30_4000, RX));
    // PS = 1: bits 51:21 address a 2 MiB page; bit 12 PAT; 20:13 reserved.
    assert_eq!(
        Pml4::decode(0x0060_0000 | P | PS, PD),
        leaf(0x60_0000, RX, 0)
    );
    assert_eq!(
        Pml4::decode(0x0060_0000 | P | PS | 1 << 20, PD),
        reserved(1 << 20)
    );
    assert_eq!(
        Pml4::decode(0x0060_0000 | P | PS | 0x1f_e000, PD),
        reserved(0x1f_e000)
    );
    // Bit 21 is part of the address, not reserved.
    assert_eq!(
        Pml4::decode(0x0020_0000 | P | PS, PD),
        leaf(0x20_0000, RX, 0)
    );
    assert_eq!(
        Pml4::decode(0x0060_0000 | P | PS | PAT_HUGE | PCD | PWT, PD),
        leaf(0x60_0000, RX, 7)
    );
}

#[test]
fn pte_maps_a_4kib_page_with_pat_in_bit_7() {
    assert_eq!(Pml4::decode(0x0000_5000 | P, PT), leaf(0x5000, RX, 0));
    // Bit 7 of a PTE is PAT, not PS; bit 12 is address.
    assert_eq!(
        Pml4::decode(0x0000_5000 | P | PAT_4K, PT),
        leaf(0x5000, RX, 4)
    );
    assert_eq!(Pml4::decode(0x0000_1000 | P | PWT, PT), leaf(0x1000, RX, 1));
    assert_eq!(Pml4::decode(0x0000_1000 | P | PCD, PT), leaf(0x1000, RX, 2));
    let all =
        Perms::READ | Perms::WRITE | Perms::USER | Perms::ACCESSED | Perms::DIRTY | Perms::GLOBAL;
    assert_eq!(
        Pml4::decode(0x000f_ffff_ffff_f000 | P | RW | US | A | D | G | XD, PT),
        leaf(0x000f_ffff_ffff_f000, all, 0)
    );
    // Software-available bits 9-11 and 52-58, protection key 59-62: ignored.
    assert_eq!(
        Pml4::decode(0x5000 | P | 0xe00 | (0x7ff << 52), PT),
        leaf(0x5000, RX, 0)
    );
    // A table entry at the PT level does not exist: PS there is PAT.
    assert_eq!(Pml5::decode(0x5000 | P | PAT_4K, 4), leaf(0x5000, RX, 4));
}

#[test]
fn address_bits_at_and_above_maxphyaddr_are_reserved() {
    // MAXPHYADDR = 46: bits 51:46 must be 0 in every present entry.
    for level in 0..4 {
        assert_eq!(Pml4M46::decode(1 << 46 | P, level), reserved(1 << 46));
        assert_eq!(Pml4M46::decode(1 << 51 | P, level), reserved(1 << 51));
    }
    assert_eq!(Pml4M46::decode(1 << 45 | P, PT), leaf(1 << 45, RX, 0));
    // Not present: not checked.
    assert_eq!(Pml4M46::decode(1 << 51, PT), Ok(Entry::Absent));
    // MAXPHYADDR = 52: bit 51 is address.
    assert_eq!(Pml4::decode(1 << 51 | P, PT), leaf(1 << 51, RX, 0));
}

#[test]
fn leaves_round_trip_at_every_leaf_level() {
    let pa = |level| match level {
        PDPT => 0x000f_ffc0_0000_0000_u64,
        PD => 0x000f_ffff_ffe0_0000,
        _ => 0x000f_ffff_ffff_f000,
    };
    for level in [PDPT, PD, PT] {
        for bits in 0..=Perms::all().bits() {
            for mem_type in 0..8 {
                let entry = LeafEntry {
                    pa: PhysAddr(pa(level)),
                    perms: Perms::from_bits_truncate(bits) | Perms::READ,
                    mem_type: MemType(mem_type),
                };
                let raw = Pml4::encode_leaf(&entry, level).unwrap();
                if level == PT {
                    assert_eq!(
                        raw & PAT_4K != 0,
                        mem_type & 4 != 0,
                        "bit 7 is PAT in a PTE"
                    );
                } else {
                    assert!(raw & PS != 0, "PS in a huge leaf");
                }
                assert_eq!(Pml4::decode(raw, level), Ok(Entry::Leaf(entry)));
            }
        }
    }
    let raw = Pml5::encode_table(PhysAddr(0x1234_5000), 1).unwrap();
    assert_eq!(raw, 0x1234_5000 | P | RW | US);
    assert_eq!(Pml5::decode(raw, 1), table(0x1234_5000, Perms::GRANTS));
}

#[test]
fn encoders_refuse_what_the_format_cannot_hold() {
    let entry = |pa, perms, mem_type| LeafEntry {
        pa: PhysAddr(pa),
        perms,
        mem_type: MemType(mem_type),
    };
    assert_eq!(
        Pml4::encode_leaf(&entry(0, R, 0), PML4),
        Err(EncodeError::LeafNotAllowed { level: PML4 })
    );
    assert_eq!(
        Pml5::encode_leaf(&entry(0, R, 0), 1),
        Err(EncodeError::LeafNotAllowed { level: 1 })
    );
    assert_eq!(
        Pml4::encode_leaf(&entry(0, R, 0), 4),
        Err(EncodeError::NoSuchLevel { level: 4 })
    );
    assert_eq!(
        Pml4::encode_leaf(&entry(0x20_1000, R, 0), PD),
        Err(EncodeError::UnencodableAddress {
            pa: PhysAddr(0x20_1000)
        })
    );
    assert_eq!(
        Pml4M46::encode_leaf(&entry(1 << 46, R, 0), PT),
        Err(EncodeError::UnencodableAddress {
            pa: PhysAddr(1 << 46)
        })
    );
    assert_eq!(
        Pml4::encode_leaf(&entry(0x1000, Perms::WRITE, 0), PT),
        Err(EncodeError::UnsupportedPerms {
            perms: Perms::WRITE
        })
    );
    assert_eq!(
        Pml4::encode_leaf(&entry(0x1000, R, 8), PT),
        Err(EncodeError::UnsupportedMemType {
            mem_type: MemType(8)
        })
    );
    assert_eq!(
        Pml4::encode_table(PhysAddr(0x1000), PT),
        Err(EncodeError::NoSuchLevel { level: PT })
    );
    assert_eq!(
        Pml4::encode_table(PhysAddr(0x1800), PD),
        Err(EncodeError::UnencodableAddress {
            pa: PhysAddr(0x1800)
        })
    );
}

#[test]
fn canonical_addresses_are_sign_extended_from_bit_47_or_56() {
    assert!(Pml4::is_canonical(VirtAddr(0x0000_7fff_ffff_ffff)));
    assert!(!Pml4::is_canonical(VirtAddr(0x0000_8000_0000_0000)));
    assert!(Pml4::is_canonical(VirtAddr(0xffff_8000_0000_0000)));
    assert!(Pml5::is_canonical(VirtAddr(0x0000_8000_0000_0000)));
    assert!(Pml5::is_canonical(VirtAddr(0x00ff_ffff_ffff_ffff)));
    assert!(!Pml5::is_canonical(VirtAddr(0x0100_0000_0000_0000)));
    assert!(Pml5::is_canonical(VirtAddr(0xff00_0000_0000_0000)));
    assert_eq!(Pml4::GEOMETRY.va_bits(), 48);
    assert_eq!(Pml5::GEOMETRY.va_bits(), 57);
    assert_eq!(Pml5::GEOMETRY.leaf_level(1 << 30), Some(2));
    assert_eq!(Pml4::NAME, "x86_64 4-level");
    assert_eq!(Pml5::NAME, "x86_64 5-level");
}
