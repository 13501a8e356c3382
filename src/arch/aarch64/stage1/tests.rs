//! Stage 1 decoding checked against the Arm ARM (DDI 0487 K.a), D8.3
//! "Translation table descriptor formats" (D8.3.1 "Table descriptor format",
//! D8.3.2 "Block descriptor and Page descriptor formats"), D8.4.1 "Stage 1 data
//! access permissions" / "Hierarchical permissions", and D8.6 for AttrIndx and
//! SH.

use super::*;
use crate::arch::aarch64::descriptor::{TABLE_OR_PAGE, VALID};
use crate::arch::aarch64::{GRANULE_4K, Shareability, stage1_mem_type};

type G4K48 = Stage1G4K48;
type G16K48 = Stage1G16K48;
type G64K48 = Stage1G64K48;
type G64K42 = Stage1G64K42;

const PAGE: u64 = VALID | TABLE_OR_PAGE;
const BLOCK: u64 = VALID;
/// A privileged, read-only, non-executable, never-used, non-global page.
const KERNEL_RO: u64 = PAGE | AP_RDONLY | UXN | PXN | NG;

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

const R: Perms = Perms::READ;
const W: Perms = Perms::WRITE;
const X: Perms = Perms::EXEC;
const U: Perms = Perms::USER;

#[test]
fn levels_map_to_arm_levels() {
    assert_eq!((G4K48::DEPTH, G4K48::START_LEVEL), (4, 0));
    assert_eq!((Stage1G4K39::DEPTH, Stage1G4K39::START_LEVEL), (3, 1));
    assert_eq!((G16K48::DEPTH, G16K48::START_LEVEL), (4, 0));
    assert_eq!((Stage1G16K47::DEPTH, Stage1G16K47::START_LEVEL), (3, 1));
    assert_eq!((Stage1G16K36::DEPTH, Stage1G16K36::START_LEVEL), (2, 2));
    assert_eq!((G64K48::DEPTH, G64K48::START_LEVEL), (3, 1));
    assert_eq!((G64K42::DEPTH, G64K42::START_LEVEL), (2, 2));
    assert_eq!(G64K48::GEOMETRY.entries(0), Some(64));
    assert_eq!(G64K42::GEOMETRY.entries(0), Some(8192));
    assert_eq!(G16K48::GEOMETRY.entries(0), Some(2));
    assert_eq!(G4K48::NAME, "aarch64 stage 1, 4 KiB granule");
    assert_eq!(G64K42::NAME, "aarch64 stage 1, 64 KiB granule");
}

#[test]
fn invalid_descriptors_are_absent_whatever_else_they_hold() {
    // Bit 0 clear: "the descriptor is invalid", all other bits ignored.
    for level in 0..4 {
        assert_eq!(G4K48::decode(0, level), Ok(Entry::Absent));
        assert_eq!(G4K48::decode(!VALID, level), Ok(Entry::Absent));
    }
    assert_eq!(
        G4K48::decode(0, 4),
        Err(DecodeError::NoSuchLevel { level: 4 })
    );
    assert_eq!(
        G64K42::decode(PAGE, 2),
        Err(DecodeError::NoSuchLevel { level: 2 })
    );
}

#[test]
fn page_descriptors_at_level_3() {
    // 4 KiB: OA[47:12]. AP[2:1] = 00: EL1 read/write, no EL0 access; PXN
    // clear: EL1 may execute.
    assert_eq!(
        G4K48::decode(0x0000_ffff_ffff_f000 | PAGE | UXN, 3),
        leaf(0x0000_ffff_ffff_f000, R | W | X | Perms::GLOBAL, 0)
    );
    // AP[2:1] = 01: read/write at EL1 and EL0; UXN clear → EL0 may execute.
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | AP_EL0 | PXN | AF | NG, 3),
        leaf(0x5000, R | W | U | X | Perms::ACCESSED, 0)
    );
    // AP[2:1] = 11: read-only at both.
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | AP_EL0 | AP_RDONLY | UXN, 3),
        leaf(0x5000, R | U | Perms::GLOBAL, 0)
    );
    // AP[2:1] = 10, PXN clear: read-only, executable at EL1.
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | AP_RDONLY | UXN | NG, 3),
        leaf(0x5000, R | X, 0)
    );
    // AttrIndx bits 4:2 and SH bits 9:8 → MemType.
    assert_eq!(
        G4K48::decode(0x5000 | KERNEL_RO | 5 << 2 | 0b11 << 8, 3),
        leaf(0x5000, R, stage1_mem_type(5, Shareability::Inner).0)
    );
    assert_eq!(
        G4K48::decode(0x5000 | KERNEL_RO | 0b10 << 8, 3),
        leaf(0x5000, R, stage1_mem_type(0, Shareability::Outer).0)
    );
    // NS (5), GP (50), the contiguous hint (52), software bits (55-58) and
    // PBHA/ignored (59-63) change nothing.
    let ignored = 1 << 5 | 1 << 50 | CONTIGUOUS | 0x1ff << 55;
    assert_eq!(
        G4K48::decode(0x5000 | KERNEL_RO | ignored, 3),
        leaf(0x5000, R, 0)
    );
    // 64 KiB: OA[47:16], bits 15:12 RES0 (OA[51:48] only with FEAT_LPA).
    assert_eq!(
        G64K48::decode(0x0000_ffff_ffff_0000 | KERNEL_RO, 2),
        leaf(0x0000_ffff_ffff_0000, R, 0)
    );
    assert_eq!(
        G64K48::decode(0x1_0000 | 0x3000 | KERNEL_RO, 2),
        Err(DecodeError::ReservedBits { bits: 0x3000 })
    );
    // Bits 49:48 are OA[49:48] only with FEAT_LPA2: RES0 here.
    assert_eq!(
        G4K48::decode(1 << 48 | 0x5000 | KERNEL_RO, 3),
        Err(DecodeError::ReservedBits { bits: 1 << 48 })
    );
}

#[test]
fn the_block_encoding_is_reserved_at_level_3() {
    // Bits 1:0 = 01 at level 3: "reserved, treated as invalid" by the MMU; a
    // typed error here.
    assert_eq!(
        G4K48::decode(0x5000 | BLOCK, 3),
        Err(DecodeError::ReservedEncoding { field: 0b01 })
    );
    assert_eq!(
        G64K42::decode(0x1_0000 | BLOCK, 1),
        Err(DecodeError::ReservedEncoding { field: 0b01 })
    );
}

#[test]
fn block_descriptors_only_where_the_granule_has_blocks() {
    // 4 KiB: 1 GiB at level 1 (OA[47:30], bits 29:17 and 15:12 RES0, 16 nT),
    // 2 MiB at level 2.
    assert_eq!(
        G4K48::decode(0x4000_0000 | BLOCK | UXN | PXN | AF, 1),
        leaf(0x4000_0000, R | W | Perms::ACCESSED | Perms::GLOBAL, 0)
    );
    assert_eq!(
        G4K48::decode(0x4000_0000 | 1 << 16 | BLOCK | UXN, 1),
        leaf(0x4000_0000, R | W | X | Perms::GLOBAL, 0)
    );
    assert_eq!(
        G4K48::decode(0x4000_0000 | 1 << 21 | BLOCK | UXN, 1),
        Err(DecodeError::ReservedBits { bits: 1 << 21 })
    );
    assert_eq!(
        G4K48::decode(0x20_0000 | 1 << 12 | BLOCK, 2),
        Err(DecodeError::ReservedBits { bits: 1 << 12 })
    );
    assert_eq!(
        G4K48::decode(0x20_0000 | BLOCK | NG, 2),
        leaf(0x20_0000, R | W | X, 0)
    );
    // No level 0 blocks with 4 KiB granules without FEAT_LPA2.
    assert_eq!(
        G4K48::decode(BLOCK, 0),
        Err(DecodeError::LeafNotAllowed { level: 0 })
    );
    // 16 KiB: 32 MiB blocks at level 2 only; none at level 1 without LPA2.
    assert_eq!(
        G16K48::decode(0x200_0000 | BLOCK | UXN, 2),
        leaf(0x200_0000, R | W | Perms::GLOBAL | X, 0)
    );
    assert_eq!(
        G16K48::decode(0x10_0000_0000 | BLOCK, 1),
        Err(DecodeError::LeafNotAllowed { level: 1 })
    );
    // 64 KiB: 512 MiB at Arm level 2; none at Arm level 1 without LPA.
    assert_eq!(
        G64K48::decode(0x2000_0000 | BLOCK | UXN | NG, 1),
        leaf(0x2000_0000, R | W | X, 0)
    );
    assert_eq!(
        G64K48::decode(BLOCK, 0),
        Err(DecodeError::LeafNotAllowed { level: 0 })
    );
    assert_eq!(
        G64K42::decode(0x2000_0000 | BLOCK | NG, 0),
        leaf(0x2000_0000, R | W | X, 0)
    );
}

#[test]
fn table_descriptors_restrict_what_is_below() {
    assert_eq!(
        G4K48::decode(0x0000_ffff_ffff_f000 | PAGE, 0),
        table(0x0000_ffff_ffff_f000, Perms::GRANTS)
    );
    // Bits 11:2 and 58:52 are ignored in a table descriptor.
    assert_eq!(
        G4K48::decode(0x1000 | PAGE | 0xffc | 0x7f << 52, 1),
        table(0x1000, Perms::GRANTS)
    );
    // APTable[0] (61): no EL0 access; APTable[1] (62): no writes.
    assert_eq!(
        G4K48::decode(0x1000 | PAGE | AP_TABLE_NO_EL0, 0),
        table(0x1000, R | W | X)
    );
    assert_eq!(
        G4K48::decode(0x1000 | PAGE | AP_TABLE_RDONLY, 0),
        table(0x1000, R | X | U)
    );
    // Either XNTable bit takes EXEC away (see the module docs).
    assert_eq!(
        G4K48::decode(0x1000 | PAGE | PXN_TABLE, 0),
        table(0x1000, R | W | U)
    );
    assert_eq!(
        G4K48::decode(0x1000 | PAGE | UXN_TABLE | 1 << 63, 0),
        table(0x1000, R | W | U)
    );
    // 16 KiB: the next table at bits 47:14; bits 13:12 RES0.
    assert_eq!(
        G16K48::decode(0x4000 | PAGE, 0),
        table(0x4000, Perms::GRANTS)
    );
    assert_eq!(
        G16K48::decode(0x4000 | 0x2000 | PAGE, 0),
        Err(DecodeError::ReservedBits { bits: 0x2000 })
    );
    // Bits 51:48 RES0 without LPA/LPA2.
    assert_eq!(
        G4K48::decode(1 << 51 | 0x1000 | PAGE, 0),
        Err(DecodeError::ReservedBits { bits: 1 << 51 })
    );
}

#[test]
fn dirty_state_follows_dbm_and_ap2() {
    // DBM = 1, AP[2] = 1: writable-clean; DBM = 1, AP[2] = 0: dirty.
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | DBM | AP_RDONLY | UXN | PXN, 3),
        leaf(0x5000, R | W | Perms::GLOBAL, 0)
    );
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | DBM | UXN | PXN, 3),
        leaf(0x5000, R | W | Perms::DIRTY | Perms::GLOBAL, 0)
    );
}

#[test]
fn reserved_shareability_is_an_error() {
    assert_eq!(
        G4K48::decode(0x5000 | PAGE | 0b01 << 8, 3),
        Err(DecodeError::ReservedEncoding { field: 0b01 << 8 })
    );
}

#[test]
fn leaves_round_trip_at_every_leaf_level() {
    fn check<const G: u32, const V: u32>(levels: &[(usize, u64)]) {
        for &(level, pa) in levels {
            for bits in 0..=Perms::all().bits() {
                let perms = Perms::from_bits_truncate(bits) | Perms::READ;
                for mem_type in [0, 7, stage1_mem_type(3, Shareability::Inner).0, 0b10_101] {
                    let entry = LeafEntry {
                        pa: PhysAddr(pa),
                        perms,
                        mem_type: MemType(mem_type),
                    };
                    let encoded = Stage1::<G, V>::encode_leaf(&entry, level);
                    if perms.contains(Perms::DIRTY) && !perms.contains(Perms::WRITE) {
                        assert_eq!(encoded, Err(EncodeError::UnsupportedPerms { perms }));
                        continue;
                    }
                    let raw = encoded.unwrap();
                    assert_eq!(Stage1::<G, V>::decode(raw, level), Ok(Entry::Leaf(entry)));
                }
            }
        }
    }
    check::<12, 48>(&[
        (1, 0x0000_ffff_c000_0000),
        (2, 0x0000_ffff_ffe0_0000),
        (3, 0x1000),
    ]);
    check::<14, 47>(&[(1, 0x0000_ffff_fe00_0000), (2, 0x0000_ffff_ffff_c000)]);
    check::<16, 42>(&[(0, 0x0000_ffff_e000_0000), (1, 0x0000_ffff_ffff_0000)]);
    let raw = G64K48::encode_table(PhysAddr(0x12_0000), 1).unwrap();
    assert_eq!(raw, 0x12_0000 | PAGE);
    assert_eq!(G64K48::decode(raw, 1), table(0x12_0000, Perms::GRANTS));
}

#[test]
fn encoders_set_the_other_privileges_execute_never() {
    let entry = |perms| LeafEntry {
        pa: PhysAddr(0x5000),
        perms,
        mem_type: MemType(0),
    };
    let user = G4K48::encode_leaf(&entry(R | U | X), 3).unwrap();
    assert_eq!(user & (PXN | UXN), PXN, "EL0-executable, never EL1");
    let kernel = G4K48::encode_leaf(&entry(R | X), 3).unwrap();
    assert_eq!(kernel & (PXN | UXN), UXN, "EL1-executable, never EL0");
    let neither = G4K48::encode_leaf(&entry(R), 3).unwrap();
    assert_eq!(neither & (PXN | UXN), PXN | UXN);
    // A page at level 3 has bit 1 set, a block does not.
    assert_eq!(user & 0b11, 0b11);
    let block = G4K48::encode_leaf(
        &LeafEntry {
            pa: PhysAddr(0x20_0000),
            ..entry(R)
        },
        2,
    )
    .unwrap();
    assert_eq!(block & 0b11, 0b01);
}

#[test]
fn encoders_refuse_what_the_format_cannot_hold() {
    let entry = |pa, perms, mem_type| LeafEntry {
        pa: PhysAddr(pa),
        perms,
        mem_type: MemType(mem_type),
    };
    assert_eq!(
        G4K48::encode_leaf(&entry(0, R, 0), 0),
        Err(EncodeError::LeafNotAllowed { level: 0 })
    );
    assert_eq!(
        G64K48::encode_leaf(&entry(0, R, 0), 0),
        Err(EncodeError::LeafNotAllowed { level: 0 })
    );
    assert_eq!(
        G4K48::encode_leaf(&entry(0, R, 0), 4),
        Err(EncodeError::NoSuchLevel { level: 4 })
    );
    assert_eq!(
        G16K48::encode_leaf(&entry(0x1000, R, 0), 3),
        Err(EncodeError::UnencodableAddress {
            pa: PhysAddr(0x1000)
        })
    );
    assert_eq!(
        G4K48::encode_leaf(&entry(1 << 48, R, 0), 3),
        Err(EncodeError::UnencodableAddress {
            pa: PhysAddr(1 << 48)
        })
    );
    assert_eq!(
        G4K48::encode_leaf(&entry(0x1000, W, 0), 3),
        Err(EncodeError::UnsupportedPerms { perms: W })
    );
    for bad in [0b01_000, 0b100_000] {
        assert_eq!(
            G4K48::encode_leaf(&entry(0x1000, R, bad), 3),
            Err(EncodeError::UnsupportedMemType {
                mem_type: MemType(bad)
            })
        );
    }
    assert_eq!(
        G4K48::encode_table(PhysAddr(0x1000), 3),
        Err(EncodeError::NoSuchLevel { level: 3 })
    );
    assert_eq!(
        G64K48::encode_table(PhysAddr(0x1000), 0),
        Err(EncodeError::UnencodableAddress {
            pa: PhysAddr(0x1000)
        })
    );
}

#[test]
fn contiguous_hint_groups() {
    let hinted = 0x5000 | KERNEL_RO | CONTIGUOUS;
    assert_eq!(G4K48::contiguous_group(hinted, 3), Some(16));
    assert_eq!(G4K48::contiguous_group(hinted & !CONTIGUOUS, 3), None);
    assert_eq!(
        G4K48::contiguous_group(0x20_0000 | BLOCK | CONTIGUOUS, 2),
        Some(16)
    );
    // A table descriptor ignores bit 52.
    assert_eq!(G4K48::contiguous_group(0x1000 | PAGE | CONTIGUOUS, 2), None);
    assert_eq!(G4K48::contiguous_entries(0), None);
    assert_eq!(
        G16K48::contiguous_group(0x4000 | KERNEL_RO | CONTIGUOUS, 3),
        Some(128)
    );
    assert_eq!(G16K48::contiguous_entries(2), Some(32));
    assert_eq!(G64K48::contiguous_entries(2), Some(32));
    assert_eq!(G64K48::contiguous_entries(1), Some(32));
    assert_eq!(G64K48::contiguous_entries(0), None);
    assert_eq!(G64K48::contiguous_entries(3), None);
    // The hint never changes the translation.
    assert_eq!(
        G16K48::decode(0x4000 | KERNEL_RO | CONTIGUOUS, 3),
        G16K48::decode(0x4000 | KERNEL_RO, 3)
    );
}

#[test]
fn canonical_addresses_of_both_ttbr_ranges() {
    assert!(G4K48::is_canonical(VirtAddr(0x0000_ffff_ffff_ffff)));
    assert!(!G4K48::is_canonical(VirtAddr(0x0001_0000_0000_0000)));
    assert!(!G4K48::is_canonical(VirtAddr(0xffff_0000_0000_0000)));
    assert!(Stage1G4K48Ttbr1::is_canonical(VirtAddr(
        0xffff_0000_0000_0000
    )));
    assert!(Stage1G4K48Ttbr1::is_canonical(VirtAddr(u64::MAX)));
    assert!(!Stage1G4K48Ttbr1::is_canonical(VirtAddr(
        0xfffe_ffff_ffff_ffff
    )));
    assert!(!Stage1G4K48Ttbr1::is_canonical(VirtAddr(0)));
    assert!(Stage1G4K39::is_canonical(VirtAddr((1 << 39) - 1)));
    assert!(!Stage1G4K39::is_canonical(VirtAddr(1 << 39)));
    // A tagged pointer (top-byte-ignore) is not canonical.
    assert!(!G4K48::is_canonical(VirtAddr(0x5a00_0000_0000_1000)));
    assert_eq!(GRANULE_4K, 12);
}

/// Found by the MMU sweep (`targets/aarch64-virt`, `run.sh sweep`): a user,
/// EL0-executable leaf (PXN set, UXN clear) under a table descriptor with
/// APTable[0] is privileged only, and the MMU refuses an EL1 fetch (PXN). Raw
/// entries from the sweep's report (4 KiB granule, VA 0x8000_0004_0000).
#[test]
fn a_user_leaf_under_aptable0_is_executable_only_if_pxn_is_clear() {
    let table = 0x2000_0000_447f_c003; // APTable[0]
    let Ok(Entry::Table(t)) = G4K48::decode(table, 2) else {
        panic!("a table descriptor")
    };
    assert!(!t.grants.contains(Perms::USER));
    let leaf = 0x0020_0000_8000_57c7; // AP[2:1] = 11 (EL0 read-only), AF, PXN
    let Ok(Entry::Leaf(l)) = G4K48::decode(leaf, 3) else {
        panic!("a page")
    };
    assert!(
        l.perms.contains(Perms::USER | Perms::EXEC),
        "EL0-executable"
    );
    let under = G4K48::limit_leaf(leaf, l.perms, t.grants);
    assert_eq!(
        under,
        Perms::READ | Perms::ACCESSED | Perms::GLOBAL,
        "privileged only, and PXN: not executable"
    );
    // The same leaf with PXN clear (not what the encoder writes) is
    // executable at EL1; EL0-writable with PXN clear it is implicitly PXN.
    let pxn_clear = leaf & !PXN;
    let l = G4K48::limit_leaf(pxn_clear, l.perms, t.grants);
    assert!(l.contains(Perms::EXEC) && !l.contains(Perms::USER));
    let writable = (leaf & !PXN & !AP_RDONLY) | DBM;
    let Ok(Entry::Leaf(w)) = G4K48::decode(writable, 3) else {
        panic!("a page")
    };
    assert!(!G4K48::limit_leaf(writable, w.perms, t.grants).contains(Perms::EXEC));
    // Without APTable[0] nothing changes: the default limiting.
    assert_eq!(
        G4K48::limit_leaf(leaf, w.perms, Perms::GRANTS),
        w.perms.limited_by(Perms::GRANTS)
    );
}
