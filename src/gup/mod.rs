//! GUP-fast ("get user pages fast"): take a reference or a DMA pin on every page
//! mapped in a virtual range, without locks, never racing a concurrent unmap.
//!
//! ```text
//! guard.enter()                      read section: tables stay tables
//! for each leaf of the range:
//!     entry  = load(leaf entry)       (one atomic load, by the walk)
//!     check permissions               (read; write; user)
//!     unit   = memmap.unit(pfn)       (the counting meta: the allocation unit's head)
//!     meta.get(n)                     (Acquire RMW; one per unit the leaf covers)
//!     re-check: memmap.unit(pfn) still names the same head and meta?
//!               (skipped when the map's layout version did not move)
//!               leaf entry and the table entry above it unchanged?
//!         no  -> undo the gets on the metas got, stop (Changed)
//! ```
//!
//! Consecutive leaves of one last-level table (4 KiB pages) go in batches of
//! up to 32, in three passes: load and check every entry of the batch; make
//! the gets; then re-read the table entry above once and every leaf entry once.
//! Each re-read still follows the get it validates, so the argument below holds
//! leaf by leaf. A changed table entry undoes the whole batch; a changed leaf
//! undoes it and the batch's later leaves (the earlier ones were re-checked
//! after their gets and stay taken). The batch's words and raw values live on
//! the stack (3 × 8 bytes per leaf).
//!
//! A batch asks for its entries' words once, where the table access holds a
//! table's words consecutively ([`TableAccess::entries`]: a direct or identity
//! map), and for its units once per run of single-page units, where the memory
//! map keeps their metas in an array ([`MemoryMap::single_units`]); otherwise
//! page by page. Either way each answer is the one the per-page call gives, and
//! the re-checks are the same. Issue 20 measured where the rest of the time
//! goes (BENCHMARKS.md): the gets' locked RMWs are about the floor's; the three
//! passes themselves, the decode and permission check and the re-check's loads
//! make the difference, and a single pass that gets each leaf as soon as it is
//! loaded measured slower.
//!
//! [`TableAccess::entries`]: crate::table::TableAccess::entries
//! [`MemoryMap::single_units`]: crate::memmap::MemoryMap::single_units
//!
//! # Why the re-check is sound without a fence
//!
//! A page is freed only after it was unmapped: its leaf (or the entry pointing
//! to its table) was changed, then the page's word went to `FREE` by a Release
//! compare-exchange, and was allocated again by another Release one. The get is
//! an Acquire RMW on the same word. If the get lands after the free in the
//! word's modification order, it reads from the free's release sequence (every
//! later change of the word is an RMW), so the unmap happens before the get and
//! the re-check's loads see the changed entry. If the get lands before the free,
//! the free sees the reference and fails. A plain store to the word would break
//! the release sequence; `meta` never makes one.
//!
//! # Unit identity (DESIGN.md invariant 7)
//!
//! The entry re-check proves the page is still mapped where the walk saw it;
//! it does not prove the page is still counted where the walk counted it. The
//! memory map may split or merge a unit while its head is free, so between the
//! lookup of PFN P's unit (head H) and the get on H's meta, H may have been
//! freed, split off from P and allocated again: the get succeeds, and P may
//! even be mapped again by the same raw entry. So after its gets the walk asks
//! the map again and requires, for every get, the same head, the same meta (by
//! address) and a unit that still holds the pages it counted there (Linux's
//! `page_folio(page) == folio` in `try_grab_folio`). Once a get holds H the
//! answer is stable, since H cannot change while it is not idle. Every undo
//! (a refusal, a failed re-check) releases the meta that was got, recorded at
//! the get, never a fresh lookup's: after a split that would be another
//! owner's count. A map that keeps a layout version
//! ([`MemoryMap::layout_version`](crate::memmap::MemoryMap::layout_version))
//! lets a batch skip the second lookups when no unit changed during it.
//!
//! # What the kernel's unmap must do
//!
//! Before a data page mapped through a table is freed, its leaf entry **or the
//! entry pointing to the leaf's table** must have changed (cleared, or replaced
//! by a huge leaf as when Linux collapses a table). Detaching a whole subtree
//! higher up while leaving the inner entries intact is not enough: the walk
//! re-checks the leaf and its parent, not the whole path.
//!
//! # Huge leaves and allocation units
//!
//! The count of a base page lives on its allocation unit's head, which the
//! memory map names ([`MemoryMap::unit`](crate::memmap::MemoryMap::unit)); the
//! leaf's size plays no part. A 2 MiB leaf mapping a 2 MiB unit costs one RMW; a
//! 2 MiB leaf over 4 KiB units costs 512; 4 KiB leaves over a 2 MiB unit cost one
//! each, on the same head. A leaf over many units is taken in chunks of up to
//! 32 gets, each chunk re-checked after its gets. [`release`] and
//! [`release_run`] release by any grouping.

mod fast;
mod fault;
mod flags;
mod held;
mod outcome;
mod release;

#[cfg(any(loom, feature = "broken-twins"))]
pub mod broken;

pub use fast::Gup;
pub use fault::{FaultHandler, NoFault};
pub use flags::GupFlags;
pub use held::HeldPages;
pub use outcome::{GupError, ReleaseError, ReleaseErrorKind, Stop, Taken};
pub use release::{release, release_run};
