//! (The crate documentation is the README; see the module list below it.)
#![doc = include_str!("../README.md")]
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
