//! Conversions between pagepin's addresses and those of the two paging crates
//! kernels already use, each behind an off-by-default feature of the same
//! name: `x86_64` (the `x86_64` crate's `PhysAddr` and `VirtAddr`) and
//! `aarch64-paging` (its `PhysicalAddress` and `VirtualAddress`).
//!
//! Conversions *to* pagepin always succeed (pagepin's addresses are plain
//! 64-bit numbers); conversions *from* pagepin are `TryFrom`, refused where
//! the other crate has a narrower notion (the `x86_64` crate's 52-bit physical
//! and canonical 48-bit virtual addresses; `usize` on a 32-bit target).
//!
//! There is no [`TableAccess`](super::TableAccess) over those crates' tables
//! here, on purpose:
//!
//! - the `x86_64` crate's `PageTable` entries are plain `u64`s written with
//!   plain stores through `&mut` (its `Mapper`), so a pagepin walk of the
//!   same tables is a data race unless the mapper is excluded while walkers
//!   run; a kernel uses [`DirectMap`](super::DirectMap) over its direct map
//!   and hands the crate's mapper out only through `&mut` of that memory, as
//!   `examples/unikernel.rs` does;
//! - `aarch64-paging`'s descriptors are `AtomicUsize`s, written with Release
//!   and read with Acquire (so a concurrent walk would see whole entries and
//!   published tables), but its mapping operations take `&mut` of the
//!   descriptors: a shared reference held by a walker at the same time is
//!   undefined behaviour in Rust's aliasing model. The same exclusion applies:
//!   walk through a [`DirectMap`](super::DirectMap) of the memory, and map
//!   with the crate while no walk runs (or through atomic stores only).

#[cfg(feature = "x86_64")]
mod x86 {
    use crate::table::addr::{PhysAddr, VirtAddr};

    impl From<x86_64::PhysAddr> for PhysAddr {
        fn from(pa: x86_64::PhysAddr) -> PhysAddr {
            PhysAddr(pa.as_u64())
        }
    }

    impl From<x86_64::VirtAddr> for VirtAddr {
        fn from(va: x86_64::VirtAddr) -> VirtAddr {
            VirtAddr(va.as_u64())
        }
    }

    impl TryFrom<PhysAddr> for x86_64::PhysAddr {
        type Error = x86_64::addr::PhysAddrNotValid;

        /// Refused for an address above 52 bits.
        fn try_from(pa: PhysAddr) -> Result<Self, Self::Error> {
            x86_64::PhysAddr::try_new(pa.0)
        }
    }

    impl TryFrom<VirtAddr> for x86_64::VirtAddr {
        type Error = x86_64::addr::VirtAddrNotValid;

        /// Refused for an address that is not canonical for 4-level paging.
        fn try_from(va: VirtAddr) -> Result<Self, Self::Error> {
            x86_64::VirtAddr::try_new(va.0)
        }
    }
}

#[cfg(feature = "aarch64-paging")]
mod arm {
    use crate::table::addr::{PhysAddr, VirtAddr};
    use aarch64_paging::descriptor::{PhysicalAddress, VirtualAddress};

    impl From<PhysicalAddress> for PhysAddr {
        fn from(pa: PhysicalAddress) -> PhysAddr {
            // `usize` is at most 64 bits on every target pagepin builds for.
            PhysAddr(pa.0 as u64)
        }
    }

    impl From<VirtualAddress> for VirtAddr {
        fn from(va: VirtualAddress) -> VirtAddr {
            VirtAddr(va.0 as u64)
        }
    }

    impl TryFrom<PhysAddr> for PhysicalAddress {
        type Error = core::num::TryFromIntError;

        /// Refused only where `usize` is narrower than the address.
        fn try_from(pa: PhysAddr) -> Result<Self, Self::Error> {
            usize::try_from(pa.0).map(PhysicalAddress)
        }
    }

    impl TryFrom<VirtAddr> for VirtualAddress {
        type Error = core::num::TryFromIntError;

        /// Refused only where `usize` is narrower than the address.
        fn try_from(va: VirtAddr) -> Result<Self, Self::Error> {
            usize::try_from(va.0).map(VirtualAddress)
        }
    }
}

#[cfg(all(test, feature = "x86_64", feature = "aarch64-paging"))]
mod tests {
    use crate::table::addr::{PhysAddr, VirtAddr};
    use aarch64_paging::descriptor::{PhysicalAddress, VirtualAddress};

    #[test]
    fn addresses_convert_both_ways_and_refuse_what_the_other_crate_cannot_hold() {
        let pa = PhysAddr(0x8000_1000);
        let x: x86_64::PhysAddr = pa.try_into().unwrap();
        assert_eq!(PhysAddr::from(x), pa);
        assert!(x86_64::PhysAddr::try_from(PhysAddr(1 << 60)).is_err());
        let va = VirtAddr(0xffff_8000_0000_1000);
        let x: x86_64::VirtAddr = va.try_into().unwrap();
        assert_eq!(VirtAddr::from(x), va);
        assert!(x86_64::VirtAddr::try_from(VirtAddr(0x0000_8000_0000_0000)).is_err());
        let a: PhysicalAddress = pa.try_into().unwrap();
        assert_eq!(PhysAddr::from(a), pa);
        let v: VirtualAddress = va.try_into().unwrap();
        assert_eq!(VirtAddr::from(v), va);
    }
}
