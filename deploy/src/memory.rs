//! A process's resident memory, read from `/proc/<pid>/status` (`VmRSS`,
//! in KiB): the one reader behind the memory-bound tests, `fleet-bench`
//! and the load test's workers and RSS sampler.

/// Resident memory of process `pid` in KiB; 0 when it is gone or its
/// status cannot be read (for tests comparing before and after).
pub fn rss_kib(pid: u32) -> u64 {
    try_rss_kib(pid).unwrap_or(0)
}

/// Resident memory of process `pid` in KiB, or why it cannot be read (the
/// process is gone, or is a zombie without a `VmRSS` line).
pub fn try_rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_kib(&status, "VmRSS")
        .ok_or_else(|| std::io::Error::other(format!("no VmRSS line for process {pid}")))
}

/// The value of a `Field:   1234 kB` line of a `/proc/<pid>/status` text.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_lines() {
        let s = "Name:\tx\nVmRSSX:\t9 kB\nVmRSS:\t  1234 kB\nVmHWM:\t2000 kB\n";
        assert_eq!(status_kib(s, "VmRSS"), Some(1234));
        assert_eq!(status_kib(s, "VmHWM"), Some(2000));
        assert_eq!(status_kib("Name:\tx\n", "VmRSS"), None);
        assert_eq!(status_kib("VmRSS:\tlots kB\n", "VmRSS"), None);
    }

    #[test]
    fn reads_this_process_and_not_a_gone_one() {
        assert!(try_rss_kib(std::process::id()).unwrap() > 0);
        assert!(rss_kib(std::process::id()) > 0);
        // PIDs never go this high (pid_max is at most 2^22).
        assert!(try_rss_kib(u32::MAX).is_err());
        assert_eq!(rss_kib(u32::MAX), 0);
    }
}
