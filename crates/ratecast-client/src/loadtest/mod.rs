//! `ratecast loadtest`: opens many WebSocket subscribers against any server speaking
//! docs/protocol.md and measures connect time, failures, frames, `seq` gaps and delivery latency
//! (arrival time of every delta minus its `ts`).
//!
//! Subscribers run on dedicated single-threaded runtimes (`--threads`), many per thread: a frame
//! then costs the generator one `recvmsg()` and a local task wakeup, no cross-thread hand-off,
//! so the generator stays cheaper than the server it measures on a shared box. Plain `ws://`
//! only: TLS would measure the TLS stack, not the fan-out.

mod client;
pub mod misbehave;
pub mod soak;
mod stats;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use client::masked_frame;
use client::{Offer, Target};
pub use stats::Percentiles;
use stats::Shared;

/// Subscribers per source address on a loopback target: at or below a default `ratecast serve`'s
/// per-IP caps (200 connections, a burst of 100 connects), so a local run measures the fan-out
/// rather than the per-IP limits, and well below the ~28k ephemeral ports of one address.
const CLIENTS_PER_SOURCE_ADDR: usize = 100;

#[derive(clap::Args, Debug, Clone)]
pub struct LoadtestArgs {
    /// WebSocket URL to load (ws://); any server speaking docs/protocol.md.
    #[arg(
        long,
        env = "RATECAST_LOADTEST_URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub url: String,

    /// Number of concurrent subscribers to open.
    #[arg(long, env = "RATECAST_LOADTEST_CLIENTS", default_value_t = 1000)]
    pub clients: usize,

    /// How long to hold every subscriber open once all are connected (e.g. 30s, 2m). Latency is
    /// measured over this window only, not during the ramp.
    #[arg(long, env = "RATECAST_LOADTEST_DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// New connections per second while ramping up ("500" or "500/s"; 0 = all at once, which
    /// can overflow the server's listen backlog).
    #[arg(long, env = "RATECAST_LOADTEST_RAMP", default_value = "1000/s", value_parser = parse_rate)]
    pub ramp: u32,

    /// Comma-separated unit codes to subscribe to (`symbols=` query). Filtered streams skip
    /// deltas, so `seq` contiguity is only checked without this.
    #[arg(long, env = "RATECAST_LOADTEST_SYMBOLS")]
    pub symbols: Option<String>,

    /// Print a single JSON summary line on stdout instead of the table.
    #[arg(long, env = "RATECAST_LOADTEST_JSON")]
    pub json: bool,

    /// Generator threads, each running its share of the subscribers on its own runtime.
    #[arg(long, env = "RATECAST_LOADTEST_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,

    /// For a loopback target, spread subscribers over source addresses 127.0.0.1..=127.0.0.N
    /// (0 = one address per 100 clients, up to 254: under a default server's per-IP caps).
    #[arg(long, env = "RATECAST_LOADTEST_SOURCE_ADDRS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=254))]
    pub source_addrs: u8,

    /// Per subscriber limit for the TCP connect plus the WebSocket handshake.
    #[arg(long, env = "RATECAST_LOADTEST_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// When a connection ends, connect again with `since=` the last seq seen and its `epoch=`
    /// (as the page does) and count the deltas missed across the gap: for rolling restarts and
    /// failovers.
    #[arg(long, env = "RATECAST_LOADTEST_RECONNECT")]
    pub reconnect: bool,

    /// Do not fold the subscribers' frames into tables nor check their `checksum` (by default
    /// each generator thread folds a frame once for all its subscribers: within the noise of
    /// its CPU at 10k frames/s, but a pure throughput run may leave it out).
    #[arg(long, env = "RATECAST_LOADTEST_NO_VERIFY")]
    pub no_verify: bool,

    /// Extra clients that flood pings and commands as fast as they can (reconnecting whenever
    /// the server closes them) beside the subscribers: one client must only slow itself.
    #[arg(long, env = "RATECAST_LOADTEST_FLOODERS", default_value_t = 0)]
    pub flooders: usize,

    /// Do not offer permessage-deflate: read raw frames (by default the generator offers it as
    /// browsers do, letting the server keep its compression context across messages, and
    /// inflates compressed frames).
    #[arg(long, env = "RATECAST_LOADTEST_NO_DEFLATE")]
    pub no_deflate: bool,

    /// Offer permessage-deflate with `server_no_context_takeover`, so that every compressed
    /// message stands alone: a bench can then measure the server's CPU and wire bytes with and
    /// without context takeover. It also spares the generator an inflater (and its 32 KiB
    /// window) per connection: one per thread, reset per message, serves them all.
    #[arg(
        long,
        env = "RATECAST_LOADTEST_DEFLATE_NO_CONTEXT_TAKEOVER",
        conflicts_with = "no_deflate"
    )]
    pub deflate_no_context_takeover: bool,

    /// Soak mode: for --duration, --clients slots keep connecting, reading, misbehaving (slow,
    /// garbage, reset, flood, silent) and leaving; fails unless the server comes back to its
    /// baseline (fds with --server-pid, ratecast_ws_connections) with no panic in --server-log.
    #[arg(long, env = "RATECAST_LOADTEST_SOAK")]
    pub soak: bool,

    /// Soak: the server's process id, to sample its RSS and open fds from /proc.
    #[arg(long, env = "RATECAST_LOADTEST_SERVER_PID")]
    pub server_pid: Option<u32>,

    /// Soak: the server's log file, searched for panics at the end.
    #[arg(long, env = "RATECAST_LOADTEST_SERVER_LOG")]
    pub server_log: Option<std::path::PathBuf>,

    /// Soak: time between two samples of the server.
    #[arg(long, env = "RATECAST_LOADTEST_SAMPLE_EVERY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub sample_every: Duration,

    /// Soak: longest time one misbehaving client stays (and waits for the server to act).
    #[arg(long, env = "RATECAST_LOADTEST_SOAK_LINGER", default_value = "15s", value_parser = humantime::parse_duration)]
    pub soak_linger: Duration,
}

fn parse_rate(s: &str) -> Result<u32, String> {
    s.trim()
        .trim_end_matches("/s")
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 500 or 500/s"))
}

/// Live counters, for the progress line and for benches sampling the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub open: u64,
    pub connected: u64,
    pub attempts_done: u64,
    pub frames: u64,
    pub bytes: u64,
    pub missing_seqs: u64,
}

/// The result of a run; `--json` prints exactly this.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub url: String,
    pub clients: usize,
    pub connected: u64,
    /// Connect failures by reason (`refused`, `timeout`, `http_503`, `fd_limit`, …).
    pub connect_failures: BTreeMap<String, u64>,
    /// Connections the server ended before the run did, by reason (`close_1008`, `eof`, …).
    pub disconnects: BTreeMap<String, u64>,
    pub connect_time: Percentiles,
    pub ramp_secs: f64,
    pub steady_secs: f64,
    /// All frames over the whole run, and over the steady window only.
    pub frames: u64,
    pub bytes: u64,
    pub steady_frames: u64,
    pub steady_frames_per_sec: f64,
    pub mean_frame_bytes: f64,
    pub snapshots: u64,
    pub deltas: u64,
    pub heartbeats: u64,
    pub other_frames: u64,
    pub unparsable_frames: u64,
    /// Deltas that skipped ahead; the seqs never received as a delta (those gaps, plus the
    /// seqs resync and reconnect snapshots jumped over, within an epoch); deltas that went
    /// backwards (full-feed connections only).
    pub seq_gap_events: u64,
    pub missing_seqs: u64,
    pub out_of_order: u64,
    /// Snapshots on a live connection: the server stopped streaming to it (it lagged).
    pub resyncs: u64,
    /// Subscribers moved to another epoch (a restarted standalone server, a cluster that lost
    /// writes): their seqs before say nothing of what they missed.
    pub epoch_changes: u64,
    /// Snapshots and deltas whose `checksum` agreed, and disagreed, with the subscriber's
    /// folded table (both 0 with `--no-verify`): a 0 mismatches means something only beside a
    /// count of frames verified.
    pub checksums_verified: u64,
    pub checksum_mismatches: u64,
    /// Whether checksums were checked (not with `--no-verify`).
    pub verified: bool,
    /// With `--reconnect`: connections made again, resumes answered with a snapshot instead of
    /// a replay, the seqs those snapshots skipped, and failed reconnect attempts by reason.
    pub reconnects: u64,
    pub reconnect_snapshots: u64,
    pub missed_on_reconnect: u64,
    pub reconnect_failures: BTreeMap<String, u64>,
    /// The lowest and highest last `seq` of the subscribers at the end: equal when every client
    /// ended on the same state.
    pub final_seq_min: Option<u64>,
    pub final_seq_max: Option<u64>,
    /// Delivery latency of every delta in the steady window: the kernel's receive time of the
    /// frame minus its `ts` (the generator's own delays are not in it)...
    pub latency: Percentiles,
    /// ...and the time the generator read it minus `ts` (includes the generator's queueing).
    pub read_latency: Percentiles,
    /// CPU the generator process itself used (user + system), to show it was not the bottleneck.
    pub generator_cpu_secs: f64,
    pub nofile_limit: u64,
    pub source_addrs: usize,
    /// How the `--flooders` connections ended, by label (`close_1008` when the server's
    /// per-connection budget closed them).
    pub flooder_endings: BTreeMap<String, u64>,
}

/// A running load test. `run` drives it from the command line; benches drive it step by step.
pub struct Loadtest {
    shared: Arc<Shared>,
    stop: CancellationToken,
    /// How the `--flooders` connections ended (`close_1008`, …), over the whole run.
    flooder_endings: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    url: String,
    clients: usize,
    verified: bool,
    source_addrs: usize,
    nofile_limit: u64,
    started: Instant,
    cpu_at_start: Duration,
    ramp_done: std::sync::OnceLock<Instant>,
    steady_from: Option<(Instant, Progress)>,
}

impl Loadtest {
    /// Checks the URL, resolves it once and starts ramping up subscribers.
    pub async fn start(args: &LoadtestArgs) -> anyhow::Result<Self> {
        let target = resolve(args).await?;
        let source_addrs = target.sources.len();
        // One descriptor per subscriber: take the hard limit (0 when it cannot be read).
        let nofile_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
        let threads = usize::from(args.threads);
        let shared = Arc::new(Shared::new(threads));
        let stop = CancellationToken::new();
        let started = Instant::now();
        let handles = (0..threads)
            .map(|shard| {
                let (target, shared, stop) = (target.clone(), shared.clone(), stop.clone());
                let (clients, ramp) = (args.clients, args.ramp);
                std::thread::Builder::new()
                    .name(format!("loadtest-{shard}"))
                    .spawn(move || {
                        generator(shard, threads, clients, ramp, started, target, shared, stop)
                    })
                    .context("cannot start a generator thread")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let flooder_endings = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let mut handles = handles;
        if args.flooders > 0 {
            let (target, endings, stop) = (target.clone(), flooder_endings.clone(), stop.clone());
            let flooders = args.flooders;
            handles.push(
                std::thread::Builder::new()
                    .name("loadtest-flood".into())
                    .spawn(move || flood(flooders, target, endings, stop))
                    .context("cannot start the flooder thread")?,
            );
        }
        Ok(Self {
            shared,
            stop,
            flooder_endings,
            threads: handles,
            url: args.url.clone(),
            clients: args.clients,
            verified: !args.no_verify,
            source_addrs,
            nofile_limit,
            started,
            cpu_at_start: cpu_time(libc::RUSAGE_SELF),
            ramp_done: std::sync::OnceLock::new(),
            steady_from: None,
        })
    }

    pub fn progress(&self) -> Progress {
        let c = &self.shared.c;
        Progress {
            open: c.open.load(Relaxed),
            connected: c.connects_ok.load(Relaxed),
            attempts_done: c.attempts_done.load(Relaxed),
            frames: c.frames.load(Relaxed),
            bytes: c.bytes.load(Relaxed),
            missing_seqs: c.missing_seqs.load(Relaxed),
        }
    }

    /// Waits until every subscriber has connected or given up.
    pub async fn ramped(&self) {
        while self.progress().attempts_done < self.clients as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ramp_done.get_or_init(Instant::now);
    }

    /// Starts the measured window: latency is recorded and steady-state rates count from here.
    pub fn begin_steady(&mut self) {
        self.steady_from = Some((Instant::now(), self.progress()));
        self.shared.steady.store(true, Relaxed);
    }

    /// Closes every subscriber and returns the figures.
    pub async fn finish(self) -> anyhow::Result<Summary> {
        let end = Instant::now();
        let at_end = self.progress();
        self.stop.cancel();
        let threads = self.threads;
        tokio::task::spawn_blocking(move || threads.into_iter().try_for_each(|t| t.join()))
            .await?
            .map_err(|_| anyhow!("a generator thread panicked"))?;
        let (steady_start, at_steady) = self.steady_from.unwrap_or((end, at_end));
        let steady_secs = end.duration_since(steady_start).as_secs_f64();
        let steady_frames = at_end.frames - at_steady.frames;
        let c = &self.shared.c;
        Ok(Summary {
            url: self.url,
            clients: self.clients,
            connected: at_end.connected,
            connect_failures: self.shared.failures(),
            disconnects: self.shared.disconnects(),
            connect_time: self.shared.connect_summary(),
            ramp_secs: self
                .ramp_done
                .get()
                .copied()
                .unwrap_or(end)
                .duration_since(self.started)
                .as_secs_f64(),
            steady_secs,
            frames: at_end.frames,
            bytes: at_end.bytes,
            steady_frames,
            steady_frames_per_sec: if steady_secs > 0.0 {
                steady_frames as f64 / steady_secs
            } else {
                0.0
            },
            mean_frame_bytes: if at_end.frames > 0 {
                at_end.bytes as f64 / at_end.frames as f64
            } else {
                0.0
            },
            snapshots: c.snapshots.load(Relaxed),
            deltas: c.deltas.load(Relaxed),
            heartbeats: c.heartbeats.load(Relaxed),
            other_frames: c.other_frames.load(Relaxed),
            unparsable_frames: c.unparsable.load(Relaxed),
            seq_gap_events: c.gap_events.load(Relaxed),
            missing_seqs: c.missing_seqs.load(Relaxed),
            out_of_order: c.out_of_order.load(Relaxed),
            resyncs: c.resyncs.load(Relaxed),
            epoch_changes: c.epoch_changes.load(Relaxed),
            checksums_verified: c.checksums_verified.load(Relaxed),
            checksum_mismatches: c.checksum_mismatches.load(Relaxed),
            verified: self.verified,
            reconnects: c.reconnects.load(Relaxed),
            reconnect_snapshots: c.reconnect_snapshots.load(Relaxed),
            missed_on_reconnect: c.missed_on_reconnect.load(Relaxed),
            reconnect_failures: self.shared.reconnect_failures(),
            final_seq_min: Some(c.final_seq_min.load(Relaxed)).filter(|&s| s != u64::MAX),
            final_seq_max: Some(c.final_seq_max.load(Relaxed)).filter(|&s| s != 0),
            latency: self.shared.latency_summary(),
            read_latency: self.shared.read_latency_summary(),
            generator_cpu_secs: cpu_time(libc::RUSAGE_SELF)
                .saturating_sub(self.cpu_at_start)
                .as_secs_f64(),
            nofile_limit: self.nofile_limit,
            source_addrs: self.source_addrs,
            flooder_endings: std::mem::take(
                &mut *self.flooder_endings.lock().expect("flooder endings"),
            ),
        })
    }
}

/// Checks `--url` and resolves it once: every subscriber connects to the same address.
async fn resolve(args: &LoadtestArgs) -> anyhow::Result<Arc<Target>> {
    let url =
        url::Url::parse(&args.url).map_err(|e| anyhow!("invalid --url {:?}: {e}", args.url))?;
    if url.scheme() != "ws" {
        bail!(
            "invalid --url {:?}: the scheme must be ws (plain WebSocket)",
            args.url
        );
    }
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("invalid --url {:?}: no host", args.url))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| anyhow!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| anyhow!("cannot resolve {host}: no address"))?;
    let mut request_url = url.clone();
    if let Some(symbols) = &args.symbols {
        request_url
            .query_pairs_mut()
            .append_pair("symbols", symbols);
    }
    Ok(Arc::new(Target {
        host: match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        },
        path: request_url[url::Position::BeforePath..url::Position::AfterQuery].to_owned(),
        addr,
        sources: source_addrs(addr.ip(), args.clients, args.source_addrs),
        full_feed: args.symbols.is_none(),
        reconnect: args.reconnect,
        verify: !args.no_verify,
        connect_timeout: args.connect_timeout,
        deflate: offer(args),
    }))
}

/// The permessage-deflate offer the flags ask for; `--no-deflate` wins where both are set (only
/// code can set both: the command line refuses it).
fn offer(args: &LoadtestArgs) -> Offer {
    match (args.no_deflate, args.deflate_no_context_takeover) {
        (true, _) => Offer::Raw,
        (false, true) => Offer::DeflateNoContextTakeover,
        (false, false) => Offer::Deflate,
    }
}

/// One generator thread: a current-thread runtime that opens its share of the subscribers
/// (every `threads`-th one) on the global ramp schedule and waits for them to end.
#[allow(clippy::too_many_arguments)]
fn generator(
    shard: usize,
    threads: usize,
    clients: usize,
    ramp: u32,
    started: Instant,
    target: Arc<Target>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for id in (shard..clients).step_by(threads) {
            if ramp > 0 {
                let due = started + Duration::from_secs_f64(id as f64 / f64::from(ramp));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
            }
            let (target, shared, stop) = (target.clone(), shared.clone(), stop.clone());
            tasks.spawn(client::subscriber(id, shard, target, shared, stop));
        }
        while tasks.join_next().await.is_some() {}
    });
}

/// The `--flooders` thread: each flooder floods until the server closes it, then reconnects,
/// until the run stops.
fn flood(
    flooders: usize,
    target: Arc<Target>,
    endings: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
    stop: CancellationToken,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..flooders {
            let (target, endings, stop) = (target.clone(), endings.clone(), stop.clone());
            tasks.spawn(async move {
                let mut id = n;
                while !stop.is_cancelled() {
                    let behaviour = misbehave::Behaviour::Flood;
                    let linger = Duration::from_secs(30);
                    let outcome = tokio::select! {
                        outcome = misbehave::run(&target, id, behaviour, linger) => outcome,
                        _ = stop.cancelled() => break,
                    };
                    *endings
                        .lock()
                        .expect("flooder endings")
                        .entry(outcome.ended)
                        .or_default() += 1;
                    id += flooders;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

/// Source addresses for a loopback IPv4 target: 127.0.0.1..=127.0.0.N; none otherwise.
fn source_addrs(target: IpAddr, clients: usize, wanted: u8) -> Vec<IpAddr> {
    if !matches!(target, IpAddr::V4(v4) if v4.is_loopback()) {
        return Vec::new();
    }
    let n = match wanted {
        0 => clients.div_ceil(CLIENTS_PER_SOURCE_ADDR).clamp(1, 254),
        n => usize::from(n),
    };
    (1..=n as u8)
        .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .collect()
}

/// User + system CPU time so far of this process (`libc::RUSAGE_SELF`) or of the calling
/// thread (`libc::RUSAGE_THREAD`).
pub fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: an all-zero rusage is valid and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and out pointer.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs the load test; `interrupted` ends the steady phase early (the summary is still printed).
pub async fn run(
    args: LoadtestArgs,
    interrupted: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if args.soak {
        let target = resolve(&args).await?;
        return soak::run(&args, target, interrupted).await;
    }
    let mut test = Loadtest::start(&args).await?;
    if test.nofile_limit < args.clients as u64 + 64 {
        eprintln!(
            "warning: the open-files limit is {}, too low for {} subscribers",
            test.nofile_limit, args.clients
        );
    }
    let reporter = Reporter::new(args.clients);
    let mut tick = reporter.ticks();
    loop {
        tokio::select! {
            _ = test.ramped() => break,
            _ = tick.tick() => reporter.line("ramp", test.progress(), test.started),
        }
    }
    if test.progress().connected == 0 {
        let failures = test.shared.failures();
        test.stop.cancel();
        bail!(
            "no subscriber could connect to {}: {}",
            args.url,
            failures
                .iter()
                .map(|(reason, n)| format!("{reason} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    reporter.line("ramped", test.progress(), test.started);
    test.begin_steady();
    let end = tokio::time::Instant::now() + args.duration;
    let mut tick = reporter.ticks();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            () = &mut interrupted => break,
            _ = tick.tick() => reporter.line("steady", test.progress(), test.started),
        }
    }
    reporter.done();
    let summary = test.finish().await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", table(&summary))?;
    }
    Ok(())
}

/// The progress line on stderr: rewritten in place on a terminal, one line every 5 s in logs.
struct Reporter {
    clients: usize,
    tty: bool,
    every: Duration,
    last_frames: std::cell::Cell<(Instant, u64)>,
}

impl Reporter {
    fn new(clients: usize) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            clients,
            tty,
            every: Duration::from_secs(if tty { 1 } else { 5 }),
            last_frames: std::cell::Cell::new((Instant::now(), 0)),
        }
    }

    /// First line after one period, not at once: nothing has happened at t=0.
    fn ticks(&self) -> tokio::time::Interval {
        tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every)
    }

    fn line(&self, phase: &str, p: Progress, started: Instant) {
        let (then, frames_then) = self.last_frames.replace((Instant::now(), p.frames));
        let rate = (p.frames - frames_then) as f64 / then.elapsed().as_secs_f64().max(1e-3);
        let text = format!(
            "[{:>5.0}s {phase:<6}] open {}/{} failed {} | frames {} ({:.0}/s) | missing seqs {}",
            started.elapsed().as_secs_f64(),
            p.open,
            self.clients,
            p.attempts_done - p.connected,
            p.frames,
            rate,
            p.missing_seqs
        );
        if self.tty {
            eprint!("\r\x1b[2K{text}");
        } else {
            eprintln!("{text}");
        }
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// What to change when the server refused connections: its limits are `ratecast serve` flags.
fn refusal_hints(failures: &BTreeMap<String, u64>) -> Vec<&'static str> {
    let hit = |label: &str| failures.keys().any(|k| k.starts_with(label));
    let mut hints = Vec::new();
    if hit("http_429_too_many_connections") {
        hints.push(
            "the server's per-IP connection cap refused some: raise `serve --max-connections-per-ip` \
             (default 200), or spread over more `--source-addrs`",
        );
    }
    if hit("http_429_rate_limited") {
        hints.push(
            "the server's per-IP connect rate refused some: raise `serve --connection-rate-per-second` \
             / `--connection-rate-burst` (defaults 20/s, 100), or lower `--ramp`",
        );
    }
    if hit("http_503") {
        hints.push(
            "the server was full or not ready: raise `serve --max-connections` (default 50000), \
             or wait for /readyz",
        );
    }
    hints
}

fn table(s: &Summary) -> String {
    let pct = |p: &Percentiles| {
        format!(
            "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1} ms  (n={})",
            p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.count
        )
    };
    let reasons = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let rows = [
        ("target", s.url.clone()),
        (
            "subscribers",
            format!(
                "{} connected of {} ({} source addrs, fd limit {})",
                s.connected, s.clients, s.source_addrs, s.nofile_limit
            ),
        ),
        ("connect failures", reasons(&s.connect_failures)),
        ("early disconnects", reasons(&s.disconnects)),
        ("connect time", pct(&s.connect_time)),
        (
            "ramp / steady",
            format!("{:.1} s / {:.1} s", s.ramp_secs, s.steady_secs),
        ),
        (
            "frames",
            format!(
                "{} total, {:.0}/s steady, mean {:.0} B",
                s.frames, s.steady_frames_per_sec, s.mean_frame_bytes
            ),
        ),
        (
            "by type",
            format!(
                "{} snapshot, {} delta, {} heartbeat, {} other, {} unparsable",
                s.snapshots, s.deltas, s.heartbeats, s.other_frames, s.unparsable_frames
            ),
        ),
        (
            "seq",
            format!(
                "{} gaps, {} missing, {} out of order, {} resyncs, {} epoch changes",
                s.seq_gap_events, s.missing_seqs, s.out_of_order, s.resyncs, s.epoch_changes
            ),
        ),
        (
            "checksums",
            if s.verified {
                format!(
                    "{} verified, {} mismatches",
                    s.checksums_verified, s.checksum_mismatches
                )
            } else {
                "not checked (--no-verify)".to_owned()
            },
        ),
        (
            "reconnects",
            format!(
                "{} ({} answered with a snapshot, {} seqs missed), failed attempts: {}",
                s.reconnects,
                s.reconnect_snapshots,
                s.missed_on_reconnect,
                reasons(&s.reconnect_failures)
            ),
        ),
        (
            "final seq",
            match (s.final_seq_min, s.final_seq_max) {
                (Some(min), Some(max)) if min == max => format!("{min} on every subscriber"),
                (Some(min), Some(max)) => format!("{min} to {max}"),
                _ => "none".to_owned(),
            },
        ),
        ("delivery latency", pct(&s.latency)),
        ("read by generator", pct(&s.read_latency)),
        ("generator CPU", format!("{:.2} s", s.generator_cpu_secs)),
        ("flooders", reasons(&s.flooder_endings)),
    ];
    let mut out: String = rows.iter().map(|(k, v)| format!("{k:<18} {v}\n")).collect();
    for hint in refusal_hints(&s.connect_failures) {
        out.push_str(&format!("{:<18} {hint}\n", "hint"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    /// Browsers' offer by default, the offer without server context takeover on request (so a
    /// bench can measure both), none with `--no-deflate`; never both flags at once.
    #[test]
    fn the_flags_pick_the_deflate_offer() {
        let offer_of = |flags: &[&str]| {
            Cli::try_parse_from(["loadtest"].iter().chain(flags)).map(|cli| offer(&cli.args))
        };
        assert_eq!(offer_of(&[]).unwrap(), Offer::Deflate);
        assert_eq!(
            offer_of(&["--deflate-no-context-takeover"]).unwrap(),
            Offer::DeflateNoContextTakeover
        );
        assert_eq!(offer_of(&["--no-deflate"]).unwrap(), Offer::Raw);
        assert!(offer_of(&["--no-deflate", "--deflate-no-context-takeover"]).is_err());
    }
}
