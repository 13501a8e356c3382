//! pagepin: the page-pinning core of a kernel.
//!
//! A kernel hands a physical page to a device for DMA by *pinning* it; a filesystem
//! on direct-access memory may at the same time truncate the file that maps it.
//! pagepin gives the pieces that make that race safe, without locks on the pinning
//! side and without allocation:
//!
//! - [`meta::PageMeta`]: per-page metadata in **one 8-byte atomic word** — a
//!   reference count, an exact DMA-pin count and the `FREE`/`TRUNCATING` state
//!   bits — so "mark truncating" and "take a reference" are totally ordered RMWs on
//!   one location.
//! - [`sync`]: the only source of atomics (loom's under `cfg(loom)`), and the
//!   test-only operation counters.
//!
//! The crate is `no_std` and never allocates.
#![no_std]
#![warn(missing_docs)]

pub mod arch;
pub mod guard;
pub mod gup;
pub mod memmap;
pub mod meta;
pub mod sync;
pub mod table;
pub mod truncate;
pub mod wait;
