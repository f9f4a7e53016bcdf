//! Fan-out benchmark: the real server (`ratecast serve --demo`, release build) at a fast tick,
//! driven by the load generator at 1k, 10k and as many subscribers as the box holds, plus one
//! idle run for memory. Reads the server's CPU (utime + stime) and RSS from /proc, and measures
//! the floor: the CPU of one plain `write()` of the same frame size to loopback TCP sockets.
//! Interrupt time (where Linux accounts the loopback receive path) is added to both sides.
//! The floor is measured twice: rounds back to back (kernel state warm) and one round per tick
//! of each run (as the server writes); each run is compared with both.
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
//! - `FANOUT_DEFLATE`: `subscribers:tick` pairs, default `1000:100ms,10000:1s`, empty to skip:
//!   each run twice back to back against the same binary, the generator reading raw frames and
//!   then offering permessage-deflate (issue 23): wire bytes per delivered frame (the server's
//!   own counters), server CPU per frame and RSS per subscriber, side by side;
//! - `FANOUT_TUNGSTENITE_PEER`: with the deflate runs, the same generator against a
//!   task-per-subscriber tokio-tungstenite server relaying the stream (examples/tungstenite_peer.rs):
//!   `build` (the default) builds it with this bench's profile (`cargo bench` builds no example),
//!   a path measures that binary, empty skips it (the smoke run skips it);
//! - `FANOUT_NODE_PEER`: with the deflate runs, the same generator against a Node `ws` server
//!   relaying the stream (benches/support/node, `npm ci` there first), raw and — up to this many
//!   subscribers, default 1000 (ws keeps a zlib stream per connection) — with perMessageDeflate;
//!   empty to skip (the smoke run skips it). The `deflate-json:` and `peer-json:` lines (stderr)
//!   of a run go into `docs/presentation/bench/deflate.json` (its `runs`), which the slides read:
//!   not `docs/presentation/data/`, which the e2e stage clears;
//! - `FANOUT_SERVER`: the server binary to measure (default, or empty: this build's `ratecast`),
//!   so a baseline build can be measured by the same harness in the same session.
//!
//! Every run also times `GET /healthz` (a fresh connection every 20 ms) during the steady
//! window: the HTTP handlers share the runtime with the fan-out bursts.
//!
//! The server and the generator share the machine; the generator's own CPU is reported too.
//! Under `cargo test --all-targets` (no `--bench` argument) it does a smoke run of seconds.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use ratecast_client::loadtest::cpu_time;
use support::{Cost, Knobs, Measured, Server, irq_time, loadtest_args, parse_runs};

const SERVER: &str = env!("CARGO_BIN_EXE_ratecast");

fn server_bin() -> String {
    std::env::var("FANOUT_SERVER")
        .ok()
        .filter(|bin| !bin.is_empty())
        .unwrap_or_else(|| SERVER.to_owned())
}

/// The tokio-tungstenite peer's binary for `FANOUT_TUNGSTENITE_PEER` (see the header); `None`
/// when skipped.
fn tungstenite_peer_bin(knob: &str) -> Result<Option<String>> {
    match knob {
        "" => Ok(None),
        "build" => build_example("tungstenite_peer").map(Some),
        path => Ok(Some(path.to_owned())),
    }
}

/// Builds an example of this package with the bench profile (the dependencies this bench was
/// built with are reused) and returns its executable.
fn build_example(name: &str) -> Result<String> {
    eprintln!("fanout: cargo build --profile bench --example {name} …");
    let out = Command::new(env!("CARGO"))
        .args(["build", "--profile", "bench", "--example", name])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "cargo build --example {name} failed");
    String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .and_then(|m| m["executable"].as_str().map(str::to_owned))
        .with_context(|| format!("cargo build named no executable for example {name}"))
}
const FLOOR_WRITES: u32 = 200_000;
/// The floor is taken over few and over many sockets: at 10k+ connections the kernel's own
/// per-write cost grows (socket and conntrack lookups, fd table, cache misses), and a fan-out
/// should be compared with writes under the same conditions. 9,000 keeps writer plus reader
/// ends under the 20,000 open-files limit of the benchmark box.
const FLOOR_SOCKETS: &[usize] = &[1_000, 9_000];
/// How long a floor paced at a run's tick writes for (at least [`MIN_PACED_ROUNDS`] rounds).
const PACED_FLOOR_SPAN: Duration = Duration::from_secs(20);
const MIN_PACED_ROUNDS: usize = 10;
/// The smoke run's floor (see [`Knobs`]).
const SMOKE_FLOOR_SOCKETS: &[usize] = &[100];
const SMOKE_FLOOR_WRITES: u32 = 2_000;

struct Result1 {
    label: String,
    m: Measured,
}

/// A server the deflate runs measure.
#[derive(Clone, Copy)]
enum Side<'a> {
    /// ratecast itself, the generator offering permessage-deflate when `deflate`.
    Ratecast { deflate: bool },
    /// The task-per-subscriber tokio-tungstenite peer (this binary) relaying ratecast's stream.
    Tungstenite(&'a str),
    /// The Node `ws` peer relaying it, with perMessageDeflate when `deflate`.
    Node { deflate: bool },
}

impl Side<'_> {
    /// The last part of a run's label (`peer-json:` records and the slides read it).
    fn name(self) -> &'static str {
        match self {
            Side::Ratecast { deflate: false } => "ratecast",
            Side::Ratecast { deflate: true } => "ratecast deflate",
            Side::Tungstenite(_) => "tokio-tungstenite",
            Side::Node { deflate: false } => "Node ws",
            Side::Node { deflate: true } => "Node ws perMessageDeflate",
        }
    }
}

async fn measure(
    label: String,
    subscribers: usize,
    tick: &str,
    steady: Duration,
    flooders: usize,
) -> Result<Result1> {
    let side = Side::Ratecast { deflate: false };
    measure_side(label, side, subscribers, tick, steady, flooders)
        .await?
        .context("ratecast is always there")
}

/// The generator (with `flooders`) against one side, at `tick`: ratecast itself, or a peer
/// relaying a ratecast server's stream (see [`Server::start_node_peer`]); `None` when node is
/// not set up.
async fn measure_side(
    label: String,
    side: Side<'_>,
    subscribers: usize,
    tick: &str,
    steady: Duration,
    flooders: usize,
) -> Result<Option<Result1>> {
    let upstream = Server::start(&server_bin(), tick, &[])?;
    let (peer, deflate) = match side {
        Side::Ratecast { deflate } => (None, deflate),
        Side::Tungstenite(bin) => (Some(Server::start_tungstenite_peer(bin, &upstream)?), false),
        Side::Node { deflate } => match Server::start_node_peer(&upstream, deflate)? {
            Some(peer) => (Some(peer), deflate),
            None => {
                eprintln!("fanout: no node peer (npm ci in benches/support/node)");
                return Ok(None);
            }
        },
    };
    let server = peer.as_ref().unwrap_or(&upstream);
    let mut args = loadtest_args(server.port, subscribers, flooders);
    args.no_deflate = !deflate;
    let m = support::measure(server, &[], &args, steady).await?;
    Ok(Some(Result1 { label, m }))
}

/// Issue 23 and the peers (issue 21): for each run the peers relaying ratecast's stream (the
/// Node `ws` one compressed only up to `node_deflate_max` subscribers: ws keeps a zlib stream per
/// connection), then ratecast raw and compressed, back to back with the same generator; prints
/// the side-by-side tables. Returns ratecast's runs (raw, deflate pairs) and the peers'.
fn deflate_runs(
    runtime: &tokio::runtime::Runtime,
    spec: &str,
    steady: Duration,
    tungstenite: Option<&str>,
    node_deflate_max: Option<usize>,
) -> Result<(Vec<Result1>, Vec<Result1>)> {
    let mut results = Vec::new();
    let mut peers = Vec::new();
    for run in parse_runs(spec)? {
        let mut sides: Vec<Side> = tungstenite.map(Side::Tungstenite).into_iter().collect();
        if let Some(max) = node_deflate_max {
            sides.push(Side::Node { deflate: false });
            if run.subscribers <= max {
                sides.push(Side::Node { deflate: true });
            }
        }
        sides.extend([
            Side::Ratecast { deflate: false },
            Side::Ratecast { deflate: true },
        ]);
        for side in sides {
            let label = format!(
                "{} subs, tick {}, {}",
                run.subscribers,
                run.tick,
                side.name()
            );
            eprintln!("fanout: {label} …");
            let m = measure_side(label, side, run.subscribers, &run.tick, steady, 0);
            let m = runtime.block_on(m)?;
            match side {
                Side::Ratecast { .. } => results.extend(m),
                Side::Tungstenite(_) | Side::Node { .. } => peers.extend(m),
            }
        }
    }
    if !peers.is_empty() {
        println!();
        println!(
            "| run | load avg | wire B/frame | server µs/frame task + irq | RSS/subscriber KiB | latency p99 ms | missing seqs |"
        );
        println!("|---|---|---|---|---|---|---|");
        let mut side_by_side: Vec<&Result1> = results.iter().chain(&peers).collect();
        side_by_side.sort_by_key(|r| r.m.summary.clients);
        for r in side_by_side {
            let m = &r.m;
            println!(
                "| {} | {:.1}–{:.1} | {:.0} | {} | {:.2} | {:.1} | {} |",
                r.label,
                m.load.0,
                m.load.1,
                m.wire_bytes_per_frame,
                m.server.cell(),
                m.rss_per_subscriber_kib(),
                m.summary.latency.p99_ms,
                m.summary.missing_seqs
            );
        }
        for p in &peers {
            let m = &p.m;
            eprintln!(
                "peer-json: {}",
                serde_json::json!({
                    "run": p.label,
                    "load_average": [m.load.0, m.load.1],
                    "wire_bytes_per_frame": m.wire_bytes_per_frame,
                    "server_us_per_frame": m.server.total_us(),
                    "server_task_us_per_frame": m.server.task_us,
                    "rss_per_subscriber_kib": m.rss_per_subscriber_kib(),
                    "latency_p99_ms": m.summary.latency.p99_ms,
                    "missing_seqs": m.summary.missing_seqs,
                })
            );
        }
    }
    if results.is_empty() {
        return Ok((results, peers));
    }
    println!();
    println!(
        "| subscribers, tick | load avg | wire B/frame raw → deflate (ratio) | server µs/frame raw → deflate (ratio) | \
         RSS/subscriber KiB raw → deflate | latency p99 ms raw → deflate | missing seqs |"
    );
    println!("|---|---|---|---|---|---|---|");
    for pair in results.chunks(2) {
        let [raw, deflated] = pair else { continue };
        let (r, d) = (&raw.m, &deflated.m);
        println!(
            "| {} subs, {} | {:.1}–{:.1} | {:.0} → {:.0} ({:.1} %) | {} → {} ({:.2}×) | {:.2} → {:.2} | {:.1} → {:.1} | {} + {} |",
            r.summary.clients,
            raw.label.split(", ").nth(1).unwrap_or(""),
            r.load.0.min(d.load.0),
            r.load.1.max(d.load.1),
            r.wire_bytes_per_frame,
            d.wire_bytes_per_frame,
            100.0 * d.wire_bytes_per_frame / r.wire_bytes_per_frame,
            r.server.cell(),
            d.server.cell(),
            d.server.total_us() / r.server.total_us(),
            r.rss_per_subscriber_kib(),
            d.rss_per_subscriber_kib(),
            r.summary.latency.p99_ms,
            d.summary.latency.p99_ms,
            r.summary.missing_seqs,
            d.summary.missing_seqs,
        );
        eprintln!(
            "deflate-json: {}",
            serde_json::json!({
                "subscribers": r.summary.clients,
                "tick": raw.label.split(", ").nth(1),
                "load_average": [r.load.0.min(d.load.0), r.load.1.max(d.load.1)],
                "wire_bytes_per_frame": {"raw": r.wire_bytes_per_frame, "deflate": d.wire_bytes_per_frame},
                "server_us_per_frame": {"raw": r.server.total_us(), "deflate": d.server.total_us()},
                "server_task_us_per_frame": {"raw": r.server.task_us, "deflate": d.server.task_us},
                "rss_per_subscriber_kib": {"raw": r.rss_per_subscriber_kib(), "deflate": d.rss_per_subscriber_kib()},
                "latency_p99_ms": {"raw": r.summary.latency.p99_ms, "deflate": d.summary.latency.p99_ms},
                "missing_seqs": {"raw": r.summary.missing_seqs, "deflate": d.summary.missing_seqs},
            })
        );
    }
    Ok((results, peers))
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
///
/// `pace`: one round per `pace` (a run's tick), as the server writes, instead of back to back.
/// Between two ticks a connection's kernel state (socket, conntrack entry, timers) goes cold in
/// the cache and its delayed ACK fires alone; back-to-back rounds keep all of it warm, which is
/// a floor no fan-out at that tick can reach. Both are reported.
fn write_floor(
    size: usize,
    receivers: Receivers,
    sockets: usize,
    writes: u32,
    pace: Option<Duration>,
) -> Result<Cost> {
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
        let round_started = std::time::Instant::now();
        let start = cpu_time(libc::RUSAGE_THREAD);
        for writer in &mut writers {
            writer.write_all(&frame)?;
        }
        spent += cpu_time(libc::RUSAGE_THREAD) - start;
        // Sleeping, not spinning: the wait must not count as the writer's CPU.
        while frames_read.load(Ordering::Acquire) < round * sockets {
            std::thread::sleep(Duration::from_micros(200));
        }
        if let Some(pace) = pace {
            std::thread::sleep(pace.saturating_sub(round_started.elapsed()));
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

fn main() -> Result<()> {
    let knobs = Knobs::from_args();
    let smoke = knobs.smoke;
    let env = |k: &str, bench: &str, smoke: &str| knobs.get(k, bench, smoke);
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
    let runtime = support::runtime()?;
    let node_deflate_max = match env("FANOUT_NODE_PEER", "1000", "").as_str() {
        "" => None,
        max => Some(max.parse()?),
    };
    let tungstenite = tungstenite_peer_bin(&env("FANOUT_TUNGSTENITE_PEER", "build", ""))?;
    let (deflate, peers) = deflate_runs(
        &runtime,
        &env("FANOUT_DEFLATE", "1000:100ms,10000:1s", "50:100ms"),
        steady,
        tungstenite.as_deref(),
        node_deflate_max,
    )?;
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
        .find(|r| r.m.summary.deltas > 0)
        .map_or(2048, |r| r.m.summary.mean_frame_bytes.round() as usize);
    let bare = write_floor(
        frame_size,
        Receivers::Blocking,
        floor_sockets[0],
        floor_writes,
        None,
    )?;
    let floors = floor_sockets
        .iter()
        .map(|&n| {
            Ok((
                n,
                write_floor(frame_size, Receivers::Epoll, n, floor_writes, None)?,
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
            .copied()
            .expect("floors measured")
    };
    // And with the floor's writes paced at each run's own tick (see `write_floor`), over the
    // same socket count; runs without deltas (idle) have none.
    let mut paced = Vec::new();
    for (run, result) in runs.iter().zip(&results) {
        let (sockets, _) = floor_for(result.m.summary.connected);
        let tick = humantime::parse_duration(&run.tick)?;
        let span_rounds = (PACED_FLOOR_SPAN.as_secs_f64() / tick.as_secs_f64()).ceil() as usize;
        let rounds = (floor_writes as usize / sockets)
            .min(span_rounds)
            .max(MIN_PACED_ROUNDS);
        let floor = write_floor(
            frame_size,
            Receivers::Epoll,
            sockets,
            u32::try_from(rounds * sockets)?,
            Some(tick),
        )?;
        println!(
            "write floor over {sockets} sockets, one round per {}: {:.2} µs per write() ({:.2} task + {:.2} irq)",
            run.tick,
            floor.total_us(),
            floor.task_us,
            floor.irq_us
        );
        paced.push(floor);
    }
    println!();
    println!(
        "| run | connected | frames/s | latency p50 / p90 / p99 / max (ms) | read by generator p99 (ms) | missing seqs | \
         server µs/frame task + irq = total | × floor | server cores (task) | generator µs/frame (task) | \
         RSS base → loaded (MiB) | RSS/subscriber (KiB) | /healthz p50 / p99 / max (ms) | × floor paced at the tick |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in results.iter().enumerate() {
        let s = &r.m.summary;
        let per_sub = r.m.rss_per_subscriber_kib();
        let (h50, h99, hmax) = r.m.healthz;
        let rss = format!(
            "{:.1} → {:.1} | {per_sub:.2} | {h50:.1} / {h99:.1} / {hmax:.1}",
            r.m.rss_base_kib as f64 / 1024.0,
            r.m.rss_loaded_kib as f64 / 1024.0
        );
        if s.deltas == 0 {
            // The idle run is for memory: its few heartbeat frames say nothing about CPU/frame.
            println!(
                "| {} | {} | {:.0} | – | – | {} | – | – | – | – | {rss} | – |",
                r.label, s.connected, s.steady_frames_per_sec, s.missing_seqs
            );
            continue;
        }
        let paced_ratio = paced.get(i).map_or_else(
            || "–".to_owned(),
            |floor| format!("{:.2}", r.m.server.total_us() / floor.total_us()),
        );
        println!(
            "| {} | {} | {:.0} | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} | {} | {} | {:.2} | {:.2} | {:.2} | {rss} | {paced_ratio} |",
            r.label,
            s.connected,
            s.steady_frames_per_sec,
            s.latency.p50_ms,
            s.latency.p90_ms,
            s.latency.p99_ms,
            s.latency.max_ms,
            s.read_latency.p99_ms,
            s.missing_seqs,
            r.m.server.cell(),
            r.m.server.total_us() / floor_for(s.connected).1.total_us(),
            r.m.server_cores,
            r.m.generator_cpu_per_frame_us,
        );
    }
    if !flood_results.is_empty() {
        println!();
        println!(
            "| run | subscribers' latency p50 / p90 / p99 / max (ms) | missing seqs | flooder connections ended | /healthz p50 / p99 / max (ms) |"
        );
        println!("|---|---|---|---|---|");
        for r in &flood_results {
            let (s, (h50, h99, hmax)) = (&r.m.summary, r.m.healthz);
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
    for r in results
        .iter()
        .chain(&flood_results)
        .chain(&deflate)
        .chain(&peers)
    {
        eprintln!("{}: {}", r.label, serde_json::to_string(&r.m.summary)?);
        let s = &r.m.summary;
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
