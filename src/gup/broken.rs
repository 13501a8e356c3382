//! Deliberately broken GUP-fast variants, compiled only under `cfg(loom)`, so the
//! loom models can show that each check they drop is needed (DESIGN.md,
//! invariant 8). Nothing outside `tests/loom_*.rs` may call these.

use super::fast::{Checks, Gup};
use super::{GupError, GupFlags, NoFault, Taken};
use crate::guard::WalkGuard;
use crate::memmap::{MemoryMap, Pfn};
use crate::table::{PagingFormat, TableAccess, VirtAddr};

/// Which check a broken variant drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// No re-check of the leaf entry (nor of the parent).
    Recheck,
    /// Re-check the leaf entry but not the table entry above it.
    ParentRecheck,
    /// End the walk guard's read section before the get and the re-check.
    GuardAcrossGet,
    /// No unit-identity re-check: trust the lookup made before the get.
    UnitRecheck,
}

/// [`Gup::get_pages`] with one check dropped.
///
/// # Errors
///
/// As [`Gup::get_pages`].
pub fn get_pages<F, A, M, G>(
    gup: &Gup<'_, F, A, M>,
    dropped: Dropped,
    guard: &G,
    start: VirtAddr,
    len: u64,
    flags: GupFlags,
    out: &mut [Pfn],
) -> Result<Taken, GupError>
where
    F: PagingFormat,
    A: TableAccess + ?Sized,
    M: MemoryMap + ?Sized,
    G: WalkGuard + ?Sized,
{
    let mut checks = Checks::ALL;
    match dropped {
        Dropped::Recheck => {
            checks.leaf = false;
            checks.parent = false;
        }
        Dropped::ParentRecheck => checks.parent = false,
        Dropped::GuardAcrossGet => checks.guard_across_get = false,
        Dropped::UnitRecheck => checks.unit = false,
    }
    gup.run(guard, start, len, flags, out, &mut NoFault, checks)
}
