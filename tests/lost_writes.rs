//! Cluster mode when Redis fails the way managed Redis does, checked from the clients' side
//! (issue 20, point 6): a restart from an RDB taken a few deltas ago, a replica that missed the
//! last writes promoted behind the moved endpoint, the old primary demoted under open
//! connections (READONLY), and a black-holed primary that is healed.
//!
//! In each, folding clients on both replicas and a REST sampler (`common::observe`) check that
//! no `(epoch, seq)` is ever shown with two tables, REST `seq` never goes back, every client's
//! table equals its replica's, and the replicas converge on one `(epoch, seq, checksum)`.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::Value;

mod common;

use common::observe::{Observers, Target};
use common::proxy::Proxy;
use common::redis::RedisServer;
use common::{FakeUpstream, Reply, TestServer, config, fixture, wait_until};

/// Folding clients per replica.
const CLIENTS: usize = 2;

/// Two replicas on `redis_url` (a proxy, where a case moves the endpoint) with a short lease,
/// both serving data.
async fn replicas(upstream: &FakeUpstream, redis_url: &str) -> [TestServer; 2] {
    let flags = [
        "--redis-url",
        redis_url,
        "--poll-interval",
        "100ms",
        "--cluster-lease-ttl",
        "3s",
    ];
    let servers = [
        TestServer::start(config(&upstream.url(), &flags)).await,
        TestServer::start(config(&upstream.url(), &flags)).await,
    ];
    for server in &servers {
        server.wait_ready().await;
    }
    servers
}

fn observe(servers: &[TestServer]) -> Observers {
    let targets = servers
        .iter()
        .map(|s| Target {
            ws_url: s.ws_url(""),
            rates_url: s.url("/api/v1/rates"),
        })
        .collect();
    Observers::start(targets, CLIENTS)
}

/// The upstream's rates, changed one unit at a time.
struct Rates {
    payload: Value,
    usd: f64,
}

impl Rates {
    fn new() -> Self {
        Self {
            payload: fixture(),
            usd: 40_000.0,
        }
    }

    /// One change upstream.
    fn change(&mut self, upstream: &FakeUpstream) {
        self.usd += 1.0;
        self.payload["rates"]["usd"]["value"] = self.usd.into();
        upstream.set(Reply::Json(self.payload.clone()));
    }

    /// One change upstream, and every replica serving it.
    async fn step(&mut self, upstream: &FakeUpstream, servers: &[TestServer]) {
        self.change(upstream);
        let usd = self.usd;
        wait_until(|| async {
            let mut all = true;
            for s in servers {
                let (_, body) = s.get_json("/api/v1/rates").await;
                all &= body["rates"]["usd"]["value"].as_f64() == Some(usd);
            }
            all
        })
        .await;
    }

    async fn steps(&mut self, n: usize, upstream: &FakeUpstream, servers: &[TestServer]) {
        for _ in 0..n {
            self.step(upstream, servers).await;
        }
    }
}

/// A Redis primary and its replica, an endpoint proxy in front of the primary (the DNS name a
/// failover moves), two ratecast replicas on the endpoint with folding clients and a REST
/// sampler, and three upstream changes served.
struct Scene {
    primary: RedisServer,
    standby: RedisServer,
    proxy: Proxy,
    upstream: FakeUpstream,
    servers: [TestServer; 2],
    observers: Option<Observers>,
    rates: Rates,
}

impl Scene {
    /// `persistent`: the primary keeps a data directory for `save` and `restart_from_dump`.
    async fn start(persistent: bool) -> Self {
        let primary = match persistent {
            true => RedisServer::start_persistent(),
            false => RedisServer::start(),
        };
        let standby = RedisServer::start();
        standby.replicate(&primary);
        let proxy = Proxy::start(primary.addr()).await;
        let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
        let servers = replicas(&upstream, &proxy.url()).await;
        let observers = Some(observe(&servers));
        let mut scene = Self {
            primary,
            standby,
            proxy,
            upstream,
            servers,
            observers,
            rates: Rates::new(),
        };
        scene.steps(3).await;
        scene
    }

    async fn steps(&mut self, n: usize) {
        self.rates.steps(n, &self.upstream, &self.servers).await;
    }

    async fn epoch(&self) -> String {
        let (_, body) = self.servers[0].get_json("/api/v1/rates").await;
        body["epoch"].as_str().unwrap_or_default().to_owned()
    }

    /// The invariants over everything observed, once every replica and client has settled.
    async fn check(&mut self) -> Result<()> {
        let observers = self.observers.take().expect("checked once");
        observers.settle_and_check(Duration::from_secs(15)).await
    }
}

/// The reproduction: Redis restarted from a dump taken 5 deltas before it went down.
/// On bbea04e a client ended with a table that differed from its replica's.
#[tokio::test]
async fn a_restart_from_an_older_dump_never_shows_a_wrong_table() -> Result<()> {
    let mut s = Scene::start(true).await;
    let before = s.epoch().await;
    s.primary.save();
    // Published, served, and then lost with Redis.
    s.steps(5).await;
    s.primary.shutdown_nosave();
    s.primary.restart_from_dump();
    s.steps(3).await;
    s.check().await?;
    let after = s.epoch().await;
    ensure!(
        after != before,
        "the state that lost writes did not start a new epoch ({after})"
    );
    Ok(())
}

/// A primary + replica pair: the replica stops receiving (detached: the writes after that
/// never reach it), the replicas publish 5 more deltas to the primary, then the primary goes
/// silent, the replica is promoted and the endpoint moves to it.
#[tokio::test]
async fn a_promoted_replica_that_missed_writes_never_shows_a_wrong_table() -> Result<()> {
    let mut s = Scene::start(false).await;
    let before = s.epoch().await;
    s.standby.promote();
    s.steps(5).await;
    s.proxy.black_hole();
    s.proxy.switch_to(s.standby.addr());
    s.steps(3).await;
    s.check().await?;
    ensure!(
        s.epoch().await != before,
        "the promoted replica's older state did not start a new epoch"
    );
    Ok(())
}

/// The old primary demoted (a replica of the new one) while the replicas' connections stay on
/// it: writes answer READONLY until the connections are rebuilt on the moved endpoint.
#[tokio::test]
async fn a_primary_demoted_under_open_connections_never_shows_a_wrong_table() -> Result<()> {
    let mut s = Scene::start(false).await;
    s.standby.promote();
    s.primary.replicate(&s.standby);
    s.proxy.switch_to(s.standby.addr());
    s.steps(3).await;
    s.check().await
}

/// The primary goes silent on every open connection (no RST), then comes back on the same
/// endpoint: nothing was lost, so the epoch stays and clients see the deltas they missed.
#[tokio::test]
async fn a_black_holed_primary_then_healed_never_shows_a_wrong_table() -> Result<()> {
    let mut s = Scene::start(false).await;
    let before = s.epoch().await;
    s.proxy.black_hole();
    // The outage: the lease runs out, nobody leads; the upstream moves meanwhile.
    s.rates.change(&s.upstream);
    tokio::time::sleep(Duration::from_secs(4)).await;
    s.proxy.heal();
    s.steps(3).await;
    s.check().await?;
    ensure!(
        s.epoch().await == before,
        "a healed outage that lost nothing started a new epoch"
    );
    Ok(())
}

/// The long fault campaign's find (seed 7): a Redis replica that stopped replicating a
/// generation ago is promoted. It brings back an *older generation* at a lower `seq`: a new
/// epoch by its name, but one whose `seq`s were served long ago. No replica may go back to it.
#[tokio::test]
async fn a_promoted_replica_from_an_older_generation_never_takes_seq_back() -> Result<()> {
    let mut s = Scene::start(false).await;
    // The replica stops receiving, and the primary loses everything: a new generation follows.
    s.standby.promote();
    s.primary.restart();
    s.steps(3).await;
    let newer = s.epoch().await;
    s.proxy.black_hole();
    s.proxy.switch_to(s.standby.addr());
    s.steps(3).await;
    s.check().await?;
    ensure!(
        s.epoch().await != newer,
        "the older generation's state did not start a new epoch"
    );
    Ok(())
}
