//! Cluster-mode benchmark (issue 13): the real server (`ratecast serve --demo --redis-url …`,
//! release build) on a `redis-server` of its own, against the same server standalone.
//!
//! 1. **Follower vs standalone**, alternately A B A B at the same subscribers and tick: a
//!    standalone server, then a leader (no subscribers) plus a follower started after it, the
//!    follower measured alone: its CPU (utime + stime from /proc) per delivered frame, plus the
//!    machine-wide irq time of the window as the fan-out bench does, and the delivery latency
//!    (kernel receive time − the frame's `ts`; on the follower `ts` is the leader's publication,
//!    so this is leader publication → follower socket). The leader's and redis-server's CPU in
//!    the same window is printed beside it (not part of the follower's figure).
//! 2. **Scale**: N replicas on one redis-server and one `ratecast loadtest --json` process per
//!    replica (each process is limited to 20,000 open files on the benchmark box). Everyone
//!    connects, a steady window is measured, then the leader gets SIGUSR1 (the demo upstream's
//!    simulated outage: no more deltas, so `seq` freezes), every replica gets a few ticks to
//!    deliver the last delta, and the generators are stopped with SIGINT (they print their JSON
//!    summary). Per replica: subscribers, RSS before/with them, RSS per subscriber, CPU, latency;
//!    across all: missing seqs and the final `seq` of every subscriber.
//!
//! Run: `cargo bench --bench cluster` (~8 minutes; prints Markdown tables for BENCHMARKS.md).
//! Needs `redis-server` on the PATH. Knobs (environment):
//! - `CLUSTER_RUNS`: `subscribers:tick` pairs for the side-by-side runs, default
//!   `1000:100ms,10000:1s` (~10k frames/s each, as in the fan-out bench);
//! - `CLUSTER_ROUNDS`: rounds of standalone-then-follower per run, default 3;
//! - `CLUSTER_STEADY`: measured window of each side-by-side run, default 20s;
//! - `CLUSTER_SCALE`: `subscribers:tick` of the scale run, default `50000:2s`, empty to skip;
//! - `CLUSTER_REPLICAS`: replicas (and generator processes) of the scale run, default 3;
//! - `CLUSTER_SCALE_STEADY`: its measured window, default 60s;
//! - `CLUSTER_SCALE_RAMP`: connections per second of each generator process, default 1000.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it does a smoke run of seconds and
//! checks that every subscriber connected and got deltas with no `seq` missing.

#[path = "../tests/common/redis.rs"]
mod redis_server;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use redis_server::RedisServer;
use serde_json::Value;
use support::{Knobs, Measured, Run, SETTLE, Server, irq_time, loadtest_args, parse_runs};

const SERVER: &str = env!("CARGO_BIN_EXE_ratecast");
/// Every server of this bench: a short drain on SIGTERM, so a teardown never waits 20 s.
const GRACE: [&str; 2] = ["--shutdown-grace", "2s"];

/// The value of an unlabelled sample (`name value`) on the server's `/metrics`.
fn metric(server: &Server, name: &str) -> Result<f64> {
    let text = server.get("/metrics")?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("{name} not on /metrics"))
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        ensure!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `replicas` servers in cluster mode on `redis`; the first is the leader: it is started alone
/// and holds the lease before the others start.
fn start_cluster(redis: &RedisServer, tick: &str, replicas: usize) -> Result<Vec<Server>> {
    let url = redis.url();
    let args = [&GRACE[..], &["--redis-url", &url]].concat();
    let leader = Server::start(SERVER, tick, &args)?;
    wait_until("the first replica leads", Duration::from_secs(10), || {
        metric(&leader, "ratecast_cluster_leader").is_ok_and(|v| v == 1.0)
    })?;
    let mut servers = vec![leader];
    for _ in 1..replicas {
        let follower = Server::start(SERVER, tick, &args)?;
        ensure!(
            metric(&follower, "ratecast_cluster_leader")? == 0.0,
            "a replica started after the leader leads"
        );
        servers.push(follower);
    }
    Ok(servers)
}

/// redis-server's process id (`INFO server`), to read its CPU from /proc.
fn redis_pid(port: u16) -> Result<u32> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"INFO server\r\n")?;
    let mut reply = String::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        ensure!(n > 0, "redis closed the connection: {reply:?}");
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(pid) = reply
            .split("process_id:")
            .nth(1)
            .and_then(|rest| rest.split_once("\r\n"))
        {
            return Ok(pid.0.parse()?);
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Standalone,
    Follower,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Follower => "follower",
        }
    }
}

struct AbResult {
    run: String,
    round: usize,
    mode: Mode,
    m: Measured,
}

/// One side-by-side measurement: the standalone server, or the follower of a two-replica
/// cluster (the leader and redis-server beside it, their CPU watched).
async fn measure_mode(mode: Mode, run: &Run, steady: Duration) -> Result<Measured> {
    match mode {
        Mode::Standalone => {
            let server = Server::start(SERVER, &run.tick, &GRACE)?;
            let args = loadtest_args(server.port, run.subscribers, 0);
            support::measure(&server, &[], &args, steady).await
        }
        Mode::Follower => {
            let redis = RedisServer::start();
            let replicas = start_cluster(&redis, &run.tick, 2)?;
            let (leader, follower) = (&replicas[0], &replicas[1]);
            let args = loadtest_args(follower.port, run.subscribers, 0);
            let others = [leader.pid(), redis_pid(redis.port)?];
            let m = support::measure(follower, &others, &args, steady).await?;
            ensure!(
                metric(follower, "ratecast_cluster_leader")? == 0.0
                    && metric(leader, "ratecast_cluster_leader")? == 1.0,
                "the lease moved during the run"
            );
            Ok(m)
        }
    }
}

/// One `ratecast loadtest --json` process against one replica; its progress lines go to a file.
struct Generator {
    child: Child,
    log: PathBuf,
}

impl Generator {
    fn spawn(port: u16, clients: usize, ramp: u32, n: usize) -> Result<Self> {
        let log = std::env::temp_dir().join(format!(
            "ratecast-cluster-bench-{}-generator-{n}.log",
            std::process::id()
        ));
        // One source address per 2,000 subscribers: the generators bind their source port
        // before connecting, so all of them share each address's ephemeral ports.
        let source_addrs = clients.div_ceil(2_000).clamp(1, 254).to_string();
        let child = Command::new(SERVER)
            .args([
                "loadtest",
                "--json",
                "--url",
                &format!("ws://127.0.0.1:{port}/ws"),
            ])
            .args([
                "--clients",
                &clients.to_string(),
                "--ramp",
                &ramp.to_string(),
            ])
            .args(["--duration", "1h", "--connect-timeout", "30s"])
            .args(["--source-addrs", &source_addrs])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start ratecast loadtest")?;
        Ok(Self { child, log })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "a generator ended early ({status}); its log {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// SIGINT ends its steady phase; it prints its summary and exits.
    fn interrupt(&self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
    }

    fn summary(mut self) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("a generator did not exit within 60 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .context("stdout")?
            .read_to_string(&mut out)?;
        ensure!(
            status.success(),
            "a generator failed ({status}); its log {}:\n{}",
            self.log.display(),
            self.log_tail()
        );
        let summary = serde_json::from_str(out.trim()).context("generator's JSON summary")?;
        let _ = std::fs::remove_file(&self.log);
        Ok(summary)
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct ReplicaResult {
    leader: bool,
    /// `ratecast_ws_connections` at the start of the steady window.
    subscribers: f64,
    rss_base_kib: u64,
    rss_loaded_kib: u64,
    cores: f64,
    summary: Value,
}

struct ScaleResult {
    replicas: Vec<ReplicaResult>,
    clients: usize,
    tick: String,
    steady: Duration,
    irq_cores: f64,
}

/// A number of a generator's JSON summary (`latency.p99_ms`); NaN when absent or null.
fn num(v: &Value, path: &str) -> f64 {
    path.split('.')
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// `{"reason": count}` of a generator's JSON summary, as `reason ×count, …` (`none` if empty).
fn reasons(v: &Value, key: &str) -> String {
    let map: BTreeMap<&str, u64> = v[key]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| (k.as_str(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn scale(run: &Run, replicas: usize, ramp: u32, steady: Duration) -> Result<ScaleResult> {
    let redis = RedisServer::start();
    let servers = start_cluster(&redis, &run.tick, replicas)?;
    let base = servers
        .iter()
        .map(Server::usage)
        .collect::<Result<Vec<_>>>()?;
    let mut generators = servers
        .iter()
        .enumerate()
        .map(|(n, server)| {
            let clients = run.subscribers / replicas + usize::from(n < run.subscribers % replicas);
            Generator::spawn(server.port, clients, ramp, n)
        })
        .collect::<Result<Vec<_>>>()?;
    let connected = || -> f64 {
        servers
            .iter()
            .map(|s| metric(s, "ratecast_ws_connections").unwrap_or(0.0))
            .sum()
    };
    let ramp_limit = Duration::from_secs_f64(
        run.subscribers as f64 / replicas as f64 / f64::from(ramp.max(1)) + 60.0,
    );
    let ramp_deadline = Instant::now() + ramp_limit;
    while connected() < run.subscribers as f64 && Instant::now() < ramp_deadline {
        for g in &mut generators {
            g.check_running()?;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "cluster scale: {} of {} subscribers connected",
        connected(),
        run.subscribers
    );
    std::thread::sleep(SETTLE);
    let subscribers = servers
        .iter()
        .map(|s| metric(s, "ratecast_ws_connections"))
        .collect::<Result<Vec<_>>>()?;
    let before = servers
        .iter()
        .map(Server::usage)
        .collect::<Result<Vec<_>>>()?;
    let irq_before = irq_time()?;
    std::thread::sleep(steady);
    let after = servers
        .iter()
        .map(Server::usage)
        .collect::<Result<Vec<_>>>()?;
    let irq_cores = (irq_time()? - irq_before).as_secs_f64() / steady.as_secs_f64();
    let leaders = servers
        .iter()
        .map(|s| metric(s, "ratecast_cluster_leader").map(|v| v == 1.0))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        leaders == [vec![true], vec![false; replicas - 1]].concat(),
        "the lease moved during the run: {leaders:?}"
    );
    for g in &mut generators {
        g.check_running()?;
    }
    // Freeze `seq`: the leader's demo upstream fails from now on; give every replica a few
    // ticks to deliver the last delta before the generators stop.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(servers[0].pid() as libc::pid_t, libc::SIGUSR1) };
    let tick = humantime::parse_duration(&run.tick)?;
    std::thread::sleep(tick * 3 + Duration::from_secs(2));
    for g in &generators {
        g.interrupt();
    }
    let summaries = generators
        .into_iter()
        .map(Generator::summary)
        .collect::<Result<Vec<_>>>()?;
    Ok(ScaleResult {
        replicas: summaries
            .into_iter()
            .enumerate()
            .map(|(n, summary)| ReplicaResult {
                leader: leaders[n],
                subscribers: subscribers[n],
                rss_base_kib: base[n].rss_kib,
                rss_loaded_kib: after[n].rss_kib,
                cores: (after[n].cpu - before[n].cpu).as_secs_f64() / steady.as_secs_f64(),
                summary,
            })
            .collect(),
        clients: run.subscribers,
        tick: run.tick.clone(),
        steady,
        irq_cores,
    })
}

/// Mean of `f` over the side-by-side results of one run and mode.
fn mean(results: &[&AbResult], f: impl Fn(&Measured) -> f64) -> f64 {
    results.iter().map(|r| f(&r.m)).sum::<f64>() / results.len().max(1) as f64
}

/// Median of `f` over the same: one round disturbed by a neighbour does not move it.
fn median(results: &[&AbResult], f: impl Fn(&Measured) -> f64) -> f64 {
    let mut values: Vec<f64> = results.iter().map(|r| f(&r.m)).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn print_side_by_side(results: &[AbResult], runs: &[Run]) {
    println!(
        "| run | round | mode | connected | frames/s | latency p50 / p99 / max (ms) | missing seqs | \
         server µs/frame task + irq = total | server cores (task) | leader + redis cores (task) | \
         generator µs/frame | RSS/subscriber (KiB) | /healthz p99 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let s = &r.m.summary;
        let others = match r.m.others_cores[..] {
            [leader, redis] => format!("{leader:.3} + {redis:.3}"),
            _ => "–".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.1} / {:.1} / {:.1} | {} | {} | {:.3} | {others} | {:.2} | {:.2} | {:.1} |",
            r.run,
            r.round,
            r.mode.name(),
            s.connected,
            s.steady_frames_per_sec,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency.max_ms,
            s.missing_seqs,
            r.m.server.cell(),
            r.m.server_cores,
            r.m.generator_cpu_per_frame_us,
            r.m.rss_per_subscriber_kib(),
            r.m.healthz.1,
        );
    }
    println!();
    println!(
        "| run | rounds | standalone µs/frame (task + irq) | follower µs/frame (task + irq) | \
         follower / standalone | median of rounds: follower / standalone | task only: follower / standalone | latency p50 / p99 (ms) standalone | \
         latency p50 / p99 (ms) follower = leader → follower socket | follower within 10 %? |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let label = run_label(run);
        let of = |mode: Mode| {
            results
                .iter()
                .filter(|r| r.run == label && r.mode == mode)
                .collect::<Vec<_>>()
        };
        let (a, b) = (of(Mode::Standalone), of(Mode::Follower));
        let total = |m: &Measured| m.server.total_us();
        let task = |m: &Measured| m.server.task_us;
        let ratio = mean(&b, total) / mean(&a, total);
        println!(
            "| {label} | {} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.1} / {:.1} | {:.1} / {:.1} | {} |",
            a.len().min(b.len()),
            mean(&a, total),
            mean(&b, total),
            ratio,
            median(&b, total) / median(&a, total),
            mean(&b, task) / mean(&a, task),
            mean(&a, |m| m.summary.latency.p50_ms),
            mean(&a, |m| m.summary.latency.p99_ms),
            mean(&b, |m| m.summary.latency.p50_ms),
            mean(&b, |m| m.summary.latency.p99_ms),
            if ratio <= 1.10 { "yes" } else { "**no**" },
        );
    }
}

/// Prints the scale run's table and returns what is wrong with it (empty when nothing is).
fn print_scale(r: &ScaleResult) -> Vec<String> {
    println!(
        "| replica | role | subscribers (server / generator) | connect failures | early disconnects | \
         RSS base → loaded (MiB) | RSS/subscriber (KiB) | server cores (task) | frames/s | \
         generator µs/frame | snapshots | deltas | missing seqs | resyncs | final seq min / max | latency p50 / p99 / max (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut problems = Vec::new();
    let (mut connected, mut missing) = (0.0, 0.0);
    let (mut seq_min, mut seq_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for (n, rep) in r.replicas.iter().enumerate() {
        let s = &rep.summary;
        let per_sub =
            rep.rss_loaded_kib.saturating_sub(rep.rss_base_kib) as f64 / rep.subscribers.max(1.0);
        println!(
            "| {} | {} | {} / {} | {} | {} | {:.1} → {:.1} | {per_sub:.2} | {:.3} | {:.0} | {:.2} | {} | {} | {} | {} | {} / {} | {:.1} / {:.1} / {:.1} |",
            n + 1,
            if rep.leader { "leader" } else { "follower" },
            rep.subscribers,
            num(s, "connected"),
            reasons(s, "connect_failures"),
            reasons(s, "disconnects"),
            rep.rss_base_kib as f64 / 1024.0,
            rep.rss_loaded_kib as f64 / 1024.0,
            rep.cores,
            num(s, "steady_frames_per_sec"),
            num(s, "generator_cpu_secs") * 1e6 / num(s, "frames"),
            num(s, "snapshots"),
            num(s, "deltas"),
            num(s, "missing_seqs"),
            num(s, "resyncs"),
            num(s, "final_seq_min"),
            num(s, "final_seq_max"),
            num(s, "latency.p50_ms"),
            num(s, "latency.p99_ms"),
            num(s, "latency.max_ms"),
        );
        connected += num(s, "connected");
        missing += num(s, "missing_seqs");
        seq_min = seq_min.min(num(s, "final_seq_min"));
        seq_max = seq_max.max(num(s, "final_seq_max"));
        if num(s, "deltas") == 0.0 || num(s, "deltas").is_nan() {
            problems.push(format!("replica {}: no deltas", n + 1));
        }
    }
    let per_sub_all = r
        .replicas
        .iter()
        .map(|rep| rep.rss_loaded_kib.saturating_sub(rep.rss_base_kib) as f64)
        .sum::<f64>()
        / connected.max(1.0);
    println!();
    println!(
        "{} replicas, tick {}, steady window {:?}: {connected} of {} subscribers connected; \
         {missing} missing seqs; final seq {seq_min} to {seq_max} over every subscriber; \
         RSS per subscriber over all replicas {per_sub_all:.2} KiB; machine irq {:.2} cores",
        r.replicas.len(),
        r.tick,
        r.steady,
        r.clients,
        r.irq_cores
    );
    if connected != r.clients as f64 {
        problems.push(format!("{connected} of {} connected", r.clients));
    }
    if missing != 0.0 {
        problems.push(format!("{missing} missing seqs"));
    }
    if seq_min != seq_max || seq_min.is_nan() {
        problems.push(format!("final seqs differ: {seq_min} to {seq_max}"));
    }
    problems
}

fn run_label(run: &Run) -> String {
    format!("{} subs, tick {}", run.subscribers, run.tick)
}

fn main() -> Result<()> {
    let knobs = Knobs::from_args();
    let smoke = knobs.smoke;
    let env = |k: &str, bench: &str, smoke: &str| knobs.get(k, bench, smoke);
    let runs = parse_runs(&env("CLUSTER_RUNS", "1000:100ms,10000:1s", "50:100ms"))?;
    let rounds: usize = env("CLUSTER_ROUNDS", "3", "1").parse()?;
    let steady = humantime::parse_duration(&env("CLUSTER_STEADY", "20s", "1s"))?;
    let scale_run = parse_runs(&env("CLUSTER_SCALE", "50000:2s", "300:200ms"))?;
    let replicas: usize = env("CLUSTER_REPLICAS", "3", "3").parse()?;
    let scale_steady = humantime::parse_duration(&env("CLUSTER_SCALE_STEADY", "60s", "2s"))?;
    let ramp: u32 = env("CLUSTER_SCALE_RAMP", "1000", "1000").parse()?;
    ensure!(replicas >= 1, "CLUSTER_REPLICAS must be at least 1");
    let runtime = support::runtime()?;
    let mut results = Vec::new();
    for run in &runs {
        for round in 1..=rounds {
            for mode in [Mode::Standalone, Mode::Follower] {
                eprintln!(
                    "cluster: {}, round {round}, {} …",
                    run_label(run),
                    mode.name()
                );
                let m = runtime.block_on(measure_mode(mode, run, steady))?;
                results.push(AbResult {
                    run: run_label(run),
                    round,
                    mode,
                    m,
                });
            }
        }
    }
    let mut scales = Vec::new();
    for run in &scale_run {
        eprintln!("cluster scale: {}, {replicas} replicas …", run_label(run));
        scales.push(scale(run, replicas, ramp, scale_steady)?);
    }

    if !results.is_empty() {
        print_side_by_side(&results, &runs);
    }
    let mut problems = Vec::new();
    for r in &scales {
        println!();
        problems.extend(print_scale(r));
    }
    for r in &results {
        let s = &r.m.summary;
        eprintln!(
            "{} round {} {}: {}",
            r.run,
            r.round,
            r.mode.name(),
            serde_json::to_string(s)?
        );
        if s.connected != s.clients as u64 || s.missing_seqs != 0 || (smoke && s.deltas == 0) {
            problems.push(format!(
                "{} round {} {}: {} of {} connected, {} deltas, {} missing seqs",
                r.run,
                r.round,
                r.mode.name(),
                s.connected,
                s.clients,
                s.deltas,
                s.missing_seqs
            ));
        }
    }
    for r in &scales {
        for (n, rep) in r.replicas.iter().enumerate() {
            eprintln!("scale replica {}: {}", n + 1, rep.summary);
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}
