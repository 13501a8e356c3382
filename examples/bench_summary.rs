//! cargo run --release --example bench_summary
//!
//! A quick (well under 60 s) run of the key figures, without criterion: each case
//! is timed several times in this run and its median reported, in ns per 4 KiB
//! page, one machine-readable line per case:
//!
//! - `floor`: one atomic load of a real 4 KiB leaf entry and one `fetch_add` on a
//!   dense array of 8-byte metas, per page — the least any GUP-fast can do;
//! - `gup4k` / `gup2m`: pagepin's GUP-fast pin of 1 GiB mapped by 4 KiB leaves
//!   (single-page units) / 2 MiB leaves (2 MiB units), and the unpins, over a
//!   memory map whose units never change (its layout version is constant, so
//!   the unit re-check costs one version load per batch);
//! - `gup4k_unit_recheck`: the same 4 KiB pin through a map that keeps no layout
//!   version, so every get is followed by a second lookup of its unit;
//! - `linux4k` / `linuxthp`: Linux's own pinning of 1 GiB of prefaulted memory
//!   through io_uring buffer registration (`IORING_REGISTER_BUFFERS`, which pins
//!   with `FOLL_LONGTERM`), in 64 MiB iovecs, with 4 KiB pages / transparent huge
//!   pages; unregistering is the unpin. `na` where the kernel refuses (the reason
//!   is printed);
//! - `truncate1g`: mark + unmap + drain + free of 1 GiB of single-page units
//!   mapped by 4 KiB leaves, against one `fetch_or` pass over the same metas.
//!
//! The last line is
//!
//! `pagepin-bench gup4k_ns=<f> floor_ns=<f> ratio_floor=<f> gup4k_unit_recheck_ns=<f> gup2m_ns_per_page=<f> linux4k_ns=<f|na> speedup_linux=<f|na> truncate1g_ms=<f> truncate_ratio=<f>`

use std::time::{Duration, Instant};

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, Stop, release};
use pagepin::memmap::{MemoryMap, OutsideMap, Pfn, Region, SliceMemMap, Unit};
use pagepin::meta::{Hold, PageMeta};
use pagepin::sync::{AtomicU64, Ordering};
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapRequest, Perms, PhysAddr, ReclaimNow, TableAccess,
    TableBuilder, VirtAddr, WalkItem,
};
use pagepin::truncate::{Extent, FileMapping, NoTlbShootdown, TableUnmapper, Truncate, Wait};
use pagepin::wait::{Clock, SpinWaiter, WaitSlot};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
const GIB1: u64 = 1 << 30;
const PAGES: usize = (GIB1 / KIB4) as usize;
const DATA: u64 = GIB1;
const VA: u64 = 0x80_0000_0000;
const RUNS: usize = 7;

/// The median of `RUNS` timings of `f`, in ns per 4 KiB page of 1 GiB. `f`
/// returns the time of its measured part.
fn median_ns_per_page(mut f: impl FnMut() -> Duration) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| f().as_nanos() as f64 / PAGES as f64)
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

struct StdClock(Instant);

impl Clock for StdClock {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The metas' words: `PageMeta` is `repr(transparent)` over one `AtomicU64`.
fn as_words(metas: &[PageMeta]) -> &[AtomicU64] {
    // SAFETY: `PageMeta` is `#[repr(transparent)]` over `AtomicU64` (size and
    // alignment const-asserted in pagepin), so the slices have the same layout;
    // the words are only accessed atomically.
    unsafe { core::slice::from_raw_parts(metas.as_ptr().cast::<AtomicU64>(), metas.len()) }
}

/// 1 GiB of metas mapped at `VA` by leaves of `leaf` bytes, over units of
/// `leaf` bytes; runs `f` with GUP-fast, the tables and the memory map.
fn with_mapping<R>(
    leaf: u64,
    f: impl FnOnce(
        &Gup<'_, Paging4Level, HostMemory<'_>, SliceMemMap<'_, 1>>,
        &mut TableBuilder<'_, Paging4Level, HostMemory<'_>, ReclaimNow>,
        &HostMemory<'_>,
    ) -> R,
) -> R {
    let metas: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let mut memmap = unsafe { SliceMemMap::<1>::new(Pfn(DATA >> 12), &metas) };
    if leaf > KIB4 {
        memmap
            .add_region(Region {
                first: Pfn(DATA >> 12),
                pages: PAGES as u64,
                unit_pages: leaf / KIB4,
                layout_managed: false,
            })
            .expect("the region is the map");
    }
    let frames: Vec<HostFrame> = (0..600).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).expect("aligned");
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() })
            .expect("a root");
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(VirtAddr(VA), PhysAddr(DATA), GIB1, leaf)
                .with_perms(Perms::READ | Perms::WRITE),
        )
    }
    .expect("the pool holds the tables");
    let gup = Gup::new(tables.walker(), &memmap);
    f(&gup, &mut tables, &memory)
}

/// A memory map that forwards to `M` but keeps no layout version, so GUP-fast
/// looks every unit up again after its get.
struct Unversioned<'a, M>(&'a M);

// SAFETY: every answer is the inner map's, which keeps the contract; the
// default `layout_version` (`None`) is always allowed.
unsafe impl<M: MemoryMap> MemoryMap for Unversioned<'_, M> {
    const PAGE_SHIFT: u32 = M::PAGE_SHIFT;

    #[inline]
    fn unit(&self, pfn: Pfn) -> Result<Unit<'_>, OutsideMap> {
        self.0.unit(pfn)
    }

    fn wait_slot(&self, head: Pfn) -> &WaitSlot {
        self.0.wait_slot(head)
    }

    fn wake(&self, head: Pfn) {
        self.0.wake(head)
    }
}

fn main() {
    // SAFETY: no table is freed while these measurements walk.
    let guard = unsafe { TablesNeverFreed::new() };
    let mut out = vec![Pfn(0); PAGES];

    // Floor and GUP-fast over 4 KiB leaves, on the same entries.
    let (floor, gup4k, unpin4k, gup4k_unit) = with_mapping(KIB4, |gup, tables, memory| {
        let ptes: Vec<&AtomicU64> = (0..PAGES as u64)
            .map(
                |i| match tables.walker().translate(VirtAddr(VA + i * KIB4)) {
                    // SAFETY: the word is only loaded.
                    Ok(WalkItem::Leaf(l)) => {
                        // SAFETY: the word is only loaded.
                        unsafe { memory.entry(l.entry.loc.table, l.entry.loc.index) }
                            .expect("a table entry")
                    }
                    other => panic!("mapped above: {other:?}"),
                },
            )
            .collect();
        let metas: Vec<AtomicU64> = (0..PAGES).map(|_| AtomicU64::new(0)).collect();
        let floor = median_ns_per_page(|| {
            let t = timed(|| {
                for (pte, meta) in ptes.iter().zip(&metas) {
                    std::hint::black_box(pte.load(Ordering::Relaxed));
                    meta.fetch_add(1 << 30, Ordering::Acquire);
                }
            });
            for meta in &metas {
                meta.fetch_sub(1 << 30, Ordering::Release);
            }
            t
        });
        // The same tables and metas through a map that keeps no layout version:
        // every get is followed by a second lookup (the unit re-check).
        let unversioned = Unversioned(gup.memmap());
        let checked = Gup::new(gup.walker(), &unversioned);
        let gup4k_unit = median_ns_per_page(|| {
            let t = timed(|| {
                let taken = checked
                    .get_pages(&guard, VirtAddr(VA), GIB1, GupFlags::PIN, &mut out)
                    .expect("a valid range");
                assert_eq!((taken.pages, taken.stop), (PAGES, Stop::Complete));
            });
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(gup.memmap(), &out, Hold::Pin) }.expect("pinned above");
            t
        });
        let mut unpins = Vec::new();
        let gup4k = median_ns_per_page(|| {
            let t = timed(|| {
                let taken = gup
                    .get_pages(&guard, VirtAddr(VA), GIB1, GupFlags::PIN, &mut out)
                    .expect("a valid range");
                assert_eq!((taken.pages, taken.stop), (PAGES, Stop::Complete));
            });
            unpins.push(timed(|| {
                // SAFETY: the pages were taken above by this code and are released once.
                unsafe { release(gup.memmap(), &out, Hold::Pin) }.expect("pinned above")
            }));
            t
        });
        unpins.sort();
        let unpin = unpins[unpins.len() / 2].as_nanos() as f64 / PAGES as f64;
        (floor, gup4k, unpin, gup4k_unit)
    });
    println!("case=floor ns_per_page={floor:.2}");
    println!("case=gup4k_pin ns_per_page={gup4k:.2}");
    println!("case=gup4k_unpin ns_per_page={unpin4k:.2}");
    println!("case=gup4k_unit_recheck_pin ns_per_page={gup4k_unit:.2}");

    let gup2m = with_mapping(MIB2, |gup, _, _| {
        median_ns_per_page(|| {
            let t = timed(|| {
                let taken = gup
                    .get_pages(&guard, VirtAddr(VA), GIB1, GupFlags::PIN, &mut out)
                    .expect("a valid range");
                assert_eq!((taken.pages, taken.stop), (PAGES, Stop::Complete));
            });
            // SAFETY: the pages were taken above by this code and are released once.
            unsafe { release(gup.memmap(), &out, Hold::Pin) }.expect("pinned above");
            t
        })
    });
    println!("case=gup2m_pin ns_per_page={gup2m:.3}");

    let linux4k = linux::pin_ns_per_page(false);
    let linuxthp = linux::pin_ns_per_page(true);
    for (name, figures) in [("linux4k", &linux4k), ("linuxthp", &linuxthp)] {
        match figures {
            Ok((pin, unpin)) => {
                println!("case={name}_pin ns_per_page={pin:.2}");
                println!("case={name}_unpin ns_per_page={unpin:.2}");
            }
            Err(why) => println!("case={name} na reason=\"{why}\""),
        }
    }

    let (truncate_ns, fetch_or_ns) = truncate_figures();
    println!("case=fetch_or_pass ns_per_page={fetch_or_ns:.2}");
    println!("case=truncate1g ns_per_page={truncate_ns:.2}");

    let (linux_ns, speedup) = match linux4k {
        Ok((pin, _)) => (format!("{pin:.2}"), format!("{:.1}", pin / gup4k)),
        Err(_) => ("na".into(), "na".into()),
    };
    println!(
        "pagepin-bench gup4k_ns={gup4k:.2} floor_ns={floor:.2} ratio_floor={:.2} gup4k_unit_recheck_ns={gup4k_unit:.2} gup2m_ns_per_page={gup2m:.3} linux4k_ns={linux_ns} speedup_linux={speedup} truncate1g_ms={:.2} truncate_ratio={:.2}",
        gup4k / floor,
        truncate_ns * PAGES as f64 / 1e6,
        truncate_ns / fetch_or_ns,
    );
}

/// (truncate, fetch_or pass), ns per page, medians of this run.
fn truncate_figures() -> (f64, f64) {
    with_mapping(KIB4, |_, tables, _| {
        let memmap_metas: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new_allocated()).collect();
        // SAFETY: this map is the only one counting on these metas.
        let memmap = unsafe { SliceMemMap::<1>::new(Pfn(DATA >> 12), &memmap_metas) };
        let words = as_words(&memmap_metas);
        let fetch_or = median_ns_per_page(|| {
            let t = timed(|| {
                for w in words {
                    w.fetch_or(1 << 61, Ordering::Relaxed);
                }
            });
            for w in words {
                w.fetch_and(!(1 << 61), Ordering::Relaxed);
            }
            t
        });
        let clock = StdClock(Instant::now());
        let wait = Wait {
            waiter: &SpinWaiter,
            clock: &clock,
            deadline_ns: None,
        };
        let extent = Extent::new(Pfn(DATA >> 12), PAGES as u64);
        let request = MapRequest::new(VirtAddr(VA), PhysAddr(DATA), GIB1, KIB4)
            .with_perms(Perms::READ | Perms::WRITE);
        let mut first = true;
        let truncate = median_ns_per_page(|| {
            if !first {
                for m in &memmap_metas {
                    m.allocate().expect("freed by the last run");
                }
                // SAFETY: the pages mapped are this code's, unmapped before they are freed.
                unsafe { tables.map(&request) }.expect("unmapped by the last run");
            }
            first = false;
            // SAFETY: every mapping of the truncated pages is in these spaces and registered below.
            let mut unmapper = unsafe {
                TableUnmapper::<_, _, _, _, 1>::new(
                    core::slice::from_mut(tables),
                    12,
                    NoTlbShootdown,
                )
            };
            unmapper
                .add_mapping(FileMapping {
                    space: 0,
                    va: VirtAddr(VA),
                    first: extent.first,
                    pages: PAGES as u64,
                })
                .expect("room for one");
            timed(|| {
                let freed = Truncate::mark(&memmap, core::iter::once(extent))
                    .expect("allocated, unmarked")
                    .unmap(&mut unmapper)
                    .expect("mapped")
                    .drain(&wait)
                    .expect("no pins")
                    .free()
                    .expect("drained");
                assert_eq!(freed.units, PAGES as u64);
            })
        });
        (truncate, fetch_or)
    })
}

#[cfg(target_os = "linux")]
mod linux {
    //! Linux's pinning, through io_uring buffer registration (raw syscalls).

    use std::time::Instant;

    const SYS_IO_URING_SETUP: libc::c_long = 425;
    const SYS_IO_URING_REGISTER: libc::c_long = 427;
    const IORING_REGISTER_BUFFERS: libc::c_uint = 0;
    const IORING_UNREGISTER_BUFFERS: libc::c_uint = 1;
    const LEN: usize = 1 << 30;
    const IOVEC: usize = 64 << 20;

    fn os_error(what: &str) -> String {
        format!("{what}: {}", std::io::Error::last_os_error())
    }

    /// Pins and unpins 1 GiB of prefaulted anonymous memory (`huge`: THP) through
    /// io_uring buffer registration; (pin, unpin) in ns per 4 KiB page, medians
    /// of 7 runs.
    pub fn pin_ns_per_page(huge: bool) -> Result<(f64, f64), String> {
        // io_uring_params is 120 bytes; zeroed means defaults.
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup reads and writes the 120-byte params buffer.
        let fd = unsafe { libc::syscall(SYS_IO_URING_SETUP, 4u32, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(os_error("io_uring_setup"));
        }
        let fd = fd as libc::c_int;
        // 2 MiB-aligned for THP: map 2 MiB more and align inside.
        let map_len = LEN + (2 << 20);
        // SAFETY: an anonymous private mapping; checked below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            // SAFETY: `fd` is the ring opened above.
            unsafe { libc::close(fd) };
            return Err(os_error("mmap"));
        }
        let base = ((raw as usize + (2 << 20) - 1) & !((2 << 20) - 1)) as *mut u8;
        let advice = if huge {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: `base .. base + LEN` lies inside the mapping.
        unsafe { libc::madvise(base.cast(), LEN, advice) };
        for offset in (0..LEN).step_by(4096) {
            // SAFETY: inside the mapping; prefaults the page.
            unsafe { base.add(offset).write_volatile(1) };
        }
        let iovecs: Vec<libc::iovec> = (0..LEN / IOVEC)
            .map(|i| libc::iovec {
                // SAFETY: inside the mapping.
                iov_base: unsafe { base.add(i * IOVEC) }.cast(),
                iov_len: IOVEC,
            })
            .collect();
        let pages = (LEN / 4096) as f64;
        let mut pins = Vec::new();
        let mut unpins = Vec::new();
        let mut failure = None;
        for _ in 0..7 {
            let start = Instant::now();
            // SAFETY: registers `iovecs`, which point into the live mapping.
            let r = unsafe {
                libc::syscall(
                    SYS_IO_URING_REGISTER,
                    fd,
                    IORING_REGISTER_BUFFERS,
                    iovecs.as_ptr(),
                    iovecs.len() as libc::c_uint,
                )
            };
            let pin = start.elapsed();
            if r < 0 {
                failure = Some(os_error("IORING_REGISTER_BUFFERS"));
                break;
            }
            let start = Instant::now();
            // SAFETY: unregisters what was registered above.
            let r = unsafe {
                libc::syscall(
                    SYS_IO_URING_REGISTER,
                    fd,
                    IORING_UNREGISTER_BUFFERS,
                    std::ptr::null::<u8>(),
                    0 as libc::c_uint,
                )
            };
            let unpin = start.elapsed();
            if r < 0 {
                failure = Some(os_error("IORING_UNREGISTER_BUFFERS"));
                break;
            }
            pins.push(pin.as_nanos() as f64 / pages);
            unpins.push(unpin.as_nanos() as f64 / pages);
        }
        // SAFETY: the mapping and the ring created above, no longer used.
        unsafe {
            libc::munmap(raw, map_len);
            libc::close(fd);
        }
        if let Some(why) = failure {
            return Err(why);
        }
        pins.sort_by(f64::total_cmp);
        unpins.sort_by(f64::total_cmp);
        Ok((pins[pins.len() / 2], unpins[unpins.len() / 2]))
    }
}

#[cfg(not(target_os = "linux"))]
mod linux {
    /// Linux's pinning cannot be measured here.
    pub fn pin_ns_per_page(_huge: bool) -> Result<(f64, f64), String> {
        Err("not Linux".into())
    }
}
