//! Probes: one read, write or instruction fetch at an address, that returns
//! whether it faulted instead of ending the machine. The sweep (`sweep`) asks
//! the MMU through them.
//!
//! Each probe is a small function in assembly. If its one access faults
//! (#PF or #GP), the exception handler (`idt::exception_handler`) asks
//! [`fixup`], which recognises the faulting instruction, records vector, error
//! code and CR2, and resumes at `probe_fault`: that returns `faulted = 1` to
//! the probe's caller. Every other exception still ends the machine.
//!
//! The probes follow the C calling convention, so the compiler treats every
//! caller-saved register as clobbered across them; the handler is a normal
//! function that keeps the callee-saved ones, and `exc_common` restores the
//! stack, so resuming at `probe_fault` loses nothing the caller relies on.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

global_asm!(
    r#"
    .section .text
    /* probe_read(va) -> (value, faulted): one 8-byte load. */
    .p2align 4
    .global probe_read
probe_read:
    xorl %edx, %edx
    .global probe_read_insn
probe_read_insn:
    movq (%rdi), %rax
    ret

    /* probe_write(va, value) -> (0, faulted): one 8-byte store. */
    .p2align 4
    .global probe_write
probe_write:
    xorl %edx, %edx
    .global probe_write_insn
probe_write_insn:
    movq %rsi, (%rdi)
    xorl %eax, %eax
    ret

    /* probe_exec(va) -> (0, faulted): calls va, where the caller has put a
     * `ret` (0xc3). A fetch fault there has RIP = va and the return address
     * to probe_exec_back on the stack, so probe_fault's `ret` comes back here
     * and this `ret` returns to the caller with faulted = 1. */
    .p2align 4
    .global probe_exec
probe_exec:
    xorl %edx, %edx
    xorl %eax, %eax
    call *%rdi
probe_exec_back:
    ret

    /* Where a faulting probe resumes (the handler sets RIP here). */
    .p2align 4
    .global probe_fault
probe_fault:
    movl $1, %edx
    xorl %eax, %eax
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static probe_read_insn: u8;
    static probe_write_insn: u8;
    static probe_fault: u8;
    fn probe_read(va: u64) -> Raw;
    fn probe_write(va: u64, value: u64) -> Raw;
    fn probe_exec(va: u64) -> Raw;
}

/// What a probe function returns (rax, rdx).
#[repr(C)]
struct Raw {
    value: u64,
    faulted: u64,
}

/// The exec probe's target while one runs, else 0.
static EXEC_TARGET: AtomicU64 = AtomicU64::new(0);
/// The last probe fault: vector, error code, CR2.
static FAULT: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// What one probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No fault; the value read (0 for a write or a fetch).
    Done(u64),
    /// A fault: vector (14 #PF, 13 #GP), error code, CR2.
    Fault {
        /// The exception vector.
        vector: u64,
        /// The error code the CPU pushed.
        error: u64,
        /// CR2 at the fault (meaningful for #PF only).
        cr2: u64,
    },
}

impl Outcome {
    /// Whether the access faulted.
    pub fn faulted(self) -> bool {
        matches!(self, Outcome::Fault { .. })
    }
}

fn outcome(raw: Raw) -> Outcome {
    if raw.faulted == 0 {
        return Outcome::Done(raw.value);
    }
    // Relaxed: written by this CPU's exception handler, which ran inside the
    // probe call (program order on one CPU).
    let [vector, error, cr2] = [0, 1, 2].map(|i| FAULT[i].load(Ordering::Relaxed));
    Outcome::Fault { vector, error, cr2 }
}

/// Reads 8 bytes at `va` (8-aligned).
///
/// # Safety
///
/// If `va` translates, the 8 bytes there are memory no Rust object uses (or
/// one only accessed atomically) and reading it has no side effect (RAM, not
/// MMIO). A fault is fine: it is caught.
pub unsafe fn read(va: u64) -> Outcome {
    // SAFETY: the caller's promise about what `va` may reach; the probe's
    // fault path resumes in the probe (module docs).
    outcome(unsafe { probe_read(va) })
}

/// Writes `value` to the 8 bytes at `va` (8-aligned).
///
/// # Safety
///
/// If `va` translates, the 8 bytes there belong to the caller (no Rust object,
/// no MMIO, no page table, no code). A fault is fine: it is caught.
pub unsafe fn write(va: u64, value: u64) -> Outcome {
    // SAFETY: as in `read`.
    outcome(unsafe { probe_write(va, value) })
}

/// Calls `va`.
///
/// # Safety
///
/// If `va` translates to executable memory, the byte there is a `ret` (0xc3)
/// (the caller checked it through the same address just before, on this CPU
/// with interrupts off). A fault is fine: it is caught.
pub unsafe fn exec(va: u64) -> Outcome {
    // Relaxed: read by this CPU's exception handler only.
    EXEC_TARGET.store(va, Ordering::Relaxed);
    // SAFETY: the caller's promise: either the fetch faults, or it runs one
    // `ret` that returns into `probe_exec`.
    let raw = unsafe { probe_exec(va) };
    // Relaxed: as above.
    EXEC_TARGET.store(0, Ordering::Relaxed);
    outcome(raw)
}

/// Called by the exception handler for `vector` (with `error`, at `rip`): if a
/// probe's access faulted, records the fault and returns where to resume.
pub fn fixup(vector: u64, error: u64, rip: u64, cr2: u64) -> Option<u64> {
    if vector != 13 && vector != 14 {
        return None;
    }
    // Relaxed: written by this CPU before the probe call.
    let target = EXEC_TARGET.load(Ordering::Relaxed);
    let ours = rip == &raw const probe_read_insn as u64
        || rip == &raw const probe_write_insn as u64
        || (target != 0 && rip == target);
    if !ours {
        return None;
    }
    for (slot, value) in FAULT.iter().zip([vector, error, cr2]) {
        // Relaxed: read by this CPU after the probe returns.
        slot.store(value, Ordering::Relaxed);
    }
    Some(&raw const probe_fault as u64)
}
