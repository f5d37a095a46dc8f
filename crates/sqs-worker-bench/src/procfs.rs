//! Process CPU time and memory from `/proc/self` (Linux).

use std::fs;

/// CPU time of the process in nanoseconds: the sum of its threads'
/// `schedstat` run times (ns resolution), else `utime + stime` of
/// `/proc/self/stat` (clock ticks).
pub(crate) fn cpu_ns() -> u64 {
    schedstat_ns().unwrap_or_else(stat_ns)
}

/// `utime + stime` from `/proc/self/stat`, in ns (tick resolution).
pub(crate) fn stat_ns() -> u64 {
    let Ok(s) = fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) * 10_000_000
}

/// The sum of `/proc/self/task/*/schedstat` run times (ns). Threads that
/// exited are missing from it, so it is only used for windows in which no
/// thread exits (the runtimes here keep their threads).
fn schedstat_ns() -> Option<u64> {
    let mut total = 0u64;
    for entry in fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let s = fs::read_to_string(path).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// How many times this process's threads were switched onto a CPU: the sum
/// of the third field of `/proc/self/task/*/schedstat` (each wake-up of a
/// parked worker thread counts one).
pub(crate) fn timeslices() -> u64 {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

/// A `/proc/self/status` value in KiB (`VmHWM`, `VmRSS`).
pub(crate) fn status_kib(key: &str) -> u64 {
    let Ok(s) = fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
