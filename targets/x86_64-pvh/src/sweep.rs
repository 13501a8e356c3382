//! The sweep: pagepin's decoding of x86_64 tables against the MMU itself.
//!
//! x86 has no `AT` instruction that would translate an address without using
//! it, so the sweep uses it: each round CPU 0 builds a fresh set of 4- or
//! 5-level tables with pagepin's `TableBuilder` (the kernel's identity map of
//! 0..2 GiB and the xAPIC page, plus random mappings), changes some table
//! entries above the leaves, switches CR3 to them, and for every sampled
//! virtual address compares what pagepin's `Walker::translate` says with what
//! the MMU does:
//!
//! | pagepin says | probe | the MMU must |
//! |---|---|---|
//! | not canonical | read, write | #GP |
//! | hole (not present) | read, write, fetch | #PF, CR2 = VA, error code P=0 (W on the write, I/D on the fetch) |
//! | leaf at PA, perms | read, RFLAGS.AC=1 | read the token just written at PA through the identity map |
//! | | read, AC=0 | with CR4.SMAP: #PF (P=1) exactly when the effective U/S is user |
//! | | write, AC=1 | with CR0.WP=1: #PF (P=1, W=1) exactly when not writable; else the value lands at PA |
//! | | fetch of a `ret` | with EFER.NXE and CR4.SMEP: #PF (P=1, I/D=1) exactly when not executable or user |
//!
//! Every #PF must also have RSVD = 0 (pagepin decoded as valid what the MMU
//! reads as reserved, or the builder encoded it) and CR2 = the VA. Each such
//! comparison is one *check*; a disagreement is a *mismatch*, printed with
//! the VA, both answers and the raw entries of the path (the first 20).
//!
//! The U bit is checked through SMAP (data) and SMEP (fetch) at CPL 0, not by
//! running user code. The fetch runs only where the 8 bytes at the VA were
//! just read back as the token, whose first byte is `ret`; a hole's fetch
//! faults before anything runs.
//!
//! # What is mapped
//!
//! Each round maps up to [`REGIONS`] regions, each of 1 to 12 leaves of 4 KiB,
//! 1 to 4 of 2 MiB or 1 to 2 of 1 GiB, one `MapRequest` per leaf with its own
//! random permissions (write, user, execute, accessed, dirty, global), PAT
//! memory type and physical address in [`POOL_BASE`]`..`[`POOL_END`] (RAM no
//! kernel object uses; leaves may alias). A region is placed at random in
//! either canonical half, or ending at the top of the lower half, ending at
//! the top of the upper half (`0xffff_ffff_ffff_f000`), starting at the
//! bottom of the upper half, or straddling a 2 MiB, 1 GiB, 512 GiB or (with 5
//! levels) 256 TiB boundary, so that its leaves sit in two tables. Nothing is
//! mapped below 4 GiB (the kernel's) and no entry covering it is changed.
//! Then one leaf in three has a table entry above it (a PML4E, PDPTE or PDE;
//! with 5 levels also a PML5E) changed: R/W cleared, U/S cleared or XD set;
//! the walker reports such a leaf's *effective* permissions.
//!
//! Samples: each leaf's first and last word and one at random; the word
//! before and after each region; the last word of the lower half, the first
//! word past it (non-canonical with 4 levels), the first and last word of the
//! upper half and the word below it; `1 << 47` and the word below it (canonical
//! only with 5 levels); random canonical and random 64-bit addresses. Samples
//! below 4 GiB are dropped.

use core::sync::atomic::{AtomicU64, Ordering};

use pagepin::table::{
    DirectMap, FramePool, MapError, MapRequest, MemType, PagingFormat, Perms, PhysAddr, ReclaimNow,
    TableBuilder, VirtAddr, WalkErrorKind, WalkItem, Walker,
};

use crate::probe::{self, Outcome};
use crate::race::Rng;
use crate::{apic, cpu, println};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
const GIB1: u64 = 1 << 30;
/// Nothing of the sweep's own goes below this virtual address.
const LOW_LIMIT: u64 = 4 * GIB1;

/// The physical pages the random leaves map: RAM of `-m 2G` that no kernel
/// object uses (the image, its tables and stacks end below 1 GiB, checked at
/// boot; the race's data pages are not used in a sweep boot).
pub const POOL_BASE: u64 = GIB1;
/// The end of the pool.
pub const POOL_END: u64 = 2 * GIB1;

/// Regions per round.
const REGIONS: usize = 12;
/// Page-table frames per set; two sets, one live while the other is built.
const SET_FRAMES: usize = 192;
/// Samples per round, at most.
const MAX_SAMPLES: usize = 640;
/// Mismatches printed in full.
const PRINTED: u64 = 20;

/// Page-fault error code bits (compared exactly: RSVD, bit 3, is never
/// expected, so a reserved-bit fault is always a mismatch).
const PF_P: u64 = 1 << 0;
const PF_W: u64 = 1 << 1;
const PF_I: u64 = 1 << 4;
/// The vectors of #GP and #PF.
const GP: u64 = 13;
const PF: u64 = 14;

/// CR4.SMEP, CR4.SMAP.
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;

/// One 4 KiB page-table frame of the sweep.
#[repr(C, align(4096))]
struct Frame([AtomicU64; 512]);

/// The sweep's page-table frames, in `.bss` (VA == PA, as all of the image).
static FRAMES: [[Frame; SET_FRAMES]; 2] =
    [const { [const { Frame([const { AtomicU64::new(0) }; 512]) }; SET_FRAMES] }; 2];

/// The sweep's tables: pagepin's identity-map access ([`sweep_tables`]).
type SweepTables = DirectMap<'static>;

/// The sweep's tables, reached through the identity map (VA == PA): entry
/// `index` of the table at `table` is the word at `table + 8 * index`, for
/// words inside [`FRAMES`] only.
fn sweep_tables() -> SweepTables {
    let first = FRAMES.as_ptr().expose_provenance() as u64;
    let last = first + 2 * SET_FRAMES as u64 * 4096 - 1;
    // SAFETY: (1) every 8-aligned address of `first ..= last` is a word of the
    // `FRAMES` static, live for the whole run, its provenance exposed above,
    // and at VA == PA in every table this kernel loads in CR3 (the boot tables
    // and each round's tables map the image, and so `FRAMES`, at VA == PA);
    // (2) the frames are arrays of `AtomicU64` accessed only atomically (by
    // this code and the MMU, whose A/D updates are locked); (3) the static, in
    // the image below 1 GiB, does not wrap the address space.
    unsafe { DirectMap::identity(PhysAddr(first), PhysAddr(last)) }
}

/// What a sweep boot counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct SweepCounts {
    /// Rounds (table sets built and swept).
    pub rounds: u64,
    /// Leaves mapped, by size: 4 KiB, 2 MiB, 1 GiB.
    pub leaves: [u64; 3],
    /// Leaves refused because they overlapped a mapping (or left the
    /// canonical half): skipped, not an error.
    pub overlaps: u64,
    /// Table entries above leaves changed (R/W, U/S cleared or XD set).
    pub mutations: u64,
    /// Addresses sampled: mapped, holes, non-canonical.
    pub mapped: u64,
    /// Holes sampled.
    pub holes: u64,
    /// Non-canonical addresses sampled.
    pub non_canonical: u64,
    /// Samples whose effective permissions were user, read-only, not
    /// executable (each once per sample).
    pub user: u64,
    /// As `user`: read-only.
    pub read_only: u64,
    /// As `user`: not executable.
    pub no_exec: u64,
    /// Comparisons of one MMU access with pagepin's answer.
    pub checks: u64,
    /// Faults the probes took.
    pub faults: u64,
    /// Comparisons that disagreed.
    pub mismatches: u64,
    /// Failures that are not a comparison: a map or walk error, a missing CPU
    /// feature.
    pub violations: u64,
}

/// What pagepin says about one address.
#[derive(Debug, Clone, Copy)]
enum Answer {
    NonCanonical,
    Hole {
        level: usize,
    },
    Leaf {
        pa: u64,
        perms: Perms,
        level: usize,
        raw: u64,
    },
}

impl core::fmt::Display for Answer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Answer::NonCanonical => f.write_str("not canonical"),
            Answer::Hole { level } => write!(f, "hole (absent entry at level {level})"),
            Answer::Leaf {
                pa,
                perms,
                level,
                raw,
            } => {
                write!(
                    f,
                    "leaf at level {level}, PA {pa:#x}, {perms:?}, entry {raw:#018x}"
                )
            }
        }
    }
}

/// The raw entries on the path of `va` from `root` (my own walk, not
/// pagepin's: present bit, PS at the PDPT and PD, the address in bits 12..52),
/// with the location of each, for reports and for changing table entries.
fn raw_path(root: u64, va: u64, levels: usize) -> heapless::Vec<(PhysAddr, usize, u64), 5> {
    let mut path = heapless::Vec::new();
    let mut table = root;
    for level in 0..levels {
        let shift = 12 + 9 * (levels - 1 - level) as u32;
        let index = ((va >> shift) & 511) as usize;
        // SAFETY: the word is only loaded.
        let Ok(word) = (unsafe { sweep_tables().word(PhysAddr(table), index) }) else {
            break;
        };
        // Relaxed: CPU 0 built these tables; only it and its MMU touch them.
        let raw = word.load(Ordering::Relaxed);
        let _ = path.push((PhysAddr(table), index, raw));
        let last = level == levels - 1;
        let huge = levels - level <= 3 && levels - level >= 2 && raw & (1 << 7) != 0;
        if raw & 1 == 0 || last || huge {
            break;
        }
        table = raw & 0x000f_ffff_ffff_f000;
    }
    path
}

/// `x` (bits 0..bits) sign-extended from bit `bits - 1`.
fn canonical(x: u64, bits: u32) -> u64 {
    let shift = 64 - bits;
    (((x << shift) as i64) >> shift) as u64
}

/// The sweep state of one boot.
struct Sweep {
    levels: usize,
    va_bits: u32,
    rng: Rng,
    counts: SweepCounts,
}

/// A deliberately wrong decoding, for the `broken-table-grants` build: `F`
/// with the grants of table entries ignored (R/W, U/S and XD above a leaf
/// restrict nothing), the kind of decoding bug the sweep exists to catch.
#[derive(Debug, Clone, Copy)]
pub struct IgnoreTableGrants<F>(core::marker::PhantomData<F>);

// SAFETY: every item is `F`'s, except that `decode` widens a table entry's
// grants; the contract's points are about presence, addresses, levels and
// the encoders, which are `F`'s unchanged. (The wider grants are the bug this
// build shows the sweep catching; it never runs GUP.)
unsafe impl<F: PagingFormat> PagingFormat for IgnoreTableGrants<F> {
    const NAME: &'static str = F::NAME;
    const GEOMETRY: pagepin::table::Geometry = F::GEOMETRY;

    fn is_canonical(va: VirtAddr) -> bool {
        F::is_canonical(va)
    }

    fn decode(
        raw: u64,
        level: usize,
    ) -> Result<pagepin::table::Entry, pagepin::table::DecodeError> {
        match F::decode(raw, level)? {
            pagepin::table::Entry::Table(table) => {
                Ok(pagepin::table::Entry::Table(pagepin::table::TableEntry {
                    grants: Perms::GRANTS,
                    ..table
                }))
            }
            other => Ok(other),
        }
    }

    fn encode_table(table: PhysAddr, level: usize) -> Result<u64, pagepin::table::EncodeError> {
        F::encode_table(table, level)
    }

    fn encode_leaf(
        leaf: &pagepin::table::LeafEntry,
        level: usize,
    ) -> Result<u64, pagepin::table::EncodeError> {
        F::encode_leaf(leaf, level)
    }
}

/// Runs `rounds` rounds on CPU 0 with the paging format `F` (`levels`
/// levels, as CR4.LA57 says).
pub fn run<F: PagingFormat>(rounds: u64, seed: u64, levels: usize) -> SweepCounts {
    if cfg!(feature = "broken-table-grants") {
        println!("sweep: BROKEN build: the walker ignores the grants of table entries");
        sweep_with::<IgnoreTableGrants<F>>(rounds, seed, levels)
    } else {
        sweep_with::<F>(rounds, seed, levels)
    }
}

fn sweep_with<F: PagingFormat>(rounds: u64, seed: u64, levels: usize) -> SweepCounts {
    let mut sweep = Sweep {
        levels,
        va_bits: F::GEOMETRY.va_bits(),
        rng: Rng(seed ^ 0x2545_f491_4f6c_dd1d | 1),
        counts: SweepCounts::default(),
    };
    let [_, ebx, _, _] = cpu::cpuid(7, 0);
    let phys_bits = cpu::cpuid(0x8000_0008, 0)[0] & 0xff;
    let (smep, smap) = (ebx & (1 << 7) != 0, ebx & (1 << 20) != 0);
    println!(
        "sweep: {levels}-level paging ({} VA bits), MAXPHYADDR {phys_bits}, SMEP {smep}, SMAP {smap}, CR0.WP 1, EFER.NXE 1, CR4.PGE 0",
        sweep.va_bits
    );
    if !(smep && smap) {
        println!(
            "sweep: the CPU lacks SMEP or SMAP: the U/S bit cannot be checked (run with -cpu ...,+smep,+smap)"
        );
        sweep.counts.violations += 1;
        return sweep.counts;
    }
    // SAFETY: CPUID reports both features; PAE and LA57 are kept as they are.
    // From here on a supervisor access to a user page faults unless RFLAGS.AC
    // is set, a supervisor fetch from one always: the kernel's own pages (the
    // identity map, the xAPIC page) are supervisor pages.
    unsafe { cpu::write_cr4(cpu::cr4() | CR4_SMEP | CR4_SMAP) };
    for _ in 0..rounds {
        sweep.round::<F>();
    }
    sweep.counts
}

impl Sweep {
    fn next(&mut self) -> u64 {
        self.rng.next()
    }

    fn random_perms(&mut self) -> (Perms, MemType) {
        let r = self.next();
        let mut perms = Perms::READ;
        for (bit, perm) in [
            (0, Perms::WRITE),
            (1, Perms::USER),
            (2, Perms::EXEC),
            (3, Perms::ACCESSED),
            (4, Perms::DIRTY),
            (5, Perms::GLOBAL),
        ] {
            perms.set(perm, r >> bit & 1 != 0);
        }
        (perms, MemType(((r >> 8) % 8) as u8))
    }

    fn mismatch(&mut self, root: u64, va: u64, answer: &Answer, what: &str, seen: Outcome) {
        self.counts.mismatches += 1;
        if self.counts.mismatches > PRINTED {
            return;
        }
        println!("MISMATCH at {va:#x}: {what}; pagepin: {answer}; MMU: {seen:x?}");
        for (level, (table, index, raw)) in raw_path(root, va, self.levels).iter().enumerate() {
            println!("    level {level}: table {table} [{index}] = {raw:#018x}");
        }
    }

    /// One comparison: `seen` must be a fault iff `fault` is `Some((vector,
    /// error))`, with that vector, that error code and (for a #PF) CR2 = `va`.
    fn expect(
        &mut self,
        root: u64,
        va: u64,
        answer: &Answer,
        what: &str,
        fault: Option<(u64, u64)>,
        seen: Outcome,
    ) -> bool {
        self.counts.checks += 1;
        let ok = match (fault, seen) {
            (None, Outcome::Done(_)) => true,
            (
                Some((vector, error)),
                Outcome::Fault {
                    vector: v,
                    error: e,
                    cr2,
                },
            ) => {
                self.counts.faults += 1;
                v == vector && e == error && (vector != PF || cr2 == va)
            }
            (None, Outcome::Fault { .. }) => {
                self.counts.faults += 1;
                false
            }
            _ => false,
        };
        if !ok {
            self.mismatch(root, va, answer, what, seen);
        }
        ok
    }

    fn round<F: PagingFormat>(&mut self) {
        // The set CR3 does not hold: set 0 while the kernel's tables are
        // loaded (round 0), then the set of the round before the last one
        // that loaded its tables (the two alternate).
        let set0 = &raw const FRAMES[0] as u64;
        let cr3 = cpu::cr3() & !0xfff;
        let set = usize::from((set0..set0 + SET_FRAMES as u64 * 4096).contains(&cr3));
        let mut slots = [PhysAddr(0); SET_FRAMES];
        for (i, slot) in slots.iter_mut().enumerate() {
            *slot = PhysAddr(&raw const FRAMES[set][i] as u64);
        }
        let access = sweep_tables();
        // SAFETY: the frames are set `set` of the sweep's `FRAMES` static, each
        // listed once, used by nothing but this round's builder: an earlier
        // builder over them was dropped at the end of its round, and CR3 holds
        // other tables (`set` is the set it does not hold), loaded by a
        // `write_cr3` that also dropped every paging-structure cache entry
        // (PCIDs off); the APs wait on the kernel's tables.
        let pool = unsafe { FramePool::new(&mut slots) };
        let mut tables = match TableBuilder::<F, _, _>::new(
            &access,
            pool,
            // SAFETY: the sweep only maps: this builder never detaches a table, so
            // no table is ever handed back while the MMU or a walk may read it.
            unsafe { ReclaimNow::new() },
        ) {
            Ok(tables) => tables,
            Err(e) => {
                println!("sweep: table builder: {e}");
                self.counts.violations += 1;
                return;
            }
        };
        // The kernel's identity map (supervisor pages, so SMAP and SMEP leave
        // the kernel alone) and the xAPIC page, uncached.
        let kernel = Perms::READ | Perms::WRITE | Perms::EXEC | Perms::ACCESSED | Perms::DIRTY;
        let identity = [
            MapRequest::new(VirtAddr(0), PhysAddr(0), POOL_END, MIB2).with_perms(kernel),
            MapRequest::new(
                VirtAddr(apic::APIC_BASE),
                PhysAddr(apic::APIC_BASE),
                KIB4,
                KIB4,
            )
            .with_perms(Perms::READ | Perms::WRITE | Perms::ACCESSED | Perms::DIRTY)
            .with_mem_type(MemType(3)),
        ];
        for req in &identity {
            // SAFETY: the kernel's identity (direct) map of its own RAM and
            // its xAPIC page, none of it allocated, freed or handed on in a
            // sweep boot (the race's data pages are not used); nothing pins
            // through these tables (a sweep boot runs no GUP-fast).
            if let Err(e) = unsafe { tables.map(req) } {
                println!("sweep: identity map: {e}");
                self.counts.violations += 1;
                return;
            }
        }
        let root = tables.root().0;

        // Random regions, one request per leaf.
        let mut leaves = heapless::Vec::<(u64, u64), 160>::new();
        let mut ends = heapless::Vec::<(u64, u64), REGIONS>::new();
        'regions: for _ in 0..REGIONS {
            let r = self.next();
            let (size, max_count) = match r % 20 {
                0..10 => (KIB4, 12),
                10..17 => (MIB2, 4),
                _ => (GIB1, 2),
            };
            let mut count = 1 + (r >> 8) % max_count;
            let len_of = |count: u64| count * size;
            let half = 1u64 << (self.va_bits - 1);
            let window = (1u64 << self.va_bits) - 1;
            let random = self.next();
            let va = match (r >> 16) % 8 {
                0 | 1 => canonical(random & window & !(size - 1), self.va_bits),
                2 => half - len_of(count),
                3 => 0u64.wrapping_sub(len_of(count)),
                4 => canonical(half, self.va_bits),
                _ => {
                    let mut shifts = heapless::Vec::<u32, 4>::new();
                    for shift in [21, 30, 39, 48] {
                        if 1u64 << shift > size && shift < self.va_bits - 1 {
                            let _ = shifts.push(shift);
                        }
                    }
                    let shift = shifts[((r >> 24) % shifts.len() as u64) as usize];
                    count = count.max(2);
                    let boundary = canonical(random & window & !((1 << shift) - 1), self.va_bits);
                    boundary.wrapping_sub(size * (count / 2))
                }
            };
            if va < LOW_LIMIT {
                continue;
            }
            let mut mapped_any = false;
            for i in 0..count {
                let leaf_va = va.wrapping_add(i * size);
                let pa = POOL_BASE + (self.next() % ((POOL_END - POOL_BASE) / size)) * size;
                let (perms, mem_type) = self.random_perms();
                let req = MapRequest::new(VirtAddr(leaf_va), PhysAddr(pa), size, size)
                    .with_perms(perms)
                    .with_mem_type(mem_type);
                // SAFETY: `pa` is in the sweep's pool, RAM that is the sweep's
                // own for the whole boot and never freed (it writes its tokens
                // there); nothing pins through these tables (no GUP-fast in a
                // sweep boot), and the builder, dropped with the round, never
                // unmaps.
                match unsafe { tables.map(&req) } {
                    Ok(()) => {
                        mapped_any = true;
                        let _ = leaves.push((leaf_va, size));
                        self.counts.leaves[match size {
                            KIB4 => 0,
                            MIB2 => 1,
                            _ => 2,
                        }] += 1;
                    }
                    Err(MapError::Overlap { .. } | MapError::Range(_)) => self.counts.overlaps += 1,
                    Err(MapError::PoolExhausted { .. }) => break 'regions,
                    Err(e) => {
                        println!("sweep: map {leaf_va:#x} ({size:#x} at {pa:#x}): {e}");
                        self.counts.violations += 1;
                    }
                }
            }
            if mapped_any {
                let _ = ends.push((va, va.wrapping_add(len_of(count))));
            }
        }

        // Change a table entry above one leaf in three (never one covering
        // the kernel's low 4 GiB).
        for &(va, _) in &leaves {
            let r = self.next();
            if !r.is_multiple_of(3) {
                continue;
            }
            let path = raw_path(root, va, self.levels);
            // Table levels above the leaf: all but the leaf's own.
            let leaf_level = path.len() - 1;
            if leaf_level == 0 {
                continue;
            }
            let level = ((r >> 8) % leaf_level as u64) as usize;
            let span_shift = 12 + 9 * (self.levels - 1 - level) as u32;
            let span_start = va & !((1u64 << span_shift) - 1);
            if span_start < LOW_LIMIT && va < (1u64 << 63) {
                continue;
            }
            let (table, index, raw) = path[level];
            let new = match (r >> 16) % 3 {
                0 => raw & !(1 << 1),
                1 => raw & !(1 << 2),
                _ => raw | (1 << 63),
            };
            // SAFETY: not a store the builder makes: the sweep takes grants
            // away in its own test tables for the MMU to decode (R/W or U/S
            // cleared, XD set, on a table entry the builder made). What the
            // promise guards cannot happen: the address in the entry is kept,
            // this builder never unmaps or retires a table (`ReclaimNow`,
            // dropped with the round) and nothing pins through these tables.
            if let Ok(word) = unsafe { sweep_tables().word(table, index) } {
                // Relaxed: the tables are not loaded in CR3 yet; the CR3
                // write below is serializing.
                word.store(new, Ordering::Relaxed);
                self.counts.mutations += 1;
            }
        }

        // Samples.
        let mut samples = heapless::Vec::<u64, MAX_SAMPLES>::new();
        let half = 1u64 << (self.va_bits - 1);
        for va in [
            half - 8,
            half,
            canonical(half, self.va_bits),
            canonical(half, self.va_bits).wrapping_sub(8),
            u64::MAX - 7,
            1 << 47,
            (1 << 47) - 8,
        ] {
            let _ = samples.push(va);
        }
        for _ in 0..6 {
            let r = self.next();
            let _ = samples.push(canonical(r & ((1 << self.va_bits) - 1), self.va_bits) & !7);
            let _ = samples.push(self.next() & !7);
        }
        for &(start, end) in &ends {
            let _ = samples.push(start.wrapping_sub(8));
            let _ = samples.push(end);
        }
        for &(va, size) in &leaves {
            let inside = (self.next() % (size / 8)) * 8;
            for s in [va, va + size - 8, va + inside] {
                let _ = samples.push(s);
            }
        }

        // SAFETY: the new tables map 0..2 GiB at VA == PA with 2 MiB leaves
        // (the image, stacks, every table frame, the start info) and the xAPIC
        // page as the kernel's tables do; the paging mode matches CR4.LA57
        // (`F` was chosen from it). Nothing else below 4 GiB is mapped.
        unsafe { cpu::write_cr3(root) };
        let walker = tables.walker();
        for &va in &samples {
            if va < LOW_LIMIT {
                continue;
            }
            self.sample(&walker, root, va);
        }
        self.counts.rounds += 1;
    }

    fn sample<F: PagingFormat>(&mut self, walker: &Walker<'_, F, SweepTables>, root: u64, va: u64) {
        let answer = match walker.translate(VirtAddr(va)) {
            Ok(WalkItem::Leaf(leaf)) => Answer::Leaf {
                pa: leaf.pa.0,
                perms: leaf.perms,
                level: leaf.level,
                raw: leaf.entry.raw,
            },
            Ok(WalkItem::Hole(hole)) => Answer::Hole { level: hole.level },
            Err(e) if e.kind == WalkErrorKind::NonCanonical => Answer::NonCanonical,
            Err(e) => {
                println!("sweep: translate {va:#x}: {e}");
                self.counts.violations += 1;
                return;
            }
        };
        match answer {
            Answer::NonCanonical => {
                self.counts.non_canonical += 1;
                cpu::stac();
                // SAFETY: a non-canonical address translates nowhere: if the MMU
                // disagreed it would reach a leaf of these tables, which map
                // only pool pages (or the kernel's low 4 GiB, which no
                // non-canonical address aliases).
                let read = unsafe { probe::read(va) };
                cpu::clac();
                self.expect(
                    root,
                    va,
                    &answer,
                    "read of a non-canonical address",
                    Some((GP, 0)),
                    read,
                );
                cpu::stac();
                // SAFETY: as above.
                let write = unsafe { probe::write(va, 0x5a5a) };
                cpu::clac();
                self.expect(
                    root,
                    va,
                    &answer,
                    "write to a non-canonical address",
                    Some((GP, 0)),
                    write,
                );
            }
            Answer::Hole { .. } => {
                self.counts.holes += 1;
                cpu::stac();
                // SAFETY: pagepin says nothing is mapped; if the MMU disagreed,
                // the address (>= 4 GiB) reaches a leaf of these tables, which
                // map only pool pages.
                let read = unsafe { probe::read(va) };
                // SAFETY: as above.
                let write = unsafe { probe::write(va, 0x5a5a_5a5a) };
                cpu::clac();
                self.expect(root, va, &answer, "read of a hole", Some((PF, 0)), read);
                self.expect(
                    root,
                    va,
                    &answer,
                    "write to a hole",
                    Some((PF, PF_W)),
                    write,
                );
                if !read.faulted() {
                    // Mapped after all: do not fetch from what is there.
                    return;
                }
                // SAFETY: the read faulted as not present (checked just
                // above); the fetch faults the same way before anything runs.
                let fetch = unsafe { probe::exec(va) };
                self.expect(
                    root,
                    va,
                    &answer,
                    "fetch from a hole",
                    Some((PF, PF_I)),
                    fetch,
                );
            }
            Answer::Leaf { pa, perms, .. } => self.leaf(root, va, &answer, pa, perms),
        }
    }

    fn leaf(&mut self, root: u64, va: u64, answer: &Answer, pa: u64, perms: Perms) {
        self.counts.mapped += 1;
        if !(POOL_BASE..POOL_END).contains(&pa) || !pa.is_multiple_of(8) {
            // Every leaf was built over the pool: pagepin decoded another PA.
            self.mismatch(
                root,
                va,
                answer,
                "walked PA outside the pool",
                Outcome::Done(0),
            );
            return;
        }
        // SAFETY: `pa` is 8-aligned inside the pool, RAM identity-mapped
        // (VA == PA) in every table this kernel loads, used by nothing but
        // the sweep, and accessed only atomically here and through probes.
        let word = unsafe { &*(pa as *const AtomicU64) };
        let user = perms.contains(Perms::USER);
        let writable = perms.contains(Perms::WRITE);
        let exec = perms.contains(Perms::EXEC);
        self.counts.user += u64::from(user);
        self.counts.read_only += u64::from(!writable);
        self.counts.no_exec += u64::from(!exec);
        // The token: random, first byte `ret`.
        let token = (self.next() << 8) | 0xc3;
        // Relaxed: CPU 0 alone; the probes below are on the same CPU.
        word.store(token, Ordering::Relaxed);

        // SMAP: a supervisor read of a user page faults with AC = 0.
        cpu::clac();
        // SAFETY: pagepin says `va` maps pool RAM (checked in range above);
        // if the MMU disagrees it still reaches only pool pages or nothing.
        let read = unsafe { probe::read(va) };
        let fault = user.then_some((PF, PF_P));
        if self.expect(root, va, answer, "read with AC=0 (SMAP)", fault, read) && !user {
            self.value(
                root,
                va,
                answer,
                "read with AC=0 returned another value",
                read,
                token,
            );
        }
        cpu::stac();
        // SAFETY: as above.
        let read = unsafe { probe::read(va) };
        cpu::clac();
        let read_ok = self.expect(root, va, answer, "read with AC=1", None, read)
            && self.value(
                root,
                va,
                answer,
                "read returned another value than the walked PA holds",
                read,
                token,
            );

        let value = (self.next() << 8) | 0xc3;
        cpu::stac();
        // SAFETY: as above; a write that lands lands in pool RAM.
        let write = unsafe { probe::write(va, value) };
        cpu::clac();
        let fault = (!writable).then_some((PF, PF_P | PF_W));
        if self.expect(root, va, answer, "write with AC=1 (CR0.WP=1)", fault, write) {
            // Relaxed: as above.
            let now = word.load(Ordering::Relaxed);
            let want = if writable { value } else { token };
            self.value(
                root,
                va,
                answer,
                "after the write the walked PA holds another value",
                Outcome::Done(now),
                want,
            );
        }
        if !read_ok {
            return;
        }
        // Fetch only if the bytes at `va` are a `ret` right now.
        cpu::stac();
        // SAFETY: as above.
        let again = unsafe { probe::read(va) };
        cpu::clac();
        // Relaxed: as above.
        let here = word.load(Ordering::Relaxed);
        if again != Outcome::Done(here) || here & 0xff != 0xc3 {
            return;
        }
        // SAFETY: the byte at `va` was just read through `va` as 0xc3 (`ret`),
        // on this CPU with interrupts off, and nothing wrote there since.
        let fetch = unsafe { probe::exec(va) };
        let fault = (!exec || user).then_some((PF, PF_P | PF_I));
        self.expect(root, va, answer, "fetch of a ret (NX, SMEP)", fault, fetch);
    }

    /// One comparison of a value read through `va` with `want` (read at the
    /// walked PA).
    fn value(
        &mut self,
        root: u64,
        va: u64,
        answer: &Answer,
        what: &str,
        seen: Outcome,
        want: u64,
    ) -> bool {
        self.counts.checks += 1;
        if seen == Outcome::Done(want) {
            return true;
        }
        self.mismatch(root, va, answer, what, seen);
        false
    }
}
