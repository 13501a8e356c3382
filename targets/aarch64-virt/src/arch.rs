//! Everything of the kernel that is an aarch64 instruction: the boot and
//! secondary entry points, the exception vectors, the MMU registers, TLB
//! maintenance, PSCI, the generic timer, semihosting and the PL011 UART.
//!
//! All inline assembly of the kernel lives here (it is arch code; pagepin itself
//! has none on this path).

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU32, Ordering};

pub use crate::platform::{Uart, cpu_index, halt, print_line, semihosting_exit};

// The entry points.
//
// `_start`: QEMU's ELF loader jumps here on CPU 0 at EL1, MMU and caches off;
// the other CPUs stay powered off until PSCI CPU_ON. Enable FP/SIMD (the Rust
// code may use NEON registers), take CPU 0's stack, zero .bss, call
// `kernel_main`.
//
// `secondary_entry`: PSCI CPU_ON starts CPUs 1-3 here at EL1, MMU off, with
// x0 = the `BootContext` CPU 0 passed (its physical address; identity map).
// Turn on the MMU with CPU 0's tables and register values before touching
// anything else (with the MMU off data accesses are non-cacheable), then call
// `secondary_main(ctx)`.
global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    msr     daifset, #0xf
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x1, x1, #0x10000
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  bl      kernel_main
3:  wfe
    b       3b

    .global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    ldr     x1, [x0, #0]
    mov     sp, x1
    ldr     x1, [x0, #8]
    msr     mair_el1, x1
    ldr     x1, [x0, #16]
    msr     tcr_el1, x1
    ldr     x1, [x0, #24]
    msr     ttbr0_el1, x1
    ldr     x1, [x0, #40]
    msr     vbar_el1, x1
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ldr     x1, [x0, #32]
    msr     sctlr_el1, x1
    isb
    bl      secondary_main
4:  wfe
    b       4b

    // The exception vectors: 16 entries of 0x80 bytes, the table 2 KiB
    // aligned. Every entry reports and stops (`exception` never returns).
    .section .text.vectors, "ax"
    .balign 0x800
    .global exception_vectors
exception_vectors:
    .irp kind, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 0x80
    mrs     x9, elr_el1
    adrp    x10, probe_load
    add     x10, x10, :lo12:probe_load
    cmp     x9, x10
    b.eq    probe_fixup
    mov     x0, #\kind
    mrs     x1, esr_el1
    mrs     x2, far_el1
    mrs     x3, elr_el1
    b       exception
    .endr

    // A fault on the load of `probe_read` resumes at `probe_fault`, which
    // returns "no translation" (x1 = 0) instead of reporting an exception.
probe_fixup:
    adrp    x10, probe_fault
    add     x10, x10, :lo12:probe_fault
    msr     elr_el1, x10
    eret

    // probe_read(va) -> (value, 1), or (_, 0) if the load faulted. Clobbers
    // x9 and x10 on a fault (caller-saved).
    .section .text.probe, "ax"
    .global probe_read
probe_read:
    mov     x1, #1
probe_load:
    ldr     x0, [x0]
    ret
probe_fault:
    mov     x1, #0
    ret
"#
);

/// What `probe_read` returns (x0, x1).
#[repr(C)]
struct Probe {
    value: u64,
    ok: u64,
}

unsafe extern "C" {
    /// Loads the 64-bit word at `va`, or reports that the load faulted.
    fn probe_read(va: u64) -> Probe;
}

/// Reads the word at virtual address `va` through the MMU: `None` if there is
/// no valid translation (the translation fault is caught by the exception
/// vectors and turned into this return).
pub fn probe(va: u64) -> Option<u64> {
    // SAFETY: `probe_read` is one aligned 64-bit load in assembly (not a Rust
    // access, so no Rust object is read); a fault on it is fixed up by the
    // vectors, which clobber only x9 and x10, caller-saved under the C ABI.
    // Callers probe only 8-aligned addresses of data pages (or nothing).
    let Probe { value, ok } = unsafe { probe_read(va & !7) };
    (ok != 0).then_some(value)
}

/// What `secondary_entry` reads (field offsets are fixed: 0, 8, ... 48).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BootContext {
    /// Initial stack pointer.
    pub stack_top: u64,
    /// MAIR_EL1.
    pub mair: u64,
    /// TCR_EL1.
    pub tcr: u64,
    /// TTBR0_EL1.
    pub ttbr0: u64,
    /// SCTLR_EL1 (MMU and caches on).
    pub sctlr: u64,
    /// VBAR_EL1.
    pub vbar: u64,
    /// The CPU's index (1..=3).
    pub cpu: u64,
}

unsafe extern "C" {
    /// The secondary CPUs' entry point (above).
    fn secondary_entry();
    /// The exception vector table (above).
    static exception_vectors: u8;
    /// Start of the per-CPU stacks (linker script).
    static __stacks_start: u8;
}

/// The address of `secondary_entry`.
pub fn secondary_entry_pa() -> u64 {
    secondary_entry as *const () as u64
}

/// The top of CPU `cpu`'s 64 KiB stack.
pub fn stack_top(cpu: u64) -> u64 {
    // Only the address of the linker symbol is taken, never its value.
    let base = core::ptr::addr_of!(__stacks_start) as u64;
    base + (cpu + 1) * 0x1_0000
}

/// MAIR_EL1: attribute 0 is Device-nGnRnE, attribute 1 is Normal memory,
/// inner and outer Write-Back read/write-allocate.
pub const MAIR: u64 = 0xff << 8;
/// AttrIndx of Device-nGnRnE in [`MAIR`].
pub const ATTR_DEVICE: u8 = 0;
/// AttrIndx of Normal write-back memory in [`MAIR`].
pub const ATTR_NORMAL: u8 = 1;

/// TCR_EL1 for TTBR0 walks of `va_bits`-bit addresses with a
/// `2^granule_shift`-byte granule: tables in inner-shareable write-back
/// memory, TTBR1 walks disabled, physical size from ID_AA64MMFR0_EL1.PARange
/// (at most 48 bits: pagepin's formats have 48-bit output addresses).
pub fn tcr(granule_shift: u32, va_bits: u32) -> u64 {
    let mmfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack)) };
    let ips = (mmfr0 & 0xf).min(0b101);
    let tg0 = match granule_shift {
        12 => 0b00,
        16 => 0b01,
        _ => 0b10,
    };
    let t0sz = u64::from(64 - va_bits);
    t0sz
        | 0b01 << 8 // IRGN0: write-back, write-allocate
        | 0b01 << 10 // ORGN0: write-back, write-allocate
        | 0b11 << 12 // SH0: inner shareable
        | tg0 << 14
        | 1 << 23 // EPD1: no TTBR1 walks
        | 0b10 << 30 // TG1: 4 KiB (a valid encoding; unused)
        | ips << 32
}

/// Whether the CPU supports the granule (ID_AA64MMFR0_EL1.TGran4/TGran64).
pub fn granule_supported(granule_shift: u32) -> bool {
    let mmfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack)) };
    match granule_shift {
        12 => (mmfr0 >> 28) & 0xf != 0xf,
        16 => (mmfr0 >> 24) & 0xf != 0xf,
        _ => (mmfr0 >> 20) & 0xf != 0,
    }
}

/// The VBAR_EL1 value (the vector table's address).
pub fn vbar() -> u64 {
    // Only the address of the linker symbol is taken.
    core::ptr::addr_of!(exception_vectors) as u64
}

/// Installs the exception vectors on this CPU.
pub fn install_vectors() {
    // SAFETY: the table is 2 KiB aligned and every entry stops the CPU through
    // `exception`, which needs nothing but a stack.
    unsafe { asm!("msr vbar_el1, {}", "isb", in(reg) vbar(), options(nostack)) };
}

/// Turns on the MMU and the caches of this CPU with `ttbr0` as the root and
/// returns the SCTLR_EL1 value it wrote (the secondaries write the same).
///
/// # Safety
///
/// The tables at `ttbr0` must identity-map the code, data and stack the CPU
/// uses from here on, as Normal memory, with the format `tcr` describes, and
/// must have been written (with the MMU off: straight to memory).
pub unsafe fn enable_mmu(mair: u64, tcr: u64, ttbr0: u64) -> u64 {
    let mut sctlr: u64;
    // SAFETY: the caller promised the tables map everything the CPU touches;
    // the TLBs are invalidated before the walk is turned on.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr0}",
            "dsb ish",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "mrs {sctlr}, sctlr_el1",
            mair = in(reg) mair,
            tcr = in(reg) tcr,
            ttbr0 = in(reg) ttbr0,
            sctlr = out(reg) sctlr,
            options(nostack),
        );
        // M (MMU), C (data cache), I (instruction cache) on; A (alignment
        // checks) and WXN (writable means execute-never) off.
        sctlr |= 1 << 0 | 1 << 2 | 1 << 12;
        sctlr &= !(1 << 1 | 1 << 19);
        asm!("msr sctlr_el1, {}", "isb", in(reg) sctlr, options(nostack));
    }
    sctlr
}

/// Cleans and invalidates the data cache lines of `len` bytes at `addr` to the
/// point of coherency, so a CPU with its MMU still off reads them from memory.
pub fn clean_to_poc(addr: u64, len: u64) {
    let mut line = addr & !63;
    while line < addr + len {
        // SAFETY: DC CIVAC on a mapped address only writes back and drops
        // cache lines; memory contents are unchanged.
        unsafe { asm!("dc civac, {}", in(reg) line, options(nostack)) };
        line += 64;
    }
    // SAFETY: a barrier.
    unsafe { asm!("dsb sy", options(nostack)) };
}

/// Makes this CPU's table writes visible to every CPU's table walker before
/// the next instruction fetch or access (after mapping: invalid entries are
/// never cached, so no TLBI is needed, only the barriers).
pub fn tables_written() {
    // SAFETY: barriers only.
    unsafe { asm!("dsb ishst", "isb", options(nostack)) };
}

/// Invalidates, on every CPU of the inner-shareable domain, the translations
/// (all levels: leaf entries and cached table walks) of the `len` bytes at
/// `va`, stepping by `step` bytes (the size of the leaves that mapped them),
/// and waits until done: `DSB ISHST` (the cleared entries reach the walkers),
/// `TLBI VAE1IS` per leaf, `DSB ISH` (every CPU finished), `ISB`. More than 64
/// leaves: one `TLBI VMALLE1IS` instead.
pub fn flush_tlb_range(va: u64, len: u64, step: u64) {
    // SAFETY: barriers; the entries were cleared by the caller.
    unsafe { asm!("dsb ishst", options(nostack)) };
    if len / step > 64 {
        // SAFETY: invalidating TLB entries only drops cached translations.
        unsafe { asm!("tlbi vmalle1is", options(nostack)) };
    } else {
        let mut at = va;
        while at < va + len {
            // Bits 43:0 of the operand are VA[55:12] (for every granule);
            // ASID 0 (the mappings are global anyway).
            let operand = (at >> 12) & ((1 << 44) - 1);
            // SAFETY: as above.
            unsafe { asm!("tlbi vae1is, {}", in(reg) operand, options(nostack)) };
            at += step;
        }
    }
    // SAFETY: barriers.
    unsafe { asm!("dsb ish", "isb", options(nostack)) };
}

/// A PSCI call through the hypervisor conduit (QEMU's PSCI at EL1: `hvc #0`).
fn psci(function: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: u64;
    // SAFETY: QEMU implements PSCI for the `virt` machine; the call clobbers
    // nothing but x0-x3 (SMCCC: x0-x17 may be clobbered, declared below).
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") function => ret,
            inout("x1") a1 => _,
            inout("x2") a2 => _,
            inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    ret as i64
}

/// PSCI CPU_ON (SMC64): starts the CPU with affinity `mpidr` at `entry` with
/// `context` in x0. Returns PSCI's status (0: success).
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> i64 {
    psci(0xc400_0003, mpidr, entry, context)
}

/// PSCI SYSTEM_OFF: QEMU exits with status 0.
pub fn system_off() -> ! {
    psci(0x8400_0008, 0, 0, 0);
    halt()
}

/// The generic timer's virtual count and frequency.
pub fn counter() -> (u64, u64) {
    let (count, freq): (u64, u64);
    // SAFETY: reading the timer registers (ISB: the read is not hoisted).
    unsafe {
        asm!(
            "isb",
            "mrs {c}, cntvct_el0",
            "mrs {f}, cntfrq_el0",
            c = out(reg) count,
            f = out(reg) freq,
            options(nomem, nostack),
        );
    }
    (count, freq.max(1))
}

/// Prints a line on the UART.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::arch::print_line(format_args!($($arg)*)) };
}

/// Exceptions taken so far (a nested one stops without printing).
static EXCEPTIONS: AtomicU32 = AtomicU32::new(0);

/// Every exception vector ends here: report the syndrome and fail the boot.
#[unsafe(no_mangle)]
extern "C" fn exception(kind: u64, esr: u64, far: u64, elr: u64) -> ! {
    // Relaxed: a counter only (a second exception means the reporting failed).
    if EXCEPTIONS.fetch_add(1, Ordering::Relaxed) > 4 {
        halt();
    }
    let (origin, what) = (
        [
            "current EL, SP0",
            "current EL, SPx",
            "lower EL, AArch64",
            "lower EL, AArch32",
        ][(kind / 4) as usize % 4],
        ["synchronous", "IRQ", "FIQ", "SError"][(kind % 4) as usize],
    );
    print_line(format_args!(
        "pagepin-qemu FAILED: {what} exception ({origin}) on CPU {} ESR={esr:#x} \
         (EC={:#x}) FAR={far:#x} ELR={elr:#x}",
        cpu_index(),
        esr >> 26
    ));
    semihosting_exit(3)
}
