//! The orchestrator of ferry's HTTP benchmark (`scripts/bench-http.sh` builds the release
//! binaries and runs it).
//!
//! It starts each server (the no-op ceiling, the durable no-op ceiling, `ferry serve --sync
//! always`, `ferry serve --sync interval`) pinned to core 0 with one runtime worker, and
//! runs `loadgen` pinned to core 1: a short warm-up of each, then `--rounds` closed-loop
//! runs with single events and as many with 100-event batches, the servers taking turns
//! round by round (so that a slow spell of a shared machine falls on all of them alike),
//! then for each server one open-loop run of each shape at half its measured maximum rate. The server's CPU seconds and peak RSS come from
//! `/proc/PID`. Medians over the rounds go into a markdown report on stdout, with the ratios
//! the goals of issue 3 are written in. The disk's fdatasync latency is probed first, since
//! the latency goal is expressed in it. Progress goes to stderr.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use ferry_bench::{procfs, stats};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Runs ferry's HTTP benchmark against the no-op and durable no-op ceilings")]
struct Args {
    /// Directory holding the release binaries `ferry`, `noop-server`, `durable-noop-server`
    /// and `loadgen` (default: this program's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the temporary data directory goes: it must be on the disk being measured (not a
    /// tmpfs).
    #[arg(long, env = "BENCH_DIR", default_value = "/var/tmp")]
    work_parent: PathBuf,
    /// Closed-loop rounds per server and shape; the report quotes medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per closed-loop round.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Keep-alive connections for single events (browsers are many).
    #[arg(long, default_value_t = 64)]
    single_connections: usize,
    /// Keep-alive connections for batches.
    #[arg(long, default_value_t = 16)]
    batch_connections: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Seconds of each open-loop run at half the maximum rate.
    #[arg(long, default_value_t = 5.0)]
    half_duration: f64,
    /// Servers to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "noop,durable-noop,ferry-always,ferry-interval")]
    servers: Vec<Kind>,
    /// Write and fdatasync rounds of the disk probe.
    #[arg(long, default_value_t = 2000)]
    fsync_samples: usize,
    /// Do not pin the servers and the load generator to cores.
    #[arg(long)]
    no_pin: bool,
    /// Also write every run's raw numbers here, as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the data directory (and the servers' stderr logs) afterwards.
    #[arg(long)]
    keep: bool,
    /// Another build's `ferry` binary, for the `baseline-always` and `baseline-interval`
    /// servers: two builds measured in one run, taking turns with the rest.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Noop,
    DurableNoop,
    FerryAlways,
    FerryInterval,
    /// sync=interval with the debugger's feed watched (`ferry tail --json`, on the load
    /// generator's core, as a browser would be elsewhere).
    FerryWatched,
    /// Cluster mode: a collector (`--role collector`) publishing to a one-node JetStream
    /// (nats-server on the load generator's core; `$FERRY_BENCH_NATS_SERVER`, else
    /// `nats-server` on the PATH or in /usr/sbin).
    FerryNats,
    /// `--baseline`'s ferry, sync=always.
    BaselineAlways,
    /// `--baseline`'s ferry, sync=interval.
    BaselineInterval,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Noop => "no-op ceiling",
            Kind::DurableNoop => "durable no-op ceiling",
            Kind::FerryAlways => "ferry sync=always",
            Kind::FerryInterval => "ferry sync=interval",
            Kind::FerryWatched => "ferry sync=interval, debugger open",
            Kind::FerryNats => "ferry collector, JetStream",
            Kind::BaselineAlways => "baseline sync=always",
            Kind::BaselineInterval => "baseline sync=interval",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Kind::Noop => "noop",
            Kind::DurableNoop => "durable-noop",
            Kind::FerryAlways => "ferry-always",
            Kind::FerryInterval => "ferry-interval",
            Kind::FerryWatched => "ferry-watched",
            Kind::FerryNats => "ferry-nats",
            Kind::BaselineAlways => "baseline-always",
            Kind::BaselineInterval => "baseline-interval",
        }
    }
}

/// Runs a program, pinned to a core when pinning works here.
struct Launcher {
    pin: bool,
    bin_dir: PathBuf,
    /// The other build's `ferry`, for the baseline servers.
    baseline: Option<PathBuf>,
}

impl Launcher {
    fn command(&self, core: usize, program: &str) -> Command {
        let program = self.bin_dir.join(program);
        self.command_of(core, program)
    }

    fn command_of(&self, core: usize, program: PathBuf) -> Command {
        if self.pin {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

/// `taskset` exists, works, and there are two cores to pin to.
fn pinning_works() -> bool {
    std::thread::available_parallelism().map(|n| n.get() >= 2).unwrap_or(false)
        && Command::new("taskset")
            .args(["-c", "1", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A running server; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr_log: PathBuf,
    /// `ferry tail`, for [`Kind::FerryWatched`].
    watcher: Option<Child>,
    /// nats-server, for [`Kind::FerryNats`].
    nats: Option<Child>,
}

/// The nats-server binary for [`Kind::FerryNats`].
fn nats_server() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRY_BENCH_NATS_SERVER") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// Start a one-node JetStream on `core`; its client URL.
fn start_nats(launcher: &Launcher, core: usize, dir: &Path) -> anyhow::Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let binary = nats_server();
    let mut command = if launcher.pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(core.to_string()).arg(&binary);
        c
    } else {
        Command::new(&binary)
    };
    command.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]).arg(dir.join("nats"));
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let child =
        command.spawn().with_context(|| format!("cannot start {}; set FERRY_BENCH_NATS_SERVER", binary.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nats-server did not listen within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, format!("nats://127.0.0.1:{port}")))
}

impl Server {
    fn start(kind: Kind, launcher: &Launcher, work: &Path) -> anyhow::Result<Server> {
        let data = work.join(kind.slug());
        std::fs::create_dir_all(&data)?;
        let mut nats = None;
        let mut command = match kind {
            Kind::Noop => launcher.command(0, "noop-server"),
            Kind::DurableNoop => {
                let mut c = launcher.command(0, "durable-noop-server");
                c.arg("--file").arg(data.join("log.bin"));
                c
            }
            Kind::FerryAlways
            | Kind::FerryInterval
            | Kind::FerryWatched
            | Kind::BaselineAlways
            | Kind::BaselineInterval => {
                // The ingest path alone: delivery (the embedded warehouse by default) would
                // share the pinned core; it has its own benchmark (ferry-delivery's
                // `warehouse` bench).
                let config = work.join("ferry-bench.toml");
                std::fs::write(&config, "destinations = []\n")?;
                let mut c = match kind {
                    Kind::BaselineAlways | Kind::BaselineInterval => {
                        let baseline = launcher.baseline.clone().context("the baseline servers need --baseline")?;
                        launcher.command_of(0, baseline)
                    }
                    _ => launcher.command(0, "ferry"),
                };
                c.arg("--config").arg(&config).arg("--data-dir").arg(&data).arg("serve");
                let always = matches!(kind, Kind::FerryAlways | Kind::BaselineAlways);
                c.args(["--sync", if always { "always" } else { "interval" }]);
                c
            }
            Kind::FerryNats => {
                let (child, url) = start_nats(launcher, 1, &data)?;
                nats = Some(child);
                let config = work.join("ferry-bench-nats.toml");
                std::fs::write(
                    &config,
                    format!(
                        "destinations = []\n\n[log]\nbackend = \"nats\"\n\n[nats]\nurls = [\"{url}\"]\nreplicas = 1\n"
                    ),
                )?;
                let mut c = launcher.command(0, "ferry");
                c.arg("--config").arg(&config).arg("--data-dir").arg(&data).arg("serve");
                c.args(["--role", "collector"]);
                c
            }
        };
        command.args(["--listen", "127.0.0.1:0", "--threads", "1"]);
        // Only the flags count: no FERRY_* variable from the caller's shell.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FERRY_") {
                command.env_remove(name);
            }
        }
        let stderr_log = work.join(format!("{}.stderr", kind.slug()));
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(std::fs::File::create(&stderr_log)?);
        let mut child = command.spawn().with_context(|| format!("cannot start {:?}", command))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = line_tx.send(line);
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), stderr_log, watcher: None, nats };
        let line = line_rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        match line.trim().rsplit_once("http://").and_then(|(_, addr)| addr.parse().ok()) {
            Some(addr) => server.addr = addr,
            None => bail!("{} did not say where it listens (got {:?}){}", kind.label(), line, server.stderr_tail()),
        }
        if kind == Kind::FerryWatched {
            let mut tail = launcher.command(1, "ferry");
            tail.args(["tail", "--json", "--url"]).arg(format!("http://{}", server.addr));
            tail.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            let mut child = tail.spawn().with_context(|| format!("cannot start {:?}", tail))?;
            // It is watching once it says so.
            let mut said = String::new();
            let mut reader = BufReader::new(child.stderr.take().context("no stderr")?);
            let _ = reader.read_line(&mut said);
            anyhow::ensure!(said.starts_with("watching"), "ferry tail did not start: {said:?}");
            // It reports what it missed on stderr: keep reading it.
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            server.watcher = Some(child);
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds nats-server used so far (0 without one).
    fn nats_cpu_s(&self) -> f64 {
        self.nats.as_ref().and_then(|n| procfs::cpu_seconds(Some(n.id())).ok()).unwrap_or(0.0)
    }

    fn stderr_tail(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.stderr_log).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().rev().take(15).collect();
        if lines.is_empty() {
            String::new()
        } else {
            format!("; its stderr ends with:\n{}", lines.into_iter().rev().collect::<Vec<_>>().join("\n"))
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut watcher) = self.watcher.take() {
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
        if let Some(mut nats) = self.nats.take() {
            let _ = nats.kill();
            let _ = nats.wait();
        }
        // The server is this program's child: signal it by its own pid.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One load-generator invocation.
struct Load<'a> {
    mode: &'a str,
    connections: usize,
    duration: f64,
    rate: f64,
}

/// Wait until `server` is idle (under 2 % of a core over 250 ms, for at most 20 s): the
/// background work a run left it (dedupe spills, filter rebuilds) must not run into the
/// next server's turn on the same core.
fn settle(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut before = procfs::cpu_seconds(Some(server.pid())).unwrap_or(0.0);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = procfs::cpu_seconds(Some(server.pid())).unwrap_or(0.0);
        if now - before < 0.005 {
            return;
        }
        before = now;
    }
}

fn run_load(launcher: &Launcher, args: &Args, server: &mut Server, load: &Load<'_>) -> anyhow::Result<Value> {
    let mut command = launcher.command(1, "loadgen");
    command
        .arg("run")
        .arg("--target")
        .arg(server.addr.to_string())
        .args(["--mode", load.mode])
        .arg("--batch-size")
        .arg(args.batch_size.to_string())
        .arg("--connections")
        .arg(load.connections.to_string())
        .arg("--duration")
        .arg(load.duration.to_string())
        .arg("--rate")
        .arg(load.rate.to_string())
        .arg("--server-pid")
        .arg(server.pid().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let output = command.output().context("cannot run loadgen")?;
    if !output.status.success() || !server.alive() {
        bail!("loadgen failed ({}){}", output.status, server.stderr_tail());
    }
    settle(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("loadgen printed nothing")?;
    serde_json::from_str(line).context("loadgen's report is not JSON")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn median_of(runs: &[Value], key: &str) -> f64 {
    stats::median(runs.iter().map(|r| num(r, key)))
}

/// What was measured for one server.
struct Measured {
    kind: Kind,
    single: Vec<Value>,
    batch: Vec<Value>,
    half_single: Value,
    half_batch: Value,
    /// Peak RSS right after start-up, and at the end.
    start_rss_mb: f64,
    peak_rss_mb: f64,
    /// Events the server acknowledged over all runs, warm-up included (ferry keeps each
    /// one's id in its dedupe index, which is most of its memory).
    events_stored: u64,
    /// CPU seconds nats-server spent over all runs ([`Kind::FerryNats`]).
    nats_cpu_s: f64,
}

/// Measures every server, its rounds interleaved with the others' (round 1 of each server,
/// then round 2 of each, ...), so that a slow spell of this machine falls on all of them
/// alike rather than on whichever ran then: the ratios compare servers measured side by
/// side. The servers all run meanwhile, idle but for their own turns: after each run the
/// benchmark waits for the server to go quiet ([`settle`]).
fn measure(kinds: &[Kind], launcher: &Launcher, args: &Args, work: &Path) -> anyhow::Result<Vec<Measured>> {
    let single = |duration, rate| Load { mode: "single", connections: args.single_connections, duration, rate };
    let batch = |duration, rate| Load { mode: "batch", connections: args.batch_connections, duration, rate };
    let mut servers = Vec::new();
    for &kind in kinds {
        eprintln!("== starting {} (load average {})", kind.label(), procfs::load_average());
        let mut server = Server::start(kind, launcher, work)?;
        let start_rss_mb = procfs::peak_rss_bytes(server.pid())? as f64 / (1024.0 * 1024.0);
        let nats_before = server.nats_cpu_s();
        let warm_up = run_load(launcher, args, &mut server, &single(1.0, 0.0))?;
        servers.push((kind, server, start_rss_mb, nats_before, vec![warm_up], [Vec::new(), Vec::new()]));
    }
    let closed = [("single events", single(args.duration, 0.0)), ("batches", batch(args.duration, 0.0))];
    for (shape, (what, load)) in closed.iter().enumerate() {
        for round in 1..=args.rounds {
            eprintln!("== closed-loop round {round} of {}, {what}", args.rounds);
            for (_, server, _, _, runs, rounds) in &mut servers {
                let run = run_load(launcher, args, server, load)?;
                runs.push(run.clone());
                rounds[shape].push(run);
            }
        }
    }
    eprintln!("== open loop at half the maximum rate");
    let mut measured = Vec::new();
    for (kind, mut server, start_rss_mb, nats_before, runs, [singles, batches]) in servers {
        let half_single =
            run_load(launcher, args, &mut server, &single(args.half_duration, median_of(&singles, "rps") / 2.0))?;
        let half_batch =
            run_load(launcher, args, &mut server, &batch(args.half_duration, median_of(&batches, "rps") / 2.0))?;
        let peak_rss_mb = procfs::peak_rss_bytes(server.pid())? as f64 / (1024.0 * 1024.0);
        let nats_cpu_s = server.nats_cpu_s() - nats_before;
        let events_stored =
            runs.iter().chain([&half_single, &half_batch]).map(|r| r["events"].as_u64().unwrap_or(0)).sum();
        measured.push(Measured {
            kind,
            single: singles,
            batch: batches,
            half_single,
            half_batch,
            start_rss_mb,
            peak_rss_mb,
            events_stored,
            nats_cpu_s,
        });
    }
    Ok(measured)
}

fn fsync_probe(launcher: &Launcher, args: &Args, work: &Path) -> anyhow::Result<Value> {
    let output = Command::new(launcher.bin_dir.join("loadgen"))
        .arg("fsync-probe")
        .arg("--dir")
        .arg(work)
        .arg("--samples")
        .arg(args.fsync_samples.to_string())
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(output.status.success(), "fsync probe failed");
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?.parent().context("no binary directory")?.to_path_buf(),
    };
    let launcher = Launcher { pin: !args.no_pin && pinning_works(), bin_dir, baseline: args.baseline.clone() };
    if !launcher.pin && !args.no_pin {
        eprintln!("warning: cannot pin to cores (needs `taskset` from util-linux and 2 cores); running unpinned");
    }
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let work = args.work_parent.join(format!("ferry-bench-{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let result = bench(&args, &launcher, &work);
    if args.keep {
        eprintln!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

fn bench(args: &Args, launcher: &Launcher, work: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = procfs::load_average();
    let filesystem = procfs::filesystem_of(work);
    if filesystem.as_ref().is_some_and(|(_, fs_type, _)| fs_type == "tmpfs") {
        eprintln!("warning: {} is on tmpfs, so fdatasync costs nothing; set BENCH_DIR to a disk", work.display());
    }
    eprintln!("== fdatasync probe in {}", work.display());
    let fsync = fsync_probe(launcher, args, work)?;
    let results = measure(&args.servers, launcher, args, work)?;
    let load_after = procfs::load_average();

    let mut out = String::new();
    report(&mut out, args, launcher, &fsync, &results, filesystem, (&load_before, &load_after), started.elapsed());
    print!("{out}");
    if let Some(path) = &args.json {
        let raw = json!({
            "fsync": fsync,
            "servers": results.iter().map(|m| json!({
                "server": m.kind.label(),
                "single": m.single,
                "batch": m.batch,
                "half_single": m.half_single,
                "half_batch": m.half_batch,
                "start_rss_mb": m.start_rss_mb,
                "peak_rss_mb": m.peak_rss_mb,
                "events_stored": m.events_stored,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&raw)?)?;
    }
    Ok(())
}

/// `git describe --always --dirty` of the working tree, when run from a checkout.
fn git_revision() -> Option<String> {
    let output = Command::new("git").args(["describe", "--always", "--dirty"]).stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

#[allow(clippy::too_many_arguments)]
fn report(
    out: &mut String,
    args: &Args,
    launcher: &Launcher,
    fsync: &Value,
    results: &[Measured],
    filesystem: Option<(String, String, String)>,
    load: (&str, &str),
    elapsed: Duration,
) {
    use std::fmt::Write as _;
    let fsync_p99 = num(fsync, "p99_ms");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let first = results.first().and_then(|m| m.single.first());
    let batch_first = results.first().and_then(|m| m.batch.first());
    let _ = writeln!(out, "## HTTP benchmark\n");
    let _ = writeln!(
        out,
        "- machine: {} cores, {}, Linux {}; load average {} before, {} after; {:.0} s in all",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        procfs::cpu_model(),
        kernel.trim(),
        load.0,
        load.1,
        elapsed.as_secs_f64()
    );
    if let Some(revision) = git_revision() {
        let _ = writeln!(out, "- ferry built from `{revision}`");
    }
    if let Some((device, fs_type, mount)) = filesystem {
        let _ = writeln!(out, "- data directory on {device} ({fs_type}, mounted on {mount})");
    }
    let _ = writeln!(
        out,
        "- fdatasync after a 4 KiB append ({} samples): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        fsync["samples"],
        num(fsync, "p50_ms"),
        num(fsync, "p90_ms"),
        fsync_p99,
        num(fsync, "max_ms")
    );
    let _ = writeln!(
        out,
        "- {}; servers run 1 runtime worker (`--threads 1`)",
        if launcher.pin { "server pinned to core 0, loadgen to core 1 (`taskset`)" } else { "NOT pinned" }
    );
    let _ = writeln!(
        out,
        "- track events of {} B on average ({} B per batch request of {}); single: {} connections, batch: {} connections, keep-alive",
        first.map_or(0, |r| r["mean_event_bytes"].as_u64().unwrap_or(0)),
        batch_first.map_or(0, |r| r["mean_body_bytes"].as_u64().unwrap_or(0)),
        args.batch_size,
        args.single_connections,
        args.batch_connections
    );
    let _ = writeln!(
        out,
        "- closed loop, medians of {} rounds of {} s, the servers taking turns round by round; then open loop at half the median max rate for {} s\n",
        args.rounds, args.duration, args.half_duration
    );

    let _ = writeln!(
        out,
        "| server | single req/s | single p50 / p99 ms | batch events/s | batch req/s | batch p50 / p99 ms | events per server CPU-s, single / batch | server CPU s per round, single / batch | other processes' CPU, cores, single / batch | RSS MB at start / peak | events stored |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut loadgen_bound = false;
    for m in results {
        let flag = |runs: &[Value]| {
            let busy = stats::median(runs.iter().map(|r| num(r, "loadgen_cpu_s") / num(r, "seconds")));
            if busy > 0.9 { " †" } else { "" }
        };
        let (fs, fb) = (flag(&m.single), flag(&m.batch));
        loadgen_bound |= !fs.is_empty() || !fb.is_empty();
        let _ = writeln!(
            out,
            "| {} | {:.0}{fs} | {:.2} / {:.2} | {:.0}{fb} | {:.0} | {:.2} / {:.2} | {:.0} / {:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} / {:.1} | {:.2} M |",
            m.kind.label(),
            median_of(&m.single, "rps"),
            median_of(&m.single, "p50_ms"),
            median_of(&m.single, "p99_ms"),
            median_of(&m.batch, "eps"),
            median_of(&m.batch, "rps"),
            median_of(&m.batch, "p50_ms"),
            median_of(&m.batch, "p99_ms"),
            median_of(&m.single, "server_events_per_cpu_s"),
            median_of(&m.batch, "server_events_per_cpu_s"),
            median_of(&m.single, "server_cpu_s"),
            median_of(&m.batch, "server_cpu_s"),
            median_of(&m.single, "other_cpu_cores"),
            median_of(&m.batch, "other_cpu_cores"),
            m.start_rss_mb,
            m.peak_rss_mb,
            m.events_stored as f64 / 1e6
        );
    }
    if loadgen_bound {
        let _ = writeln!(
            out,
            "\n† the load generator was busy ≥ 90 % of its core: this number may be its limit, not the server's."
        );
    }
    let busy_runs: Vec<String> = results
        .iter()
        .flat_map(|m| {
            m.single.iter().chain(&m.batch).chain([&m.half_single, &m.half_batch]).filter_map(move |r| {
                let others = num(r, "other_cpu_cores");
                (others > 0.25)
                    .then(|| format!("{} {} ({:.2} cores)", m.kind.label(), r["mode"].as_str().unwrap_or("?"), others))
            })
        })
        .collect();
    if !busy_runs.is_empty() {
        let _ = writeln!(
            out,
            "\nWarning: other processes used more than a quarter of a core during these runs, so their numbers \
             understate the servers: {}.",
            busy_runs.join("; ")
        );
    }
    let _ = writeln!(out, "\nOpen loop at half the maximum rate (latency from the scheduled send time):\n");
    let _ = writeln!(
        out,
        "| server | single: req/s offered / done | p50 / p99 / max ms | batch: req/s offered / done | p50 / p99 / max ms | other processes' CPU, cores, single / batch |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for m in results {
        let (s, b) = (&m.half_single, &m.half_batch);
        let _ = writeln!(
            out,
            "| {} | {:.0} / {:.0} | {:.2} / {:.2} / {:.2} | {:.0} / {:.0} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} |",
            m.kind.label(),
            num(s, "target_rate"),
            num(s, "rps"),
            num(s, "p50_ms"),
            num(s, "p99_ms"),
            num(s, "max_ms"),
            num(b, "target_rate"),
            num(b, "rps"),
            num(b, "p50_ms"),
            num(b, "p99_ms"),
            num(b, "max_ms"),
            num(s, "other_cpu_cores"),
            num(b, "other_cpu_cores"),
        );
    }
    let bad: Vec<String> = results
        .iter()
        .flat_map(|m| {
            m.single.iter().chain(&m.batch).chain([&m.half_single, &m.half_batch]).filter_map(move |r| {
                let statuses = r["statuses"].as_object()?;
                let errors = r["io_errors"].as_u64().unwrap_or(0) + r["timeouts"].as_u64().unwrap_or(0);
                let non_2xx = statuses.keys().any(|k| !k.starts_with('2'));
                (non_2xx || errors > 0).then(|| {
                    format!(
                        "{} {}: statuses {}, I/O errors and timeouts {errors}",
                        m.kind.label(),
                        r["mode"].as_str().unwrap_or("?"),
                        r["statuses"]
                    )
                })
            })
        })
        .collect();
    if !bad.is_empty() {
        let _ = writeln!(out, "\nRuns with errors:\n");
        for line in bad {
            let _ = writeln!(out, "- {line}");
        }
    }

    // The goals of issue 3.
    let find = |kind: Kind| results.iter().find(|m| m.kind == kind);
    let mut goals: Vec<(String, String, String, bool)> = Vec::new();
    let mut ratio = |name: &str, a: Option<(&Measured, &str, &str)>, b: Option<(&Measured, &str, &str)>, goal: f64| {
        if let (Some((ma, sa, ka)), Some((mb, sb, kb))) = (a, b) {
            let pick = |m: &Measured, shape: &str, key: &str| {
                median_of(if shape == "single" { &m.single } else { &m.batch }, key)
            };
            let (va, vb) = (pick(ma, sa, ka), pick(mb, sb, kb));
            let r = va / vb;
            goals.push((name.to_owned(), format!("{r:.2}× ({va:.0} / {vb:.0})"), format!("≥ {goal}×"), r >= goal));
        }
    };
    let always = find(Kind::FerryAlways);
    let interval = find(Kind::FerryInterval);
    let durable = find(Kind::DurableNoop);
    let noop = find(Kind::Noop);
    ratio(
        "sync=always single req/s ÷ durable ceiling",
        always.map(|m| (m, "single", "rps")),
        durable.map(|m| (m, "single", "rps")),
        0.8,
    );
    ratio(
        "sync=always batch events/s ÷ durable ceiling",
        always.map(|m| (m, "batch", "eps")),
        durable.map(|m| (m, "batch", "eps")),
        0.8,
    );
    ratio(
        "sync=interval single req/s ÷ no-op ceiling",
        interval.map(|m| (m, "single", "rps")),
        noop.map(|m| (m, "single", "rps")),
        0.5,
    );
    let budget = 2.0 * fsync_p99 + 5.0;
    for m in [always, interval].into_iter().flatten() {
        let name = m.kind.label();
        let single = median_of(&m.single, "server_events_per_cpu_s");
        let batch = median_of(&m.batch, "server_events_per_cpu_s");
        goals.push((
            format!("{name}: single events per CPU-s"),
            format!("{single:.0}"),
            "> 11,000 (PostHog)".into(),
            single > 11_000.0,
        ));
        goals.push((
            format!("{name}: batch events per CPU-s"),
            format!("{batch:.0}"),
            "> 68,000 (PostHog)".into(),
            batch > 68_000.0,
        ));
        for (shape, run) in [("single", &m.half_single), ("batch", &m.half_batch)] {
            let p99 = num(run, "p99_ms");
            goals.push((
                format!("{name}: {shape} p99 at half max rate"),
                format!("{p99:.2} ms"),
                format!("≤ 2 × {fsync_p99:.2} + 5 = {budget:.1} ms"),
                p99 <= budget,
            ));
        }
        goals.push((
            format!("{name}: peak RSS"),
            format!("{:.1} MB", m.peak_rss_mb),
            "< 100 MB".into(),
            m.peak_rss_mb < 100.0,
        ));
    }
    if let (Some(open), Some(closed)) = (find(Kind::FerryWatched), interval) {
        side_by_side(out, "The debugger's cost (sync=interval, open ÷ closed)", ("open", open), ("closed", closed));
    }
    for (this, baseline) in [(Kind::FerryAlways, Kind::BaselineAlways), (Kind::FerryInterval, Kind::BaselineInterval)] {
        if let (Some(this), Some(baseline)) = (find(this), find(baseline)) {
            let title = format!("This build against the baseline ({} ÷ {})", this.kind.label(), baseline.kind.label());
            side_by_side(out, &title, ("this build", this), ("baseline", baseline));
        }
    }
    if let (Some(cluster), Some(embedded)) = (find(Kind::FerryNats), find(Kind::FerryAlways)) {
        let title = "Cluster mode's cost (a collector publishing to JetStream ÷ embedded sync=always)";
        side_by_side(out, title, ("collector", cluster), ("embedded", embedded));
        for shape in ["single", "batch"] {
            let pick = |m: &Measured| {
                median_of(if shape == "single" { &m.single } else { &m.batch }, "server_events_per_cpu_s")
            };
            let (a, b) = (pick(cluster), pick(embedded));
            let _ =
                writeln!(out, "| {shape}: server CPU µs per event | {:.1} | {:.1} | {:.2}× |", 1e6 / a, 1e6 / b, b / a);
            goals.push((
                format!("cluster: collector CPU per {shape} event ÷ embedded"),
                format!("{:.2}×", b / a),
                "≤ 1.5×".into(),
                b / a <= 1.5,
            ));
        }
        let _ = writeln!(
            out,
            "\nnats-server (one node, file storage, on the load generator's core) spent {:.1} µs of CPU per event stored ({:.1} CPU s for {:.2} M events).",
            1e6 * cluster.nats_cpu_s / cluster.events_stored.max(1) as f64,
            cluster.nats_cpu_s,
            cluster.events_stored as f64 / 1e6
        );
    }
    if !goals.is_empty() {
        let _ = writeln!(out, "\nGoals (issues 3 and 7):\n");
        let _ = writeln!(out, "| goal | measured | target | |");
        let _ = writeln!(out, "|---|---:|---|---|");
        for (name, measured, target, ok) in goals {
            let _ = writeln!(out, "| {name} | {measured} | {target} | {} |", if ok { "met" } else { "**missed**" });
        }
    }
}

/// Two servers' medians side by side, as a markdown table: requests and events a second,
/// and the server CPU per event.
fn side_by_side(out: &mut String, title: &str, (label_a, a): (&str, &Measured), (label_b, b): (&str, &Measured)) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\n{title}:\n");
    let _ = writeln!(out, "| shape | {label_a} | {label_b} | ratio |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (shape, key) in [("single", "rps"), ("batch", "eps")] {
        let pick = |m: &Measured| median_of(if shape == "single" { &m.single } else { &m.batch }, key);
        let (x, y) = (pick(a), pick(b));
        let _ = writeln!(out, "| {shape} {key} | {x:.0} | {y:.0} | {:.2}× |", x / y);
    }
}
