//! pagepin's x86_64 test kernel (QEMU, PVH direct boot, 4 CPUs, 4- or 5-level
//! paging). Two modes:
//!
//! - `mode=race` (the default): GUP-fast pins through the live MMU tables
//!   while another CPU truncates. See `race` for what runs and what is
//!   checked.
//! - `mode=sweep`: CPU 0 compares pagepin's walk of random tables with what
//!   the MMU does at sampled addresses (faults caught by the IDT, with CR2);
//!   the APs come up and halt. See `sweep`.
//!
//! `boot` says how the kernel gets to 64-bit Rust, `tables` how it implements
//! pagepin's traits, `probe` how a faulting access returns.
//!
//! The kernel command line (`-append`) takes `mode=race|sweep rounds=N
//! seed=N cpus=N`, and `fault=1` to check the exception path (a read of the
//! unmapped file region right after the switch to the kernel's tables: the
//! boot must end with the page fault reported and a failure status). The last
//! line on COM1 is
//!
//! `pagepin-qemu arch=x86_64 mode=<race|sweep> cpus=<n> granule=4k levels=<4|5> checks=<n> mismatches=<n> violations=<n>`
//!
//! (race: `checks` counts the pinned pages checked, `mismatches` is 0; sweep:
//! MMU accesses compared with pagepin's answer, and the disagreements), and
//! the kernel exits through isa-debug-exit with `serial::EXIT_SUCCESS` only if
//! there was no violation and no mismatch.

#![no_std]
#![no_main]

mod apic;
mod boot;
mod cpu;
mod idt;
mod probe;
mod race;
mod serial;
mod shootdown;
mod sweep;
mod tables;
mod units;

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use pagepin::arch::x86_64::{Paging4Level, Paging5Level};
use pagepin::guard::Epoch;
use pagepin::table::{
    FramePool, MapRequest, MemType, PagingFormat, Perms, PhysAddr, TableBuilder, VirtAddr,
};

use shootdown::MAX_CPUS;
use tables::{FRAMES, IdentityTables, IpiRetire};

/// What the command line asks for.
#[derive(Debug, Clone, Copy)]
struct Config {
    rounds: u64,
    seed: u64,
    cpus: usize,
    fault: bool,
    /// `mode=sweep`: the MMU sweep (`sweep`) instead of the race.
    sweep: bool,
    /// `guard=epoch`: the race's walkers use an epoch read section with
    /// interrupts on instead of interrupts off (see `race::walker`).
    epoch: bool,
    /// `stretch=N`: the walkers' memory-map lookups spin (see `race::Stretched`).
    stretch: u64,
    /// `stretch2m=1`: the stretch also waits on every lookup that answers a
    /// whole 2 MiB unit (see `race::Stretched`).
    stretch_2m: bool,
    /// `stall=N`: one GUP-fast call in N of each walker stalls in its first
    /// lookup until CPU 0 has truncated the slot the page is mapped at and
    /// mapped its unit elsewhere (see `race::Stretched`).
    stall: u64,
    /// `unmap=leaves`: truncates of 2 MiB slots clear the leaf in place and
    /// never detach its table (see `race::LeafUnmapper`).
    unmap_leaves: bool,
    /// `layout=unversioned`: the memory map keeps no layout version (see
    /// `units`).
    unversioned: bool,
}

impl Config {
    const DEFAULT: Config = Config {
        rounds: 1000,
        seed: 0x1234_5678,
        cpus: 4,
        fault: false,
        sweep: false,
        epoch: false,
        stretch: 0,
        stretch_2m: false,
        stall: 0,
        unmap_leaves: false,
        unversioned: false,
    };

    /// Parses `key=value` words of the PVH command line (start info offset 24:
    /// `cmdline_paddr`, a NUL-terminated string).
    fn parse(start_info: u64) -> Config {
        let mut config = Config::DEFAULT;
        if start_info == 0 {
            return config;
        }
        // SAFETY: QEMU's PVH loader passes the start info's physical address in
        // ebx; it lies in low RAM, identity-mapped by the boot tables, and is
        // read before anything is written below 1 MiB.
        let (magic, cmdline) = unsafe {
            let info = start_info as *const u8;
            (
                info.cast::<u32>().read_volatile(),
                info.add(24).cast::<u64>().read_unaligned(),
            )
        };
        if magic != 0x336e_c578 || cmdline == 0 || cmdline >= 1 << 30 {
            return config;
        }
        let mut line = [0u8; 256];
        let mut len = 0;
        while len < line.len() {
            // SAFETY: the command line is a NUL-terminated string in low RAM
            // (checked below 1 GiB, identity-mapped); reading stops at the NUL.
            let b = unsafe { ((cmdline + len as u64) as *const u8).read_volatile() };
            if b == 0 {
                break;
            }
            line[len] = b;
            len += 1;
        }
        let text = core::str::from_utf8(&line[..len]).unwrap_or("");
        for word in text.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            if key == "mode" {
                config.sweep = value == "sweep";
                continue;
            }
            if key == "guard" {
                config.epoch = value == "epoch";
                continue;
            }
            if key == "unmap" {
                config.unmap_leaves = value == "leaves";
                continue;
            }
            if key == "layout" {
                config.unversioned = value == "unversioned";
                continue;
            }
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "rounds" => config.rounds = value,
                "seed" => config.seed = value,
                "cpus" => config.cpus = (value as usize).clamp(1, MAX_CPUS),
                "fault" => config.fault = value != 0,
                "stretch" => config.stretch = value,
                "stretch2m" => config.stretch_2m = value != 0,
                "stall" => config.stall = value,
                _ => {}
            }
        }
        config
    }
}

/// Paging levels in force (4 or 5), for the APs.
static LEVELS: AtomicUsize = AtomicUsize::new(4);
/// The kernel tables' root, for the APs.
static ROOT: AtomicU64 = AtomicU64::new(0);
static SEED: AtomicU64 = AtomicU64::new(0);
/// APs that reached 64-bit Rust and are ready for IPIs.
static CHECKED_IN: AtomicUsize = AtomicUsize::new(0);
/// CPU 0 has mapped the file: walkers may start.
static GO: AtomicBool = AtomicBool::new(false);
/// A sweep boot: the APs only check in and halt.
static SWEEP: AtomicBool = AtomicBool::new(false);
/// The walkers' `stretch=N`.
static STRETCH: AtomicU64 = AtomicU64::new(0);

/// AP stacks (64 KiB each): only their addresses are taken, the APs' `rsp`
/// uses them.
#[repr(C, align(16))]
struct Stack([u8; 64 << 10]);
static mut AP_STACKS: [Stack; MAX_CPUS] = [const { Stack([0; 64 << 10]) }; MAX_CPUS];

/// The BSP's entry from `boot`.
#[unsafe(no_mangle)]
extern "C" fn kmain_bsp(start_info: u32, la57: u32) -> ! {
    let start_tsc = cpu::rdtsc();
    let config = Config::parse(u64::from(start_info));
    let levels = if la57 != 0 { 5 } else { 4 };
    println!(
        "pagepin x86_64 PVH kernel: {levels}-level paging, mode={} rounds={} seed={} cpus={} guard={} stretch={} stretch2m={} stall={} unmap={} layout={}",
        if config.sweep { "sweep" } else { "race" },
        config.rounds,
        config.seed,
        config.cpus,
        if config.epoch { "epoch" } else { "irq-off" },
        config.stretch,
        u8::from(config.stretch_2m),
        config.stall,
        if config.unmap_leaves {
            "leaves"
        } else {
            "tables"
        },
        if config.unversioned {
            "unversioned"
        } else {
            "versioned"
        },
    );
    idt::init();
    idt::load();
    let kernel_end = &raw const boot::__kernel_end as u64;
    assert!(
        kernel_end <= race::DATA_BASE && race::DATA_BASE <= sweep::POOL_BASE,
        "kernel image overlaps the data pages or the sweep's pool"
    );
    race::init(race::Options {
        unmap_leaves: config.unmap_leaves,
        versioned: !config.unversioned,
        fail_fast: (config.stretch != 0 || config.stall != 0) && !config.sweep,
        stretch_2m: config.stretch_2m,
        stall_every: config.stall,
    });
    if levels == 5 {
        run::<Paging5Level>(config, levels, start_tsc)
    } else {
        run::<Paging4Level>(config, levels, start_tsc)
    }
}

/// Picks the retire hook for the walk guard of the boot (`guard=`): its domain
/// is the walkers' (`race::walker` picks the same way, by [`tables::EPOCH`]).
fn run<F: PagingFormat>(config: Config, levels: usize, start_tsc: u64) -> ! {
    if config.epoch {
        // Before the builder (its retire hook holds the epoch) and the SIPIs
        // (which order it for the APs); set in `guard=epoch` boots only.
        let epoch = tables::EPOCH
            .call_once(|| Epoch::new().expect("the first and only epoch of brand EpochTables"));
        run_with::<F, _>(config, levels, start_tsc, IpiRetire::with_epoch(epoch))
    } else {
        run_with::<F, _>(config, levels, start_tsc, IpiRetire::new())
    }
}

fn run_with<F: PagingFormat, D>(
    config: Config,
    levels: usize,
    start_tsc: u64,
    retire: IpiRetire<D>,
) -> ! {
    let mut slots = [PhysAddr(0); FRAMES];
    for (slot, pa) in slots.iter_mut().zip(tables::frame_pas()) {
        *slot = pa;
    }
    // SAFETY: the frames are the `TABLE_FRAMES` static's (`frame_pas`), each
    // listed once, memory nothing else uses: only this builder writes them (as
    // page tables), and the MMUs and the walkers read them only as the tables
    // it publishes. The boot tables in CR3 until `write_cr3` below are not
    // among them, and the sweep's tables are its own static.
    let pool = unsafe { FramePool::new(&mut slots) };
    let mut tables = match TableBuilder::<F, _, _>::new(&IdentityTables::BUILDER, pool, retire) {
        Ok(tables) => tables,
        Err(e) => panic!("table builder: {e}"),
    };
    // The kernel's identity map: RAM 0..2 GiB in 2 MiB leaves (kernel, stacks,
    // tables, trampoline, data pages), and the xAPIC page uncached (PCD|PWT:
    // PAT entry 3, UC).
    let kernel = Perms::READ | Perms::WRITE | Perms::EXEC | Perms::ACCESSED | Perms::DIRTY;
    let identity = [
        MapRequest::new(VirtAddr(0), PhysAddr(0), race::RAM_END, 2 << 20).with_perms(kernel),
        MapRequest::new(
            VirtAddr(apic::APIC_BASE),
            PhysAddr(apic::APIC_BASE),
            4096,
            4096,
        )
        .with_perms(Perms::READ | Perms::WRITE | Perms::ACCESSED | Perms::DIRTY)
        .with_mem_type(MemType(3)),
    ];
    for req in &identity {
        // SAFETY: the kernel's identity (direct) map, never unmapped: the
        // xAPIC page is the kernel's alone, and so is all of RAM for the whole
        // run. Its data pages go to the file and back (`race::allocate`, a
        // truncate's free) but never to an owner outside the kernel, and
        // GUP-fast never walks these VAs (the walkers pin file VAs only), so
        // through this mapping nobody pins a freed page; no truncate exists
        // yet.
        if let Err(e) = unsafe { tables.map(req) } {
            panic!("identity map: {e}");
        }
    }
    let root = tables.root();
    // SAFETY: the new tables identity-map 0..2 GiB, which holds everything the
    // kernel uses now (image, stacks, the tables themselves, the start info) at
    // the addresses the boot tables gave them, plus the xAPIC page (not used
    // before this point); the paging mode matches CR4.LA57 (`F` was chosen from
    // the same CPUID bit the entry path used).
    unsafe { cpu::write_cr3(root.0) };
    if config.fault {
        let unmapped = race::file_va(levels) as *const u64;
        // SAFETY: the address is aligned and nothing is mapped there yet, so the
        // read faults before it yields a value, and the page-fault handler ends
        // the machine: no Rust code ever sees memory through this pointer.
        let value = unsafe { unmapped.read_volatile() };
        println!("read {value:#x} from the unmapped file region: the fault did not happen");
    }
    apic::enable();
    // Relaxed: published to the APs by the SIPI, after these stores.
    LEVELS.store(levels, Ordering::Relaxed);
    ROOT.store(root.0, Ordering::Relaxed);
    SEED.store(config.seed, Ordering::Relaxed);
    SWEEP.store(config.sweep, Ordering::Relaxed);
    STRETCH.store(config.stretch, Ordering::Relaxed);
    let cpus = start_aps(config.cpus, levels, root);
    shootdown::set_online(cpus);
    if config.sweep {
        sweep_boot::<F>(config, levels, cpus, start_tsc);
    }
    println!("{cpus} CPUs online; file at {:#x}", race::file_va(levels));
    // Release: the walkers' Acquire load of GO sees the memory map and tables.
    GO.store(true, Ordering::Release);
    let writer = race::writer(
        &mut tables,
        race::file_va(levels),
        config.rounds,
        config.seed,
    );
    race::wait_finished(cpus - 1);
    race::check_idle();
    let mut pins = 0;
    for cpu in 1..cpus {
        let c = race::counts(cpu);
        println!(
            "CPU {cpu}: {} GUP calls, {} pages pinned ({} through the 1 GiB leaf), {} changed under the walk, {} refused (truncating/free)",
            c.calls, c.pins, c.giant_pins, c.changed, c.refused
        );
        pins += c.pins;
    }
    let retire = tables.retire_hook();
    println!(
        "CPU 0: {} truncates ({} of the 1 GiB slot), {} shootdowns ({} IPIs handled), {} page tables retired, {} poisoned and reused",
        writer.truncates,
        writer.giant_truncates,
        writer.shootdowns,
        shootdown::handled(),
        retire.retired,
        retire.reused
    );
    println!(
        "CPU 0: 2 MiB units split {} times, merged {} times (while free); {} truncated 2 MiB slots mapped again at once with the same leaf entry over the unit split or merged",
        writer.splits, writer.merges, writer.remaps
    );
    if config.stall != 0 {
        println!(
            "CPU 0: {} stalled walkers answered ({} slots truncated for them, {} of those units mapped again at another slot)",
            writer.stalls_answered, writer.stall_truncates, writer.relocations
        );
    }
    println!("TSC ticks since entry: {}", cpu::rdtsc() - start_tsc);
    let violations = race::violations();
    println!(
        "violations: {violations}, of which {} walker reads of freed page-table frames",
        tables::freed_reads()
    );
    println!(
        "race: rounds={} pins={pins} truncates={}",
        config.rounds, writer.truncates
    );
    // The race has no MMU oracle: every pinned page is checked (its
    // generation, owner slot, a write read back), and a failed check is a
    // violation; `mismatches` is the sweep's count and 0 here.
    println!(
        "pagepin-qemu arch=x86_64 mode=race cpus={cpus} granule=4k levels={levels} checks={pins} mismatches=0 violations={violations}"
    );
    serial::exit(if violations == 0 && cpus == config.cpus {
        serial::EXIT_SUCCESS
    } else {
        serial::EXIT_FAILURE
    })
}

/// A sweep boot on CPU 0 (the APs are up and halted): `sweep::run`, its
/// counts, the summary line, the exit.
fn sweep_boot<F: PagingFormat>(config: Config, levels: usize, cpus: usize, start_tsc: u64) -> ! {
    // Release: the APs' Acquire load of GO; they halt (SWEEP is set).
    GO.store(true, Ordering::Release);
    let c = sweep::run::<F>(config.rounds, config.seed, levels);
    println!(
        "sweep: {} rounds; leaves mapped: {} of 4 KiB, {} of 2 MiB, {} of 1 GiB ({} refused as overlapping); {} table entries above leaves changed",
        c.rounds, c.leaves[0], c.leaves[1], c.leaves[2], c.overlaps, c.mutations
    );
    println!(
        "sweep: samples: {} mapped ({} user, {} read-only, {} no-exec), {} holes, {} non-canonical; {} faults taken",
        c.mapped, c.user, c.read_only, c.no_exec, c.holes, c.non_canonical, c.faults
    );
    println!("TSC ticks since entry: {}", cpu::rdtsc() - start_tsc);
    let violations = c.violations + race::violations();
    println!(
        "pagepin-qemu arch=x86_64 mode=sweep cpus={cpus} granule=4k levels={levels} checks={} mismatches={} violations={violations}",
        c.checks, c.mismatches
    );
    serial::exit(
        if violations == 0 && c.mismatches == 0 && c.checks > 0 && cpus == config.cpus {
            serial::EXIT_SUCCESS
        } else {
            serial::EXIT_FAILURE
        },
    )
}

/// Starts CPUs 1..`cpus` with INIT-SIPI-SIPI; returns how many CPUs run
/// (CPU 0 included).
fn start_aps(cpus: usize, levels: usize, root: PhysAddr) -> usize {
    let start = &raw const boot::ap_tramp_start;
    let len = &raw const boot::ap_tramp_end as usize - start as usize;
    let tramp = boot::TRAMPOLINE as *mut u8;
    // SAFETY: the trampoline page (0x8000) is identity-mapped RAM that no Rust
    // object occupies (the image starts at 1 MiB), nobody runs there yet, and
    // the code is smaller than a page; copying bytes from the image is fine.
    unsafe { core::ptr::copy_nonoverlapping(start, tramp, len.min(4096)) };
    let put = |sym: *const u8, value: u64, bytes: usize| {
        let at = boot::in_trampoline(sym) as *mut u8;
        // SAFETY: `at` is inside the trampoline copy (a label of it), and the
        // fields are 4 or 8 bytes wide as written in `boot`; no AP reads them
        // before the SIPI that follows.
        unsafe {
            match bytes {
                4 => at.cast::<u32>().write_volatile(value as u32),
                _ => at.cast::<u64>().write_volatile(value),
            }
        }
    };
    put(&raw const boot::tramp_la57, u64::from(levels == 5), 4);
    put(&raw const boot::tramp_cr3, root.0, 4);
    put(
        &raw const boot::tramp_entry,
        ap_entry as *const () as u64,
        8,
    );
    let mut online = 1;
    for id in 1..cpus {
        let stacks = &raw mut AP_STACKS;
        // The stack top, minus 8: `ap_entry` is entered by a jump, and the ABI
        // wants rsp + 8 16-aligned at a function's first instruction.
        let top = stacks as u64 + (id as u64 + 1) * core::mem::size_of::<Stack>() as u64 - 8;
        put(&raw const boot::tramp_stack, top, 8);
        // Acquire: pairs with the AP's Release check-in.
        let before = CHECKED_IN.load(Ordering::Acquire);
        apic::init_sipi(id as u32, (boot::TRAMPOLINE >> 12) as u8);
        let mut up = false;
        for attempt in 0..2 {
            for _ in 0..2_000_000 {
                // Acquire: as above.
                if CHECKED_IN.load(Ordering::Acquire) > before {
                    up = true;
                    break;
                }
                core::hint::spin_loop();
            }
            if up {
                break;
            }
            if attempt == 0 {
                apic::sipi(id as u32, (boot::TRAMPOLINE >> 12) as u8);
            }
        }
        if !up {
            println!("CPU {id} did not start");
            break;
        }
        online += 1;
    }
    online
}

/// Where an AP arrives from the trampoline (64-bit, on its own stack, on the
/// kernel's tables).
extern "C" fn ap_entry() -> ! {
    idt::load();
    apic::enable();
    let cpu = apic::id();
    cpu::sti();
    // Release: CPU 0 (Acquire) counts this CPU as ready for IPIs.
    CHECKED_IN.fetch_add(1, Ordering::Release);
    // Acquire: pairs with CPU 0's Release store of GO.
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    // Relaxed: written before the SIPI.
    if SWEEP.load(Ordering::Relaxed) {
        cpu::cli();
        loop {
            cpu::hlt();
        }
    }
    // Relaxed: written before the SIPI and GO.
    let root = PhysAddr(ROOT.load(Ordering::Relaxed));
    let levels = LEVELS.load(Ordering::Relaxed);
    let seed = SEED.load(Ordering::Relaxed);
    let stretch = STRETCH.load(Ordering::Relaxed);
    let file_va = race::file_va(levels);
    if levels == 5 {
        race::walker::<Paging5Level>(cpu, root, file_va, seed, stretch);
    } else {
        race::walker::<Paging4Level>(cpu, root, file_va, seed, stretch);
    }
    loop {
        cpu::hlt();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    serial::print_unlocked(format_args!("\nPANIC on CPU {}: {info}\n", apic::id()));
    serial::exit(serial::EXIT_FAILURE)
}
