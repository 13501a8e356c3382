//! Run: `cargo test --test table_oracle`
//!
//! Property tests of the builder and the walker against independent oracles:
//!
//! - the generated list of mappings: after building random non-overlapping
//!   mappings (mixed leaf sizes, random permissions and memory types), a walk of
//!   both canonical halves returns exactly the generated leaves and holes
//!   everywhere else, for 4- and 5-level paging; the same after random unmaps;
//! - the `x86_64` crate: tables built by its `OffsetPageTable::map_to` are walked
//!   by pagepin, and tables built by pagepin are translated by its
//!   `Translate::translate`, with the same results. The crate has no 5-level
//!   paging, so this part covers 4-level only.

use pagepin::arch::x86_64::{Paging4Level, Paging5Level};
use pagepin::table::*;
use proptest::prelude::*;

const CASES: u32 = if cfg!(miri) { 4 } else { 256 };
const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
const GIB1: u64 = 1 << 30;
/// Each window is 8 GiB; a mapping starts in its first 4 GiB and is at most
/// 4 GiB long, so it stays inside.
const WINDOW: u64 = 8 * GIB1;
/// Enough frames for the root and every table of 12 mappings in 5 levels.
const FRAMES: usize = 128;
const MEMORY_BASE: PhysAddr = PhysAddr(0x10_0000);

/// One generated mapping.
#[derive(Debug, Clone, Copy)]
struct Mapping {
    va: u64,
    pa: u64,
    leaf: u64,
    count: u64,
    perms: Perms,
    mem_type: u8,
}

impl Mapping {
    fn len(&self) -> u64 {
        self.leaf * self.count
    }

    fn last(&self) -> u64 {
        self.va + (self.len() - 1)
    }

    fn overlaps(&self, other: &Mapping) -> bool {
        self.va <= other.last() && other.va <= self.last()
    }

    fn request(&self) -> MapRequest {
        MapRequest::new(VirtAddr(self.va), PhysAddr(self.pa), self.len(), self.leaf)
            .with_perms(self.perms)
            .with_mem_type(MemType(self.mem_type))
    }

    /// The leaves, as the walker should report them: (va, pa, size, perms,
    /// memory type).
    fn leaves(&self) -> impl Iterator<Item = (u64, u64, u64, Perms, u8)> + '_ {
        (0..self.count).map(move |i| {
            (
                self.va + i * self.leaf,
                self.pa + i * self.leaf,
                self.leaf,
                self.perms,
                self.mem_type,
            )
        })
    }
}

/// Where mappings go, for a `va_bits`-bit address space: both ends of both
/// canonical halves, and across the boundary of two root entries (so tables
/// are shared and neighbours are split across them).
fn window_base(window: usize, va_bits: u32) -> u64 {
    let half = 1u64 << (va_bits - 1);
    let root_span = 1u64 << (va_bits - 9);
    match window {
        0 => 0,
        1 => root_span - WINDOW / 2,
        2 => half - WINDOW,
        3 => half.wrapping_neg(),
        _ => WINDOW.wrapping_neg(),
    }
}

/// A generated candidate: window, offset, leaf-size choice, count, physical
/// address bits, permission bits, memory type.
type Candidate = (usize, u64, usize, u64, u64, u32, u8);

fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(
        (
            0..5usize,
            0..WINDOW / 2,
            0..3usize,
            1..=4u64,
            any::<u64>(),
            any::<u32>(),
            0..8u8,
        ),
        1..12,
    )
}

fn mapping(c: Candidate, va_bits: u32, max_mem_type: u8) -> Mapping {
    let (window, offset, size, count, pa_bits, perm_bits, mem_type) = c;
    let leaf = [KIB4, MIB2, GIB1][size];
    let count = if leaf == GIB1 { 1 + count % 2 } else { count };
    Mapping {
        va: window_base(window, va_bits) + (offset & !(leaf - 1)),
        pa: pa_bits & ((1 << 51) - 1) & !(leaf - 1),
        leaf,
        count,
        perms: Perms::from_bits_truncate(perm_bits) | Perms::READ,
        mem_type: mem_type % (max_mem_type + 1),
    }
}

/// Splits `cands` into accepted (pairwise disjoint) and rejected mappings.
fn place(cands: &[Candidate], va_bits: u32, max_mem_type: u8) -> (Vec<Mapping>, Vec<Mapping>) {
    let mut accepted: Vec<Mapping> = Vec::new();
    let mut rejected = Vec::new();
    for &c in cands {
        let m = mapping(c, va_bits, max_mem_type);
        if accepted.iter().any(|a| a.overlaps(&m)) {
            rejected.push(m);
        } else {
            accepted.push(m);
        }
    }
    (accepted, rejected)
}

fn frames() -> Vec<HostFrame> {
    (0..FRAMES).map(|_| HostFrame::new()).collect()
}

/// Walks both canonical halves and checks that they hold exactly `expected`'s
/// leaves, and holes everywhere else, tiling each half.
fn assert_exactly<F: PagingFormat>(walker: &Walker<'_, F, HostMemory<'_>>, expected: &[Mapping]) {
    let va_bits = F::GEOMETRY.va_bits();
    let half = 1u64 << (va_bits - 1);
    let mut want: Vec<_> = expected.iter().flat_map(Mapping::leaves).collect();
    want.sort_by_key(|leaf| leaf.0);
    let mut got = Vec::new();
    for start in [0, half.wrapping_neg()] {
        let mut next = start;
        for item in walker.walk(VirtAddr(start), half).unwrap() {
            let item = item.unwrap();
            assert_eq!(item.va().start().0, next, "items tile the range");
            next = item.va().last().0.wrapping_add(1);
            if let WalkItem::Leaf(leaf) = item {
                assert_eq!(
                    leaf.va.size(),
                    leaf.size,
                    "a whole leaf inside a whole half"
                );
                assert_eq!((leaf.leaf_va, leaf.leaf_pa), (leaf.va.start(), leaf.pa));
                got.push((
                    leaf.leaf_va.0,
                    leaf.leaf_pa.0,
                    leaf.size,
                    leaf.perms,
                    leaf.mem_type.0,
                ));
            }
        }
        assert_eq!(next, start.wrapping_add(half), "items cover the whole half");
    }
    assert_eq!(got, want);
    for &(va, pa, size, perms, _) in &want {
        for offset in [0, size / 2 + 8, size - 1] {
            let WalkItem::Leaf(leaf) = walker.translate(VirtAddr(va + offset)).unwrap() else {
                panic!("{va:#x} + {offset:#x} is mapped");
            };
            assert_eq!(
                (leaf.pa.0, leaf.size, leaf.perms),
                (pa + offset, size, perms)
            );
            let parent = leaf.parent.expect("x86_64 has no leaves in the root");
            assert!(walker.is_unchanged(&leaf.entry).unwrap());
            assert!(walker.is_unchanged(&parent).unwrap());
        }
    }
}

/// Builds `cands` with the builder, checks the walk against the oracle, unmaps
/// the mappings `unmap` selects and checks again, then unmaps the rest and
/// checks that every table went back to the pool.
fn build_and_unmap<F: PagingFormat>(cands: &[Candidate], unmap: &[bool]) {
    let va_bits = F::GEOMETRY.va_bits();
    let (accepted, rejected) = place(cands, va_bits, 7);
    let frames = frames();
    let memory = HostMemory::new(&frames, MEMORY_BASE).unwrap();
    let mut pool_frames: Vec<PhysAddr> = memory.frame_pas().collect();
    // SAFETY: the frames are this code's own, listed once, in no other pool.
    let pool = unsafe { FramePool::new(&mut pool_frames) };
    // SAFETY: no walker or MMU reads these tables while the builder unmaps.
    let mut tables =
        TableBuilder::<F, _, _>::new(&memory, pool, unsafe { ReclaimNow::new() }).unwrap();
    for m in &accepted {
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { tables.map(&m.request()) }.unwrap();
    }
    for m in &rejected {
        let free = tables.pool().free_count();
        assert!(matches!(
            // SAFETY: the pages mapped are this code's, unmapped before they are freed.
            unsafe { tables.map(&m.request()) },
            Err(MapError::Overlap { .. })
        ));
        assert_eq!(
            tables.pool().free_count(),
            free,
            "a refused map takes no frame"
        );
    }
    let walker = tables.walker();
    assert_exactly(&walker, &accepted);

    // A range covering part of a huge leaf is refused and changes nothing.
    if let Some(huge) = accepted.iter().find(|m| m.leaf > KIB4) {
        assert_eq!(
            tables.unmap(VirtAddr(huge.va + KIB4), KIB4),
            Err(UnmapError::SplitsLeaf {
                leaf_va: VirtAddr(huge.va),
                size: huge.leaf
            })
        );
    }
    let (gone, kept): (Vec<_>, Vec<_>) = accepted
        .iter()
        .enumerate()
        .partition(|(i, _)| unmap.get(*i).copied().unwrap_or(false));
    for (_, m) in &gone {
        let done = tables.unmap(VirtAddr(m.va), m.len()).unwrap();
        assert_eq!(done.leaves as u64, m.count);
    }
    let kept: Vec<Mapping> = kept.into_iter().map(|(_, m)| *m).collect();
    assert_exactly(&tables.walker(), &kept);
    for m in &kept {
        tables.unmap(VirtAddr(m.va), m.len()).unwrap();
    }
    assert_exactly(&tables.walker(), &[]);
    assert_eq!(
        tables.pool().free_count(),
        FRAMES - 1,
        "every table but the root is back"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn four_level_walk_matches_the_mapping_list(
        cands in candidates(),
        unmap in prop::collection::vec(any::<bool>(), 12),
    ) {
        build_and_unmap::<Paging4Level>(&cands, &unmap);
    }

    #[test]
    fn five_level_walk_matches_the_mapping_list(
        cands in candidates(),
        unmap in prop::collection::vec(any::<bool>(), 12),
    ) {
        build_and_unmap::<Paging5Level>(&cands, &unmap);
    }

    #[test]
    fn x86_64_crate_tables_walk_like_the_mapping_list(cands in candidates()) {
        x86_64_crate::built_by_the_crate_walked_by_pagepin(&cands);
    }

    #[test]
    fn pagepin_tables_translate_alike_in_the_x86_64_crate(cands in candidates()) {
        x86_64_crate::built_by_pagepin_translated_by_the_crate(&cands);
    }
}

/// The cross-check with the `x86_64` crate (4-level only: the crate has no
/// 5-level paging). PAT is left out: the crate has no flag for bit 12 of a huge
/// leaf, and reads bit 7 of a PTE as `HUGE_PAGE`; memory types 0-3 (PWT, PCD)
/// are covered. The crate reports the leaf's flags only, not the effective
/// permissions; its `map_to` gives table entries the union of their children's
/// R/W and U/S and never XD, so the two agree on the tables it builds.
mod x86_64_crate {
    use super::*;
    use x86_64::structures::paging::mapper::{MappedFrame, TranslateResult};
    use x86_64::structures::paging::{
        FrameAllocator, Mapper, OffsetPageTable, Page, PageSize, PageTable, PageTableFlags,
        PhysFrame, Size1GiB, Size2MiB, Size4KiB, Translate,
    };

    /// Hands out the host frames after the root, by their made-up physical
    /// addresses.
    struct HostFrames(std::vec::IntoIter<PhysAddr>);

    // SAFETY: every frame it returns is a distinct unused frame of the host
    // memory, which the offset page table reaches at `phys_offset`.
    unsafe impl FrameAllocator<Size4KiB> for HostFrames {
        fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
            let pa = self.0.next()?;
            PhysFrame::from_start_address(x86_64::PhysAddr::new(pa.0)).ok()
        }
    }

    fn flags(m: &Mapping) -> PageTableFlags {
        let mut flags = PageTableFlags::PRESENT;
        let map = [
            (Perms::WRITE, PageTableFlags::WRITABLE),
            (Perms::USER, PageTableFlags::USER_ACCESSIBLE),
            (Perms::GLOBAL, PageTableFlags::GLOBAL),
            (Perms::ACCESSED, PageTableFlags::ACCESSED),
            (Perms::DIRTY, PageTableFlags::DIRTY),
        ];
        for (perm, flag) in map {
            flags.set(flag, m.perms.contains(perm));
        }
        flags.set(PageTableFlags::NO_EXECUTE, !m.perms.contains(Perms::EXEC));
        flags.set(PageTableFlags::WRITE_THROUGH, m.mem_type & 1 != 0);
        flags.set(PageTableFlags::NO_CACHE, m.mem_type & 2 != 0);
        flags
    }

    /// Runs `f` with an offset page table over `frames` whose root is frame 0.
    fn with_offset_table<R>(
        frames: &mut [HostFrame],
        f: impl FnOnce(&mut OffsetPageTable<'_>) -> R,
    ) -> R {
        let host = frames.as_mut_ptr();
        // The host address of made-up physical address `pa` is `pa + offset`.
        let offset = (host as u64).wrapping_sub(MEMORY_BASE.0);
        // SAFETY: `frames` is exclusively borrowed for the whole call; frame 0
        // is 4 KiB-aligned and as large as a `PageTable` (512 u64 words, the
        // layout of `HostFrame`); every physical address the crate follows is a
        // frame of `frames` (the tables it creates come from `HostFrames`), so
        // `offset + pa` is inside the slice.
        let mut table = unsafe {
            OffsetPageTable::new(
                &mut *host.cast::<PageTable>(),
                x86_64::VirtAddr::new(offset),
            )
        };
        f(&mut table)
    }

    fn map_with_crate(table: &mut OffsetPageTable<'_>, alloc: &mut HostFrames, m: &Mapping) {
        for (va, pa, size, _, _) in m.leaves() {
            let va = x86_64::VirtAddr::new(va);
            let pa = x86_64::PhysAddr::new(pa);
            // SAFETY: the tables are host memory nobody executes on; the flush
            // (an `invlpg`) is skipped with `ignore`.
            unsafe {
                match size {
                    Size4KiB::SIZE => table
                        .map_to(
                            Page::<Size4KiB>::from_start_address(va).unwrap(),
                            PhysFrame::from_start_address(pa).unwrap(),
                            flags(m),
                            alloc,
                        )
                        .unwrap()
                        .ignore(),
                    Size2MiB::SIZE => table
                        .map_to(
                            Page::<Size2MiB>::from_start_address(va).unwrap(),
                            PhysFrame::from_start_address(pa).unwrap(),
                            flags(m),
                            alloc,
                        )
                        .unwrap()
                        .ignore(),
                    _ => table
                        .map_to(
                            Page::<Size1GiB>::from_start_address(va).unwrap(),
                            PhysFrame::from_start_address(pa).unwrap(),
                            flags(m),
                            alloc,
                        )
                        .unwrap()
                        .ignore(),
                }
            }
        }
    }

    pub fn built_by_the_crate_walked_by_pagepin(cands: &[Candidate]) {
        let (accepted, _) = place(cands, 48, 3);
        let mut frames = frames();
        let mut alloc = HostFrames(
            (1..FRAMES as u64)
                .map(|i| PhysAddr(MEMORY_BASE.0 + i * HOST_FRAME_SIZE))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        with_offset_table(&mut frames, |table| {
            for m in &accepted {
                map_with_crate(table, &mut alloc, m);
            }
        });
        let memory = HostMemory::new(&frames, MEMORY_BASE).unwrap();
        let walker = Walker::<Paging4Level, _>::new(&memory, MEMORY_BASE);
        assert_exactly(&walker, &accepted);
    }

    pub fn built_by_pagepin_translated_by_the_crate(cands: &[Candidate]) {
        let (accepted, _) = place(cands, 48, 3);
        let mut frames = frames();
        let root = {
            let memory = HostMemory::new(&frames, MEMORY_BASE).unwrap();
            let mut pool_frames: Vec<PhysAddr> = memory.frame_pas().skip(1).collect();
            // The root is frame 0, which is where `with_offset_table` looks
            // for it.
            // SAFETY: frame 0 and the pool's frames are this test's own,
            // apart; no walker or MMU reads these tables.
            let mut tables = unsafe {
                TableBuilder::<Paging4Level, _, _>::with_root(
                    &memory,
                    MEMORY_BASE,
                    FramePool::new(&mut pool_frames),
                    ReclaimNow::new(),
                )
            }
            .unwrap();
            for m in &accepted {
                // SAFETY: the pages mapped are this code's, unmapped before they are freed.
                unsafe { tables.map(&m.request()) }.unwrap();
            }
            tables.root()
        };
        assert_eq!(root, MEMORY_BASE);
        with_offset_table(&mut frames, |table| {
            for m in &accepted {
                for (va, pa, size, _, _) in m.leaves() {
                    for offset in [0, size / 2 + 8, size - 1] {
                        let TranslateResult::Mapped {
                            frame,
                            offset: got_offset,
                            flags: got,
                        } = table.translate(x86_64::VirtAddr::new(va + offset))
                        else {
                            panic!("{va:#x} + {offset:#x} is mapped");
                        };
                        let frame_size = match frame {
                            MappedFrame::Size4KiB(_) => Size4KiB::SIZE,
                            MappedFrame::Size2MiB(_) => Size2MiB::SIZE,
                            MappedFrame::Size1GiB(_) => Size1GiB::SIZE,
                        };
                        assert_eq!(
                            (frame.start_address().as_u64(), got_offset, frame_size),
                            (pa, offset, size)
                        );
                        let mut want = flags(m);
                        want.set(PageTableFlags::HUGE_PAGE, size > Size4KiB::SIZE);
                        assert_eq!(got, want);
                    }
                }
                // Just below and past the mapping: the crate sees nothing there
                // unless another mapping is.
                for probe in [m.va.wrapping_sub(1), m.last().wrapping_add(1)] {
                    let mapped = accepted.iter().any(|o| o.va <= probe && probe <= o.last());
                    let canonical = Paging4Level::is_canonical(VirtAddr(probe));
                    if canonical && !mapped {
                        assert!(matches!(
                            table.translate(x86_64::VirtAddr::new(probe)),
                            TranslateResult::NotMapped
                        ));
                    }
                }
            }
        });
    }
}
