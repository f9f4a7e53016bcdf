//! Fan-out benchmark: the real server (`ratecast serve --demo`, release build) at a fast tick,
//! driven by the load generator at 1k, 10k and as many subscribers as the box holds, plus one
//! idle run for memory. Reads the server's CPU (utime + stime) and RSS from /proc, and measures
//! the floor: the CPU of one plain `write()` of the same frame size to loopback TCP sockets.
//! Interrupt time (where Linux accounts the loopback receive path) is added to both sides.
//!
//! Run: `cargo bench --bench fanout` (several minutes; prints a Markdown table for
//! BENCHMARKS.md). Knobs (environment):
//! - `FANOUT_RUNS`: `subscribers:tick` pairs, default `1000:100ms,10000:1s,19900:2s` (each run
//!   delivers ~10k frames/s, so CPU per frame is compared at the same rate);
//! - `FANOUT_IDLE`: subscribers for the idle-memory run (no deltas, only heartbeats), default
//!   19900, 0 to skip;
//! - `FANOUT_STEADY`: measured window per run, default 30s;
//! - `FANOUT_FLOOD`: `subscribers:tick:flooders`, default `300:250ms:3`, empty to skip: the
//!   same run without and with clients flooding pings and commands (subscribers' p99 compared);
//! - `FANOUT_SERVER`: the server binary to measure (default: this build's `ratecast`), so a
//!   baseline build can be measured by the same harness in the same session.
//!
//! Every run also times `GET /healthz` (a fresh connection every 20 ms) during the steady
//! window: the HTTP handlers share the runtime with the fan-out bursts.
//!
//! The server and the generator share the machine; the generator's own CPU is reported too.
//! Under `cargo test --all-targets` (no `--bench` argument) it does a smoke run of seconds.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ratecast_client::loadtest::{Loadtest, LoadtestArgs, Summary, cpu_time};

const SERVER: &str = env!("CARGO_BIN_EXE_ratecast");

fn server_bin() -> String {
    std::env::var("FANOUT_SERVER").unwrap_or_else(|_| SERVER.to_owned())
}
/// Time for the last connections' snapshots to drain before measuring.
const SETTLE: Duration = Duration::from_secs(3);
const FLOOR_WRITES: u32 = 200_000;
/// The floor is taken over few and over many sockets: at 10k+ connections the kernel's own
/// per-write cost grows (socket and conntrack lookups, fd table, cache misses), and a fan-out
/// should be compared with writes under the same conditions. 9,000 keeps writer plus reader
/// ends under the 20,000 open-files limit of the benchmark box.
const FLOOR_SOCKETS: &[usize] = &[1_000, 9_000];
/// `cargo test --all-targets` runs this harness without `--bench`: a seconds-long smoke run
/// then proves the harness end to end without spending CI minutes on measurements.
const SMOKE_FLOOR_SOCKETS: &[usize] = &[100];
const SMOKE_FLOOR_WRITES: u32 = 2_000;

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
        let child = Command::new(server_bin())
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
            .with_context(|| format!("cannot start {}", server_bin()))?;
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
        let cpu_ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .context("VmRSS")?;
        Ok(Usage {
            cpu: from_ticks(cpu_ticks),
            rss_kib,
        })
    }
}

fn from_ticks(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64(ticks as f64 / per_sec)
}

/// Machine-wide hard + soft interrupt time. Linux accounts the loopback receive path (run by
/// the sender's `write()` on the way out) as softirq, not to the writing task: without it the
/// write floor would look 4× cheaper than it is, and so would the server.
fn irq_time() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .context("/proc/stat")?
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq ...
    Ok(from_ticks(cpu[5] + cpu[6]))
}

/// CPU per operation in µs: what /proc or getrusage accounts to the task, plus the interrupt
/// time of the same window spread over the same operations.
#[derive(Clone, Copy)]
struct Cost {
    task_us: f64,
    irq_us: f64,
}

impl Cost {
    fn new(task: Duration, irq: Duration, ops: f64) -> Self {
        let us = |d: Duration| d.as_secs_f64() * 1e6 / ops.max(1.0);
        Self {
            task_us: us(task),
            irq_us: us(irq),
        }
    }

    fn total_us(self) -> f64 {
        self.task_us + self.irq_us
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Counters read at both ends of the steady window.
struct Sample {
    server: Usage,
    frames: u64,
    generator: Duration,
    irq: Duration,
}

impl Sample {
    fn take(server: &Server, test: &Loadtest) -> Result<Self> {
        Ok(Self {
            server: server.usage()?,
            frames: test.progress().frames,
            generator: cpu_time(libc::RUSAGE_SELF),
            irq: irq_time()?,
        })
    }
}

/// `GET /healthz` timed from a thread every 20 ms until stopped: fresh connection each time.
struct Healthz {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Duration>>,
}

impl Healthz {
    fn start(port: u16) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut times = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let start = Instant::now();
                let ok = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                    let mut answer = Vec::new();
                    s.read_to_end(&mut answer)?;
                    Ok(answer.starts_with(b"HTTP/1.1 200"))
                });
                if ok.unwrap_or(false) {
                    times.push(start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            times
        });
        Self { stop, thread }
    }

    /// p50, p99 and max in ms.
    fn finish(self) -> (f64, f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut times = self.thread.join().unwrap_or_default();
        times.sort();
        let at = |q: f64| {
            times
                .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        };
        (at(0.5), at(0.99), at(1.0))
    }
}

struct Result1 {
    label: String,
    /// `/healthz` latency during the steady window: p50, p99, max (ms).
    healthz: (f64, f64, f64),
    summary: Summary,
    server: Cost,
    generator_cpu_per_frame_us: f64,
    server_cores: f64,
    rss_base_kib: u64,
    rss_loaded_kib: u64,
}

fn loadtest_args(port: u16, clients: usize, flooders: usize) -> LoadtestArgs {
    LoadtestArgs {
        url: format!("ws://127.0.0.1:{port}/ws"),
        clients,
        duration: Duration::ZERO,
        ramp: 2000,
        symbols: None,
        json: true,
        threads: 1,
        // One source address per 10,000 subscribers, as in every run BENCHMARKS.md records (the
        // server runs with its per-IP caps lifted, so the spread only matters for ports).
        source_addrs: u8::try_from(clients.div_ceil(10_000)).unwrap_or(u8::MAX),
        connect_timeout: Duration::from_secs(20),
        reconnect: false,
        flooders,
        soak: false,
        server_pid: None,
        server_log: None,
        sample_every: Duration::from_secs(10),
        soak_linger: Duration::from_secs(15),
    }
}

async fn measure(
    label: String,
    subscribers: usize,
    tick: &str,
    steady: Duration,
    flooders: usize,
) -> Result<Result1> {
    let server = Server::start(tick)?;
    let base = server.usage()?;
    let mut test = Loadtest::start(&loadtest_args(server.port, subscribers, flooders)).await?;
    test.ramped().await;
    tokio::time::sleep(SETTLE).await;
    let before = Sample::take(&server, &test)?;
    test.begin_steady();
    let healthz = Healthz::start(server.port);
    tokio::time::sleep(steady).await;
    let after = Sample::take(&server, &test)?;
    let healthz = healthz.finish();
    let summary = test.finish().await?;
    drop(server);
    let frames = (after.frames - before.frames).max(1) as f64;
    let per_frame = |d: Duration| d.as_secs_f64() * 1e6 / frames;
    Ok(Result1 {
        label,
        healthz,
        server: Cost::new(
            after.server.cpu - before.server.cpu,
            after.irq - before.irq,
            frames,
        ),
        generator_cpu_per_frame_us: per_frame(after.generator - before.generator),
        server_cores: (after.server.cpu - before.server.cpu).as_secs_f64() / steady.as_secs_f64(),
        rss_base_kib: base.rss_kib,
        rss_loaded_kib: before.server.rss_kib,
        summary,
    })
}

/// How the far ends of the floor's sockets are read.
#[derive(Clone, Copy, Debug)]
enum Receivers {
    /// One blocking thread reads each socket in turn: a write only queues data and finds no
    /// one waiting (the bare TCP cost).
    Blocking,
    /// One task per socket on a current-thread runtime, parked in epoll like the load
    /// generator: a write also runs the readiness callback and wakes that thread, which on
    /// loopback happens in the writer's context, exactly as for the server under test.
    Epoll,
}

/// CPU time of one `write()` of `size` bytes to a loopback TCP socket, measured on the writing
/// thread only, the way a fan-out writes: one frame to each of many idle connections per round,
/// every send queue empty (the receivers drain each round before the next), so no write is
/// merged into a previous one by TCP autocorking or a full send buffer.
fn write_floor(size: usize, receivers: Receivers, sockets: usize, writes: u32) -> Result<Cost> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..sockets {
        let writer = TcpStream::connect(listener.local_addr()?)?;
        writer.set_nodelay(true)?;
        writers.push(writer);
        readers.push(listener.accept()?.0);
    }
    let frames_read = Arc::new(AtomicUsize::new(0));
    let rounds = writes as usize / sockets;
    let counter = frames_read.clone();
    let drain = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; size];
        match receivers {
            Receivers::Blocking => {
                for _ in 0..rounds {
                    for reader in &mut readers {
                        reader.read_exact(&mut buf)?;
                        counter.fetch_add(1, Ordering::Release);
                    }
                }
                Ok(())
            }
            Receivers::Epoll => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()?;
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for reader in readers {
                        reader.set_nonblocking(true)?;
                        let mut reader = tokio::net::TcpStream::from_std(reader)?;
                        let (counter, mut buf) = (counter.clone(), buf.clone());
                        tasks.spawn(async move {
                            for _ in 0..rounds {
                                tokio::io::AsyncReadExt::read_exact(&mut reader, &mut buf).await?;
                                counter.fetch_add(1, Ordering::Release);
                            }
                            std::io::Result::Ok(())
                        });
                    }
                    while let Some(done) = tasks.join_next().await {
                        done??;
                    }
                    Ok(())
                })
            }
        }
    });
    let frame = vec![b'x'; size];
    let irq_before = irq_time()?;
    let mut spent = Duration::ZERO;
    for round in 1..=rounds {
        let start = cpu_time(libc::RUSAGE_THREAD);
        for writer in &mut writers {
            writer.write_all(&frame)?;
        }
        spent += cpu_time(libc::RUSAGE_THREAD) - start;
        // Sleeping, not spinning: the wait must not count as the writer's CPU.
        while frames_read.load(Ordering::Acquire) < round * sockets {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    drain
        .join()
        .map_err(|_| anyhow::anyhow!("drain thread panicked"))??;
    Ok(Cost::new(
        spent,
        irq_time()? - irq_before,
        (rounds * sockets) as f64,
    ))
}

fn parse_runs(spec: &str) -> Result<Vec<Run>> {
    spec.split(',')
        .filter(|run| !run.trim().is_empty())
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
    let smoke = !std::env::args().any(|a| a == "--bench");
    let env = |k: &str, bench: &str, smoke_default: &str| {
        std::env::var(k).unwrap_or_else(|_| (if smoke { smoke_default } else { bench }).to_owned())
    };
    let runs = parse_runs(&env(
        "FANOUT_RUNS",
        "1000:100ms,10000:1s,19900:2s",
        "50:100ms",
    ))?;
    let idle: usize = env("FANOUT_IDLE", "19900", "0").parse()?;
    let steady = humantime::parse_duration(&env("FANOUT_STEADY", "30s", "1s"))?;
    let (floor_sockets, floor_writes) = if smoke {
        (SMOKE_FLOOR_SOCKETS, SMOKE_FLOOR_WRITES)
    } else {
        (FLOOR_SOCKETS, FLOOR_WRITES)
    };
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    eprintln!("open-files limit {nofile} (server and generator each need one per subscriber)");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for run in &runs {
        let label = format!("{} subs, tick {}", run.subscribers, run.tick);
        eprintln!("fanout: {label} …");
        results.push(runtime.block_on(measure(label, run.subscribers, &run.tick, steady, 0))?);
    }
    let flood = env("FANOUT_FLOOD", "300:250ms:3", "");
    let mut flood_results = Vec::new();
    if let [subs, tick, flooders] = flood.split(':').collect::<Vec<_>>()[..] {
        let (subs, flooders): (usize, usize) = (subs.parse()?, flooders.parse()?);
        for n in [0, flooders] {
            let label = format!("{subs} subs, tick {tick}, {n} flooders");
            eprintln!("fanout: {label} …");
            flood_results.push(runtime.block_on(measure(label, subs, tick, steady, n))?);
        }
    }
    if idle > 0 {
        eprintln!("fanout: idle {idle} subs …");
        results.push(runtime.block_on(measure(
            format!("{idle} subs, idle"),
            idle,
            "1h",
            steady,
            0,
        ))?);
    }

    let frame_size = results
        .iter()
        .find(|r| r.summary.deltas > 0)
        .map_or(2048, |r| r.summary.mean_frame_bytes.round() as usize);
    let bare = write_floor(
        frame_size,
        Receivers::Blocking,
        floor_sockets[0],
        floor_writes,
    )?;
    let floors = floor_sockets
        .iter()
        .map(|&n| {
            Ok((
                n,
                write_floor(frame_size, Receivers::Epoll, n, floor_writes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    for (sockets, floor) in &floors {
        println!(
            "write floor over {sockets} sockets: {:.2} µs per write() of {frame_size} B to loopback TCP with an \
             epoll-parked reader ({:.2} task + {:.2} irq)",
            floor.total_us(),
            floor.task_us,
            floor.irq_us
        );
    }
    println!(
        "write floor over {} sockets with nobody waiting: {:.2} µs",
        floor_sockets[0],
        bare.total_us()
    );
    // Each run is compared with the floor over the socket count closest to its subscribers.
    let floor_for = |subscribers: u64| {
        floors
            .iter()
            .min_by_key(|(n, _)| (*n as u64).abs_diff(subscribers))
            .map(|(_, floor)| *floor)
            .expect("floors measured")
    };
    println!();
    println!(
        "| run | connected | frames/s | latency p50 / p90 / p99 / max (ms) | read by generator p99 (ms) | missing seqs | \
         server µs/frame task + irq = total | × floor | server cores (task) | generator µs/frame (task) | \
         RSS base → loaded (MiB) | RSS/subscriber (KiB) | /healthz p50 / p99 / max (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        let s = &r.summary;
        let per_sub =
            (r.rss_loaded_kib.saturating_sub(r.rss_base_kib)) as f64 / s.connected.max(1) as f64;
        let (h50, h99, hmax) = r.healthz;
        let rss = format!(
            "{:.1} → {:.1} | {per_sub:.2} | {h50:.1} / {h99:.1} / {hmax:.1}",
            r.rss_base_kib as f64 / 1024.0,
            r.rss_loaded_kib as f64 / 1024.0
        );
        if s.deltas == 0 {
            // The idle run is for memory: its few heartbeat frames say nothing about CPU/frame.
            println!(
                "| {} | {} | {:.0} | – | – | {} | – | – | – | – | {rss} |",
                r.label, s.connected, s.steady_frames_per_sec, s.missing_seqs
            );
            continue;
        }
        println!(
            "| {} | {} | {:.0} | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} | {} | {:.2} + {:.2} = {:.2} | {:.2} | {:.2} | {:.2} | {rss} |",
            r.label,
            s.connected,
            s.steady_frames_per_sec,
            s.latency.p50_ms,
            s.latency.p90_ms,
            s.latency.p99_ms,
            s.latency.max_ms,
            s.read_latency.p99_ms,
            s.missing_seqs,
            r.server.task_us,
            r.server.irq_us,
            r.server.total_us(),
            r.server.total_us() / floor_for(s.connected).total_us(),
            r.server_cores,
            r.generator_cpu_per_frame_us,
        );
    }
    if !flood_results.is_empty() {
        println!();
        println!(
            "| run | subscribers' latency p50 / p90 / p99 / max (ms) | missing seqs | flooder connections ended | /healthz p50 / p99 / max (ms) |"
        );
        println!("|---|---|---|---|---|");
        for r in &flood_results {
            let (s, (h50, h99, hmax)) = (&r.summary, r.healthz);
            println!(
                "| {} | {:.1} / {:.1} / {:.1} / {:.1} | {} | {:?} | {h50:.1} / {h99:.1} / {hmax:.1} |",
                r.label,
                s.latency.p50_ms,
                s.latency.p90_ms,
                s.latency.p99_ms,
                s.latency.max_ms,
                s.missing_seqs,
                s.flooder_endings
            );
        }
    }
    for r in results.iter().chain(&flood_results) {
        eprintln!("{}: {}", r.label, serde_json::to_string(&r.summary)?);
        let s = &r.summary;
        anyhow::ensure!(
            !smoke || (s.connected == s.clients as u64 && s.deltas > 0 && s.missing_seqs == 0),
            "smoke run: {}: {} of {} connected, {} deltas, {} missing seqs",
            r.label,
            s.connected,
            s.clients,
            s.deltas,
            s.missing_seqs
        );
    }
    Ok(())
}
