//! cargo run --example hypervisor
//!
//! How a hypervisor (VMM) plugs pagepin in: guest memory is mapped by the
//! second stage of translation, guest-physical → host-physical, and a device
//! assigned to the guest DMAs into guest buffers, so the VMM pins those
//! buffers' host frames by walking the second-stage tables with GUP-fast.
//! When the guest gives memory back (balloon inflation, or hot-unplug of a
//! memory slot) the VMM truncates the host memory that backed it: the device's
//! pins are revoked through a **lease**, the device driver honours the
//! revocation by stopping DMA, unpinning and dropping the lease, and only then
//! does the host free the memory (`drain_with_leases`).
//!
//! The same code runs over two second-stage formats: aarch64 stage 2
//! (`Stage2G4K40`: 4 KiB granule, 40-bit IPAs, a start level of two
//! concatenated tables, built with `TableBuilder::with_root`) and x86 EPT
//! (`Ept4Level`), and, in `run_riscv`, the RISC-V hypervisor extension's
//! G-stage (`Sv39x4`: 41-bit guest-physical addresses, a 16 KiB root of four
//! concatenated tables, also built with `with_root`; U set on every leaf,
//! since G-stage accesses are user-mode accesses).
//!
//! Everything above the `Demo` marker is the **glue** a VMM writes: the
//! per-format constants, the memory map with a condition-variable waiter that
//! really sleeps, the TLB shootdown hook, and the device's `Revoke` doorbell.
//! The demo checks that the PFNs are those of the memory slot, that the
//! device's writes land in them, that a long-term pin without a lease is
//! refused, and that after the balloon inflation the memory is free, the
//! guest-physical range is unmapped, GUP-fast finds nothing, and no pin or
//! lease is left. The last line is
//! `hypervisor: pinned=<n> truncated=<n> violations=<n>`; the exit status is
//! non-zero on a violation.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64 as StdAtomicU64};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use pagepin::arch::aarch64::{Shareability, Stage2G4K40, stage2_mem_type};
use pagepin::arch::riscv64::{PBMT_PMA, Sv39x4};
use pagepin::arch::x86_64::Ept4Level;
use pagepin::guard::{Epoch, EpochRetire};
use pagepin::gup::{Gup, GupFlags, Stop, Taken, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Region, SliceMemMap, Unit};
use pagepin::meta::{Hold, PageMeta};
use pagepin::sync::Ordering;
use pagepin::table::{
    FramePool, HostFrame, HostMemory, LeafSizes, MapRequest, MemType, PagingFormat, Perms,
    PhysAddr, TableBuilder, VaRange, VirtAddr, Walker,
};
use pagepin::truncate::{
    Extent, Failed, FileMapping, LeaseId, LeaseRegistry, Revoke, TableUnmapper, TlbShootdown,
    Truncate, Wait,
};
use pagepin::wait::{Clock, Parked, WaitSlot, Waiter};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;

// ---------------------------------------------------------------------------
// Glue: what the VMM says about each second-stage format.
// ---------------------------------------------------------------------------

/// A second-stage format as the VMM uses it.
trait SecondStage: PagingFormat {
    /// Granule-sized frames the root table spans (concatenated start tables).
    const ROOT_FRAMES: usize;
    /// Permissions of guest RAM leaves.
    const GUEST_RAM: Perms;
    /// Memory type of guest RAM leaves (write-back).
    const WRITE_BACK: MemType;
    /// How the TLB shootdown is done, for the log.
    const SHOOTDOWN: &'static str;
}

impl SecondStage for Stage2G4K40 {
    const ROOT_FRAMES: usize = Stage2G4K40::CONCATENATED_TABLES;
    const GUEST_RAM: Perms = Perms::READ
        .union(Perms::WRITE)
        .union(Perms::EXEC)
        .union(Perms::ACCESSED);
    const WRITE_BACK: MemType = stage2_mem_type(0b1111, Shareability::Inner);
    const SHOOTDOWN: &'static str = "TLBI IPAS2E1IS per page; DSB ISH; TLBI VMALLE1IS; DSB ISH";
}

impl SecondStage for Ept4Level {
    const ROOT_FRAMES: usize = 1;
    const GUEST_RAM: Perms = Perms::READ
        .union(Perms::WRITE)
        .union(Perms::EXEC)
        .union(Perms::ACCESSED);
    /// EPT memory type 6 (WB), PAT honoured.
    const WRITE_BACK: MemType = MemType(6);
    const SHOOTDOWN: &'static str = "INVEPT single-context, on every CPU running the VM";
}

impl SecondStage for Sv39x4 {
    /// 16 KiB: four 4 KiB tables, 16 KiB aligned (hgatp.PPN bits 1:0 zero).
    const ROOT_FRAMES: usize = Sv39x4::ROOT_TABLES;
    /// R/W/X and A; the format sets U itself (G-stage accesses are U-mode).
    const GUEST_RAM: Perms = Perms::READ
        .union(Perms::WRITE)
        .union(Perms::EXEC)
        .union(Perms::ACCESSED);
    /// Svpbmt's PMA: the region's own attributes (main memory, cacheable).
    const WRITE_BACK: MemType = PBMT_PMA;
    const SHOOTDOWN: &'static str =
        "HFENCE.GVMA gpa>>2, vmid per page on every hart running the VM (SBI remote HFENCE)";
}

// ---------------------------------------------------------------------------
// Glue: waiting that sleeps (a condition variable), and the memory map.
// ---------------------------------------------------------------------------

/// The VMM's event: the truncating thread sleeps on it, releasers and the
/// device driver kick it.
struct Events {
    lock: Mutex<()>,
    cond: Condvar,
}

impl Events {
    fn kick(&self) {
        // Under the lock: a waiter between its check and its sleep holds the
        // lock, so the notification cannot fall in between.
        let _held = self.lock.lock().expect("events lock");
        self.cond.notify_all();
    }
}

/// Sleeps until the condition holds; re-checks at least every millisecond, as
/// `Waiter` allows: dropping a lease wakes nobody, so the device driver kicks
/// the events after dropping it, and the re-check is the backstop.
impl Waiter for Events {
    fn park(
        &self,
        ready: &dyn Fn() -> bool,
        clock: &dyn Clock,
        deadline_ns: Option<u64>,
    ) -> Parked {
        let mut held = self.lock.lock().expect("events lock");
        loop {
            if ready() {
                return Parked::Ready;
            }
            let now = clock.now_ns();
            let left = match deadline_ns {
                Some(d) if now >= d => return Parked::TimedOut,
                Some(d) => d - now,
                None => u64::MAX,
            };
            let nap = Duration::from_nanos(left.min(1_000_000));
            held = self.cond.wait_timeout(held, nap).expect("events lock").0;
        }
    }
}

/// The host memory that backs guest RAM: pagepin's `SliceMemMap` for the
/// units, plus a wake that kicks the sleeping truncater.
struct GuestBacking<'m> {
    map: SliceMemMap<'m>,
    events: &'m Events,
}

// SAFETY: (1)-(3) are `SliceMemMap`'s, to which `unit` delegates; (4) `wake`
// runs `WaitSlot::wake` on `map.waits().slot(head)`, the slot `wait_slot`
// returns, and kicks every sleeper when it reports a waiter.
unsafe impl MemoryMap for GuestBacking<'_> {
    const PAGE_SHIFT: u32 = 12;

    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        self.map.unit(pfn)
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.map.wait_slot(head)
    }

    fn wake(&self, head: Pfn) {
        if self.map.waits().wake(head) {
            self.events.kick();
        }
    }
}

/// The second-stage TLB shootdown.
struct StageTwoTlb {
    how: &'static str,
    flushes: u64,
}

// SAFETY: host tables: no MMU walks them, so no TLB caches them (a kernel's `TLBI IPAS2E1IS` or `INVEPT` goes here).
unsafe impl TlbShootdown for StageTwoTlb {
    fn flush(&mut self, _vm: usize, range: VaRange, sizes: LeafSizes) {
        // Bare metal: `self.how` over `range`, one invalidation per
        // `sizes.smallest()` bytes.
        let _ = (self.how, range, sizes.smallest());
        self.flushes += 1;
    }
}

/// The assigned device's doorbell: revocation is a message to its driver.
struct Doorbell {
    revoked: AtomicBool,
}

impl Revoke for Doorbell {
    fn revoke(&self, _lease: LeaseId) {
        // SeqCst: a plain flag between two threads; the driver polls it.
        self.revoked
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Monotonic(Instant);

impl Clock for Monotonic {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

// ---------------------------------------------------------------------------
// Demo.
// ---------------------------------------------------------------------------

pagepin::epoch_brand!(
    /// The brand of the epoch guarding the stage-2 tables the device walks.
    enum Stage2Tables
);

const TABLE_BASE: PhysAddr = PhysAddr(0x10_0000);
const TABLE_FRAMES: usize = 16;
/// Host memory backing guest RAM: 4 units of 2 MiB from PA 1 GiB.
const HOST_PFN: u64 = 0x40000;
const UNITS: u64 = 4;
const HOST_PAGES: u64 = UNITS * 512;
/// The memory slot: guest-physical 2 GiB ↔ host `HOST_PFN`.
const GPA_BASE: u64 = 0x8000_0000;
/// The guest's DMA buffer: 16 pages, 64 KiB into unit 1.
const DMA_GPA: u64 = GPA_BASE + MIB2 + 0x1_0000;
const DMA_PAGES: u64 = 16;
/// The unit the balloon takes.
const BALLOON_UNIT: u64 = 1;

/// What a run counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Base pages pinned.
    pub pinned: u64,
    /// Base pages truncated (freed).
    pub truncated: u64,
    /// Failed checks.
    pub violations: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hypervisor: pinned={} truncated={} violations={}",
            self.pinned, self.truncated, self.violations
        )
    }
}

impl Summary {
    fn check(&mut self, ok: bool, what: impl fmt::Display) {
        if !ok {
            self.violations += 1;
            eprintln!("hypervisor: violation: {what}");
        }
    }
}

/// One VM over format `F`: map its RAM, assign a device, inflate the balloon.
fn run_vm<F: SecondStage>(s: &mut Summary) {
    let name = F::NAME;
    // Host memory: page tables, and the RAM that backs the guest.
    let table_frames: Vec<HostFrame> = (0..TABLE_FRAMES).map(|_| HostFrame::new()).collect();
    let ram: Vec<HostFrame> = (0..HOST_PAGES).map(|_| HostFrame::new()).collect();
    let metas: Vec<PageMeta> = (0..HOST_PAGES).map(|_| PageMeta::new_allocated()).collect();
    let memory = HostMemory::new(&table_frames, TABLE_BASE).expect("aligned tables");
    let events = Events {
        lock: Mutex::new(()),
        cond: Condvar::new(),
    };
    // SAFETY: this map is the only one counting on these metas.
    let mut map = unsafe { SliceMemMap::new(Pfn(HOST_PFN), &metas) };
    map.add_region(Region {
        first: Pfn(HOST_PFN),
        pages: HOST_PAGES,
        unit_pages: 512,
        // Balloonable, unpluggable: a truncate may take it back.
        layout_managed: true,
    })
    .expect("the region fits");
    let backing = GuestBacking {
        map,
        events: &events,
    };
    // The second stage: a root of `ROOT_FRAMES` frames (contiguous, aligned to
    // their size), tables from the rest, freed through the epoch.
    let epoch = Epoch::<Stage2Tables, 2>::new().expect("one stage 2 at a time");
    let reader = epoch.reader().expect("a reader slot");
    let mut pool: Vec<PhysAddr> = memory.frame_pas().skip(F::ROOT_FRAMES).collect();
    // SAFETY: the frames are this code's own, listed once, in no other pool.
    // The root is this code's own memory, outside the pool.
    let stage2 = unsafe {
        TableBuilder::<F, _, _>::with_root(
            &memory,
            TABLE_BASE,
            FramePool::new(&mut pool),
            // SAFETY: the host tables have no MMU: the example's TLB hook stands
            // for the kernel's TLBI, made before the next map. (That the device
            // walks under readers of `epoch` is in the types.)
            EpochRetire::<_, 2, 8>::new(&epoch),
        )
    };
    let mut vms = match stage2 {
        Ok(stage2) => [stage2],
        Err(e) => return s.check(false, format_args!("{name}: stage 2 root: {e}")),
    };
    let slot = FileMapping {
        space: 0,
        va: VirtAddr(GPA_BASE),
        first: Pfn(HOST_PFN),
        pages: HOST_PAGES,
    };
    let req = MapRequest::new(
        VirtAddr(GPA_BASE),
        PhysAddr(HOST_PFN * KIB4),
        HOST_PAGES * KIB4,
        MIB2,
    )
    .with_perms(F::GUEST_RAM)
    .with_mem_type(F::WRITE_BACK);
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    if let Err(e) = unsafe { vms[0].map(&req) } {
        return s.check(false, format_args!("{name}: map guest RAM: {e}"));
    }
    let gup = Gup::new(vms[0].walker(), &backing);

    // A long-term pin of balloonable memory is refused: it needs a lease.
    let mut pfns = vec![Pfn(0); DMA_PAGES as usize];
    let longterm = GupFlags::PIN | GupFlags::WRITE | GupFlags::LONGTERM;
    let taken = gup.get_pages(
        &reader,
        VirtAddr(DMA_GPA),
        DMA_PAGES * KIB4,
        longterm,
        &mut pfns,
    );
    s.check(
        matches!(
            taken,
            Ok(Taken {
                pages: 0,
                stop: Stop::LongTermOnLayoutManaged { .. }
            })
        ),
        format_args!("{name}: long-term pin without a lease: {taken:?}"),
    );

    // Device assignment: a lease on the buffer's host frames, then the pins.
    let doorbell = Doorbell {
        revoked: AtomicBool::new(false),
    };
    let leases = LeaseRegistry::<4>::new();
    let first = Pfn(HOST_PFN + (DMA_GPA - GPA_BASE) / KIB4);
    let lease = match leases.grant(Extent::new(first, DMA_PAGES), &doorbell) {
        Ok(lease) => lease,
        Err(e) => return s.check(false, format_args!("{name}: lease: {e}")),
    };
    let flags = GupFlags::PIN | GupFlags::WRITE;
    let taken = gup.get_pages(
        &reader,
        VirtAddr(DMA_GPA),
        DMA_PAGES * KIB4,
        flags,
        &mut pfns,
    );
    s.check(
        taken
            == Ok(Taken {
                pages: DMA_PAGES as usize,
                stop: Stop::Complete,
            }),
        format_args!("{name}: pin the DMA buffer: {taken:?}"),
    );
    s.check(
        pfns.iter()
            .enumerate()
            .all(|(i, p)| p.0 == first.0 + i as u64),
        format_args!("{name}: the PFNs are the memory slot's"),
    );
    s.pinned += DMA_PAGES;

    let clock = Monotonic(Instant::now());
    let dma_writes = StdAtomicU64::new(0);
    let (balloon, unpinned) = std::thread::scope(|scope| {
        // The device driver: DMA until revoked, then stop, unpin, drop the
        // lease, and kick the VMM.
        let device = scope.spawn(|| {
            let mut unpinned = 0u64;
            let mut round = 0u64;
            while !doorbell.revoked.load(std::sync::atomic::Ordering::SeqCst) || round == 0 {
                for (i, &pfn) in pfns.iter().enumerate() {
                    if backing.unit(pfn).map_or(true, |u| u.meta.pins() == 0) {
                        unpinned += 1;
                    }
                    let frame = &ram[(pfn.0 - HOST_PFN) as usize];
                    // Relaxed: the thread join orders it for the checker.
                    frame.entries[0].store(0xd3a0_0000 + i as u64, Ordering::Relaxed);
                }
                dma_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                round += 1;
                std::thread::yield_now();
            }
            // SAFETY: the pages were taken above by this code and are released once.
            if unsafe { release(&backing, &pfns, Hold::Pin) }.is_err() {
                unpinned += 1;
            }
            drop(lease);
            events.kick();
            unpinned
        });
        // The guest inflates its balloon by unit 1: the VMM takes it back.
        let unit = Extent::new(Pfn(HOST_PFN + BALLOON_UNIT * 512), 512);
        let tlb = StageTwoTlb {
            how: F::SHOOTDOWN,
            flushes: 0,
        };
        // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
        let mut unmapper = unsafe { TableUnmapper::<_, _, _, _, 1>::new(&mut vms, 12, tlb) };
        let wait = Wait {
            waiter: &events,
            clock: &clock,
            deadline_ns: Some(clock.now_ns() + 10_000_000_000),
        };
        let balloon = unmapper
            .add_mapping(slot)
            .map_err(|e| format!("memslot: {e}"))
            .and_then(|()| {
                Truncate::mark(&backing, core::iter::once(unit)).map_err(|e| format!("mark: {e}"))
            })
            .and_then(|t| {
                t.unmap(&mut unmapper)
                    .map_err(|Failed { error, .. }| format!("unmap: {error}"))
            })
            .and_then(|t| {
                t.drain_with_leases(&leases, &wait)
                    .map_err(|Failed { error, .. }| format!("drain: {error}"))
            })
            .and_then(|t| t.free().map_err(|e| format!("free: {e}")))
            .map(|freed| (freed, unmapper.tlb().flushes));
        (balloon, device.join().expect("the device thread"))
    });
    s.check(
        unpinned == 0,
        format_args!("{name}: the device wrote only pinned frames"),
    );
    match balloon {
        Ok((freed, flushes)) => {
            s.check(freed.units == 1, format_args!("{name}: one unit freed"));
            s.check(flushes == 1, format_args!("{name}: one shootdown"));
            s.truncated += 512;
        }
        Err(e) => s.check(false, format_args!("{name}: balloon: {e}")),
    }
    s.check(
        dma_writes.load(std::sync::atomic::Ordering::Relaxed) > 0
            && pfns.iter().enumerate().all(|(i, &p)| {
                ram[(p.0 - HOST_PFN) as usize].entries[0].load(Ordering::Relaxed)
                    == 0xd3a0_0000 + i as u64
            }),
        format_args!("{name}: the device's writes landed in the buffer's frames"),
    );

    // After: the unit is free, its guest-physical range unmapped, GUP-fast
    // finds nothing there; the rest of guest RAM still pins; nothing is left
    // pinned or leased.
    let head = backing
        .unit(Pfn(HOST_PFN + BALLOON_UNIT * 512))
        .map(|u| u.meta);
    s.check(
        head.is_ok_and(|m| m.is_free()),
        format_args!("{name}: the ballooned unit is free"),
    );
    let gpa = VirtAddr(GPA_BASE + BALLOON_UNIT * MIB2);
    let walker = Walker::<F, _>::new(&memory, TABLE_BASE);
    s.check(
        walker.translate(gpa).is_ok_and(|t| t.leaf().is_none()),
        format_args!("{name}: the ballooned range is unmapped"),
    );
    let taken = gup.get_pages(&reader, gpa, MIB2, flags, &mut pfns);
    s.check(
        taken.is_ok_and(|t| t.pages == 0 && matches!(t.stop, Stop::Absent { .. })),
        format_args!("{name}: GUP-fast after the balloon: {taken:?}"),
    );
    let taken = gup.get_pages(
        &reader,
        VirtAddr(GPA_BASE),
        DMA_PAGES * KIB4,
        flags,
        &mut pfns,
    );
    s.check(
        taken.is_ok_and(|t| t.stop == Stop::Complete)
            // SAFETY: the pages were taken above by this code and are released once.
            && unsafe { release(&backing, &pfns, Hold::Pin) }.is_ok(),
        format_args!("{name}: unit 0 still pins: {taken:?}"),
    );
    s.pinned += DMA_PAGES;
    s.check(leases.is_empty(), format_args!("{name}: no lease left"));
    s.check(
        metas.iter().all(|m| m.load().is_idle()),
        format_args!("{name}: nothing left pinned"),
    );
}

/// Runs the demo over aarch64 stage 2 and x86 EPT.
pub fn run() -> Summary {
    let mut s = Summary::default();
    run_vm::<Stage2G4K40>(&mut s);
    run_vm::<Ept4Level>(&mut s);
    s
}

/// Runs the demo over the RISC-V G-stage (Sv39x4).
pub fn run_riscv() -> Summary {
    let mut s = Summary::default();
    run_vm::<Sv39x4>(&mut s);
    s
}

fn main() {
    let (a, b) = (run(), run_riscv());
    let summary = Summary {
        pinned: a.pinned + b.pinned,
        truncated: a.truncated + b.truncated,
        violations: a.violations + b.violations,
    };
    println!("{summary}");
    if summary.violations != 0 {
        std::process::exit(1);
    }
}
