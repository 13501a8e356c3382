//! Run: `cargo test --test table_ept`
//!
//! Property tests of the EPT formats (4- and 5-level) against the generated
//! mapping list (`tests/table_aarch64/mapping_list.rs`): build, walk, unmap,
//! walk again; every table goes back to the pool. No crate implements EPT
//! tables to cross-check with; the decoding is checked against the SDM in the
//! unit tests of `src/arch/x86_64/ept`.

#[path = "table_aarch64/mapping_list.rs"]
mod mapping_list;

use mapping_list::{Profile, build_and_unmap, candidates};
use pagepin::arch::x86_64::{Ept, Ept4Level, Ept5Level};
use pagepin::table::*;
use proptest::prelude::*;

const CASES: u32 = if cfg!(miri) { 2 } else { 128 };

impl<const LEVELS: usize, const MAXPHYADDR: u32> Profile for Ept<LEVELS, MAXPHYADDR> {
    /// R/W/X with accessed and dirty; write implies read (write without read
    /// is a misconfiguration) and at least one of R/W/X is set (or the entry
    /// would not be present).
    fn perms(bits: u32) -> Perms {
        let rights = Perms::READ | Perms::WRITE | Perms::EXEC;
        let mut perms = Perms::from_bits_truncate(bits) & (rights | Perms::ACCESSED | Perms::DIRTY);
        if perms.contains(Perms::WRITE) || !perms.intersects(rights) {
            perms |= Perms::READ;
        }
        perms
    }

    /// A memory type that is not reserved (UC, WC, WT, WP, WB), with or
    /// without ignore-PAT.
    fn mem_type(bits: u8) -> MemType {
        let types = [0, 1, 4, 5, 6];
        MemType(types[usize::from(bits & 0x7f) % types.len()] | (bits >> 7) << 3)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn ept_4_level_walk_matches_the_mapping_list(
        cands in candidates(),
        unmap in prop::collection::vec(any::<bool>(), mapping_list::MAX_MAPPINGS),
    ) {
        build_and_unmap::<Ept4Level>(&cands, &unmap);
    }

    #[test]
    fn ept_5_level_walk_matches_the_mapping_list(
        cands in candidates(),
        unmap in prop::collection::vec(any::<bool>(), mapping_list::MAX_MAPPINGS),
    ) {
        build_and_unmap::<Ept5Level>(&cands, &unmap);
    }
}
