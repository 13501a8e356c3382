//! The interrupt descriptor table: every exception prints what happened
//! (vector, error code, RIP, CR2) and exits QEMU with a failure code, instead
//! of triple-faulting silently, except a fault of one of `probe`'s accesses,
//! which resumes in the probe; vector [`SHOOTDOWN_VECTOR`] is the TLB
//! shootdown IPI.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::{cpu, serial, shootdown};

/// The shootdown IPI's vector.
pub const SHOOTDOWN_VECTOR: u8 = 0xf0;
/// The local APIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

// Exception stubs, 16 bytes apart from `exc_stubs` (stub `n` at
// `exc_stubs + 16 * n`): push a zero error code where the CPU pushes none,
// push the vector, go to `exc_common` with the frame address in rdi.
global_asm!(
    r#"
    .section .text
    .macro EXC_NOERR n
    .p2align 4
    pushq $0
    pushq $\n
    jmp exc_common
    .endm
    .macro EXC_ERR n
    .p2align 4
    pushq $\n
    jmp exc_common
    .endm

    .p2align 4
    .global exc_stubs
exc_stubs:
    EXC_NOERR 0
    EXC_NOERR 1
    EXC_NOERR 2
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28
    EXC_ERR 29
    EXC_ERR 30
    EXC_NOERR 31

    /* The handler returns only for a probe's fault (see `probe`), with the
     * RIP to resume at: rbx (callee-saved, so the handler keeps it) holds the
     * frame across the call; the resumed code gets its own rbx back. */
exc_common:
    pushq %rbx
    leaq 8(%rsp), %rdi
    movq %rsp, %rbx
    andq $-16, %rsp
    cld
    call exception_handler
    movq %rbx, %rsp
    popq %rbx
    movq %rax, 16(%rsp)
    addq $16, %rsp
    iretq

    /* The shootdown IPI: save the caller-saved registers (the kernel has no
     * SSE state), call the Rust handler, return. The CPU pushed 5 words on a
     * 16-aligned stack, the 9 pushes here make it 16-aligned again. */
    .p2align 4
    .global shootdown_stub
shootdown_stub:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    cld
    call shootdown_ipi
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    iretq

    .p2align 4
    .global spurious_stub
spurious_stub:
    iretq
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static exc_stubs: u8;
    static shootdown_stub: u8;
    static spurious_stub: u8;
}

/// The IDT: 256 gates of two words, written once by the BSP before any CPU
/// loads it. Atomics only so that it can be a plain `static`.
#[repr(C, align(16))]
struct Idt([AtomicU64; 512]);

static IDT: Idt = Idt([const { AtomicU64::new(0) }; 512]);

/// The descriptor `lidt` reads: limit, then base.
#[repr(C, packed)]
struct IdtDescriptor {
    limit: u16,
    base: u64,
}

static DESCRIPTOR: spin::Once<IdtDescriptor> = spin::Once::new();

fn set_gate(vector: u8, handler: u64) {
    // Interrupt gate (type 0xE, present, DPL 0), selector 0x08, no IST.
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((handler >> 16) & 0xffff) << 48;
    let high = handler >> 32;
    let v = usize::from(vector);
    // Relaxed: written before any CPU loads the IDT; the BSP's later `lidt` and
    // the APs' start (ordered by the SIPI, after these stores) come after.
    IDT.0[2 * v].store(low, Ordering::Relaxed);
    IDT.0[2 * v + 1].store(high, Ordering::Relaxed);
}

/// Fills the IDT (BSP, once).
pub fn init() {
    let stubs = &raw const exc_stubs as u64;
    for vector in 0..32u8 {
        set_gate(vector, stubs + 16 * u64::from(vector));
    }
    set_gate(SHOOTDOWN_VECTOR, &raw const shootdown_stub as u64);
    set_gate(SPURIOUS_VECTOR, &raw const spurious_stub as u64);
    DESCRIPTOR.call_once(|| IdtDescriptor {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: &raw const IDT as u64,
    });
}

/// Loads the IDT on this CPU (after [`init`]).
pub fn load() {
    let descriptor = DESCRIPTOR.get().expect("idt::init runs before idt::load");
    // SAFETY: the IDT is a static, filled by `init` before (the Once orders it)
    // and never changed after; every gate points to a stub above that follows
    // the interrupt convention (an exception returns only into a probe's
    // fixup, which expects every caller-saved register clobbered; the IPI stub
    // saves what it clobbers and `iretq`s).
    unsafe { cpu::lidt(core::ptr::from_ref(descriptor).cast()) }
}

/// Exception names, for the report.
const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 error",
    "alignment check",
    "machine check",
    "SIMD error",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

/// Called by `exc_common` with the address of `[vector, error, rip, cs, rflags,
/// rsp, ss]`. A fault of one of `probe`'s accesses returns the RIP to resume
/// at (`exc_common` puts it in the frame and returns from the exception);
/// anything else is reported and ends the machine with a failure.
#[unsafe(no_mangle)]
extern "C" fn exception_handler(frame: *const u64) -> u64 {
    // SAFETY: `exc_common` passes the stack address of the words the stub and
    // the CPU pushed: vector, error code, then the CPU's five-word frame.
    let [vector, error, rip, cs, rflags, rsp, _ss] = unsafe { frame.cast::<[u64; 7]>().read() };
    if let Some(resume) = crate::probe::fixup(vector, error, rip, cpu::cr2()) {
        return resume;
    }
    let name = NAMES.get(vector as usize).copied().unwrap_or("?");
    serial::print_unlocked(format_args!(
        "\nEXCEPTION on CPU {}: vector {vector} ({name}), error code {error:#x}, RIP {rip:#x}, \
         CS {cs:#x}, RFLAGS {rflags:#x}, RSP {rsp:#x}, CR2 {:#x}, CR3 {:#x}\n",
        crate::apic::id(),
        cpu::cr2(),
        cpu::cr3(),
    ));
    serial::exit(serial::EXIT_FAILURE)
}

/// The Rust side of the shootdown IPI.
#[unsafe(no_mangle)]
extern "C" fn shootdown_ipi() {
    shootdown::on_ipi();
}
