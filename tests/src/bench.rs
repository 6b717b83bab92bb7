//! What the benchmarks share.

/// `VmHWM` (peak resident set) of this process, as `VmHWM <n> kB`, for a bench's output
/// lines.
pub fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .map_or_else(|| "VmHWM unavailable".into(), |v| format!("VmHWM {v}"))
}
