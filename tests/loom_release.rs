//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --target-dir target/loom --test loom_release
//!
//! Two releases race on a page that holds one reference and one pin; one of them
//! releases a reference that was never taken (a double release).
//!
//! Checks (DESIGN.md invariant 4): exactly one release succeeds, the other is a
//! typed error, and the pin — the neighbouring field — is untouched: a release
//! never borrows.
//!
//! Broken twin: a blind `fetch_sub` checked afterwards; the second release has
//! already borrowed from the pin field when it notices. It fails.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use pagepin::meta::{Hold, PageMeta, broken};

fn model(put: fn(&PageMeta) -> bool) {
    loom::model(move || {
        let page = Arc::new(PageMeta::new_allocated());
        page.get(Hold::Ref, 1).unwrap();
        page.get(Hold::Pin, 1).unwrap();
        let other = {
            let page = page.clone();
            thread::spawn(move || put(&page))
        };
        let mine = put(&page);
        let theirs = other.join().unwrap();
        assert!(
            mine ^ theirs,
            "violation: {mine} and {theirs} both/neither released"
        );
        let end = page.load();
        assert_eq!(
            end.pins(),
            1,
            "invariant violation: a release borrowed ({end:?})"
        );
        assert_eq!(end.refs(), 0, "violation: {end:?}");
        assert!(end.flags().is_empty(), "violation: {end:?}");
    });
}

fn put_ref(page: &PageMeta) -> bool {
    page.put(Hold::Ref, 1).is_ok()
}

fn fetch_sub_ref(page: &PageMeta) -> bool {
    broken::put_fetch_sub(page, Hold::Ref, 1)
}

#[test]
fn racing_releases_never_borrow() {
    model(put_ref);
}

#[test]
#[should_panic(expected = "violation")]
fn broken_fetch_sub_release_borrows() {
    model(fetch_sub_ref);
}
