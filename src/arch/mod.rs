//! Architecture-specific code.
//!
//! The paging formats here are plain data (bit layouts and their decoding), so
//! they compile and are tested on every host; only code that executes an
//! architecture's instructions is gated by `cfg(target_arch)`.

pub mod aarch64;
pub mod riscv64;
pub mod x86_64;
