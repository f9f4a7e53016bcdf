//! What the server says about its data: stale means "not confirmed current" (counted from the
//! upstream's last good answer, not the last change), a first run without data says why and
//! when the next attempt is, and expected 503s are not logged as errors.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use common::{FakeUpstream, Reply, TestServer, fixture, next_json, ws_connect};
use serde_json::Value;

/// Every frame that arrives within `window`.
async fn frames_for(ws: &mut common::Ws, window: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    let _ = tokio::time::timeout(window, async {
        while let Ok(frame) = next_json(ws).await {
            frames.push(frame);
        }
    })
    .await;
    frames
}

#[tokio::test]
async fn an_unchanging_healthy_upstream_never_turns_stale() -> Result<()> {
    // CoinGecko caches the endpoint for minutes: the same numbers, poll after poll.
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let extra = [
        "--stale-after",
        "1s",
        "--poll-interval",
        "200ms",
        "--heartbeat-interval",
        "100ms",
    ];
    let server = TestServer::start_ready(&upstream, &extra).await;
    let seq = server.seq().await;
    let mut ws = ws_connect(&server.ws_url("")).await?;
    let frames = frames_for(&mut ws, Duration::from_secs(3)).await;
    assert!(upstream.requests() >= 10, "polls kept succeeding");
    assert_eq!(server.seq().await, seq, "nothing changed");
    let snapshot = &frames[0];
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["stale"], false);
    assert!(snapshot["checked_at"].as_u64().is_some());
    for frame in &frames {
        assert_ne!(frame["stale"], true, "went stale: {frame}");
    }
    let beats: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "heartbeat")
        .filter_map(|f| f["checked_at"].as_u64())
        .collect();
    assert!(beats.len() >= 5, "heartbeats carry checked_at: {beats:?}");
    assert!(
        beats.last() > beats.first(),
        "each good poll confirms: {beats:?}"
    );
    let (_, rates) = server.get_json("/api/v1/rates").await;
    assert_eq!(rates["stale"], false);
    let checked = humantime::parse_rfc3339(rates["checked_at"].as_str().unwrap())?;
    let updated = humantime::parse_rfc3339(rates["updated_at"].as_str().unwrap())?;
    assert!(checked > updated, "confirmed after the last change");
    assert!(server.metric("ratecast_data_age_seconds").await < 1.0);
    Ok(())
}

/// One good poll, then none for an hour: only time passes, no poll fails.
const UNCONFIRMED_FOR_AN_HOUR: [&str; 6] = [
    "--stale-after",
    "1s",
    "--poll-interval",
    "1h",
    "--heartbeat-interval",
    "100ms",
];

#[tokio::test]
async fn data_turns_stale_by_time_when_the_upstream_stops_confirming_it() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &UNCONFIRMED_FOR_AN_HOUR).await;
    let mut ws = ws_connect(&server.ws_url("")).await?;
    assert_eq!(next_json(&mut ws).await?["stale"], false);
    let status = loop {
        let frame = next_json(&mut ws).await?;
        if frame["type"] == "status" {
            break frame;
        }
    };
    assert_eq!(status["stale"], true);
    assert_eq!(status["upstream"]["status"], "ok", "no poll failed");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not confirmed"), "{status}");
    assert!(status["checked_at"].as_u64().is_some() && status["updated_at"].as_u64().is_some());
    assert_eq!(upstream.requests(), 1);
    let (_, rates) = server.get_json("/api/v1/rates").await;
    assert_eq!(rates["stale"], true);
    assert!(server.metric("ratecast_data_age_seconds").await >= 1.0);
    Ok(())
}

/// The demo source ages out like CoinGecko (the same branch of `Store::is_stale`), so a drill's
/// "stale after N s" on the demo times the path production takes.
#[tokio::test]
async fn demo_data_turns_stale_by_time_like_coingecko_data() -> Result<()> {
    let server = TestServer::start(common::config(
        "http://127.0.0.1:9",
        &[&["--demo"][..], &UNCONFIRMED_FOR_AN_HOUR].concat(),
    ))
    .await;
    server.wait_ready().await;
    let mut ws = ws_connect(&server.ws_url("")).await?;
    let snapshot = next_json(&mut ws).await?;
    assert_eq!(snapshot["source"], "demo");
    assert_eq!(snapshot["stale"], false);
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frame = next_json(&mut ws).await?;
            if frame["type"] == "status" {
                return anyhow::Ok(frame);
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("demo data never turned stale"))??;
    assert_eq!(status["stale"], true, "{status}");
    assert_eq!(status["upstream"]["status"], "ok", "no poll failed");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not confirmed"), "{status}");
    let (_, rates) = server.get_json("/api/v1/rates").await;
    assert_eq!(rates["stale"], true);
    Ok(())
}

#[tokio::test]
async fn a_first_run_without_the_upstream_says_why_and_when_it_tries_next() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::status(503)).await;
    let server = TestServer::start(common::config(
        &upstream.url(),
        &["--poll-interval", "30s", "--max-backoff", "60s"],
    ))
    .await;
    upstream.wait_requests(1).await;
    let mut ws = ws_connect(&server.ws_url("")).await?;
    // Not "live": a status frame with no data, the reason and the next attempt.
    let status = next_json(&mut ws).await?;
    assert_eq!(status["type"], "status", "{status}");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert_eq!(reason, "CoinGecko has a server error", "{status}");
    assert_eq!(status["upstream"]["last_error"], "http_5xx");
    let next = humantime::parse_rfc3339(status["upstream"]["next_attempt"].as_str().unwrap())?;
    assert!(next > std::time::SystemTime::now(), "next attempt ahead");
    assert!(status["updated_at"].is_null() && status["checked_at"].is_null());
    let (code, _) = server.get_json("/readyz").await;
    assert_eq!(code, 503);
    // Recovery at the announced attempt: the first data arrives as a snapshot on the same
    // connection.
    upstream.set(Reply::Json(fixture()));
    let snapshot = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match next_json(&mut ws).await {
                Ok(frame) if frame["type"] == "snapshot" => return Ok(frame),
                Ok(_) => {}
                Err(e) if e.to_string().contains("within 5 s") => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await??;
    assert_eq!(snapshot["stale"], false);
    let (code, _) = server.get_json("/readyz").await;
    assert_eq!(code, 200);
    Ok(())
}

/// Runs the real binary with `RUST_LOG=info` against an upstream that refuses connections.
#[test]
fn expected_503s_are_not_logged_as_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead); // nothing listens there now: connection refused
    let mut child = Command::new(env!("CARGO_BIN_EXE_ratecast"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream-url", &dead_url, "--poll-interval", "30s"])
        .args(["--upstream", "coingecko"])
        .env_clear()
        .envs(common::coverage_env())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let url = format!("http://127.0.0.1:{port}/readyz");
        let mut not_ready = 0;
        for _ in 0..500 {
            if let Ok(r) = reqwest::get(&url).await {
                assert_eq!(r.status(), 503);
                not_ready += 1;
                if not_ready == 5 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server never answered");
    });
    // SIGTERM: the drain answers 503 too (a stream that never reads holds the drain open
    // long enough to ask), and the process still exits 0.
    let drained = runtime.block_on(async {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let (_stalled, _) = common::raw_ws(addr, "", None).await?;
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(killed.success(), "kill -TERM failed");
        // /readyz is 503 before and after the signal here (no data ever came): the drain is
        // told apart by its answer to an upgrade, 503 "unavailable" instead of a 101.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let refusal = match common::raw_ws(addr, "", None).await {
                Ok(_upgraded) => "101".to_owned(), // not draining yet
                Err(e) => e.to_string(),
            };
            if refusal.contains("HTTP/1.1 503") {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no 503 during the drain: {refusal}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, body) = common::http_get_close(addr, "/readyz").await?;
        anyhow::ensure!(status == 503, "/readyz while draining: {status} {body}");
        anyhow::Ok(())
    });
    let exit = child.wait().expect("the server exits");
    drained.expect("the drain answers 503");
    assert_eq!(exit.code(), Some(0), "SIGTERM exits 0");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert!(stderr.contains("no data yet"), "{stderr}");
    assert!(!stderr.contains("serving last good data"), "{stderr}");
}
