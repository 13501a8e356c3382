//! pagepin inside Hermit (issue 18): devices pin buffers and write into the
//! pinned frames while other threads munmap and re-mmap those buffers.
//!
//! Built and booted by `targets/hermit/run.sh x86_64|aarch64`. Arguments
//! (after `--` on the kernel command line): `seconds=S` (default 3; the run
//! goes on up to 4 × S until a munmap has waited for a pin), `seed=N`.
//!
//! - `SLOTS` buffers of `BUF_PAGES` pages, each from `sys_mmap`. Every page
//!   starts with a header (slot, generation, page index) written by its owner
//!   through the buffer's address; the rest of the page is the "DMA area".
//! - **Device threads** pick a buffer, pin it with `sys_pagepin_pin`
//!   (GUP-fast, `PIN | WRITE`) and, if the buffer was not replaced meanwhile
//!   (a seqlock; else they just unpin), read each pinned frame's header
//!   through the identity map (Hermit is ring 0 / EL1 with RAM
//!   identity-mapped, so a PFN is an address), check the frames are the
//!   buffer's own pages in order,
//!   "DMA" a tag naming that header into the frames for a while, check the
//!   headers again (a frame reused while pinned would have a new owner's
//!   header), and unpin.
//! - **Mapper threads** own the buffers: each round they check one buffer
//!   (its headers, and that every DMA word in it carries its own tag or is
//!   zero), sometimes `mlock` it, `munmap` it (which must wait for the pins a
//!   device holds: the truncate protocol) and `mmap` a new one in its place.
//! - At the end every buffer is unmapped and the kernel's counters must say:
//!   no pin or reference held anywhere, every frame `sys_mmap` handed out is
//!   back, the free list and the frame metas agree, no frame violation.
//!
//! Last line: `pagepin-hermit arch=<a> cpus=<n> pins=<n> munmaps=<n>
//! waited=<n> violations=<n>`.

#[cfg(target_os = "hermit")]
use hermit as _;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
/// Pages per buffer: below 16, so aarch64 Hermit maps them without the
/// contiguous hint.
const BUF_PAGES: usize = 8;
const SLOTS: usize = 4;
const DEVICES: usize = 2;
const MAPPERS: usize = 2;
/// Words of a page's header: slot, generation, page index.
const HEADER_WORDS: usize = 3;
/// Words of the DMA area that one device transfer writes, per page.
const DMA_WORDS: usize = 16;

unsafe extern "C" {
    fn sys_mmap(size: usize, prot_flags: u32, ret: &mut *mut u8) -> i32;
    fn sys_munmap(ptr: *mut u8, size: usize) -> i32;
    fn sys_mlock(addr: *const u8, size: usize) -> i32;
    fn sys_munlock(addr: *const u8, size: usize) -> i32;
    fn sys_pagepin_pin(addr: usize, len: usize, pfns: *mut u64, max: usize) -> isize;
    fn sys_pagepin_unpin(pfns: *const u64, n: usize) -> i32;
    fn sys_pagepin_stats(out: *mut u64, n: usize) -> i32;
}

/// Kernel counters, as `sys_pagepin_stats` returns them.
#[derive(Debug, Clone, Copy)]
struct Stats {
    munmaps: u64,
    waited: u64,
    mmap_frames: u64,
    frame_violations: u64,
    listed: u64,
    free_metas: u64,
    pins: u64,
    refs: u64,
}

fn stats() -> Stats {
    let mut v = [0u64; 8];
    // SAFETY: room for 8 values.
    unsafe { sys_pagepin_stats(v.as_mut_ptr(), v.len()) };
    Stats {
        munmaps: v[0],
        waited: v[1],
        mmap_frames: v[2],
        frame_violations: v[3],
        listed: v[4],
        free_metas: v[5],
        pins: v[6],
        refs: v[7],
    }
}

/// One buffer: its address (0 while it is being replaced) and a sequence
/// number that is odd while the mapper replaces it (a seqlock); the
/// generation written in its headers is `seq / 2`.
struct Slot {
    addr: AtomicUsize,
    seq: AtomicU64,
}

struct Shared {
    slots: [Slot; SLOTS],
    stop: AtomicBool,
    violations: AtomicU64,
    pins: AtomicU64,
    refused: AtomicU64,
    stale: AtomicU64,
    mlocks: AtomicU64,
}

fn violation(shared: &Shared, what: std::fmt::Arguments<'_>) {
    // Relaxed: a counter read after the threads are joined.
    let n = shared.violations.fetch_add(1, Ordering::Relaxed);
    if n < 10 {
        println!("violation: {what}");
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn tag(slot: u64, generation: u64) -> u64 {
    (1 << 63) | (slot << 40) | generation
}

/// A word of a frame through the identity map.
fn frame_word(pfn: u64, word: usize) -> &'static AtomicU64 {
    let ptr = std::ptr::with_exposed_provenance::<AtomicU64>((pfn as usize) * PAGE + word * 8);
    // SAFETY: the frame is RAM, identity-mapped by Hermit, pinned by the
    // caller (so not freed under it); words are accessed atomically only.
    unsafe { &*ptr }
}

/// A word of a mapped buffer page through its address.
fn buffer_word(addr: usize, page: usize, word: usize) -> &'static AtomicU64 {
    let ptr = std::ptr::with_exposed_provenance::<AtomicU64>(addr + page * PAGE + word * 8);
    // SAFETY: the caller owns the buffer (it stays mapped while it runs).
    unsafe { &*ptr }
}

fn mmap_buffer(slot: usize, generation: u64) -> usize {
    let mut ptr = std::ptr::null_mut();
    // SAFETY: a plain mapping request (read | write).
    let r = unsafe { sys_mmap(BUF_PAGES * PAGE, 3, &mut ptr) };
    assert_eq!(r, 0, "sys_mmap failed");
    let addr = ptr.expose_provenance();
    for page in 0..BUF_PAGES {
        for word in HEADER_WORDS..PAGE / 8 {
            // Relaxed: published by the Release store of the slot's address.
            buffer_word(addr, page, word).store(0, Ordering::Relaxed);
        }
        let header = [slot as u64, generation, page as u64];
        for (word, value) in header.into_iter().enumerate() {
            // Relaxed: as above.
            buffer_word(addr, page, word).store(value, Ordering::Relaxed);
        }
    }
    addr
}

/// The owner's check before unmapping: its headers, and every DMA word is
/// its own tag or zero (a device that wrote into a frame it no longer had
/// pinned, or into a frame freed while pinned and reused, leaves another tag).
fn check_buffer(shared: &Shared, addr: usize, slot: usize, generation: u64) {
    let own = tag(slot as u64, generation);
    for page in 0..BUF_PAGES {
        let header: Vec<u64> = (0..HEADER_WORDS)
            // Acquire: pairs with nothing in a correct kernel (only the owner
            // writes headers); it reads what a stray writer left.
            .map(|w| buffer_word(addr, page, w).load(Ordering::Acquire))
            .collect();
        if header != [slot as u64, generation, page as u64] {
            violation(
                shared,
                format_args!("slot {slot} gen {generation} page {page}: header {header:x?}"),
            );
        }
        for word in HEADER_WORDS..PAGE / 8 {
            // Relaxed: see above.
            let v = buffer_word(addr, page, word).load(Ordering::Relaxed);
            if v != 0 && v != own {
                violation(
                    shared,
                    format_args!(
                        "slot {slot} gen {generation} page {page} word {word}: foreign DMA tag {v:#x}"
                    ),
                );
                break;
            }
        }
    }
}

fn device(shared: &Shared, id: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut pfns = [0u64; BUF_PAGES];
    while !shared.stop.load(Ordering::Relaxed) {
        let slot = rng.below(SLOTS as u64) as usize;
        // Acquire: pairs with the mapper's Release stores (seqlock read).
        let seq1 = shared.slots[slot].seq.load(Ordering::Acquire);
        let addr = shared.slots[slot].addr.load(Ordering::Acquire);
        if seq1 % 2 == 1 || addr == 0 {
            std::thread::yield_now();
            continue;
        }
        // SAFETY: room for BUF_PAGES PFNs.
        let n = unsafe { sys_pagepin_pin(addr, BUF_PAGES * PAGE, pfns.as_mut_ptr(), BUF_PAGES) };
        if n < 0 {
            violation(
                shared,
                format_args!("device {id}: sys_pagepin_pin returned {n}"),
            );
            continue;
        }
        let n = n as usize;
        // SeqCst fence, then the second read of the seqlock: the pin's walk
        // (its loads of the page tables) is ordered before it, so an
        // unchanged sequence means the mapper had not started replacing the
        // buffer when the pin walked it (pairs with the mapper's fence).
        std::sync::atomic::fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence above.
        let seq2 = shared.slots[slot].seq.load(Ordering::Relaxed);
        if n < BUF_PAGES {
            // Relaxed: a statistic.
            shared.refused.fetch_add(1, Ordering::Relaxed);
        }
        if n > 0 && seq1 != seq2 {
            // The buffer was being replaced while it was pinned: the pages
            // may be the next buffer's, mapped at the same address and not yet
            // initialized. A driver whose buffer went away drops the pin
            // without a transfer.
            // SAFETY: the `n` PFNs this pin returned.
            let r = unsafe { sys_pagepin_unpin(pfns.as_ptr(), n) };
            if r != 0 {
                violation(
                    shared,
                    format_args!("device {id}: sys_pagepin_unpin returned {r}"),
                );
            }
            // Relaxed: a statistic.
            shared.stale.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if n > 0 {
            // Relaxed: a statistic.
            shared.pins.fetch_add(1, Ordering::Relaxed);
            // The frames pinned must be this buffer's pages in order from page 0.
            let header = |i: usize| -> [u64; HEADER_WORDS] {
                // Acquire: the owner's header writes happened before the
                // Release store of the address the pin walked.
                std::array::from_fn(|w| frame_word(pfns[i], w).load(Ordering::Acquire))
            };
            let (owner, generation) = (slot as u64, seq1 / 2);
            for i in 0..n {
                let h = header(i);
                if h != [owner, generation, i as u64] {
                    violation(
                        shared,
                        format_args!(
                            "device {id}: pinned slot {slot} gen {generation} page {i} but pfn {:#x} has header {h:x?}",
                            pfns[i]
                        ),
                    );
                }
            }
            // The transfer: DMA words with the owner's tag, for up to 8 ms
            // (a munmap of the buffer meanwhile must wait for the unpin).
            let t = tag(owner, generation);
            let transfer = Duration::from_micros(500 + rng.below(7500));
            let started = Instant::now();
            while started.elapsed() < transfer {
                let word = HEADER_WORDS + rng.below((PAGE / 8 - HEADER_WORDS) as u64) as usize;
                for &pfn in &pfns[..n] {
                    for k in 0..DMA_WORDS.min(PAGE / 8 - word) {
                        // Relaxed: the owner's check reads it after the munmap's
                        // drain, which the unpin's Release put orders.
                        frame_word(pfn, word + k).store(t, Ordering::Relaxed);
                    }
                }
                if rng.below(8) == 0 {
                    std::thread::yield_now();
                }
            }
            // Still ours? A frame freed and reused while pinned has another header.
            for i in 0..n {
                let h = header(i);
                if h != [owner, generation, i as u64] {
                    violation(
                        shared,
                        format_args!(
                            "device {id}: pinned frame {:#x} changed owner to {h:x?} while pinned",
                            pfns[i]
                        ),
                    );
                }
            }
            // SAFETY: the `n` PFNs this pin returned.
            let r = unsafe { sys_pagepin_unpin(pfns.as_ptr(), n) };
            if r != 0 {
                violation(
                    shared,
                    format_args!("device {id}: sys_pagepin_unpin returned {r}"),
                );
            }
        }
    }
}

fn mapper(shared: &Shared, id: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mine: Vec<usize> = (0..SLOTS).filter(|s| s % MAPPERS == id).collect();
    while !shared.stop.load(Ordering::Relaxed) {
        let slot = mine[rng.below(mine.len() as u64) as usize];
        replace(shared, slot, &mut rng, true);
    }
    for &slot in &mine {
        replace(shared, slot, &mut rng, false);
    }
}

/// Checks and unmaps `slot`'s buffer; maps a new one if `remap`.
fn replace(shared: &Shared, slot: usize, rng: &mut Rng, remap: bool) {
    let s = &shared.slots[slot];
    // Relaxed: only this mapper writes the slot.
    let seq = s.seq.load(Ordering::Relaxed);
    let addr = s.addr.load(Ordering::Relaxed);
    // Release: a device that reads the odd value skips the slot; the pins of
    // one that read the even value before are what the munmap waits for.
    s.seq.store(seq + 1, Ordering::Release);
    s.addr.store(0, Ordering::Release);
    // SeqCst: pairs with the device's fence before its second read of the
    // sequence: a pin whose walk saw the munmap's page-table changes (or the
    // next buffer) reads the odd sequence.
    std::sync::atomic::fence(Ordering::SeqCst);
    if addr != 0 {
        check_buffer(shared, addr, slot, seq / 2);
        // An mlock'ed buffer: munlock it, or let munmap release the pins.
        if rng.below(4) == 0 {
            // SAFETY: this mapper's live buffer.
            let r = unsafe { sys_mlock(addr as *const u8, BUF_PAGES * PAGE) };
            if r == 0 {
                // Relaxed: a statistic.
                shared.mlocks.fetch_add(1, Ordering::Relaxed);
                if rng.below(2) == 0 {
                    // SAFETY: as above.
                    unsafe { sys_munlock(addr as *const u8, BUF_PAGES * PAGE) };
                }
            }
        }
        // SAFETY: this mapper's buffer; nobody reads it through its address.
        let r = unsafe { sys_munmap(addr as *mut u8, BUF_PAGES * PAGE) };
        if r != 0 {
            violation(shared, format_args!("slot {slot}: sys_munmap returned {r}"));
        }
    }
    if remap {
        let generation = seq / 2 + 1;
        let new = mmap_buffer(slot, generation);
        // Release: publishes the headers.
        s.addr.store(new, Ordering::Release);
        s.seq.store(seq + 2, Ordering::Release);
    }
}

fn arg(name: &str) -> Option<u64> {
    std::env::args()
        .filter_map(|a| {
            a.strip_prefix(&format!("{name}="))
                .and_then(|v| v.parse().ok())
        })
        .last()
}

fn main() {
    let seconds = arg("seconds").unwrap_or(3);
    let seed = arg("seed").unwrap_or(1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let before = stats();
    println!("pagepin-hermit: {cpus} cpus, {seconds} s, seed {seed}, before: {before:?}");

    let shared: &'static Shared = Box::leak(Box::new(Shared {
        slots: std::array::from_fn(|_| Slot {
            addr: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
        }),
        stop: AtomicBool::new(false),
        violations: AtomicU64::new(0),
        pins: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        stale: AtomicU64::new(0),
        mlocks: AtomicU64::new(0),
    }));
    for (slot, s) in shared.slots.iter().enumerate() {
        s.addr.store(mmap_buffer(slot, 0), Ordering::Release);
    }

    let mut threads = Vec::new();
    for id in 0..DEVICES {
        let seed = seed.wrapping_mul(31).wrapping_add(id as u64 + 1);
        threads.push(std::thread::spawn(move || device(shared, id, seed)));
    }
    for id in 0..MAPPERS {
        let seed = seed.wrapping_mul(37).wrapping_add(id as u64 + 100);
        threads.push(std::thread::spawn(move || mapper(shared, id, seed)));
    }
    // Runs `seconds`, and on (up to 4 × `seconds` in all) until at least one
    // munmap has waited for a pin, so a slow or loaded host still exercises
    // the drain.
    let start = Instant::now();
    // A violation ends the run early (a broken kernel may not survive long).
    // Relaxed: only a hint to stop; the count is read again after the joins.
    while shared.violations.load(Ordering::Relaxed) == 0
        && (start.elapsed() < Duration::from_secs(seconds)
            || (stats().waited == before.waited
                && start.elapsed() < Duration::from_secs(4 * seconds)))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a thread panicked");
    }

    let after = stats();
    println!("after: {after:?}");
    if after.pins != 0 || after.refs != 0 {
        violation(
            shared,
            format_args!(
                "{} pins and {} references still held",
                after.pins, after.refs
            ),
        );
    }
    if after.mmap_frames != before.mmap_frames {
        violation(
            shared,
            format_args!(
                "frames mapped by sys_mmap: {} before, {} after",
                before.mmap_frames, after.mmap_frames
            ),
        );
    }
    if after.listed != after.free_metas {
        violation(
            shared,
            format_args!(
                "{} frames on the free list but {} FREE metas",
                after.listed, after.free_metas
            ),
        );
    }
    if after.frame_violations != 0 {
        violation(
            shared,
            format_args!("{} frame violations in the kernel", after.frame_violations),
        );
    }
    // Relaxed: the threads are joined.
    let violations = shared.violations.load(Ordering::Relaxed);
    println!(
        "pins refused or partial: {}, dropped (buffer replaced meanwhile): {}, mlocks: {}",
        shared.refused.load(Ordering::Relaxed),
        shared.stale.load(Ordering::Relaxed),
        shared.mlocks.load(Ordering::Relaxed)
    );
    let arch = std::env::consts::ARCH;
    println!(
        "pagepin-hermit arch={arch} cpus={cpus} pins={} munmaps={} waited={} violations={violations}",
        shared.pins.load(Ordering::Relaxed),
        after.munmaps - before.munmaps,
        after.waited - before.waited,
    );
    std::process::exit(if violations == 0 { 0 } else { 1 });
}
