//! What the process benches (`fanout`, `cluster`) share: a `ratecast serve` child process with
//! its /proc accounting, CPU per operation as task + irq time, the in-process load generator's
//! arguments, a timed `/healthz` probe, and the measured steady window of one run.
//!
//! `mod support;` in each bench; cargo does not take `benches/support/mod.rs` for a target (only
//! `benches/*.rs` and `benches/*/main.rs` are discovered).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ratecast_client::loadtest::{Loadtest, LoadtestArgs, Summary, cpu_time};

/// Time for the last connections' snapshots to drain before measuring.
pub const SETTLE: Duration = Duration::from_secs(3);

/// The knobs of a bench harness: from the environment, else the defaults of a full run (`cargo
/// bench` passes `--bench`) or of a seconds-long smoke run (`cargo test --all-targets` runs the
/// harness without it, to prove it end to end without spending CI minutes on measurements).
pub struct Knobs {
    pub smoke: bool,
}

impl Knobs {
    pub fn from_args() -> Self {
        Self {
            smoke: !std::env::args().any(|a| a == "--bench"),
        }
    }

    pub fn get(&self, key: &str, bench: &str, smoke: &str) -> String {
        std::env::var(key).unwrap_or_else(|_| (if self.smoke { smoke } else { bench }).to_owned())
    }
}

/// Takes the hard open-files limit (each server and generator needs one per subscriber) and
/// builds the runtime the in-process load generator is driven from.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    eprintln!("open-files limit {nofile} (servers and generators need one per subscriber)");
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// One run of a bench: `subscribers` at the server's `--poll-interval` `tick`.
pub struct Run {
    pub subscribers: usize,
    pub tick: String,
}

/// `subscribers:tick` pairs, comma-separated (`1000:100ms,10000:1s`).
pub fn parse_runs(spec: &str) -> Result<Vec<Run>> {
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

/// A `ratecast serve --demo` process (connection caps and rate limits lifted) and its /proc
/// accounting. SIGTERMed and reaped on drop.
pub struct Server {
    child: Child,
    pub port: u16,
}

#[derive(Clone, Copy)]
pub struct Usage {
    pub cpu: Duration,
    pub rss_kib: u64,
}

impl Server {
    /// Starts `bin serve --demo --poll-interval tick --stale-after 2h` plus `extra` (e.g.
    /// `--redis-url …`) on a free loopback port and waits for `/readyz`.
    pub fn start(bin: &str, tick: &str, extra: &[&str]) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(bin)
            .args([
                "serve",
                "--demo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--poll-interval",
                tick,
                // Demo data ages out like CoinGecko's: the idle run polls once an hour, so the
                // threshold sits above every tick a bench uses (no stale flip mid-measurement).
                "--stale-after",
                "2h",
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
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        Self { child, port }.ready_within(Duration::from_secs(10))
    }

    /// Waits for `/readyz` (the child is killed on failure, by `Drop`).
    fn ready_within(self, limit: Duration) -> Result<Self> {
        let deadline = Instant::now() + limit;
        while !self.ready() {
            if Instant::now() > deadline {
                bail!("server not ready within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(self)
    }

    /// A Node `ws` peer (benches/support/node/ws-peer.mjs) relaying `upstream`'s stream, with
    /// ws's perMessageDeflate when `deflate`; `None` when node or its `ws` module is missing
    /// (`npm ci` in benches/support/node).
    #[allow(dead_code)] // the fanout bench only
    pub fn start_node_peer(upstream: &Server, deflate: bool) -> Result<Option<Self>> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/support/node");
        let node_found = Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !node_found || !std::path::Path::new(dir).join("node_modules/ws").exists() {
            return Ok(None);
        }
        let mut node = Command::new("node");
        node.arg(format!("{dir}/ws-peer.mjs"))
            .env("PEER_DEFLATE", if deflate { "1" } else { "0" });
        Self::start_peer(node, upstream).map(Some)
    }

    /// The task-per-subscriber tokio-tungstenite peer (examples/tungstenite_peer.rs, built as
    /// `bin`) relaying `upstream`'s stream.
    #[allow(dead_code)] // the fanout bench only
    pub fn start_tungstenite_peer(bin: &str, upstream: &Server) -> Result<Self> {
        Self::start_peer(Command::new(bin), upstream)
    }

    /// Starts a peer server: `command` told its port (`PORT`) and the full feed to relay
    /// (`UPSTREAM`), ready once it holds a snapshot (`/readyz`).
    fn start_peer(mut command: Command, upstream: &Server) -> Result<Self> {
        let port = free_port()?;
        let child = command
            .env("PORT", port.to_string())
            .env("UPSTREAM", format!("ws://127.0.0.1:{}/ws", upstream.port))
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        Self { child, port }.ready_within(Duration::from_secs(10))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole answer (status line, headers, body) to `GET path` on a fresh connection.
    pub fn get(&self, path: &str) -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    }

    fn ready(&self) -> bool {
        self.get("/readyz")
            .is_ok_and(|answer| answer.starts_with("HTTP/1.1 200"))
    }

    pub fn usage(&self) -> Result<Usage> {
        proc_usage(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on (the server binds it itself).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// CPU (utime + stime) and VmRSS of any process, from /proc.
pub fn proc_usage(pid: u32) -> Result<Usage> {
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

fn from_ticks(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64(ticks as f64 / per_sec)
}

/// Machine-wide hard + soft interrupt time. Linux accounts the loopback receive path (run by
/// the sender's `write()` on the way out) as softirq, not to the writing task: without it the
/// write floor would look 4× cheaper than it is, and so would the server.
pub fn irq_time() -> Result<Duration> {
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
pub struct Cost {
    pub task_us: f64,
    pub irq_us: f64,
}

impl Cost {
    pub fn new(task: Duration, irq: Duration, ops: f64) -> Self {
        let us = |d: Duration| d.as_secs_f64() * 1e6 / ops.max(1.0);
        Self {
            task_us: us(task),
            irq_us: us(irq),
        }
    }

    pub fn total_us(self) -> f64 {
        self.task_us + self.irq_us
    }

    /// `task + irq = total`, for a table cell.
    pub fn cell(self) -> String {
        format!(
            "{:.2} + {:.2} = {:.2}",
            self.task_us,
            self.irq_us,
            self.total_us()
        )
    }
}

/// The in-process load generator's arguments for `clients` subscribers on a local server.
pub fn loadtest_args(port: u16, clients: usize, flooders: usize) -> LoadtestArgs {
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
        // Checksums checked: each generator thread folds a frame once for all its subscribers,
        // which was within the noise of the generator's CPU (5,000 subscribers at 10k frames/s,
        // release: 9.2 µs a frame with the check, 9.3 without).
        no_verify: false,
        flooders,
        soak: false,
        server_pid: None,
        server_log: None,
        sample_every: Duration::from_secs(10),
        soak_linger: Duration::from_secs(15),
        // Raw frames unless a run asks for permessage-deflate (the fan-out bench's deflate runs).
        no_deflate: true,
        // When a run offers it, as browsers do: the server may keep its context (deltas in the
        // shared stream, issue 23 point 5).
        deflate_no_context_takeover: false,
    }
}

/// Counters read at both ends of the steady window.
struct Sample {
    server: Usage,
    /// CPU of the other processes watched (a cluster's leader, redis-server).
    others: Vec<Duration>,
    frames: u64,
    generator: Duration,
    irq: Duration,
    /// The server's own count of bytes and frames written to WebSocket sockets (`/metrics`):
    /// wire bytes, so compressed frames count as sent.
    wire: (f64, f64),
}

impl Sample {
    fn take(server: &Server, others: &[u32], test: &Loadtest) -> Result<Self> {
        Ok(Self {
            server: server.usage()?,
            others: others
                .iter()
                .map(|&pid| Ok(proc_usage(pid)?.cpu))
                .collect::<Result<_>>()?,
            frames: test.progress().frames,
            generator: cpu_time(libc::RUSAGE_SELF),
            irq: irq_time()?,
            wire: wire_counters(server),
        })
    }
}

/// `ratecast_ws_bytes_sent_total` and `ratecast_ws_frames_sent_total` from the server's
/// `/metrics` (NaN when unreadable: another server under test may not have them).
fn wire_counters(server: &Server) -> (f64, f64) {
    let text = server.get("/metrics").unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    (
        value("ratecast_ws_bytes_sent_total"),
        value("ratecast_ws_frames_sent_total"),
    )
}

/// The 1-minute load average (/proc/loadavg).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `GET /healthz` timed from a thread every 20 ms until stopped: fresh connection each time.
struct Healthz {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Duration>>,
}

impl Healthz {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
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

/// The figures of one measured run.
pub struct Measured {
    /// `/healthz` latency during the steady window: p50, p99, max (ms).
    pub healthz: (f64, f64, f64),
    pub summary: Summary,
    /// The server's CPU per delivered frame.
    pub server: Cost,
    pub generator_cpu_per_frame_us: f64,
    /// The server's task CPU over the window, in cores.
    pub server_cores: f64,
    /// The task CPU of each of the `others` over the window, in cores.
    #[allow(dead_code)] // read by the cluster bench only (fanout watches no other process)
    pub others_cores: Vec<f64>,
    pub rss_base_kib: u64,
    pub rss_loaded_kib: u64,
    /// Mean bytes the server wrote per frame in the steady window (headers included).
    #[allow(dead_code)] // read by the fanout bench only
    pub wire_bytes_per_frame: f64,
    /// 1-minute load average at the start and the end of the steady window.
    #[allow(dead_code)] // read by the fanout bench only
    pub load: (f64, f64),
}

impl Measured {
    /// Server RSS per connected subscriber, loaded minus base (KiB).
    pub fn rss_per_subscriber_kib(&self) -> f64 {
        self.rss_loaded_kib.saturating_sub(self.rss_base_kib) as f64
            / self.summary.connected.max(1) as f64
    }
}

/// Opens the subscribers of `args` against `server` (already started, no subscribers yet), lets
/// them settle, then measures a steady window: the server's CPU and RSS from /proc, the
/// generator's (this process's) CPU, machine-wide irq time, `/healthz` latency, and the CPU of
/// the `others` processes. Closes the subscribers at the end.
pub async fn measure(
    server: &Server,
    others: &[u32],
    args: &LoadtestArgs,
    steady: Duration,
) -> Result<Measured> {
    let base = server.usage()?;
    let mut test = Loadtest::start(args).await?;
    test.ramped().await;
    tokio::time::sleep(SETTLE).await;
    let load_before = load_average();
    let before = Sample::take(server, others, &test)?;
    test.begin_steady();
    let healthz = Healthz::start(server.port);
    tokio::time::sleep(steady).await;
    let after = Sample::take(server, others, &test)?;
    let healthz = healthz.finish();
    let summary = test.finish().await?;
    let frames = (after.frames - before.frames).max(1) as f64;
    let cores = |from: Duration, to: Duration| (to - from).as_secs_f64() / steady.as_secs_f64();
    Ok(Measured {
        healthz,
        server: Cost::new(
            after.server.cpu - before.server.cpu,
            after.irq - before.irq,
            frames,
        ),
        generator_cpu_per_frame_us: (after.generator - before.generator).as_secs_f64() * 1e6
            / frames,
        server_cores: cores(before.server.cpu, after.server.cpu),
        others_cores: before
            .others
            .iter()
            .zip(&after.others)
            .map(|(&from, &to)| cores(from, to))
            .collect(),
        rss_base_kib: base.rss_kib,
        rss_loaded_kib: before.server.rss_kib,
        wire_bytes_per_frame: (after.wire.0 - before.wire.0) / (after.wire.1 - before.wire.1),
        load: (load_before, load_average()),
        summary,
    })
}
