//! TLB shootdown: `invlpg` here, then an IPI that every other online CPU
//! acknowledges (after invalidating the same range) before [`flush`] returns.
//!
//! Only CPU 0 (the truncating CPU, which owns the table builder) initiates, one
//! shootdown at a time, so the range words below are never overwritten while a
//! handler may still read them.
//!
//! The acknowledgement is also what makes the interrupts-off walk guard sound
//! (see `tables::IrqOffWalk`): a CPU inside a walk has interrupts off and
//! cannot acknowledge until its walk ends, so a shootdown that *started after*
//! a table was detached has *completed* only when every walk that could have
//! loaded the old entry has ended. `tables::IpiRetire` reuses a table only then.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use pagepin::table::VaRange;

use crate::{apic, cpu, idt};

/// CPUs the kernel can run.
pub const MAX_CPUS: usize = 8;

/// Shootdowns started (the generation of the latest).
static STARTED: AtomicU64 = AtomicU64::new(0);
/// Shootdowns every online CPU acknowledged.
static COMPLETED: AtomicU64 = AtomicU64::new(0);
/// Per CPU: the generation it last acknowledged.
static ACKED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The range of the shootdown in progress.
static RANGE_START: AtomicU64 = AtomicU64::new(0);
static RANGE_LEN: AtomicU64 = AtomicU64::new(0);
/// The bytes between two `invlpg` of the range being shot down (the smallest
/// leaf the unmap cleared).
static RANGE_STEP: AtomicU64 = AtomicU64::new(4096);
/// CPUs that take part (CPU 0 plus the APs that checked in), numbered 0..n.
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// IPIs handled, all CPUs.
static HANDLED: AtomicU64 = AtomicU64::new(0);

/// Counts an AP in (it must have its IDT loaded and APIC enabled).
pub fn set_online(cpus: usize) {
    // Release: an initiator that Acquire-loads the count waits for these CPUs.
    ONLINE.store(cpus, Ordering::Release);
}

/// The generation the next shootdown will have.
pub fn next() -> u64 {
    // Relaxed: only CPU 0 starts shootdowns and reads this, in program order.
    STARTED.load(Ordering::Relaxed) + 1
}

/// The latest generation every online CPU acknowledged.
pub fn completed() -> u64 {
    // Acquire: pairs with the Release store in `flush`, itself after the
    // Acquire loads of every CPU's acknowledgement.
    COMPLETED.load(Ordering::Acquire)
}

/// IPIs handled so far.
pub fn handled() -> u64 {
    // Relaxed: a statistic.
    HANDLED.load(Ordering::Relaxed)
}

/// Invalidates `start .. start + len` on this CPU: per 4 KiB page for small
/// ranges, per 2 MiB otherwise (an `invlpg` anywhere in a huge page drops it).
fn invalidate(start: u64, len: u64, step: u64) {
    let mut va = start;
    while va < start.saturating_add(len) {
        cpu::invlpg(va);
        va += step;
    }
}

/// Shoots down `range` on every CPU, one `invlpg` per `step` bytes (the
/// smallest leaf the unmap cleared); returns when all have acknowledged.
pub fn flush(range: VaRange, step: u64) {
    invalidate(range.start().0, range.size(), step);
    // Relaxed: published by the Release RMW below.
    RANGE_START.store(range.start().0, Ordering::Relaxed);
    RANGE_LEN.store(range.size(), Ordering::Relaxed);
    RANGE_STEP.store(step, Ordering::Relaxed);
    // Release: a handler that Acquire-loads this generation sees the range and
    // every page-table clear made before it (so its later walks never reach a
    // detached table).
    let generation = STARTED.fetch_add(1, Ordering::Release) + 1;
    apic::send_all_but_self(idt::SHOOTDOWN_VECTOR);
    // Acquire: pairs with the Release store of `set_online`.
    let online = ONLINE.load(Ordering::Acquire);
    for acked in &ACKED[1..online] {
        // Acquire: pairs with the Release store in `on_ipi`: the CPU's walk
        // loads (all before its interrupts went back on) happen before this.
        while acked.load(Ordering::Acquire) < generation {
            core::hint::spin_loop();
        }
    }
    // Release: `completed`'s readers see the acknowledgements' effects.
    COMPLETED.store(generation, Ordering::Release);
}

/// The IPI handler (interrupts are off while it runs).
pub fn on_ipi() {
    // Acquire: pairs with the Release RMW in `flush`.
    let generation = STARTED.load(Ordering::Acquire);
    // Relaxed: ordered by the Acquire load above.
    let (start, len, step) = (
        RANGE_START.load(Ordering::Relaxed),
        RANGE_LEN.load(Ordering::Relaxed),
        RANGE_STEP.load(Ordering::Relaxed),
    );
    invalidate(start, len, step);
    // Relaxed: a statistic.
    HANDLED.fetch_add(1, Ordering::Relaxed);
    // Release: pairs with the initiator's Acquire wait; everything this CPU did
    // before taking the interrupt (its finished walk) happens before the
    // initiator reuses a table.
    ACKED[apic::id()].store(generation, Ordering::Release);
    apic::eoi();
}
