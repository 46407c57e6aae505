//! What the kernel tells about a process: resident memory and CPU time, from `/proc`.

use std::time::Instant;

pub use super::syscalls::{SyscallMeter, Syscalls};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Resident set size in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS").map(|kib| kib * 1024)
}

/// A KiB figure of `/proc/<pid>/status`, such as `VmRSS` (resident memory) or `VmHWM` (its
/// peak).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU seconds used so far (`/proc/<pid>/stat`; `self` for this process).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // After the name: state(3) … utime is field 14, stime 15 (1-based, name = 2).
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// CPU use (and system calls) of the server and of the tool over an interval.
pub struct CpuMeter {
    server: Option<(u32, f64)>,
    server_syscalls: Option<SyscallMeter>,
    tool: Option<f64>,
    start: Instant,
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            server: server_pid.and_then(|p| Some((p, cpu_seconds(&p.to_string())?))),
            server_syscalls: server_pid.and_then(SyscallMeter::start),
            tool: cpu_seconds("self"),
            start: Instant::now(),
        }
    }

    /// CPU use since the start.
    pub fn stop(self) -> CpuUse {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let server_seconds = self
            .server
            .and_then(|(pid, s)| Some(cpu_seconds(&pid.to_string())? - s));
        let tool = self
            .tool
            .and_then(|s| Some((cpu_seconds("self")? - s) / wall));
        let server_syscalls = self.server_syscalls.and_then(SyscallMeter::stop);
        CpuUse {
            server: server_seconds.map(|s| s / wall),
            server_syscalls,
            server_seconds,
            tool,
        }
    }
}

/// What [`CpuMeter::stop`] measured.
pub struct CpuUse {
    /// The server's CPU use as a fraction of one core.
    pub server: Option<f64>,
    /// The server's CPU seconds.
    pub server_seconds: Option<f64>,
    /// The tool's CPU use as a fraction of one core.
    pub tool: Option<f64>,
    /// The server's read and write system calls.
    pub server_syscalls: Option<Syscalls>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(cpu_seconds(&pid.to_string()).is_some());
    }
}
