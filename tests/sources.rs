//! Issue 22: two upstreams. CoinGecko fails (or answers 429) and the wall stays live on
//! Coinbase's values, each tagged with its source, one delta per switch, checksums that hold;
//! CoinGecko answers again and takes over at once; a number the two sources disagree on is
//! held, not shown. Black-box: the real server against a fake CoinGecko and a fake Coinbase fed
//! real-shaped payloads; cluster mode against a real Redis with a leader change mid-failover.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

mod common;

use common::redis::RedisServer;
use common::{
    FakeUpstream, Reply, TestServer, Ws, coinbase_fixture, config, fixture, next_json, wait_until,
    ws_connect,
};
use ratecast_client::table::{Check, DeltaBody, SnapshotBody, Table};

/// Both sources, quick to fail over, no cross-check unless a test asks.
fn two_sources(coinbase: &FakeUpstream) -> Vec<String> {
    [
        "--upstream",
        "coingecko,coinbase",
        "--coinbase-url",
        &coinbase.url(),
        "--failover-after",
        "200ms",
        "--crosscheck-interval",
        "0",
        "--stale-after",
        "2s",
    ]
    .map(String::from)
    .to_vec()
}

async fn start(upstream: &FakeUpstream, flags: &[String]) -> TestServer {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start(config(&upstream.url(), &flags)).await;
    server.wait_ready().await;
    server
}

/// A subscriber that folds every frame into its table and checks each checksum, and counts
/// the snapshots after its first (a switch of source must not resync anyone).
struct Subscriber {
    ws: Ws,
    table: Table,
    snapshots: usize,
    deltas: usize,
    stale_seen: bool,
}

impl Subscriber {
    async fn connect(server: &TestServer) -> Result<Self> {
        let mut subscriber = Self {
            ws: ws_connect(&server.ws_url("")).await?,
            table: Table::default(),
            snapshots: 0,
            deltas: 0,
            stale_seen: false,
        };
        subscriber.next().await?;
        ensure!(subscriber.snapshots == 1, "the first frame is a snapshot");
        Ok(subscriber)
    }

    /// Reads one frame and folds it.
    async fn next(&mut self) -> Result<Value> {
        let frame = next_json(&mut self.ws).await?;
        let check = match frame["type"].as_str() {
            Some("snapshot") => {
                self.snapshots += 1;
                self.stale_seen |= frame["stale"] == true;
                let body: SnapshotBody = serde_json::from_value(frame.clone())?;
                self.table.replace(body.rates, body.checksum)
            }
            Some("delta") => {
                self.deltas += 1;
                let body: DeltaBody = serde_json::from_value(frame.clone())?;
                self.table.fold(&body.into())
            }
            Some("status") => {
                self.stale_seen |= frame["stale"] == true;
                Check::Verified
            }
            _ => Check::Verified,
        };
        ensure!(
            check != Check::Unchecked,
            "a frame without a checksum: {frame}"
        );
        ensure!(matches!(check, Check::Verified), "{check:?} after {frame}");
        Ok(frame)
    }

    /// Reads until `done` holds for the folded table, within 20 s.
    async fn until(&mut self, what: &str, done: impl Fn(&Table) -> bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(&self.table) {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 20 s; table {:?}",
                self.table.rates.get("usd")
            );
            self.next().await?;
        }
        Ok(())
    }
}

fn source_of(table: &Table, code: &str) -> Option<String> {
    let rate = table.rates.get(code)?;
    Some(
        rate.source
            .map_or("primary".into(), |s| s.label().to_owned()),
    )
}

#[tokio::test]
async fn coingecko_down_the_wall_stays_live_via_coinbase_and_coingecko_takes_over_again()
-> Result<()> {
    let coingecko = FakeUpstream::start(Reply::Json(fixture())).await;
    let coinbase = FakeUpstream::coinbase(Reply::Json(coinbase_fixture())).await;
    let server = start(&coingecko, &two_sources(&coinbase)).await;
    let mut wall = Subscriber::connect(&server).await?;
    ensure!(
        wall.table
            .rates
            .values()
            .all(|r| r.source.is_none() && r.flag.is_none()),
        "while CoinGecko answers, nothing is tagged"
    );
    ensure!(
        coinbase.requests() == 0,
        "no cross-check asked for, no Coinbase request"
    );

    coingecko.set(Reply::status(503));
    wall.until("usd via Coinbase", |t| {
        source_of(t, "usd").as_deref() == Some("coinbase")
    })
    .await?;
    let (_, body) = server.get_json("/api/v1/rates").await;
    let failover = &body["upstream"]["failover"];
    ensure!(failover["via"] == "coinbase", "REST failover: {failover}");
    ensure!(
        failover["primary_error"] == "http_5xx",
        "REST failover: {failover}"
    );
    ensure!(failover["primary_failing_since"].is_string());
    ensure!(
        body["stale"] == false,
        "a source confirms the table: not stale"
    );
    let usd = &body["rates"]["usd"];
    ensure!(
        usd["source"] == "coinbase" && usd["name"] == "US Dollar",
        "usd: {usd}"
    );
    // CoinGecko's VEF is not Coinbase's VES: it keeps its last CoinGecko value, flagged.
    let vef = &body["rates"]["vef"];
    ensure!(
        vef["flag"] == "stale" && vef.get("source").is_none(),
        "vef: {vef}"
    );
    ensure!(
        vef["value"] == fixture()["rates"]["vef"]["value"],
        "vef keeps its last CoinGecko value: {vef}"
    );

    // Past --stale-after, still live: Coinbase confirms the table on every poll.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (_, body) = server.get_json("/api/v1/rates").await;
    ensure!(
        body["stale"] == false,
        "stale while Coinbase answers: {}",
        body["reason"]
    );
    ensure!(
        server
            .metric("ratecast_upstream_serving{source=\"coinbase\"}")
            .await
            == 1.0
    );
    ensure!(
        server
            .metric("ratecast_upstream_failovers_total{to=\"coinbase\"}")
            .await
            == 1.0
    );
    ensure!(
        server
            .metric("ratecast_units_flagged{flag=\"stale\"}")
            .await
            >= 1.0
    );

    coingecko.set(Reply::Json(fixture()));
    wall.until("CoinGecko serves again", |t| {
        t.rates
            .values()
            .all(|r| r.source.is_none() && r.flag.is_none())
    })
    .await?;
    let (_, body) = server.get_json("/api/v1/rates").await;
    ensure!(
        body["upstream"].get("failover").is_none(),
        "failover cleared: {}",
        body["upstream"]
    );
    ensure!(
        server
            .metric("ratecast_upstream_failovers_total{to=\"coingecko\"}")
            .await
            == 1.0
    );
    ensure!(
        wall.snapshots == 1,
        "a switch of source is deltas, never a resync"
    );
    ensure!(!wall.stale_seen, "the wall never showed stale data");
    Ok(())
}

#[tokio::test]
async fn a_429_from_coingecko_fails_over_at_once_and_its_retry_after_is_kept() -> Result<()> {
    let coingecko = FakeUpstream::start(Reply::Json(fixture())).await;
    let coinbase = FakeUpstream::coinbase(Reply::Json(coinbase_fixture())).await;
    let mut flags = two_sources(&coinbase);
    // Far longer than the test: only the 429 itself can make it fail over.
    flags.extend(["--failover-after".into(), "1h".into()]);
    let server = start(&coingecko, &flags).await;
    let mut wall = Subscriber::connect(&server).await?;
    coingecko.set(Reply::Raw {
        status: 429,
        body: br#"{"status":{"error_code":429}}"#.to_vec(),
        headers: vec![("retry-after", "3600".into())],
    });
    wall.until("usd via Coinbase", |t| {
        source_of(t, "usd").as_deref() == Some("coinbase")
    })
    .await?;
    let asked = coingecko.requests();
    let served = coinbase.requests();
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        coingecko.requests() == asked,
        "CoinGecko asked again before its Retry-After"
    );
    ensure!(
        coinbase.requests() > served + 3,
        "Coinbase is polled at the poll interval"
    );
    let (_, body) = server.get_json("/api/v1/rates").await;
    ensure!(body["upstream"]["failover"]["primary_error"] == "rate_limited");
    Ok(())
}

#[tokio::test]
async fn a_unit_the_sources_disagree_on_is_held_at_the_agreed_value_and_flagged() -> Result<()> {
    let coingecko = FakeUpstream::start(Reply::Json(fixture())).await;
    let coinbase = FakeUpstream::coinbase(Reply::Json(coinbase_fixture())).await;
    let mut flags = two_sources(&coinbase);
    flags.extend(["--crosscheck-interval".into(), "200ms".into()]);
    let server = start(&coingecko, &flags).await;
    let mut wall = Subscriber::connect(&server).await?;
    wait_until(|| async { coinbase.requests() >= 2 }).await;
    let usd = fixture()["rates"]["usd"]["value"].as_f64().context("usd")?;

    // A glitch upstream: USD off by 100x at CoinGecko only.
    coingecko.set_value("usd", usd * 100.0);
    wall.until("usd held", |t| {
        t.rates["usd"].flag.map(|f| f.as_str()) == Some("held")
    })
    .await?;
    ensure!(
        wall.table.rates["usd"].value == usd,
        "held at the agreed value, not the glitch"
    );
    ensure!(
        server
            .metric("ratecast_crosscheck_divergences_total{unit=\"usd\"}")
            .await
            >= 1.0
    );
    ensure!(
        server
            .metric("ratecast_crosscheck_divergence_ratio{unit=\"usd\"}")
            .await
            > 10.0
    );
    ensure!(server.metric("ratecast_units_flagged{flag=\"held\"}").await == 1.0);
    // 5 %: reported, but shown.
    let eur = fixture()["rates"]["eur"]["value"].as_f64().context("eur")?;
    coingecko.set_value("eur", eur * 1.05);
    wall.until("eur moved", |t| t.rates["eur"].value == eur * 1.05)
        .await?;
    ensure!(wall.table.rates["eur"].flag.is_none());
    ensure!(
        server
            .metric("ratecast_crosscheck_divergences_total{unit=\"eur\"}")
            .await
            >= 1.0
    );

    coingecko.set_value("usd", usd);
    wall.until("usd released", |t| t.rates["usd"].flag.is_none())
        .await?;
    ensure!(wall.snapshots == 1);
    Ok(())
}

#[tokio::test]
async fn cluster_a_new_leader_carries_on_the_failover() -> Result<()> {
    let redis = RedisServer::start();
    let coingecko = FakeUpstream::start(Reply::Json(fixture())).await;
    let coinbase = FakeUpstream::coinbase(Reply::Json(coinbase_fixture())).await;
    let mut flags = two_sources(&coinbase);
    flags.extend([
        "--redis-url".into(),
        redis.url(),
        "--poll-interval".into(),
        "100ms".into(),
        "--cluster-lease-ttl".into(),
        "2s".into(),
        // The new leader must carry on from the shared state, not wait out a failover delay
        // of its own.
        "--failover-after".into(),
        "5s".into(),
        // A takeover on a busy box must not read as stale data.
        "--stale-after".into(),
        "10s".into(),
    ]);
    let first = start(&coingecko, &flags).await;
    let second = start(&coingecko, &flags).await;
    let (leader, follower) = if first.metric("ratecast_cluster_leader").await == 1.0 {
        (first, second)
    } else {
        (second, first)
    };
    let mut wall = Subscriber::connect(&follower).await?;
    coingecko.set(Reply::status(503));
    wall.until("usd via Coinbase", |t| {
        source_of(t, "usd").as_deref() == Some("coinbase")
    })
    .await?;
    let (_, body) = follower.get_json("/api/v1/rates").await;
    ensure!(
        body["upstream"]["failover"]["via"] == "coinbase",
        "the follower says so too"
    );
    let since = body["upstream"]["failover"]["primary_failing_since"].clone();

    leader.stop().await;
    wait_until(|| async { follower.metric("ratecast_cluster_leader").await == 1.0 }).await;
    // The new leader keeps Coinbase's values flowing: a new value at Coinbase reaches the wall.
    coinbase.set_value("USD", 12_345.0);
    wall.until("the new leader publishes Coinbase's usd", |t| {
        t.rates["usd"].value == 12_345.0
    })
    .await?;
    ensure!(source_of(&wall.table, "usd").as_deref() == Some("coinbase"));
    let (_, body) = follower.get_json("/api/v1/rates").await;
    ensure!(
        body["stale"] == false,
        "not stale across the leader change: {}",
        body["reason"]
    );
    ensure!(
        body["upstream"]["failover"]["primary_failing_since"] == since,
        "the outage's start carries over: {}",
        body["upstream"]
    );
    ensure!(wall.snapshots == 1, "no resync across the leader change");
    ensure!(!wall.stale_seen);
    Ok(())
}
