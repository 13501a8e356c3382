//! The stage-2 kernel's aarch64 instructions: the EL2 boot and secondary
//! entry points, the EL2 vectors (a lower-EL synchronous exception is a guest
//! exit: the guest's registers are saved and `guest_trap` decides), the
//! guest itself (EL1 code, MMU off), the stage-2 registers (VTCR_EL2,
//! VTTBR_EL2, HCR_EL2), stage-2 TLB maintenance, `AT S12E1R/W` + PAR_EL1,
//! PSCI through `smc`, semihosting, the generic timer and the PL011 UART.
//!
//! Every CPU runs this kernel at EL2 with its EL2 MMU **off**, as the sweep
//! kernel does: its data accesses are then Device-nGnRnE, non-cacheable. That
//! is coherent across CPUs without cache maintenance (nothing is cached), the
//! guest's accesses (its stage 1 off, HCR_EL2.DC = 0) are Device-nGnRnE too,
//! and the stage-2 table walks are declared non-cacheable in VTCR_EL2 to match.
//! The Rust target has `strict-align`, so the compiler emits no unaligned
//! access (which Device memory would fault). Exclusives (the atomics) on
//! non-cacheable memory are IMPLEMENTATION DEFINED on hardware and work on
//! QEMU; a real hypervisor runs its EL2 MMU on, Normal write-back.

use core::arch::{asm, global_asm};

pub use crate::platform::{cpu_index, halt, print_line, semihosting_exit};

// `_start`: QEMU's ELF loader jumps here on CPU 0 at EL2 (`virtualization=on`),
// MMU and caches off. Stop unless CurrentEL is 2; enable FP/SIMD at EL2
// (CPTR_EL2.TFP clear), take CPU 0's stack, install the EL2 vectors, zero
// .bss, call `stage2_main`.
//
// `secondary_entry`: PSCI CPU_ON starts CPUs 1-3 here at EL2 with x0 = the
// CPU's stack top; the same set-up without the .bss, then `secondary_main`.
//
// `exception_vectors_el2`: 16 entries of 0x80 bytes. A synchronous exception
// from a lower EL in AArch64 (offset 0x400) is a guest exit: `guest_sync`.
// Every other entry reports and stops (`exception` never returns).
//
// `guest_sync`: saves the guest's x0-x30 in a 256-byte frame on SP_EL2 (the
// stack `guest_run` was called on: the frame lies below its caller's), calls
// `guest_trap(frame)`; 0 = resume the guest (restore, ERET to ELR_EL2, which
// the handler may have moved), 1 = leave it: `guest_run` returns (the guest's
// x0, x1) to its caller with the callee-saved registers and sp it saved.
//
// `guest_run(entry, a0, a1, a2, a3, save)`: saves x19-x30 and sp in `save`
// (13 words; TPIDR_EL2 points to it for the exit path), then ERETs to `entry`
// at EL1h, DAIF masked, with x0-x3 = a0-a3.
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
2:  bl      stage2_main
9:  wfe
    b       9b

    .global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mrs     x1, CurrentEL
    cmp     x1, #8
    b.ne    9b
    mrs     x1, cptr_el2
    bic     x1, x1, #(1 << 10)
    msr     cptr_el2, x1
    isb
    mov     sp, x0
    adrp    x1, exception_vectors_el2
    add     x1, x1, :lo12:exception_vectors_el2
    msr     vbar_el2, x1
    isb
    bl      secondary_main
    b       9b

    .section .text.vectors, "ax"
    .balign 0x800
    .global exception_vectors_el2
exception_vectors_el2:
    .irp kind, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 0x80
    .if \kind == 8
    b       guest_sync
    .else
    mov     x0, #\kind
    mrs     x1, esr_el2
    mrs     x2, far_el2
    mrs     x3, elr_el2
    b       exception
    .endif
    .endr

    .section .text.guest_run, "ax"
guest_sync:
    sub     sp, sp, #256
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mov     x0, sp
    bl      guest_trap
    cbnz    x0, 1f
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #256
    eret
1:  ldp     x0, x1, [sp, #0]
    mrs     x9, tpidr_el2
    ldp     x19, x20, [x9, #0]
    ldp     x21, x22, [x9, #16]
    ldp     x23, x24, [x9, #32]
    ldp     x25, x26, [x9, #48]
    ldp     x27, x28, [x9, #64]
    ldp     x29, x30, [x9, #80]
    ldr     x10, [x9, #96]
    mov     sp, x10
    ret

    .global guest_run
guest_run:
    msr     tpidr_el2, x5
    stp     x19, x20, [x5, #0]
    stp     x21, x22, [x5, #16]
    stp     x23, x24, [x5, #32]
    stp     x25, x26, [x5, #48]
    stp     x27, x28, [x5, #64]
    stp     x29, x30, [x5, #80]
    mov     x10, sp
    str     x10, [x5, #96]
    msr     elr_el2, x0
    mov     x10, #0x3c5
    msr     spsr_el2, x10
    mov     x0, x1
    mov     x1, x2
    mov     x2, x3
    mov     x3, x4
    isb
    eret

    // The guest: one 4 KiB page of EL1 code, mapped by stage 2 at IPA = PA,
    // read-only and executable. It runs with its MMU off (VA = IPA), so every
    // access is a Device-nGnRnE access of the IPA it names.
    //
    // Entry: x0 = the word of each page this vCPU writes its token to (1 or
    // 2), x1 = IPA of the control page (read-only to the guest: word 0 =
    // stop, word 1 = chunks, words 8.. = pages mapped per chunk), x2 = IPA of
    // guest RAM (chunks of 2 MiB), x3 = the first token.
    //
    // Loop until stop: for every chunk, for every page the control page says
    // is mapped, load word 0 into x5 (set to 0 first: a stage-2 fault on the
    // load is skipped by the hypervisor, leaving 0), check its IPA tag (bits
    // 63:12 must be the page's IPA; `hvc #1` with x0 = IPA, x1 = the word
    // reports anything else), then store the next token into the vCPU's word
    // (a fault skips it too). Counts good loads in x20, skipped ones in x21;
    // on stop, `hvc #0` with x0 = x20, x1 = x21 ends the run. Its EL1
    // vectors (VBAR_EL1 = the page's start) are all `hvc #2`: the guest takes
    // no exception at EL1.
    .section .text.guest, "ax"
    .balign 4096
    .global guest_page
guest_page:
    .rept 16
    .balign 0x80
    hvc     #2
    .endr
    .balign 0x80
    .global guest_entry
guest_entry:
    mov     x19, x0
    mov     x20, #0
    mov     x21, #0
    mov     x22, x3
    mov     x23, x1
    mov     x24, x2
1:  ldr     x9, [x23]
    cbnz    x9, 8f
    ldr     x11, [x23, #8]
    add     x12, x23, #64
    mov     x10, #0
2:  cmp     x10, x11
    b.hs    1b
    ldr     x13, [x12, x10, lsl #3]
    add     x14, x24, x10, lsl #21
    mov     x15, #0
3:  cmp     x15, x13
    b.hs    6f
    add     x16, x14, x15, lsl #12
    mov     x5, #0
    ldr     x5, [x16]
    cbz     x5, 5f
    and     x6, x5, #0xfffffffffffff000
    cmp     x6, x16
    b.ne    7f
    add     x20, x20, #1
    add     x22, x22, #1
    str     x22, [x16, x19, lsl #3]
4:  add     x15, x15, #1
    b       3b
5:  add     x21, x21, #1
    b       4b
6:  add     x10, x10, #1
    b       2b
7:  mov     x0, x16
    mov     x1, x5
    hvc     #1
    b       4b
8:  mov     x0, x20
    mov     x1, x21
    hvc     #0
    b       8b
    .balign 4096
    .global guest_page_end
guest_page_end:
"#
);

/// What `guest_run` returns: the guest's x0 and x1 at its `hvc #0`.
#[repr(C)]
pub struct GuestExit {
    /// Loads that found the right IPA tag.
    pub touches: u64,
    /// Loads or stores skipped after a stage-2 fault.
    pub faults: u64,
}

unsafe extern "C" {
    fn guest_run(entry: u64, a0: u64, a1: u64, a2: u64, a3: u64, save: *mut u64) -> GuestExit;
    fn secondary_entry();
    static guest_page: u8;
    static guest_page_end: u8;
    static guest_entry: u8;
    static __stacks_start: u8;
}

/// The guest page's physical address range `(start, end)`.
pub fn guest_page_range() -> (u64, u64) {
    // Only the addresses of the symbols are taken.
    (
        core::ptr::addr_of!(guest_page) as u64,
        core::ptr::addr_of!(guest_page_end) as u64,
    )
}

/// The guest's entry point (a PA in the guest page, its IPA too).
pub fn guest_entry_pa() -> u64 {
    core::ptr::addr_of!(guest_entry) as u64
}

/// The address of `secondary_entry`.
pub fn secondary_entry_pa() -> u64 {
    secondary_entry as *const () as u64
}

/// The top of CPU `cpu`'s 64 KiB stack.
pub fn stack_top(cpu: u64) -> u64 {
    core::ptr::addr_of!(__stacks_start) as u64 + (cpu + 1) * 0x1_0000
}

/// The guest's saved registers in `guest_sync`'s frame: x0-x30, and a pad.
pub type GuestFrame = [u64; 32];

/// Where `guest_run` keeps its caller's x19-x30 and sp while the guest runs.
pub type SaveArea = [u64; 13];

/// Runs the guest at EL1 from `entry` with x0-x3 = `args` under the stage-2
/// regime installed on this CPU ([`enter_vm`]), until `guest_trap` returns 1.
///
/// # Safety
///
/// [`enter_vm`] ran on this CPU; the stage-2 tables map `entry` (readable,
/// executable) and VBAR_EL1's vectors; `save` is this CPU's own area and
/// outlives the call; `guest_trap` returns 1 only for an exit the guest asked
/// for (the guest's code is the `guest_entry` above, which touches only what
/// stage 2 maps and clobbers nothing of the hypervisor).
pub unsafe fn run_guest(entry: u64, args: [u64; 4], save: &mut SaveArea) -> GuestExit {
    // SAFETY: the caller's promise; `guest_run` saves and restores every
    // callee-saved register and sp, and the guest's registers never reach the
    // hypervisor's Rust code except through the frame `guest_trap` gets.
    unsafe { guest_run(entry, args[0], args[1], args[2], args[3], save.as_mut_ptr()) }
}

/// The stage-2 regime of one VM as the EL2 registers hold it.
#[derive(Debug, Clone, Copy)]
pub struct Vm {
    /// VTCR_EL2.
    pub vtcr: u64,
    /// VTTBR_EL2: the root's address and the VMID.
    pub vttbr: u64,
}

/// HCR_EL2 with the VM's stage 2 on: VM (bit 0), RW (bit 31: EL1 is
/// AArch64). No traps of EL1 state, no virtual interrupts, DC clear (the
/// guest's stage 1 off means Device-nGnRnE data accesses).
pub const HCR_VM: u64 = 1 << 0 | 1 << 31;

/// VTCR_EL2 for [`pagepin::arch::aarch64::Stage2G4K40`]: T0SZ = 24 (40-bit
/// IPAs), SL0 = 0b01 (start at level 1, whose 1024 entries are two
/// concatenated 4 KiB tables), IRGN0 = ORGN0 = 0 (walks non-cacheable: the
/// hypervisor writes the tables with its MMU off), SH0 = inner, TG0 = 4 KiB,
/// PS = the CPU's physical size (at most 48 bits), VS = 0 (8-bit VMID),
/// HA = HD = 0 (no hardware access flag or dirty updates), bit 31 RES1.
pub fn vtcr_g4k40() -> u64 {
    let ps = (mmfr0() & 0xf).min(0b101);
    24 | 0b01 << 6 | 0b11 << 12 | ps << 16 | 1 << 31
}

/// Installs `vm` as this CPU's stage-2 regime, with the guest's EL1 state
/// (SCTLR_EL1: MMU and caches off, VBAR_EL1 = `vbar`), and drops this CPU's
/// cached translations of the VMID.
pub fn enter_vm(vm: &Vm, vbar: u64) {
    // SCTLR_EL1: the Armv8.0 RES1 bits (11, 20, 22, 23, 28, 29); M, C, I
    // clear.
    let sctlr: u64 = 1 << 11 | 1 << 20 | 1 << 22 | 1 << 23 | 1 << 28 | 1 << 29;
    // SAFETY: these registers change only how EL1/EL0 (the guest) translate
    // and which VMID EL2's TLB maintenance and AT instructions name; this
    // kernel runs at EL2 with its own (off) MMU. DSB ISH orders the table
    // writes before the walks; TLBI VMALLS12E1 drops stale stage 1+2 entries
    // of the VMID on this CPU.
    unsafe {
        asm!(
            "msr vtcr_el2, {vtcr}",
            "msr vttbr_el2, {vttbr}",
            "msr hcr_el2, {hcr}",
            "msr sctlr_el1, {sctlr}",
            "msr vbar_el1, {vbar}",
            "msr sp_el1, xzr",
            "dsb ish",
            "isb",
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            vtcr = in(reg) vm.vtcr,
            vttbr = in(reg) vm.vttbr,
            hcr = in(reg) HCR_VM,
            sctlr = in(reg) sctlr,
            vbar = in(reg) vbar,
            options(nostack),
        );
    }
}

/// Makes this CPU's table writes visible to every CPU's table walker
/// (after mapping: invalid entries are never cached, so no TLBI is needed).
pub fn tables_written() {
    // SAFETY: a barrier.
    unsafe { asm!("dsb ishst", "isb", options(nostack)) };
}

/// The stage-2 TLB shootdown of IPAs `ipa .. ipa + len` of the VMID installed
/// on this CPU, on every CPU of the inner-shareable domain, for leaves of
/// `leaf` bytes (KVM's `__kvm_tlb_flush_vmid_ipa`): `DSB ISHST` (the cleared
/// entries reach the walkers), `TLBI IPAS2E1IS` per leaf (stage-2 entries of
/// every level for that IPA), `DSB ISH`, then `TLBI VMALLE1IS` (the combined
/// stage 1+2 entries, which an IPA-based invalidation does not reach), `DSB
/// ISH`, `ISB`. More than 64 leaves: one `TLBI VMALLS12E1IS` instead of the
/// per-leaf invalidations.
pub fn flush_ipa_range(ipa: u64, len: u64, leaf: u64) {
    // SAFETY: a barrier; the entries were cleared by the caller.
    unsafe { asm!("dsb ishst", options(nostack)) };
    if len / leaf > 64 {
        // SAFETY: invalidating TLB entries only drops cached translations.
        unsafe { asm!("tlbi vmalls12e1is", options(nostack)) };
    } else {
        let mut at = ipa;
        while at < ipa + len {
            // Bits 35:0 of the operand are IPA[47:12]; NS (bit 63) clear.
            let operand = (at >> 12) & ((1 << 36) - 1);
            // SAFETY: as above.
            unsafe { asm!("tlbi ipas2e1is, {}", in(reg) operand, options(nostack)) };
            at += leaf;
        }
    }
    if cfg!(feature = "broken-no-vmalle1") {
        // BROKEN: the stage-2 invalidation alone; the combined stage 1+2
        // entries of the VMID survive.
        // SAFETY: barriers.
        unsafe { asm!("dsb ish", "isb", options(nostack)) };
        return;
    }
    // SAFETY: barriers and a TLB invalidation (as above).
    unsafe {
        asm!(
            "dsb ish",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            options(nostack)
        )
    };
}

/// `AT S12E1R` (`write` false) or `AT S12E1W` of `va` from EL2: the EL1&0
/// regime's stage 1 (off here: VA = IPA) and then stage 2 of the installed VM,
/// as the guest's read or write would translate it. Returns PAR_EL1.
pub fn at_s12(va: u64, write: bool) -> u64 {
    let par: u64;
    // SAFETY: an address translation instruction writes PAR_EL1 only (a
    // fault is reported there, not taken); ISB orders the read.
    unsafe {
        if write {
            asm!("at s12e1w, {va}", "isb", "mrs {par}, par_el1", va = in(reg) va, par = out(reg) par, options(nostack));
        } else {
            asm!("at s12e1r, {va}", "isb", "mrs {par}, par_el1", va = in(reg) va, par = out(reg) par, options(nostack));
        }
    }
    par
}

/// Sets HCR_EL2.DC (stage 1 off means Normal write-back, so PAR_EL1.ATTR of
/// an `AT S12E1R` shows stage 2's memory type) or clears it. Used by CPU 0,
/// which never runs the guest, around its AT checks.
pub fn set_default_cacheable(on: bool) {
    let hcr = if on { HCR_VM | 1 << 12 } else { HCR_VM };
    // SAFETY: HCR_EL2.DC changes only how EL1&0 translates with its stage 1
    // off; this CPU runs nothing at EL1. The TLBI drops translations made
    // under the other setting (DC is not part of the TLB tag).
    unsafe {
        asm!("msr hcr_el2, {}", "isb", "tlbi vmalle1", "dsb nsh", "isb", in(reg) hcr, options(nostack))
    };
}

/// ESR_EL2, FAR_EL2, HPFAR_EL2 and ELR_EL2 of the exception being handled.
pub fn syndrome() -> (u64, u64, u64, u64) {
    let (esr, far, hpfar, elr): (u64, u64, u64, u64);
    // SAFETY: reading the EL2 exception registers.
    unsafe {
        asm!(
            "mrs {0}, esr_el2",
            "mrs {1}, far_el2",
            "mrs {2}, hpfar_el2",
            "mrs {3}, elr_el2",
            out(reg) esr, out(reg) far, out(reg) hpfar, out(reg) elr,
            options(nomem, nostack),
        );
    }
    (esr, far, hpfar, elr)
}

/// Sets ELR_EL2: where the guest resumes.
pub fn set_elr(elr: u64) {
    // SAFETY: called from `guest_trap` only, whose ERET returns to the guest
    // at EL1; `elr` is an address in the guest page.
    unsafe { asm!("msr elr_el2, {}", in(reg) elr, options(nomem, nostack)) };
}

/// ID_AA64MMFR0_EL1.
pub fn mmfr0() -> u64 {
    let v: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64mmfr0_el1", out(reg) v, options(nomem, nostack)) };
    v
}

/// A PSCI call through the SMC conduit (QEMU's PSCI with EL2 enabled).
fn psci(function: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: u64;
    // SAFETY: QEMU implements PSCI for `virt`; SMCCC lets the call clobber
    // x0-x17 (declared).
    unsafe {
        asm!(
            "smc #0",
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

/// PSCI CPU_ON (SMC64): starts CPU `mpidr` at `entry` with x0 = `context`.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> i64 {
    psci(0xc400_0003, mpidr, entry, context)
}

/// PSCI SYSTEM_OFF: QEMU exits with status 0.
pub fn system_off() -> ! {
    psci(0x8400_0008, 0, 0, 0);
    halt()
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

/// Prints a line on the UART.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::el2::print_line(format_args!($($arg)*)) };
}

/// Every unexpected EL2 exception ends here: report and fail the boot.
#[unsafe(no_mangle)]
extern "C" fn exception(kind: u64, esr: u64, far: u64, elr: u64) -> ! {
    print_line(format_args!(
        "pagepin-qemu FAILED: EL2 exception (vector {kind}) on CPU {} ESR_EL2={esr:#x} (EC={:#x}) FAR_EL2={far:#x} ELR_EL2={elr:#x}",
        cpu_index(),
        esr >> 26
    ));
    semihosting_exit(3)
}
