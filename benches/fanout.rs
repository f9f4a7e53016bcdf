//! Fan-out benchmark: the real server (`ratecast serve --demo`, release build) at a fast tick,
//! driven by the load generator at 1k, 10k and as many subscribers as the box holds, plus one
//! idle run for memory. Reads the server's CPU (utime + stime) and RSS from /proc, and measures
//! the floor: the CPU of one plain `write()` of the same frame size to a loopback TCP socket.
//!
//! Run: `cargo bench --bench fanout` (several minutes; prints a Markdown table for
//! BENCHMARKS.md). Knobs (environment):
//! - `FANOUT_RUNS`: `subscribers:tick` pairs, default `1000:100ms,10000:1s,19900:2s` (each run
//!   delivers ~10k frames/s, so CPU per frame is compared at the same rate);
//! - `FANOUT_IDLE`: subscribers for the idle-memory run (no deltas, only heartbeats), default
//!   19900, 0 to skip;
//! - `FANOUT_STEADY`: measured window per run, default 30s.
//!
//! The server and the generator share the machine; the generator's own CPU is reported too.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ratecast::loadtest::{Loadtest, LoadtestArgs, Summary, cpu_time, raise_nofile_limit};

const SERVER: &str = env!("CARGO_BIN_EXE_ratecast");
/// Time for the last connections' snapshots to drain before measuring.
const SETTLE: Duration = Duration::from_secs(3);
const FLOOR_WRITES: u32 = 200_000;
const FLOOR_SOCKETS: usize = 1000;

struct Run {
    subscribers: usize,
    tick: String,
}

/// A server process and its /proc accounting.
struct Server {
    child: Child,
    port: u16,
}

#[derive(Clone, Copy)]
struct Usage {
    cpu: Duration,
    rss_kib: u64,
}

impl Server {
    fn start(tick: &str) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(SERVER)
            .args([
                "serve",
                "--demo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--poll-interval",
                tick,
            ])
            .args([
                "--max-connections",
                "1000000",
                "--max-connections-per-ip",
                "1000000",
            ])
            .args([
                "--connection-rate-per-second",
                "0",
                "--rate-limit-per-second",
                "0",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {SERVER}"))?;
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.ready() {
            if Instant::now() > deadline {
                bail!("server not ready within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn ready(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut answer = String::new();
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
    }

    fn usage(&self) -> Result<Usage> {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat[stat.rfind(')').context("stat format")? + 2..]
            .split(' ')
            .collect();
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu_ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .context("VmRSS")?;
        Ok(Usage {
            cpu: Duration::from_secs_f64(cpu_ticks as f64 / ticks),
            rss_kib,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

struct Result1 {
    label: String,
    summary: Summary,
    server_cpu_per_frame_us: f64,
    generator_cpu_per_frame_us: f64,
    server_cores: f64,
    rss_base_kib: u64,
    rss_loaded_kib: u64,
}

fn loadtest_args(port: u16, clients: usize) -> LoadtestArgs {
    LoadtestArgs {
        url: format!("ws://127.0.0.1:{port}/ws"),
        clients,
        duration: Duration::ZERO,
        ramp: 2000,
        symbols: None,
        json: true,
        threads: 1,
        source_addrs: 0,
        connect_timeout: Duration::from_secs(20),
    }
}

async fn measure(
    label: String,
    subscribers: usize,
    tick: &str,
    steady: Duration,
) -> Result<Result1> {
    let server = Server::start(tick)?;
    let base = server.usage()?;
    let mut test = Loadtest::start(&loadtest_args(server.port, subscribers)).await?;
    test.ramped().await;
    tokio::time::sleep(SETTLE).await;
    let (before, frames_before, gen_before) = (
        server.usage()?,
        test.progress().frames,
        cpu_time(libc::RUSAGE_SELF),
    );
    test.begin_steady();
    tokio::time::sleep(steady).await;
    let (after, frames_after, gen_after) = (
        server.usage()?,
        test.progress().frames,
        cpu_time(libc::RUSAGE_SELF),
    );
    let summary = test.finish().await?;
    drop(server);
    let frames = (frames_after - frames_before).max(1) as f64;
    let per_frame = |d: Duration| d.as_secs_f64() * 1e6 / frames;
    Ok(Result1 {
        label,
        server_cpu_per_frame_us: per_frame(after.cpu - before.cpu),
        generator_cpu_per_frame_us: per_frame(gen_after - gen_before),
        server_cores: (after.cpu - before.cpu).as_secs_f64() / steady.as_secs_f64(),
        rss_base_kib: base.rss_kib,
        rss_loaded_kib: before.rss_kib,
        summary,
    })
}

/// CPU time of one `write()` of `size` bytes to a loopback TCP socket, measured on the writing
/// thread only, the way a fan-out writes: one frame to each of many idle connections per round,
/// every send queue empty (a reader drains each round before the next), so no write is merged
/// into a previous one by TCP autocorking or a full send buffer.
fn write_floor(size: usize) -> Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..FLOOR_SOCKETS {
        let writer = TcpStream::connect(listener.local_addr()?)?;
        writer.set_nodelay(true)?;
        writers.push(writer);
        readers.push(listener.accept()?.0);
    }
    let (round_tx, round_rx) = std::sync::mpsc::channel::<()>();
    let (drained_tx, drained_rx) = std::sync::mpsc::channel::<()>();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; size];
        while round_rx.recv().is_ok() {
            for reader in &mut readers {
                reader.read_exact(&mut buf).expect("drain reads a frame");
            }
            drained_tx.send(()).expect("writer waits");
        }
    });
    let frame = vec![b'x'; size];
    let mut spent = Duration::ZERO;
    for _ in 0..FLOOR_WRITES / FLOOR_SOCKETS as u32 {
        let start = cpu_time(libc::RUSAGE_THREAD);
        for writer in &mut writers {
            writer.write_all(&frame)?;
        }
        spent += cpu_time(libc::RUSAGE_THREAD) - start;
        round_tx.send(())?;
        drained_rx.recv()?;
    }
    drop(round_tx);
    drain
        .join()
        .map_err(|_| anyhow::anyhow!("drain thread panicked"))?;
    Ok(spent / FLOOR_WRITES)
}

fn parse_runs(spec: &str) -> Result<Vec<Run>> {
    spec.split(',')
        .map(|run| {
            let (n, tick) = run
                .split_once(':')
                .with_context(|| format!("{run:?}: expected subscribers:tick"))?;
            Ok(Run {
                subscribers: n.trim().parse()?,
                tick: tick.trim().to_owned(),
            })
        })
        .collect()
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; this harness takes its knobs from the environment.
    let env = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.to_owned());
    let runs = parse_runs(&env("FANOUT_RUNS", "1000:100ms,10000:1s,19900:2s"))?;
    let idle: usize = env("FANOUT_IDLE", "19900").parse()?;
    let steady = humantime::parse_duration(&env("FANOUT_STEADY", "30s"))?;
    let nofile = raise_nofile_limit();
    eprintln!("open-files limit {nofile} (server and generator each need one per subscriber)");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for run in &runs {
        let label = format!("{} subs, tick {}", run.subscribers, run.tick);
        eprintln!("fanout: {label} …");
        results.push(runtime.block_on(measure(label, run.subscribers, &run.tick, steady))?);
    }
    if idle > 0 {
        eprintln!("fanout: idle {idle} subs …");
        results.push(runtime.block_on(measure(
            format!("{idle} subs, idle"),
            idle,
            "1h",
            steady,
        ))?);
    }

    let frame_size = results
        .iter()
        .find(|r| r.summary.deltas > 0)
        .map_or(2048, |r| r.summary.mean_frame_bytes.round() as usize);
    let floor = write_floor(frame_size)?;
    let floor_us = floor.as_secs_f64() * 1e6;

    println!(
        "write floor: {floor_us:.2} µs CPU per write() of {frame_size} B to loopback TCP ({FLOOR_WRITES} writes)"
    );
    println!();
    println!(
        "| run | connected | steady frames/s | p50 / p90 / p99 / max latency (ms) | missing seqs | server CPU/frame (µs) | × floor | server cores | generator CPU/frame (µs) | RSS base → loaded (MiB) | RSS/subscriber (KiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        let s = &r.summary;
        let per_sub =
            (r.rss_loaded_kib.saturating_sub(r.rss_base_kib)) as f64 / s.connected.max(1) as f64;
        println!(
            "| {} | {} | {:.0} | {:.1} / {:.1} / {:.1} / {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} → {:.1} | {:.2} |",
            r.label,
            s.connected,
            s.steady_frames_per_sec,
            s.latency.p50_ms,
            s.latency.p90_ms,
            s.latency.p99_ms,
            s.latency.max_ms,
            s.missing_seqs,
            r.server_cpu_per_frame_us,
            r.server_cpu_per_frame_us / floor_us,
            r.server_cores,
            r.generator_cpu_per_frame_us,
            r.rss_base_kib as f64 / 1024.0,
            r.rss_loaded_kib as f64 / 1024.0,
            per_sub
        );
    }
    for r in &results {
        eprintln!("{}: {}", r.label, serde_json::to_string(&r.summary)?);
    }
    Ok(())
}
