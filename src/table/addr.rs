//! Addresses and virtual-address ranges.

use core::fmt;

use super::error::RangeError;

/// A physical address (or, for `HostMemory` (the `host` feature), a made-up one:
/// a base plus an offset into the host slice).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(pub u64);

/// A virtual address, as the program uses it (for x86_64, sign-extended).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtAddr(pub u64);

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA {:#x}", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VA {:#x}", self.0)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl VirtAddr {
    /// Whether bits `bits - 1 ..= 63` are all equal: the address is the sign
    /// extension of its low `bits` bits (x86_64's rule for canonical addresses).
    /// `bits` outside `1..=64` makes no address sign-extended except for 64,
    /// where every address is.
    #[inline]
    pub const fn is_sign_extended(self, bits: u32) -> bool {
        match bits {
            64 => true,
            1..=63 => {
                // `1 <= shift <= 63`: both shifts below are in range.
                let shift = 64 - bits;
                (((self.0 << shift) as i64) >> shift) as u64 == self.0
            }
            _ => false,
        }
    }
}

/// A non-empty virtual range that does not wrap around the end of the address
/// space: `start ..= last`, kept as a start and a length so that a range ending at
/// the top of the address space (`last == u64::MAX`) is representable.
///
/// ```
/// use pagepin::table::{VaRange, VirtAddr};
///
/// let top = VaRange::new(VirtAddr(0xffff_ffff_ffff_f000), 0x1000).unwrap();
/// assert_eq!(top.last(), VirtAddr(u64::MAX));
/// assert!(VaRange::new(VirtAddr(0xffff_ffff_ffff_f000), 0x2000).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VaRange {
    start: VirtAddr,
    len: u64,
}

impl VaRange {
    /// The range `start .. start + len`.
    ///
    /// # Errors
    ///
    /// [`RangeError::Empty`] when `len` is 0, [`RangeError::Wraps`] when the range
    /// runs past `u64::MAX`.
    #[inline]
    pub const fn new(start: VirtAddr, len: u64) -> Result<VaRange, RangeError> {
        if len == 0 {
            return Err(RangeError::Empty);
        }
        if start.0.checked_add(len - 1).is_none() {
            return Err(RangeError::Wraps);
        }
        Ok(VaRange { start, len })
    }

    /// The inclusive range `start ..= last`.
    ///
    /// # Errors
    ///
    /// [`RangeError::Wraps`] when `last < start`.
    #[inline]
    pub const fn from_inclusive(start: VirtAddr, last: VirtAddr) -> Result<VaRange, RangeError> {
        if last.0 < start.0 {
            return Err(RangeError::Wraps);
        }
        // `last - start + 1` overflows only for the whole 2^64 space, which no
        // format's canonical set spans.
        match (last.0 - start.0).checked_add(1) {
            Some(len) => Ok(VaRange { start, len }),
            None => Err(RangeError::Wraps),
        }
    }

    /// `start ..= last` for `start <= last` inside one format's window (so the
    /// length fits in a `u64`); callers guarantee both.
    #[inline]
    pub(crate) const fn spanning(start: VirtAddr, last: VirtAddr) -> VaRange {
        // `start <= last` (no wrap in the subtraction), and both lie in one
        // window of `2^va_bits` addresses with `va_bits < 64`, so
        // `last - start < 2^63` and the `+ 1` cannot overflow.
        VaRange {
            start,
            len: (last.0 - start.0) + 1,
        }
    }

    /// The first address.
    #[inline]
    pub const fn start(self) -> VirtAddr {
        self.start
    }

    /// The number of bytes (never 0; 2^64 bytes is not representable).
    #[inline]
    pub const fn size(self) -> u64 {
        self.len
    }

    /// The last address (inclusive).
    #[inline]
    pub const fn last(self) -> VirtAddr {
        // `len >= 1`, and every constructor checked `start + (len - 1)`
        // against `u64::MAX` (`new` with `checked_add`, `from_inclusive` and
        // `spanning` by computing `len` from `last`); parenthesised so that a
        // range ending at `u64::MAX` never forms `start + len == 2^64`.
        VirtAddr(self.start.0 + (self.len - 1))
    }

    /// Whether `va` lies in the range.
    #[inline]
    pub const fn contains(self, va: VirtAddr) -> bool {
        va.0 >= self.start.0 && va.0 <= self.last().0
    }
}

impl fmt::Debug for VaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VA {:#x}..={:#x}", self.start.0, self.last().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_extension_at_48_and_57_bits() {
        assert!(VirtAddr(0x0000_7fff_ffff_ffff).is_sign_extended(48));
        assert!(!VirtAddr(0x0000_8000_0000_0000).is_sign_extended(48));
        assert!(VirtAddr(0xffff_8000_0000_0000).is_sign_extended(48));
        assert!(!VirtAddr(0xfffe_8000_0000_0000).is_sign_extended(48));
        assert!(VirtAddr(0x00ff_ffff_ffff_ffff).is_sign_extended(57));
        assert!(!VirtAddr(0x0100_0000_0000_0000).is_sign_extended(57));
        assert!(VirtAddr(0xff00_0000_0000_0000).is_sign_extended(57));
        assert!(VirtAddr(u64::MAX).is_sign_extended(64));
        assert!(!VirtAddr(0).is_sign_extended(0));
        assert!(!VirtAddr(0).is_sign_extended(65));
    }

    #[test]
    fn ranges_reject_empty_and_wrapping() {
        assert_eq!(VaRange::new(VirtAddr(0), 0), Err(RangeError::Empty));
        assert_eq!(VaRange::new(VirtAddr(u64::MAX), 2), Err(RangeError::Wraps));
        let r = VaRange::new(VirtAddr(u64::MAX), 1).unwrap();
        assert_eq!(
            (r.start(), r.last(), r.size()),
            (VirtAddr(u64::MAX), VirtAddr(u64::MAX), 1)
        );
        assert_eq!(
            VaRange::from_inclusive(VirtAddr(5), VirtAddr(4)),
            Err(RangeError::Wraps)
        );
        assert_eq!(
            VaRange::from_inclusive(VirtAddr(0), VirtAddr(u64::MAX)),
            Err(RangeError::Wraps)
        );
        let r = VaRange::from_inclusive(VirtAddr(0x1000), VirtAddr(0x1fff)).unwrap();
        assert_eq!(r.size(), 0x1000);
        assert!(r.contains(VirtAddr(0x1fff)) && !r.contains(VirtAddr(0x2000)));
    }
}
