//! `ratecast loadtest` as a newcomer and a rolling restart meet it: refused connects say why and
//! which `serve` flags lift the cap; a loopback run fits a default server's per-IP caps; and
//! `--reconnect` resumes with `since=` and `epoch=` and counts what a reconnect missed, which a
//! negative control shows it can count.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, loadtest};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A demo server with `serve`'s default connection limits (the test config lifts them).
async fn default_limits_server() -> TestServer {
    let server = TestServer::start(common::config(
        "http://127.0.0.1:9",
        &[
            "--demo",
            "--connection-rate-per-second",
            "20",
            "--max-connections-per-ip",
            "200",
        ],
    ))
    .await;
    server.wait_ready().await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_connects_name_the_limit_and_the_flag_that_lifts_it() {
    let server = TestServer::start(common::config(
        "http://127.0.0.1:9",
        &["--demo", "--max-connections-per-ip", "5"],
    ))
    .await;
    server.wait_ready().await;
    let url = server.ws_url("");
    let args = ["--url", &url, "--clients", "20", "--source-addrs", "1"];
    let (_, stdout, stderr) =
        loadtest(&[&args[..], &["--duration", "1s", "--json"]].concat()).await;
    let summary: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert_eq!(summary["connected"], 5, "{summary}");
    assert_eq!(
        summary["connect_failures"]["http_429_too_many_connections"], 15,
        "{summary}"
    );
    let (_, table, _) = loadtest(&[&args[..], &["--duration", "1s"]].concat()).await;
    assert!(table.contains("--max-connections-per-ip"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_run_spreads_under_a_default_servers_per_ip_caps() {
    let server = default_limits_server().await;
    let url = server.ws_url("");
    let (code, stdout, stderr) = loadtest(&[
        "--url",
        &url,
        "--clients",
        "500",
        "--duration",
        "1s",
        "--json",
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).expect("JSON summary");
    assert_eq!(summary["connected"], 500, "{summary}");
    assert_eq!(summary["source_addrs"], 5, "{summary}");
}

/// A TCP relay that can cut every connection it carries, as a load balancer restarting does.
/// With several upstreams it takes them in turn, one per connection.
struct Relay {
    addr: std::net::SocketAddr,
    cut: Arc<Notify>,
}

impl Relay {
    async fn start(upstreams: Vec<std::net::SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(Notify::new());
        let cutter = cut.clone();
        tokio::spawn(async move {
            for upstream in upstreams.into_iter().cycle() {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let cut = cutter.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }
}

impl Relay {
    /// `loadtest --reconnect` through the relay with `clients` subscribers for 4 s (and `extra`
    /// arguments), every connection cut twice while deltas keep coming; returns its summary.
    async fn cut_twice_under_loadtest(
        &self,
        clients: &'static str,
        extra: &'static [&'static str],
    ) -> Value {
        let url = format!("ws://{}/ws", self.addr);
        let run = tokio::spawn(async move {
            let args = [
                "--clients",
                clients,
                "--duration",
                "4s",
                "--reconnect",
                "--json",
            ];
            loadtest(&[&["--url", url.as_str()][..], &args, extra].concat()).await
        });
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            self.cut.notify_waiters();
        }
        let (code, stdout, stderr) = run.await.expect("joins");
        assert_eq!(code, Some(0), "{stderr}");
        serde_json::from_str(stdout.trim()).expect("JSON summary")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_resumes_with_since_and_misses_nothing() {
    let upstream = common::FakeUpstream::start(common::Reply::Changing(common::fixture())).await;
    let server = TestServer::start_ready(&upstream, &["--poll-interval", "100ms"]).await;
    let relay = Relay::start(vec![server.addr]).await;
    let summary = relay.cut_twice_under_loadtest("20", &[]).await;
    assert!(summary["reconnects"].as_u64() >= Some(20), "{summary}");
    assert_eq!(
        summary["reconnect_snapshots"], 0,
        "every resume replayed: {summary}"
    );
    assert_eq!(summary["missed_on_reconnect"], 0, "{summary}");
    assert_eq!(summary["missing_seqs"], 0, "{summary}");
    assert_eq!(summary["resyncs"], 0, "{summary}");
    assert_eq!(summary["epoch_changes"], 0, "{summary}");
    assert_eq!(summary["checksum_mismatches"], 0, "{summary}");
    assert_eq!(
        summary["checksums_verified"],
        summary["snapshots"].as_u64().unwrap() + summary["deltas"].as_u64().unwrap(),
        "every frame verified: {summary}"
    );
    assert_eq!(summary["verified"], true, "{summary}");
    assert!(summary["deltas"].as_u64() > Some(20), "{summary}");
    let (min, max) = (&summary["final_seq_min"], &summary["final_seq_max"]);
    assert!(min.is_u64() && max.is_u64(), "{summary}");
}

/// The negative control of the test above: a relay that sends each connection to the other of
/// two standalone servers, so that every resume presents a `since=` (and an epoch) of a
/// foreign stream. Each gets a snapshot, and the counters must say so; a counter that stayed
/// at 0 here could not be trusted at 0 above. (Before the epoch was counted, `epoch_changes`
/// was absent, and `missed_on_reconnect` read 0 whenever the other server's seq was lower.)
#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_since_gets_a_snapshot_and_is_counted() {
    let upstream = common::FakeUpstream::start(common::Reply::Changing(common::fixture())).await;
    let one = TestServer::start_ready(&upstream, &["--poll-interval", "100ms"]).await;
    let other = TestServer::start_ready(&upstream, &["--poll-interval", "100ms"]).await;
    let relay = Relay::start(vec![one.addr, other.addr]).await;
    // One subscriber, so that every reconnect lands on the other server.
    let summary = relay.cut_twice_under_loadtest("1", &[]).await;
    assert_eq!(summary["reconnects"], 2, "{summary}");
    assert_eq!(
        summary["reconnect_snapshots"], summary["reconnects"],
        "no resume replayed: {summary}"
    );
    assert_eq!(
        summary["epoch_changes"], summary["reconnects"],
        "every resume changed epoch: {summary}"
    );
    // Each server's own frames still fold into its own table.
    assert_eq!(summary["checksum_mismatches"], 0, "{summary}");
}

/// The same on filtered connections: their snapshots and live deltas carry the checksum of the
/// chosen units, and a replay only on its last frame; every one that does must verify.
#[tokio::test(flavor = "multi_thread")]
async fn filtered_resumes_verify_their_checksums() {
    let upstream = common::FakeUpstream::start(common::Reply::Changing(common::fixture())).await;
    let server = TestServer::start_ready(&upstream, &["--poll-interval", "100ms"]).await;
    let relay = Relay::start(vec![server.addr]).await;
    let summary = relay
        .cut_twice_under_loadtest("10", &["--symbols", "usd,eur,xau"])
        .await;
    assert!(summary["reconnects"].as_u64() >= Some(10), "{summary}");
    assert_eq!(summary["reconnect_snapshots"], 0, "{summary}");
    assert_eq!(summary["checksum_mismatches"], 0, "{summary}");
    // Snapshots, live deltas and the last frame of each replay.
    assert!(
        summary["checksums_verified"].as_u64() > Some(30),
        "{summary}"
    );
    assert_eq!(summary["epoch_changes"], 0, "{summary}");
    assert!(summary["deltas"].as_u64() > Some(10), "{summary}");
}
