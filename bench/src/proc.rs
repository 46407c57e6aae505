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

/// The CPU seconds of all of `pids` together (`None` if one of them cannot be read).
pub fn cpu_seconds_sum(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_seconds(&p.to_string())).sum()
}

/// The resident memory of all of `pids` together (`None` if one of them cannot be read).
pub fn rss_bytes_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_bytes(p)).sum()
}

/// The command name of a process (`/proc/<pid>/comm`: `herald`, `redis-server`, …).
pub fn process_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

/// CPU use (and system calls) of the server and of the tool over an interval. The server
/// may be several processes (a cluster's nodes and its Redis): their figures are summed.
pub struct CpuMeter {
    /// Each server process and its CPU seconds at the start.
    server: Vec<(u32, Option<f64>)>,
    server_syscalls: Option<SyscallMeter>,
    tool: Option<f64>,
    start: Instant,
}

impl CpuMeter {
    pub fn start(server_pids: &[u32]) -> CpuMeter {
        CpuMeter {
            server: server_pids
                .iter()
                .map(|&p| (p, cpu_seconds(&p.to_string())))
                .collect(),
            server_syscalls: SyscallMeter::start(server_pids),
            tool: cpu_seconds("self"),
            start: Instant::now(),
        }
    }

    /// CPU use since the start.
    pub fn stop(self) -> CpuUse {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let processes: Vec<ProcessCpu> = self
            .server
            .iter()
            .map(|&(pid, before)| {
                let seconds = before.and_then(|b| Some(cpu_seconds(&pid.to_string())? - b));
                ProcessCpu {
                    pid,
                    name: process_name(pid).unwrap_or_else(|| "?".into()),
                    seconds,
                    cpu: seconds.map(|s| s / wall),
                }
            })
            .collect();
        // One process unread makes the sum no figure rather than a wrong one.
        let server_seconds = if processes.is_empty() {
            None
        } else {
            processes.iter().map(|p| p.seconds).sum()
        };
        let tool = self
            .tool
            .and_then(|s| Some((cpu_seconds("self")? - s) / wall));
        let server_syscalls = self.server_syscalls.and_then(SyscallMeter::stop);
        CpuUse {
            server: server_seconds.map(|s| s / wall),
            server_syscalls,
            server_seconds,
            tool,
            processes,
        }
    }
}

/// One server process's share of [`CpuUse`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcessCpu {
    pub pid: u32,
    /// Its command name (`/proc/<pid>/comm`).
    pub name: String,
    /// CPU seconds over the interval.
    pub seconds: Option<f64>,
    /// CPU use as a fraction of one core.
    pub cpu: Option<f64>,
}

/// What [`CpuMeter::stop`] measured.
pub struct CpuUse {
    /// The server's CPU use as a fraction of one core (all its processes).
    pub server: Option<f64>,
    /// The server's CPU seconds (all its processes).
    pub server_seconds: Option<f64>,
    /// The tool's CPU use as a fraction of one core.
    pub tool: Option<f64>,
    /// The server's read and write system calls (all its processes).
    pub server_syscalls: Option<Syscalls>,
    /// Each server process's CPU, in the order of the pids given.
    pub processes: Vec<ProcessCpu>,
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
        assert!(cpu_seconds_sum(&[pid, pid]).unwrap() >= 0.0);
        assert_eq!(rss_bytes_sum(&[]), None);
        assert!(rss_bytes_sum(&[pid, pid]).unwrap() >= rss_bytes(pid).unwrap());
        assert!(!process_name(pid).unwrap().is_empty());
        let m = CpuMeter::start(&[pid, pid]).stop();
        assert_eq!(m.processes.len(), 2);
        assert!(m.server_seconds.is_some());
    }
}
