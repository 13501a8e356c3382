//! The generated mapping list as an oracle, for any format: random
//! non-overlapping mappings (every leaf size of the format, permissions and
//! memory types the format can encode) are built with the `TableBuilder`, and
//! walks of the windows they live in must return exactly their leaves, and
//! holes everywhere else; the same after random unmaps, and every table but the
//! root goes back to the pool at the end.
//!
//! Shared by `tests/table_aarch64/main.rs` and `tests/table_ept.rs`.

use pagepin::table::*;
use proptest::prelude::*;

/// Up to this many mappings per case.
pub const MAX_MAPPINGS: usize = 12;
/// Where the host memory starts: aligned to the largest root used (16
/// concatenated 64 KiB tables).
pub const MEMORY_BASE: PhysAddr = PhysAddr(0x100_0000);

/// What a format's generated mappings may hold.
pub trait Profile: PagingFormat {
    /// Permissions the format can encode, from random bits.
    fn perms(bits: u32) -> Perms;
    /// A memory type the format can encode, from a random byte.
    fn mem_type(bits: u8) -> MemType;
}

/// One generated mapping.
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    /// First virtual address.
    pub va: u64,
    /// First physical address.
    pub pa: u64,
    /// Leaf size.
    pub leaf: u64,
    /// Number of leaves.
    pub count: u64,
    /// Permissions of every leaf.
    pub perms: Perms,
    /// Memory type of every leaf.
    pub mem_type: MemType,
}

impl Mapping {
    pub fn len(&self) -> u64 {
        self.leaf * self.count
    }

    pub fn last(&self) -> u64 {
        self.va + (self.len() - 1)
    }

    fn overlaps(&self, other: &Mapping) -> bool {
        self.va <= other.last() && other.va <= self.last()
    }

    pub fn request(&self) -> MapRequest {
        MapRequest::new(VirtAddr(self.va), PhysAddr(self.pa), self.len(), self.leaf)
            .with_perms(self.perms)
            .with_mem_type(self.mem_type)
    }

    /// The leaves: (va, pa, size).
    pub fn leaves(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        (0..self.count).map(move |i| (self.va + i * self.leaf, self.pa + i * self.leaf, self.leaf))
    }
}

/// A generated candidate: window, offset, leaf-size choice, count, physical
/// address bits, permission bits, memory-type bits.
pub type Candidate = (usize, u64, usize, u64, u64, u32, u8);

pub fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(
        (
            0..3usize,
            any::<u64>(),
            any::<usize>(),
            1..=4u64,
            any::<u64>(),
            any::<u32>(),
            any::<u8>(),
        ),
        1..MAX_MAPPINGS,
    )
}

/// The format's leaf sizes, smallest first.
pub fn leaf_sizes<F: PagingFormat>() -> Vec<u64> {
    let g = F::GEOMETRY;
    let mut sizes: Vec<u64> = (0..g.depth()).filter_map(|l| g.leaf_size(l)).collect();
    sizes.sort_unstable();
    sizes
}

/// The size of a window: room for four of the largest leaves in its first half.
pub fn window_size<F: PagingFormat>() -> u64 {
    8 * leaf_sizes::<F>().last().unwrap()
}

/// The first canonical address (0, or the bottom of a TTBR1 range).
pub fn space_start<F: PagingFormat>() -> u64 {
    if F::is_canonical(VirtAddr(0)) {
        0
    } else {
        !((1u64 << F::GEOMETRY.va_bits()) - 1)
    }
}

/// The windows mappings go to: the bottom and the top of the canonical space,
/// and across the middle, which is a boundary between two root entries (so
/// tables are shared and neighbours are split across them).
pub fn windows<F: PagingFormat>() -> [u64; 3] {
    let space = 1u64 << F::GEOMETRY.va_bits();
    let window = window_size::<F>();
    let start = space_start::<F>();
    [
        start,
        start + (space / 2 - window / 2),
        start + (space - window),
    ]
}

fn mapping<F: Profile>(c: Candidate) -> Mapping {
    let (window, offset, size, count, pa_bits, perm_bits, mem_bits) = c;
    let sizes = leaf_sizes::<F>();
    let leaf = sizes[size % sizes.len()];
    let half = window_size::<F>() / 2;
    Mapping {
        va: windows::<F>()[window] + ((offset % half) & !(leaf - 1)),
        // Below 2^47, so the last leaf stays under the 48-bit output limit.
        pa: pa_bits & ((1 << 47) - 1) & !(leaf - 1),
        leaf,
        count,
        perms: F::perms(perm_bits),
        mem_type: F::mem_type(mem_bits),
    }
}

/// Splits `cands` into accepted (pairwise disjoint) and rejected mappings.
pub fn place<F: Profile>(cands: &[Candidate]) -> (Vec<Mapping>, Vec<Mapping>) {
    let mut accepted: Vec<Mapping> = Vec::new();
    let mut rejected = Vec::new();
    for &c in cands {
        let m = mapping::<F>(c);
        if accepted.iter().any(|a| a.overlaps(&m)) {
            rejected.push(m);
        } else {
            accepted.push(m);
        }
    }
    (accepted, rejected)
}

/// Host frames (4 KiB) per table of the format's largest non-root level.
pub fn frames_per_table<F: PagingFormat>() -> usize {
    ((1u64 << F::GEOMETRY.page_shift()) / HOST_FRAME_SIZE) as usize
}

/// Host frames the root needs (several, for a 16 KiB or 64 KiB granule or
/// concatenated start tables).
pub fn root_frames<F: PagingFormat>() -> usize {
    let bytes = F::GEOMETRY.entries(0).unwrap() as u64 * 8;
    (bytes.div_ceil(HOST_FRAME_SIZE) as usize).max(frames_per_table::<F>())
}

/// Tables enough for every mapping: one per level below the root each.
pub fn table_count<F: PagingFormat>() -> usize {
    MAX_MAPPINGS * (F::GEOMETRY.depth() - 1)
}

pub fn host_frames<F: PagingFormat>() -> Vec<HostFrame> {
    let n = root_frames::<F>() + table_count::<F>() * frames_per_table::<F>();
    (0..n).map(|_| HostFrame::new()).collect()
}

/// The table frames of the pool: granule-sized, after the root.
pub fn pool_frames<F: PagingFormat>(memory: &HostMemory<'_>) -> Vec<PhysAddr> {
    memory
        .frame_pas()
        .skip(root_frames::<F>())
        .step_by(frames_per_table::<F>())
        .collect()
}

/// Walks every window and checks it holds exactly `expected`'s leaves (with
/// their permissions and memory types), and holes everywhere else, tiling the
/// window; then translates three addresses of every leaf.
pub fn assert_exactly<F: PagingFormat>(
    walker: &Walker<'_, F, HostMemory<'_>>,
    expected: &[Mapping],
) {
    let window = window_size::<F>();
    let mut want: Vec<_> = expected
        .iter()
        .flat_map(|m| {
            m.leaves()
                .map(move |(va, pa, size)| (va, pa, size, m.perms, m.mem_type))
        })
        .collect();
    want.sort_by_key(|leaf| leaf.0);
    let mut got = Vec::new();
    let mut bases = windows::<F>().to_vec();
    bases.sort_unstable();
    bases.dedup();
    for start in bases {
        let mut next = start;
        for item in walker.walk(VirtAddr(start), window).unwrap() {
            let item = item.unwrap();
            assert_eq!(item.va().start().0, next, "items tile the window");
            next = item.va().last().0.wrapping_add(1);
            if let WalkItem::Leaf(leaf) = item {
                assert_eq!(leaf.va.size(), leaf.size, "whole leaves in a window");
                got.push((
                    leaf.leaf_va.0,
                    leaf.leaf_pa.0,
                    leaf.size,
                    leaf.perms,
                    leaf.mem_type,
                ));
            }
        }
        assert_eq!(next, start.wrapping_add(window), "items cover the window");
    }
    assert_eq!(got, want);
    for &(va, pa, size, perms, mem_type) in &want {
        for offset in [0, size / 2 + 8, size - 1] {
            let WalkItem::Leaf(leaf) = walker.translate(VirtAddr(va + offset)).unwrap() else {
                panic!("{va:#x} + {offset:#x} is mapped");
            };
            assert_eq!(
                (leaf.pa.0, leaf.size, leaf.perms, leaf.mem_type),
                (pa + offset, size, perms, mem_type)
            );
            assert!(walker.is_unchanged(&leaf.entry).unwrap());
            if let Some(parent) = leaf.parent {
                assert!(walker.is_unchanged(&parent).unwrap());
            }
        }
    }
}

/// Builds `cands`, checks the walk against the list, unmaps the mappings
/// `unmap` selects and checks again, then unmaps the rest and checks that
/// every table went back to the pool. A root larger than one table of the
/// levels below (concatenated start tables) is the caller's, via
/// `TableBuilder::with_root`; otherwise it comes from the pool.
pub fn build_and_unmap<F: Profile>(cands: &[Candidate], unmap: &[bool]) {
    let (accepted, rejected) = place::<F>(cands);
    let frames = host_frames::<F>();
    let memory = HostMemory::new(&frames, MEMORY_BASE).unwrap();
    let mut pool_slots = pool_frames::<F>(&memory);
    let root_is_larger = F::GEOMETRY.entries(0).unwrap() > F::GEOMETRY.entries(1).unwrap();
    let mut tables = if root_is_larger {
        // SAFETY: the frames are this code's own, listed once, in no other pool.
        let pool = unsafe { FramePool::new(&mut pool_slots) };
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The root is this code's own memory, outside the pool.
        unsafe { TableBuilder::<F, _, _>::with_root(&memory, MEMORY_BASE, pool, ReclaimNow::new()) }
            .unwrap()
    } else {
        // The root's own frames join the pool; the root is taken from it.
        pool_slots.push(MEMORY_BASE);
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<F, _, _>::new(
            &memory,
            unsafe { FramePool::new(&mut pool_slots) },
            unsafe { ReclaimNow::new() },
        )
        .unwrap()
    };
    let free_at_start = tables.pool().free_count();
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
    assert_exactly(&tables.walker(), &accepted);

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
        free_at_start,
        "every table but the root is back"
    );
}
