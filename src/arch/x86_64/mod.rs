//! x86_64: the 4-level and 5-level (LA57) paging formats.

mod paging;

pub use paging::{Paging4Level, Paging5Level, X86Paging};
