//! The table builder: maps and unmaps ranges in tables it owns.
//!
//! # Concurrency
//!
//! Writers are serialized by the caller: every mutating method takes `&mut self`
//! (a kernel wraps the builder of an address space in that address space's
//! lock). Walkers are lockless and run concurrently with it. For them:
//!
//! - a new table is zero-filled first and then published by a Release store of
//!   the entry pointing to it (the walker's Acquire load pairs with it);
//! - unmap clears leaves before it detaches any table, detaches a table by
//!   clearing the entry pointing to it, and only then hands the table to the
//!   [`Retire`] hook, which decides when the frame may be reused.
//!
//! The builder's own loads are Relaxed: it is the only writer, and a thread
//! always reads its own latest store to a location.

use core::marker::PhantomData;

use super::access::TableAccess;
use super::addr::{PhysAddr, VaRange, VirtAddr};
use super::entry::{Entry, EntryLoc, LeafEntry, MemType, Perms};
use super::error::{MapError, UnmapError, WalkError, WalkErrorKind};
use super::format::PagingFormat;
use super::pool::{FramePool, Retire};
use super::walk::{WalkItem, Walker, check_canonical, decode_checked, load_entry};
use crate::sync::{AtomicU64, Ordering};

/// One mapping to build: `len` bytes from `va` to `pa` in leaves of `leaf_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapRequest {
    /// The first virtual address (aligned to `leaf_size`).
    pub va: VirtAddr,
    /// The first physical address (aligned to `leaf_size`).
    pub pa: PhysAddr,
    /// The length in bytes (a multiple of `leaf_size`).
    pub len: u64,
    /// The leaf size: one of the format's page or block sizes.
    pub leaf_size: u64,
    /// The leaves' permissions.
    pub perms: Perms,
    /// The leaves' memory type.
    pub mem_type: MemType,
}

impl MapRequest {
    /// A read-only, memory-type-0 mapping; adjust `perms` and `mem_type` as
    /// needed.
    pub const fn new(va: VirtAddr, pa: PhysAddr, len: u64, leaf_size: u64) -> MapRequest {
        MapRequest {
            va,
            pa,
            len,
            leaf_size,
            perms: Perms::READ,
            mem_type: MemType(0),
        }
    }

    /// The same request with permissions `perms`.
    pub const fn with_perms(self, perms: Perms) -> MapRequest {
        MapRequest { perms, ..self }
    }

    /// The same request with memory type `mem_type`.
    pub const fn with_mem_type(self, mem_type: MemType) -> MapRequest {
        MapRequest { mem_type, ..self }
    }
}

/// What an unmap cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Unmapped {
    /// Leaf entries cleared.
    pub leaves: usize,
    /// Tables detached and handed to the retire hook.
    pub tables: usize,
    /// The sizes of the leaves cleared: what a TLB shootdown of the range must
    /// step by (one invalidation per leaf of the smallest size covers them
    /// all).
    pub sizes: LeafSizes,
}

/// A set of leaf sizes (powers of two): bit `k` stands for `2^k` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LeafSizes(u64);

impl LeafSizes {
    /// No size.
    pub const NONE: LeafSizes = LeafSizes(0);

    /// The set of `size` alone (rounded down to a power of two; 0 is no size).
    pub const fn of(size: u64) -> LeafSizes {
        if size == 0 {
            LeafSizes::NONE
        } else {
            LeafSizes(1 << (63 - size.leading_zeros()))
        }
    }

    /// This set and `other`.
    pub const fn union(self, other: LeafSizes) -> LeafSizes {
        LeafSizes(self.0 | other.0)
    }

    /// Whether a leaf of `size` bytes is in the set.
    pub const fn contains(self, size: u64) -> bool {
        size.is_power_of_two() && self.0 & size != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The smallest size in the set: the stride of a shootdown that must
    /// reach every cleared leaf.
    pub const fn smallest(self) -> Option<u64> {
        if self.0 == 0 {
            None
        } else {
            Some(1 << self.0.trailing_zeros())
        }
    }

    /// The sizes, smallest first.
    pub fn iter(self) -> impl Iterator<Item = u64> {
        (0..64)
            .map(|k| 1u64 << k)
            .filter(move |size| self.0 & size != 0)
    }
}

/// Builds and edits the page tables of one address space of format `F`, in
/// frames from a [`FramePool`], written through `A`; detached tables go to the
/// retire hook `R`.
///
/// See the [module docs](self) for what concurrent walkers may rely on.
pub struct TableBuilder<'a, F, A: ?Sized, R> {
    access: &'a A,
    pool: FramePool<'a>,
    retire: R,
    root: PhysAddr,
    format: PhantomData<fn() -> F>,
}

impl<F, A: ?Sized, R> core::fmt::Debug for TableBuilder<'_, F, A, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TableBuilder")
            .field("root", &self.root)
            .field("free_frames", &self.pool.free_count())
            .finish()
    }
}

/// The largest table of `F` at `first_level` or below, in entries.
fn largest_table<F: PagingFormat>(first_level: usize) -> usize {
    let geometry = F::GEOMETRY;
    (first_level..geometry.depth())
        .filter_map(|level| geometry.entries(level))
        .max()
        .unwrap_or(0)
}

impl<'a, F: PagingFormat, A: TableAccess + ?Sized, R: Retire> TableBuilder<'a, F, A, R> {
    /// A builder with an empty root table taken from `pool`.
    ///
    /// Every frame of the pool must be able to hold the format's largest table,
    /// the root included; for a format whose root is larger than the tables
    /// below it (aarch64 stage 2 with concatenated start tables) use
    /// [`with_root`](Self::with_root).
    ///
    /// # Errors
    ///
    /// [`MapError::RootLargerThanFrame`] if the format's root is larger than
    /// one frame of its page size (a pool frame would hold only part of it,
    /// and the frames after it, handed out later as tables, would alias the
    /// rest of the root), [`MapError::Access`] if a frame of the pool cannot
    /// hold a table of `F` through `access` (unreachable or misaligned),
    /// [`MapError::DuplicateFrame`] if the pool lists a frame twice,
    /// [`MapError::Encode`] if a frame's address cannot be put in a table entry
    /// (beyond the format's physical width, or misaligned for its granule), and
    /// [`MapError::PoolExhausted`] if the pool is empty.
    pub fn new(
        access: &'a A,
        mut pool: FramePool<'a>,
        retire: R,
    ) -> Result<TableBuilder<'a, F, A, R>, MapError> {
        // A frame is a table of the format's page size: `page_shift < 64`
        // (`Geometry::new` asserts it), so the shift is in range.
        let frame_entries = ((1u64 << F::GEOMETRY.page_shift()) / 8) as usize;
        let root_entries = F::GEOMETRY.entries(0).unwrap_or(0);
        if root_entries > frame_entries {
            return Err(MapError::RootLargerThanFrame {
                root_entries,
                frame_entries,
            });
        }
        check_pool::<F, A>(access, &mut pool, largest_table::<F>(0))?;
        let root = pool
            .take()
            .ok_or(MapError::PoolExhausted { needed: 1, free: 0 })?;
        Self::with_checked_root(access, root, pool, retire)
    }

    /// A builder whose root table is the caller's memory at `root`, zero-filled
    /// here; the tables below it come from `pool`.
    ///
    /// This is for a root larger than one pool frame, such as an aarch64 stage-2
    /// start level of several concatenated tables, which must be contiguous and
    /// aligned to its whole size. The builder never retires the root.
    ///
    /// # Errors
    ///
    /// [`MapError::MisalignedRoot`] if `root` is not aligned to the root
    /// table's size, [`MapError::RootInPool`] if a frame of the pool lies
    /// inside it, [`MapError::Access`] if the root's last entry or a frame of
    /// the pool (for the largest table below the root) is not reachable
    /// through `access`, [`MapError::DuplicateFrame`] if the pool lists a frame
    /// twice, and [`MapError::Encode`] if a pool frame's address cannot be put
    /// in a table entry.
    ///
    /// # Safety
    ///
    /// The memory of the whole root table at `root` is this builder's alone
    /// while it lives, as the pool's frames are the pool's (see
    /// [`FramePool::new`]): not another builder's root or table, and not used
    /// by anyone else. It is zero-filled here, and the walkers the builder
    /// hands out carry its retire hook's domain: a root that another builder
    /// also writes would be walked under a guard that does not hold that
    /// builder's tables back.
    pub unsafe fn with_root(
        access: &'a A,
        root: PhysAddr,
        mut pool: FramePool<'a>,
        retire: R,
    ) -> Result<TableBuilder<'a, F, A, R>, MapError> {
        let root_entries = F::GEOMETRY.entries(0).unwrap_or(0);
        // At most 2^MAX_INDEX_BITS entries of 8 bytes (`Geometry::new`): far
        // from overflowing, and a power of two after rounding.
        let size = ((root_entries as u64) * 8).next_power_of_two();
        if root.0 & (size - 1) != 0 {
            return Err(MapError::MisalignedRoot { root, size });
        }
        // `page_shift < 64` (`Geometry::new`).
        let frame_size = 1u64 << F::GEOMETRY.page_shift();
        if let Some(&frame) = pool.free_frames().iter().find(|frame| {
            // Overlap of [root, root + size) and [frame, frame + frame_size),
            // with inclusive ends so that nothing wraps.
            frame.0 <= root.0.saturating_add(size - 1)
                && root.0 <= frame.0.saturating_add(frame_size - 1)
        }) {
            return Err(MapError::RootInPool { frame });
        }
        // SAFETY: only a reachability check; nothing is stored.
        unsafe { access.entry(root, root_entries.saturating_sub(1)) }.map_err(MapError::Access)?;
        check_pool::<F, A>(access, &mut pool, largest_table::<F>(1))?;
        Self::with_checked_root(access, root, pool, retire)
    }

    /// Zero-fills the root and builds the builder.
    fn with_checked_root(
        access: &'a A,
        root: PhysAddr,
        pool: FramePool<'a>,
        retire: R,
    ) -> Result<TableBuilder<'a, F, A, R>, MapError> {
        let builder = TableBuilder {
            access,
            pool,
            retire,
            root,
            format: PhantomData,
        };
        // The root is not published here: whoever hands it to a walker (a CR3
        // write, a thread spawn, a lock) orders this fill before the walk.
        builder.zero_fill(root, 0)?;
        Ok(builder)
    }

    /// The root table's physical address.
    #[inline]
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// A walker of these tables, of the retire hook's domain: GUP-fast walks
    /// it only under a guard that holds back the tables this builder retires.
    #[inline]
    pub fn walker(&self) -> Walker<'a, F, A, R::Domain> {
        // SAFETY: every table reachable from this root is detached by this
        // builder and retired through its hook `R`, of domain `R::Domain`.
        unsafe { Walker::new_in(self.access, self.root) }
    }

    /// The frame pool.
    #[inline]
    pub fn pool(&self) -> &FramePool<'a> {
        &self.pool
    }

    /// The retire hook (for example to advance a deferred reclaimer's epoch).
    #[inline]
    pub fn retire_hook(&mut self) -> &mut R {
        &mut self.retire
    }

    /// Asks the retire hook to give back every table that can be reused.
    ///
    /// # Errors
    ///
    /// As [`Retire::reclaim`].
    pub fn reclaim(&mut self) -> Result<(), super::error::PoolFull> {
        self.retire.reclaim(&mut self.pool)
    }

    /// Maps `req.len` bytes from `req.va` to `req.pa` with leaves of
    /// `req.leaf_size`, creating the tables it needs. All or nothing: every
    /// check is made before the first write.
    ///
    /// # Errors
    ///
    /// - [`MapError::Range`]: the virtual range is empty, wraps, or is not
    ///   canonical;
    /// - [`MapError::LeafSizeNotAllowed`]: the format has no leaves of that size;
    /// - [`MapError::MisalignedVa`], [`MapError::MisalignedPa`],
    ///   [`MapError::MisalignedLen`]: not aligned to the leaf size;
    /// - [`MapError::PaWraps`]: the physical range runs past `u64::MAX`;
    /// - [`MapError::Encode`]: the format cannot encode the leaves (address too
    ///   large, permissions or memory type it cannot express);
    /// - [`MapError::Overlap`]: something is mapped in the range already;
    /// - [`MapError::PoolExhausted`]: too few frames for the new tables, even
    ///   after [`Retire::reclaim`];
    /// - [`MapError::Walk`]: the existing tables are malformed;
    /// - [`MapError::Reclaim`]: the retire hook failed to give frames back.
    ///
    /// # Safety
    ///
    /// The caller owns the physical pages `req.pa .. req.pa + req.len` for as
    /// long as they stay mapped here, and unmaps them before they are freed or
    /// handed to another owner (as the `x86_64` crate's `map_to` asks): a page
    /// mapped behind a truncate's unmap is freed still mapped, and GUP-fast then
    /// pins its next owner's memory for DMA through this mapping. A truncate
    /// that has marked the pages must not see them mapped again before it
    /// frees them. Two kinds of mapping hold no page and need no ownership: a
    /// kernel's direct map of all RAM (GUP-fast does not walk it; through it
    /// only a page's owner touches the page), and a mapping nothing reaches a
    /// page through (no GUP-fast walk, no CPU access: an MMU translation
    /// probe).
    pub unsafe fn map(&mut self, req: &MapRequest) -> Result<(), MapError> {
        let geometry = F::GEOMETRY;
        let range = VaRange::new(req.va, req.len).map_err(MapError::Range)?;
        check_canonical::<F>(range).map_err(MapError::Range)?;
        let leaf_level =
            geometry
                .leaf_level(req.leaf_size)
                .ok_or(MapError::LeafSizeNotAllowed {
                    size: req.leaf_size,
                })?;
        // `leaf_size` is a leaf size of the format (`leaf_level` found it), so
        // a power of two of at least one page: the `- 1` does not wrap.
        let offset_mask = req.leaf_size - 1;
        if req.va.0 & offset_mask != 0 {
            return Err(MapError::MisalignedVa { va: req.va });
        }
        if req.pa.0 & offset_mask != 0 {
            return Err(MapError::MisalignedPa { pa: req.pa });
        }
        if req.len & offset_mask != 0 {
            return Err(MapError::MisalignedLen { len: req.len });
        }
        // `len >= 1` (`VaRange::new` refused 0); checked, since the physical
        // range was not checked yet. `len - 1`, not `len`: a range ending at
        // the last byte (`pa_last == u64::MAX`) is not a wrap.
        let pa_last = req.pa.0.checked_add(req.len - 1).ok_or(MapError::PaWraps)?;
        // Contract 5 of `PagingFormat`: the first and the last leaf bound what the
        // encoder accepts.
        let leaf_at = |pa| LeafEntry {
            pa: PhysAddr(pa),
            perms: req.perms,
            mem_type: req.mem_type,
        };
        F::encode_leaf(&leaf_at(req.pa.0), leaf_level).map_err(MapError::Encode)?;
        F::encode_leaf(&leaf_at(pa_last & !offset_mask), leaf_level).map_err(MapError::Encode)?;

        let needed = self.survey(self.root, 0, range, leaf_level)?;
        if self.pool.free_count() < needed {
            self.retire
                .reclaim(&mut self.pool)
                .map_err(MapError::Reclaim)?;
        }
        if self.pool.free_count() < needed {
            return Err(MapError::PoolExhausted {
                needed,
                free: self.pool.free_count(),
            });
        }

        for i in 0..req.len / req.leaf_size {
            // No overflow: `i < len / leaf_size` and `len` is a multiple of
            // `leaf_size`, so `i * leaf_size <= len - leaf_size < len`, and
            // `va + (len - 1)` (`range.last()`) and `pa + (len - 1)`
            // (`pa_last`) were checked above; the offsets stay below `len`.
            let offset = i * req.leaf_size;
            let va = VirtAddr(req.va.0 + offset);
            let leaf = leaf_at(req.pa.0 + offset);
            let mut table = self.root;
            for level in 0..leaf_level {
                let word = self.word(table, va, level)?;
                // Relaxed: the builder is the only writer (see the module docs).
                let raw = word.load(Ordering::Relaxed);
                let loc = EntryLoc {
                    table,
                    index: F::GEOMETRY.index(va, level),
                    level,
                };
                table = match decode_checked::<F>(raw, loc, va, Perms::all()) {
                    Ok(Entry::Table(next)) => next.table,
                    Ok(Entry::Absent) => self.install_table(word, level)?,
                    // The survey found no leaf and no malformed entry here.
                    Ok(Entry::Leaf(_)) | Err(_) => return Err(MapError::Overlap { va }),
                };
            }
            let word = self.word(table, va, leaf_level)?;
            let raw = F::encode_leaf(&leaf, leaf_level).map_err(MapError::Encode)?;
            // Release: a walker that Acquire-loads this entry (a huge leaf at a
            // level that also holds tables) sees what the caller wrote before
            // mapping. At leaf-only levels walkers load Relaxed and order page
            // contents through the page's metadata instead.
            word.store(raw, Ordering::Release);
        }
        Ok(())
    }

    /// Unmaps every leaf in `len` bytes from `va` by clearing its entry, then
    /// detaches and retires the tables that became empty (never the root). Holes
    /// in the range are fine; a leaf only partly inside it is refused.
    ///
    /// Each leaf is cleared with one atomic store before any table above it is
    /// detached; a table is detached by clearing the entry pointing to it before
    /// it is handed to the retire hook. TLB shootdown is the caller's (after
    /// this returns, before the retired tables are reused).
    ///
    /// # Errors
    ///
    /// [`UnmapError::Range`] and [`UnmapError::SplitsLeaf`] are found before
    /// anything is changed (only the leaves at the two ends of the range can be
    /// partly inside it, so only they are looked at first); a malformed or
    /// unreachable entry met while clearing stops with [`UnmapError::Walk`], the
    /// leaves before it cleared; [`UnmapError::Retire`] when the retire hook
    /// fails (see there).
    pub fn unmap(&mut self, va: VirtAddr, len: u64) -> Result<Unmapped, UnmapError> {
        let range = VaRange::new(va, len).map_err(UnmapError::Range)?;
        let walker = self.walker();
        check_canonical::<F>(range).map_err(UnmapError::Range)?;
        for end in [range.start(), range.last()] {
            if let WalkItem::Leaf(leaf) = walker.translate(end).map_err(UnmapError::Walk)? {
                // A leaf's first address is aligned to its size (a power of
                // two), so its last is `leaf_va | (size - 1)`: no carry, even
                // for the last leaf of the address space (`u64::MAX`).
                let leaf_last = VirtAddr(leaf.leaf_va.0 | (leaf.size - 1));
                if !range.contains(leaf.leaf_va) || !range.contains(leaf_last) {
                    return Err(UnmapError::SplitsLeaf {
                        leaf_va: leaf.leaf_va,
                        size: leaf.size,
                    });
                }
            }
        }
        let mut done = Unmapped::default();
        self.clear(self.root, 0, range, &mut done)?;
        Ok(done)
    }

    /// The word of `va`'s entry at `level` in `table`.
    fn word(&self, table: PhysAddr, va: VirtAddr, level: usize) -> Result<&'a AtomicU64, MapError> {
        let loc = EntryLoc {
            table,
            index: F::GEOMETRY.index(va, level),
            level,
        };
        // SAFETY: the builder owns these tables; it stores what keeps them
        // consistent (its own map and unmap).
        unsafe { self.access.entry(table, loc.index) }.map_err(|error| {
            MapError::Walk(WalkError {
                va,
                kind: WalkErrorKind::Access { loc, error },
            })
        })
    }

    /// Zero-fills `table`, a table at `level`.
    fn zero_fill(&self, table: PhysAddr, level: usize) -> Result<(), MapError> {
        for index in 0..F::GEOMETRY.entries(level).unwrap_or(0) {
            // Relaxed: the table is not reachable yet; the Release store that
            // publishes it orders these stores before any walker's read.
            // SAFETY: the builder zero-fills a table it owns and has not
            // published.
            unsafe { self.access.entry(table, index) }
                .map_err(MapError::Access)?
                .store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Takes a frame, zero-fills it as a table at `level + 1` and publishes it in
    /// `word`, an entry at `level`.
    fn install_table(&mut self, word: &AtomicU64, level: usize) -> Result<PhysAddr, MapError> {
        let table = self
            .pool
            .take()
            .ok_or(MapError::PoolExhausted { needed: 1, free: 0 })?;
        let raw = F::encode_table(table, level).map_err(MapError::Encode);
        let filled = raw.and_then(|raw| self.zero_fill(table, level + 1).map(|()| raw));
        match filled {
            Ok(raw) => {
                // Release: publishes the zero-fill above. Pairs with the walker's
                // Acquire load of this entry (`load_entry`), so a walker that sees
                // the new table sees it empty, never the frame's old contents.
                word.store(raw, Ordering::Release);
                Ok(table)
            }
            Err(e) => {
                // Never published, so it can go straight back.
                // SAFETY: taken from this pool just above and never published:
                // nothing else can have reached it.
                unsafe { self.pool.give_back(table) }.map_err(MapError::Reclaim)?;
                Err(e)
            }
        }
    }

    /// Counts the tables a mapping of `range` with leaves at `leaf_level` needs
    /// below the table at `level`, or finds what is in the way.
    fn survey(
        &self,
        table: PhysAddr,
        level: usize,
        range: VaRange,
        leaf_level: usize,
    ) -> Result<usize, MapError> {
        let geometry = F::GEOMETRY;
        let mut needed = 0;
        for (va, span) in entry_spans::<F>(range, level) {
            let loc = EntryLoc {
                table,
                index: geometry.index(va, level),
                level,
            };
            let fail = |kind| MapError::Walk(WalkError { va, kind });
            let raw = load_entry::<F, A>(self.access, loc)
                .map_err(|error| fail(WalkErrorKind::Access { loc, error }))?;
            match decode_checked::<F>(raw, loc, va, Perms::all()) {
                // Saturating: a mapping of 4 KiB leaves over a large range of a
                // 5-level format needs up to 2^36 tables, more than a 32-bit
                // `usize` holds. A saturated count is more than any pool
                // holds, so `map` refuses with `PoolExhausted`, as it should.
                Ok(Entry::Absent) => {
                    needed = (level + 1..=leaf_level)
                        .map(|below| tables_spanned::<F>(span, below))
                        .fold(needed, usize::saturating_add);
                }
                Ok(Entry::Table(next)) if level < leaf_level => {
                    needed = needed.saturating_add(self.survey(
                        next.table,
                        level + 1,
                        span,
                        leaf_level,
                    )?);
                }
                Ok(Entry::Table(_) | Entry::Leaf(_)) => return Err(MapError::Overlap { va }),
                Err(error) => return Err(MapError::Walk(error)),
            }
        }
        Ok(needed)
    }

    /// Clears the leaves of `range` under the table at `level`, detaching and
    /// retiring the tables below that become empty.
    fn clear(
        &mut self,
        table: PhysAddr,
        level: usize,
        range: VaRange,
        done: &mut Unmapped,
    ) -> Result<(), UnmapError> {
        let geometry = F::GEOMETRY;
        if !geometry.holds_tables(level) {
            // A level of leaves only: its entries in one call where the table
            // access holds them consecutively, cleared in a tight pass.
            let first = geometry.index(range.start(), level);
            // The range lies inside this table's span (the caller's entry
            // span, or the root's), so its last index is at or after its first.
            let count = geometry.index(range.last(), level) - first + 1;
            // SAFETY: the builder owns these tables; it clears entries of its
            // own mappings (`clear_leaves` stores zero to leaves only).
            if let Some(words) = unsafe { self.access.entries(table, first, count) } {
                return Self::clear_leaves(words, table, first, level, range, done);
            }
        }
        for (va, span) in entry_spans::<F>(range, level) {
            let loc = EntryLoc {
                table,
                index: geometry.index(va, level),
                level,
            };
            let fail = |kind| UnmapError::Walk(WalkError { va, kind });
            // SAFETY: the builder owns these tables; it clears entries of its
            // own mappings and retires what it detaches.
            let word = unsafe { self.access.entry(table, loc.index) }
                .map_err(|error| fail(WalkErrorKind::Access { loc, error }))?;
            // Relaxed: the builder is the only writer.
            let raw = word.load(Ordering::Relaxed);
            match decode_checked::<F>(raw, loc, va, Perms::all()) {
                Ok(Entry::Absent) => {}
                Ok(Entry::Leaf(_)) => {
                    // Relaxed: a cleared entry publishes nothing. A walker that
                    // loaded the old value is caught by GUP-fast's re-check, which
                    // is ordered after this store by the page metadata's Release
                    // free and the getter's Acquire get.
                    word.store(0, Ordering::Relaxed);
                    // At most one count per distinct entry word (a cleared
                    // entry decodes absent and is not counted again), and
                    // distinct 8-byte words in one address space number fewer
                    // than `usize::MAX`.
                    done.leaves += 1;
                    // `shift_at(level) < 64` (`Geometry::new` asserts it).
                    done.sizes = done
                        .sizes
                        .union(LeafSizes::of(1 << geometry.shift_at(level)));
                }
                Ok(Entry::Table(next)) => {
                    self.clear(next.table, level + 1, span, done)?;
                    // A table whose whole span was in the range has had every
                    // entry cleared (or detached) just above: no need to scan it.
                    let whole = span.size() == 1u64 << geometry.shift_at(level);
                    if whole || self.is_empty(next.table, level + 1, va)? {
                        // Relaxed: detaching publishes nothing. Keeping walkers
                        // that loaded the old value away from the table's reuse is
                        // the retire hook's grace period, which starts after this
                        // store.
                        word.store(0, Ordering::Relaxed);
                        // SAFETY: `next.table` is a table of this builder,
                        // detached just above after every entry in it was
                        // cleared; the hook gives it to this builder's pool.
                        unsafe { self.retire.retire(next.table, &mut self.pool) }
                            .map_err(UnmapError::Retire)?;
                        // As `leaves`: one count per detached table entry.
                        done.tables += 1;
                    }
                }
                Err(error) => return Err(UnmapError::Walk(error)),
            }
        }
        Ok(())
    }

    /// [`clear`](Self::clear) at a level of leaves only, over `words`, the
    /// entries `first ..` of `table` that `range` touches: each leaf is cleared
    /// as `clear` clears it, an absent entry is skipped, a malformed one stops
    /// the pass with the leaves before it cleared.
    fn clear_leaves(
        words: &[AtomicU64],
        table: PhysAddr,
        first: usize,
        level: usize,
        range: VaRange,
        done: &mut Unmapped,
    ) -> Result<(), UnmapError> {
        // `shift < va_bits < 64` (`Geometry::new`).
        let shift = F::GEOMETRY.shift_at(level);
        let mut cleared = 0;
        let mut result = Ok(());
        for (i, word) in words.iter().enumerate() {
            // Relaxed: the builder is the only writer.
            let raw = word.load(Ordering::Relaxed);
            if raw == 0 {
                // All-zero is absent in every format (format contract).
                continue;
            }
            let loc = EntryLoc {
                table,
                index: first + i,
                level,
            };
            // The first address of `range` in entry `i`: the range's start for
            // the first, the entry's own start after it (inside the range, so
            // no overflow).
            let va = if i == 0 {
                range.start()
            } else {
                VirtAddr(((range.start().0 >> shift) + i as u64) << shift)
            };
            match decode_checked::<F>(raw, loc, va, Perms::all()) {
                Ok(Entry::Absent) => {}
                Ok(Entry::Leaf(_)) => {
                    // Relaxed, as in `clear`: a cleared entry publishes nothing;
                    // a walker that loaded the old value is caught by GUP-fast's
                    // re-check, ordered after this store by the page
                    // metadata's Release free and the getter's Acquire get.
                    word.store(0, Ordering::Relaxed);
                    cleared += 1;
                }
                // A table pointer at a level of leaves only: `decode_checked`
                // refuses it, so this arm is never taken; stop rather than trust
                // that, as on an error.
                Ok(Entry::Table(_)) => {
                    result = Err(UnmapError::Walk(WalkError {
                        va,
                        kind: WalkErrorKind::FormatContract { loc, raw },
                    }));
                    break;
                }
                Err(error) => {
                    result = Err(UnmapError::Walk(error));
                    break;
                }
            }
        }
        // As in `clear`: one count per distinct entry word cleared.
        done.leaves += cleared;
        if cleared != 0 {
            done.sizes = done.sizes.union(LeafSizes::of(1 << shift));
        }
        result
    }

    /// Whether every entry of the table at `level` is zero; `va` is an address
    /// the table translates, for the error.
    fn is_empty(&self, table: PhysAddr, level: usize, va: VirtAddr) -> Result<bool, UnmapError> {
        for index in 0..F::GEOMETRY.entries(level).unwrap_or(0) {
            let loc = EntryLoc {
                table,
                index,
                level,
            };
            // SAFETY: only loaded (is the table empty?).
            let word = unsafe { self.access.entry(table, index) }.map_err(|error| {
                UnmapError::Walk(WalkError {
                    va,
                    kind: WalkErrorKind::Access { loc, error },
                })
            })?;
            // Relaxed: the builder is the only writer.
            if word.load(Ordering::Relaxed) != 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Checks that every free frame of `pool` can hold a table of `entries` entries
/// through `access`, and can be put in a table entry at every level.
fn check_pool<F: PagingFormat, A: TableAccess + ?Sized>(
    access: &A,
    pool: &mut FramePool<'_>,
    entries: usize,
) -> Result<(), MapError> {
    if let Some(frame) = pool.duplicate() {
        return Err(MapError::DuplicateFrame { frame });
    }
    let last_index = entries.saturating_sub(1);
    for &frame in pool.free_frames() {
        // SAFETY: only a reachability check; nothing is stored.
        unsafe { access.entry(frame, last_index) }.map_err(MapError::Access)?;
        for level in 0..F::GEOMETRY.depth() {
            if F::GEOMETRY.holds_tables(level) {
                F::encode_table(frame, level).map_err(MapError::Encode)?;
            }
        }
    }
    Ok(())
}

/// The entries at `level` that `range` touches: for each, the first address of
/// `range` in it and the part of `range` it covers.
fn entry_spans<F: PagingFormat>(
    range: VaRange,
    level: usize,
) -> impl Iterator<Item = (VirtAddr, VaRange)> {
    // `shift < va_bits < 64` (`Geometry::new`).
    let shift = F::GEOMETRY.shift_at(level);
    let last = range.last().0;
    let mut next = Some(range.start().0);
    core::iter::from_fn(move || {
        let va = next?;
        // A mask, not `first + size - 1`: the last entry of the upper half
        // ends at `u64::MAX`.
        let span_last = va | ((1u64 << shift) - 1);
        let sub_last = if span_last < last { span_last } else { last };
        next = if sub_last < last {
            // `sub_last < last <= u64::MAX`: the successor exists.
            Some(sub_last + 1)
        } else {
            None
        };
        Some((
            VirtAddr(va),
            VaRange::spanning(VirtAddr(va), VirtAddr(sub_last)),
        ))
    })
}

/// The number of tables at `level` that `range` touches.
fn tables_spanned<F: PagingFormat>(range: VaRange, level: usize) -> usize {
    // A table at `level` translates one entry span of the level above
    // (`level >= 1`: callers ask for levels below the one they surveyed).
    let shift = F::GEOMETRY.shift_at(level - 1);
    // `start <= last`, so the difference does not wrap; it is below
    // `2^(64 - shift)` with `shift >= 1` (a level above another spans at
    // least that level's `index_bits >= 1` bits), so the `+ 1` does not
    // overflow. On a 32-bit target the count may not fit a `usize`: saturate
    // (see `survey`).
    let spanned = (range.last().0 >> shift) - (range.start().0 >> shift) + 1;
    usize::try_from(spanned).unwrap_or(usize::MAX)
}
