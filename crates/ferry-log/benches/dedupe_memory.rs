//! `cargo bench -p ferry-log --bench dedupe_memory`: what the dedupe index really costs, as
//! resident memory (`VmRSS` and peak `VmHWM` from `/proc/self/status`, before and after)
//! and as disk, per million ids:
//!
//! - the memory layer holding N ids at its cap of N (memory-only index);
//! - the disk layer holding M ids in run files (a memory cap of 100 K ids, so nearly all
//!   of them move to disk), after its background spills and filter rebuilds are done.
//!
//! Each measurement runs in a fresh process (this binary, re-run with `DEDUPE_MEMORY_CASE`),
//! so that one's freed memory does not hide the next one's. The allocator is the system's
//! (glibc); the ferry binary uses mimalloc, which maps large blocks the same way.

use std::path::PathBuf;
use std::process::Command;

use ferry_log::dedupe::Dedupe;

/// Memory cap of the disk-layer case.
const DISK_CASE_CAP: usize = 100_000;

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What the log stores for an id: its xxh3-128 hash.
fn key(i: u64) -> u128 {
    xxhash_rust::xxh3::xxh3_128(format!("ajs-next-{i}").as_bytes())
}

/// One measurement, in this process: prints `rss_kb peak_kb allocated_bytes disk_bytes
/// ids memory_layer_bytes`, all growth since the start.
fn run_case(case: &str, n: u64) {
    let (rss0, peak0) = (status_kb("VmRSS:"), status_kb("VmHWM:"));
    let report = |allocated: usize, disk: u64, ids: u64, memory_layer: usize| {
        let (rss, peak) = (status_kb("VmRSS:") - rss0, status_kb("VmHWM:") - peak0);
        println!("{rss} {peak} {allocated} {disk} {ids} {memory_layer}");
    };
    match case {
        // `n` ids held at a cap of `n`, or a quarter of that.
        "memory" | "memory-quarter" => {
            let held = if case == "memory" { n } else { n / 4 };
            let mut d = Dedupe::new(u64::MAX, n as usize);
            for i in 0..held {
                assert!(d.insert(key(i), i));
            }
            d.make_room();
            assert_eq!(d.len() as u64, held);
            let m = d.allocated_bytes();
            report(m.index + m.segments, 0, held, m.index + m.segments);
        }
        // `n` ids appended with a memory cap of 100 K: nearly all end up in run files.
        "disk" => {
            let dir = std::env::temp_dir().join(format!("ferry-dedupe-memory-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut d = Dedupe::open(&dir, u64::MAX, DISK_CASE_CAP, 0).unwrap();
            for i in 0..n {
                d.insert(key(i), i / 1000);
                if i % 100 == 99 {
                    d.maintain();
                    if d.over_cap() {
                        d.make_room();
                    }
                }
            }
            // Let the spills, filter rebuilds and upkeep finish, and the replaced filters be
            // freed (on a thread of their own).
            d.settle();
            std::thread::sleep(std::time::Duration::from_millis(500));
            let m = d.allocated_bytes();
            let disk: u64 = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
            report(m.filters + m.runs, disk, d.disk_len(), m.index + m.segments);
            drop(d);
            let _ = std::fs::remove_dir_all(&dir);
        }
        other => panic!("unknown case {other}"),
    }
}

/// Run one case in a child process; `mapped`: with glibc told to map every block of 64 KiB
/// or more on its own, so that freed ones go back to the system at once (as mimalloc, the
/// ferry binary's allocator, does soon after), instead of staying in a thread's arena.
fn measure(case: &str, n: u64, mapped: bool) -> Vec<u64> {
    let exe: PathBuf = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command.env("DEDUPE_MEMORY_CASE", format!("{case} {n}"));
    if mapped {
        command.env("MALLOC_MMAP_THRESHOLD_", "65536");
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect()
}

fn main() {
    if let Ok(case) = std::env::var("DEDUPE_MEMORY_CASE") {
        let (case, n) = case.split_once(' ').unwrap();
        run_case(case, n.parse().unwrap());
        return;
    }
    println!("memory layer (cap N ids):");
    println!("| cap | ids held | RSS growth | allocated (index + segments) | bytes per id held (RSS) |");
    println!("|---|---|---|---|---|");
    for n in [1_000_000u64, 5_000_000, 20_000_000] {
        for case in ["memory", "memory-quarter"] {
            let v = measure(case, n, false);
            println!(
                "| {} M | {:.2} M | {:.1} MB | {:.1} MB | {:.1} |",
                n / 1_000_000,
                v[4] as f64 / 1e6,
                v[0] as f64 * 1024.0 / 1e6,
                v[2] as f64 / 1e6,
                v[0] as f64 * 1024.0 / v[4] as f64
            );
        }
    }
    println!();
    println!("disk layer (memory cap {} K ids; ids in run files):", DISK_CASE_CAP / 1000);
    println!(
        "| ids on disk | allocated (filters + sparse) | RSS growth beyond the memory layer | peak | the same, freed blocks unmapped | peak | bytes of disk per id |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in [2_000_000u64, 10_000_000, 20_000_000] {
        let (v, m) = (measure("disk", n, false), measure("disk", n, true));
        let ids = v[4] as f64;
        let per_id = |bytes: u64| format!("{:.1} MB ({:.2} B/id)", bytes as f64 / 1e6, bytes as f64 / ids);
        let beyond = |kb: u64, memory_layer: u64| (kb * 1024).saturating_sub(memory_layer);
        println!(
            "| {:.2} M | {} | {} | {} | {} | {} | {:.2} |",
            ids / 1e6,
            per_id(v[2]),
            per_id(beyond(v[0], v[5])),
            per_id(beyond(v[1], v[5])),
            per_id(beyond(m[0], m[5])),
            per_id(beyond(m[1], m[5])),
            v[3] as f64 / ids
        );
    }
}
