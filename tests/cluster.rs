//! Cluster mode against a real `redis-server`: one poller for the deployment, the same `seq`
//! and bytes on every replica, resume on any replica, and the faults (Redis gone and back
//! empty, leader killed, leader paused past its lease).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::redis::RedisServer;
use common::replica::{Replica, leader_of, spawn_cluster};
use common::{
    FakeUpstream, Reply, TestServer, Ws, config, fixture, next_json, wait_until, ws_connect,
};

/// Fast cluster timings: 100 ms polls. The lease is the default 10 s: no test in process
/// needs a takeover, and a busy 2-core box must not make the leadership flap.
fn cluster_flags(redis: &RedisServer) -> Vec<String> {
    vec![
        "--redis-url".into(),
        redis.url(),
        "--poll-interval".into(),
        "100ms".into(),
    ]
}

async fn replicas(
    upstream: &FakeUpstream,
    redis: &RedisServer,
    n: usize,
    extra: &[&str],
) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(replica(upstream, redis, extra).await);
    }
    for server in &servers {
        server.wait_ready().await;
    }
    servers
}

/// One replica, started but not yet known to be ready.
async fn replica(upstream: &FakeUpstream, redis: &RedisServer, extra: &[&str]) -> TestServer {
    let flags = cluster_flags(redis);
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend_from_slice(extra);
    TestServer::start(config(&upstream.url(), &flags)).await
}

async fn leaders(servers: &[TestServer]) -> Vec<usize> {
    let mut found = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        if s.metric("ratecast_cluster_leader").await == 1.0 {
            found.push(i);
        }
    }
    found
}

/// Longest quiet on a client's stream across a takeover or a reload, on a busy box.
const TAKEOVER_WAIT: Duration = Duration::from_secs(20);

/// The next text frame as JSON, waiting up to `wait` (longer than `next_json`'s 5 s).
async fn next_within(ws: &mut Ws, wait: Duration) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(wait, ws.next())
            .await
            .context("no frame in time")?
            .context("stream ended")??;
        if let Message::Text(text) = msg {
            return Ok(serde_json::from_str(text.as_str())?);
        }
    }
}

/// The next `n` raw text frames of `kind`, as sent.
async fn raw_frames(ws: &mut Ws, kind: &str, n: usize) -> Result<Vec<String>> {
    let mut frames = Vec::new();
    while frames.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no frame within 10 s")?
            .context("stream ended")??;
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(text.as_str())?;
            if v["type"] == kind {
                frames.push(text.as_str().to_owned());
            }
        }
    }
    Ok(frames)
}

/// Reproduces issue 13: standalone replicas each poll and each count their own `seq`.
#[tokio::test]
async fn standalone_replicas_each_poll_and_disagree_on_seq() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Changing(fixture())).await;
    let a = TestServer::start_ready(&upstream, &[]).await;
    let b = TestServer::start_ready(&upstream, &[]).await;
    let c = TestServer::start_ready(&upstream, &[]).await;
    for s in [&a, &b, &c] {
        let polls = s
            .metric("ratecast_upstream_requests_total{outcome=\"ok\"}")
            .await;
        ensure!(polls >= 1.0, "every standalone replica polls");
    }
    let seqs = [a.seq().await, b.seq().await, c.seq().await];
    ensure!(
        seqs[0] != seqs[1] && seqs[1] != seqs[2],
        "each counts its own seq: {seqs:?}"
    );
    Ok(())
}

#[tokio::test]
async fn one_poller_for_the_cluster_and_the_same_frames_on_every_replica() -> Result<()> {
    let redis = RedisServer::start();
    let upstream = FakeUpstream::start(Reply::Changing(fixture())).await;
    let servers = replicas(&upstream, &redis, 3, &[]).await;
    wait_until(|| async { leaders(&servers).await.len() == 1 }).await;

    // Every poll changes the rates, so every upstream call is one delta: three pollers would
    // make three calls per `seq`.
    let (start_requests, start_seq) = (upstream.requests(), servers[0].seq().await);
    wait_until(|| async { servers[0].seq().await >= start_seq + 20 }).await;
    let (requests, seq) = (upstream.requests(), servers[0].seq().await);
    let calls = requests - start_requests;
    let deltas = (seq - start_seq) as usize;
    ensure!(
        calls <= deltas + 2,
        "{calls} upstream calls for {deltas} deltas: more than one poller"
    );
    let mut polled = 0;
    for s in &servers {
        // A follower never polled: no series at all is its zero.
        if s.metric_if_any("ratecast_upstream_requests_total{outcome=\"ok\"}")
            .await
            .unwrap_or(0.0)
            > 0.0
        {
            polled += 1;
        }
    }
    ensure!(polled == 1, "{polled} replicas polled the upstream");

    // The same delta frames, byte for byte, on every replica.
    let mut sockets = Vec::new();
    for s in &servers {
        sockets.push(ws_connect(&s.ws_url("")).await?);
    }
    let mut streams = Vec::new();
    for ws in &mut sockets {
        streams.push(raw_frames(ws, "delta", 8).await?);
    }
    // Sockets joined at slightly different seqs: compare the seqs all three saw.
    let seq_of = |f: &String| {
        serde_json::from_str::<Value>(f).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let common_from = streams.iter().map(|s| seq_of(&s[0])).max().unwrap();
    let tail = |s: &Vec<String>| -> Vec<String> {
        s.iter()
            .filter(|f| seq_of(f) >= common_from)
            .cloned()
            .collect()
    };
    let shortest = streams.iter().map(|s| tail(s).len()).min().unwrap();
    ensure!(shortest >= 4, "too few common frames");
    for s in &streams[1..] {
        ensure!(
            tail(s)[..shortest] == tail(&streams[0])[..shortest],
            "frames differ between replicas"
        );
    }

    // Quiet upstream: all replicas settle on the same seq and the same table.
    upstream.set(Reply::Json(fixture()));
    wait_until(|| async {
        let seqs = [
            servers[0].seq().await,
            servers[1].seq().await,
            servers[2].seq().await,
        ];
        seqs[0] == seqs[1] && seqs[1] == seqs[2]
    })
    .await;
    let bodies: Vec<Value> = futures_util::future::join_all(
        servers
            .iter()
            .map(|s| async { s.get_json("/api/v1/rates").await.1 }),
    )
    .await;
    for body in &bodies[1..] {
        ensure!(body["seq"] == bodies[0]["seq"] && body["rates"] == bodies[0]["rates"]);
    }
    ensure!(bodies[0]["stale"] == false);
    Ok(())
}

#[tokio::test]
async fn since_taken_from_one_replica_replays_on_another() -> Result<()> {
    let redis = RedisServer::start();
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let servers = replicas(&upstream, &redis, 2, &[]).await;
    let seq = servers[0].seq().await;
    for (i, value) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        upstream.set_value("usd", value);
        wait_until(|| async { servers[1].seq().await == seq + 1 + i as u64 }).await;
    }
    let epoch = servers[0].epoch().await;
    let mut ws = ws_connect(&servers[1].ws_url(&format!("?since={seq}&epoch={epoch}"))).await?;
    for (i, value) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        let frame = next_json(&mut ws).await?;
        ensure!(
            frame["type"] == "delta" && frame["seq"] == seq + 1 + i as u64,
            "{frame}"
        );
        ensure!(frame["changed"]["usd"]["value"] == value);
    }

    // A replica started later loads the same ring from Redis and replays too.
    let late = replica(&upstream, &redis, &[]).await;
    late.wait_ready().await;
    let mut ws = ws_connect(&late.ws_url(&format!("?since={seq}&epoch={epoch}"))).await?;
    let frame = next_json(&mut ws).await?;
    ensure!(
        frame["type"] == "delta" && frame["seq"] == seq + 1,
        "{frame}"
    );
    // …with the full history at once.
    let (_, history) = late.get_json("/api/v1/history/usd").await;
    ensure!(
        history["points"].as_array().map_or(0, Vec::len) >= 4,
        "{history}"
    );
    Ok(())
}

/// A client that resumes on a replica a moment behind the one it left — its `since` is one
/// the stream has not yet brought here — is held until this replica has caught up and then
/// replayed, not given a snapshot (the rolling restart's 23 snapshots in 1,561 resumes).
/// A `since` far beyond anything published is answered with a snapshot at once.
#[tokio::test]
async fn since_a_moment_ahead_of_this_replica_waits_for_it_and_replays() -> Result<()> {
    let redis = RedisServer::start();
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let servers = replicas(&upstream, &redis, 2, &[]).await;
    let seq = servers[1].seq().await;
    // The client already holds `seq + 1`, as if another replica had sent it.
    let epoch = servers[1].epoch().await;
    let mut ws =
        ws_connect(&servers[1].ws_url(&format!("?since={}&epoch={epoch}", seq + 1))).await?;
    upstream.set_value("usd", 1.0);
    wait_until(|| async { servers[1].seq().await == seq + 1 }).await;
    upstream.set_value("usd", 2.0);
    let frame = next_json(&mut ws).await?;
    ensure!(
        frame["type"] == "delta" && frame["seq"] == seq + 2,
        "the first frame is the next delta, not a snapshot: {frame}"
    );
    ensure!(frame["changed"]["usd"]["value"] == 2.0, "{frame}");

    wait_until(|| async { servers[0].seq().await == seq + 2 }).await;
    let mut far =
        ws_connect(&servers[0].ws_url(&format!("?since={}&epoch={epoch}", seq + 100_000))).await?;
    let frame = next_json(&mut far).await?;
    ensure!(
        frame["type"] == "snapshot" && frame["seq"] == seq + 2,
        "{frame}"
    );
    Ok(())
}

/// A load balancer may hand a resuming client to a replica restarted on the same address
/// before that replica has loaded the shared state (the rolling restart's other snapshots):
/// the client is held until the load and then replayed, not told "no data yet" and snapshotted.
#[tokio::test]
async fn a_resume_that_arrives_before_the_first_load_waits_for_it_and_replays() -> Result<()> {
    let redis = RedisServer::start();
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let servers = replicas(&upstream, &redis, 1, &[]).await;
    let seq = servers[0].seq().await;
    upstream.set_value("usd", 1.0);
    wait_until(|| async { servers[0].seq().await == seq + 1 }).await;

    redis.pause(Duration::from_millis(1_000));
    let restarted = replica(&upstream, &redis, &[]).await;
    let epoch = servers[0].epoch().await;
    let mut ws = ws_connect(&restarted.ws_url(&format!("?since={seq}&epoch={epoch}"))).await?;
    let frame = next_json(&mut ws).await?;
    ensure!(
        frame["type"] == "delta" && frame["seq"] == seq + 1,
        "the replay after the load, not a status or a snapshot: {frame}"
    );
    ensure!(frame["changed"]["usd"]["value"] == 1.0, "{frame}");
    // The load's own event reaches the replica's shard after the client it let in: it must not
    // resync that client, which already holds the loaded table (a snapshot here was the rolling
    // restart's last one).
    upstream.set_value("usd", 2.0);
    let next = loop {
        let frame = next_within(&mut ws, Duration::from_secs(5)).await?;
        if frame["type"] != "status" && frame["type"] != "heartbeat" {
            break frame;
        }
    };
    ensure!(
        next["type"] == "delta" && next["seq"] == seq + 2,
        "the next delta, not a resync: {next}"
    );
    Ok(())
}

/// Before the cluster's first good poll every replica, followers included, says why there is no
/// data, as a standalone server does (the leader publishes its view of the upstream alone).
#[tokio::test]
async fn before_the_first_good_poll_every_replica_says_why() -> Result<()> {
    let redis = RedisServer::start();
    let upstream = FakeUpstream::start(Reply::status(503)).await;
    // Quick retries, so that recovery below is seen within the wait.
    let retries = ["--max-backoff", "1s"];
    let servers = vec![
        replica(&upstream, &redis, &retries).await,
        replica(&upstream, &redis, &retries).await,
    ];
    upstream.wait_requests(1).await;
    for server in &servers {
        let mut ws = ws_connect(&server.ws_url("")).await?;
        let status = loop {
            let frame = next_within(&mut ws, TAKEOVER_WAIT).await?;
            if frame["type"] == "status" && frame["upstream"]["last_error"] == "http_5xx" {
                break frame;
            }
        };
        ensure!(
            status["reason"] == "CoinGecko has a server error",
            "{status}"
        );
        ensure!(status["upstream"]["next_attempt"].is_string(), "{status}");
        let (code, _) = server.get_json("/readyz").await;
        ensure!(code == 503);
    }
    let leader = leaders(&servers).await;
    ensure!(leader.len() == 1);
    ensure!(
        servers[leader[0]]
            .metric("ratecast_cluster_publish_total{result=\"waiting\"}")
            .await
            >= 1.0
    );
    // Recovery: the first data reaches every replica.
    upstream.set(Reply::Json(fixture()));
    for server in &servers {
        tokio::time::timeout(TAKEOVER_WAIT, server.wait_ready()).await?;
    }
    Ok(())
}

/// Every frame's seq on a socket: deltas contiguous unless a snapshot resets, never backwards.
struct SeqWatch {
    last: Option<u64>,
    snapshots: usize,
}

impl SeqWatch {
    fn see(&mut self, frame: &Value) -> Result<()> {
        let Some(seq) = frame["seq"].as_u64() else {
            return Ok(());
        };
        match frame["type"].as_str() {
            Some("snapshot") => {
                ensure!(
                    self.last.is_none_or(|l| seq >= l),
                    "seq went back: {seq} after {:?}",
                    self.last
                );
                self.snapshots += 1;
                self.last = Some(seq);
            }
            Some("delta") => {
                ensure!(
                    self.last.is_none_or(|l| seq == l + 1),
                    "gap or duplicate: {seq} after {:?}",
                    self.last
                );
                self.last = Some(seq);
            }
            Some("heartbeat") => {
                ensure!(
                    self.last.is_none_or(|l| seq >= l),
                    "heartbeat went back: {seq}"
                );
            }
            _ => {}
        }
        Ok(())
    }
}

#[tokio::test]
async fn redis_outage_is_stale_with_a_reason_and_an_empty_restart_is_a_snapshot() -> Result<()> {
    let mut redis = RedisServer::start();
    let upstream = FakeUpstream::start(Reply::Changing(fixture())).await;
    // A 2 s lease: the leader must give up polling soon after Redis goes.
    let servers = replicas(&upstream, &redis, 2, &["--cluster-lease-ttl", "2s"]).await;
    let mut ws = ws_connect(&servers[1].ws_url("")).await?;
    let mut watch = SeqWatch {
        last: None,
        snapshots: 0,
    };

    redis.stop();
    // Stale with the reason, on the stream and in the REST body; the last data still served.
    loop {
        let frame = next_within(&mut ws, TAKEOVER_WAIT).await?;
        watch.see(&frame)?;
        if frame["type"] == "status" && frame["stale"] == true {
            let reason = frame["reason"].as_str().unwrap_or_default();
            ensure!(reason.contains("shared state"), "{frame}");
            break;
        }
    }
    let (status, body) = servers[1].get_json("/api/v1/rates").await;
    ensure!(status == 200 && body["stale"] == true, "{body}");
    ensure!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("shared state"),
        "{body}"
    );
    // Without Redis nobody holds the lease, so nobody polls.
    wait_until(|| async { leaders(&servers).await.is_empty() }).await;
    let quiet = upstream.requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        upstream.requests() <= quiet + 1,
        "a replica polled without the lease"
    );

    // Back, empty: a new generation; clients get a snapshot, then deltas flow; seq never goes back.
    redis.restart();
    let mut deltas_after = 0;
    while deltas_after < 5 {
        // Readers retry every ≤ 2 s, a new leader takes the lease: allow for a busy box.
        let frame = next_within(&mut ws, TAKEOVER_WAIT).await?;
        watch.see(&frame)?;
        if frame["type"] == "delta" && watch.snapshots >= 2 {
            deltas_after += 1;
        }
    }
    ensure!(
        watch.snapshots == 2,
        "one snapshot at connect, one for the new generation"
    );
    wait_until(|| async { servers[1].get_json("/api/v1/rates").await.1["stale"] == false }).await;
    Ok(())
}

#[tokio::test]
async fn leader_sigkill_a_follower_takes_over_and_clients_stay_contiguous() -> Result<()> {
    let redis = RedisServer::start();
    let upstream = FakeUpstream::start(Reply::Changing(fixture())).await;
    let mut replicas = spawn_cluster(&upstream.url(), &redis.url(), 3, &[]).await;
    let leader = leader_of(&replicas, TAKEOVER_WAIT).await?;
    let follower = (leader + 1) % 3;
    let mut ws = ws_connect(&format!("ws://127.0.0.1:{}/ws", replicas[follower].port)).await?;
    let mut watch = SeqWatch {
        last: None,
        snapshots: 0,
    };
    for _ in 0..5 {
        watch.see(&next_within(&mut ws, TAKEOVER_WAIT).await?)?;
    }

    replicas[leader].signal(libc::SIGKILL);
    let _ = replicas[leader].child.wait();
    let killed_at = watch.last.context("no seq before the kill")?;
    // The follower's client keeps a contiguous stream across the takeover.
    while watch.last.is_none_or(|l| l < killed_at + 10) {
        watch.see(&next_within(&mut ws, TAKEOVER_WAIT).await?)?;
    }
    ensure!(
        watch.snapshots == 1,
        "a resync happened: the client saw a gap"
    );
    let survivors: Vec<Replica> = replicas
        .drain(..)
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, r)| r)
        .collect();
    let new_leader = leader_of(&survivors, TAKEOVER_WAIT).await?;
    let polls = survivors[new_leader]
        .metric("ratecast_upstream_requests_total{outcome=\"ok\"}")
        .await?;
    ensure!(polls > 0.0, "the new leader polls");
    Ok(())
}

/// A fake CoinGecko that can hold one request until told: the leader is then stopped with
/// that poll in flight, the way a GC pause or a frozen VM would catch it.
#[derive(Clone)]
struct GatedUpstream {
    url: String,
    hold_next: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

impl GatedUpstream {
    async fn start() -> Self {
        let gate = Self {
            url: String::new(),
            hold_next: Arc::new(AtomicBool::new(false)),
            held: Arc::new(AtomicUsize::new(0)),
            release: Arc::new(Notify::new()),
        };
        let counter = Arc::new(AtomicUsize::new(0));
        let handler_gate = gate.clone();
        let app = axum::Router::new().route(
            "/api/v3/exchange_rates",
            axum::routing::get(move || {
                let gate = handler_gate.clone();
                let counter = counter.clone();
                async move {
                    let n = counter.fetch_add(1, Ordering::SeqCst) as f64;
                    if gate.hold_next.swap(false, Ordering::SeqCst) {
                        gate.held.fetch_add(1, Ordering::SeqCst);
                        gate.release.notified().await;
                    }
                    let mut v = fixture();
                    v["rates"]["usd"]["value"] = (1000.0 + n).into();
                    axum::Json(v)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, ..gate }
    }
}

#[tokio::test]
async fn a_leader_paused_past_its_lease_publishes_nothing() -> Result<()> {
    let redis = RedisServer::start();
    let upstream = GatedUpstream::start().await;
    // A long request timeout: the held poll is answered, not timed out, after the resume.
    let replicas = spawn_cluster(
        &upstream.url,
        &redis.url(),
        2,
        &["--request-timeout", "60s"],
    )
    .await;
    let leader = leader_of(&replicas, TAKEOVER_WAIT).await?;
    let follower = 1 - leader;
    let mut ws = ws_connect(&format!("ws://127.0.0.1:{}/ws", replicas[follower].port)).await?;
    let mut watch = SeqWatch {
        last: None,
        snapshots: 0,
    };
    watch.see(&next_within(&mut ws, TAKEOVER_WAIT).await?)?;

    // Catch the leader with a poll in flight, and stop it.
    upstream.hold_next.store(true, Ordering::SeqCst);
    wait_until(|| async { upstream.held.load(Ordering::SeqCst) == 1 }).await;
    replicas[leader].signal(libc::SIGSTOP);
    // The follower takes over and publishes.
    wait_until(|| async { replicas[follower].is_leader().await }).await;
    let taken_at = watch.last.context("no seq")?;
    while watch.last.is_none_or(|l| l < taken_at + 5) {
        watch.see(&next_within(&mut ws, TAKEOVER_WAIT).await?)?;
    }
    // Resume the old leader with its poll answered: its publication is refused.
    upstream.release.notify_waiters();
    tokio::time::sleep(Duration::from_millis(100)).await;
    replicas[leader].signal(libc::SIGCONT);
    wait_until(|| async {
        replicas[leader]
            .metric("ratecast_cluster_publish_total{result=\"fenced\"}")
            .await
            .is_ok_and(|fenced| fenced >= 1.0)
    })
    .await;
    // Its lease task finds the lease gone at its next renewal (a moment after the refusal).
    wait_until(|| async {
        replicas[leader]
            .metric("ratecast_cluster_leader")
            .await
            .is_ok_and(|leads| leads == 0.0)
    })
    .await;
    ensure!(
        replicas[follower].is_leader().await,
        "the follower still leads"
    );
    // Clients saw nothing of it: still contiguous, no duplicate seq.
    let resumed_at = watch.last.context("no seq")?;
    while watch.last.is_none_or(|l| l < resumed_at + 5) {
        watch.see(&next_within(&mut ws, TAKEOVER_WAIT).await?)?;
    }
    ensure!(watch.snapshots == 1, "the client was resynced");
    Ok(())
}

#[tokio::test]
async fn a_follower_behind_the_streams_retention_gets_a_snapshot() -> Result<()> {
    let redis = RedisServer::start();
    let upstream = FakeUpstream::start(Reply::Changing(fixture())).await;
    let replicas = spawn_cluster(&upstream.url(), &redis.url(), 2, &[]).await;
    let leader = leader_of(&replicas, TAKEOVER_WAIT).await?;
    let follower = 1 - leader;
    let mut ws = ws_connect(&format!("ws://127.0.0.1:{}/ws", replicas[follower].port)).await?;
    let mut watch = SeqWatch {
        last: None,
        snapshots: 0,
    };
    watch.see(&next_within(&mut ws, TAKEOVER_WAIT).await?)?;

    // The follower stops; the stream moves on and what it missed is trimmed away.
    replicas[follower].signal(libc::SIGSTOP);
    let at = upstream.requests();
    upstream.wait_requests(5).await;
    let trimmed = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "XTRIM",
            "{ratecast}:stream",
            "MAXLEN",
            "0",
        ])
        .output()?;
    ensure!(trimmed.status.success(), "redis-cli XTRIM failed");
    upstream.wait_requests(3).await;
    ensure!(upstream.requests() >= at + 8);
    replicas[follower].signal(libc::SIGCONT);

    // It loads the whole state: its client is resynced with a snapshot, then deltas follow.
    while watch.snapshots < 2 {
        watch.see(&next_within(&mut ws, TAKEOVER_WAIT).await?)?;
    }
    let resumed = watch.last.context("no seq")?;
    while watch.last.is_none_or(|l| l < resumed + 3) {
        watch.see(&next_within(&mut ws, TAKEOVER_WAIT).await?)?;
    }
    // A gap (or, if its blocked read timed out while it was stopped, a reconnect): either
    // series may be absent, but not both.
    let mut loads = 0.0;
    for reason in ["gap", "reconnect"] {
        let sample = format!("ratecast_cluster_resyncs_total{{reason=\"{reason}\"}}");
        loads += replicas[follower].metric(&sample).await.unwrap_or(0.0);
    }
    ensure!(loads >= 1.0, "no whole-state load");
    Ok(())
}
