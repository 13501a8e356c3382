//! The few privileged instructions the kernel uses, each behind a function.

use core::arch::asm;

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// Writes `value` to I/O port `port`.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust; the kernel only
    // touches COM1 (0x3f8..) and isa-debug-exit (0xf4), devices it owns.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads I/O port `port`.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `outb`: reading COM1's line status has no memory effects.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Writes a 32-bit `value` to I/O port `port`.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as in `outb` (isa-debug-exit ends the machine; nothing follows).
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Whether interrupts are enabled on this CPU.
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack; no other effect.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags)) }
    flags & RFLAGS_IF != 0
}

/// Disables interrupts on this CPU. A compiler barrier too (no `nomem`): memory
/// accesses are not moved across it, so a walk after it is inside the section.
pub fn cli() {
    // SAFETY: masking interrupts cannot break memory safety; the kernel's
    // handlers do not rely on running at any particular time.
    unsafe { asm!("cli", options(nostack, preserves_flags)) }
}

/// Enables interrupts on this CPU (a compiler barrier, as `cli`).
pub fn sti() {
    // SAFETY: the IDT is loaded on every CPU before its first `sti` (see
    // `idt::load`), so an interrupt finds a handler.
    unsafe { asm!("sti", options(nostack, preserves_flags)) }
}

/// Halts until the next interrupt.
pub fn hlt() {
    // SAFETY: waits for an interrupt; no memory effect.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) }
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads the TSC; no memory effect.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// CR2: the address of the last page fault.
pub fn cr2() -> u64 {
    let value: u64;
    // SAFETY: reads CR2; no memory effect.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// CR3.
pub fn cr3() -> u64 {
    let value: u64;
    // SAFETY: reads CR3; no memory effect.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Loads CR3: switches to the tables at `root`.
///
/// # Safety
///
/// `root` is a complete set of tables of the paging mode in force (4- or
/// 5-level, per CR4.LA57) that maps the kernel's code, data, stacks and
/// every memory-mapped device it uses at the addresses they have now.
pub unsafe fn write_cr3(root: u64) {
    // SAFETY: the caller's promise: every address in use stays mapped to the
    // same place, so nothing Rust holds changes meaning. Not `nomem`: the
    // table writes before it must be done (a compiler barrier).
    unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) }
}

/// Invalidates this CPU's translations of the page containing `va`.
pub fn invlpg(va: u64) {
    // SAFETY: dropping a cached translation only makes the next access walk the
    // tables again; it cannot make any access unsound. Not `nomem`: the entry
    // clears before it must have been issued.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

/// Loads the IDT register from the 10-byte descriptor at `descriptor`.
///
/// # Safety
///
/// `descriptor` describes an IDT that stays valid (and unchanged in what it
/// points to) for as long as interrupts may arrive, with handlers that follow
/// the interrupt calling convention.
pub unsafe fn lidt(descriptor: *const u8) {
    // SAFETY: the caller's promise.
    unsafe { asm!("lidt [{}]", in(reg) descriptor, options(readonly, nostack, preserves_flags)) }
}

/// Spins for about `n` pause instructions.
pub fn pause(n: u64) {
    for _ in 0..n {
        core::hint::spin_loop();
    }
}

/// CPUID leaf `leaf`, subleaf `subleaf`: `[eax, ebx, ecx, edx]`.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: CPUID only reads processor identification; no memory effect. LLVM
    // reserves rbx, so it is saved in another register around the instruction.
    unsafe {
        asm!(
            "mov {rbx_save:r}, rbx",
            "cpuid",
            "xchg {rbx_save:r}, rbx",
            rbx_save = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags)
        )
    }
    [eax, ebx, ecx, edx]
}

/// CR4.
pub fn cr4() -> u64 {
    let value: u64;
    // SAFETY: reads CR4; no memory effect.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Writes CR4.
///
/// # Safety
///
/// `value` keeps every bit the kernel relies on as it is (PAE, LA57: changing
/// LA57 with paging on faults) and sets only features CPUID reports; the
/// caller accepts the new checks it turns on (SMEP, SMAP) for every access that
/// follows on this CPU.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller's promise. Not `nomem`: accesses after it must see the
    // new checks (a compiler barrier).
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) }
}

/// Sets RFLAGS.AC: with CR4.SMAP, supervisor data accesses to user pages are
/// allowed again (`stac`).
pub fn stac() {
    // SAFETY: only relaxes SMAP's check for the accesses that follow; every
    // page the kernel reaches is its own. A compiler barrier (no `nomem`): the
    // probes after it are not moved before it. Needs CPUID SMAP (checked by
    // the caller; otherwise #UD, which the IDT reports).
    unsafe { asm!("stac", options(nostack)) }
}

/// Clears RFLAGS.AC (`clac`): with CR4.SMAP, a supervisor data access to a
/// user page faults.
pub fn clac() {
    // SAFETY: only makes SMAP's check apply to the accesses that follow (a
    // compiler barrier, as `stac`).
    unsafe { asm!("clac", options(nostack)) }
}
