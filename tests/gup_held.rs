//! Run: `cargo test --test gup_held`
//!
//! `HeldPages`, the handle `Gup::get_held` returns: dropping it releases the
//! pages (all of them, on their counting metas, whatever the stop), `release`
//! reports what dropping would swallow, `into_raw` hands the counts over.

use pagepin::arch::x86_64::Paging4Level;
use pagepin::guard::TablesNeverFreed;
use pagepin::gup::{Gup, GupFlags, ReleaseErrorKind, Stop, release};
use pagepin::memmap::{MemoryMap, Pfn, Region, SliceMemMap};
use pagepin::meta::{Hold, PageMeta, PutError};
use pagepin::table::{
    FramePool, HostFrame, HostMemory, MapRequest, Perms, PhysAddr, ReclaimNow, TableBuilder,
    VirtAddr,
};

const KIB4: u64 = 4096;
const VA: u64 = 0x40_0000;
const DATA: u64 = 0x8000_0000;

fn guard() -> TablesNeverFreed {
    // SAFETY: these tests free no page table (single thread).
    unsafe { TablesNeverFreed::new() }
}

/// 1024 metas: a 2 MiB unit (pages 0..512) mapped by a 2 MiB leaf at VA, and
/// 8 single-page units (512..520) mapped by 4 KiB leaves after it.
fn with_gup(f: impl FnOnce(&Gup<'_, Paging4Level, HostMemory<'_>, SliceMemMap<'_>>, &[PageMeta])) {
    let metas: Vec<PageMeta> = (0..1024).map(|_| PageMeta::new_allocated()).collect();
    // SAFETY: this map is the only one counting on these metas.
    let mut memmap = unsafe { SliceMemMap::new(Pfn(DATA / KIB4), &metas) };
    memmap
        .add_region(Region {
            first: Pfn(DATA / KIB4),
            pages: 512,
            unit_pages: 512,
            layout_managed: false,
        })
        .unwrap();
    let frames: Vec<HostFrame> = (0..16).map(|_| HostFrame::new()).collect();
    let memory = HostMemory::new(&frames, PhysAddr(0x10_0000)).unwrap();
    let mut slots: Vec<PhysAddr> = memory.frame_pas().collect();
    let mut tables =
        // SAFETY: no walker or MMU reads these tables while the builder unmaps.
        // The pool's frames are this code's own, in no other pool.
        TableBuilder::<Paging4Level, _, _>::new(&memory, unsafe { FramePool::new(&mut slots) }, unsafe { ReclaimNow::new() })
            .unwrap();
    let rw = Perms::READ | Perms::WRITE;
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(&MapRequest::new(VirtAddr(VA), PhysAddr(DATA), 2 << 20, 2 << 20).with_perms(rw))
    }
    .unwrap();
    // SAFETY: the pages mapped are this code's, unmapped before they are freed.
    unsafe {
        tables.map(
            &MapRequest::new(
                VirtAddr(VA + (2 << 20)),
                PhysAddr(DATA + (2 << 20)),
                8 * KIB4,
                KIB4,
            )
            .with_perms(rw),
        )
    }
    .unwrap();
    let gup = Gup::new(tables.walker(), &memmap);
    f(&gup, &metas);
    assert!(metas.iter().all(PageMeta::is_idle), "nothing left held");
}

#[test]
fn dropping_the_handle_releases_every_page_whatever_the_stop() {
    with_gup(|gup, metas| {
        let mut out = vec![Pfn(0); 600];
        // The whole 2 MiB leaf and 8 small pages, then a hole: 520 pages.
        let held = gup
            .get_held(&guard(), VirtAddr(VA), 600 * KIB4, GupFlags::PIN, &mut out)
            .unwrap();
        assert_eq!(held.pfns().len(), 520);
        assert_eq!(
            held.stop(),
            Stop::Absent {
                va: VirtAddr(VA + 520 * KIB4)
            }
        );
        assert_eq!(held.hold(), Hold::Pin);
        assert_eq!(metas[0].pins(), 512, "one head counts the 2 MiB leaf");
        assert_eq!(metas[515].pins(), 1);
        drop(held);
        assert!(metas.iter().all(PageMeta::is_idle));
        // References, stopped by the output slice inside the huge leaf.
        let held = gup
            .get_held(
                &guard(),
                VirtAddr(VA),
                600 * KIB4,
                GupFlags::empty(),
                &mut out[..100],
            )
            .unwrap();
        assert_eq!((held.pfns().len(), held.hold()), (100, Hold::Ref));
        assert_eq!(metas[0].refs(), 100);
    });
}

#[test]
fn release_reports_what_drop_would_swallow() {
    with_gup(|gup, metas| {
        let mut out = vec![Pfn(0); 8];
        let held = gup
            .get_held(
                &guard(),
                VirtAddr(VA + (2 << 20)),
                8 * KIB4,
                GupFlags::PIN,
                &mut out,
            )
            .unwrap();
        // A bug outside the handle releases page 3's pin behind its back.
        let page3 = held.pfns()[3];
        // SAFETY: breaks the promise on purpose (the bug being modelled): the
        // handle holds this pin. Page 3 is a one-page unit no one else holds,
        // so the only effect is the handle's refusal below.
        unsafe { release(gup.memmap(), &[page3], Hold::Pin) }.unwrap();
        let e = held.release().unwrap_err();
        assert_eq!((e.released, e.pfn), (3, page3));
        assert!(matches!(
            e.kind,
            ReleaseErrorKind::Put(PutError::NotHeld { .. })
        ));
        // The pages after the refused one were released all the same.
        assert!(metas.iter().all(PageMeta::is_idle));
    });
}

#[test]
fn into_raw_hands_the_counts_over() {
    with_gup(|gup, metas| {
        let mut out = vec![Pfn(0); 2];
        let held = gup
            .get_held(
                &guard(),
                VirtAddr(VA + (2 << 20)),
                2 * KIB4,
                GupFlags::PIN | GupFlags::WRITE,
                &mut out,
            )
            .unwrap();
        let (pfns, hold) = held.into_raw();
        assert_eq!(
            metas[512].pins(),
            1,
            "still pinned after the handle is gone"
        );
        // SAFETY: the pages were taken above by this code and are released once.
        unsafe { release(gup.memmap(), pfns, hold) }.unwrap();
        assert!(metas.iter().all(PageMeta::is_idle));
        // A refused range takes nothing and makes no handle.
        assert!(
            gup.get_held(&guard(), VirtAddr(VA + 1), KIB4, GupFlags::PIN, &mut out)
                .is_err()
        );
        let unit = gup.memmap().unit(Pfn(DATA / KIB4)).unwrap();
        assert!(unit.meta.is_idle());
    });
}
