//! `flood --measure-pid`: another process's CPU time and memory, from `/proc/PID/stat` and `/proc/PID/status`.
//!
//! CPU is `utime + stime` (fields 14 and 15 of `/proc/PID/stat`, all threads of the process, in clock ticks of
//! `sysconf(_SC_CLK_TCK)`, usually 100/s, so 10 ms resolution: use runs of several seconds). Memory is `VmRSS`
//! (resident now) and `VmHWM` (peak resident) from `/proc/PID/status`, in KiB.

use std::io;
use std::time::Duration;

/// User and system CPU time of a process so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Clock ticks in user mode (all threads).
    pub user_ticks: u64,
    /// Clock ticks in kernel mode (all threads).
    pub sys_ticks: u64,
}

impl CpuTimes {
    /// Reads `/proc/PID/stat`.
    pub fn of(pid: u32) -> io::Result<CpuTimes> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad /proc/{pid}/stat")))
    }

    /// `later - self`, as (user, system) durations.
    pub fn elapsed_until(&self, later: &CpuTimes) -> (Duration, Duration) {
        let tck = clock_ticks_per_second();
        let to_d = |ticks: u64| Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / tck);
        (
            to_d(later.user_ticks.saturating_sub(self.user_ticks)),
            to_d(later.sys_ticks.saturating_sub(self.sys_ticks)),
        )
    }
}

/// `sysconf(_SC_CLK_TCK)` (100 when it cannot be read).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer name and touches no memory of ours.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// utime and stime from the text of `/proc/PID/stat`. The command name (field 2) is in parentheses and may
/// contain spaces and `)`, so the fields are counted from the last `)`: state is field 3, utime 14, stime 15.
fn parse_stat(text: &str) -> Option<CpuTimes> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(CpuTimes {
        user_ticks: fields.get(11)?.parse().ok()?,
        sys_ticks: fields.get(12)?.parse().ok()?,
    })
}

/// Resident memory of a process now and at its peak, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_kib: Option<u64>,
    /// `VmHWM` (high-water mark of VmRSS).
    pub hwm_kib: Option<u64>,
}

impl Memory {
    /// Reads `/proc/PID/status`.
    pub fn of(pid: u32) -> io::Result<Memory> {
        Ok(parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status"))?))
    }
}

fn parse_status(text: &str) -> Memory {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Memory {
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_even_with_parentheses_and_spaces_in_the_name() {
        let text = "4242 (sense (ingest) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 12345 \
                    1000000 2000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(text),
            Some(CpuTimes {
                user_ticks: 250,
                sys_ticks: 75
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_status_memory_lines() {
        let text = "Name:\tsense-ingest\nVmPeak:\t  123456 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\nThreads:\t7\n";
        assert_eq!(
            parse_status(text),
            Memory {
                rss_kib: Some(30_720),
                hwm_kib: Some(40_960)
            }
        );
        assert_eq!(parse_status("Name:\tkthreadd\n"), Memory::default());
    }

    #[test]
    fn measures_this_process() {
        let pid = std::process::id();
        let before = CpuTimes::of(pid).unwrap();
        // Burn at least 100 ms of CPU (by getrusage), however busy the machine is.
        let cpu = || {
            let (u, s) = crate::stats::process_cpu();
            u + s
        };
        let (t, c0) = (std::time::Instant::now(), cpu());
        let mut x = 0u64;
        while cpu() - c0 < Duration::from_millis(100) && t.elapsed() < Duration::from_secs(20) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
            }
        }
        let after = CpuTimes::of(pid).unwrap();
        let (u, s) = before.elapsed_until(&after);
        assert!(u + s >= Duration::from_millis(10), "{u:?} + {s:?}");
        let m = Memory::of(pid).unwrap();
        assert!(m.rss_kib.unwrap() > 0 && m.hwm_kib.unwrap() >= m.rss_kib.unwrap());
    }
}
