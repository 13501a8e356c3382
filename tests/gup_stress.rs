//! Run: `cargo test --release --test gup_stress` (also runs in the debug `cargo test`)
//!
//! The host stress of GUP-fast against the truncate protocol, bounded: walkers
//! pin and reference random ranges over real x86_64 tables while a writer marks,
//! unmaps, drains, frees, poisons and reuses data pages and page-table pages.
//! The harness is the `pin_race` example's (see its docs for every check); this
//! test runs it with a few seeds and requires zero violations — and that the run
//! really raced (pins taken, truncates done, tables retired and reused, walks
//! that saw an entry change or a truncating page).

#[allow(dead_code)]
#[path = "../examples/pin_race.rs"]
mod pin_race;

#[test]
fn walkers_against_truncate_and_table_reuse() {
    let ops = if cfg!(debug_assertions) { 600 } else { 6000 };
    let mut raced = 0;
    for seed in [1, 2, 3] {
        let s = pin_race::run(pin_race::Config {
            walkers: 3,
            ops,
            seed,
        });
        assert_eq!(s.violations, 0, "seed {seed}: {s:?}");
        assert!(
            s.pins > 0 && s.gets > 0 && s.truncates > 0,
            "seed {seed}: {s:?}"
        );
        assert!(
            s.tables_retired > 0,
            "seed {seed}: no table was ever freed: {s:?}"
        );
        raced += s.changed + s.refused;
    }
    assert!(raced > 0, "no walk ever met a concurrent truncate");
}
