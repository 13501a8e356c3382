//! COM1 output and the isa-debug-exit device.

use core::fmt::{self, Write};

use crate::cpu;

const COM1: u16 = 0x3f8;
/// isa-debug-exit's port (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const DEBUG_EXIT: u16 = 0xf4;
/// The value written on success: QEMU exits with `(0x10 << 1) | 1 = 33`, which
/// `run.sh` maps to 0.
pub const EXIT_SUCCESS: u32 = 0x10;
/// The value written on failure (QEMU exits with 35).
pub const EXIT_FAILURE: u32 = 0x11;

/// Serializes lines from several CPUs.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

struct Com1;

impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

fn put(b: u8) {
    // Line status bit 5: the transmit holding register is empty.
    while cpu::inb(COM1 + 5) & 0x20 == 0 {
        core::hint::spin_loop();
    }
    cpu::outb(COM1, b);
}

/// Prints under the line lock.
pub fn print(args: fmt::Arguments<'_>) {
    let _line = LOCK.lock();
    let _ = Com1.write_fmt(args);
}

/// Prints without the lock: for the exception path, where the faulting CPU may
/// hold it.
pub fn print_unlocked(args: fmt::Arguments<'_>) {
    let _ = Com1.write_fmt(args);
}

/// Ends the machine with `value` (see [`EXIT_SUCCESS`]).
pub fn exit(value: u32) -> ! {
    cpu::outl(DEBUG_EXIT, value);
    // Without isa-debug-exit nothing happens: stop here.
    loop {
        cpu::cli();
        cpu::hlt();
    }
}

/// `println!` to COM1.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::serial::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
