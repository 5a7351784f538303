//! Process-level gauges read at scrape time: memory from `/proc/self/statm`, CPU time from
//! `getrusage(RUSAGE_SELF)`, open descriptors from `/proc/self/fd`. A value that cannot be
//! read (no procfs) is left out of the exposition rather than reported as zero.

use std::io;

/// What the process uses now.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessSample {
    /// Resident set size in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size in bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// User plus system CPU time of every thread, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
}

fn page_bytes() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// `(virtual, resident)` bytes parsed from the text of `/proc/self/statm` (sizes in pages).
pub fn parse_statm(text: &str, page_bytes: u64) -> Option<(u64, u64)> {
    let mut fields = text.split_ascii_whitespace();
    let size_pages: u64 = fields.next()?.parse().ok()?;
    let resident_pages: u64 = fields.next()?.parse().ok()?;
    Some((size_pages * page_bytes, resident_pages * page_bytes))
}

/// User plus system CPU seconds of the calling process (all threads).
pub fn cpu_seconds() -> io::Result<f64> {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    Ok(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// Reads every process gauge that can be read.
pub fn sample() -> ProcessSample {
    let statm = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| parse_statm(&text, page_bytes()));
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|entries| entries.count() as u64);
    ProcessSample {
        virtual_memory_bytes: statm.map(|(size, _)| size),
        resident_memory_bytes: statm.map(|(_, resident)| resident),
        cpu_seconds: cpu_seconds().ok(),
        open_fds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_is_parsed_in_pages() {
        assert_eq!(parse_statm("100 25 3 1 0 20 0\n", 4096), Some((409_600, 102_400)));
        assert_eq!(parse_statm("100", 4096), None);
        assert_eq!(parse_statm("x 1", 4096), None);
    }

    #[test]
    fn sample_reads_this_process() {
        let sample = sample();
        assert!(sample.resident_memory_bytes.is_some_and(|bytes| bytes > 0));
        assert!(sample.open_fds.is_some_and(|fds| fds >= 3));
    }
}
