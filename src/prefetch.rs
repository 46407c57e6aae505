//! Asking the CPU to start loading a cache line before it is read, so that the miss overlaps
//! other work. Used where the next address is known early: the session ring's next slot, and
//! the router's table slots a match will probe.

/// Starts loading the cache line holding `*p`. A hint: it reads nothing, never faults (any
/// address is fine, also one past the end of a buffer), and does nothing off x86-64.
#[inline]
pub(crate) fn line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is a hint; it dereferences nothing and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
