//! x86_64: the 4-level and 5-level (LA57) paging formats, and EPT, the second
//! stage of VMX, with 4- and 5-level walks.

mod ept;
mod paging;
mod shape;

pub use ept::{Ept, Ept4Level, Ept5Level};
pub use paging::{Paging4Level, Paging5Level, X86Paging};
