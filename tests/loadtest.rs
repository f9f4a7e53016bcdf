//! `ratecast loadtest` (the binary): against the real server in demo mode, against a minimal
//! other implementation of the protocol, against a server whose checksums are wrong, and with
//! bad targets.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{TestServer, loadtest};
use futures_util::SinkExt;
use ratecast_protocol::checksum::table_checksum;
use ratecast_protocol::{Rate, Rates};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn summary(stdout: &str) -> Value {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints exactly one line: {stdout}");
    serde_json::from_str(lines[0]).expect("the summary is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn hundreds_of_subscribers_get_every_seq_with_ordered_percentiles() {
    let config = common::config(
        "http://127.0.0.1:9",
        &["--demo", "--max-connections-per-ip", "10000"],
    );
    let server = TestServer::start(config).await;
    server.wait_ready().await;
    let url = server.ws_url("");
    let (code, stdout, stderr) = loadtest(&[
        "--url",
        &url,
        "--clients",
        "300",
        "--ramp",
        "1000/s",
        "--duration",
        "3s",
        "--json",
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let s = summary(&stdout);
    assert_eq!(s["connected"], 300, "{s}");
    assert_eq!(s["connect_failures"], serde_json::json!({}), "{s}");
    assert_eq!(s["disconnects"], serde_json::json!({}), "{s}");
    assert_eq!(s["snapshots"], 300, "{s}");
    for zero in [
        "seq_gap_events",
        "missing_seqs",
        "out_of_order",
        "resyncs",
        "epoch_changes",
        "checksum_mismatches",
        "unparsable_frames",
    ] {
        assert_eq!(s[zero], 0, "{zero}: {s}");
    }
    // Every subscriber got deltas (how many per second is the fan-out bench's business).
    assert!(s["deltas"].as_u64().unwrap() >= 300, "{s}");
    for key in ["latency", "connect_time"] {
        let p = &s[key];
        let [p50, p90, p99, max] =
            ["p50_ms", "p90_ms", "p99_ms", "max_ms"].map(|k| p[k].as_f64().unwrap());
        assert!(
            p["count"].as_u64().unwrap() > 0 && 0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
            "{key}: {p}"
        );
    }
    assert_eq!(s["verified"], true, "{s}");
    assert!(s["generator_cpu_secs"].as_f64().unwrap() > 0.0);
    assert!(
        stderr.contains("ramped] open 300/300"),
        "progress line on stderr: {stderr}"
    );

    // Without --json: the table.
    let (code, table, _) = loadtest(&["--url", &url, "--clients", "5", "--duration", "1s"]).await;
    assert_eq!(code, Some(0));
    assert!(
        table.contains("delivery latency") && table.contains("5 connected of 5"),
        "{table}"
    );
}

/// A minimal other server: a snapshot, a delta, a frame type we do not know, a delta that skips
/// a seq, a late (out of order) one and a heartbeat, then quiet.
async fn other_implementation() -> std::net::SocketAddr {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    fake_server(vec![
        format!(r#"{{"type":"snapshot","seq":10,"ts":{ts},"rates":{{}},"vendor":{{"x":[1,2]}}}}"#),
        format!(r#"{{"type":"delta","seq":11,"ts":{ts},"changed":{{}},"removed":[]}}"#),
        format!(r#"{{"type":"news","ts":{ts},"text":"hello"}}"#),
        format!(r#"{{"type":"delta","seq":14,"ts":{ts},"changed":{{}},"removed":[]}}"#),
        format!(r#"{{"type":"delta","seq":12,"ts":{ts},"changed":{{}},"removed":[]}}"#),
        format!(r#"{{"type":"heartbeat","seq":14,"ts":{ts}}}"#),
        "not json".to_owned(),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn any_protocol_server_is_measured_and_gaps_are_counted() {
    let addr = other_implementation().await;
    let url = format!("ws://{addr}/ws");
    let (code, stdout, stderr) = loadtest(&[
        "--url",
        &url,
        "--clients",
        "2",
        "--duration",
        "1s",
        "--json",
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let s = summary(&stdout);
    let expect = [
        ("connected", 2),
        ("frames", 14),
        ("snapshots", 2),
        ("deltas", 6),
        ("heartbeats", 2),
        ("other_frames", 2),
        ("unparsable_frames", 2),
        ("seq_gap_events", 2),
        ("missing_seqs", 4),
        ("out_of_order", 2),
    ];
    for (key, n) in expect {
        assert_eq!(s[key], n, "{key}: {s}");
    }
}

#[tokio::test]
async fn bad_targets_give_one_clear_line() {
    let cases = [
        ("nonsense", "invalid --url"),
        ("http://127.0.0.1:9/ws", "must be ws"),
        (
            "ws://127.0.0.1:9/ws",
            "no subscriber could connect to ws://127.0.0.1:9/ws: refused ×3",
        ),
    ];
    for (url, expect) in cases {
        let (code, stdout, stderr) =
            loadtest(&["--url", url, "--clients", "3", "--duration", "1s", "--json"]).await;
        assert_eq!(code, Some(1), "{url}: {stderr}");
        assert!(stdout.is_empty(), "{url}: {stdout}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("Error: ") && last.contains(expect),
            "{url}: {stderr}"
        );
    }
}

/// Serves these frames, in order, to every connection, then stays quiet.
async fn fake_server(frames: Vec<String>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let frames = frames.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                for f in frames {
                    ws.send(Message::text(f)).await.unwrap();
                }
                futures_util::StreamExt::for_each(ws, |_| async {}).await;
            });
        }
    });
    addr
}

fn usd(value: f64) -> Rates {
    let rate = Rate::new("US Dollar", "$", value, "fiat");
    [("usd".to_string(), rate)].into()
}

/// The frames of a server whose table goes usd 1 → 2 → 3 (seqs 10..12), then resyncs at 15.
/// `wrong` is the seq whose checksum is off by one.
fn frames_with_wrong_checksum_at(wrong: u64) -> Vec<String> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let sum = |seq: u64, rates: &Rates| table_checksum(rates) + u32::from(seq == wrong);
    let snapshot = |seq: u64, value: f64| {
        json!({"type": "snapshot", "epoch": "e1", "seq": seq, "ts": ts, "source": "demo",
               "stale": false, "rates": usd(value), "checksum": sum(seq, &usd(value))})
        .to_string()
    };
    let delta = |seq: u64, value: f64| {
        json!({"type": "delta", "epoch": "e1", "seq": seq, "ts": ts,
               "changed": {"usd": {"name": "US Dollar", "unit": "$", "value": value,
                                    "type": "fiat", "prev": value - 1.0}},
               "removed": [], "checksum": sum(seq, &usd(value))})
        .to_string()
    };
    vec![
        snapshot(10, 1.0),
        delta(11, 2.0),
        delta(12, 3.0),
        snapshot(15, 6.0),
        delta(16, 7.0),
    ]
}

/// The checksum's negative control: a delta whose checksum disagrees is counted once (the table
/// is not checked again until the next snapshot), a snapshot that jumps over seqs on a live
/// connection counts them missed, and every other frame verifies. Before this count, the
/// summary had no `checksum_mismatches` and the resync's 3 skipped seqs were not missing.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_checksum_and_a_resync_jump_are_counted() {
    let addr = fake_server(frames_with_wrong_checksum_at(11)).await;
    let url = format!("ws://{addr}/ws");
    let args = [
        "--url",
        &url,
        "--clients",
        "2",
        "--duration",
        "1s",
        "--json",
    ];
    let (code, stdout, stderr) = loadtest(&args).await;
    assert_eq!(code, Some(0), "{stderr}");
    let s = summary(&stdout);
    let expect = [
        ("snapshots", 4),
        ("deltas", 6),
        ("checksum_mismatches", 2),
        // Snapshot 10, snapshot 15 and delta 16; delta 12 follows a mismatch, unchecked.
        ("checksums_verified", 6),
        ("resyncs", 2),
        ("missing_seqs", 6),
        ("seq_gap_events", 0),
        ("epoch_changes", 0),
    ];
    for (key, n) in expect {
        assert_eq!(s[key], n, "{key}: {s}");
    }
    let (_, table, _) = loadtest(&args[..args.len() - 1]).await;
    assert!(
        table.contains("checksums          6 verified, 2 mismatches")
            && table.contains(", 6 missing,"),
        "{table}"
    );
    // A wrong checksum on a snapshot is caught too.
    let addr = fake_server(frames_with_wrong_checksum_at(15)).await;
    let url = format!("ws://{addr}/ws");
    let (_, stdout, stderr) = loadtest(&[&args[..1], &[url.as_str()], &args[2..]].concat()).await;
    assert_eq!(summary(&stdout)["checksum_mismatches"], 2, "{stderr}");
    // With --no-verify nothing is checked, and the summary says so.
    let (_, stdout, _) = loadtest(&[&args[..], &["--no-verify"]].concat()).await;
    let s = summary(&stdout);
    assert_eq!(
        (&s["checksum_mismatches"], &s["verified"]),
        (&json!(0), &json!(false)),
        "{s}"
    );
}

/// `--no-deflate` (issue 23): by default the generator offers permessage-deflate and the server
/// compresses its frames for it; with the flag it reads raw frames. Each run has a fresh server,
/// whose own counters tell which: frames compressed, and wire bytes per frame against the mean
/// size of the frames the generator read (after inflating). Either way the feed is whole.
#[tokio::test(flavor = "multi_thread")]
async fn deflate_is_offered_unless_no_deflate() {
    for (flag, deflated) in [(None, true), (Some("--no-deflate"), false)] {
        let server = TestServer::start(common::config("http://127.0.0.1:9", &["--demo"])).await;
        server.wait_ready().await;
        let url = server.ws_url("");
        let mut args = vec![
            "--url",
            &url,
            "--clients",
            "20",
            "--duration",
            "2s",
            "--json",
        ];
        args.extend(flag);
        let (code, stdout, stderr) = loadtest(&args).await;
        assert_eq!(code, Some(0), "{flag:?}: {stderr}");
        let s = summary(&stdout);
        assert_eq!(s["connected"], 20, "{flag:?}: {s}");
        assert_eq!(s["disconnects"], json!({}), "{flag:?}: {s}");
        for zero in ["unparsable_frames", "checksum_mismatches", "missing_seqs"] {
            assert_eq!(s[zero], 0, "{flag:?} {zero}: {s}");
        }
        assert!(
            s["checksums_verified"].as_u64().unwrap() > 20,
            "{flag:?}: {s}"
        );

        let compressions = server
            .metric("ratecast_ws_deflate_compressions_total")
            .await;
        let wire = server.metric("ratecast_ws_bytes_sent_total").await
            / server.metric("ratecast_ws_frames_sent_total").await;
        let read = s["mean_frame_bytes"].as_f64().unwrap();
        eprintln!(
            "{flag:?}: {compressions} compressions, {wire:.0} B/frame on the wire, {read:.0} B/frame read"
        );
        if deflated {
            assert!(compressions > 0.0 && wire < 0.6 * read, "{flag:?}: {s}");
        } else {
            assert!(compressions == 0.0 && wire > 0.9 * read, "{flag:?}: {s}");
        }
        server.stop().await;
    }
}
