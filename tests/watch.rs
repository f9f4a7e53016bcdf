//! `ratecast watch --json` (the binary) against a real server in demo mode.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestServer;
use futures_util::SinkExt;
use ratecast_protocol::Rate;
use ratecast_protocol::checksum::table_checksum;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ratecast");

fn demo() -> ratecast_server::Config {
    common::config(
        "http://127.0.0.1:9",
        &["--demo", "--max-connections-per-ip", "10000"],
    )
}

fn watch(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("watch")
        .args(args)
        .env_clear()
        .envs(common::coverage_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs to completion within 20 s; returns (exit code, stdout lines as JSON, stderr).
async fn run(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out = tokio::time::timeout(Duration::from_secs(20), watch(args).output())
        .await
        .expect("watch finished within 20 s")
        .expect("watch runs");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line: {e}: {l}"))
        })
        .collect();
    (
        out.status.code(),
        frames,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Deltas must continue the snapshot's seq one by one.
fn assert_contiguous(frames: &[Value]) {
    let mut seq = frames[0]["seq"].as_u64().expect("snapshot seq");
    for f in frames.iter().skip(1).filter(|f| f["type"] == "delta") {
        seq += 1;
        assert_eq!(f["seq"].as_u64(), Some(seq), "{f}");
        assert!(
            f["changed"].as_object().is_some_and(|c| !c.is_empty()),
            "{f}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_prints_the_snapshot_then_contiguous_deltas_and_stops_at_max_frames() {
    let server = TestServer::start(demo()).await;
    server.wait_ready().await;
    let url = server.ws_url("");
    let (code, frames, stderr) = run(&["--url", &url, "--json", "--max-frames", "6"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(frames.len(), 6);
    assert_eq!(frames[0]["type"], "snapshot");
    assert_eq!(frames[0]["source"], "demo");
    assert!(frames[0]["rates"]["usd"]["value"].as_f64().unwrap() > 0.0);
    assert!(
        frames[1..]
            .iter()
            .all(|f| f["type"] == "delta" || f["type"] == "heartbeat")
    );
    assert_contiguous(&frames);

    // The helm test's probe: one frame, the snapshot, exit 0.
    let (code, frames, _) = run(&["--url", &url, "--json", "--max-frames", "1"]).await;
    assert_eq!((code, frames.len()), (Some(0), 1));
    assert_eq!(frames[0]["type"], "snapshot");
}

#[tokio::test(flavor = "multi_thread")]
async fn symbols_filter_the_stream() {
    let server = TestServer::start(demo()).await;
    server.wait_ready().await;
    let url = server.ws_url("");
    let (code, frames, stderr) = run(&[
        "--url",
        &url,
        "--json",
        "--max-frames",
        "1",
        "--symbols",
        "usd,eth",
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let codes: Vec<&String> = frames[0]["rates"].as_object().unwrap().keys().collect();
    assert_eq!(codes, ["eth", "usd"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnects_after_a_server_restart_and_carries_on() {
    let mut config = demo();
    let first = TestServer::start(config.clone()).await;
    first.wait_ready().await;
    config.listen = first.addr;

    let mut child = watch(&["--url", &first.ws_url(""), "--json", "--max-frames", "30"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut frames = Vec::new();
    while frames.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        frames.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    first.stop().await;
    let second = TestServer::start(config).await;
    second.wait_ready().await;

    while let Some(line) = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        frames.push(serde_json::from_str(&line).unwrap());
    }
    let status = child.wait().await.unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(frames.len(), 30);
    assert!(stderr.contains("reconnecting"), "{stderr}");
    // The new process has other seqs, so the resume falls back to a fresh snapshot.
    let restart = frames
        .iter()
        .rposition(|f| f["type"] == "snapshot")
        .unwrap();
    assert!(restart >= 3, "no second snapshot after the restart");
    assert_contiguous(&frames[..restart]);
    assert_contiguous(&frames[restart..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_urls_and_refused_connections_give_one_clear_line() {
    let server = TestServer::start(demo()).await;
    server.wait_ready().await;
    let not_ws = server.url("/nope").replace("http://", "ws://");
    let cases = [
        ("not a url", "invalid --url"),
        ("http://127.0.0.1:9/ws", "expected ws://"),
        ("ws://127.0.0.1:9/ws", "refused"),
        (not_ws.as_str(), "HTTP 404"),
    ];
    for (url, expect) in cases {
        let (code, frames, stderr) = run(&["--url", url, "--json"]).await;
        assert_eq!(code, Some(1), "{url}: {stderr}");
        assert!(frames.is_empty());
        assert_eq!(stderr.lines().count(), 1, "{url}: {stderr}");
        assert!(
            stderr.starts_with("Error: ") && stderr.contains(expect),
            "{url}: {stderr}"
        );
    }
    // Without --json the table needs a terminal; a pipe is not one.
    let (code, _, stderr) = run(&["--url", &server.ws_url("")]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--json"), "{stderr}");
}

/// The table as a person sees it: `watch` in a real terminal (tmux), read off the screen.
fn screen_of(args: &[&str]) -> String {
    // One session per call: the tests that read screens run in parallel.
    static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let session = format!("ratecast-watch-{}-{n}", std::process::id());
    let mut command = vec![BIN.to_owned(), "watch".to_owned()];
    command.extend(args.iter().map(|a| a.to_string()));
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(args)
            .output()
            .expect("tmux runs (the test command installs it: bash .ci/test.sh rust)")
    };
    let command = command.join(" ");
    let mut new_session = vec!["new-session", "-d", "-s", &session, "-x", "120", "-y", "30"];
    // tmux starts the command in its server's environment, not this process's.
    let coverage: Vec<String> = common::coverage_env()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    for variable in &coverage {
        new_session.extend(["-e", variable]);
    }
    new_session.push(&command);
    let started = tmux(&new_session);
    assert!(started.status.success(), "{started:?}");
    let mut screen = String::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let captured = tmux(&["capture-pane", "-p", "-t", &session]);
        screen = String::from_utf8_lossy(&captured.stdout).into_owned();
        if screen.contains("live") && screen.contains("XAU") {
            break;
        }
    }
    // `q` quits (and lets a coverage run write the board's profile, which a kill would not).
    tmux(&["send-keys", "-t", &session, "q"]);
    let quit = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !tmux(&["has-session", "-t", &session]).status.success()
    });
    tmux(&["kill-session", "-t", &session]);
    assert!(quit, "q did not quit the board");
    screen
}

#[tokio::test(flavor = "multi_thread")]
async fn the_terminal_table_shows_prices_in_the_quote_with_units_never_cut() {
    let upstream = common::FakeUpstream::start(common::Reply::Json(common::fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let url = server.ws_url("");
    let symbols = "eth,eur,xau,bits";
    let screen = tokio::task::spawn_blocking(move || {
        screen_of(&["--url", &url, "--symbols", symbols, "--quote", "usd"])
    })
    .await
    .unwrap();
    let row = |code: &str| {
        screen
            .lines()
            .find(|l| l.starts_with(code))
            .unwrap_or_else(|| panic!("no {code} row:\n{screen}"))
            .to_owned()
    };
    assert!(screen.contains("price in USD"), "{screen}");
    // The recorded payload: 24,711.871 USD and 14.553 ETH per BTC.
    assert!(
        row("ETH").contains("Ether") && row("ETH").contains("$1,698.06"),
        "{screen}"
    );
    assert!(row("EUR").contains("$1.07165"), "{screen}");
    assert!(row("XAU").contains("$1,842.66"), "{screen}");
    assert!(row("BITS").contains("$0.0247119"), "{screen}");

    let url = server.ws_url("");
    let raw = tokio::task::spawn_blocking(move || {
        screen_of(&["--url", &url, "--symbols", symbols, "--per-btc"])
    })
    .await
    .unwrap();
    assert!(raw.contains("per 1 BTC"), "{raw}");
    let bits = raw
        .lines()
        .find(|l| l.starts_with("BITS"))
        .unwrap_or_default();
    assert!(bits.contains("1,000,000 μBTC"), "unit cut short: {raw}");
}

/// permessage-deflate (issue 23): watch offers it unless `--no-deflate`, and the table on the
/// terminal is the same either way (the status line above it holds the data age, which moves).
/// The server's count of compressed frames tells whether it was negotiated.
#[tokio::test(flavor = "multi_thread")]
async fn the_table_is_the_same_with_permessage_deflate() {
    let upstream = common::FakeUpstream::start(common::Reply::Json(common::fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let mut tables = Vec::new();
    for flag in [None, Some("--no-deflate")] {
        let compressed = || server.metric("ratecast_ws_deflate_compressions_total");
        let before = compressed().await;
        let url = server.ws_url("");
        let screen = tokio::task::spawn_blocking(move || {
            let mut args = vec!["--url", url.as_str()];
            args.extend(flag);
            screen_of(&args)
        })
        .await
        .unwrap();
        let after = compressed().await;
        assert_eq!(
            after > before,
            flag.is_none(),
            "{flag:?}: {before} → {after} frames compressed"
        );
        let table: Vec<String> = screen.lines().skip(1).map(str::to_owned).collect();
        assert!(
            table.iter().filter(|l| l.contains('$')).count() > 10,
            "{flag:?}:\n{screen}"
        );
        tables.push(table);
    }
    assert_eq!(tables[0], tables[1]);
}

/// A fake server that plays one script per connection and records the URI each one asked for:
/// connection 1 sends a snapshot and a delta and drops; connection 2 (a resume) sends a delta
/// whose checksum is wrong; connection 3 a fresh snapshot and a delta.
async fn scripted_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let uris = Arc::new(Mutex::new(Vec::new()));
    let seen = uris.clone();
    let table = |value: f64| {
        let rate = Rate::new("US Dollar", "$", value, "fiat");
        ratecast_protocol::Rates::from([("usd".to_string(), rate)])
    };
    let snapshot = move |seq: u64, value: f64| {
        json!({"type": "snapshot", "epoch": "e1", "seq": seq, "ts": 1, "source": "demo",
               "stale": false, "rates": table(value), "checksum": table_checksum(&table(value))})
    };
    let delta = move |seq: u64, value: f64, off: u32| {
        json!({"type": "delta", "epoch": "e1", "seq": seq, "ts": 1,
               "changed": {"usd": {"name": "US Dollar", "unit": "$", "value": value,
                                    "type": "fiat", "prev": 1.0}},
               "removed": [], "checksum": table_checksum(&table(value)) + off})
    };
    let scripts = [
        vec![snapshot(10, 1.0), delta(11, 2.0, 0)],
        vec![delta(12, 3.0, 1)],
        vec![snapshot(20, 5.0), delta(21, 6.0, 0)],
    ];
    tokio::spawn(async move {
        for (n, script) in scripts.into_iter().enumerate() {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            // The signature (and its large error type) is tungstenite's `Callback`.
            #[allow(clippy::result_large_err)]
            let record =
                move |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                      response| {
                    seen.lock().unwrap().push(request.uri().to_string());
                    Ok(response)
                };
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, record)
                .await
                .unwrap();
            for frame in &script {
                ws.send(frame.to_string().into()).await.unwrap();
            }
            // The first connection drops (a resume follows); the others wait for the client.
            if n == 0 {
                drop(ws);
            } else {
                tokio::spawn(futures_util::StreamExt::for_each(ws, |_| async {}));
            }
        }
    });
    (addr, uris)
}

/// The checksum's negative control for `watch`: after a drop it resumes with the seq and the
/// epoch it holds; a delta whose checksum disagrees with its table is not printed, and it
/// reconnects *without* `since` for a fresh snapshot, and says so. (Before the check, the bad
/// delta was printed and the table kept; before the epoch, the resume carried no `epoch=`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_checksum_mismatch_reconnects_without_since() {
    let (addr, uris) = scripted_server().await;
    let url = format!("ws://{addr}/ws");
    let (code, frames, stderr) = run(&["--url", &url, "--json", "--max-frames", "4"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        [10, 11, 20, 21],
        "the bad delta is not printed: {frames:?}"
    );
    assert_eq!(
        *uris.lock().unwrap(),
        ["/ws", "/ws?since=11&epoch=e1", "/ws"],
        "{stderr}"
    );
    assert!(
        stderr.contains("checksum mismatch at seq 12") && stderr.contains("1 so far"),
        "{stderr}"
    );
}
