//! How fast the log's zstd settings compress the events the HTTP benchmark stores, and how
//! small they get: level 1 with its default minimum match (6 bytes) against the 7 bytes the
//! log uses (`ferry_log::format::Encoder`). The events are the load generator's own single
//! track bodies (about 1.2 KB each, 1,024 distinct, fresh message ids), one per line, in
//! 1 MiB frames as a busy group commit writes them. Rounds alternate between the settings;
//! the report quotes medians of this thread's CPU time.
//!
//! `cargo bench -p ferry-bench --bench compress`

use std::time::Instant;

use ferry_bench::events::{PoolSpec, Shape, build_pool};

/// `n` events: the bodies of the load generator's single-event requests, stamped in turn.
fn events(n: u64) -> Vec<u8> {
    let spec = PoolSpec {
        shape: Shape::Single,
        requests: 1024,
        write_key: "wk_bench".to_owned(),
        run: "compress".to_owned(),
        seed: 1,
    };
    let pool = build_pool(&spec);
    let (mut out, mut request, mut next_id) = (Vec::new(), Vec::new(), 0);
    for template in pool.iter().cycle().take(n as usize) {
        template.stamp(&mut request, &mut next_id);
        out.extend_from_slice(&request[request.len() - template.body_len..]);
        out.push(b'\n');
    }
    out
}

/// Nanoseconds this thread has been on a CPU (Linux); `None` elsewhere.
fn cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// One pass over `data` in 1 MiB frames: MB/s of CPU time, and compressed bytes.
fn round(compressor: &mut zstd::bulk::Compressor<'_>, data: &[u8], out: &mut Vec<u8>) -> (f64, usize) {
    let (start, cpu_start) = (Instant::now(), cpu_ns());
    let mut compressed = 0;
    for frame in data.chunks(1 << 20) {
        out.clear();
        compressor.compress_to_buffer(frame, out).expect("compress");
        compressed += out.len();
    }
    let secs = match (cpu_start, cpu_ns()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => start.elapsed().as_secs_f64(),
    };
    (data.len() as f64 / secs / 1e6, compressed)
}

fn main() {
    const EVENTS: u64 = 40_000;
    const ROUNDS: usize = 9;
    let data = events(EVENTS);
    let settings = [6, 7];
    let mut compressors: Vec<_> = settings
        .iter()
        .map(|&min_match| {
            let mut c = zstd::bulk::Compressor::new(1).expect("zstd context");
            c.set_parameter(zstd::zstd_safe::CParameter::MinMatch(min_match)).expect("min match");
            c
        })
        .collect();
    let mut out = Vec::with_capacity(2 << 20);
    let mut rates = vec![Vec::new(); settings.len()];
    let mut sizes = vec![0; settings.len()];
    for _ in 0..ROUNDS {
        for (i, compressor) in compressors.iter_mut().enumerate() {
            let (rate, size) = round(compressor, &data, &mut out);
            rates[i].push(rate);
            sizes[i] = size;
        }
    }
    let per_event = data.len() as f64 / EVENTS as f64;
    let medians: Vec<f64> = rates
        .iter_mut()
        .map(|r| {
            r.sort_by(f64::total_cmp);
            r[ROUNDS / 2]
        })
        .collect();
    for (i, min_match) in settings.iter().enumerate() {
        println!(
            "zstd level 1, min match {min_match}: {:>5.0} MB/s  {:>5.0} ns/event  ratio {:>5.2}  ({per_event:.0} B/event)",
            medians[i],
            per_event / medians[i] * 1e3,
            data.len() as f64 / sizes[i] as f64,
        );
    }
    println!("min match 7 / 6: {:.2}× the speed", medians[1] / medians[0]);
}
