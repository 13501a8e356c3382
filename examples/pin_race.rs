//! cargo run --release --example pin_race [-- --threads N --ops N --get-path cas-loop|fetch-add-undo]
//!
//! Host threads take and release references and pins, single and batched (512
//! pages, a 2 MiB leaf), on a shared array of `PageMeta`, while one truncater
//! thread repeatedly marks a range truncating, waits for it to drain, frees it,
//! poisons it and allocates it again, bumping each page's generation.
//!
//! Each getter does what GUP-fast does with a page-table entry, with the page's
//! generation standing in for the entry: read the generation, take the reference,
//! re-read the generation and undo if it changed. While it holds the reference it
//! checks the page's contents. At the end every meta must be idle, unmarked and
//! allocated. The last line printed is
//!
//! `pagepin-summary threads=<n> gets=<n> pins=<n> truncates=<n> violations=<n> ns_per_op=<float>`
//!
//! where `threads` counts the getter threads plus the truncater, `gets` and `pins`
//! are successful references and pins (a batch counts once), and `ns_per_op` is
//! wall time × getter threads / getter operations (every get attempt and every put).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use pagepin::meta::{
    CasLoop, FetchAddUndo, FreeError, GetErrorKind, GetPath, Hold, MetaWord, PageMeta,
};

const PAGES: usize = 64;
const TRUNCATE_SPAN: usize = 8;
const BATCH: u32 = 512;
/// Page contents between a free and the next allocate.
const POISON: u64 = u64::MAX;

struct Page {
    meta: PageMeta,
    /// Test instrumentation: bumped by the truncater on every allocate.
    generation: AtomicU64,
    /// The page's contents: its generation while allocated, `POISON` while free.
    data: AtomicU64,
}

struct Shared {
    pages: Vec<Page>,
    violations: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn violation(&self, what: &str) {
        if self.violations.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("violation: {what}");
        }
    }
}

#[derive(Default)]
struct GetterStats {
    gets: u64,
    pins: u64,
    ops: u64,
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
}

fn getter<P: GetPath>(shared: &Shared, seed: u64, ops: u64) -> GetterStats {
    let mut rng = Rng(seed | 1);
    let mut stats = GetterStats::default();
    while stats.ops < ops {
        let r = rng.next();
        let page = &shared.pages[(r as usize) % PAGES];
        let hold = if r & (1 << 32) == 0 {
            Hold::Ref
        } else {
            Hold::Pin
        };
        let n = if r & (1 << 33) == 0 { 1 } else { BATCH };
        // The "entry" this getter saw.
        let seen = page.generation.load(Ordering::Acquire);
        stats.ops += 1;
        match page.meta.get_with::<P>(hold, n) {
            Ok(()) => {}
            Err(e) => {
                if !matches!(e.kind, GetErrorKind::Truncating | GetErrorKind::Free) {
                    shared.violation(&format!("unexpected refusal {e}"));
                }
                // The truncater polls; a due wake needs no action here.
                continue;
            }
        }
        // The re-check: the page may have been freed and reused between reading
        // the generation and the get.
        if page.generation.load(Ordering::Acquire) != seen {
            stats.ops += 1;
            if let Err(e) = page.meta.put(hold, n) {
                shared.violation(&format!("undo of a re-check failed: {e}"));
            }
            continue;
        }
        match hold {
            Hold::Ref => stats.gets += 1,
            Hold::Pin => stats.pins += 1,
        }
        let contents = page.data.load(Ordering::Relaxed);
        if contents != seen {
            shared.violation(&format!(
                "held page has contents {contents:#x}, expected generation {seen}"
            ));
        }
        let still = page.generation.load(Ordering::Acquire);
        if still != seen {
            shared.violation(&format!(
                "page reallocated under a holder ({seen} -> {still})"
            ));
        }
        stats.ops += 1;
        if let Err(e) = page.meta.put(hold, n) {
            shared.violation(&format!("release failed: {e}"));
        }
    }
    stats
}

fn truncater(shared: &Shared, seed: u64) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut truncates = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let start = (rng.next() as usize) % (PAGES - TRUNCATE_SPAN + 1);
        let span = &shared.pages[start..start + TRUNCATE_SPAN];
        // 1. Stop new references.
        for page in span {
            if let Err(e) = page.meta.mark_truncating() {
                shared.violation(&format!("mark failed: {e}"));
            }
        }
        // 2. (No page tables here: the generation re-check plays the unmap.)
        // 3. Drain and free. A transient speculative increment makes a free report
        //    busy; waiting again resolves it.
        for page in span {
            loop {
                while !page.meta.is_idle() {
                    std::hint::spin_loop();
                    std::thread::yield_now();
                }
                match page.meta.free() {
                    Ok(()) => break,
                    Err(FreeError::Busy { .. }) => continue,
                    Err(e) => {
                        shared.violation(&format!("free failed: {e}"));
                        break;
                    }
                }
            }
            page.data.store(POISON, Ordering::Relaxed);
        }
        // 4. Reuse: new generation, new contents, then allocate (Release publishes
        //    both to the next getter's Acquire).
        for page in span {
            let generation = page.generation.load(Ordering::Relaxed) + 1;
            page.data.store(generation, Ordering::Relaxed);
            page.generation.store(generation, Ordering::Release);
            if let Err(e) = page.meta.allocate() {
                shared.violation(&format!("allocate failed: {e}"));
            }
        }
        truncates += 1;
    }
    truncates
}

fn run<P: GetPath>(getters: usize, ops: u64) {
    let shared = Shared {
        pages: (0..PAGES)
            .map(|_| Page {
                meta: PageMeta::new_allocated(),
                generation: AtomicU64::new(0),
                data: AtomicU64::new(0),
            })
            .collect(),
        violations: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    let begin = Instant::now();
    let (stats, truncates) = std::thread::scope(|s| {
        let trunc = s.spawn(|| truncater(&shared, 0x9e37_79b9_7f4a_7c15));
        let handles: Vec<_> = (0..getters)
            .map(|i| {
                let shared = &shared;
                s.spawn(move || getter::<P>(shared, 0x1234_5678 + i as u64, ops))
            })
            .collect();
        let stats: Vec<GetterStats> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        shared.stop.store(true, Ordering::Relaxed);
        (stats, trunc.join().unwrap())
    });
    let elapsed = begin.elapsed();
    for (i, page) in shared.pages.iter().enumerate() {
        let word = page.meta.load();
        if word != MetaWord::ALLOCATED_IDLE {
            shared.violation(&format!("page {i} ends as {word:?}"));
        }
    }
    let gets: u64 = stats.iter().map(|s| s.gets).sum();
    let pins: u64 = stats.iter().map(|s| s.pins).sum();
    let total_ops: u64 = stats.iter().map(|s| s.ops).sum();
    let ns_per_op = elapsed.as_nanos() as f64 * getters as f64 / total_ops as f64;
    println!("get path: {}", P::NAME);
    println!(
        "pagepin-summary threads={} gets={gets} pins={pins} truncates={truncates} violations={} ns_per_op={ns_per_op:.1}",
        getters + 1,
        shared.violations.load(Ordering::Relaxed),
    );
}

fn main() {
    let mut getters = 3;
    let mut ops: u64 = 5_000_000;
    let mut path = String::from("cas-loop");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&arg));
        match arg.as_str() {
            "--threads" => getters = value().parse().unwrap_or_else(|_| usage("--threads")),
            "--ops" => ops = value().parse().unwrap_or_else(|_| usage("--ops")),
            "--get-path" => path = value(),
            _ => usage(&arg),
        }
    }
    if getters == 0 {
        usage("--threads");
    }
    match path.as_str() {
        "cas-loop" => run::<CasLoop>(getters, ops),
        "fetch-add-undo" => run::<FetchAddUndo>(getters, ops),
        _ => usage("--get-path"),
    }
}

fn usage(bad: &str) -> ! {
    eprintln!(
        "pin_race: bad argument {bad:?}\nusage: pin_race [--threads N>0] [--ops N] [--get-path cas-loop|fetch-add-undo]"
    );
    std::process::exit(2)
}
