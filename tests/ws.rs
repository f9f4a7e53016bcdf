//! The live stream, black-box: a real server on port 0, a fake CoinGecko, tokio-tungstenite clients.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use common::{
    FakeUpstream, Reply, TestServer, Ws, close_code, fixture, next_json, next_of, send_text,
    wait_until,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

async fn connect(server: &TestServer, query: &str) -> Ws {
    common::ws_connect(&server.ws_url(query))
        .await
        .expect("connects")
}

/// A client whose kernel receive buffer is tiny, so that not reading stalls the server's writes.
async fn connect_small_buffer(server: &TestServer, query: &str) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(server.ws_url(query), MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    ws
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn snapshot_then_contiguous_deltas_holding_exactly_the_changes() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let mut ws = connect(&server, "").await;
    let snapshot = next_json(&mut ws).await?;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["source"], "coingecko");
    assert_eq!(snapshot["stale"], false);
    assert_eq!(snapshot["rates"].as_object().unwrap().len(), 61);
    assert_eq!(snapshot["rates"]["vnd"]["unit"], "₫");
    let seq = snapshot["seq"].as_u64().unwrap();

    let before = fixture()["rates"]["usd"]["value"].as_f64().unwrap();
    upstream.set_value("usd", 50_000.0);
    upstream.set_value("eur", 45_000.0);
    let delta = next_of(&mut ws, "delta").await?;
    assert_eq!(delta["seq"], seq + 1);
    let changed = delta["changed"].as_object().unwrap();
    assert_eq!(
        changed.keys().collect::<HashSet<_>>(),
        HashSet::from([&"usd".to_string(), &"eur".to_string()])
    );
    assert_eq!(changed["usd"]["value"], 50_000.0);
    assert_eq!(changed["usd"]["prev"], before);
    assert_eq!(changed["usd"]["name"], "US Dollar");
    assert_eq!(delta["removed"], serde_json::json!([]));
    let ts = delta["ts"].as_u64().unwrap();
    assert!(
        ts <= now_ms() && ts + 10_000 > now_ms(),
        "ts is the publish time in ms"
    );

    let mut gone = fixture();
    gone["rates"].as_object_mut().unwrap().remove("gbp");
    gone["rates"]["usd"]["value"] = 50_000.0.into();
    gone["rates"]["eur"]["value"] = 45_000.0.into();
    upstream.set(Reply::Json(gone));
    let delta = next_of(&mut ws, "delta").await?;
    assert_eq!(delta["seq"], seq + 2);
    assert_eq!(delta["removed"], serde_json::json!(["gbp"]));
    assert!(delta["changed"].as_object().unwrap().is_empty());
    Ok(())
}

#[tokio::test]
async fn resume_replays_missed_deltas_or_falls_back_to_a_snapshot() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let seq = server.seq().await;
    upstream.set_value("usd", 1.0);
    wait_until(|| async { server.seq().await == seq + 1 }).await;
    upstream.set_value("usd", 2.0);
    wait_until(|| async { server.seq().await == seq + 2 }).await;

    let epoch = server.epoch().await;
    let mut ws = connect(&server, &format!("?since={seq}&epoch={epoch}")).await;
    let first = next_json(&mut ws).await?;
    assert_eq!(
        (first["type"].as_str(), first["seq"].as_u64()),
        (Some("delta"), Some(seq + 1))
    );
    assert_eq!(first["changed"]["usd"]["value"], 1.0);
    let second = next_json(&mut ws).await?;
    assert_eq!(
        (second["type"].as_str(), second["seq"].as_u64()),
        (Some("delta"), Some(seq + 2))
    );
    // Then live, still contiguous.
    upstream.set_value("usd", 3.0);
    assert_eq!(next_of(&mut ws, "delta").await?["seq"], seq + 3);

    // Up to date: nothing to replay, nothing lost.
    let mut current = connect(&server, &format!("?since={}&epoch={epoch}", seq + 3)).await;
    upstream.set_value("usd", 4.0);
    assert_eq!(next_of(&mut current, "delta").await?["seq"], seq + 4);

    // Too old (not in the ring), from another process, of another epoch or of none (a client
    // older than the field): a fresh snapshot, even for a `seq` this epoch holds.
    let other = format!("?since={}&epoch=0123456789abcdef", seq + 3);
    let none = format!("?since={}", seq + 3);
    for query in [
        format!("?since=0&epoch={epoch}"),
        format!("?since={}&epoch={epoch}", seq + 1000),
        other,
        none,
    ] {
        let mut ws = connect(&server, &query).await;
        let frame = next_json(&mut ws).await?;
        assert_eq!(frame["type"], "snapshot", "{query}");
        assert_eq!(frame["seq"], seq + 4);
        assert_eq!(frame["epoch"], epoch.as_str());
    }
    assert_eq!(
        server
            .metric("ratecast_ws_resumes_total{result=\"replayed\"}")
            .await,
        2.0
    );
    assert_eq!(
        server
            .metric("ratecast_ws_resumes_total{result=\"snapshot\"}")
            .await,
        4.0
    );
    Ok(())
}

#[tokio::test]
async fn symbol_filter_and_subscribe_command() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let mut ws = connect(&server, "?symbols=usd,EUR").await;
    let snapshot = next_json(&mut ws).await?;
    let codes: Vec<_> = snapshot["rates"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(codes, ["eur", "usd"]);
    let seq = snapshot["seq"].as_u64().unwrap();

    upstream.set_value("gbp", 1.0); // not ours: skipped, seq moves on
    wait_until(|| async { server.seq().await == seq + 1 }).await;
    upstream.set_value("usd", 2.0);
    let delta = next_of(&mut ws, "delta").await?;
    assert_eq!(
        delta["seq"],
        seq + 2,
        "filtered streams keep the global seq"
    );
    assert_eq!(
        delta["changed"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["usd"]
    );

    send_text(&mut ws, r#"{"op":"subscribe","symbols":["eth"]}"#).await?;
    let snapshot = next_of(&mut ws, "snapshot").await?;
    assert_eq!(
        snapshot["rates"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["eth"]
    );
    send_text(&mut ws, r#"{"op":"subscribe","symbols":["no good"]}"#).await?;
    assert!(
        next_of(&mut ws, "error").await?["error"]
            .as_str()
            .unwrap()
            .contains("invalid symbol")
    );
    send_text(&mut ws, r#"{"op":"subscribe","symbols":null}"#).await?;
    assert_eq!(
        next_of(&mut ws, "snapshot").await?["rates"]
            .as_object()
            .unwrap()
            .len(),
        61
    );

    // A real upgrade request (not one missing its headers) refused for its symbols alone.
    let (status, body) = refused(&server.ws_url("?symbols=%3Cscript%3E"), None).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "bad_request");
    assert!(
        body["error"].as_str().unwrap().contains("invalid symbol"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn commands_garbage_oversized_and_binary_frames() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let mut ws = connect(&server, "").await;
    next_of(&mut ws, "snapshot").await?;

    send_text(&mut ws, r#"{"op":"ping"}"#).await?;
    assert!(next_of(&mut ws, "pong").await?["ts"].as_u64().is_some());
    for garbage in [
        "hello",
        "{}",
        r#"{"op":"dance"}"#,
        r#"{"op":"subscribe","symbols":"usd"}"#,
        "[1,2]",
    ] {
        send_text(&mut ws, garbage).await?;
        let error = next_of(&mut ws, "error").await?;
        assert!(
            error["error"].as_str().unwrap().contains("bad command"),
            "{garbage}: {error}"
        );
    }
    send_text(&mut ws, r#"{"op":"ping"}"#).await?;
    next_of(&mut ws, "pong").await?; // still up

    send_text(
        &mut ws,
        &format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(5000)),
    )
    .await?;
    assert_eq!(close_code(&mut ws).await, Some(1009));

    let mut ws = connect(&server, "").await;
    ws.send(Message::binary(vec![1, 2, 3])).await?;
    assert_eq!(close_code(&mut ws).await, Some(1003));
    Ok(())
}

async fn refused(url: &str, origin: Option<&str>) -> (u16, Value) {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn connection_caps_refuse_before_upgrade_and_release_slots() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &["--max-connections-per-ip", "2"]).await;
    let a = connect(&server, "").await;
    let _b = connect(&server, "").await;
    let (status, body) = refused(&server.ws_url(""), None).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "too_many_connections");
    assert!(body["error"].as_str().unwrap().contains("127.0.0.1"));
    drop(a);
    wait_until(|| async { common::ws_connect(&server.ws_url("")).await.is_ok() }).await;
    assert!(
        server
            .metric("ratecast_ws_connections_refused_total{reason=\"per_ip_limit\"}")
            .await
            >= 1.0
    );

    let full = TestServer::start_ready(&upstream, &["--max-connections", "1"]).await;
    let _only = connect(&full, "").await;
    let (status, body) = refused(&full.ws_url(""), None).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "unavailable");
    Ok(())
}

#[tokio::test]
async fn connection_rate_limit_per_ip() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let extra = [
        "--connection-rate-per-second",
        "1",
        "--connection-rate-burst",
        "3",
    ];
    let server = TestServer::start_ready(&upstream, &extra).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&server, "").await);
    }
    let (status, body) = refused(&server.ws_url(""), None).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(
        server
            .metric("ratecast_ws_connections_refused_total{reason=\"rate_limited\"}")
            .await,
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn origin_allow_list() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(
        &upstream,
        &["--allowed-origin", "https://rates.example.com"],
    )
    .await;
    let (status, body) = refused(&server.ws_url(""), Some("https://evil.example.net")).await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "forbidden");
    let mut ok = server.ws_url("").into_client_request()?;
    ok.headers_mut()
        .insert("origin", "https://rates.example.com".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(ok).await?;
    assert_eq!(next_json(&mut ws).await?["type"], "snapshot");
    // CLI clients send no Origin and are allowed.
    assert_eq!(
        next_json(&mut connect(&server, "").await).await?["type"],
        "snapshot"
    );
    Ok(())
}

#[tokio::test]
async fn heartbeats_carry_the_seq_and_status_frames_follow_the_upstream() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &["--heartbeat-interval", "100ms"]).await;
    let mut ws = connect(&server, "").await;
    let seq = next_json(&mut ws).await?["seq"].as_u64().unwrap();
    let heartbeat = loop {
        let frame = next_json(&mut ws).await?;
        if frame["type"] == "heartbeat" {
            break frame;
        }
    };
    assert_eq!(heartbeat["seq"], seq);

    upstream.set(Reply::status(503));
    let status = loop {
        let frame = next_json(&mut ws).await?;
        if frame["type"] == "status" && frame["upstream"]["status"] == "down" {
            break frame;
        }
    };
    assert_eq!(status["stale"], true);
    assert_eq!(status["upstream"]["last_error"], "http_5xx");
    upstream.set(Reply::Json(fixture()));
    loop {
        let frame = next_json(&mut ws).await?;
        if frame["type"] == "status" && frame["upstream"]["status"] == "ok" {
            assert_eq!(frame["stale"], false);
            break;
        }
    }
    Ok(())
}

#[tokio::test]
async fn unresponsive_peers_are_dropped_live_ones_kept() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let extra = ["--heartbeat-interval", "100ms", "--idle-timeout", "400ms"];
    let server = TestServer::start_ready(&upstream, &extra).await;
    let mut silent = connect(&server, "").await; // never reads, so never answers pings
    let mut live = connect(&server, "").await;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        next_json(&mut live).await?; // reading answers pings automatically
    }
    wait_until(|| async { server.metric("ratecast_ws_connections").await == 1.0 }).await;
    // The silent one finds its stream ended once it reads: the frames sent before it went
    // silent, then the end, without a close frame (it was unresponsive: no close handshake).
    let mut messages = Vec::new();
    while let Some(Ok(message)) = silent.next().await {
        messages.push(message);
    }
    let Some(Message::Text(first)) = messages.first() else {
        panic!("the snapshot came first: {messages:?}");
    };
    assert_eq!(head(first.as_str()).0, "snapshot");
    assert!(
        !messages.iter().any(|m| matches!(m, Message::Close(_))),
        "no close frame for an unresponsive peer: {messages:?}"
    );
    send_text(&mut live, r#"{"op":"ping"}"#).await?;
    next_of(&mut live, "pong").await?;
    Ok(())
}

/// Pulls `seq` and `ts` from the head of a frame without parsing the whole body.
fn head(text: &str) -> (String, u64, u64) {
    let v: Value = serde_json::from_str(text).unwrap();
    (
        v["type"].as_str().unwrap_or_default().to_owned(),
        v["seq"].as_u64().unwrap_or(0),
        v["ts"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn lagging_subscriber_is_resynced_with_a_snapshot() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Changing(common::payload_with_units(300))).await;
    let extra = [
        "--poll-interval",
        "20ms",
        "--broadcast-buffer",
        "4",
        "--socket-send-buffer",
        "16384",
        "--write-timeout",
        "30s",
    ];
    let server = TestServer::start_ready(&upstream, &extra).await;
    let mut ws = connect_small_buffer(&server, "").await;
    let (kind, mut last, _) = head(next_json(&mut ws).await?.to_string().as_str());
    assert_eq!(kind, "snapshot");
    // Stop reading while far more than 4 deltas are published.
    let seq_then = server.seq().await;
    wait_until(|| async { server.seq().await > seq_then + 40 }).await;
    let mut resynced = false;
    for _ in 0..200 {
        let frame = next_json(&mut ws).await?;
        match frame["type"].as_str() {
            Some("snapshot") => {
                resynced = true;
                last = frame["seq"].as_u64().unwrap();
            }
            Some("delta") => {
                let seq = frame["seq"].as_u64().unwrap();
                assert_eq!(
                    seq,
                    last + 1,
                    "deltas contiguous between snapshots, never a silent skip"
                );
                last = seq;
                if resynced {
                    break;
                }
            }
            _ => {}
        }
    }
    assert!(resynced, "a lagging subscriber gets a fresh snapshot");
    assert!(server.metric("ratecast_ws_resyncs_total").await >= 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_while_100_others_keep_receiving() -> Result<()> {
    /// Every poll changes the rates (`Reply::Changing`): one delta per poll.
    const POLL: Duration = Duration::from_millis(50);
    /// Readers alone, then as long beside the stalled client: its buffers fill within a
    /// second, then its 3 s write timeout runs.
    const QUIET: Duration = Duration::from_secs(4);
    const STALLED: Duration = QUIET;
    // 160 deltas over both windows on a quiet machine. Polls stretch on a loaded one (each is a
    // request, a diff and a fan-out to 101 sockets, in a debug build beside other builds; a
    // third seen at load 9): the server must publish at least a quarter, and every reader must
    // receive every one it published.
    let expected = ((QUIET + STALLED).as_millis() / POLL.as_millis()) as u64;
    let floor = expected / 4;
    let upstream = FakeUpstream::start(Reply::Changing(common::payload_with_units(100))).await;
    let extra = [
        "--poll-interval",
        "50ms",
        "--socket-send-buffer",
        "16384",
        "--write-timeout",
        "3s",
    ];
    let server = TestServer::start_ready(&upstream, &extra).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut lasts = Vec::new();
    for _ in 0..100 {
        let mut ws = connect(&server, "").await;
        let (stop, last) = (stop.clone(), Arc::new(AtomicU64::new(0)));
        lasts.push(last.clone());
        readers.push(tokio::spawn(async move {
            let (mut deltas, mut snapshots) = (0u64, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(Ok(Message::Text(text)))) =
                    tokio::time::timeout(Duration::from_millis(100), ws.next()).await
                else {
                    continue;
                };
                let (kind, seq, _ts) = head(text.as_str());
                match kind.as_str() {
                    "snapshot" => snapshots += 1,
                    "delta" => {
                        assert_eq!(seq, last.load(Ordering::Relaxed) + 1, "contiguous");
                        deltas += 1;
                    }
                    _ => continue,
                }
                last.store(seq, Ordering::Relaxed);
            }
            (deltas, snapshots)
        }));
    }
    // How fast they received is a benchmark's business (BENCHMARKS.md), not a test's. Here:
    // how far the readers are apart in deltas (the furthest ahead against the furthest
    // behind), beside the stalled client against without it. Readers held up behind the
    // stalled client stay behind the others for as long as it is held.
    wait_until(|| async { lasts.iter().all(|l| l.load(Ordering::Relaxed) > 0) }).await;
    let start_seq = server.seq().await;
    let (quiet, quiet_max) = spread(&lasts, QUIET).await;
    let slow = connect_small_buffer(&server, "").await;
    let (stalled, stalled_max) = spread(&lasts, STALLED).await;
    let end_seq = server.seq().await;
    let published = end_seq - start_seq;
    assert!(
        published >= floor,
        "{published} deltas published where {:?} of {POLL:?} polls make {expected} (at least \
         {floor})",
        QUIET + STALLED
    );
    // Every reader gets every one of them (the last may still be on its way).
    wait_until(|| async { lasts.iter().all(|l| l.load(Ordering::Relaxed) >= end_seq) }).await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        let (deltas, snapshots) = reader.await?;
        assert_eq!(
            snapshots, 1,
            "one snapshot on connect, never a resync mid-stream ({deltas} deltas)"
        );
        assert!(deltas >= published, "{deltas} deltas of {published}");
    }
    eprintln!(
        "{published} deltas published; readers apart by {quiet} deltas (p90; {quiet_max} at \
         most) alone, {stalled} ({stalled_max}) beside the stalled client"
    );
    // Against the same-length window before it: one delta more at the 90th percentile (a
    // steady hold-up), two more at the worst moment (a burst of them).
    assert!(
        stalled <= quiet + 1 && stalled_max <= quiet_max + 2,
        "the stalled client held readers up: {stalled} deltas apart (p90; {stalled_max} at \
         most) beside it, {quiet} ({quiet_max}) before"
    );
    wait_until(|| async {
        server
            .metric("ratecast_ws_slow_consumer_closes_total")
            .await
            >= 1.0
    })
    .await;
    assert_eq!(
        server
            .metric("ratecast_ws_slow_consumer_closes_total")
            .await,
        1.0,
        "the stalled client, and no reader, was closed as a slow consumer"
    );
    // The stalled client still holds its socket, yet its connection slot is released.
    wait_until(|| async { server.metric("ratecast_ws_connections").await == 0.0 }).await;
    drop(slow);
    Ok(())
}

/// How far apart the readers' last `seq`s were (the furthest ahead against the furthest
/// behind), sampled every 5 ms for `window`: the 90th percentile of the samples (a reader the
/// scheduler left out for a moment is no hold-up) and the most.
async fn spread(lasts: &[Arc<AtomicU64>], window: Duration) -> (u64, u64) {
    let until = tokio::time::Instant::now() + window;
    let mut samples = Vec::new();
    while tokio::time::Instant::now() < until {
        let seqs = lasts.iter().map(|l| l.load(Ordering::Relaxed));
        let (low, high) = seqs.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
        samples.push(high - low);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    samples.sort_unstable();
    (samples[samples.len() * 9 / 10], samples[samples.len() - 1])
}

#[tokio::test]
async fn a_plain_websocket_client_reads_json_text_frames() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let mut tcp = TcpStream::connect(server.addr).await?;
    let handshake = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(handshake.as_bytes()).await?;
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed during handshake");
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let response = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    assert!(response.starts_with("http/1.1 101"), "{response}");
    assert!(response.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="));
    assert!(
        !response.contains("sec-websocket-protocol"),
        "no subprotocol needed"
    );
    let mut frame = buf[end..].to_vec();
    while frame.len() < 4 {
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await?;
        frame.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(frame[0], 0x81, "a final, unmasked text frame");
    let (len, start) = match frame[1] {
        126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
        127 => panic!("snapshot unexpectedly huge"),
        n => (n as usize, 2),
    };
    while frame.len() < start + len {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed mid-frame");
        frame.extend_from_slice(&chunk[..n]);
    }
    let snapshot: Value = serde_json::from_slice(&frame[start..start + len])?;
    assert_eq!(snapshot["type"], "snapshot");
    Ok(())
}

#[tokio::test]
async fn shutdown_sends_going_away_to_every_client() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let mut server = TestServer::start_ready(&upstream, &[]).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut ws = connect(&server, "").await;
        next_json(&mut ws).await?;
        clients.push(ws);
    }
    let stopped = server.begin_stop();
    for ws in &mut clients {
        assert_eq!(close_code(ws).await, Some(1001));
    }
    stopped.await?;
    Ok(())
}

/// `ratecast serve --demo` at a 100 ms tick with `extra`, as a process of its own (for signals),
/// on a free loopback port.
fn demo_process(extra: &[&str]) -> Result<(u16, std::process::Child)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ratecast"))
        .args(["serve", "--demo", "--poll-interval", "100ms"])
        .args(extra)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .envs(common::coverage_env())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok((port, child))
}

#[test]
fn sigterm_closes_every_websocket_with_1001_and_exits_zero() -> Result<()> {
    let (port, mut child) = demo_process(&["--shutdown-grace", "5s"])?;
    let runtime = tokio::runtime::Runtime::new()?;
    let codes = runtime.block_on(async {
        let url = format!("ws://127.0.0.1:{port}/ws");
        wait_until(|| async { common::ws_connect(&url).await.is_ok() }).await;
        let mut clients = Vec::new();
        for _ in 0..5 {
            let mut ws = common::ws_connect(&url).await?;
            next_of(&mut ws, "snapshot").await?;
            clients.push(ws);
        }
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(killed.success());
        let mut codes = Vec::new();
        for ws in &mut clients {
            codes.push(close_code(ws).await);
        }
        Ok::<_, anyhow::Error>(codes)
    })?;
    assert!(codes.iter().all(|c| *c == Some(1001)), "{codes:?}");
    assert_eq!(child.wait()?.code(), Some(0));
    Ok(())
}

/// A client that neither reads nor answers the 1001 does not hold the shutdown up: the server
/// lets go of it shortly after the close (no reader task waits on a timer of its own for this)
/// and exits 0 long before its grace runs out.
#[test]
fn sigterm_does_not_wait_for_a_client_that_never_answers_the_close() -> Result<()> {
    let (port, mut child) = demo_process(&["--shutdown-grace", "60s", "--idle-timeout", "60s"])?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (mut mute, early) = runtime.block_on(async {
        let addr = format!("127.0.0.1:{port}").parse()?;
        wait_until(|| async { common::raw_ws(addr, "", None).await.is_ok() }).await;
        common::raw_ws(addr, "", None).await
    })?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    anyhow::ensure!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 20 s after SIGTERM: waiting for a client that never closes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let (_, close) = runtime.block_on(common::read_raw_until_end(
        &mut mute,
        early,
        Duration::from_secs(5),
    ))?;
    let close = close.expect("the 1001 close frame, then the end");
    assert_eq!(common::close_payload_code(&close), Some(1001));
    Ok(())
}

/// A filtered replay ends with a frame that carries the checksum of the connection's codes, even
/// when the newest deltas touch none of them (and are not sent).
#[tokio::test]
async fn a_filtered_replay_checks_its_table_on_the_last_frame_it_sends() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let (seq, epoch) = (server.seq().await, server.epoch().await);
    for (i, (code, value)) in [("usd", 1.0), ("usd", 2.0), ("gbp", 3.0)]
        .into_iter()
        .enumerate()
    {
        upstream.set_value(code, value);
        wait_until(|| async { server.seq().await == seq + 1 + i as u64 }).await;
    }
    let mut ws = connect(&server, &format!("?since={seq}&epoch={epoch}&symbols=usd")).await;
    let first = next_json(&mut ws).await?;
    let last = next_json(&mut ws).await?;
    assert_eq!(
        (first["seq"].as_u64(), last["seq"].as_u64()),
        (Some(seq + 1), Some(seq + 2))
    );
    assert!(first.get("checksum").is_none(), "{first}");
    let rates: ratecast_protocol::Rates =
        serde_json::from_value(server.get_json("/api/v1/rates").await.1["rates"].clone())?;
    let usd = ["usd".to_string()].into();
    assert_eq!(
        last["checksum"].as_u64(),
        Some(u64::from(ratecast_protocol::checksum::filtered_checksum(
            &rates, &usd
        ))),
        "{last}"
    );
    Ok(())
}

#[tokio::test]
async fn since_and_symbols_together_replay_filtered_then_live_or_a_filtered_snapshot() -> Result<()>
{
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let seq = server.seq().await;
    upstream.set_value("usd", 1.0);
    wait_until(|| async { server.seq().await == seq + 1 }).await;
    upstream.set_value("gbp", 2.0); // not ours: not replayed
    wait_until(|| async { server.seq().await == seq + 2 }).await;
    upstream.set_value("usd", 3.0);
    wait_until(|| async { server.seq().await == seq + 3 }).await;

    // What the wall page does on reconnect: resume its filtered stream.
    let epoch = server.epoch().await;
    let mut ws = connect(&server, &format!("?since={seq}&epoch={epoch}&symbols=usd")).await;
    let first = next_json(&mut ws).await?;
    assert_eq!(first["type"], "delta", "{first}");
    assert_eq!(first["seq"], seq + 1);
    assert_eq!(first["changed"]["usd"]["value"], 1.0);
    let second = next_json(&mut ws).await?;
    assert_eq!(second["type"], "delta", "{second}");
    assert_eq!(second["seq"], seq + 3, "the gbp-only delta is filtered out");
    assert_eq!(
        second["changed"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["usd"]
    );
    // Then live, still filtered.
    upstream.set_value("eur", 4.0);
    upstream.set_value("usd", 5.0);
    let live = next_of(&mut ws, "delta").await?;
    assert!(live["seq"].as_u64().unwrap() > seq + 3);
    assert_eq!(
        live["changed"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["usd"]
    );

    // A `since` outside the ring: a snapshot of the filtered codes only.
    let mut ws = connect(&server, "?since=0&symbols=usd,eur").await;
    let snapshot = next_json(&mut ws).await?;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(
        snapshot["rates"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["eur", "usd"]
    );
    Ok(())
}

/// The shard's own lag path: with a one-event broadcast buffer, a recovery poll publishes a
/// status and a delta back to back (no await between them), so on this single-threaded test
/// runtime the shard is always overrun (`Lagged`) and must resync its subscribers.
#[tokio::test]
async fn a_shard_overrun_by_the_broadcast_resyncs_its_subscribers() -> Result<()> {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(
        &upstream,
        &["--broadcast-buffer", "1", "--max-backoff", "20ms"],
    )
    .await;
    let mut ws = connect(&server, "").await;
    let mut last = next_of(&mut ws, "snapshot").await?["seq"].as_u64().unwrap();
    let mut value = 1.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // The first poll (status, then the first delta) already overran the shards, before we
    // connected: count from here.
    let lagged = server.metric("ratecast_ws_shard_lagged_total").await;
    let resyncs = server.metric("ratecast_ws_resyncs_total").await;
    while server.metric("ratecast_ws_shard_lagged_total").await <= lagged {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shard never lagged"
        );
        upstream.set(Reply::status(503));
        wait_until(|| async { server.metric("ratecast_upstream_up").await == 0.0 }).await;
        let mut recovered = fixture();
        value += 1.0;
        recovered["rates"]["usd"]["value"] = value.into();
        let seq = server.seq().await;
        upstream.set(Reply::Json(recovered));
        wait_until(|| async { server.seq().await > seq }).await;
    }
    // Every shard lags on the same events; the subscriber's shard resyncs it.
    wait_until(|| async { server.metric("ratecast_ws_resyncs_total").await > resyncs }).await;
    // The client sees a fresh snapshot, and deltas contiguous between snapshots.
    let mut resynced = false;
    while !resynced {
        let frame = next_json(&mut ws).await?;
        match frame["type"].as_str() {
            Some("snapshot") => {
                resynced = true;
                last = frame["seq"].as_u64().unwrap();
            }
            Some("delta") => {
                let seq = frame["seq"].as_u64().unwrap();
                assert_eq!(seq, last + 1, "contiguous between snapshots");
                last = seq;
            }
            _ => {}
        }
    }
    Ok(())
}

/// SIGTERM: while the server drains, the listener still answers — `/readyz` 503 and `/ws` 503
/// (what docs/protocol.md promises probes and clients), not a refused connection — every
/// stream gets 1001, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_sigterm_drain_probes_get_503_not_refused() -> Result<()> {
    let server = common::ServerProcess::start(
        env!("CARGO_BIN_EXE_ratecast"),
        &["--poll-interval", "100ms", "--shutdown-grace", "10s"],
    )
    .await?;
    let mut ws = common::ws_connect(&format!("ws://{}/ws", server.addr)).await?;
    next_of(&mut ws, "snapshot").await?;
    // A second stream that never reads: it holds the drain open until its reader gives up.
    let (_stalled, _) = common::raw_ws(server.addr, "", None).await?;
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) }, 0);
    wait_until(|| async {
        common::http_get_close(server.addr, "/readyz")
            .await
            .is_ok_and(|(status, _)| status == 503)
    })
    .await;
    let (status, body) = common::http_get_close(server.addr, "/readyz").await?;
    assert_eq!(status, 503);
    assert!(body.contains("not_ready"), "{body}");
    let (status, body) = refused(&format!("ws://{}/ws", server.addr), None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "unavailable");
    let (status, _) = common::http_get_close(server.addr, "/healthz").await?;
    assert_eq!(status, 200, "the process is alive while it drains");
    assert_eq!(close_code(&mut ws).await, Some(1001));
    let mut server = server;
    let code = tokio::task::spawn_blocking(move || server.child.wait()).await??;
    assert_eq!(code.code(), Some(0));
    Ok(())
}
