//! The pagepin format sweep on QEMU's aarch64 `virt` machine (issue 16, part
//! 1): the MMU as the oracle of pagepin's stage 1 decoding.
//!
//! The kernel boots at EL2 (`-machine virt,virtualization=on -cpu max`: the
//! `max` CPU has all three granules) on one CPU and, for every stage 1
//! configuration of one granule (the `arg=` of `-semihosting-config`: `4k`,
//! `16k` or `64k`), in the TTBR0 and in the TTBR1 range:
//!
//! 1. builds random mappings with `TableBuilder` in a frame pool of RAM: pages
//!    and blocks at every level that holds them, at the bottom and the top of
//!    the range and anywhere, random permissions (write, user, execute,
//!    access flag, nG, DBM) and memory types (AttrIndx 0-7, shareability);
//!    aligned groups get the contiguous hint, and some table descriptors get
//!    APTable\[0\], APTable\[1\] or both XNTable bits;
//! 2. installs them as the EL1&0 regime (TCR_EL1 for the granule and VA size,
//!    TTBR0_EL1 or TTBR1_EL1, the other range disabled, SCTLR_EL1.M = 1);
//! 3. for a sample of VAs (every mapping's first and last byte, the bytes just
//!    outside it, the edges of its first blocks, a byte inside, the bottom,
//!    middle and top of the range, just outside the range, random VAs)
//!    compares pagepin's `Walker::translate` (PA, present, write, user,
//!    execute, access flag, memory type) with the MMU's: `AT S1E1R`, `S1E1W`,
//!    `S1E0R`, `S1E0W` and PAR_EL1; and, where the leaf's output is RAM this
//!    kernel may write, *executes* the address at EL1 (or EL0 for a user
//!    leaf) through [`el2::exec`]: `svc #0` there means executable, an
//!    instruction abort means not.
//!
//! Any difference is a mismatch, printed with the VA, both answers and the
//! raw entries of the walk. The boot ends with
//! `pagepin-qemu arch=aarch64 mode=sweep cpus=1 granule=<g> levels=<l,...> checks=<n> mismatches=<n> violations=<n>`
//! (violations: the kernel's own failures, a map that should have worked
//! and did not) and exits through PSCI SYSTEM_OFF, or with status 1 through
//! semihosting if anything differed.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod el2;
#[path = "../platform.rs"]
mod platform;

use core::sync::atomic::Ordering;

use pagepin::arch::aarch64::{Shareability, Stage1, stage1_mem_type};
use pagepin::table::{
    DirectMap, Entry, FramePool, MapError, MapRequest, MemType, PagingFormat, Perms, PhysAddr,
    ReclaimNow, TableAccess, TableBuilder, VirtAddr, WalkErrorKind, WalkItem, Walker,
};

/// Page-table frames come from here (RAM, above the kernel image).
const POOL_BASE: u64 = 0x4400_0000;
/// End of the frame pool.
const POOL_END: u64 = 0x4c00_0000;
/// The most frames one configuration takes.
const POOL_FRAMES: usize = 2048;
/// The EL1 vector table: 64 KiB of `hvc #0` (aligned for every granule).
const VECTOR_PA: u64 = 0x4c00_0000;
/// RAM the exec probes may write `svc #0` into: output addresses of leaves
/// in here can be executed. `-m 2G`: RAM is 0x4000_0000..0xc000_0000.
const ARENA: u64 = 0x8000_0000;
/// End of the exec arena.
const ARENA_END: u64 = 0xc000_0000;
/// Table sets built, installed and sampled per configuration.
const ROUNDS: usize = 6;
/// Random mappings per table set.
const MAPS: usize = 48;
/// Random VAs per configuration, on top of those around each mapping.
const RANDOM_VAS: usize = 64;
/// `hvc #0`.
const HVC0: u32 = 0xd400_0002;
/// `svc #0`.
const SVC0: u32 = 0xd400_0001;
/// MAIR_EL1: eight distinct attributes, so PAR_EL1.ATTR names the AttrIndx:
/// Device-nGnRnE, Normal WB RW-allocate, Normal non-cacheable, Device-nGnRE,
/// Normal WT RW-allocate, Normal WB R-allocate, Device-GRE, Normal WT
/// R-allocate.
const MAIR_ATTRS: [u8; 8] = [0x00, 0xff, 0x44, 0x04, 0xbb, 0xee, 0x0c, 0xaa];
/// The contiguous hint (bit 52 of a block or page descriptor).
const CONTIGUOUS: u64 = 1 << 52;
/// Table descriptor bits the sweep sets on some tables: PXNTable | UXNTable,
/// APTable[0] (no EL0), APTable[1] (no writes).
const XN_TABLE: u64 = 3 << 59;
const AP_TABLE_NO_EL0: u64 = 1 << 61;
const AP_TABLE_RDONLY: u64 = 1 << 62;

/// Table access over RAM (the EL2 MMU is off: VA = PA): pagepin's identity
/// map of the frame pool.
type RamTables = DirectMap<'static>;

// SAFETY: (1) the kernel's data accesses are physical (EL2 MMU off), so the
// `AtomicU64` at address `pa` is the word the MMU's walker reads at `pa`; the
// pool `POOL_BASE .. POOL_END` is RAM that no Rust object overlaps (above the
// image: the linker script's ASSERT), live for the whole run; (2) it is only
// ever accessed through these references, with aligned 64-bit atomics like the
// walker's; (3) it does not wrap the address space.
static RAM_TABLES: RamTables =
    unsafe { DirectMap::identity(PhysAddr(POOL_BASE), PhysAddr(POOL_END - 1)) };

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// What one boot counted.
#[derive(Default)]
struct Totals {
    checks: u64,
    mismatches: u64,
    violations: u64,
}

/// Every leaf the sweep mapped (for the VA samples).
#[derive(Clone, Copy)]
struct Mapped {
    va: u64,
    len: u64,
    leaf: u64,
}

/// One configuration's counters, printed per configuration.
#[derive(Default, Clone, Copy)]
struct ConfigStats {
    maps: u64,
    blocks: [u64; 4],
    contiguous: u64,
    restricted_tables: u64,
    vas: u64,
    checks: u64,
    exec_checks: u64,
    mismatches: u64,
}

/// Whether PAR_EL1 reports a fault.
fn par_fault(par: u64) -> bool {
    par & 1 != 0
}

/// PAR_EL1.FST (bits 6:1) of a faulting translation.
fn par_fst(par: u64) -> u64 {
    (par >> 1) & 0x3f
}

/// The fault kinds of a fault status code (the level in bits 1:0 dropped).
fn fault_kind(fst: u64) -> &'static str {
    match fst >> 2 {
        0b0000 => "address size",
        0b0001 => "translation",
        0b0010 => "access flag",
        0b0011 => "permission",
        _ => "other",
    }
}

/// Stage 1 sweep of one configuration: [`ROUNDS`] table sets; prints the
/// configuration's counters and adds them to `totals`.
fn sweep<const G: u32, const VA: u32, const TTBR1: bool>(rng: &mut Rng, totals: &mut Totals) {
    let mut stats = ConfigStats::default();
    for round in 0..ROUNDS {
        sweep_round::<G, VA, TTBR1>(rng, totals, &mut stats, round);
    }
    let name = Stage1::<G, VA, TTBR1>::NAME;
    let depth = Stage1::<G, VA, TTBR1>::GEOMETRY.depth();
    println!(
        "pagepin-qemu: sweep {name}, VA {VA} ({depth} levels, Arm start level {}) {}: {ROUNDS} table sets, maps {} (blocks per pagepin level {:?}, contiguous groups {}), tables restricted {}, VAs {}, checks {} (exec {}), mismatches {}",
        Stage1::<G, VA, TTBR1>::START_LEVEL,
        if TTBR1 { "TTBR1" } else { "TTBR0" },
        stats.maps,
        &stats.blocks[..depth],
        stats.contiguous,
        stats.restricted_tables,
        stats.vas,
        stats.checks,
        stats.exec_checks,
        stats.mismatches
    );
    totals.checks += stats.checks;
    totals.mismatches += stats.mismatches;
}

/// One table set of [`sweep`]: build, install, sample, compare.
fn sweep_round<const G: u32, const VA: u32, const TTBR1: bool>(
    rng: &mut Rng,
    totals: &mut Totals,
    stats: &mut ConfigStats,
    round: usize,
) {
    type F<const G: u32, const VA: u32, const T: bool> = Stage1<G, VA, T>;
    let geo = F::<G, VA, TTBR1>::GEOMETRY;
    let depth = geo.depth();
    let page = 1u64 << G;
    let size = 1u64 << VA;
    let base = if TTBR1 { 0u64.wrapping_sub(size) } else { 0 };

    // A fresh pool: frames a granule apart.
    let mut frames = [PhysAddr(0); POOL_FRAMES];
    let count = (((POOL_END - POOL_BASE) / page) as usize).min(POOL_FRAMES);
    for (i, f) in frames.iter_mut().take(count).enumerate() {
        *f = PhysAddr(POOL_BASE + i as u64 * page);
    }
    // SAFETY: the frames are `POOL_BASE .. POOL_END` a granule apart, each
    // listed once: RAM no Rust object overlaps (see `RAM_TABLES`) and that
    // only this round's builder uses. The previous round's builder over the
    // same frames was dropped at the end of its round; the EL1&0 regime still
    // installed over its tables is neither entered nor asked (no `AT`, no
    // `el2::exec`: this kernel runs at EL2) before `el2::install` puts this
    // round's tables in place and drops the old translations (`TLBI
    // VMALLE1`).
    let pool = unsafe { FramePool::new(&mut frames[..count]) };
    let Ok(mut tables) = TableBuilder::<F<G, VA, TTBR1>, _, _>::new(
        &RAM_TABLES,
        pool,
        // SAFETY: the sweep only maps: this builder never detaches a table, so
        // no table is ever handed back while the MMU or a walk may read it.
        unsafe { ReclaimNow::new() },
    ) else {
        println!("violation: TableBuilder::new");
        totals.violations += 1;
        return;
    };

    // The EL1 vectors, executable at EL1, in the middle of the range.
    let vector_va = base + size / 2;
    let vector = MapRequest::new(VirtAddr(vector_va), PhysAddr(VECTOR_PA), page, page)
        .with_perms(Perms::READ | Perms::EXEC | Perms::ACCESSED | Perms::GLOBAL)
        .with_mem_type(stage1_mem_type(1, Shareability::Inner));
    // SAFETY: the vector page at `VECTOR_PA` is this kernel's own RAM (its
    // `hvc #0` table, outside the frame pool), never freed; nothing pins
    // through these tables (this kernel has no GUP-fast, no truncate).
    if let Err(e) = unsafe { tables.map(&vector) } {
        println!("violation: mapping the vectors: {e}");
        totals.violations += 1;
        return;
    }

    // Round 0 always holds the case this sweep found (targets/README.md,
    // "What the MMU found"): a user, executable page (UXN clear; the encoder
    // sets PXN) under a table descriptor with APTable[0] (no EL0 access).
    let known_va = vector_va + 64 * page;
    if round == 0 {
        let user_exec = Perms::READ | Perms::USER | Perms::EXEC | Perms::ACCESSED | Perms::GLOBAL;
        let req = MapRequest::new(VirtAddr(known_va), PhysAddr(ARENA + 5 * page), page, page)
            .with_perms(user_exec)
            .with_mem_type(stage1_mem_type(1, Shareability::Inner));
        // SAFETY: a page of the exec arena, this kernel's own RAM, never
        // freed; nothing pins through these tables.
        if let Err(e) = unsafe { tables.map(&req) } {
            println!("violation: mapping the user page under APTable[0]: {e}");
            totals.violations += 1;
        }
    }

    // Random mappings.
    let leaf_levels: heapless_levels::Levels = heapless_levels::leaf_levels(&geo);
    let mut mapped = [Mapped {
        va: 0,
        len: 0,
        leaf: 0,
    }; MAPS];
    let mut n_mapped = 0;
    let mut groups = [(0u64, 0u64, 0usize); MAPS];
    let mut n_groups = 0;
    for _ in 0..MAPS {
        let r = rng.next();
        // Half pages, the rest spread over the block levels.
        let level = if r & 1 == 0 || leaf_levels.len == 1 {
            depth - 1
        } else {
            leaf_levels.levels[rng.below(leaf_levels.len as u64 - 1) as usize]
        };
        let Some(leaf) = geo.leaf_size(level) else {
            continue;
        };
        let group = F::<G, VA, TTBR1>::contiguous_entries(level).unwrap_or(1) as u64;
        let contiguous = group > 1 && (r >> 1) & 3 == 0 && leaf * group <= size / 4;
        let max_leaves = if leaf >= 1 << 29 { 2 } else { 24 };
        let leaves = if contiguous {
            group
        } else {
            1 + rng.below(max_leaves)
        };
        let len = leaf * leaves;
        let align = if contiguous { leaf * group } else { leaf };
        if len > size / 4 {
            continue;
        }
        let slots = (size - len) / align;
        let offset = match (r >> 3) & 7 {
            0 => slots * align,                          // the top of the range
            1 => 0,                                      // the bottom
            2 => size / 2 - len.next_multiple_of(align), // just below the vectors
            _ => rng.below(slots + 1) * align,
        };
        let va = base + offset;
        // Output: the exec arena half the time (when it fits), else anywhere
        // below 2^44.
        let arena_slots = (ARENA_END - ARENA).saturating_sub(len) / align;
        let pa = if (r >> 6) & 1 == 0 && ARENA_END - ARENA >= len {
            ARENA + rng.below(arena_slots + 1) * align
        } else {
            rng.below(((1u64 << 44) - len) / align) * align
        };
        let mut perms = Perms::READ;
        perms.set(Perms::WRITE, (r >> 8) & 1 != 0);
        perms.set(Perms::USER, (r >> 9) & 1 != 0);
        perms.set(Perms::EXEC, (r >> 10) & 1 != 0);
        perms.set(Perms::ACCESSED, (r >> 11) & 7 != 0);
        perms.set(Perms::GLOBAL, (r >> 14) & 1 != 0);
        perms.set(
            Perms::DIRTY,
            perms.contains(Perms::WRITE) && (r >> 15) & 3 == 0,
        );
        let sh =
            [Shareability::Non, Shareability::Outer, Shareability::Inner][((r >> 17) % 3) as usize];
        let mem_type = stage1_mem_type(((r >> 20) & 7) as u8, sh);
        let req = MapRequest::new(VirtAddr(va), PhysAddr(pa), len, leaf)
            .with_perms(perms)
            .with_mem_type(mem_type);
        // SAFETY: half the outputs are in the exec arena, this kernel's own
        // RAM, never freed; the others are any PA below 2^44, which this
        // kernel does not own: the sweep breaks the letter of the promise on
        // purpose, to have the MMU decode every output address. Its point
        // holds: no page is freed, nor pinned or written through these
        // tables: nothing in this kernel runs GUP-fast, `AT` translates
        // without accessing memory, and `el2::exec` fetches only through
        // leaves whose output is in the arena (or the vector page). The
        // builder never unmaps (it is dropped with the round).
        match unsafe { tables.map(&req) } {
            Ok(()) => {}
            Err(MapError::Overlap { .. }) => continue,
            Err(e) => {
                println!(
                    "violation: {}: map {va:#x} -> {pa:#x} len {len:#x} leaf {leaf:#x}: {e}",
                    F::<G, VA, TTBR1>::NAME
                );
                totals.violations += 1;
                continue;
            }
        }
        stats.maps += 1;
        if level != depth - 1 {
            stats.blocks[level] += 1;
        }
        mapped[n_mapped] = Mapped { va, len, leaf };
        n_mapped += 1;
        if contiguous {
            groups[n_groups] = (va, leaf, group as usize);
            n_groups += 1;
        }
    }
    let walker = tables.walker();

    // The contiguous hint on every entry of each aligned group.
    for &(va, leaf, group) in &groups[..n_groups] {
        for i in 0..group as u64 {
            if let Ok(WalkItem::Leaf(l)) = walker.translate(VirtAddr(va + i * leaf))
                // SAFETY: not a store the builder makes (it never sets the
                // contiguous hint): the sweep edits its own test tables for the
                // MMU to decode. What the promise guards cannot happen: the
                // bit changes neither the leaf's output nor which table an
                // entry points to, this builder never unmaps or retires a
                // table (`ReclaimNow`, dropped with the round) and nothing
                // pins through these tables.
                && let Ok(word) = unsafe { RAM_TABLES.entry(l.entry.loc.table, l.entry.loc.index) }
            {
                // Relaxed: this CPU alone writes and reads the tables;
                // `el2::install` orders the writes before the MMU's walks.
                word.fetch_or(CONTIGUOUS, Ordering::Relaxed);
            }
        }
        stats.contiguous += 1;
    }
    // Restrictions in some table descriptors above the mappings' leaves
    // (never XNTable above the vectors: EL1 must fetch them).
    for m in &mapped[..n_mapped] {
        let r = rng.next();
        if r & 3 != 0 {
            continue;
        }
        let Ok(WalkItem::Leaf(l)) = walker.translate(VirtAddr(m.va)) else {
            continue;
        };
        let Some(parent) = l.parent else {
            continue;
        };
        let span_shift = geo.entry_shift(parent.loc.level).unwrap_or(63);
        let covers_vectors = (m.va >> span_shift) == (vector_va >> span_shift);
        let mut bits = 0;
        if (r >> 2) & 1 != 0 {
            bits |= AP_TABLE_NO_EL0;
        }
        if (r >> 3) & 1 != 0 {
            bits |= AP_TABLE_RDONLY;
        }
        if (r >> 4) & 1 != 0 && !covers_vectors {
            bits |= XN_TABLE;
        }
        if bits == 0 {
            continue;
        }
        // SAFETY: as for the contiguous hint: permission bits the builder
        // never writes, on a table descriptor it made, changing no address;
        // the tables are never unmapped, retired or pinned through.
        if let Ok(word) = unsafe { RAM_TABLES.entry(parent.loc.table, parent.loc.index) } {
            // Relaxed: as for the contiguous hint.
            word.fetch_or(bits, Ordering::Relaxed);
            stats.restricted_tables += 1;
        }
    }

    if round == 0
        && let Ok(WalkItem::Leaf(l)) = walker.translate(VirtAddr(known_va))
        && let Some(parent) = l.parent
        // SAFETY: as for the restrictions above: APTable[0] on a table
        // descriptor the builder made, changing no address; nothing unmaps,
        // retires or pins through these tables.
        && let Ok(word) = unsafe { RAM_TABLES.entry(parent.loc.table, parent.loc.index) }
    {
        // Relaxed: as for the contiguous hint.
        word.fetch_or(AP_TABLE_NO_EL0, Ordering::Relaxed);
        stats.restricted_tables += 1;
    }

    // Install as the EL1&0 regime.
    let root = tables.root().0;
    let ips = (el2::mmfr0() & 0xf).min(0b101);
    let tsz = u64::from(64 - VA);
    let tcr = if TTBR1 {
        let tg1 = match G {
            12 => 0b10,
            14 => 0b01,
            _ => 0b11,
        };
        // T1SZ, TG1; TTBR0 walks disabled (EPD0), T0SZ and TG0 valid.
        tsz << 16 | tg1 << 30 | 1 << 7 | 16 | ips << 32
    } else {
        let tg0 = match G {
            12 => 0b00,
            14 => 0b10,
            _ => 0b01,
        };
        // T0SZ, TG0; TTBR1 walks disabled (EPD1), TG1 = 4 KiB (valid).
        tsz | tg0 << 14 | 1 << 23 | 0b10 << 30 | 16 << 16 | ips << 32
    };
    let mair = MAIR_ATTRS
        .iter()
        .enumerate()
        .fold(0u64, |m, (i, &a)| m | u64::from(a) << (8 * i));
    el2::install(&el2::Regime {
        tcr,
        ttbr0: if TTBR1 { 0 } else { root },
        ttbr1: if TTBR1 { root } else { 0 },
        mair,
        vbar: vector_va,
    });

    // The sample.
    let check = |va: u64, stats: &mut ConfigStats| {
        stats.vas += 1;
        compare::<G, VA, TTBR1>(&walker, root, va, stats);
    };
    let edge = [
        base,
        base + page - 1,
        base.wrapping_add(size - 1),
        base.wrapping_add(size - page),
        vector_va,
        vector_va - 1,
        vector_va + page,
        known_va,
        // Just outside the range: not canonical for the format.
        if TTBR1 { base.wrapping_sub(1) } else { size },
        if TTBR1 { 0 } else { u64::MAX },
    ];
    for va in edge {
        check(va, stats);
    }
    for m in &mapped[..n_mapped] {
        let last = m.va + (m.len - 1);
        let inside = m.va + rng.below(m.len);
        for va in [
            m.va,
            last,
            inside,
            m.va.wrapping_sub(1),
            last.wrapping_add(1),
        ] {
            check(va, stats);
        }
        // Block edges: the last byte of each of the first leaves, the first
        // of the next.
        if m.leaf > page {
            let mut at = m.va + m.leaf;
            while at < m.va + m.len && at - m.va <= 4 * m.leaf {
                check(at - 1, stats);
                check(at, stats);
                at += m.leaf;
            }
        }
    }
    for _ in 0..RANDOM_VAS {
        let va = base + (rng.next() & (size - 1));
        check(va, stats);
    }
}

/// Bounded list of leaf levels (no allocation).
mod heapless_levels {
    use pagepin::table::Geometry;

    pub struct Levels {
        pub levels: [usize; 4],
        pub len: usize,
    }

    /// The levels of `geo` that hold leaves, blocks first, pages last.
    pub fn leaf_levels(geo: &Geometry) -> Levels {
        let mut out = Levels {
            levels: [0; 4],
            len: 0,
        };
        for level in 0..geo.depth() {
            if geo.holds_leaves(level) {
                out.levels[out.len] = level;
                out.len += 1;
            }
        }
        out
    }
}

/// pagepin's answer for one VA.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A leaf: the translation and the effective permissions.
    Leaf {
        pa: u64,
        perms: Perms,
        mem_type: MemType,
    },
    /// No translation (a hole, or an address outside the format's range).
    Absent,
    /// The walk failed.
    Error,
}

/// Compares pagepin's walk of `va` with the MMU's; counts checks and
/// mismatches.
fn compare<const G: u32, const VA: u32, const TTBR1: bool>(
    walker: &Walker<'_, Stage1<G, VA, TTBR1>, RamTables>,
    root: u64,
    va: u64,
    stats: &mut ConfigStats,
) {
    let answer = match walker.translate(VirtAddr(va)) {
        Ok(WalkItem::Leaf(l)) => Answer::Leaf {
            pa: l.leaf_pa.0 + (va - l.leaf_va.0),
            perms: l.perms,
            mem_type: l.mem_type,
        },
        Ok(WalkItem::Hole(_)) => Answer::Absent,
        Err(e) if e.kind == WalkErrorKind::NonCanonical => Answer::Absent,
        Err(_) => Answer::Error,
    };
    let pars = [
        el2::at(el2::At::E1R, va),
        el2::at(el2::At::E1W, va),
        el2::at(el2::At::E0R, va),
        el2::at(el2::At::E0W, va),
    ];
    let mut bad: [&str; 8] = [""; 8];
    let mut n_bad = 0;
    let mut flag = |ok: bool, what: &'static str, stats: &mut ConfigStats| {
        stats.checks += 1;
        if !ok {
            bad[n_bad.min(7)] = what;
            n_bad += 1;
        }
    };
    let mut exec_seen = None;
    match answer {
        Answer::Error => flag(false, "pagepin's walk failed", stats),
        Answer::Absent => {
            for par in pars {
                let ok = par_fault(par)
                    && matches!(fault_kind(par_fst(par)), "translation" | "address size");
                flag(
                    ok,
                    "absent: the MMU translates (or faults other than translation)",
                    stats,
                );
            }
        }
        Answer::Leaf {
            pa,
            perms,
            mem_type,
        } if !perms.contains(Perms::ACCESSED) => {
            let _ = (pa, mem_type);
            for par in pars {
                let ok = par_fault(par) && fault_kind(par_fst(par)) == "access flag";
                flag(
                    ok,
                    "AF clear: the MMU does not report an access flag fault",
                    stats,
                );
            }
        }
        Answer::Leaf {
            pa,
            perms,
            mem_type,
        } => {
            let [e1r, e1w, e0r, e0w] = pars;
            let pa_ok = !par_fault(e1r) && (e1r & 0x0000_ffff_ffff_f000) == (pa & !0xfff);
            flag(pa_ok, "present / PA", stats);
            let write = perms.contains(Perms::WRITE);
            let user = perms.contains(Perms::USER);
            let perm_fault = |par: u64| par_fault(par) && fault_kind(par_fst(par)) == "permission";
            flag(
                if write {
                    !par_fault(e1w)
                } else {
                    perm_fault(e1w)
                },
                "write (S1E1W)",
                stats,
            );
            flag(
                if user {
                    !par_fault(e0r)
                } else {
                    perm_fault(e0r)
                },
                "user (S1E0R)",
                stats,
            );
            flag(
                if user && write {
                    !par_fault(e0w)
                } else {
                    perm_fault(e0w)
                },
                "user write (S1E0W)",
                stats,
            );
            if !par_fault(e1r) {
                let attr = (e1r >> 56) as u8;
                let sh = ((e1r >> 7) & 3) as u8;
                let indx = (mem_type.0 & 7) as usize;
                let want_sh = mem_type.0 >> 3;
                let cacheable = matches!(MAIR_ATTRS[indx] >> 4, 0b1000..=0b1111 | 0b0001..=0b0011 | 0b0101..=0b0111);
                let sh_ok = sh == want_sh || (!cacheable && sh == 0b10);
                flag(
                    attr == MAIR_ATTRS[indx] && sh_ok,
                    "memory type (PAR_EL1.ATTR/SH)",
                    stats,
                );
            }
            // Execute: only where the output is RAM this kernel may write.
            if (ARENA..ARENA_END).contains(&pa) {
                let at = pa & !3;
                // SAFETY: `at` is in the exec arena, RAM that nothing else
                // uses (above the pool and the vectors, below RAM's end).
                unsafe { core::ptr::write_volatile(at as *mut u32, SVC0) };
                el2::sync_code();
                let spsr = if user { el2::SPSR_EL0T } else { el2::SPSR_EL1H };
                // SAFETY: VBAR_EL1 is the vectors' VA, mapped executable at
                // EL1 with no XNTable above it; the instruction at `va`, if
                // it can be fetched, is the `svc #0` just written there.
                let r = unsafe { el2::exec(va & !3, spsr) };
                let ec1 = r.esr_el1 >> 26;
                let ec2 = r.esr_el2 >> 26;
                let executed = ec2 == 0x16 && ec1 == 0x15;
                let refused = ec2 == 0x16
                    && (ec1 == 0x20 || ec1 == 0x21)
                    && fault_kind(r.esr_el1 & 0x3f) == "permission";
                exec_seen = Some((executed, r.esr_el1, r.esr_el2));
                stats.exec_checks += 1;
                let want = perms.contains(Perms::EXEC);
                flag(if want { executed } else { refused }, "execute", stats);
            }
        }
    }
    if n_bad == 0 {
        return;
    }
    stats.mismatches += n_bad as u64;
    if stats.mismatches > 24 {
        return;
    }
    println!(
        "MISMATCH {} VA {VA} {}: va {va:#x}: {:?}",
        Stage1::<G, VA, TTBR1>::NAME,
        if TTBR1 { "TTBR1" } else { "TTBR0" },
        &bad[..n_bad.min(8)]
    );
    println!("  pagepin: {answer:x?}");
    println!(
        "  MMU: PAR_EL1 S1E1R {:#x} S1E1W {:#x} S1E0R {:#x} S1E0W {:#x}; exec (ran, ESR_EL1, ESR_EL2) {:x?}",
        pars[0], pars[1], pars[2], pars[3], exec_seen
    );
    print_raw_walk::<G, VA, TTBR1>(root, va);
}

/// Prints the raw entries of the walk of `va` from `root`.
fn print_raw_walk<const G: u32, const VA: u32, const TTBR1: bool>(root: u64, va: u64) {
    let geo = Stage1::<G, VA, TTBR1>::GEOMETRY;
    let mut table = PhysAddr(root);
    for level in 0..geo.depth() {
        let index = geo.index(VirtAddr(va), level);
        // SAFETY: the word is only loaded.
        let Ok(word) = (unsafe { RAM_TABLES.entry(table, index) }) else {
            println!("  raw: level {level}: table {:#x} unreachable", table.0);
            return;
        };
        // Relaxed: this CPU wrote the tables.
        let raw = word.load(Ordering::Relaxed);
        let decoded = Stage1::<G, VA, TTBR1>::decode(raw, level);
        println!(
            "  raw: level {level} (Arm {}) table {:#x}[{index}] = {raw:#018x} -> {decoded:x?}",
            Stage1::<G, VA, TTBR1>::START_LEVEL + level,
            table.0
        );
        match decoded {
            Ok(Entry::Table(t)) => table = t.table,
            _ => return,
        }
    }
}

/// The granule this boot sweeps, from the semihosting command line.
fn granule_arg() -> &'static str {
    let mut buf = [0u8; 128];
    let n = el2::cmdline(&mut buf);
    let line = core::str::from_utf8(&buf[..n]).unwrap_or("");
    for word in line.split(' ').rev() {
        for g in ["4k", "16k", "64k"] {
            if word == g {
                return g;
            }
        }
    }
    "4k"
}

/// Whether ID_AA64MMFR0_EL1 says the granule is implemented.
fn granule_supported(granule: &str) -> bool {
    let mmfr0 = el2::mmfr0();
    match granule {
        "4k" => (mmfr0 >> 28) & 0xf != 0xf,
        "16k" => (mmfr0 >> 20) & 0xf != 0,
        _ => (mmfr0 >> 24) & 0xf != 0xf,
    }
}

/// CPU 0's entry from `_start` at EL2, MMU off.
#[unsafe(no_mangle)]
extern "C" fn sweep_main() -> ! {
    let granule = granule_arg();
    println!("pagepin-qemu: format sweep at EL2, granule {granule}");
    if !granule_supported(granule) {
        println!("pagepin-qemu FAILED: this CPU lacks the {granule} granule (use -cpu max)");
        el2::semihosting_exit(4);
    }
    // The EL1 vectors: every word `hvc #0`.
    for i in 0..(0x1_0000 / 4) {
        // SAFETY: the vector area is RAM above the pool that nothing else uses.
        unsafe { core::ptr::write_volatile((VECTOR_PA + 4 * i) as *mut u32, HVC0) };
    }
    el2::sync_code();
    let (t0, freq) = el2::counter();
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let mut totals = Totals::default();
    let levels = match granule {
        "4k" => {
            sweep::<12, 48, false>(&mut rng, &mut totals);
            sweep::<12, 48, true>(&mut rng, &mut totals);
            sweep::<12, 39, false>(&mut rng, &mut totals);
            sweep::<12, 39, true>(&mut rng, &mut totals);
            "3,4"
        }
        "16k" => {
            sweep::<14, 48, false>(&mut rng, &mut totals);
            sweep::<14, 48, true>(&mut rng, &mut totals);
            sweep::<14, 47, false>(&mut rng, &mut totals);
            sweep::<14, 47, true>(&mut rng, &mut totals);
            sweep::<14, 36, false>(&mut rng, &mut totals);
            sweep::<14, 36, true>(&mut rng, &mut totals);
            "2,3,4"
        }
        _ => {
            sweep::<16, 48, false>(&mut rng, &mut totals);
            sweep::<16, 48, true>(&mut rng, &mut totals);
            sweep::<16, 42, false>(&mut rng, &mut totals);
            sweep::<16, 42, true>(&mut rng, &mut totals);
            "2,3"
        }
    };
    let (t1, _) = el2::counter();
    println!("pagepin-qemu: sweep took {} ms", (t1 - t0) * 1000 / freq);
    if totals.mismatches != 0 || totals.violations != 0 {
        println!(
            "pagepin-qemu FAILED: {} mismatches, {} violations",
            totals.mismatches, totals.violations
        );
    }
    println!(
        "pagepin-qemu arch=aarch64 mode=sweep cpus=1 granule={granule} levels={levels} checks={} mismatches={} violations={}",
        totals.checks, totals.mismatches, totals.violations
    );
    if totals.mismatches == 0 && totals.violations == 0 {
        el2::system_off()
    } else {
        el2::semihosting_exit(1)
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("pagepin-qemu FAILED: panic: {info}");
    el2::semihosting_exit(2)
}
