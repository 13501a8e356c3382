//! Run: `cargo test --test examples_integration`
//!
//! The integration examples, run as tests: a Hermit-style unikernel
//! (`examples/unikernel.rs`), a Theseus-style ownership kernel
//! (`examples/ownership_kernel.rs`) and a hypervisor over aarch64 stage 2 and
//! x86 EPT (`examples/hypervisor.rs`). Each must finish with zero violations,
//! having pinned and truncated something.

#[allow(dead_code)]
#[path = "../examples/unikernel.rs"]
mod unikernel;

#[allow(dead_code)]
#[path = "../examples/ownership_kernel.rs"]
mod ownership_kernel;

#[allow(dead_code)]
#[path = "../examples/hypervisor.rs"]
mod hypervisor;

#[test]
fn unikernel_pins_for_dma_and_truncates_a_dax_file() {
    let s = unikernel::run();
    println!("{s}");
    assert_eq!(s.violations, 0, "{s}");
    assert_eq!((s.pinned, s.truncated), (8 + 512, 1024), "{s}");
}

#[test]
fn ownership_kernel_releases_by_drop_and_truncates_a_mapped_file() {
    let s = ownership_kernel::run();
    println!("{s}");
    assert_eq!(s.violations, 0, "{s}");
    assert_eq!((s.pinned, s.truncated), (4 + 8, 8), "{s}");
}

#[test]
fn hypervisor_revokes_the_device_lease_before_the_balloon_frees() {
    let s = hypervisor::run();
    println!("{s}");
    assert_eq!(s.violations, 0, "{s}");
    assert_eq!((s.pinned, s.truncated), (2 * 32, 2 * 512), "{s}");
}
