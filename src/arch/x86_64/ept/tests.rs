//! EPT decoding checked against the Intel SDM Vol. 3C §29.3.2 (§28.3.2 in
//! older editions): Tables 29-1 "Format of an EPT PML5 Entry", 29-2 "... EPT
//! PML4 Entry", 29-3 "... EPT PDPTE that Maps a 1-GByte Page", 29-4 "... EPT
//! PDPTE that References an EPT Page Directory", 29-5 "... EPT PDE that Maps a
//! 2-MByte Page", 29-6 "... EPT PDE that References an EPT Page Table", 29-7
//! "... EPT PTE that Maps a 4-KByte Page"; §29.3.3.1 "EPT Misconfigurations".

use super::*;

type E4 = Ept4Level;
type E5 = Ept5Level;
/// A processor with MAXPHYADDR = 39.
type E4M39 = Ept<4, 39>;

const PML4: usize = 0;
const PDPT: usize = 1;
const PD: usize = 2;
const PT: usize = 3;
/// Write-back.
const WB: u64 = 6 << 3;

const R: Perms = Perms::READ;
const W: Perms = Perms::WRITE;
const X: Perms = Perms::EXEC;

fn leaf(pa: u64, perms: Perms, mem_type: u8) -> Result<Entry, DecodeError> {
    Ok(Entry::Leaf(LeafEntry {
        pa: PhysAddr(pa),
        perms,
        mem_type: MemType(mem_type),
    }))
}

fn table(pa: u64, grants: Perms) -> Result<Entry, DecodeError> {
    Ok(Entry::Table(TableEntry {
        table: PhysAddr(pa),
        grants,
    }))
}

fn reserved(bits: u64) -> Result<Entry, DecodeError> {
    Err(DecodeError::ReservedBits { bits })
}

#[test]
fn entries_without_access_rights_are_not_present() {
    // "If bits 2:0 of an EPT paging-structure entry are all 0, the entry is
    // not present": every other bit is ignored.
    for level in 0..4 {
        assert_eq!(E4::decode(0, level), Ok(Entry::Absent));
        assert_eq!(E4::decode(!RWX, level), Ok(Entry::Absent));
    }
    assert_eq!(E5::decode(0xdead_0000_0000_0000, 4), Ok(Entry::Absent));
    assert_eq!(E4::decode(0, 4), Err(DecodeError::NoSuchLevel { level: 4 }));
    assert_eq!(
        E5::decode(READ, 5),
        Err(DecodeError::NoSuchLevel { level: 5 })
    );
}

#[test]
fn write_without_read_is_a_misconfiguration() {
    for level in 0..4 {
        for rights in [0b010, 0b110] {
            assert_eq!(
                E4::decode(0x1000 | rights, level),
                Err(DecodeError::ReservedEncoding { field: rights })
            );
        }
    }
    // Execute-only is allowed (with IA32_VMX_EPT_VPID_CAP bit 0).
    assert_eq!(E4::decode(0x1000 | EXEC, PT), leaf(0x1000, X, 0));
}

#[test]
fn pml5e_and_pml4e_reference_tables_and_reserve_bits_7_3() {
    assert_eq!(
        E4::decode(0x20_3000 | READ, PML4),
        table(0x20_3000, R | Perms::USER)
    );
    assert_eq!(
        E4::decode(0x20_3000 | RWX | ACCESSED, PML4),
        table(0x20_3000, Perms::GRANTS)
    );
    assert_eq!(
        E4::decode(0x20_3000 | RWX | LEAF, PML4),
        Err(DecodeError::LeafNotAllowed { level: PML4 })
    );
    assert_eq!(E4::decode(0x20_3000 | RWX | WB, PML4), reserved(WB));
    assert_eq!(
        E5::decode(0x20_3000 | RWX | IGNORE_PAT, 0),
        reserved(IGNORE_PAT)
    );
    assert_eq!(
        E5::decode(0x20_3000 | RWX | LEAF, 1),
        Err(DecodeError::LeafNotAllowed { level: 1 })
    );
    // Bits 11, 10 (user execute without MBEC), and 52-63 are ignored.
    let ignored = 1 << 11 | 1 << 10 | 0xfff << 52;
    assert_eq!(
        E5::decode(0x000f_ffff_ffff_f000 | RWX | ignored, 0),
        table(0x000f_ffff_ffff_f000, Perms::GRANTS)
    );
}

#[test]
fn pdpte_maps_1gib_or_references_a_page_directory() {
    assert_eq!(
        E4::decode(0x30_4000 | READ | WRITE, PDPT),
        table(0x30_4000, R | W | Perms::USER)
    );
    // Bits 6:3 of a PDPTE referencing a directory are reserved.
    assert_eq!(E4::decode(0x30_4000 | RWX | 1 << 3, PDPT), reserved(1 << 3));
    // Bit 7: a 1 GiB page; bits 29:12 reserved.
    assert_eq!(
        E4::decode(0x4000_0000 | RWX | LEAF | WB | ACCESSED | DIRTY, PDPT),
        leaf(0x4000_0000, R | W | X | Perms::ACCESSED | Perms::DIRTY, 6)
    );
    assert_eq!(
        E4::decode(0x4000_0000 | READ | LEAF | 1 << 29, PDPT),
        reserved(1 << 29)
    );
    assert_eq!(
        E4::decode(0x4000_0000 | READ | LEAF | 1 << 12, PDPT),
        reserved(1 << 12)
    );
    assert_eq!(
        E5::decode(0x8000_0000 | READ | LEAF | IGNORE_PAT, 2),
        leaf(0x8000_0000, R, 0b1000)
    );
}

#[test]
fn pde_maps_2mib_or_references_a_page_table() {
    assert_eq!(
        E4::decode(0x50_6000 | RWX, PD),
        table(0x50_6000, Perms::GRANTS)
    );
    assert_eq!(
        E4::decode(0x60_0000 | READ | EXEC | LEAF | 4 << 3, PD),
        leaf(0x60_0000, R | X, 4)
    );
    assert_eq!(
        E4::decode(0x60_0000 | READ | LEAF | 1 << 20, PD),
        reserved(1 << 20)
    );
    // Bit 21 is address.
    assert_eq!(
        E4::decode(0x20_0000 | READ | LEAF, PD),
        leaf(0x20_0000, R, 0)
    );
}

#[test]
fn pte_maps_4kib_with_memory_type_and_ignores_bit_7() {
    assert_eq!(E4::decode(0x5000 | READ | 1 << 3, PT), leaf(0x5000, R, 1));
    assert_eq!(E4::decode(0x5000 | READ | 5 << 3, PT), leaf(0x5000, R, 5));
    // Bit 7 of an EPT PTE is ignored.
    assert_eq!(
        E4::decode(0x5000 | READ | LEAF | WB, PT),
        leaf(0x5000, R, 6)
    );
    // Memory types 2, 3 and 7 are reserved: an EPT misconfiguration.
    for mt in [2u64, 3, 7] {
        assert_eq!(
            E4::decode(0x5000 | READ | mt << 3, PT),
            Err(DecodeError::ReservedEncoding { field: mt << 3 })
        );
    }
    assert_eq!(
        E4::decode(0x60_0000 | READ | LEAF | 7 << 3, PD),
        Err(DecodeError::ReservedEncoding { field: 7 << 3 })
    );
}

#[test]
fn address_bits_at_and_above_maxphyaddr_are_reserved() {
    for level in 0..4 {
        assert_eq!(E4M39::decode(1 << 39 | READ, level), reserved(1 << 39));
        assert_eq!(E4M39::decode(1 << 51 | READ, level), reserved(1 << 51));
    }
    assert_eq!(E4M39::decode(1 << 38 | READ, PT), leaf(1 << 38, R, 0));
    assert_eq!(E4::decode(1 << 51 | READ, PT), leaf(1 << 51, R, 0));
}

#[test]
fn leaves_round_trip_at_every_leaf_level() {
    let ept_perms = R | W | X | Perms::ACCESSED | Perms::DIRTY;
    for (level, pa) in [
        (PDPT, 0x000f_ffc0_0000_0000_u64),
        (PD, 0x000f_ffff_ffe0_0000),
        (PT, 0x000f_ffff_ffff_f000),
    ] {
        for bits in 0..=ept_perms.bits() {
            let perms = Perms::from_bits_truncate(bits) & ept_perms;
            for mem_type in [0u8, 1, 4, 5, 6, 8, 9, 12, 13, 14] {
                let entry = LeafEntry {
                    pa: PhysAddr(pa),
                    perms,
                    mem_type: MemType(mem_type),
                };
                let encoded = E4::encode_leaf(&entry, level);
                let rights = perms & (R | W | X);
                if rights.is_empty() || rights & (R | W) == W {
                    assert_eq!(encoded, Err(EncodeError::UnsupportedPerms { perms }));
                } else {
                    assert_eq!(E4::decode(encoded.unwrap(), level), Ok(Entry::Leaf(entry)));
                }
            }
        }
    }
    let raw = E5::encode_table(PhysAddr(0x1234_5000), 1).unwrap();
    assert_eq!(raw, 0x1234_5000 | RWX);
    assert_eq!(E5::decode(raw, 1), table(0x1234_5000, Perms::GRANTS));
}

#[test]
fn encoders_refuse_what_ept_cannot_hold() {
    let entry = |pa, perms, mem_type| LeafEntry {
        pa: PhysAddr(pa),
        perms,
        mem_type: MemType(mem_type),
    };
    assert_eq!(
        E4::encode_leaf(&entry(0, R, 6), PML4),
        Err(EncodeError::LeafNotAllowed { level: PML4 })
    );
    assert_eq!(
        E4::encode_leaf(&entry(0, R, 6), 4),
        Err(EncodeError::NoSuchLevel { level: 4 })
    );
    assert_eq!(
        E4::encode_leaf(&entry(0x20_1000, R, 6), PD),
        Err(EncodeError::UnencodableAddress {
            pa: PhysAddr(0x20_1000)
        })
    );
    assert_eq!(
        E4M39::encode_leaf(&entry(1 << 39, R, 6), PT),
        Err(EncodeError::UnencodableAddress {
            pa: PhysAddr(1 << 39)
        })
    );
    for perms in [R | Perms::USER, R | Perms::GLOBAL, Perms::ACCESSED] {
        assert_eq!(
            E4::encode_leaf(&entry(0x1000, perms, 6), PT),
            Err(EncodeError::UnsupportedPerms { perms })
        );
    }
    for bad in [2u8, 3, 7, 15, 16] {
        assert_eq!(
            E4::encode_leaf(&entry(0x1000, R, bad), PT),
            Err(EncodeError::UnsupportedMemType {
                mem_type: MemType(bad)
            })
        );
    }
    assert_eq!(
        E4::encode_table(PhysAddr(0x1000), PT),
        Err(EncodeError::NoSuchLevel { level: PT })
    );
    assert_eq!(
        E4::encode_table(PhysAddr(0x1800), PD),
        Err(EncodeError::UnencodableAddress {
            pa: PhysAddr(0x1800)
        })
    );
}

#[test]
fn guest_physical_addresses_are_canonical_below_2_48_or_2_57() {
    assert!(E4::is_canonical(VirtAddr((1 << 48) - 1)));
    assert!(!E4::is_canonical(VirtAddr(1 << 48)));
    assert!(!E4::is_canonical(VirtAddr(0xffff_8000_0000_0000)));
    assert!(E5::is_canonical(VirtAddr((1 << 57) - 1)));
    assert!(!E5::is_canonical(VirtAddr(1 << 57)));
    assert_eq!(E4::NAME, "x86_64 EPT 4-level");
    assert_eq!(E5::NAME, "x86_64 EPT 5-level");
}
