//! What every kernel of this crate (the race kernel at EL1, the sweep and
//! stage-2 kernels at EL2) uses of the QEMU `virt` machine and the CPU alike:
//! the PL011 UART with a line lock, semihosting's exit, halting, and the CPU's
//! index. Each kernel's `arch` or `el2` module re-exports them beside its own
//! exception-level code (PSCI conduit, timer, vectors).

use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// PL011 UART data register on QEMU `virt`.
const UART_DR: usize = 0x0900_0000;
/// PL011 flag register: bit 5 is "transmit FIFO full".
const UART_FR: usize = 0x0900_0018;

/// One byte to the UART.
fn uart_put(byte: u8) {
    // SAFETY: the PL011's registers are device memory at these addresses,
    // identity-mapped (or physical while the MMU is off); volatile accesses.
    unsafe {
        while core::ptr::read_volatile(UART_FR as *const u32) & (1 << 5) != 0 {}
        core::ptr::write_volatile(UART_DR as *mut u32, u32::from(byte));
    }
}

/// Writes to the UART (for `core::fmt`).
pub struct Uart;

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                uart_put(b'\r');
            }
            uart_put(b);
        }
        Ok(())
    }
}

/// Serializes whole lines on the UART across CPUs.
static UART_LOCK: AtomicBool = AtomicBool::new(false);

/// Prints one formatted line (`args` plus a newline) under the UART lock. If
/// the lock cannot be taken for a long time (a CPU died holding it), prints
/// anyway. The lock is an exclusive RMW: the race kernel prints only with its
/// MMU on; the EL2 kernels, whose MMU stays off, rely on QEMU performing
/// exclusives on Device memory (hardware need not).
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

/// Semihosting SYS_EXIT (ADP_Stopped_ApplicationExit with `code`): QEMU run
/// with `-semihosting` exits with status `code`.
pub fn semihosting_exit(code: u64) -> ! {
    let block = [0x2_0026u64, code];
    // SAFETY: with semihosting enabled QEMU reads the two-word block and
    // exits; without it, HLT is an undefined instruction and the kernel's
    // exception handler stops the CPU (the run script's timeout then fails the
    // boot).
    unsafe {
        asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr(), options(nostack));
    }
    halt()
}

/// Stops this CPU for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: waits for an event; no memory effects.
        unsafe { asm!("wfe", options(nomem, nostack)) };
    }
}

/// This CPU's index (MPIDR_EL1.Aff0; QEMU `virt` numbers CPUs 0..n there).
pub fn cpu_index() -> u64 {
    let mpidr: u64;
    // SAFETY: reading an ID register.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    mpidr & 0xff
}
