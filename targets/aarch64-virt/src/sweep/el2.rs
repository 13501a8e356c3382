//! The sweep kernel's aarch64 instructions: it runs at EL2 (QEMU `virt` with
//! `virtualization=on`), its own MMU off, and drives the EL1&0 translation
//! regime from there: it writes TCR_EL1, TTBR0/1_EL1, MAIR_EL1, VBAR_EL1 and
//! SCTLR_EL1 (M = 1) without ever running EL1 code except in
//! [`exec_probe`], and asks the MMU for its translation with `AT S1E1R`,
//! `S1E1W`, `S1E0R`, `S1E0W` and PAR_EL1.
//!
//! With the EL2 MMU off every data access of this kernel is Device-nGnRnE and
//! non-cacheable: fine on QEMU (no caches are modelled, and the kernel runs on
//! one CPU, so its few atomics are uncontended); the EL1 regime's table walks
//! are declared non-cacheable in TCR_EL1 to match.

use core::arch::{asm, global_asm};

pub use crate::platform::{cpu_index, halt, print_line, semihosting_exit};

// `_start`: QEMU's ELF loader jumps here on CPU 0 at EL2 (`virtualization=on`),
// MMU and caches off. Stop unless CurrentEL is 2; enable FP/SIMD at EL2
// (CPTR_EL2.TFP clear: the Rust code may use NEON registers), take CPU 0's
// stack, install the EL2 vectors, zero .bss, call `sweep_main`.
//
// `exception_vectors_el2`: 16 entries of 0x80 bytes. The entry for a
// synchronous exception from a lower EL in AArch64 (0x400) is the end of an
// `exec_probe` (EL1 code's `hvc #0`): it resumes `exec_probe`'s caller. Every
// other entry reports and stops (`exception` never returns).
//
// `exec_probe(va, spsr) -> (ESR_EL1, ESR_EL2)`: saves x19-x30 and sp, then
// ERETs to `va` at the EL and SP selection of `spsr` (EL1h or EL0t, DAIF
// masked). Whatever happens there ends at EL2 through the EL1 vectors, whose
// every entry is `hvc #0` (see `sweep::VECTOR_PA`): an executable `va` runs
// the `svc #0` the caller wrote there (ESR_EL1.EC = 0x15), a non-executable
// one takes an instruction abort at EL1 (EC 0x20 from EL0, 0x21 from EL1).
global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    msr     daifset, #0xf
    mrs     x1, CurrentEL
    cmp     x1, #8
    b.ne    9f
    mrs     x1, cptr_el2
    bic     x1, x1, #(1 << 10)
    msr     cptr_el2, x1
    isb
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x1, x1, #0x10000
    mov     sp, x1
    adrp    x1, exception_vectors_el2
    add     x1, x1, :lo12:exception_vectors_el2
    msr     vbar_el2, x1
    isb
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  bl      sweep_main
9:  wfe
    b       9b

    .section .text.vectors, "ax"
    .balign 0x800
    .global exception_vectors_el2
exception_vectors_el2:
    .irp kind, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 0x80
    .if \kind == 8
    b       exec_return
    .else
    mov     x0, #\kind
    mrs     x1, esr_el2
    mrs     x2, far_el2
    mrs     x3, elr_el2
    b       exception
    .endif
    .endr

    .section .text.exec_probe, "ax"
    .global exec_probe
exec_probe:
    adrp    x9, EXEC_SAVE
    add     x9, x9, :lo12:EXEC_SAVE
    stp     x19, x20, [x9, #0]
    stp     x21, x22, [x9, #16]
    stp     x23, x24, [x9, #32]
    stp     x25, x26, [x9, #48]
    stp     x27, x28, [x9, #64]
    stp     x29, x30, [x9, #80]
    mov     x10, sp
    str     x10, [x9, #96]
    msr     elr_el2, x0
    msr     spsr_el2, x1
    isb
    eret

exec_return:
    mrs     x0, esr_el1
    mrs     x1, esr_el2
    adrp    x9, EXEC_SAVE
    add     x9, x9, :lo12:EXEC_SAVE
    ldp     x19, x20, [x9, #0]
    ldp     x21, x22, [x9, #16]
    ldp     x23, x24, [x9, #32]
    ldp     x25, x26, [x9, #48]
    ldp     x27, x28, [x9, #64]
    ldp     x29, x30, [x9, #80]
    ldr     x10, [x9, #96]
    mov     sp, x10
    ret
"#
);

/// Where `exec_probe` keeps the callee-saved registers and sp of its caller
/// while EL1 or EL0 code runs (written and read by the assembly only).
#[unsafe(no_mangle)]
static mut EXEC_SAVE: [u64; 13] = [0; 13];

/// What `exec_probe` returns (x0, x1).
#[repr(C)]
pub struct ExecResult {
    /// ESR_EL1: what the EL1 vectors were entered for.
    pub esr_el1: u64,
    /// ESR_EL2: why EL2 was entered (EC 0x16: HVC from AArch64).
    pub esr_el2: u64,
}

unsafe extern "C" {
    fn exec_probe(va: u64, spsr: u64) -> ExecResult;
}

/// SPSR_EL2 for EL1h (SP_EL1) with D, A, I, F masked.
pub const SPSR_EL1H: u64 = 0x3c5;
/// SPSR_EL2 for EL0t with D, A, I, F masked.
pub const SPSR_EL0T: u64 = 0x3c0;

/// Runs the instruction at `va` at the EL `spsr` selects under the installed
/// EL1&0 regime and reports how it ended.
///
/// # Safety
///
/// The installed regime's VBAR_EL1 must translate (at EL1, executable) to a
/// vector table whose every entry is `hvc #0`, and the instruction at `va`, if
/// it can be fetched, must trap to EL1 at once (`svc #0`): nothing else may
/// run at EL1 or EL0, since that code would run with this kernel's registers.
pub unsafe fn exec(va: u64, spsr: u64) -> ExecResult {
    // SAFETY: the caller's promise: the code at `va` traps at once, the EL1
    // vectors trap to EL2 at once, and the EL2 vector for that returns here
    // with the callee-saved registers and sp `exec_probe` saved.
    unsafe { exec_probe(va, spsr) }
}

/// The four address-translation instructions of the EL1&0 regime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// `AT S1E1R`: EL1 read.
    E1R,
    /// `AT S1E1W`: EL1 write.
    E1W,
    /// `AT S1E0R`: EL0 read.
    E0R,
    /// `AT S1E0W`: EL0 write.
    E0W,
}

/// The MMU's stage 1 translation of `va` for `op`: PAR_EL1 after the `AT`.
pub fn at(op: At, va: u64) -> u64 {
    let par: u64;
    // SAFETY: an address translation instruction writes PAR_EL1 only (a
    // translation fault is reported there, not taken); ISB orders the read.
    unsafe {
        match op {
            At::E1R => {
                asm!("at s1e1r, {va}", "isb", "mrs {par}, par_el1", va = in(reg) va, par = out(reg) par, options(nostack))
            }
            At::E1W => {
                asm!("at s1e1w, {va}", "isb", "mrs {par}, par_el1", va = in(reg) va, par = out(reg) par, options(nostack))
            }
            At::E0R => {
                asm!("at s1e0r, {va}", "isb", "mrs {par}, par_el1", va = in(reg) va, par = out(reg) par, options(nostack))
            }
            At::E0W => {
                asm!("at s1e0w, {va}", "isb", "mrs {par}, par_el1", va = in(reg) va, par = out(reg) par, options(nostack))
            }
        }
    }
    par
}

/// The EL1&0 regime's registers.
#[derive(Debug, Clone, Copy)]
pub struct Regime {
    /// TCR_EL1.
    pub tcr: u64,
    /// TTBR0_EL1.
    pub ttbr0: u64,
    /// TTBR1_EL1.
    pub ttbr1: u64,
    /// MAIR_EL1.
    pub mair: u64,
    /// VBAR_EL1 (a VA of the regime).
    pub vbar: u64,
}

/// Installs `regime` as the EL1&0 stage 1 translation (SCTLR_EL1.M = 1,
/// caches and WXN off; HCR_EL2: EL1 is AArch64, no stage 2, no trap of EL0
/// to EL2) and invalidates every cached EL1&0 translation.
pub fn install(regime: &Regime) {
    // SCTLR_EL1: the Armv8.0 RES1 bits (11, 20, 22, 23, 28, 29) and M.
    let sctlr: u64 = (1 << 11 | 1 << 20 | 1 << 22 | 1 << 23 | 1 << 28 | 1 << 29) | 1;
    // HCR_EL2.RW (bit 31): EL1 is AArch64; VM, TGE and E2H clear.
    let hcr: u64 = 1 << 31;
    // SAFETY: the EL1&0 regime's registers only change how EL1/EL0 addresses
    // translate; this kernel runs at EL2 with its own (off) MMU and never
    // accesses memory through the EL1&0 regime except in `exec`. DSB ISH makes
    // the table writes visible to the walker before the TLBI and the AT that
    // follow; TLBI VMALLE1 drops the previous regime's translations.
    unsafe {
        asm!(
            "msr hcr_el2, {hcr}",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr0}",
            "msr ttbr1_el1, {ttbr1}",
            "msr vbar_el1, {vbar}",
            "msr sctlr_el1, {sctlr}",
            "dsb ish",
            "isb",
            "tlbi vmalle1",
            "dsb ish",
            "ic iallu",
            "dsb ish",
            "isb",
            hcr = in(reg) hcr,
            mair = in(reg) regime.mair,
            tcr = in(reg) regime.tcr,
            ttbr0 = in(reg) regime.ttbr0,
            ttbr1 = in(reg) regime.ttbr1,
            vbar = in(reg) regime.vbar,
            sctlr = in(reg) sctlr,
            options(nostack),
        );
    }
}

/// Makes an instruction this kernel just wrote visible to instruction
/// fetches (and the table edits to the walker).
pub fn sync_code() {
    // SAFETY: barriers and an instruction cache invalidation only.
    unsafe { asm!("dsb ish", "ic iallu", "dsb ish", "isb", options(nostack)) };
}

/// ID_AA64MMFR0_EL1.
pub fn mmfr0() -> u64 {
    let v: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64mmfr0_el1", out(reg) v, options(nomem, nostack)) };
    v
}

/// PSCI SYSTEM_OFF through the SMC conduit (QEMU's PSCI with EL2 enabled):
/// QEMU exits with status 0.
pub fn system_off() -> ! {
    // SAFETY: QEMU implements PSCI for `virt`; SYSTEM_OFF does not return
    // (x0-x3 declared clobbered in case it did).
    unsafe {
        asm!(
            "smc #0",
            inout("x0") 0x8400_0008u64 => _,
            out("x1") _, out("x2") _, out("x3") _,
            options(nostack),
        );
    }
    halt()
}

/// Semihosting SYS_GET_CMDLINE into `buf`: the `arg=` words of QEMU's
/// `-semihosting-config`, separated by spaces. Returns the bytes written.
pub fn cmdline(buf: &mut [u8]) -> usize {
    let mut block = [buf.as_mut_ptr() as u64, buf.len() as u64];
    let ret: u64;
    // SAFETY: QEMU writes at most `block[1]` bytes to `block[0]` (a buffer we
    // own) and the length to `block[1]`.
    unsafe {
        asm!(
            "hlt #0xf000",
            inout("x0") 0x15u64 => ret,
            in("x1") block.as_mut_ptr(),
            options(nostack),
        );
    }
    if ret == 0 {
        (block[1] as usize).min(buf.len())
    } else {
        0
    }
}

/// The generic timer's count and frequency.
pub fn counter() -> (u64, u64) {
    let (count, freq): (u64, u64);
    // SAFETY: reading the timer registers (ISB: the read is not hoisted).
    unsafe {
        asm!("isb", "mrs {c}, cntpct_el0", "mrs {f}, cntfrq_el0", c = out(reg) count, f = out(reg) freq, options(nomem, nostack));
    }
    (count, freq.max(1))
}

/// Prints a line on the UART (one CPU runs, so the line lock is never
/// contended).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::el2::print_line(format_args!($($arg)*)) };
}

/// Every unexpected EL2 exception ends here: report and fail the boot.
#[unsafe(no_mangle)]
extern "C" fn exception(kind: u64, esr: u64, far: u64, elr: u64) -> ! {
    println!(
        "pagepin-qemu FAILED: EL2 exception (vector {kind}) on CPU {} ESR_EL2={esr:#x} (EC={:#x}) FAR_EL2={far:#x} ELR_EL2={elr:#x}",
        cpu_index(),
        esr >> 26
    );
    semihosting_exit(3)
}
