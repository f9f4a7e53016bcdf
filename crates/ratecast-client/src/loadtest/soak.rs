//! `ratecast loadtest --soak`: for `--duration`, `--clients` slots keep connecting, reading,
//! misbehaving (slow, garbage, reset, flood, silent) and leaving, while the server's RSS and
//! open fds (`--server-pid`, from /proc) and `ratecast_ws_connections` are sampled. The run
//! fails when the server dies, restarts or cannot be sampled; when a connection ends otherwise
//! than its behaviour calls for (slow and flood → 1008, garbage → 1002, silent → closed by the
//! server, connects that fail); when its RSS keeps growing after the warm-up; when a frame did
//! not parse; or when the server's log (`--server-log`) holds a panic or an abort. At the end
//! every client is gone, so its fds and connection slots must come back to the baseline.

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

/// How much the server's RSS may grow past its first sample after the warm-up (a tenth of the
/// run): the allocator's arenas and the 24 h history keep filling for a while (BENCHMARKS.md:
/// 37.1 MiB at 5 min, flat at 41.3 MiB from 25 min, +11 %), a leak per connection does not stop.
const RSS_GROWTH_AFTER_WARMUP: f64 = 0.5;

/// Connects that may fail, as a share of all attempts (a loaded box times out the odd one); a
/// server that refuses or cannot take connections fails far more.
const CONNECT_ERRORS_ALLOWED: f64 = 0.01;

/// What a Rust process writes to its stderr as it panics or aborts. A process killed outright
/// (the OOM killer, a segfault) writes nothing: the probe finds it gone.
const CRASH_MARKERS: &[&str] = &[
    "panicked",
    "fatal runtime error",
    "memory allocation of",
    "has overflowed its stack",
];

/// One reading of the server process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub at_secs: f64,
    /// From /proc (`None` without `--server-pid`).
    pub rss_kib: Option<u64>,
    pub fds: Option<u64>,
    /// `ratecast_ws_connections` from /metrics.
    pub ws_connections: f64,
    /// `ratecast_ws_connections_accepted_total`: a counter, so going back means a restart.
    pub accepted: f64,
}

/// How the connections of one behaviour may end (`Outcome::ended` labels); anything else fails
/// the soak. A slow consumer finds the 1008 close frame if it read again within the server's
/// grace after the cut, else the end of the stream (docs/protocol.md); a silent peer is dropped by
/// the idle timeout (the end of the stream) unless its buffers filled first (1008). Either way
/// the server ended it: our own `timeout` (the linger ran out) is never expected.
pub fn expected_endings(b: Behaviour) -> &'static [&'static str] {
    match b {
        Behaviour::Read => &["left"],
        Behaviour::Slow => &["close_1008", "eof"],
        Behaviour::Garbage => &["close_1002"],
        Behaviour::Reset => &["reset"],
        Behaviour::Flood => &["close_1008"],
        Behaviour::Vanish => &["eof", "close_1008"],
    }
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
    /// Connects that failed (refused, timed out, handshake refused): not in `connections`.
    pub connect_errors: u64,
    /// Every sample of the server that failed (dead, restarted, unreachable), with when.
    pub unreachable: Vec<String>,
    pub baseline: Option<Sample>,
    /// The first sample after a tenth of the run (warm-up), the highest and the last.
    pub after_warmup: Option<Sample>,
    pub peak_rss_kib: u64,
    /// The highest RSS allowed after the warm-up (`None` without `--server-pid`).
    pub rss_bound_kib: Option<u64>,
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
    connect_errors: u64,
    by_behaviour: BTreeMap<Behaviour, u64>,
    endings: BTreeMap<String, u64>,
    /// Endings outside `expected_endings`, by `behaviour label`.
    unexpected: BTreeMap<String, u64>,
    corrupt: u64,
}

/// Reads the server's RSS and open fds from /proc, and its connection gauges from /metrics;
/// fails when the process is gone or another one holds its pid (a restart), or when /metrics
/// does not answer or its counters went back (a restart behind the same address).
struct Probe {
    pid: Option<u32>,
    /// The process's start time (/proc/PID/stat field 22), read once at the baseline.
    start_ticks: Option<u64>,
    metrics: SocketAddr,
    host: String,
    started: Instant,
}

/// Field 22 of /proc/PID/stat, the process's start time in clock ticks since boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

impl Probe {
    fn new(pid: Option<u32>, target: &Target, started: Instant) -> Self {
        Self {
            pid,
            start_ticks: pid.and_then(start_ticks),
            metrics: target.addr,
            host: target.host.clone(),
            started,
        }
    }

    async fn sample(&self, previous: Option<&Sample>) -> Result<Sample, String> {
        let at_secs = self.started.elapsed().as_secs_f64();
        let (rss_kib, fds) = match self.pid {
            Some(pid) => {
                let (rss, fds) = Self::proc(pid).ok_or(format!("server process {pid} is gone"))?;
                if start_ticks(pid) != self.start_ticks {
                    return Err(format!(
                        "pid {pid} is another process: the server restarted"
                    ));
                }
                (Some(rss), Some(fds))
            }
            None => (None, None),
        };
        let (ws_connections, accepted) = self
            .gauges()
            .await
            .ok_or(format!("{} did not answer /metrics", self.metrics))?;
        if let Some(previous) = previous
            && accepted < previous.accepted
        {
            return Err(format!(
                "ratecast_ws_connections_accepted_total went back ({} → {accepted}): the server restarted",
                previous.accepted
            ));
        }
        Ok(Sample {
            at_secs,
            rss_kib,
            fds,
            ws_connections,
            accepted,
        })
    }

    /// RSS (KiB) and open fds of `pid`.
    fn proc(pid: u32) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        Some((rss_kib, fds))
    }

    /// One `GET /metrics` on a fresh connection closed afterwards (no pooled keep-alive
    /// connection to count among the server's fds): open and accepted connections.
    async fn gauges(&self) -> Option<(f64, f64)> {
        let fetch = async {
            let mut tcp = tokio::net::TcpStream::connect(self.metrics).await.ok()?;
            let request = format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.host
            );
            tcp.write_all(request.as_bytes()).await.ok()?;
            let mut body = String::new();
            tcp.read_to_string(&mut body).await.ok()?;
            let value = |name: &str| {
                body.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            };
            Some((
                value("ratecast_ws_connections")?,
                value("ratecast_ws_connections_accepted_total")?,
            ))
        };
        tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .ok()
            .flatten()
    }
}

/// Runs the soak; an error when the server died, restarted, misbehaved or did not come back
/// to its baseline.
pub(crate) async fn run(
    args: &LoadtestArgs,
    target: Arc<Target>,
    interrupted: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let probe = Probe::new(args.server_pid, &target, started);
    let baseline = probe
        .sample(None)
        .await
        .map_err(|e| anyhow::anyhow!("cannot sample the server before the soak: {e}"))?;
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
                tally.lock().expect("soak tally").count(behaviour, &outcome);
                id += 1_000_003; // another source address / port pattern next time
                let pause = rand::random_range(0..200);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        });
    }

    let mut samples: Vec<Sample> = Vec::new();
    let mut unreachable = Vec::new();
    let mut every = tokio::time::interval(args.sample_every);
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = every.tick() => {
                match probe.sample(samples.last().or(Some(&baseline))).await {
                    Ok(sample) => {
                        eprintln!("[{:>6.0}s soak] {}", sample.at_secs, describe(&sample));
                        samples.push(sample);
                    }
                    Err(e) => {
                        let at = started.elapsed().as_secs_f64();
                        eprintln!("[{at:>6.0}s soak] {e}");
                        unreachable.push(format!("{at:.0} s: {e}"));
                    }
                }
            }
            done = slots.join_next() => if done.is_none() { break },
            () = &mut interrupted => { slots.abort_all(); break }
        }
    }

    // Every client is gone: the server must come back to its baseline.
    let settle_until = Instant::now() + SETTLE;
    let settled = loop {
        let sample = probe.sample(samples.last().or(Some(&baseline))).await;
        let back = match &sample {
            Ok(now) => now.fds <= baseline.fds && now.ws_connections == 0.0,
            Err(_) => true, // dead or restarted: nothing to wait for
        };
        if back || Instant::now() > settle_until {
            break sample;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settled = settled
        .inspect_err(|e| unreachable.push(format!("after the run: {e}")))
        .ok();

    let tally = std::mem::take(&mut *tally.lock().expect("soak tally"));
    let server_panics = match &args.server_log {
        Some(path) => {
            let log = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --server-log {}", path.display()))?;
            log.lines()
                .filter(|l| CRASH_MARKERS.iter().any(|m| l.contains(m)))
                .count() as u64
        }
        None => 0,
    };
    let warm = args.duration.as_secs_f64() / 10.0;
    let after_warmup = samples.iter().find(|s| s.at_secs >= warm).copied();
    let rss_bound_kib = after_warmup
        .and_then(|s| s.rss_kib)
        .map(|rss| (rss as f64 * (1.0 + RSS_GROWTH_AFTER_WARMUP)) as u64);
    // The settled sample too: RSS that grows once the clients are gone is not settling either.
    let peak_rss_kib = samples
        .iter()
        .chain(&settled)
        .filter_map(|s| s.rss_kib)
        .max()
        .unwrap_or(0);

    let mut problems = Vec::new();
    if !unreachable.is_empty() {
        problems.push(format!(
            "the server could not be sampled {} times (dead, restarted or unreachable): {}",
            unreachable.len(),
            unreachable.join("; ")
        ));
    }
    match settled {
        Some(end) => {
            if end.fds > baseline.fds {
                problems.push(format!(
                    "open fds did not return to the baseline: {:?} → {:?}",
                    baseline.fds, end.fds
                ));
            }
            if end.ws_connections != 0.0 {
                problems.push(format!(
                    "ratecast_ws_connections did not return to 0: {}",
                    end.ws_connections
                ));
            }
        }
        None => problems.push("no sample of the server after the run".into()),
    }
    if args.server_pid.is_some() {
        match (after_warmup, rss_bound_kib) {
            (Some(_), Some(bound)) if peak_rss_kib > bound => problems.push(format!(
                "RSS kept growing after the warm-up: peak {peak_rss_kib} KiB over the bound \
                 {bound} KiB ({:.0} % above the first sample after {warm:.0} s)",
                RSS_GROWTH_AFTER_WARMUP * 100.0
            )),
            (Some(_), Some(_)) => {}
            _ => problems.push(format!(
                "no sample of the server after the warm-up ({warm:.0} s)"
            )),
        }
    }
    if tally.corrupt > 0 {
        problems.push(format!("{} streams lost their framing", tally.corrupt));
    }
    if server_panics > 0 {
        problems.push(format!(
            "{server_panics} panics or aborts in the server's log"
        ));
    }
    if tally.connections == 0 {
        problems.push("no connection was made".into());
    }
    let attempts = tally.connections + tally.connect_errors;
    if tally.connect_errors as f64 > attempts as f64 * CONNECT_ERRORS_ALLOWED {
        problems.push(format!(
            "{} of {attempts} connects failed (at most {:.0} % may)",
            tally.connect_errors,
            CONNECT_ERRORS_ALLOWED * 100.0
        ));
    }
    if !tally.unexpected.is_empty() {
        problems.push(format!(
            "connections ended otherwise than their behaviour calls for: {:?}",
            tally.unexpected
        ));
    }
    let summary = SoakSummary {
        url: args.url.clone(),
        duration_secs: started.elapsed().as_secs_f64(),
        slots: args.clients,
        connections: tally.connections,
        by_behaviour: tally.by_behaviour,
        endings: tally.endings,
        corrupt_streams: tally.corrupt,
        connect_errors: tally.connect_errors,
        unreachable,
        baseline: Some(baseline),
        after_warmup,
        peak_rss_kib,
        rss_bound_kib,
        peak_fds: samples.iter().filter_map(|s| s.fds).max().unwrap_or(0),
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

impl Tally {
    /// One connection: an established one counted with its behaviour and ending, a failed
    /// connect apart; an ending its behaviour does not call for is noted as unexpected.
    fn count(&mut self, behaviour: Behaviour, outcome: &misbehave::Outcome) {
        let key = format!("{} {}", label(behaviour), outcome.ended);
        *self.endings.entry(key.clone()).or_default() += 1;
        self.corrupt += u64::from(outcome.corrupt);
        if outcome.ended.starts_with("connect_") {
            self.connect_errors += 1;
            return;
        }
        self.connections += 1;
        *self.by_behaviour.entry(behaviour).or_default() += 1;
        if !expected_endings(behaviour).contains(&outcome.ended.as_str()) {
            *self.unexpected.entry(key).or_default() += 1;
        }
    }
}

fn describe(s: &Sample) -> String {
    let proc = match (s.rss_kib, s.fds) {
        (Some(rss), Some(fds)) => format!("RSS {:.1} MiB, {fds} fds, ", rss as f64 / 1024.0),
        _ => String::new(),
    };
    format!("server {proc}{} ws connections", s.ws_connections)
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
    let sample = |s: &Option<Sample>| s.as_ref().map_or("–".into(), describe);
    let mut out = format!(
        "soak of {} for {:.0} s: {} connections over {} slots, {} failed connects, {} corrupt streams\n",
        s.url, s.duration_secs, s.connections, s.slots, s.connect_errors, s.corrupt_streams
    );
    for (k, v) in [
        ("baseline", sample(&s.baseline)),
        ("after warm-up", sample(&s.after_warmup)),
        (
            "peak",
            format!(
                "RSS {:.1} MiB (bound {}), {} fds",
                s.peak_rss_kib as f64 / 1024.0,
                s.rss_bound_kib
                    .map_or("–".into(), |b| format!("{:.1} MiB", b as f64 / 1024.0)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(label: &str) -> misbehave::Outcome {
        misbehave::Outcome {
            ended: label.into(),
            corrupt: false,
        }
    }

    #[test]
    fn endings_are_judged_per_behaviour_and_failed_connects_kept_apart() {
        let mut tally = Tally::default();
        tally.count(Behaviour::Flood, &ended("close_1008"));
        tally.count(Behaviour::Garbage, &ended("close_1002"));
        tally.count(Behaviour::Slow, &ended("eof"));
        tally.count(Behaviour::Read, &ended("connect_refused"));
        assert_eq!((tally.connections, tally.connect_errors), (3, 1));
        assert!(tally.unexpected.is_empty(), "{:?}", tally.unexpected);
        // A flooder the server never closed, garbage answered with the wrong code, a reader
        // the server dropped: each is counted as unexpected.
        tally.count(Behaviour::Flood, &ended("timeout"));
        tally.count(Behaviour::Garbage, &ended("close_1008"));
        tally.count(Behaviour::Read, &ended("eof"));
        assert_eq!(
            tally.unexpected.keys().collect::<Vec<_>>(),
            ["flood timeout", "garbage close_1008", "read eof"]
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_has_a_start_time_and_a_missing_one_none() {
        assert!(start_ticks(std::process::id()).is_some());
        assert_eq!(start_ticks(u32::MAX), None);
    }
}
