//! Run: `cargo test --test table_riscv`
//!
//! Property tests of the RISC-V formats against independent oracles:
//!
//! - a reference translation written from the RISC-V Privileged Architecture
//!   (20211203, §4.3.2 "Virtual Address Translation Process", with §8.5.1's
//!   ×4 root and U-mode rule for the G-stage), reading raw PTE bits itself and
//!   sharing no code with `pagepin::arch::riscv64`;
//! - the generated mapping list: random non-overlapping mappings of every
//!   leaf size (4 KiB up to the mode's largest: 1 GiB, 512 GiB, 256 TiB) are
//!   built with the `TableBuilder` in both sign-extended halves of Sv39, Sv48
//!   and Sv57, walked, compared leaf by leaf with the list and with the
//!   reference translation, partly unmapped and compared again; the G-stage
//!   formats through `tests/table_aarch64/mapping_list.rs` (their GPAs are
//!   zero-extended, as that harness's windows assume), also checked against
//!   the reference;
//! - random raw tables: garbage PTEs (valid, invalid, reserved bits,
//!   misaligned superpages, pointers into and out of the table memory) walked
//!   by pagepin (items or typed errors, bounded loads: the shared
//!   `malformed_common` checks) and translated by the reference at random
//!   addresses: pagepin's leaf, hole or decode error must be the reference's
//!   translation, invalid entry or page fault.

mod malformed_common;
#[path = "table_aarch64/mapping_list.rs"]
mod mapping_list;

use malformed_common::Rng;
use pagepin::arch::riscv64::*;
use pagepin::sync::Ordering;
use pagepin::table::*;
use proptest::prelude::*;

const CASES: u32 = if cfg!(miri) { 2 } else { 96 };

// ---------------------------------------------------------------------------
// The reference translation (§4.3.2), from raw bits.
// ---------------------------------------------------------------------------

/// What the hart does with a VA: translate it (the PA and the leaf PTE), find
/// an invalid PTE (V = 0: a page fault that a kernel fills), or raise a page
/// fault for a malformed PTE (or a PTE outside the tables: an access fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reference {
    Maps { pa: u64, pte: u64, size: u64 },
    Invalid,
    Fault,
}

/// §4.3.2 for a mode of `levels` levels; `x4`: the G-stage (16 KiB root,
/// 2 more index bits). No Svpbmt, no Svnapot: bits 63:54 are reserved.
fn reference(memory: &HostMemory<'_>, root: u64, va: u64, levels: u32, x4: bool) -> Reference {
    // Step 1: a = satp.ppn × PAGESIZE, i = LEVELS − 1.
    let mut a = root;
    let mut i = levels - 1;
    loop {
        // Step 2: pte = a + va.vpn[i] × PTESIZE (the root's VPN field has 2
        // more bits in a ×4 mode).
        let bits = if x4 && i == levels - 1 { 11 } else { 9 };
        let vpn = (va >> (12 + 9 * i)) & ((1 << bits) - 1);
        // SAFETY: the word is only loaded.
        let Ok(word) = (unsafe { memory.entry(PhysAddr(a), vpn as usize) }) else {
            return Reference::Fault;
        };
        // Relaxed: single-threaded test.
        let pte = word.load(Ordering::Relaxed);
        let (v, r, w, x) = (pte & 1, pte >> 1 & 1, pte >> 2 & 1, pte >> 3 & 1);
        // Step 3: V = 0 (invalid), R = 0 with W = 1, reserved bits.
        if v == 0 {
            return Reference::Invalid;
        }
        if (r == 0 && w == 1) || pte >> 54 != 0 {
            return Reference::Fault;
        }
        let ppn = pte >> 10 & ((1 << 44) - 1);
        if r == 0 && x == 0 {
            // Step 4: a pointer; D, A, U are reserved in non-leaf PTEs.
            if i == 0 || pte & 0b1101_0000 != 0 {
                return Reference::Fault;
            }
            i -= 1;
            a = ppn << 12;
            continue;
        }
        // Step 6: a misaligned superpage.
        if ppn & ((1 << (9 * i)) - 1) != 0 {
            return Reference::Fault;
        }
        // Step 8: pa.pgoff = va.pgoff, pa.ppn[i−1:0] = va.vpn[i−1:0],
        // pa.ppn[LEVELS−1:i] = pte.ppn[LEVELS−1:i].
        let size = 1u64 << (12 + 9 * i);
        return Reference::Maps {
            pa: (ppn << 12) & !(size - 1) | va & (size - 1),
            pte,
            size,
        };
    }
}

/// The permissions the reference reads from a leaf PTE: R/W/X, U, G, A, D;
/// for the G-stage R/W/X only with U = 1, and neither U nor G.
fn reference_perms(pte: u64, gstage: bool) -> Perms {
    let mut p = Perms::empty();
    let usable = !gstage || pte & 1 << 4 != 0;
    p.set(Perms::READ, usable && pte & 1 << 1 != 0);
    p.set(Perms::WRITE, usable && pte & 1 << 2 != 0);
    p.set(Perms::EXEC, usable && pte & 1 << 3 != 0);
    p.set(Perms::USER, !gstage && pte & 1 << 4 != 0);
    p.set(Perms::GLOBAL, !gstage && pte & 1 << 5 != 0);
    p.set(Perms::ACCESSED, pte & 1 << 6 != 0);
    p.set(Perms::DIRTY, pte & 1 << 7 != 0);
    p
}

/// A RISC-V format and how the reference walks it.
trait RiscV: PagingFormat {
    const LEVELS: u32;
    const X4: bool;
}

impl<const L: usize> RiscV for Sv<L> {
    const LEVELS: u32 = L as u32;
    const X4: bool = false;
}

impl<const L: usize> RiscV for GStage<L> {
    const LEVELS: u32 = L as u32;
    const X4: bool = true;
}

/// pagepin's translation of `va` agrees with the reference's.
fn agrees<F: RiscV>(memory: &HostMemory<'_>, root: PhysAddr, va: u64) {
    let walker = Walker::<F, _>::new(memory, root);
    let want = reference(memory, root.0, va, F::LEVELS, F::X4);
    match (walker.translate(VirtAddr(va)), want) {
        (Ok(WalkItem::Leaf(leaf)), Reference::Maps { pa, pte, size }) => {
            assert_eq!(
                (leaf.pa.0, leaf.size, leaf.perms),
                (pa, size, reference_perms(pte, F::X4)),
                "{} at {va:#x}",
                F::NAME
            );
            assert_eq!(leaf.mem_type, MemType(0));
        }
        (Ok(WalkItem::Hole(_)), Reference::Invalid) => {}
        (Err(e), _) if e.kind == WalkErrorKind::NonCanonical => {
            assert!(!F::is_canonical(VirtAddr(va)));
        }
        (Err(e), Reference::Fault) => assert!(
            matches!(
                e.kind,
                WalkErrorKind::Decode { .. } | WalkErrorKind::Access { .. }
            ),
            "{} at {va:#x}: {e}",
            F::NAME
        ),
        (got, want) => panic!(
            "{} at {va:#x}: pagepin {got:?}, reference {want:?}",
            F::NAME
        ),
    }
}

// ---------------------------------------------------------------------------
// The mapping list over both halves of Sv39/48/57.
// ---------------------------------------------------------------------------

/// Permissions Sv leaves can hold: R or X (W needs R), and anything else.
fn sv_perms(bits: u32) -> Perms {
    let mut perms = Perms::from_bits_truncate(bits);
    if perms.contains(Perms::WRITE) || !perms.intersects(Perms::READ | Perms::EXEC) {
        perms |= Perms::READ;
    }
    perms
}

/// The four windows of a sign-extended space: the bottom and top of each half.
fn sv_windows<F: PagingFormat>(window: u64) -> [u64; 4] {
    let half = 1u64 << (F::GEOMETRY.va_bits() - 1);
    [0, half - window, half.wrapping_neg(), window.wrapping_neg()]
}

#[derive(Debug, Clone, Copy)]
struct SvMapping {
    va: u64,
    pa: u64,
    leaf: u64,
    count: u64,
    perms: Perms,
}

impl SvMapping {
    fn last(&self) -> u64 {
        self.va + (self.leaf * self.count - 1)
    }
}

type SvCandidate = (usize, u64, usize, u64, u64, u32);

fn sv_candidates() -> impl Strategy<Value = Vec<SvCandidate>> {
    prop::collection::vec(
        (
            0..4usize,
            any::<u64>(),
            any::<usize>(),
            1..=3u64,
            any::<u64>(),
            any::<u32>(),
        ),
        1..10,
    )
}

fn sv_build_and_check<F: RiscV>(cands: &[SvCandidate], unmap: &[bool]) {
    let sizes = mapping_list::leaf_sizes::<F>();
    let largest = *sizes.last().unwrap();
    let window = 4 * largest;
    let windows = sv_windows::<F>(window);
    let mut accepted: Vec<SvMapping> = Vec::new();
    for &(w, offset, size, count, pa_bits, perm_bits) in cands {
        let leaf = sizes[size % sizes.len()];
        let m = SvMapping {
            va: windows[w] + ((offset % (window - count * leaf + 1)) & !(leaf - 1)),
            pa: pa_bits & ((1 << 52) - 1) & !(leaf - 1),
            leaf,
            count,
            perms: sv_perms(perm_bits),
        };
        if !accepted
            .iter()
            .any(|a| a.va <= m.last() && m.va <= a.last())
        {
            accepted.push(m);
        }
    }
    let frames: Vec<HostFrame> = (0..1 + 10 * (F::GEOMETRY.depth() - 1))
        .map(|_| HostFrame::new())
        .collect();
    let memory = HostMemory::new(&frames, mapping_list::MEMORY_BASE).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<F, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() }).unwrap();
    let free = tables.pool().free_count();
    for m in &accepted {
        let req = MapRequest::new(VirtAddr(m.va), PhysAddr(m.pa), m.leaf * m.count, m.leaf)
            .with_perms(m.perms);
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { tables.map(&req) }.unwrap();
    }
    let check = |tables: &TableBuilder<'_, F, HostMemory<'_>, ReclaimNow>, live: &[SvMapping]| {
        let walker = tables.walker();
        for m in live {
            for i in 0..m.count {
                for off in [0, m.leaf / 2 + 8, m.leaf - 1] {
                    let va = m.va + i * m.leaf + off;
                    let leaf = *walker.translate(VirtAddr(va)).unwrap().leaf().unwrap();
                    assert_eq!(
                        (leaf.pa.0, leaf.size, leaf.perms),
                        (m.pa + i * m.leaf + off, m.leaf, m.perms)
                    );
                    agrees::<F>(&memory, tables.root(), va);
                }
            }
        }
        // Every window walked: leaves only where the list has them.
        let mut leaves = 0;
        for &start in &windows {
            for item in walker.walk(VirtAddr(start), window).unwrap() {
                if let WalkItem::Leaf(leaf) = item.unwrap() {
                    leaves += 1;
                    assert!(
                        live.iter()
                            .any(|m| m.va <= leaf.leaf_va.0 && leaf.leaf_va.0 <= m.last()),
                        "{:#x} is in the list",
                        leaf.leaf_va.0
                    );
                } else {
                    agrees::<F>(&memory, tables.root(), start);
                }
            }
        }
        assert_eq!(leaves as u64, live.iter().map(|m| m.count).sum::<u64>());
        // Just outside each mapping: whatever the list says.
        for m in live {
            for va in [m.va.wrapping_sub(1), m.last().wrapping_add(1)] {
                agrees::<F>(&memory, tables.root(), va);
            }
        }
    };
    check(&tables, &accepted);
    let (gone, kept): (Vec<_>, Vec<_>) = accepted
        .iter()
        .enumerate()
        .partition(|(i, _)| unmap.get(*i).copied().unwrap_or(false));
    for (_, m) in &gone {
        let done = tables.unmap(VirtAddr(m.va), m.leaf * m.count).unwrap();
        assert_eq!(done.leaves as u64, m.count);
    }
    let kept: Vec<SvMapping> = kept.into_iter().map(|(_, m)| *m).collect();
    check(&tables, &kept);
    for m in &kept {
        tables.unmap(VirtAddr(m.va), m.leaf * m.count).unwrap();
    }
    check(&tables, &[]);
    assert_eq!(
        tables.pool().free_count(),
        free,
        "every table but the root is back"
    );
}

// ---------------------------------------------------------------------------
// The G-stage through the shared mapping list.
// ---------------------------------------------------------------------------

impl<const L: usize> mapping_list::Profile for GStage<L> {
    /// R or X (W needs R), A and D; never U or G (the encoder sets U).
    fn perms(bits: u32) -> Perms {
        let g = Perms::READ | Perms::WRITE | Perms::EXEC | Perms::ACCESSED | Perms::DIRTY;
        let mut perms = Perms::from_bits_truncate(bits) & g;
        if perms.contains(Perms::WRITE) || !perms.intersects(Perms::READ | Perms::EXEC) {
            perms |= Perms::READ;
        }
        perms
    }

    fn mem_type(_: u8) -> MemType {
        PBMT_PMA
    }
}

fn gstage_build_and_check<F: RiscV + mapping_list::Profile>(
    cands: &[mapping_list::Candidate],
    unmap: &[bool],
) {
    mapping_list::build_and_unmap::<F>(cands, unmap);
    // And the reference agrees on a build of the accepted mappings.
    let (accepted, _) = mapping_list::place::<F>(cands);
    let frames = mapping_list::host_frames::<F>();
    let memory = HostMemory::new(&frames, mapping_list::MEMORY_BASE).unwrap();
    let mut slots = mapping_list::pool_frames::<F>(&memory);
    // SAFETY: the frames are this code's own, listed once, in no other pool.
    // The root is this code's own memory, outside the pool.
    let mut tables = unsafe {
        TableBuilder::<F, _, _>::with_root(
            &memory,
            mapping_list::MEMORY_BASE,
            FramePool::new(&mut slots),
            // SAFETY: no walker or MMU reads these tables while the builder unmaps.
            ReclaimNow::new(),
        )
    }
    .unwrap();
    for m in &accepted {
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { tables.map(&m.request()) }.unwrap();
    }
    for m in &accepted {
        for (va, _, size) in m.leaves() {
            for va in [
                va,
                va + size / 2,
                va + size - 1,
                va.wrapping_sub(1),
                va + size,
            ] {
                agrees::<F>(&memory, tables.root(), va);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn sv39_matches_the_list_and_the_reference(cands in sv_candidates(), unmap in prop::collection::vec(any::<bool>(), 10)) {
        sv_build_and_check::<Sv39>(&cands, &unmap);
    }

    #[test]
    fn sv48_matches_the_list_and_the_reference(cands in sv_candidates(), unmap in prop::collection::vec(any::<bool>(), 10)) {
        sv_build_and_check::<Sv48>(&cands, &unmap);
    }

    #[test]
    fn sv57_matches_the_list_and_the_reference(cands in sv_candidates(), unmap in prop::collection::vec(any::<bool>(), 10)) {
        sv_build_and_check::<Sv57>(&cands, &unmap);
    }

    #[test]
    fn sv39x4_matches_the_list_and_the_reference(cands in mapping_list::candidates(), unmap in prop::collection::vec(any::<bool>(), mapping_list::MAX_MAPPINGS)) {
        gstage_build_and_check::<Sv39x4>(&cands, &unmap);
    }

    #[test]
    fn sv48x4_matches_the_list_and_the_reference(cands in mapping_list::candidates(), unmap in prop::collection::vec(any::<bool>(), mapping_list::MAX_MAPPINGS)) {
        gstage_build_and_check::<Sv48x4>(&cands, &unmap);
    }

    #[test]
    fn sv57x4_matches_the_list_and_the_reference(cands in mapping_list::candidates(), unmap in prop::collection::vec(any::<bool>(), mapping_list::MAX_MAPPINGS)) {
        gstage_build_and_check::<Sv57x4>(&cands, &unmap);
    }
}

// ---------------------------------------------------------------------------
// Random raw tables.
// ---------------------------------------------------------------------------

/// 32 KiB of tables: a 16 KiB G-stage root and four more tables.
const FRAMES: usize = 8;
const BASE: PhysAddr = PhysAddr(0x8000_0000);
const MAX_ITEMS: usize = 1024;

impl Rng {
    /// Invalid, garbage, or a valid PTE (random RWX/U/G/A/D/RSW, sometimes a
    /// reserved high bit) whose PPN points into, next to or far from the
    /// tables, or is a (mis)aligned superpage.
    fn pte(&mut self) -> u64 {
        let r = self.next();
        let low = self.next() & 0x3fe | 1;
        let high = if r & 0x700 == 0 {
            1 << (54 + (r >> 11) % 10)
        } else {
            0
        };
        let into = BASE.0 + (r >> 16) % (FRAMES as u64 + 2) * 4096;
        let pa = match r % 8 {
            0 | 1 => return 0,
            2 => return self.next(),
            3..=5 => into,
            6 => self.next() & ((1 << 56) - 1) & !((1 << 21) - 1),
            _ => self.next() & ((1 << 56) - 1) & !0xfff,
        };
        (pa >> 12) << 10 | low | high
    }
}

fn garbage<F: RiscV>(frames: &[HostFrame], vas: &[(u64, u64)], rng: &mut Rng) {
    let window = 1u64 << F::GEOMETRY.va_bits();
    let vas: Vec<(u64, u64)> = vas
        .iter()
        .map(|&(start, len)| match start % 3 {
            0 => (start % window, len),
            1 => ((start % window).wrapping_neg(), len),
            _ => (start, len),
        })
        .collect();
    malformed_common::walk_garbage::<F>(frames, BASE, MAX_ITEMS, vas.iter().copied());
    let memory = HostMemory::new(frames, BASE).unwrap();
    for &(start, _) in &vas {
        agrees::<F>(&memory, BASE, start);
        agrees::<F>(&memory, BASE, rng.next() % window);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 256 }))]

    #[test]
    fn random_tables_agree_with_the_reference_or_give_typed_errors(
        seed in 1..u64::MAX,
        vas in prop::collection::vec((any::<u64>(), 1..u64::MAX >> 16), 1..8),
    ) {
        let frames: Vec<HostFrame> = (0..FRAMES).map(|_| HostFrame::new()).collect();
        let mut rng = Rng(seed);
        for frame in &frames {
            for word in &frame.entries {
                // Relaxed: single-threaded setup.
                word.store(rng.pte(), Ordering::Relaxed);
            }
        }
        garbage::<Sv39>(&frames, &vas, &mut rng);
        garbage::<Sv48>(&frames, &vas, &mut rng);
        garbage::<Sv57>(&frames, &vas, &mut rng);
        garbage::<Sv39x4>(&frames, &vas, &mut rng);
        garbage::<Sv48x4>(&frames, &vas, &mut rng);
        garbage::<Sv57x4>(&frames, &vas, &mut rng);
    }
}

/// Hand-made malformed tables: each stops the walk with the typed error the
/// spec's page fault corresponds to, at the entry that caused it.
#[test]
fn malformed_entries_stop_the_walk_where_the_hart_faults() {
    let frames: Vec<HostFrame> = (0..FRAMES).map(|_| HostFrame::new()).collect();
    let pa = |frame: u64| BASE.0 + frame * 4096;
    let pte = |pa: u64, bits: u64| (pa >> 12) << 10 | bits;
    let set = |frame: usize, index: usize, raw: u64| {
        // Relaxed: single-threaded setup.
        frames[frame].entries[index].store(raw, Ordering::Relaxed);
    };
    // Sv39: root[0] → frame 1; [1][0] → frame 2; leaves in frame 2.
    set(0, 0, pte(pa(1), 1));
    set(1, 0, pte(pa(2), 1));
    set(2, 0, pte(0x1000, 0b0101)); // W without R
    set(2, 1, pte(0x1000, 1)); // a pointer at the last level
    set(1, 1, pte(0x20_1000, 0b0011)); // a misaligned megapage
    set(0, 1, pte(pa(1), 1 | 1 << 6)); // A in a pointer
    set(0, 2, pte(0x4000_0000, 0b0011) | 1 << 62); // PBMT without Svpbmt
    let memory = HostMemory::new(&frames, BASE).unwrap();
    let walker = Walker::<Sv39, _>::new(&memory, BASE);
    let error = |va: u64| match walker.translate(VirtAddr(va)).unwrap_err().kind {
        WalkErrorKind::Decode { loc, error, .. } => (loc.level, loc.index, error),
        kind => panic!("{kind:?}"),
    };
    assert_eq!(
        error(0),
        (2, 0, DecodeError::ReservedEncoding { field: 0b0100 })
    );
    assert_eq!(
        error(0x1000),
        (2, 1, DecodeError::TableNotAllowed { level: 2 })
    );
    assert_eq!(
        error(0x20_0000),
        (1, 1, DecodeError::ReservedBits { bits: 1 << 10 })
    );
    assert_eq!(
        error(1 << 30),
        (0, 1, DecodeError::ReservedBits { bits: 1 << 6 })
    );
    assert_eq!(
        error(2 << 30),
        (0, 2, DecodeError::ReservedBits { bits: 1 << 62 })
    );
    for va in [0, 0x1000, 0x20_0000, 1 << 30, 2 << 30] {
        assert_eq!(
            reference(&memory, BASE.0, va, 3, false),
            Reference::Fault,
            "{va:#x}"
        );
    }
    // Non-canonical: bit 38 not extended.
    assert_eq!(
        walker.translate(VirtAddr(1 << 39)).unwrap_err().kind,
        WalkErrorKind::NonCanonical
    );
}
