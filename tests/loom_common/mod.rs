//! Shared by the loom models: toy-format page tables made of loom atomics, whose
//! "freed" state is a `loom::cell::UnsafeCell`, so loom reports any walk access
//! not ordered after a free.
// Each model file uses the part it needs.
#![allow(dead_code)]

use loom::cell::UnsafeCell;
use pagepin::memmap::Pfn;
use pagepin::sync::{AtomicU64, Ordering};
use pagepin::table::{
    AccessError, LeafEntry, MemType, PagingFormat, Perms, PhysAddr, TableAccess, Toy,
};

/// Physical address of table `i`.
pub const fn table_pa(i: usize) -> PhysAddr {
    PhysAddr(((i as u64) + 1) << 12)
}

/// The first data page's PFN (PA 1 MiB).
pub const DATA_PFN: u64 = 0x100;
/// Data pages P and Q.
pub const P: Pfn = Pfn(DATA_PFN);
pub const Q: Pfn = Pfn(DATA_PFN + 1);

/// One toy table (4 entries) and whether it has been freed.
pub struct Table {
    entries: [AtomicU64; 4],
    freed: UnsafeCell<bool>,
}

/// Three toy tables at physical addresses 0x1000, 0x2000, 0x3000.
pub struct Tables {
    tables: [Table; 3],
}

impl Tables {
    pub fn new() -> Tables {
        Tables {
            tables: core::array::from_fn(|_| Table {
                entries: core::array::from_fn(|_| AtomicU64::new(0)),
                freed: UnsafeCell::new(false),
            }),
        }
    }

    pub fn table(&self, i: usize) -> &Table {
        &self.tables[i]
    }

    pub fn set(&self, table: usize, index: usize, raw: u64) {
        // Release: publishes the table this entry may point to (its entries were
        // written before), as a kernel's page-table writer does.
        self.tables[table].entries[index].store(raw, Ordering::Release);
    }

    /// Frees table `i`: from now on nobody may touch it.
    pub fn free(&self, i: usize) {
        // SAFETY: loom checks that this write is ordered with every other access
        // to the cell; that is the property under test.
        self.tables[i]
            .freed
            .with_mut(|freed| unsafe { *freed = true });
    }
}

// SAFETY: (1) `entry` maps each in-range (table, index) to one fixed word of
// `self.tables`; (2) distinct pairs are distinct words; (3) the words are atomics.
unsafe impl TableAccess for Tables {
    unsafe fn entry(&self, table: PhysAddr, index: usize) -> Result<&AtomicU64, AccessError> {
        let unreachable = AccessError::Unreachable { table, index };
        let i = (table.0 >> 12).checked_sub(1).ok_or(unreachable)? as usize;
        if table.0 & 0xfff != 0 || i >= self.tables.len() || index >= 4 {
            return Err(unreachable);
        }
        let t = &self.tables[i];
        t.check_alive();
        Ok(&t.entries[index])
    }

    /// A run of one table's words, as a direct map gives them (contract point
    /// 5: word `i` is the one `entry(table, index + i)` returns), so that the
    /// models walk GUP-fast's batch path; resolving it reads the table.
    unsafe fn entries(&self, table: PhysAddr, index: usize, n: usize) -> Option<&[AtomicU64]> {
        // SAFETY: the caller's promise is `entries`'s, which is `entry`'s.
        unsafe { self.entry(table, index) }.ok()?;
        let i = (table.0 >> 12).checked_sub(1)? as usize;
        self.tables[i].entries.get(index..index.checked_add(n)?)
    }

    /// Every load of an entry word, including GUP-fast's re-check of words it
    /// resolved before the get, checks the table is alive, so the model sees
    /// the loads the real path makes.
    fn load(&self, word: &AtomicU64, order: Ordering) -> u64 {
        if let Some(t) = self
            .tables
            .iter()
            .find(|t| t.entries.iter().any(|e| core::ptr::eq(e, word)))
        {
            t.check_alive();
        }
        // The caller's ordering (contract point 4 of `TableAccess`).
        word.load(order)
    }
}

impl Table {
    /// The walk is about to read this table: it must not have been freed. A
    /// read ordered after the free fails the assertion below; a read not
    /// ordered with the free at all is reported by loom itself, as "Causality
    /// violation: Concurrent read and write accesses" (`loom::rt::cell`).
    fn check_alive(&self) {
        // SAFETY: loom checks this read against the free's write (the property
        // under test).
        let freed = self.freed.with(|freed| unsafe { *freed });
        assert!(!freed, "invariant 6 (a walk read a freed table page)");
    }
}

pub fn table_entry(to: usize) -> u64 {
    Toy::encode_table(table_pa(to), 0).unwrap()
}

pub fn leaf_entry(pfn: Pfn) -> u64 {
    Toy::encode_leaf(
        &LeafEntry {
            pa: PhysAddr(pfn.0 << 12),
            perms: Perms::READ | Perms::WRITE,
            mem_type: MemType(0),
        },
        1,
    )
    .unwrap()
}
