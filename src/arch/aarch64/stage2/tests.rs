//! Stage 2 decoding checked against the Arm ARM (DDI 0487 K.a), D8.3
//! "Translation table descriptor formats" (stage 2 block and page attribute
//! fields), D8.4.2 "Stage 2 data access permissions" (S2AP), D8.4.3 "Execute
//! permissions" (XN[1:0]), D8.6.5 "Stage 2 memory type and Cacheability
//! attributes when FEAT_S2FWB is disabled" (MemAttr), and D8.2.8
//! "Concatenating translation tables at the initial level of lookup".

use super::*;
use crate::arch::aarch64::descriptor::{TABLE_OR_PAGE, VALID};
use crate::arch::aarch64::{Shareability, stage2_mem_type};

type G4K40 = Stage2G4K40;
type G4K48 = Stage2G4K48;
type G16K40 = Stage2G16K40;
type G64K48 = Stage2G64K48;
type G64K46 = Stage2<16, 46>;

const PAGE: u64 = VALID | TABLE_OR_PAGE;
const BLOCK: u64 = VALID;
/// Normal, Outer and Inner Write-Back.
const NORMAL_WB: u64 = 0b1111 << 2;

fn leaf(pa: u64, perms: Perms, mem_type: u8) -> Result<Entry, DecodeError> {
    Ok(Entry::Leaf(LeafEntry {
        pa: PhysAddr(pa),
        perms,
        mem_type: MemType(mem_type),
    }))
}

const R: Perms = Perms::READ;
const W: Perms = Perms::WRITE;
const X: Perms = Perms::EXEC;

#[test]
fn start_levels_and_concatenated_tables_follow_the_ipa_size() {
    // 40-bit IPA, 4 KiB: level 1 with 2 concatenated tables (1024 entries).
    assert_eq!((G4K40::DEPTH, G4K40::START_LEVEL), (3, 1));
    assert_eq!(G4K40::CONCATENATED_TABLES, 2);
    assert_eq!(G4K40::GEOMETRY.entries(0), Some(1024));
    assert_eq!(G4K40::GEOMETRY.leaf_size(0), Some(1 << 30));
    // 48-bit IPA, 4 KiB: a full level 0 table.
    assert_eq!((G4K48::DEPTH, G4K48::START_LEVEL), (4, 0));
    assert_eq!(G4K48::CONCATENATED_TABLES, 1);
    // 43 bits: the 16-table maximum at level 1; 44 bits: back to level 0.
    assert_eq!(Stage2::<12, 43>::CONCATENATED_TABLES, 16);
    assert_eq!(Stage2::<12, 44>::START_LEVEL, 0);
    assert_eq!(Stage2::<12, 44>::GEOMETRY.entries(0), Some(32));
    // 16 KiB, 40 bits: level 2 with 16 tables.
    assert_eq!((G16K40::DEPTH, G16K40::START_LEVEL), (2, 2));
    assert_eq!(G16K40::CONCATENATED_TABLES, 16);
    assert_eq!(G16K40::GEOMETRY.entries(0), Some(32768));
    // 64 KiB: 48 bits start at level 1 (64 entries), 46 bits at level 2 with
    // 16 tables of 8192 entries.
    assert_eq!((G64K48::START_LEVEL, G64K48::CONCATENATED_TABLES), (1, 1));
    assert_eq!(G64K48::GEOMETRY.entries(0), Some(64));
    assert_eq!((G64K46::START_LEVEL, G64K46::CONCATENATED_TABLES), (2, 16));
    assert_eq!(G64K46::GEOMETRY.entries(0), Some(1 << 17));
    assert_eq!(G4K40::NAME, "aarch64 stage 2, 4 KiB granule");
}

#[test]
fn s2ap_gives_read_and_write() {
    // S2AP = 00: valid but no access.
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | NORMAL_WB, 3),
        leaf(0x5000, X, 0b1111)
    );
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | NORMAL_WB | S2AP_READ, 3),
        leaf(0x5000, R | X, 0b1111)
    );
    // S2AP = 10: write-only is expressible at stage 2.
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | NORMAL_WB | S2AP_WRITE, 3),
        leaf(0x5000, W | X, 0b1111)
    );
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | NORMAL_WB | S2AP_READ | S2AP_WRITE | AF, 3),
        leaf(0x5000, R | W | X | Perms::ACCESSED, 0b1111)
    );
    // DBM: writable-clean (S2AP[1] = 0) and dirty (S2AP[1] = 1).
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | S2AP_READ | DBM, 3),
        leaf(0x5000, R | W | X, 0)
    );
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | S2AP_READ | S2AP_WRITE | DBM, 3),
        leaf(0x5000, R | W | X | Perms::DIRTY, 0)
    );
}

#[test]
fn xn_is_executable_only_when_both_bits_are_clear() {
    let base = 0x5000 | PAGE | S2AP_READ;
    assert_eq!(G4K48::decode(base, 3), leaf(0x5000, R | X, 0));
    for xn in [0b01, 0b10, 0b11] {
        assert_eq!(G4K48::decode(base | xn << 53, 3), leaf(0x5000, R, 0));
    }
}

#[test]
fn mem_attr_and_shareability() {
    let base = 0x5000 | PAGE | S2AP_READ | XN_NEVER;
    // Device-nGnRE (0b0001), Inner Shareable.
    assert_eq!(
        G4K48::decode(base | 0b0001 << 2 | 0b11 << 8, 3),
        leaf(0x5000, R, stage2_mem_type(0b0001, Shareability::Inner).0)
    );
    // Normal Outer Non-cacheable, Inner Write-Through (0b0110).
    assert_eq!(
        G4K48::decode(base | 0b0110 << 2, 3),
        leaf(0x5000, R, 0b0110)
    );
    // Normal with MemAttr[1:0] = 00 is reserved.
    for reserved in [0b0100, 0b1000, 0b1100] {
        assert_eq!(
            G4K48::decode(base | reserved << 2, 3),
            Err(DecodeError::ReservedEncoding {
                field: reserved << 2
            })
        );
    }
    assert_eq!(
        G4K48::decode(base | 0b01 << 8, 3),
        Err(DecodeError::ReservedEncoding { field: 0b01 << 8 })
    );
}

#[test]
fn blocks_tables_and_reserved_bits() {
    // 1 GiB block in the concatenated start level of a 40-bit IPA space.
    assert_eq!(
        G4K40::decode(0x80_4000_0000 | BLOCK | S2AP_READ | XN_NEVER, 0),
        leaf(0x80_4000_0000, R, 0)
    );
    // Stage 2 table descriptors have no hierarchical attributes: bits 63:59
    // are RES0, bits 58:52 and 11:2 ignored.
    assert_eq!(
        G4K40::decode(0x1000 | PAGE | 0x7f << 52 | 0xffc, 1),
        Ok(Entry::Table(TableEntry {
            table: PhysAddr(0x1000),
            grants: Perms::GRANTS
        }))
    );
    assert_eq!(
        G4K40::decode(0x1000 | PAGE | 1 << 61, 1),
        Err(DecodeError::ReservedBits { bits: 1 << 61 })
    );
    // The block encoding at level 3 is reserved; 64 KiB has no Arm level 1
    // blocks without LPA.
    assert_eq!(
        G4K40::decode(0x5000 | BLOCK, 2),
        Err(DecodeError::ReservedEncoding { field: 0b01 })
    );
    assert_eq!(
        G64K48::decode(BLOCK, 0),
        Err(DecodeError::LeafNotAllowed { level: 0 })
    );
    // 64 KiB page: bits 15:12 RES0.
    assert_eq!(
        G64K48::decode(0x1_0000 | 1 << 12 | PAGE, 2),
        Err(DecodeError::ReservedBits { bits: 1 << 12 })
    );
}

#[test]
fn leaves_round_trip_and_encoders_refuse_stage_1_notions() {
    let stage2_perms = R | W | X | Perms::ACCESSED | Perms::DIRTY;
    for (level, pa) in [(0, 0xc0_0000_0000), (1, 0x20_0000), (2, 0x1000)] {
        for bits in 0..=stage2_perms.bits() {
            let perms = Perms::from_bits_truncate(bits) & stage2_perms;
            for mem_type in [0b00_0000, 0b11_1111, 0b10_0101, 0b00_0011] {
                let entry = LeafEntry {
                    pa: PhysAddr(pa),
                    perms,
                    mem_type: MemType(mem_type),
                };
                let encoded = G4K40::encode_leaf(&entry, level);
                if perms.contains(Perms::DIRTY) && !perms.contains(W) {
                    assert_eq!(encoded, Err(EncodeError::UnsupportedPerms { perms }));
                } else {
                    assert_eq!(
                        G4K40::decode(encoded.unwrap(), level),
                        Ok(Entry::Leaf(entry))
                    );
                }
            }
        }
    }
    let entry = |perms, mem_type| LeafEntry {
        pa: PhysAddr(0x1000),
        perms,
        mem_type: MemType(mem_type),
    };
    for perms in [R | Perms::USER, R | Perms::GLOBAL] {
        assert_eq!(
            G4K40::encode_leaf(&entry(perms, 0), 2),
            Err(EncodeError::UnsupportedPerms { perms })
        );
    }
    for bad in [0b00_0100, 0b01_0000, 0b100_0000] {
        assert_eq!(
            G4K40::encode_leaf(&entry(R, bad), 2),
            Err(EncodeError::UnsupportedMemType {
                mem_type: MemType(bad)
            })
        );
    }
    let raw = G16K40::encode_table(PhysAddr(0x4000), 0).unwrap();
    assert_eq!(raw, 0x4000 | PAGE);
    assert_eq!(
        G16K40::encode_table(PhysAddr(0x4000), 1),
        Err(EncodeError::NoSuchLevel { level: 1 })
    );
}

#[test]
fn contiguous_hint_and_canonical_ipas() {
    let hinted = 0x20_0000 | BLOCK | S2AP_READ | CONTIGUOUS;
    assert_eq!(G4K40::contiguous_group(hinted, 1), Some(16));
    assert_eq!(G4K40::contiguous_group(hinted & !CONTIGUOUS, 1), None);
    assert_eq!(G16K40::contiguous_entries(0), Some(32));
    assert_eq!(G16K40::contiguous_entries(1), Some(128));
    assert_eq!(G16K40::contiguous_entries(2), None);
    assert!(G4K40::is_canonical(VirtAddr((1 << 40) - 1)));
    assert!(!G4K40::is_canonical(VirtAddr(1 << 40)));
    assert!(!G4K40::is_canonical(VirtAddr(u64::MAX)));
}
