//! The local xAPIC (MMIO at [`APIC_BASE`], mapped uncached by the kernel's
//! tables; QEMU 7.2's TCG has no x2APIC): enable, IPIs, INIT-SIPI-SIPI.

use core::arch::asm;

use crate::cpu;
use crate::idt::SPURIOUS_VECTOR;

/// The xAPIC's MMIO page (identity-mapped, uncached).
pub const APIC_BASE: u64 = 0xfee0_0000;

const EOI: u64 = 0xb0;
const SVR: u64 = 0xf0;
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
/// ICR: delivery status (send pending).
const ICR_PENDING: u32 = 1 << 12;
/// ICR: level assert.
const ICR_ASSERT: u32 = 1 << 14;
/// ICR delivery modes.
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
/// ICR destination shorthand: all excluding self.
const ICR_ALL_BUT_SELF: u32 = 0b11 << 18;

fn reg(offset: u64) -> *mut u32 {
    (APIC_BASE + offset) as *mut u32
}

fn write(offset: u64, value: u32) {
    // SAFETY: the register is in the xAPIC page, which `main::build_tables`
    // identity-maps uncached before any CPU calls into this module, and which is
    // no Rust object: volatile 32-bit accesses are how it is used.
    unsafe { reg(offset).write_volatile(value) }
}

fn read(offset: u64) -> u32 {
    // SAFETY: as in `write`.
    unsafe { reg(offset).read_volatile() }
}

/// This CPU's initial APIC ID (CPUID.1:EBX[31:24]): no MMIO, so the exception
/// path can use it before the APIC is mapped. QEMU numbers CPUs 0, 1, 2, ...
pub fn id() -> usize {
    let ebx: u64;
    // SAFETY: CPUID leaf 1 reads processor identification; rbx (reserved by
    // LLVM) is saved and restored around it.
    unsafe {
        asm!(
            "mov {tmp}, rbx",
            "cpuid",
            "xchg {tmp}, rbx",
            tmp = out(reg) ebx,
            inout("eax") 1u32 => _,
            out("ecx") _,
            out("edx") _,
            options(nomem, nostack, preserves_flags),
        )
    }
    (ebx >> 24) as usize & 0xff
}

/// Enables this CPU's APIC (software enable bit in the spurious vector register).
pub fn enable() {
    write(SVR, (1 << 8) | u32::from(SPURIOUS_VECTOR));
}

/// Signals the end of the interrupt being handled.
pub fn eoi() {
    write(EOI, 0);
}

fn send(dest: u32, command: u32) {
    while read(ICR_LOW) & ICR_PENDING != 0 {
        core::hint::spin_loop();
    }
    write(ICR_HIGH, dest << 24);
    write(ICR_LOW, command);
    while read(ICR_LOW) & ICR_PENDING != 0 {
        core::hint::spin_loop();
    }
}

/// Sends fixed interrupt `vector` to every CPU but this one.
pub fn send_all_but_self(vector: u8) {
    send(0, ICR_ALL_BUT_SELF | ICR_ASSERT | u32::from(vector));
}

/// INIT, then a SIPI to the trampoline page `page` (physical address `page <<
/// 12`), to the CPU with APIC ID `apic_id`; the caller sends the second SIPI
/// if the CPU does not check in.
pub fn init_sipi(apic_id: u32, page: u8) {
    send(apic_id, ICR_INIT | ICR_ASSERT);
    // The SDM's 10 ms; TCG needs none, but the delay is harmless.
    cpu::pause(100_000);
    sipi(apic_id, page);
}

/// One SIPI to trampoline page `page`.
pub fn sipi(apic_id: u32, page: u8) {
    send(apic_id, ICR_STARTUP | ICR_ASSERT | u32::from(page));
}
