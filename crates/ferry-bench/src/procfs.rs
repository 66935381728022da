//! What the benchmark reads from `/proc`: a process's CPU time and peak RSS, the load
//! average, the CPU model and the filesystem a path lives on.

use std::io;
use std::path::Path;
use std::sync::OnceLock;

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User plus system CPU seconds of process `pid` (all its threads, live or exited);
/// `None` means this process.
pub fn cpu_seconds(pid: Option<u32>) -> io::Result<f64> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |pid| format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(path)?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| io::Error::other("bad stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> io::Result<f64> {
        fields.get(i).and_then(|f| f.parse::<f64>().ok()).ok_or_else(|| io::Error::other("bad stat field"))
    };
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    Ok((field(11)? + field(12)?) / ticks_per_second())
}

/// CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal),
/// from `/proc/stat`; the difference over a run, minus the server's and the load
/// generator's own time, is what other processes took from the machine meanwhile.
pub fn machine_busy_seconds() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| io::Error::other("no cpu line"))?;
    let fields: Vec<f64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0.0)).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    Ok(busy / ticks_per_second())
}

/// Peak resident set size (`VmHWM`) of process `pid`, in bytes.
pub fn peak_rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmHWM"))
}

/// `/proc/loadavg`'s first three fields.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// The CPU's model name.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// The filesystem holding `path`: (device, type, mount point), from `/proc/self/mountinfo`.
pub fn filesystem_of(path: &Path) -> Option<(String, String, String)> {
    let path = path.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(String, String, String)> = None;
    for line in info.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?.replace("\\040", " ");
        let mut right = right.split(' ');
        let (fs_type, source) = (right.next()?.to_owned(), right.next()?.to_owned());
        if path.starts_with(&mount_point) && best.as_ref().is_none_or(|b| mount_point.len() >= b.2.len()) {
            best = Some((source, fs_type, mount_point));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(None).unwrap() >= 0.0);
        assert!(machine_busy_seconds().unwrap() > 0.0);
        assert!(peak_rss_bytes(std::process::id()).unwrap() > 0);
        let (_, fs_type, mount_point) = filesystem_of(Path::new("/")).unwrap();
        assert_eq!(mount_point, "/");
        assert!(!fs_type.is_empty());
    }
}
