//! A process's socket system calls over an interval, counted by `perf stat` on the kernel's
//! syscall tracepoints: the one figure that shows whether writes are batched (a delivery per
//! `sendto`, or hundreds). Counting in the kernel costs the server next to nothing, unlike
//! `strace`. Without `perf` (or the right to trace) there is no figure, not a wrong one.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Read-type and write-type system calls (any of the calls below, on any file).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Syscalls {
    pub reads: u64,
    pub writes: u64,
}

const WRITES: [&str; 5] = ["sendto", "sendmsg", "sendmmsg", "write", "writev"];
const READS: [&str; 5] = ["recvfrom", "recvmsg", "recvmmsg", "read", "readv"];

/// A running `perf stat` attached to the process.
pub struct SyscallMeter {
    child: Child,
}

impl SyscallMeter {
    /// Starts counting the calls of `pids`, all together (`None` when there are none or perf
    /// cannot be run).
    pub fn start(pids: &[u32]) -> Option<SyscallMeter> {
        if pids.is_empty() {
            return None;
        }
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let events: Vec<String> = WRITES
            .iter()
            .chain(&READS)
            .map(|c| format!("syscalls:sys_enter_{c}"))
            .collect();
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-e", &events.join(","), "-p"])
            .arg(pids.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        // perf attaches its counters after it starts; calls before that are not counted.
        std::thread::sleep(Duration::from_millis(100));
        Some(SyscallMeter { child })
    }

    /// Stops counting: the calls since [`SyscallMeter::start`].
    pub fn stop(mut self) -> Option<Syscalls> {
        // perf prints its counts on SIGINT.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let mut text = String::new();
        self.child.stderr.take()?.read_to_string(&mut text).ok()?;
        let _ = self.child.wait();
        // perf exits non-zero on SIGINT on some versions: its counts are what tell.
        parse(&text)
    }
}

/// The sums of `perf stat -x ,` lines (`count,unit,event,…`); `None` if nothing was counted.
fn parse(text: &str) -> Option<Syscalls> {
    let mut out = Syscalls::default();
    let mut seen = false;
    for line in text.lines() {
        let mut f = line.split(',');
        let (Some(count), _, Some(event)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Some(call) = event.strip_prefix("syscalls:sys_enter_") else {
            continue;
        };
        seen = true;
        // "<not counted>": the process made no such call.
        let n: u64 = count.trim().parse().unwrap_or(0);
        if WRITES.contains(&call) {
            out.writes += n;
        } else if READS.contains(&call) {
            out.reads += n;
        }
    }
    seen.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_perf_lines() {
        let text = "1003,,syscalls:sys_enter_sendto,2140716,100.00,,\n\
                    <not counted>,,syscalls:sys_enter_write,0,100.00,,\n\
                    7,,syscalls:sys_enter_writev,1,100.00,,\n\
                    40,,syscalls:sys_enter_recvfrom,1,100.00,,\n";
        assert_eq!(
            parse(text),
            Some(Syscalls {
                reads: 40,
                writes: 1010
            })
        );
        assert_eq!(parse("perf: command failed\n"), None);
    }
}
