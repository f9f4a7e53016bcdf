//! `ratecast loadtest --soak`: for `--duration`, `--clients` slots keep connecting, reading,
//! misbehaving (slow, garbage, reset, flood, silent) and leaving, while the server's RSS and
//! open fds (`--server-pid`, from /proc) and `ratecast_ws_connections` are sampled. At the end
//! every client is gone, so the server must come back to its baseline: the run fails when its
//! fds or connection slots do not, when a frame did not parse, or when the server's log
//! (`--server-log`) holds a panic.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::LoadtestArgs;
use super::client::Target;
use super::misbehave::{self, Behaviour};

/// How long the server gets, once every client is gone, to come back to its baseline: its
/// readers discard input for up to 1 s and the idle sweep runs every heartbeat.
const SETTLE: Duration = Duration::from_secs(30);

/// One reading of the server process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub at_secs: f64,
    pub rss_kib: u64,
    pub fds: u64,
    /// `ratecast_ws_connections` from /metrics (`None` when it could not be read).
    pub ws_connections: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SoakSummary {
    pub url: String,
    pub duration_secs: f64,
    pub slots: usize,
    pub connections: u64,
    pub by_behaviour: BTreeMap<Behaviour, u64>,
    /// How connections ended, by behaviour and label (`flood close_1008`, `slow eof`, …).
    pub endings: BTreeMap<String, u64>,
    pub corrupt_streams: u64,
    pub baseline: Option<Sample>,
    /// The first sample after a tenth of the run (warm-up), the highest and the last.
    pub after_warmup: Option<Sample>,
    pub peak_rss_kib: u64,
    pub peak_fds: u64,
    pub settled: Option<Sample>,
    pub server_panics: u64,
    /// Why the run failed; empty when it passed.
    pub problems: Vec<String>,
    pub samples: Vec<Sample>,
}

#[derive(Default)]
struct Tally {
    connections: u64,
    by_behaviour: BTreeMap<Behaviour, u64>,
    endings: BTreeMap<String, u64>,
    corrupt: u64,
}

/// Reads the server's RSS and open fds from /proc, and its open-connections gauge.
struct Probe {
    pid: Option<u32>,
    metrics: SocketAddr,
    host: String,
    started: Instant,
}

impl Probe {
    async fn sample(&self) -> Option<Sample> {
        let pid = self.pid?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        Some(Sample {
            at_secs: self.started.elapsed().as_secs_f64(),
            rss_kib,
            fds,
            ws_connections: self.ws_connections().await,
        })
    }

    /// One `GET /metrics` on a fresh connection closed afterwards (no pooled keep-alive
    /// connection to count among the server's fds).
    async fn ws_connections(&self) -> Option<f64> {
        let fetch = async {
            let mut tcp = tokio::net::TcpStream::connect(self.metrics).await.ok()?;
            let request = format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.host
            );
            tcp.write_all(request.as_bytes()).await.ok()?;
            let mut body = String::new();
            tcp.read_to_string(&mut body).await.ok()?;
            body.lines()
                .find_map(|l| l.strip_prefix("ratecast_ws_connections "))
                .and_then(|v| v.trim().parse().ok())
        };
        tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .ok()
            .flatten()
    }
}

/// Runs the soak; an error when the server did not come back to its baseline.
pub(crate) async fn run(
    args: &LoadtestArgs,
    target: Arc<Target>,
    interrupted: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let probe = Probe {
        pid: args.server_pid,
        metrics: target.addr,
        host: target.host.clone(),
        started,
    };
    let baseline = probe.sample().await;
    if args.server_pid.is_some() && baseline.is_none() {
        bail!("cannot read /proc of --server-pid {:?}", args.server_pid);
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = tokio::time::Instant::now() + args.duration;
    let linger = args.soak_linger;
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..args.clients {
        let (target, tally) = (target.clone(), tally.clone());
        slots.spawn(async move {
            let mut id = slot;
            while tokio::time::Instant::now() < deadline {
                let behaviour = Behaviour::random(&mut rand::rng());
                let outcome = misbehave::run(&target, id, behaviour, linger).await;
                {
                    let mut t = tally.lock().expect("soak tally");
                    t.connections += 1;
                    *t.by_behaviour.entry(behaviour).or_default() += 1;
                    let key = format!("{} {}", label(behaviour), outcome.ended);
                    *t.endings.entry(key).or_default() += 1;
                    t.corrupt += u64::from(outcome.corrupt);
                }
                id += 1_000_003; // another source address / port pattern next time
                let pause = rand::random_range(0..200);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        });
    }

    let mut samples = Vec::new();
    let mut every = tokio::time::interval(args.sample_every);
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Some(sample) = probe.sample().await {
                    eprintln!(
                        "[{:>6.0}s soak] server RSS {:.1} MiB, {} fds, {} ws connections",
                        sample.at_secs,
                        sample.rss_kib as f64 / 1024.0,
                        sample.fds,
                        sample.ws_connections.map_or("?".into(), |c| c.to_string())
                    );
                    samples.push(sample);
                }
            }
            done = slots.join_next() => if done.is_none() { break },
            () = &mut interrupted => { slots.abort_all(); break }
        }
    }

    // Every client is gone: the server must come back to its baseline.
    let settle_until = Instant::now() + SETTLE;
    let settled = loop {
        let sample = probe.sample().await;
        let back = match (sample, baseline) {
            (Some(now), Some(base)) => now.fds <= base.fds && now.ws_connections == Some(0.0),
            _ => true,
        };
        if back || Instant::now() > settle_until {
            break sample;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let tally = std::mem::take(&mut *tally.lock().expect("soak tally"));
    let server_panics = match &args.server_log {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --server-log {}", path.display()))?
            .matches("panicked")
            .count() as u64,
        None => 0,
    };
    let mut problems = Vec::new();
    if let (Some(base), Some(end)) = (baseline, settled) {
        if end.fds > base.fds {
            problems.push(format!(
                "open fds did not return to the baseline: {} → {}",
                base.fds, end.fds
            ));
        }
        if end.ws_connections != Some(0.0) {
            problems.push(format!(
                "ratecast_ws_connections did not return to 0: {:?}",
                end.ws_connections
            ));
        }
    }
    if tally.corrupt > 0 {
        problems.push(format!("{} streams lost their framing", tally.corrupt));
    }
    if server_panics > 0 {
        problems.push(format!("{server_panics} panics in the server's log"));
    }
    if tally.connections == 0 {
        problems.push("no connection was made".into());
    }
    let warm = args.duration.as_secs_f64() / 10.0;
    let summary = SoakSummary {
        url: args.url.clone(),
        duration_secs: started.elapsed().as_secs_f64(),
        slots: args.clients,
        connections: tally.connections,
        by_behaviour: tally.by_behaviour,
        endings: tally.endings,
        corrupt_streams: tally.corrupt,
        baseline,
        after_warmup: samples.iter().find(|s| s.at_secs >= warm).copied(),
        peak_rss_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        peak_fds: samples.iter().map(|s| s.fds).max().unwrap_or(0),
        settled,
        server_panics,
        problems,
        samples,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", table(&summary))?;
    }
    if !summary.problems.is_empty() {
        bail!("soak failed: {}", summary.problems.join("; "));
    }
    Ok(())
}

fn label(b: Behaviour) -> &'static str {
    match b {
        Behaviour::Read => "read",
        Behaviour::Slow => "slow",
        Behaviour::Garbage => "garbage",
        Behaviour::Reset => "reset",
        Behaviour::Flood => "flood",
        Behaviour::Vanish => "vanish",
    }
}

fn table(s: &SoakSummary) -> String {
    let sample = |s: &Option<Sample>| {
        s.map_or("–".into(), |s| {
            format!(
                "RSS {:.1} MiB, {} fds, {:?} ws connections",
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.ws_connections
            )
        })
    };
    let mut out = format!(
        "soak of {} for {:.0} s: {} connections over {} slots, {} corrupt streams\n",
        s.url, s.duration_secs, s.connections, s.slots, s.corrupt_streams
    );
    for (k, v) in [
        ("baseline", sample(&s.baseline)),
        ("after warm-up", sample(&s.after_warmup)),
        (
            "peak",
            format!(
                "RSS {:.1} MiB, {} fds",
                s.peak_rss_kib as f64 / 1024.0,
                s.peak_fds
            ),
        ),
        ("settled", sample(&s.settled)),
        ("server panics", s.server_panics.to_string()),
    ] {
        out += &format!("{k:<14} {v}\n");
    }
    for (ending, n) in &s.endings {
        out += &format!("  {ending:<28} {n}\n");
    }
    out += &match s.problems.is_empty() {
        true => "result         ok\n".to_owned(),
        false => format!("result         FAILED: {}\n", s.problems.join("; ")),
    };
    out
}
