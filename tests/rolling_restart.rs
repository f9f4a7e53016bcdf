//! Issue 13, point 7: a rolling restart with nothing missed. A real load balancer (haproxy) in
//! front of 3 replicas in cluster mode on a real redis-server; 1,000 subscribers from
//! `ratecast loadtest --reconnect`; every replica restarted in turn (SIGTERM, then started
//! again) → 0 missed deltas and every client ends on the same `seq`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::haproxy::haproxy;
use common::redis::{RedisServer, free_port};
use common::{FakeUpstream, Reply, fixture};
use serde_json::Value;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_ratecast");

fn replica(port: u16, upstream: &str, redis: &str) -> Child {
    common::replica::behind_proxy(port, upstream, redis, &["--shutdown-grace", "5s"])
}

async fn ready(port: u16) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    for _ in 0..500 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("replica on {port} not ready within 10 s");
}

/// Open WebSocket connections over every replica, as their `/metrics` say.
async fn connections(ports: &[u16]) -> u64 {
    let mut total = 0;
    for port in ports {
        let url = format!("http://127.0.0.1:{port}/metrics");
        let Ok(body) = reqwest::get(&url).await.and_then(|r| r.error_for_status()) else {
            continue;
        };
        let text = body.text().await.unwrap_or_default();
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("ratecast_ws_connections "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64);
    }
    total
}

/// SIGTERM, then the replica must drain and exit 0 within its grace period (5 s) plus slack:
/// a replica that crashes, is killed by a signal or hangs fails the test here.
async fn sigterm_and_wait(child: &mut Child) {
    let pid = child.id().expect("running");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success(), "kill -TERM {pid}");
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap_or_else(|_| panic!("replica {pid} still running 15 s after SIGTERM"))
        .expect("wait for the replica");
    assert_eq!(exit.code(), Some(0), "replica {pid} after SIGTERM: {exit}");
}

// Two defects made some resumes snapshots here (23 of 1,561 in one fresh-clone run, 122 of 1,478
// in another): a `since` a delta ahead of the replica the client landed on, and a replica
// restarted on the same address that haproxy handed clients before its first load. Both are
// now held until the replica catches up (tests/cluster.rs reproduces each one alone). A third
// (1 to 6 per run, 2 runs in 3): the load's event reached a restarted replica's shard after the
// clients the load let in, and resynced them as if they were of the old epoch.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_behind_a_load_balancer_misses_no_delta() {
    let upstream = FakeUpstream::start(Reply::Changing(fixture())).await;
    let redis = RedisServer::start();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut replicas: Vec<Child> = ports
        .iter()
        .map(|&p| replica(p, &upstream.url(), &redis.url()))
        .collect();
    for &port in &ports {
        ready(port).await;
    }
    let dir = std::env::temp_dir().join(format!("ratecast-rolling-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let lb = free_port();
    let _haproxy = haproxy(lb, &ports, &dir);
    let lb_addr: SocketAddr = format!("127.0.0.1:{lb}").parse().expect("addr");
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(lb_addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let url = format!("ws://127.0.0.1:{lb}/ws");
    let load = tokio::spawn(async move {
        Command::new(BIN)
            .args([
                "loadtest",
                "--url",
                &url,
                "--clients",
                "1000",
                "--ramp",
                "500/s",
            ])
            .args(["--duration", "40s", "--reconnect", "--json"])
            .env_clear()
            .envs(common::coverage_env())
            .kill_on_drop(true)
            .output()
            .await
            .expect("loadtest runs")
    });
    // Every subscriber connected (1,000 at 500/s: 2 s on a quiet box, far longer on a loaded
    // one or under coverage), then each replica in turn.
    for _ in 0..600 {
        if connections(&ports).await >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        connections(&ports).await,
        1000,
        "every subscriber connected"
    );
    for (replica, &port) in replicas.iter_mut().zip(&ports) {
        sigterm_and_wait(replica).await;
        *replica = self::replica(port, &upstream.url(), &redis.url());
        ready(port).await;
        // Let haproxy see it healthy again (rise 2 × 200 ms) before the next one goes.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Freeze the rates so every client can settle on one final seq.
    tokio::time::sleep(Duration::from_secs(2)).await;
    upstream.set(Reply::Json(fixture()));
    let out = load.await.expect("joins");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).expect("JSON summary");
    std::fs::write(dir.join("summary.json"), stdout.as_bytes()).ok();
    assert_eq!(summary["connected"], 1000, "{summary}");
    assert!(
        summary["reconnects"].as_u64() >= Some(900),
        "every replica's clients moved: {summary}"
    );
    assert_eq!(summary["missed_on_reconnect"], 0, "{summary}");
    assert_eq!(
        summary["reconnect_snapshots"], 0,
        "every resume replayed: {summary}"
    );
    assert_eq!(summary["missing_seqs"], 0, "{summary}");
    assert_eq!(summary["out_of_order"], 0, "{summary}");
    assert_eq!(summary["resyncs"], 0, "{summary}");
    assert_eq!(summary["epoch_changes"], 0, "{summary}");
    assert_eq!(summary["checksum_mismatches"], 0, "{summary}");
    assert!(
        summary["checksums_verified"].as_u64() > Some(0),
        "{summary}"
    );
    assert_eq!(
        summary["final_seq_min"], summary["final_seq_max"],
        "{summary}"
    );
    for replica in &mut replicas {
        sigterm_and_wait(replica).await;
    }
}
