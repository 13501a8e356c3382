//! Everything of the kernel that is a RISC-V instruction or a device of QEMU
//! `virt`: the M-mode boot (PMP, delegation, `mret` to S-mode), the M-mode
//! trap handler (the shootdown IPI and the probe's page faults), satp,
//! `sfence.vma` and the remote fence by CLINT software interrupt, the `time`
//! counter, the 16550 UART and the SiFive test device that ends the boot.
//!
//! All inline assembly of the kernel lives here.
//!
//! # Privilege levels
//!
//! With `-bios none` QEMU starts every hart at 0x8000_0000 in M-mode, where
//! satp does not translate the hart's own accesses. `_start` gives S-mode all
//! of memory through PMP entry 0 (NAPOT over the whole address space, RWX),
//! lets it read `time` (mcounteren), delegates nothing, enables the machine
//! software interrupt and `mret`s to S-mode, where the kernel runs with satp.
//! Every trap is taken in M-mode (which runs untranslated, with the same
//! identity addresses): a machine software interrupt is the remote-fence IPI;
//! a load or store page fault during [`probe`] is the probe's answer; anything
//! else fails the boot.

use core::arch::{asm, global_asm};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::CPUS;

/// CLINT: machine software interrupt pending, one 32-bit word per hart.
const CLINT_MSIP: usize = 0x0200_0000;
/// The 16550 UART: transmit holding register and line status register.
const UART_THR: usize = 0x1000_0000;
const UART_LSR: usize = 0x1000_0005;
/// The SiFive test device: 0x5555 exits QEMU with status 0, `code << 16 |
/// 0x3333` with status `code`.
const TEST_DEVICE: usize = 0x10_0000;
/// QEMU `virt`'s timebase: 10 MHz.
const TIMEBASE_HZ: u64 = 10_000_000;
/// mcause of a machine software interrupt.
const MCAUSE_MSI: u64 = 1 << 63 | 3;
/// mcause of a load and a store/AMO page fault.
const MCAUSE_LOAD_PAGE_FAULT: u64 = 13;
const MCAUSE_STORE_PAGE_FAULT: u64 = 15;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .globl _start
_start:
    csrr t0, mhartid
    /* tp holds the hart index for the whole run (no TLS in this kernel). */
    mv tp, t0
    li t1, {cpus}
    bgeu t0, t1, 9f
    /* 64 KiB stack per hart: the top of hart n's is __stacks_start + (n+1) * 64 KiB. */
    la sp, __stacks_start
    addi t1, t0, 1
    slli t1, t1, 16
    add sp, sp, t1
    /* PMP entry 0: NAPOT over every address, R/W/X, so S-mode reaches all of it. */
    li t1, -1
    csrw pmpaddr0, t1
    li t1, 0x1f
    csrw pmpcfg0, t1
    /* S-mode may read time, cycle, instret. */
    li t1, 7
    csrw mcounteren, t1
    la t1, m_trap_entry
    csrw mtvec, t1
    csrw medeleg, zero
    csrw mideleg, zero
    /* Machine software interrupts (the shootdown IPI): M-mode interrupts are
       always enabled while the hart runs in S-mode. */
    li t1, 8
    csrw mie, t1
    csrw satp, zero
    /* mret to S-mode at s_entry, a0 = hart. */
    li t1, 3 << 11
    csrc mstatus, t1
    li t1, 1 << 11
    csrs mstatus, t1
    la t1, s_entry
    csrw mepc, t1
    mv a0, t0
    mret
9:  wfi
    j 9b

s_entry:
    bnez a0, 1f
    call kernel_main
1:  call secondary_main

    .align 4
m_trap_entry:
    addi sp, sp, -128
    sd ra, 0(sp)
    sd t0, 8(sp)
    sd t1, 16(sp)
    sd t2, 24(sp)
    sd t3, 32(sp)
    sd t4, 40(sp)
    sd t5, 48(sp)
    sd t6, 56(sp)
    sd a0, 64(sp)
    sd a1, 72(sp)
    sd a2, 80(sp)
    sd a3, 88(sp)
    sd a4, 96(sp)
    sd a5, 104(sp)
    sd a6, 112(sp)
    sd a7, 120(sp)
    csrr a0, mcause
    csrr a1, mepc
    csrr a2, mtval
    call m_trap
    csrw mepc, a0
    ld ra, 0(sp)
    ld t0, 8(sp)
    ld t1, 16(sp)
    ld t2, 24(sp)
    ld t3, 32(sp)
    ld t4, 40(sp)
    ld t5, 48(sp)
    ld t6, 56(sp)
    ld a0, 64(sp)
    ld a1, 72(sp)
    ld a2, 80(sp)
    ld a3, 88(sp)
    ld a4, 96(sp)
    ld a5, 104(sp)
    ld a6, 112(sp)
    ld a7, 120(sp)
    addi sp, sp, 128
    mret
"#,
    cpus = const CPUS,
);

/// The hart's index (`mhartid`, kept in `tp` since `_start`).
pub fn cpu_index() -> u64 {
    let hart: u64;
    // SAFETY: reads a register that `_start` set and nothing else writes.
    unsafe { asm!("mv {}, tp", out(reg) hart, options(nomem, nostack)) };
    hart
}

// ---------------------------------------------------------------------------
// satp and fences.
// ---------------------------------------------------------------------------

/// Writes satp and flushes this hart's TLB; `false` if the hart did not take
/// the mode (satp is WARL: an unsupported MODE leaves it unchanged).
///
/// # Safety
///
/// `satp` must select tables that map this kernel's code, data, stacks and
/// devices at their identity addresses.
pub unsafe fn enable_satp(satp: u64) -> bool {
    let got: u64;
    // SAFETY: the caller's promise: the code runs on at the same addresses.
    unsafe {
        asm!(
            "sfence.vma",
            "csrw satp, {new}",
            "sfence.vma",
            "csrr {got}, satp",
            new = in(reg) satp,
            got = out(reg) got,
            options(nostack)
        )
    };
    got == satp
}

/// Orders this hart's page-table stores before its later implicit accesses
/// and before the IPI stores that ask other harts to fence.
pub fn tables_written() {
    // SAFETY: a fence and a local TLB flush; no memory is accessed.
    unsafe { asm!("fence rw, rw", "sfence.vma", options(nostack)) };
}

/// The shootdown round: incremented by hart 0 before it sends the IPIs.
static SHOOTDOWN: AtomicU64 = AtomicU64::new(0);
/// The last round each hart acknowledged (after its `sfence.vma`).
static SHOOTDOWN_ACK: [AtomicU64; CPUS as usize] = [const { AtomicU64::new(0) }; CPUS as usize];
/// Shootdown rounds sent.
pub static SHOOTDOWNS: AtomicU64 = AtomicU64::new(0);

/// Invalidates the translations of `va .. va + len` (leaves of `step` bytes)
/// on this hart (`sfence.vma va, x0` per leaf) and then on every other hart:
/// a CLINT software interrupt to each, whose M-mode handler runs
/// `sfence.vma` and acknowledges; returns when every hart has. With
/// `broken-no-remote-fence` the other harts are not asked.
pub fn flush_tlb_range(va: u64, len: u64, step: u64) {
    // SAFETY: a fence; no memory is accessed.
    unsafe { asm!("fence rw, rw", options(nostack)) };
    let mut at = va;
    while at < va + len {
        // SAFETY: a local TLB invalidation of one address.
        unsafe { asm!("sfence.vma {}, zero", in(reg) at, options(nostack)) };
        at += step;
    }
    if cfg!(feature = "broken-no-remote-fence") {
        return;
    }
    // AcqRel: Release orders the page-table stores (and the `fence` above)
    // before the round the handlers read; only hart 0 increments it.
    let round = SHOOTDOWN.fetch_add(1, Ordering::AcqRel) + 1;
    // Relaxed: a statistic.
    SHOOTDOWNS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `fence` orders the stores above before the MMIO stores below.
    unsafe { asm!("fence rw, o", options(nostack)) };
    for hart in 1..CPUS as usize {
        // SAFETY: the CLINT's msip word of `hart`, identity-mapped device
        // memory; a volatile 32-bit store.
        unsafe { core::ptr::write_volatile((CLINT_MSIP + 4 * hart) as *mut u32, 1) };
    }
    let (start, _) = counter();
    for ack in &SHOOTDOWN_ACK[1..] {
        // Acquire: pairs with the handler's Release store after its
        // `sfence.vma`: once seen, that hart's TLB holds none of the old
        // translations.
        while ack.load(Ordering::Acquire) < round {
            if counter().0 - start > 10 * TIMEBASE_HZ {
                print_line(format_args!(
                    "pagepin-qemu FAILED: a hart did not acknowledge the shootdown"
                ));
                exit(5);
            }
            core::hint::spin_loop();
        }
    }
}

/// Per hart: a probe is in progress / the probe faulted.
static PROBING: [AtomicBool; CPUS as usize] = [const { AtomicBool::new(false) }; CPUS as usize];
static PROBE_FAULTED: [AtomicBool; CPUS as usize] =
    [const { AtomicBool::new(false) }; CPUS as usize];

/// Reads the 64-bit word at `va` through this hart's MMU: `None` if the
/// access takes a page fault (the M-mode handler skips the load).
pub fn probe(va: u64) -> Option<u64> {
    let hart = cpu_index() as usize;
    // Relaxed (both): read and written by this hart only (the trap handler
    // runs on it).
    PROBE_FAULTED[hart].store(false, Ordering::Relaxed);
    PROBING[hart].store(true, Ordering::Relaxed);
    let value: u64;
    // SAFETY: a load through the MMU; a page fault is caught by `m_trap`,
    // which skips this 4-byte instruction (no compressed encoding).
    unsafe {
        asm!(
            ".option push",
            ".option norvc",
            "li {v}, 0",
            "ld {v}, 0({a})",
            ".option pop",
            a = in(reg) va,
            v = out(reg) value,
            options(nostack)
        )
    };
    PROBING[hart].store(false, Ordering::Relaxed);
    if PROBE_FAULTED[hart].load(Ordering::Relaxed) {
        None
    } else {
        Some(value)
    }
}

/// Writes `value` at `va` through this hart's MMU: `false` on a page fault.
pub fn probe_store(va: u64, value: u64) -> bool {
    let hart = cpu_index() as usize;
    // Relaxed (both): this hart's own flags.
    PROBE_FAULTED[hart].store(false, Ordering::Relaxed);
    PROBING[hart].store(true, Ordering::Relaxed);
    // SAFETY: a store through the MMU to a data page the caller owns; a page
    // fault is caught and skipped as in `probe`.
    unsafe {
        asm!(
            ".option push",
            ".option norvc",
            "sd {v}, 0({a})",
            ".option pop",
            a = in(reg) va,
            v = in(reg) value,
            options(nostack)
        )
    };
    PROBING[hart].store(false, Ordering::Relaxed);
    !PROBE_FAULTED[hart].load(Ordering::Relaxed)
}

/// Traps taken that failed the boot (a nested one stops without printing).
static FATAL: AtomicU32 = AtomicU32::new(0);

/// Every trap, in M-mode: returns the address to `mret` to.
#[unsafe(no_mangle)]
extern "C" fn m_trap(mcause: u64, mepc: u64, mtval: u64) -> u64 {
    let hart = cpu_index() as usize;
    if mcause == MCAUSE_MSI {
        // SAFETY: this hart's CLINT msip word; clearing it ends the interrupt.
        unsafe { core::ptr::write_volatile((CLINT_MSIP + 4 * hart) as *mut u32, 0) };
        // Acquire: pairs with the sender's AcqRel increment.
        let round = SHOOTDOWN.load(Ordering::Acquire);
        // SAFETY: flushes this hart's address-translation caches.
        unsafe { asm!("sfence.vma", options(nostack)) };
        // Release: pairs with the sender's Acquire wait; the flush is done.
        SHOOTDOWN_ACK[hart].store(round, Ordering::Release);
        return mepc;
    }
    // Relaxed: this hart's own flag.
    let probing = PROBING[hart].load(Ordering::Relaxed);
    if probing && (mcause == MCAUSE_LOAD_PAGE_FAULT || mcause == MCAUSE_STORE_PAGE_FAULT) {
        PROBE_FAULTED[hart].store(true, Ordering::Relaxed);
        return mepc + 4;
    }
    // Relaxed: a counter only.
    if FATAL.fetch_add(1, Ordering::Relaxed) < 4 {
        print_line(format_args!(
            "pagepin-qemu FAILED: trap on hart {hart}: mcause={mcause:#x} mepc={mepc:#x} mtval={mtval:#x}"
        ));
    }
    exit(3)
}

// ---------------------------------------------------------------------------
// Time, exit, halt.
// ---------------------------------------------------------------------------

/// The `time` CSR and its frequency.
pub fn counter() -> (u64, u64) {
    let time: u64;
    // SAFETY: reads a counter (mcounteren.TM is set).
    unsafe { asm!("rdtime {}", out(reg) time, options(nomem, nostack)) };
    (time, TIMEBASE_HZ)
}

/// Ends the boot: QEMU exits with status `code` (0: pass).
pub fn exit(code: u32) -> ! {
    let value = if code == 0 {
        0x5555
    } else {
        code << 16 | 0x3333
    };
    // SAFETY: the SiFive test device, identity-mapped.
    unsafe { core::ptr::write_volatile(TEST_DEVICE as *mut u32, value) };
    halt()
}

/// Waits for interrupts forever (a halted hart still answers shootdowns).
pub fn halt() -> ! {
    loop {
        // SAFETY: waits for an interrupt.
        unsafe { asm!("wfi", options(nomem, nostack)) };
    }
}

// ---------------------------------------------------------------------------
// UART.
// ---------------------------------------------------------------------------

fn uart_put(byte: u8) {
    // SAFETY: the 16550's registers, identity-mapped device memory; volatile.
    unsafe {
        while core::ptr::read_volatile(UART_LSR as *const u8) & (1 << 5) == 0 {}
        core::ptr::write_volatile(UART_THR as *mut u8, byte);
    }
}

/// Writes to the UART (for `core::fmt`).
pub struct Uart;

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            uart_put(b);
        }
        Ok(())
    }
}

/// Serializes whole lines on the UART across harts.
static UART_LOCK: AtomicBool = AtomicBool::new(false);

/// Prints one formatted line under the UART lock (printing anyway if it
/// cannot be taken for a long time).
pub fn print_line(args: fmt::Arguments<'_>) {
    let mut spins = 0u32;
    // Acquire: pairs with the Release unlock below, so lines never interleave.
    while UART_LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins > 50_000_000 {
            break;
        }
        core::hint::spin_loop();
    }
    let _ = fmt::write(&mut Uart, args);
    let _ = fmt::Write::write_str(&mut Uart, "\n");
    // Release: the line's UART writes are done before the next holder starts.
    UART_LOCK.store(false, Ordering::Release);
}

/// Prints a line on the UART.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::arch::print_line(format_args!($($arg)*)) };
}
