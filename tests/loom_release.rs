//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --target-dir target/loom --test loom_release
//!
//! Two threads release the one reference of a page that holds one reference and
//! one pin: the reference was taken once, so one of the two releases is a double
//! release.
//!
//! Checks (DESIGN.md invariant 4), each with its own message: no release borrows
//! from the neighbouring field (the pin count stays 1); the word ends consistent
//! (no reference left, no state bit touched); exactly one release succeeds and
//! the other is a typed error.
//!
//! Broken twins, each caught by the model:
//! - a blind `fetch_sub` checked afterwards: the second release, in whichever
//!   order, has already borrowed from the pin field when it notices. It fails in
//!   every interleaving, and without any race too (a double release on one
//!   thread: `broken_blind_fetch_sub_borrows_without_a_race`);
//! - a check of the field, then a blind `fetch_sub`: only when both releases pass
//!   the check before either subtracts does the second borrow. Run one after the
//!   other it refuses the second release as `put` does
//!   (`check_first_twins_need_the_race`): what the model catches is the race;
//! - a check of the field, then a plain store of the decremented word: when both
//!   releases read the same word both report success and one release is lost,
//!   though the word ends consistent; only "exactly one succeeds" catches it.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use pagepin::meta::{Hold, PageMeta, broken};

/// The invariant checks' messages (fixed, unique parts).
const BORROWED: &str = "invariant 4 (a release borrowed from the pin field)";
const REFS_LEFT: &str = "invariant 4 (the reference count did not end at zero)";
const FLAGS_CHANGED: &str = "invariant 4 (a release changed the state bits)";
const NOT_EXACTLY_ONE: &str =
    "invariant 4 (not exactly one of two releases of one reference succeeded)";

/// The two releases race (`race`), or run one after the other on one thread.
fn body(put: fn(&PageMeta) -> bool, race: bool) {
    let page = Arc::new(PageMeta::new_allocated());
    page.get(Hold::Ref, 1).unwrap();
    page.get(Hold::Pin, 1).unwrap();
    let (mine, theirs) = if race {
        let other = {
            let page = page.clone();
            thread::spawn(move || put(&page))
        };
        let mine = put(&page);
        (mine, other.join().unwrap())
    } else {
        (put(&page), put(&page))
    };
    // The word first: a borrow is the worst outcome, whatever the results say.
    let end = page.load();
    assert_eq!(end.pins(), 1, "{BORROWED}: {end:?}");
    assert_eq!(end.refs(), 0, "{REFS_LEFT}: {end:?}");
    assert!(end.flags().is_empty(), "{FLAGS_CHANGED}: {end:?}");
    assert!(
        mine ^ theirs,
        "{NOT_EXACTLY_ONE}: mine {mine}, theirs {theirs} ({end:?})"
    );
}

fn model(put: fn(&PageMeta) -> bool) {
    loom::model(move || body(put, true));
}

fn put_ref(page: &PageMeta) -> bool {
    // SAFETY: gives back a count this code took above.
    unsafe { page.put(Hold::Ref, 1) }.is_ok()
}

fn fetch_sub_ref(page: &PageMeta) -> bool {
    broken::put_fetch_sub(page, Hold::Ref, 1)
}

fn check_then_fetch_sub_ref(page: &PageMeta) -> bool {
    broken::put_check_then_fetch_sub(page, Hold::Ref, 1)
}

fn load_store_ref(page: &PageMeta) -> bool {
    broken::put_load_store(page, Hold::Ref, 1)
}

#[test]
fn racing_releases_never_borrow() {
    model(put_ref);
}

#[test]
#[should_panic(expected = "invariant 4 (a release borrowed from the pin field)")]
fn broken_blind_fetch_sub_double_release_borrows() {
    model(fetch_sub_ref);
}

#[test]
#[should_panic(expected = "invariant 4 (a release borrowed from the pin field)")]
fn broken_check_then_fetch_sub_racing_releases_borrow() {
    model(check_then_fetch_sub_ref);
}

#[test]
#[should_panic(
    expected = "invariant 4 (not exactly one of two releases of one reference succeeded)"
)]
fn broken_load_store_racing_releases_both_succeed() {
    model(load_store_ref);
}

/// One after the other, the two check-first twins refuse the second release
/// as `put` does: what the twins above are caught on is the race itself, not a
/// release that is wrong on its own (the blind `fetch_sub` is).
#[test]
fn check_first_twins_need_the_race() {
    for put in [put_ref, check_then_fetch_sub_ref, load_store_ref] {
        loom::model(move || body(put, false));
    }
}

#[test]
#[should_panic(expected = "invariant 4 (a release borrowed from the pin field)")]
fn broken_blind_fetch_sub_borrows_without_a_race() {
    loom::model(|| body(fetch_sub_ref, false));
}
