//! Run: cargo test --test review_riscv
//!
//! Black-box review of the RISC-V paging formats (Sv39/48/57 and the G-stage
//! Sv39x4/48x4/57x4) against the RISC-V privileged specification: a spec
//! reference decoder and walker are the oracles.

use std::sync::atomic::Ordering;

use pagepin::arch::riscv64::{
    GStage, PBMT_IO, PBMT_NC, PBMT_PMA, Sv, Sv39, Sv39x4, Sv48, Sv48x4, Sv57, Sv57x4,
};
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{Pfn, SliceMemMap};
use pagepin::meta::{Hold, PageMeta};
use pagepin::table::{
    DecodeError, EncodeError, Entry, FramePool, HostFrame, HostMemory, LeafEntry, MapError,
    MapRequest, MemType, PagingFormat, Perms, PhysAddr, ReclaimNow, TableAccess, TableBuilder,
    TableEntry, VirtAddr, WalkErrorKind, WalkItem, Walker,
};

// ---------------------------------------------------------------- PTE bits

const V: u64 = 1 << 0;
const R: u64 = 1 << 1;
const W: u64 = 1 << 2;
const X: u64 = 1 << 3;
const U: u64 = 1 << 4;
const G: u64 = 1 << 5;
const A: u64 = 1 << 6;
const D: u64 = 1 << 7;
const PPN_MASK: u64 = ((1 << 44) - 1) << 10;
const RESERVED: u64 = 0x7f << 54;
const PBMT: u64 = 0b11 << 61;
const N: u64 = 1 << 63;

fn pa_field(pa: u64) -> u64 {
    (pa >> 12) << 10
}

// ---------------------------------------------------------------- PRNG

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

// ---------------------------------------------------------------- spec model

/// A mode as the specification describes it.
#[derive(Debug, Clone, Copy)]
struct Mode {
    levels: usize,
    gstage: bool,
    svpbmt: bool,
}

impl Mode {
    fn va_bits(self) -> u32 {
        12 + 9 * self.levels as u32 + if self.gstage { 2 } else { 0 }
    }
    /// log2 of the span of one entry at pagepin level `level` (0 = root).
    fn shift(self, level: usize) -> u32 {
        12 + 9 * (self.levels - 1 - level) as u32
    }
    fn index_bits(self, level: usize) -> u32 {
        if self.gstage && level == 0 { 11 } else { 9 }
    }
    fn canonical(self, va: u64) -> bool {
        let bits = self.va_bits();
        if self.gstage {
            va >> bits == 0
        } else {
            let s = 64 - bits;
            (((va << s) as i64) >> s) as u64 == va
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpecEntry {
    Absent,
    Fault,
    Table(u64),
    Leaf { pa: u64, perms: Perms, pbmt: u8 },
}

/// §4.3.2 steps 2-6 for one PTE, with Svpbmt (when enabled), without Svnapot.
fn spec_decode(m: Mode, raw: u64, level: usize) -> SpecEntry {
    if level >= m.levels {
        return SpecEntry::Fault;
    }
    if raw & V == 0 {
        return SpecEntry::Absent;
    }
    let reserved = RESERVED | N | if m.svpbmt { 0 } else { PBMT };
    if raw & reserved != 0 {
        return SpecEntry::Fault;
    }
    let (r, w, x) = (raw & R != 0, raw & W != 0, raw & X != 0);
    if w && !r {
        return SpecEntry::Fault;
    }
    let pa = ((raw & PPN_MASK) >> 10) << 12;
    if !r && !x {
        // pointer
        if level == m.levels - 1 || raw & (D | A | U) != 0 || raw & PBMT != 0 {
            return SpecEntry::Fault;
        }
        return SpecEntry::Table(pa);
    }
    let align = (1u64 << m.shift(level)) - 1;
    if pa & align != 0 {
        return SpecEntry::Fault;
    }
    let pbmt = ((raw & PBMT) >> 61) as u8;
    if pbmt == 3 {
        return SpecEntry::Fault;
    }
    let mut perms = Perms::empty();
    let usable = !m.gstage || raw & U != 0;
    perms.set(Perms::READ, usable && r);
    perms.set(Perms::WRITE, usable && w);
    perms.set(Perms::EXEC, usable && x);
    perms.set(Perms::USER, !m.gstage && raw & U != 0);
    perms.set(Perms::GLOBAL, !m.gstage && raw & G != 0);
    perms.set(Perms::ACCESSED, raw & A != 0);
    perms.set(Perms::DIRTY, raw & D != 0);
    SpecEntry::Leaf { pa, perms, pbmt }
}

fn entry_matches(spec: SpecEntry, got: Result<Entry, DecodeError>) -> bool {
    match (spec, got) {
        (SpecEntry::Fault, Err(_)) => true,
        (SpecEntry::Absent, Ok(Entry::Absent)) => true,
        (SpecEntry::Table(pa), Ok(Entry::Table(t))) => {
            t == TableEntry {
                table: PhysAddr(pa),
                grants: Perms::GRANTS,
            }
        }
        (SpecEntry::Leaf { pa, perms, pbmt }, Ok(Entry::Leaf(l))) => {
            l == LeafEntry {
                pa: PhysAddr(pa),
                perms,
                mem_type: MemType(pbmt),
            }
        }
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpecWalk {
    NonCanonical,
    Hole,
    Fault,
    Access,
    Leaf { pa: u64, perms: Perms, size: u64 },
}

fn spec_translate(m: Mode, mem: &HostMemory<'_>, root: u64, va: u64) -> SpecWalk {
    if !m.canonical(va) {
        return SpecWalk::NonCanonical;
    }
    let mut table = root;
    for level in 0..m.levels {
        let shift = m.shift(level);
        let idx = ((va >> shift) & ((1 << m.index_bits(level)) - 1)) as usize;
        // SAFETY: the word is only loaded.
        let Ok(word) = (unsafe { mem.entry(PhysAddr(table), idx) }) else {
            return SpecWalk::Access;
        };
        let raw = word.load(Ordering::Relaxed);
        match spec_decode(m, raw, level) {
            SpecEntry::Absent => return SpecWalk::Hole,
            SpecEntry::Fault => return SpecWalk::Fault,
            SpecEntry::Table(pa) => table = pa,
            SpecEntry::Leaf { pa, perms, .. } => {
                return SpecWalk::Leaf {
                    pa: pa + (va & ((1 << shift) - 1)),
                    perms,
                    size: 1 << shift,
                };
            }
        }
    }
    unreachable!("the last level never yields a table");
}

const SV39: Mode = Mode {
    levels: 3,
    gstage: false,
    svpbmt: false,
};
const SV48: Mode = Mode {
    levels: 4,
    gstage: false,
    svpbmt: false,
};
const SV57: Mode = Mode {
    levels: 5,
    gstage: false,
    svpbmt: false,
};
const SV39X4: Mode = Mode {
    levels: 3,
    gstage: true,
    svpbmt: false,
};
const SV48X4: Mode = Mode {
    levels: 4,
    gstage: true,
    svpbmt: false,
};
const SV57X4: Mode = Mode {
    levels: 5,
    gstage: true,
    svpbmt: false,
};

fn pbmt(m: Mode) -> Mode {
    Mode { svpbmt: true, ..m }
}

/// Runs `$body` once per format, with `F` the format and `$m` its spec mode.
macro_rules! for_each_format {
    ($f:ident, $m:ident, $body:block) => {{
        {
            type $f = Sv39;
            let $m = SV39;
            $body
        }
        {
            type $f = Sv48;
            let $m = SV48;
            $body
        }
        {
            type $f = Sv57;
            let $m = SV57;
            $body
        }
        {
            type $f = Sv<3, true>;
            let $m = pbmt(SV39);
            $body
        }
        {
            type $f = Sv<4, true>;
            let $m = pbmt(SV48);
            $body
        }
        {
            type $f = Sv<5, true>;
            let $m = pbmt(SV57);
            $body
        }
        {
            type $f = Sv39x4;
            let $m = SV39X4;
            $body
        }
        {
            type $f = Sv48x4;
            let $m = SV48X4;
            $body
        }
        {
            type $f = Sv57x4;
            let $m = SV57X4;
            $body
        }
        {
            type $f = GStage<3, true>;
            let $m = pbmt(SV39X4);
            $body
        }
        {
            type $f = GStage<4, true>;
            let $m = pbmt(SV48X4);
            $body
        }
        {
            type $f = GStage<5, true>;
            let $m = pbmt(SV57X4);
            $body
        }
    }};
}

// ---------------------------------------------------------------- geometry

#[test]
fn geometry_matches_the_spec() {
    for_each_format!(F, m, {
        let g = F::GEOMETRY;
        assert_eq!(g.depth(), m.levels, "{}", F::NAME);
        assert_eq!(g.page_shift(), 12);
        assert_eq!(g.va_bits(), m.va_bits(), "{}", F::NAME);
        for level in 0..m.levels {
            assert_eq!(g.entries(level), Some(1 << m.index_bits(level)));
            assert_eq!(g.entry_shift(level), Some(m.shift(level)));
            assert_eq!(g.leaf_size(level), Some(1 << m.shift(level)), "{}", F::NAME);
            assert_eq!(g.holds_tables(level), level + 1 < m.levels);
        }
        assert_eq!(g.entries(m.levels), None);
        assert_eq!(g.leaf_size(m.levels), None);
    });
    assert_eq!(Sv57::GEOMETRY.leaf_size(0), Some(256 << 40));
    assert_eq!(Sv48x4::GEOMETRY.leaf_size(0), Some(512 << 30));
    assert_eq!(Sv39x4::GEOMETRY.entries(0), Some(2048));
}

// ---------------------------------------------------------------- decode

#[test]
fn zero_and_invalid_entries_are_absent_and_past_levels_are_typed() {
    let mut rng = Rng(1);
    for_each_format!(F, m, {
        for level in 0..m.levels {
            assert_eq!(F::decode(0, level), Ok(Entry::Absent));
            for _ in 0..200 {
                // V = 0: invalid whatever else it holds (§4.3.2 step 3).
                let raw = rng.next() & !V;
                assert_eq!(F::decode(raw, level), Ok(Entry::Absent), "{raw:#x}");
            }
        }
        for level in [m.levels, m.levels + 1, usize::MAX] {
            for raw in [0, V, V | R, u64::MAX] {
                assert_eq!(
                    F::decode(raw, level),
                    Err(DecodeError::NoSuchLevel { level })
                );
            }
        }
    });
}

/// Every single bit, alone with V and on top of a readable leaf, at every
/// level, compared with the spec model, plus the variants the docs name.
#[test]
fn every_single_bit_at_every_level() {
    for_each_format!(F, m, {
        for level in 0..m.levels {
            let last = level + 1 == m.levels;
            for bit in 0..64 {
                let b = 1u64 << bit;
                for base in [V, V | R, V | X, V | R | W | X | A | D] {
                    let raw = base | b;
                    let got = F::decode(raw, level);
                    let spec = spec_decode(m, raw, level);
                    assert!(
                        entry_matches(spec, got),
                        "{} level {level} raw {raw:#x}: spec {spec:?}, got {got:?}",
                        F::NAME
                    );
                }
                // Typed variants the module docs promise.
                let raw = V | b;
                let got = F::decode(raw, level);
                match bit {
                    54..=60 | 63 => {
                        assert_eq!(got, Err(DecodeError::ReservedBits { bits: b }), "{raw:#x}")
                    }
                    61 | 62 if !m.svpbmt => {
                        assert_eq!(got, Err(DecodeError::ReservedBits { bits: b }), "{raw:#x}")
                    }
                    2 => assert!(
                        matches!(got, Err(DecodeError::ReservedEncoding { .. })),
                        "W without R {got:?}"
                    ),
                    _ if last && b & (R | X) == 0 => assert!(
                        got.is_err(),
                        "{} pointer at the last level: {got:?}",
                        F::NAME
                    ),
                    4 | 6 | 7 => {
                        assert_eq!(got, Err(DecodeError::ReservedBits { bits: b }), "{raw:#x}")
                    }
                    _ => {}
                }
                if last && b & (R | X) == 0 && bit != 2 && !(54..=63).contains(&bit) {
                    assert!(!matches!(got, Ok(Entry::Leaf(_)) | Ok(Entry::Table(_))));
                }
            }
            // PBMT in a leaf: 1 NC, 2 IO, 3 reserved encoding.
            let leaf = V | R;
            if m.svpbmt {
                let l = |raw| match F::decode(raw, level) {
                    Ok(Entry::Leaf(l)) => l.mem_type,
                    other => panic!("{other:?}"),
                };
                assert_eq!(l(leaf), PBMT_PMA);
                assert_eq!(l(leaf | 1 << 61), PBMT_NC);
                assert_eq!(l(leaf | 2 << 61), PBMT_IO);
                assert!(matches!(
                    F::decode(leaf | 3 << 61, level),
                    Err(DecodeError::ReservedEncoding { .. })
                ));
            }
        }
    });
}

/// Misaligned superpages (§4.3.2 step 6): any PPN bit below the level's size.
#[test]
fn misaligned_superpages_fault_at_every_level() {
    for_each_format!(F, m, {
        for level in 0..m.levels {
            let shift = m.shift(level);
            for pa_bit in 12..56 {
                let pa = 1u64 << pa_bit;
                let raw = V | R | W | pa_field(pa);
                let got = F::decode(raw, level);
                if pa_bit < shift {
                    assert!(
                        matches!(got, Err(DecodeError::ReservedBits { .. })),
                        "{} level {level} pa {pa:#x}: {got:?}",
                        F::NAME
                    );
                } else {
                    let Ok(Entry::Leaf(l)) = got else {
                        panic!("{} level {level} pa {pa:#x}: {got:?}", F::NAME)
                    };
                    assert_eq!(l.pa, PhysAddr(pa));
                }
            }
        }
    });
}

/// D, A, U in a pointer are reserved (§4.4.1); G is not; RSW is ignored.
#[test]
fn pointer_bits() {
    for_each_format!(F, m, {
        for level in 0..m.levels - 1 {
            let ptr = V | pa_field(0x8000_0000);
            for b in [D, A, U, D | A | U] {
                assert!(
                    matches!(
                        F::decode(ptr | b, level),
                        Err(DecodeError::ReservedBits { .. })
                    ),
                    "{} level {level}",
                    F::NAME
                );
            }
            for b in [G, 1 << 8, 1 << 9, G | 3 << 8] {
                assert_eq!(
                    F::decode(ptr | b, level),
                    Ok(Entry::Table(TableEntry {
                        table: PhysAddr(0x8000_0000),
                        grants: Perms::GRANTS
                    }))
                );
            }
            if m.svpbmt {
                for p in 1..4u64 {
                    assert!(F::decode(ptr | p << 61, level).is_err());
                }
            }
        }
        assert_eq!(
            F::decode(V, m.levels - 1),
            Err(DecodeError::TableNotAllowed {
                level: m.levels - 1
            })
        );
    });
}

/// The PPN at its full 44-bit width: 56-bit physical addresses.
#[test]
fn ppn_at_maximum_width() {
    let top_page = (1u64 << 56) - 4096;
    for_each_format!(F, m, {
        let last = m.levels - 1;
        let raw = V | R | PPN_MASK;
        let Ok(Entry::Leaf(l)) = F::decode(raw, last) else {
            panic!()
        };
        assert_eq!(l.pa, PhysAddr(top_page));
        assert_eq!(
            F::decode(V | PPN_MASK, 0),
            Ok(Entry::Table(TableEntry {
                table: PhysAddr(top_page),
                grants: Perms::GRANTS
            }))
        );
        let leaf = LeafEntry {
            pa: PhysAddr(top_page),
            perms: Perms::READ,
            mem_type: MemType(0),
        };
        let enc = F::encode_leaf(&leaf, last).unwrap();
        assert_eq!(enc & PPN_MASK, PPN_MASK);
        assert_eq!(F::decode(enc, last), Ok(Entry::Leaf(leaf)));
        for level in 0..m.levels {
            let size = 1u64 << m.shift(level);
            let leaf = LeafEntry {
                pa: PhysAddr((1 << 56) - size),
                ..leaf
            };
            let enc = F::encode_leaf(&leaf, level).unwrap();
            assert_eq!(F::decode(enc, level), Ok(Entry::Leaf(leaf)));
            let too_big = LeafEntry {
                pa: PhysAddr(1 << 56),
                ..leaf
            };
            assert!(matches!(
                F::encode_leaf(&too_big, level),
                Err(EncodeError::UnencodableAddress { .. })
            ));
        }
        assert_eq!(
            F::decode(F::encode_table(PhysAddr(top_page), 0).unwrap(), 0),
            Ok(Entry::Table(TableEntry {
                table: PhysAddr(top_page),
                grants: Perms::GRANTS
            }))
        );
        assert!(matches!(
            F::encode_table(PhysAddr(1 << 56), 0),
            Err(EncodeError::UnencodableAddress { .. })
        ));
    });
}

/// Random raw entries at every level (and past the last) against the spec
/// model: total, deterministic, contract 3.
#[test]
fn random_raw_entries_match_the_spec_model() {
    let mut rng = Rng(7);
    for_each_format!(F, m, {
        for i in 0..40_000u32 {
            let mut raw = rng.next();
            // Bias towards well-formed entries so that leaves and pointers occur.
            if i % 4 != 0 {
                raw &= !(RESERVED | N);
                if rng.chance(2) {
                    raw &= !PBMT;
                }
                if rng.chance(2) {
                    raw &= !(((1u64 << rng.below(45)) - 1) << 10);
                }
                raw |= V;
            }
            let level = rng.below(m.levels as u64 + 1) as usize;
            let got = F::decode(raw, level);
            assert_eq!(got, F::decode(raw, level));
            let spec = spec_decode(m, raw, level);
            assert!(
                entry_matches(spec, got),
                "{} level {level} raw {raw:#x}: spec {spec:?}, got {got:?}",
                F::NAME
            );
            match got {
                Ok(Entry::Table(_)) => assert!(F::GEOMETRY.holds_tables(level)),
                Ok(Entry::Leaf(l)) => {
                    let size = F::GEOMETRY.leaf_size(level).unwrap();
                    assert_eq!(l.pa.0 % size, 0);
                }
                _ => {}
            }
        }
    });
}

// ---------------------------------------------------------------- encode

fn random_perms(rng: &mut Rng) -> Perms {
    Perms::from_bits_truncate(rng.next() as u32 & 0x7f)
}

/// Contract 4 for random leaves, refusals checked against the spec.
#[test]
fn encode_leaf_round_trips_or_refuses_typed() {
    let mut rng = Rng(11);
    for_each_format!(F, m, {
        for _ in 0..20_000 {
            let level = rng.below(m.levels as u64 + 1) as usize;
            let perms = random_perms(&mut rng);
            let mem_type = MemType(rng.below(5) as u8);
            let mut pa = rng.next() & ((1 << 58) - 1);
            if level < m.levels && rng.chance(2) {
                pa &= !((1u64 << m.shift(level)) - 1);
            }
            if rng.chance(2) {
                pa &= (1 << 56) - 1;
            }
            let leaf = LeafEntry {
                pa: PhysAddr(pa),
                perms,
                mem_type,
            };
            let got = F::encode_leaf(&leaf, level);
            if level >= m.levels {
                assert!(
                    matches!(
                        got,
                        Err(EncodeError::NoSuchLevel { .. } | EncodeError::LeafNotAllowed { .. })
                    ),
                    "{got:?}"
                );
                continue;
            }
            let aligned = pa % (1 << m.shift(level)) == 0 && pa < 1 << 56;
            let rwx = perms & (Perms::READ | Perms::WRITE | Perms::EXEC);
            let perms_ok = !rwx.is_empty()
                && (!perms.contains(Perms::WRITE) || perms.contains(Perms::READ))
                && (!m.gstage || !perms.intersects(Perms::USER | Perms::GLOBAL));
            let mt_ok = mem_type.0 == 0 || (m.svpbmt && mem_type.0 <= 2);
            match got {
                Ok(raw) => {
                    assert!(
                        aligned && perms_ok && mt_ok,
                        "{} accepted {leaf:?}",
                        F::NAME
                    );
                    assert_ne!(raw, 0);
                    assert_eq!(F::decode(raw, level), Ok(Entry::Leaf(leaf)), "{}", F::NAME);
                    assert!(entry_matches(
                        spec_decode(m, raw, level),
                        Ok(Entry::Leaf(leaf))
                    ));
                    if m.gstage {
                        assert_ne!(raw & U, 0, "G-stage leaves need U = 1");
                        assert_eq!(raw & G, 0, "software should clear G in the G-stage");
                    }
                }
                Err(EncodeError::UnencodableAddress { pa: p }) => {
                    assert_eq!(p, leaf.pa);
                    assert!(!aligned)
                }
                Err(EncodeError::UnsupportedPerms { .. }) => assert!(!perms_ok && aligned),
                Err(EncodeError::UnsupportedMemType { .. }) => {
                    assert!(!mt_ok && aligned && perms_ok)
                }
                Err(e) => panic!("{} {leaf:?} level {level}: {e:?}", F::NAME),
            }
        }
    });
}

#[test]
fn encode_table_round_trips_or_refuses_typed() {
    let mut rng = Rng(12);
    for_each_format!(F, m, {
        for _ in 0..5_000 {
            let level = rng.below(m.levels as u64 + 1) as usize;
            let mut pa = rng.next() & ((1 << 58) - 1);
            if rng.chance(2) {
                pa &= !0xfff;
            }
            if rng.chance(2) {
                pa &= (1 << 56) - 1;
            }
            let got = F::encode_table(PhysAddr(pa), level);
            if level + 1 >= m.levels {
                assert_eq!(got, Err(EncodeError::NoSuchLevel { level }));
                continue;
            }
            if pa % 4096 != 0 || pa >= 1 << 56 {
                assert_eq!(
                    got,
                    Err(EncodeError::UnencodableAddress { pa: PhysAddr(pa) })
                );
                continue;
            }
            let raw = got.unwrap();
            assert_ne!(raw, 0);
            assert_eq!(raw & (R | W | X | U | A | D | PBMT | N | RESERVED), 0);
            assert_eq!(
                F::decode(raw, level),
                Ok(Entry::Table(TableEntry {
                    table: PhysAddr(pa),
                    grants: Perms::GRANTS
                }))
            );
        }
    });
}

/// Contract 7: limit_leaf never adds a permission.
#[test]
fn limit_leaf_only_takes_away() {
    let mut rng = Rng(13);
    for_each_format!(F, m, {
        for _ in 0..5_000 {
            let raw = rng.next() | V | R;
            let level = m.levels - 1;
            if let Ok(Entry::Leaf(l)) = F::decode(raw, level) {
                let grants = random_perms(&mut rng);
                let got = F::limit_leaf(raw, l.perms, grants);
                assert!(l.perms.limited_by(grants).contains(got));
                assert_eq!(F::limit_leaf(raw, l.perms, Perms::GRANTS), l.perms);
            }
        }
    });
}

// ---------------------------------------------------------------- canonical

#[test]
fn canonical_edges_of_every_mode() {
    fn sv<F: PagingFormat>(bits: u32) {
        let last_low = (1u64 << (bits - 1)) - 1;
        let first_high = !last_low;
        let yes = [
            0,
            0xfff,
            last_low,
            first_high,
            u64::MAX,
            first_high + 0x1000,
        ];
        let no = [
            last_low + 1,
            first_high - 1,
            1 << 63,
            (1 << 63) - 1,
            last_low + 1 + 0x1000,
        ];
        for va in yes {
            assert!(F::is_canonical(VirtAddr(va)), "{} {va:#x}", F::NAME);
        }
        for va in no {
            assert!(!F::is_canonical(VirtAddr(va)), "{} {va:#x}", F::NAME);
        }
    }
    fn gs<F: PagingFormat>(bits: u32) {
        let last = (1u64 << bits) - 1;
        for va in [0, last, last & !0xfff] {
            assert!(F::is_canonical(VirtAddr(va)), "{} {va:#x}", F::NAME);
        }
        for va in [last + 1, u64::MAX, 1 << 63, !last, 1 << (bits + 1)] {
            assert!(!F::is_canonical(VirtAddr(va)), "{} {va:#x}", F::NAME);
        }
    }
    sv::<Sv39>(39);
    sv::<Sv48>(48);
    sv::<Sv57>(57);
    sv::<Sv<3, true>>(39);
    gs::<Sv39x4>(41);
    gs::<Sv48x4>(50);
    gs::<Sv57x4>(59);
    gs::<GStage<5, true>>(59);
    let mut rng = Rng(3);
    for_each_format!(F, m, {
        for _ in 0..20_000 {
            let va = rng.next() >> rng.below(64);
            let va = if rng.chance(2) { !va } else { va };
            assert_eq!(F::is_canonical(VirtAddr(va)), m.canonical(va), "{va:#x}");
        }
    });
}

// ---------------------------------------------------------------- Svnapot

#[test]
fn napot_leaves() {
    let base = 0x8012_0000u64; // 64 KiB aligned
    let raw = N | V | R | W | A | D | pa_field(base) | 0b1000 << 10;
    assert!(matches!(
        Sv39::decode(raw, 2),
        Err(DecodeError::ReservedBits { .. })
    ));
    for page in 0..16u64 {
        let va = VirtAddr(0x4000_0000 + page * 4096 + 0x123);
        let n = Sv39::napot_leaf(raw, 2, va).unwrap().unwrap();
        assert_eq!(n.block.pa, PhysAddr(base));
        assert_eq!(n.page, PhysAddr(base + page * 4096));
        assert_eq!(
            n.block.perms,
            Perms::READ | Perms::WRITE | Perms::ACCESSED | Perms::DIRTY
        );
    }
    // Reserved NAPOT encodings: any other low PPN nibble, a superpage, a pointer.
    for nib in 0..16u64 {
        if nib == 0b1000 {
            continue;
        }
        let r = N | V | R | pa_field(base) | nib << 10;
        assert!(matches!(
            Sv48::napot_leaf(r, 3, VirtAddr(0)),
            Err(DecodeError::ReservedEncoding { .. })
        ));
    }
    assert!(Sv39::napot_leaf(raw, 1, VirtAddr(0)).is_err());
    assert!(Sv39::napot_leaf(raw, 0, VirtAddr(0)).is_err());
    assert!(Sv39::napot_leaf(N | V | pa_field(base) | 0b1000 << 10, 2, VirtAddr(0)).is_err());
    assert!(Sv39::napot_leaf(N | V | W | pa_field(base) | 0b1000 << 10, 2, VirtAddr(0)).is_err());
    assert_eq!(Sv39::napot_leaf(raw & !N, 2, VirtAddr(0)), Ok(None));
    assert_eq!(Sv39::napot_leaf(raw & !V, 2, VirtAddr(0)), Ok(None));
    assert_eq!(
        Sv39::napot_leaf(raw, 3, VirtAddr(0)),
        Err(DecodeError::NoSuchLevel { level: 3 })
    );
    // Reserved bits elsewhere still fault.
    assert!(Sv57::napot_leaf(raw | 1 << 54, 4, VirtAddr(0)).is_err());
    assert!(Sv57::napot_leaf(raw | 1 << 61, 4, VirtAddr(0)).is_err());
    // Random inputs never panic.
    let mut rng = Rng(5);
    for _ in 0..20_000 {
        let r = rng.next() | N | V;
        let level = rng.below(5) as usize;
        let _ = Sv::<5, true>::napot_leaf(r, level, VirtAddr(rng.next()));
    }
}

// ---------------------------------------------------------------- satp / hgatp

#[test]
fn satp_and_hgatp_values() {
    assert_eq!(Sv39::satp(PhysAddr(0x8020_0000), 0) >> 60, 8);
    assert_eq!(Sv48::satp(PhysAddr(0x8020_0000), 0) >> 60, 9);
    assert_eq!(Sv57::satp(PhysAddr(0x8020_0000), 0xffff) >> 60, 10);
    assert_eq!(
        Sv57::satp(PhysAddr(0x8020_0000), 0xffff),
        10 << 60 | 0xffff << 44 | 0x80200
    );
    assert_eq!(
        Sv39x4::hgatp(PhysAddr(0x8020_0000), 0x3fff),
        Some(8 << 60 | 0x3fff << 44 | 0x80200)
    );
    assert_eq!(Sv48x4::hgatp(PhysAddr(0x8020_0000), 0).unwrap() >> 60, 9);
    assert_eq!(Sv57x4::hgatp(PhysAddr(0x8020_0000), 0).unwrap() >> 60, 10);
    assert_eq!(Sv39x4::hgatp(PhysAddr(0x8020_1000), 0), None);
    assert_eq!(Sv39x4::hgatp(PhysAddr(0x8020_2000), 0), None);
    assert_eq!(Sv39x4::hgatp(PhysAddr(0x8020_0000), 0x4000), None);
    assert_eq!(Sv39x4::hgatp(PhysAddr(1 << 56), 0), None);
    assert_eq!(Sv39x4::ROOT_BYTES, 16 << 10);
}

// ---------------------------------------------------------------- random tables

const TABLE_BASE: u64 = 0x1000_0000;
const TABLE_FRAMES: usize = 8;
const DATA_BASE: u64 = 0x8000_0000;
const DATA_PAGES: usize = 1024;

fn random_entry(rng: &mut Rng, m: Mode) -> u64 {
    let junk = |rng: &mut Rng| {
        if rng.chance(6) {
            1u64 << rng.below(64)
        } else {
            0
        }
    };
    match rng.below(10) {
        0..=2 => {
            if rng.chance(3) {
                rng.next() & !V
            } else {
                0
            }
        }
        3..=5 => {
            let frame = TABLE_BASE + rng.below(TABLE_FRAMES as u64 + 1) * 4096;
            V | pa_field(frame) | junk(rng)
        }
        6..=8 => {
            let rwx = [R, R | W, X, R | X, R | W | X, W, W | X][rng.below(7) as usize];
            let mut pa = DATA_BASE + rng.below(DATA_PAGES as u64) * 4096;
            if rng.chance(2) {
                pa &= !0x1f_ffff;
            }
            let mut raw = V | rwx | pa_field(pa);
            for b in [U, G, A, D] {
                if m.gstage && b == U {
                    if !rng.chance(5) {
                        raw |= U;
                    }
                } else if rng.chance(2) {
                    raw |= b;
                }
            }
            if rng.chance(6) {
                raw |= rng.below(4) << 61;
            }
            raw | junk(rng)
        }
        _ => rng.next(),
    }
}

fn random_va(rng: &mut Rng, m: Mode) -> u64 {
    let bits = m.va_bits();
    let mut va = rng.next() & ((1 << bits) - 1);
    if !m.gstage && rng.chance(2) {
        va |= !((1u64 << (bits - 1)) - 1);
    }
    match rng.below(8) {
        0 => rng.next(),
        1 => va ^ 1 << (bits + rng.below(64 - bits as u64) as u32),
        _ => va,
    }
}

fn fill_random(frames: &[HostFrame], rng: &mut Rng, m: Mode) {
    for f in frames {
        for e in f.entries.iter() {
            e.store(random_entry(rng, m), Ordering::Relaxed);
        }
    }
}

fn walker_over_random_tables<F: PagingFormat>(m: Mode, seed: u64) {
    let mut rng = Rng(seed);
    let frames: Vec<HostFrame> = (0..TABLE_FRAMES).map(|_| HostFrame::new()).collect();
    let mem = HostMemory::new(&frames, PhysAddr(TABLE_BASE)).unwrap();
    for round in 0..40 {
        fill_random(&frames, &mut rng, m);
        let root = TABLE_BASE + if m.gstage { 0 } else { rng.below(4) * 4096 };
        let walker = Walker::<F, _>::new(&mem, PhysAddr(root));
        for _ in 0..500 {
            let va = random_va(&mut rng, m);
            let got = walker.translate(VirtAddr(va));
            let spec = spec_translate(m, &mem, root, va);
            let ok = match (spec, &got) {
                (SpecWalk::NonCanonical, Err(e)) => e.kind == WalkErrorKind::NonCanonical,
                (SpecWalk::Hole, Ok(WalkItem::Hole(_))) => true,
                (SpecWalk::Fault, Err(e)) => matches!(e.kind, WalkErrorKind::Decode { .. }),
                (SpecWalk::Access, Err(e)) => matches!(e.kind, WalkErrorKind::Access { .. }),
                (SpecWalk::Leaf { pa, perms, size }, Ok(WalkItem::Leaf(l))) => {
                    l.pa.0 == pa
                        && l.size == size
                        && l.perms == perms
                        && l.leaf_pa.0 == pa & !(size - 1)
                        && l.leaf_va.0 == va & !(size - 1)
                }
                _ => false,
            };
            assert!(
                ok,
                "{} round {round} va {va:#x}: spec {spec:?}, got {got:?}",
                F::NAME
            );
        }
    }
}

#[test]
fn walker_translate_over_random_raw_tables() {
    let mut seed = 100;
    for_each_format!(F, m, {
        seed += 1;
        walker_over_random_tables::<F>(m, seed);
    });
}

fn gup_over_random_tables<F: PagingFormat>(m: Mode, seed: u64) {
    let mut rng = Rng(seed);
    let frames: Vec<HostFrame> = (0..TABLE_FRAMES).map(|_| HostFrame::new()).collect();
    let mem = HostMemory::new(&frames, PhysAddr(TABLE_BASE)).unwrap();
    let metas: Vec<PageMeta> = (0..DATA_PAGES).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let memmap: SliceMemMap<'_> = unsafe { SliceMemMap::new(Pfn(DATA_BASE >> 12), &metas) };
    // SAFETY: the tables are never freed while the walks run.
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = vec![Pfn(0); 64];
    let mut complete = 0;
    let mut taken_total = 0;
    for round in 0..60 {
        fill_random(&frames, &mut rng, m);
        let root = TABLE_BASE + if m.gstage { 0 } else { rng.below(4) * 4096 };
        let gup = Gup::new(Walker::<F, _>::new(&mem, PhysAddr(root)), &memmap);
        for _ in 0..100 {
            let start = random_va(&mut rng, m) & !0xfff;
            let pages = 1 + rng.below(48);
            let len = pages * 4096;
            let mut flags = GupFlags::empty();
            if rng.chance(2) {
                flags |= GupFlags::WRITE;
            }
            if rng.chance(2) {
                flags |= GupFlags::PIN;
            }
            if !m.gstage && rng.chance(3) {
                flags |= GupFlags::USER;
            }
            let out_len = 1 + rng.below(64) as usize;
            let out = &mut out[..out_len];
            let got = gup.get_pages(&guard, VirtAddr(start), len, flags, out);
            let last = start.checked_add(len - 1);
            let range_ok = last.is_some_and(|l| m.canonical(start) && m.canonical(l));
            let Ok(taken) = got else {
                assert!(!range_ok, "{} {start:#x}+{len:#x}: {got:?}", F::NAME);
                continue;
            };
            assert!(range_ok, "{} accepted {start:#x}+{len:#x}", F::NAME);
            let hold = if flags.contains(GupFlags::PIN) {
                Hold::Pin
            } else {
                Hold::Ref
            };
            // Each page taken is the spec's translation, with the permissions.
            assert!(taken.pages <= out_len && taken.pages as u64 <= pages);
            for (i, pfn) in out[..taken.pages].iter().enumerate() {
                let va = start + i as u64 * 4096;
                match spec_translate(m, &mem, root, va) {
                    SpecWalk::Leaf { pa, perms, .. } => {
                        assert_eq!(pfn.0, pa >> 12, "{} va {va:#x}", F::NAME);
                        assert!(perms.contains(Perms::READ), "{} {va:#x}", F::NAME);
                        if flags.contains(GupFlags::WRITE) {
                            assert!(perms.contains(Perms::WRITE));
                        }
                        if flags.contains(GupFlags::USER) {
                            assert!(perms.contains(Perms::USER));
                        }
                    }
                    other => panic!("{} took {va:#x}, spec {other:?}", F::NAME),
                }
            }
            // Exact counts.
            let count: u64 = metas
                .iter()
                .map(|p| {
                    u64::from(if hold == Hold::Pin {
                        p.pins()
                    } else {
                        p.refs()
                    })
                })
                .sum();
            assert_eq!(count, taken.pages as u64, "{} round {round}", F::NAME);
            let stop_va = start + taken.pages as u64 * 4096;
            let spec_stop = spec_translate(m, &mem, root, stop_va);
            match taken.stop {
                Stop::Complete => {
                    assert_eq!(taken.pages as u64, pages);
                    complete += 1;
                }
                Stop::Absent { va } => {
                    assert_eq!(va.0, stop_va);
                    assert_eq!(spec_stop, SpecWalk::Hole);
                }
                Stop::NotPermitted { va, .. } => {
                    assert_eq!(va.0, stop_va);
                    assert!(matches!(spec_stop, SpecWalk::Leaf { .. }));
                }
                Stop::OutsideMap { va, pfn } => {
                    assert_eq!(va.0, stop_va);
                    let SpecWalk::Leaf { pa, .. } = spec_stop else {
                        panic!("{spec_stop:?}")
                    };
                    assert_eq!(pfn.0, pa >> 12);
                    assert!(
                        pa < DATA_BASE || pa >= DATA_BASE + DATA_PAGES as u64 * 4096,
                        "{pa:#x}"
                    );
                }
                Stop::OutputFull { va } => {
                    assert_eq!(va.0, stop_va);
                    assert_eq!(taken.pages, out_len);
                }
                Stop::Malformed(e) => {
                    assert_eq!(e.va.0, stop_va, "{e:?}");
                    assert!(
                        matches!(spec_stop, SpecWalk::Fault | SpecWalk::Access),
                        "{} {e:?} spec {spec_stop:?}",
                        F::NAME
                    );
                }
                other => panic!("{} unexpected stop {other:?}", F::NAME),
            }
            taken_total += taken.pages;
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(&memmap, &out[..taken.pages], hold) }.unwrap();
            assert!(metas.iter().all(|p| p.refs() == 0 && p.pins() == 0));
        }
    }
    assert!(
        complete > 0 && taken_total > 0,
        "{}: the test took nothing",
        F::NAME
    );
}

#[test]
fn gup_fast_over_random_raw_tables() {
    let mut seed = 200;
    for_each_format!(F, m, {
        seed += 1;
        gup_over_random_tables::<F>(m, seed);
    });
}

// ---------------------------------------------------------------- built tables

/// Sv: the edges of both halves, in every leaf size.
#[test]
fn sv_builder_maps_both_halves_edges() {
    fn run<F: PagingFormat>(m: Mode) {
        let bits = m.va_bits();
        let frames: Vec<HostFrame> = (0..32).map(|_| HostFrame::new()).collect();
        let mem = HostMemory::new(&frames, PhysAddr(TABLE_BASE)).unwrap();
        let mut pool: Vec<PhysAddr> = mem.frame_pas().collect();
        // SAFETY: no walker reads the tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        let mut b =
            TableBuilder::<F, _, _>::new(&mem, unsafe { FramePool::new(&mut pool) }, unsafe {
                ReclaimNow::new()
            })
            .unwrap();
        let last_low = (1u64 << (bits - 1)) - 1;
        let first_high = !last_low;
        let perms = Perms::READ | Perms::WRITE | Perms::USER | Perms::ACCESSED | Perms::DIRTY;
        for level in 0..m.levels {
            let size = 1u64 << m.shift(level);
            let pa = size.max(0x40u64 << 40);
            for va in [last_low + 1 - size, first_high, u64::MAX - size + 1] {
                if level == 0 && va == first_high {
                    continue; // same root entry as the line above for some modes
                }
                let req = MapRequest::new(VirtAddr(va), PhysAddr(pa), size, size).with_perms(perms);
                // SAFETY: the pages mapped are this code's, unmapped before they are freed.
                unsafe { b.map(&req) }.unwrap_or_else(|e| panic!("{} {va:#x}: {e:?}", F::NAME));
                let probe = va + (size - 1);
                let item = b.walker().translate(VirtAddr(probe)).unwrap();
                let l = item.leaf().unwrap();
                assert_eq!(l.pa, PhysAddr(pa + size - 1));
                assert_eq!(l.leaf_va, VirtAddr(va));
                assert_eq!(l.perms, perms);
                b.unmap(VirtAddr(va), size).unwrap();
            }
        }
        // Just outside each half.
        let req = MapRequest::new(VirtAddr(last_low + 1), PhysAddr(0), 4096, 4096);
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        assert!(unsafe { b.map(&req) }.is_err());
        let req = MapRequest::new(VirtAddr(first_high - 4096), PhysAddr(0), 4096, 4096);
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        assert!(unsafe { b.map(&req) }.is_err());
    }
    run::<Sv39>(SV39);
    run::<Sv48>(SV48);
    run::<Sv57>(SV57);
}

/// A 16 KiB G-stage root built with `with_root`, mapping at the last GPA.
#[test]
fn gstage_16k_root_maps_the_last_gpa() {
    fn run<F: PagingFormat>(m: Mode) {
        let bits = m.va_bits();
        let frames: Vec<HostFrame> = (0..40).map(|_| HostFrame::new()).collect();
        let root = PhysAddr(0x8020_0000);
        let mem = HostMemory::new(&frames, root).unwrap();
        let mut pool: Vec<PhysAddr> = mem.frame_pas().skip(4).collect();
        // SAFETY: no walker reads the tables while the builder unmaps.
        let mut b = unsafe {
            TableBuilder::<F, _, _>::with_root(
                &mem,
                root,
                FramePool::new(&mut pool),
                ReclaimNow::new(),
            )
        }
        .unwrap();
        let perms = Perms::READ | Perms::WRITE | Perms::EXEC | Perms::ACCESSED;
        let last = (1u64 << bits) - 1;
        for level in 0..m.levels {
            let size = 1u64 << m.shift(level);
            let va = last + 1 - size;
            let pa = size.max(0x40u64 << 40);
            let req = MapRequest::new(VirtAddr(va), PhysAddr(pa), size, size).with_perms(perms);
            // SAFETY: the pages mapped are this code's, unmapped before they are freed.
            unsafe { b.map(&req) }.unwrap_or_else(|e| panic!("{} level {level}: {e:?}", F::NAME));
            let item = b.walker().translate(VirtAddr(last)).unwrap();
            let l = item.leaf().unwrap();
            assert_eq!(
                (l.pa, l.size, l.perms),
                (PhysAddr(pa + size - 1), size, perms)
            );
            // The root entry is the last of the 4th 4 KiB table.
            assert_eq!(l.entry.loc.level.min(1), level.min(1));
            let root_raw = frames[3].entries[511].load(Ordering::Relaxed);
            assert_ne!(root_raw, 0, "{}", F::NAME);
            if level == 0 {
                assert_eq!(root_raw & (V | R | W | X | U), V | R | W | X | U);
            }
            assert_eq!(
                b.walker().translate(VirtAddr(last + 1)).unwrap_err().kind,
                WalkErrorKind::NonCanonical
            );
            b.unmap(VirtAddr(va), size).unwrap();
        }
        // Map the last 4 KiB page and take it with GUP-fast.
        let data = PhysAddr(DATA_BASE);
        let req = MapRequest::new(VirtAddr(last & !0xfff), data, 4096, 4096).with_perms(perms);
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        unsafe { b.map(&req) }.unwrap();
        let metas: Vec<PageMeta> = (0..4).map(|_| PageMeta::new_allocated()).collect();
        // SAFETY: this map is the only one counting on these metas.
        let memmap: SliceMemMap<'_> = unsafe { SliceMemMap::new(Pfn(DATA_BASE >> 12), &metas) };
        // SAFETY: the tables are never freed while the walk runs.
        let guard = unsafe { TablesNeverFreed::new() };
        let gup = Gup::new(b.walker(), &memmap);
        let mut out = [Pfn(0); 2];
        let t = gup
            .get_pages(
                &guard,
                VirtAddr(last & !0xfff),
                4096,
                GupFlags::PIN | GupFlags::WRITE,
                &mut out,
            )
            .unwrap();
        assert_eq!((t.pages, t.stop), (1, Stop::Complete));
        assert_eq!(out[0], Pfn(DATA_BASE >> 12));
        assert_eq!(metas[0].pins(), 1);
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(&memmap, &out[..1], Hold::Pin) }.unwrap();
        assert_eq!(metas[0].pins(), 0);
        assert!(
            gup.get_pages(
                &guard,
                VirtAddr(last & !0xfff),
                8192,
                GupFlags::empty(),
                &mut out
            )
            .is_err()
        );
        // Stage-1-only permissions are refused as typed errors.
        let req =
            MapRequest::new(VirtAddr(0), data, 4096, 4096).with_perms(Perms::READ | Perms::USER);
        // SAFETY: the pages mapped are this code's, unmapped before they are freed.
        assert!(unsafe { b.map(&req) }.is_err());
    }
    run::<Sv39x4>(SV39X4);
    run::<Sv48x4>(SV48X4);
    run::<Sv57x4>(SV57X4);
}

/// A G-stage leaf with U = 0 grants nothing (every G-stage access is a user
/// access): GUP-fast must not take it.
#[test]
fn gstage_leaf_without_u_is_not_taken() {
    let frames: Vec<HostFrame> = (0..8).map(|_| HostFrame::new()).collect();
    let mem = HostMemory::new(&frames, PhysAddr(TABLE_BASE)).unwrap();
    // root (frames 0..4) -> frame 4 -> frame 5 (last level)
    frames[0].entries[0].store(V | pa_field(TABLE_BASE + 4 * 4096), Ordering::Relaxed);
    frames[4].entries[0].store(V | pa_field(TABLE_BASE + 5 * 4096), Ordering::Relaxed);
    frames[5].entries[0].store(
        V | R | W | X | A | D | pa_field(DATA_BASE),
        Ordering::Relaxed,
    );
    frames[5].entries[1].store(
        V | R | W | U | pa_field(DATA_BASE + 4096),
        Ordering::Relaxed,
    );
    let metas: Vec<PageMeta> = (0..4).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let memmap: SliceMemMap<'_> = unsafe { SliceMemMap::new(Pfn(DATA_BASE >> 12), &metas) };
    // SAFETY: the tables are never freed while the walk runs.
    let guard = unsafe { TablesNeverFreed::new() };
    let gup = Gup::new(
        Walker::<Sv39x4, _>::new(&mem, PhysAddr(TABLE_BASE)),
        &memmap,
    );
    let mut out = [Pfn(0); 4];
    let t = gup
        .get_pages(&guard, VirtAddr(0), 8192, GupFlags::empty(), &mut out)
        .unwrap();
    assert_eq!(t.pages, 0);
    assert!(matches!(
        t.stop,
        Stop::NotPermitted {
            va: VirtAddr(0),
            ..
        }
    ));
    let t = gup
        .get_pages(&guard, VirtAddr(4096), 4096, GupFlags::WRITE, &mut out)
        .unwrap();
    assert_eq!((t.pages, t.stop), (1, Stop::Complete));
    // SAFETY: the pages were taken above by this code and are released once.
    unsafe { release(&memmap, &out[..1], Hold::Ref) }.unwrap();
    // And a misaligned 2 MiB leaf stops GUP-fast with a typed error.
    frames[4].entries[1].store(
        V | R | W | U | pa_field(DATA_BASE + 4096),
        Ordering::Relaxed,
    );
    let t = gup
        .get_pages(
            &guard,
            VirtAddr(0x20_0000),
            4096,
            GupFlags::empty(),
            &mut out,
        )
        .unwrap();
    assert_eq!(t.pages, 0);
    assert!(matches!(t.stop, Stop::Malformed(_)), "{:?}", t.stop);
    assert!(metas.iter().all(|p| p.refs() == 0 && p.pins() == 0));
}

/// `TableBuilder::new` takes a 4 KiB pool frame as the root; a G-stage root is
/// 16 KiB. Either `new` refuses, or mappings through root entries 0 and 512
/// (which live in the first and second 4 KiB of the root) stay independent.
#[test]
fn gstage_new_with_a_4k_pool_root_does_not_alias() {
    for reversed in [false, true] {
        gstage_new_case(reversed);
    }
}

fn gstage_new_case(reversed: bool) {
    let frames: Vec<HostFrame> = (0..16).map(|_| HostFrame::new()).collect();
    let mem = HostMemory::new(&frames, PhysAddr(0x8020_0000)).unwrap();
    let mut pool: Vec<PhysAddr> = mem.frame_pas().take(8).collect();
    if reversed {
        pool.reverse();
    }
    // SAFETY: no walker reads the tables while the builder unmaps.
    // The pool's frames are this code's own, in no other pool.
    let built =
        TableBuilder::<Sv39x4, _, _>::new(&mem, unsafe { FramePool::new(&mut pool) }, unsafe {
            ReclaimNow::new()
        });
    // Finding 1 of the review: `new` took one 4 KiB pool frame as the 16 KiB
    // root, whose other three quarters the pool then handed out as tables (a
    // 2 MiB phantom mapping at GPA 512 GiB). It now refuses, typed; the root
    // goes through `with_root` (`gstage_16k_root_maps_the_last_gpa`).
    assert!(
        matches!(
            built,
            Err(MapError::RootLargerThanFrame {
                root_entries: 2048,
                frame_entries: 512
            })
        ),
        "a concatenated root from one pool frame (reversed {reversed})"
    );
}
