//! Run: `cargo test --test dax_truncate` (release: `cargo test --release --test dax_truncate`)
//!
//! The main job, bounded: `examples/dax_truncate.rs` (see its docs for the
//! world and every check) runs for about 2 s: a 1 GiB DAX file mapped in an
//! x86_64 and an aarch64 address space, walkers pinning (some under leases)
//! while the truncater truncates, punches holes, drains with a sleeping
//! waiter, and the allocator splits and merges units and reuses them at other
//! offsets. It must finish with zero violations, having really done all of
//! that.

#[allow(dead_code)]
#[path = "../examples/dax_truncate.rs"]
mod dax_truncate;

#[test]
fn dax_file_truncated_under_pinning_walkers_in_two_address_spaces() {
    let s = dax_truncate::run(dax_truncate::Config {
        seconds: 2.0,
        seed: 0x5eed,
        ..dax_truncate::Config::default()
    });
    println!("{s:?}");
    assert_eq!(s.violations, 0, "{s:?}");
    assert!(s.gets > 0 && s.pins > 0, "nothing was taken: {s:?}");
    assert!(
        s.truncates > 0 && s.punches > 0,
        "no truncate or no hole punch: {s:?}"
    );
    assert!(
        s.splits > 0 && s.merges > 0,
        "units were never split and merged: {s:?}"
    );
    assert!(s.tables_retired > 0, "no page table was reused: {s:?}");
    assert!(s.shootdowns > 0, "the TLB hook never ran: {s:?}");
    assert!(
        s.leases_granted > 0,
        "no long-term pin was taken under a lease: {s:?}"
    );
}
