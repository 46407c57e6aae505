//! The open-files limit. Every connection is a file descriptor, and the usual soft limit
//! (1024) is far below `limits.max_connections` (100,000 by default). Like most servers
//! (nats-server, and every Go program since Go 1.19), the `herald` binary raises its soft
//! limit to the hard limit when it starts. Only the soft limit moves: the hard limit is the
//! administrator's to set. The library leaves the limit alone (a process that embeds a
//! [`crate::Server`] decides for itself), but offers this to it and to the tests.

/// The soft limit on open files before and after [`raise_to_hard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub from: u64,
    pub to: u64,
}

/// The highest soft limit asked for when the hard limit is "unlimited" (macOS says so, yet
/// refuses a soft limit above its per-process maximum).
#[cfg(unix)]
const UNLIMITED_CAP: u64 = 1 << 20;

/// Raises this process's soft limit on open files to its hard limit.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // `rlim_t` is `u64` on Linux, not on every unix
pub fn raise_to_hard() -> std::io::Result<Raised> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live one.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let from = lim.rlim_cur as u64;
    let hard = if lim.rlim_max == libc::RLIM_INFINITY {
        UNLIMITED_CAP
    } else {
        lim.rlim_max as u64
    };
    if from >= hard {
        return Ok(Raised { from, to: from });
    }
    lim.rlim_cur = hard as libc::rlim_t;
    // SAFETY: setrlimit reads one `rlimit` through a pointer to a live one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Raised { from, to: hard })
}

/// Elsewhere there is no such limit to raise.
#[cfg(not(unix))]
pub fn raise_to_hard() -> std::io::Result<Raised> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no open-files limit on this platform",
    ))
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn raising_twice_is_a_no_op_the_second_time() {
        let first = super::raise_to_hard().unwrap();
        assert!(first.to >= first.from);
        let second = super::raise_to_hard().unwrap();
        assert_eq!((second.from, second.to), (first.to, first.to));
    }
}
