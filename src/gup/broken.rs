//! Deliberately broken GUP-fast variants, compiled only under `cfg(loom)` (for
//! the loom models) or with the `broken-twins` feature (for the stress runs
//! and test kernels that boot broken twins), so that each can show that the
//! check it drops is needed (DESIGN.md, invariant 8). They are separate
//! functions a build must call by name: nothing here changes
//! [`Gup::get_pages`], whose checks are the constants of `AllChecks`.

use super::fast::{AllChecks, Checks, Gup};
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
pub fn get_pages<F, A, M, D, G>(
    gup: &Gup<'_, F, A, M, D>,
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
    G: WalkGuard<Domain = D> + ?Sized,
{
    match dropped {
        Dropped::Recheck => gup.run::<_, _, NoRecheck>(guard, start, len, flags, out, &mut NoFault),
        Dropped::ParentRecheck => {
            gup.run::<_, _, NoParentRecheck>(guard, start, len, flags, out, &mut NoFault)
        }
        Dropped::GuardAcrossGet => {
            gup.run::<_, _, GuardEndsBeforeGet>(guard, start, len, flags, out, &mut NoFault)
        }
        Dropped::UnitRecheck => {
            gup.run::<_, _, NoUnitRecheck>(guard, start, len, flags, out, &mut NoFault)
        }
    }
}

/// No re-check of the leaf entry nor of the parent.
enum NoRecheck {}

impl Checks for NoRecheck {
    const LEAF: bool = false;
    const PARENT: bool = false;
    const GUARD_ACROSS_GET: bool = AllChecks::GUARD_ACROSS_GET;
    const UNIT: bool = AllChecks::UNIT;
}

/// The leaf entry is re-checked, the parent is not.
enum NoParentRecheck {}

impl Checks for NoParentRecheck {
    const LEAF: bool = AllChecks::LEAF;
    const PARENT: bool = false;
    const GUARD_ACROSS_GET: bool = AllChecks::GUARD_ACROSS_GET;
    const UNIT: bool = AllChecks::UNIT;
}

/// The read section ends before the gets.
enum GuardEndsBeforeGet {}

impl Checks for GuardEndsBeforeGet {
    const LEAF: bool = AllChecks::LEAF;
    const PARENT: bool = AllChecks::PARENT;
    const GUARD_ACROSS_GET: bool = false;
    const UNIT: bool = AllChecks::UNIT;
}

/// No unit-identity re-check.
enum NoUnitRecheck {}

impl Checks for NoUnitRecheck {
    const LEAF: bool = AllChecks::LEAF;
    const PARENT: bool = AllChecks::PARENT;
    const GUARD_ACROSS_GET: bool = AllChecks::GUARD_ACROSS_GET;
    const UNIT: bool = false;
}
