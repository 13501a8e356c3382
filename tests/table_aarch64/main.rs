//! Run: `cargo test --test table_aarch64`
//!
//! Property tests of the aarch64 formats against independent oracles:
//!
//! - the generated mapping list ([`mapping_list`]): build, walk, unmap, walk
//!   again, for stage 1 with every granule at 4-, 3- and 2-level sizes and in
//!   the TTBR1 range, and for stage 2 with single and concatenated start
//!   tables;
//! - the `aarch64-paging` crate, for the 4 KiB granule it supports: tables it
//!   builds with its `Mapping` API (and then partly unmaps) are walked by
//!   pagepin, and tables pagepin builds are read back through its
//!   `Mapping::walk_range`, for stage 1 (TTBR0 from Arm levels 0 and 1, TTBR1)
//!   and stage 2 (from Arm levels 0 and 1). The crate has no 16 or 64 KiB
//!   granules and no concatenated stage 2 start tables; those are covered by
//!   the mapping list only.

mod mapping_list;

use mapping_list::{Candidate, Mapping, Profile, build_and_unmap, candidates};
use pagepin::arch::aarch64::*;
use pagepin::table::*;
use proptest::prelude::*;

/// Cases per configuration for 4 KiB granules; the larger granules' tables are
/// 4 and 16 times as many entries to walk and zero, so they get fewer.
const CASES: u32 = if cfg!(miri) { 2 } else { 96 };
const LARGE_GRANULE_CASES: u32 = if cfg!(miri) { 1 } else { 32 };

impl<const G: u32, const V: u32, const TTBR1: bool> Profile for Stage1<G, V, TTBR1> {
    fn perms(bits: u32) -> Perms {
        let perms = Perms::from_bits_truncate(bits) | Perms::READ;
        if perms.contains(Perms::DIRTY) {
            perms | Perms::WRITE
        } else {
            perms
        }
    }

    fn mem_type(bits: u8) -> MemType {
        let sh = [Shareability::Non, Shareability::Outer, Shareability::Inner];
        stage1_mem_type(bits & 0b111, sh[usize::from(bits >> 3) % 3])
    }
}

/// The MemAttr values that are not reserved: Device 0-3, Normal with outer and
/// inner cacheability 1-3 each.
fn stage2_mem_attrs() -> impl Iterator<Item = u8> {
    (0..4).chain((1..4).flat_map(|outer| (1..4).map(move |inner| outer << 2 | inner)))
}

impl<const G: u32, const IPA: u32> Profile for Stage2<G, IPA> {
    fn perms(bits: u32) -> Perms {
        let stage2 = Perms::READ | Perms::WRITE | Perms::EXEC | Perms::ACCESSED | Perms::DIRTY;
        let perms = Perms::from_bits_truncate(bits) & stage2;
        if perms.contains(Perms::DIRTY) {
            perms | Perms::WRITE
        } else {
            perms
        }
    }

    fn mem_type(bits: u8) -> MemType {
        let attrs: Vec<u8> = stage2_mem_attrs().collect();
        let sh = [Shareability::Non, Shareability::Outer, Shareability::Inner];
        let attr = attrs[usize::from(bits) % attrs.len()];
        stage2_mem_type(attr, sh[usize::from(bits) / attrs.len() % 3])
    }
}

fn unmaps() -> impl Strategy<Value = Vec<bool>> {
    prop::collection::vec(any::<bool>(), mapping_list::MAX_MAPPINGS)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn stage1_4k_48bit_4_levels(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage1G4K48>(&cands, &unmap);
    }

    #[test]
    fn stage1_4k_39bit_3_levels(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage1G4K39>(&cands, &unmap);
    }

    #[test]
    fn stage1_4k_30bit_2_levels(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage1<GRANULE_4K, 30>>(&cands, &unmap);
    }

    #[test]
    fn stage1_4k_48bit_ttbr1(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage1G4K48Ttbr1>(&cands, &unmap);
    }

    #[test]
    fn stage2_4k_48bit_ipa_4_levels(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage2G4K48>(&cands, &unmap);
    }

    #[test]
    fn stage2_4k_40bit_ipa_2_concatenated(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage2G4K40>(&cands, &unmap);
    }

    #[test]
    fn aarch64_paging_stage1_tables_walk_like_the_mapping_list(
        cands in candidates(),
        unmap in unmaps(),
        root_level in 0..2usize,
    ) {
        if root_level == 0 {
            crate_oracle::built_by_the_crate::<Stage1G4K48>(&cands, &unmap);
        } else {
            crate_oracle::built_by_the_crate::<Stage1G4K39>(&cands, &unmap);
        }
    }

    #[test]
    fn aarch64_paging_stage1_ttbr1_tables_walk_like_the_mapping_list(
        cands in candidates(),
        unmap in unmaps(),
    ) {
        crate_oracle::built_by_the_crate::<Stage1G4K48Ttbr1>(&cands, &unmap);
    }

    #[test]
    fn aarch64_paging_stage2_tables_walk_like_the_mapping_list(
        cands in candidates(),
        unmap in unmaps(),
        root_level in 0..2usize,
    ) {
        if root_level == 0 {
            crate_oracle::built_by_the_crate::<Stage2G4K48>(&cands, &unmap);
        } else {
            crate_oracle::built_by_the_crate::<Stage2<GRANULE_4K, 39>>(&cands, &unmap);
        }
    }

    #[test]
    fn pagepin_tables_read_alike_in_aarch64_paging(cands in candidates()) {
        crate_oracle::built_by_pagepin::<Stage1G4K48>(&cands);
        crate_oracle::built_by_pagepin::<Stage1G4K39>(&cands);
        crate_oracle::built_by_pagepin::<Stage1G4K48Ttbr1>(&cands);
        crate_oracle::built_by_pagepin::<Stage2G4K48>(&cands);
        crate_oracle::built_by_pagepin::<Stage2<GRANULE_4K, 39>>(&cands);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(LARGE_GRANULE_CASES))]

    #[test]
    fn stage1_16k_48bit_4_levels(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage1G16K48>(&cands, &unmap);
    }

    #[test]
    fn stage1_16k_47bit_3_levels(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage1G16K47>(&cands, &unmap);
    }

    #[test]
    fn stage1_16k_36bit_2_levels(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage1G16K36>(&cands, &unmap);
    }

    #[test]
    fn stage1_64k_48bit_3_levels(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage1G64K48>(&cands, &unmap);
    }

    #[test]
    fn stage1_64k_42bit_2_levels(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage1G64K42>(&cands, &unmap);
    }

    #[test]
    fn stage2_16k_40bit_ipa_16_concatenated(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage2G16K40>(&cands, &unmap);
    }

    #[test]
    fn stage2_64k_48bit_ipa_3_levels(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage2G64K48>(&cands, &unmap);
    }

    #[test]
    fn stage2_64k_46bit_ipa_16_concatenated(cands in candidates(), unmap in unmaps()) {
        build_and_unmap::<Stage2<GRANULE_64K, 46>>(&cands, &unmap);
    }
}

/// The cross-check with `aarch64-paging` (4 KiB granule only).
///
/// The crate allocates tables through a `Translation` it is given; here that
/// is an arena over the test's `HostFrame`s, so pagepin reads the same tables
/// through `HostMemory` and no raw physical-address dereference is needed.
/// Attributes are written the way pagepin's encoders write them (the other
/// privilege's execute-never set, DBM only for dirty leaves), so the two sides
/// agree on every bit.
mod crate_oracle {
    use super::mapping_list::{
        MEMORY_BASE, assert_exactly, host_frames, place, window_size, windows,
    };
    use super::*;
    use aarch64_paging::Mapping as CrateMapping;
    use aarch64_paging::descriptor::{
        El1Attributes, PagingAttributes, PhysicalAddress, Stage2Attributes,
    };
    use aarch64_paging::paging::{
        Constraints, El1And0, MemoryRegion, PageTable, Translation, TranslationRegime, VaRange,
    };
    use bitflags::Flags;
    use core::ptr::NonNull;

    // The arena hands out `HostFrame`s as the crate's page tables: both are 512
    // 64-bit atomic words, 4 KiB-aligned (on a 64-bit host).
    const _: () = assert!(size_of::<PageTable<El1Attributes>>() == size_of::<HostFrame>());
    const _: () = assert!(align_of::<PageTable<El1Attributes>>() == align_of::<HostFrame>());
    const _: () = assert!(size_of::<PageTable<Stage2Attributes>>() == size_of::<HostFrame>());

    /// Tables for the crate: frame `i` of the host memory, handed out in order
    /// from frame 0 (so the crate's root is pagepin's `MEMORY_BASE`).
    ///
    /// Sound without `unsafe` here, and for the crate's writes: every byte of a
    /// `HostFrame` is inside an atomic (an `UnsafeCell`), so writing through a
    /// pointer derived from a shared reference is allowed; the frames outlive
    /// the mapping (declared before it), and the test reads them only between
    /// the crate's calls.
    pub struct Arena<'a> {
        frames: &'a [HostFrame],
        next: usize,
    }

    impl Arena<'_> {
        fn table<A: PagingAttributes>(&self, i: usize) -> NonNull<PageTable<A>> {
            NonNull::from(&self.frames[i]).cast()
        }
    }

    impl<A: PagingAttributes> Translation<A> for Arena<'_> {
        fn allocate_table(&mut self) -> (NonNull<PageTable<A>>, PhysicalAddress) {
            let i = self.next;
            self.next += 1;
            let pa = MEMORY_BASE.0 + i as u64 * HOST_FRAME_SIZE;
            (self.table(i), PhysicalAddress(pa as usize))
        }

        unsafe fn deallocate_table(&mut self, _table: NonNull<PageTable<A>>) {
            // The frames belong to the test; a freed table is simply not reused.
        }

        fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<A>> {
            self.table(((pa.0 as u64 - MEMORY_BASE.0) / HOST_FRAME_SIZE) as usize)
        }
    }

    /// A pagepin format the crate also builds: how to make its mapping and
    /// its attributes.
    pub trait CrateRegime: Profile {
        type Regime: TranslationRegime;

        fn mapping(arena: Arena<'_>) -> CrateMapping<Arena<'_>, Self::Regime>;

        fn attributes(m: &Mapping) -> <Self::Regime as TranslationRegime>::Attributes;
    }

    fn flag(cond: bool, bit: usize) -> usize {
        if cond { bit } else { 0 }
    }

    /// The raw low and high attribute bits pagepin's stage-1 encoder writes.
    fn stage1_bits(m: &Mapping) -> usize {
        let p = m.perms;
        let user = p.contains(Perms::USER);
        let no_exec = !p.contains(Perms::EXEC);
        let mut bits = 1 | usize::from(m.mem_type.0 & 0b111) << 2;
        bits |= usize::from(m.mem_type.0 >> 3) << 8;
        bits |= flag(user, 1 << 6) | flag(!p.contains(Perms::WRITE), 1 << 7);
        bits |= flag(p.contains(Perms::ACCESSED), 1 << 10);
        bits |= flag(!p.contains(Perms::GLOBAL), 1 << 11);
        bits |= flag(p.contains(Perms::DIRTY), 1 << 51);
        bits |= if user {
            1 << 53 | flag(no_exec, 1 << 54)
        } else {
            1 << 54 | flag(no_exec, 1 << 53)
        };
        bits
    }

    impl<const V: u32, const TTBR1: bool> CrateRegime for Stage1<GRANULE_4K, V, TTBR1> {
        type Regime = El1And0;

        fn mapping(arena: Arena<'_>) -> CrateMapping<Arena<'_>, El1And0> {
            let range = if TTBR1 {
                VaRange::Upper
            } else {
                VaRange::Lower
            };
            CrateMapping::with_asid_and_va_range(arena, 1, Self::START_LEVEL, El1And0, range)
        }

        fn attributes(m: &Mapping) -> El1Attributes {
            El1Attributes::from_bits_retain(stage1_bits(m))
        }
    }

    impl<const IPA: u32> CrateRegime for Stage2<GRANULE_4K, IPA> {
        type Regime = aarch64_paging::paging::Stage2;

        fn mapping(arena: Arena<'_>) -> CrateMapping<Arena<'_>, Self::Regime> {
            CrateMapping::new(arena, Self::START_LEVEL, aarch64_paging::paging::Stage2)
        }

        fn attributes(m: &Mapping) -> Stage2Attributes {
            let p = m.perms;
            let mut bits = 1 | usize::from(m.mem_type.0 & 0b1111) << 2;
            bits |= usize::from(m.mem_type.0 >> 4) << 8;
            bits |= flag(p.contains(Perms::READ), 1 << 6);
            bits |= flag(p.contains(Perms::WRITE), 1 << 7);
            bits |= flag(p.contains(Perms::ACCESSED), 1 << 10);
            bits |= flag(p.contains(Perms::DIRTY), 1 << 51);
            bits |= flag(!p.contains(Perms::EXEC), 1 << 54);
            Stage2Attributes::from_bits_retain(bits)
        }
    }

    fn region(start: u64, len: u64) -> MemoryRegion {
        let end = start.saturating_add(len);
        MemoryRegion::new(start as usize, end as usize)
    }

    /// Builds the mappings with the crate (pages only where the mapping asks for
    /// pages: the crate would otherwise pick blocks on its own), unmaps those
    /// `unmap` selects with the crate, and walks with pagepin after each step.
    pub fn built_by_the_crate<F: CrateRegime>(cands: &[Candidate], unmap: &[bool]) {
        let (accepted, _) = place::<F>(cands);
        let frames = host_frames::<F>();
        let mut mapping = F::mapping(Arena {
            frames: &frames,
            next: 0,
        });
        for m in &accepted {
            let constraints = if m.leaf == 4096 {
                Constraints::NO_BLOCK_MAPPINGS
            } else {
                Constraints::empty()
            };
            mapping
                .map_range(
                    &region(m.va, m.len()),
                    PhysicalAddress(m.pa as usize),
                    F::attributes(m),
                    constraints,
                )
                .unwrap();
        }
        let memory = HostMemory::new(&frames, MEMORY_BASE).unwrap();
        assert_eq!(mapping.root_address().0 as u64, MEMORY_BASE.0);
        let walker = Walker::<F, _>::new(&memory, MEMORY_BASE);
        assert_exactly(&walker, &accepted);

        let mut kept = Vec::new();
        for (i, m) in accepted.iter().enumerate() {
            if unmap.get(i).copied().unwrap_or(false) {
                let invalid = <F::Regime as TranslationRegime>::Attributes::empty();
                mapping
                    .map_range(
                        &region(m.va, m.len()),
                        PhysicalAddress(0),
                        invalid,
                        Constraints::empty(),
                    )
                    .unwrap();
            } else {
                kept.push(*m);
            }
        }
        assert_exactly(&walker, &kept);
    }

    /// Builds the mappings with pagepin and reads every window back through the
    /// crate's `walk_range`: the valid descriptors it visits are exactly the
    /// generated leaves, at the right Arm level, with the right attributes.
    pub fn built_by_pagepin<F: CrateRegime>(cands: &[Candidate]) {
        let (accepted, _) = place::<F>(cands);
        let frames = host_frames::<F>();
        let memory = HostMemory::new(&frames, MEMORY_BASE).unwrap();
        let mut pool_slots: Vec<PhysAddr> = memory.frame_pas().skip(1).collect();
        // The root is frame 0, the arena's first table, so the crate adopts it
        // as its root.
        // SAFETY: frame 0 and the pool's frames are this test's own, apart; no
        // walker or MMU reads these tables.
        let mut tables = unsafe {
            TableBuilder::<F, _, _>::with_root(
                &memory,
                MEMORY_BASE,
                FramePool::new(&mut pool_slots),
                ReclaimNow::new(),
            )
        }
        .unwrap();
        for m in &accepted {
            // SAFETY: the pages mapped are this code's, unmapped before they are freed.
            unsafe { tables.map(&m.request()) }.unwrap();
        }
        assert_eq!(tables.root(), MEMORY_BASE);
        let depth = F::GEOMETRY.depth();
        let mapping = F::mapping(Arena {
            frames: &frames,
            next: 0,
        });
        // The crate's `walk_range` overflows on a region ending at 2^64, so the
        // top window of the TTBR1 range stops one largest leaf short of it.
        let largest = *mapping_list::leaf_sizes::<F>().last().unwrap();
        let regions: Vec<(u64, u64)> = windows::<F>()
            .iter()
            .map(|&start| {
                (
                    start,
                    start
                        .checked_add(window_size::<F>())
                        .unwrap_or(largest.wrapping_neg()),
                )
            })
            .collect();
        let walked = |va: u64, size: u64| {
            regions
                .iter()
                .any(|&(start, end)| start <= va && va.checked_add(size).is_some_and(|e| e <= end))
        };
        let mut want: Vec<(u64, usize, u64, usize)> = accepted
            .iter()
            .flat_map(|m| {
                let level = F::GEOMETRY.leaf_level(m.leaf).unwrap() + 4 - depth;
                let mut bits = F::attributes(m).bits();
                if level == 3 {
                    bits |= 0b10; // a page descriptor
                }
                m.leaves()
                    .map(move |(va, pa, size)| (va, size, level, pa, bits))
            })
            .filter(|&(va, size, ..)| walked(va, size))
            .map(|(va, _, level, pa, bits)| (va, level, pa, bits))
            .collect();
        want.sort_unstable();
        let mut got = Vec::new();
        for &(start, end) in &regions {
            let region = MemoryRegion::new(start as usize, end as usize);
            mapping
                .walk_range(&region, &mut |mr, desc, level| {
                    if desc.is_valid() {
                        got.push((
                            mr.start().0 as u64,
                            level,
                            desc.output_address().0 as u64,
                            desc.flags().bits(),
                        ));
                    }
                    Ok(())
                })
                .unwrap();
        }
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, want);
    }
}
