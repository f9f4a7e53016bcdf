//! Cluster mode when its Redis fails the way managed Redis does: a primary that goes silent on
//! its open connections (host or zone lost, partition: no RST), a primary demoted under open
//! connections (READONLY), and a replica promoted while the endpoint name moves to it. Each
//! replica is a `ratecast serve` process whose `--redis-url` is a proxy in this test (the
//! endpoint). The target (docs/cluster.md): once a working endpoint is reachable, the cluster
//! has a leader and fresh data again within 2 × the lease TTL.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use tokio::time::Instant;

mod common;

use common::proxy::Proxy;
use common::redis::{RedisServer, free_port};
use common::replica::{Replica, leader_of, spawn_cluster};
use common::{FakeUpstream, Reply, fixture};

/// The lease of every replica here: short, so that each case takes seconds, and long enough
/// that a blocking read's deadline (`XREAD BLOCK` 2 s + 1 s) fits twice into the target.
const TTL: Duration = Duration::from_secs(3);
const TTL_FLAG: &str = "3s";

/// Replicas in each case: one leads, one follows.
const REPLICAS: usize = 2;

/// Starts the replicas behind `proxy` and waits until one leads and both serve data.
async fn cluster(upstream: &FakeUpstream, proxy: &Proxy) -> Result<Vec<Replica>> {
    let replicas = spawn_cluster(
        &upstream.url(),
        &proxy.url(),
        REPLICAS,
        &["--cluster-lease-ttl", TTL_FLAG],
    )
    .await;
    leader_of(&replicas, 4 * TTL).await?;
    Ok(replicas)
}

/// The highest `seq` any replica serves now.
async fn highest_seq(replicas: &[Replica]) -> Result<u64> {
    let mut highest = 0;
    for r in replicas {
        highest = highest.max(r.rates().await?["seq"].as_u64().unwrap_or(0));
    }
    Ok(highest)
}

/// Waits until no replica leads: every lease deadline passed with Redis silent or refusing.
async fn leaderless(replicas: &[Replica]) -> Result<()> {
    let deadline = Instant::now() + 4 * TTL;
    loop {
        let mut leading = 0.0;
        for r in replicas {
            leading += r.metric("ratecast_cluster_leader").await?;
        }
        if leading == 0.0 {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "a replica still leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// From `since` (a working endpoint became reachable), waits at most 2 × TTL until a
/// replica leads and every replica serves data newer than `seq_before`, not stale. Returns how
/// long it took.
async fn recovered(replicas: &[Replica], seq_before: u64, since: Instant) -> Result<Duration> {
    let deadline = since + 2 * TTL;
    loop {
        let mut fresh = 0;
        for r in replicas {
            // A replica that does not answer is not fresh (and may answer on the next round).
            if let Ok(rates) = r.rates().await
                && rates["seq"].as_u64().is_some_and(|seq| seq > seq_before)
                && rates["stale"] == false
            {
                fresh += 1;
            }
        }
        let mut leads = false;
        for r in replicas {
            leads |= r.is_leader().await;
        }
        if leads && fresh == replicas.len() {
            return Ok(since.elapsed());
        }
        ensure!(
            Instant::now() < deadline,
            "after {:?}: leader: {leads}, {fresh} of {} replicas with fresh data (seq > {seq_before})",
            2 * TTL,
            replicas.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A primary and its replica (a standby for a failover), the endpoint proxy in front of the
/// primary, and the ratecast replicas behind the endpoint, one of them leading.
struct Deployment {
    primary: RedisServer,
    standby: RedisServer,
    proxy: Proxy,
    /// Answers the leader's polls with new values each time: a delta per poll.
    _upstream: FakeUpstream,
    replicas: Vec<Replica>,
}

impl Deployment {
    async fn start() -> Result<Self> {
        let primary = RedisServer::start();
        let standby = RedisServer::start();
        standby.replicate(&primary);
        let proxy = Proxy::start(primary.addr()).await;
        let upstream = FakeUpstream::start(Reply::Changing(fixture())).await;
        let replicas = cluster(&upstream, &proxy).await?;
        Ok(Self {
            primary,
            standby,
            proxy,
            _upstream: upstream,
            replicas,
        })
    }

    /// Moves the endpoint to `target` and checks the target: a leader and fresh data on
    /// every replica within 2 × TTL.
    async fn switch_and_recover(&self, target: SocketAddr, case: &str) -> Result<()> {
        self.recovers_after(|| self.proxy.switch_to(target), case)
            .await
    }

    /// Runs `fix` (a working endpoint from then on) and checks the target.
    async fn recovers_after(&self, fix: impl FnOnce(), case: &str) -> Result<()> {
        let seq_before = highest_seq(&self.replicas).await?;
        fix();
        let took = recovered(&self.replicas, seq_before, Instant::now()).await?;
        eprintln!("{case}: a leader and fresh data after {took:?}");
        Ok(())
    }
}

/// The outage: the primary vanishes without a RST (every open connection silent,
/// forever), and the endpoint name is then moved to a working primary (here the same one).
/// Only new connections reach it.
#[tokio::test]
async fn a_black_holed_primary_then_a_working_endpoint_has_a_leader_and_fresh_data_within_two_ttls()
-> Result<()> {
    let d = Deployment::start().await?;
    d.proxy.black_hole();
    leaderless(&d.replicas).await?;
    d.switch_and_recover(d.primary.addr(), "black hole, then a working endpoint")
        .await
}

/// A partition that heals: the same connections carry the held commands and answers again.
#[tokio::test]
async fn a_black_holed_primary_that_heals_has_a_leader_and_fresh_data_within_two_ttls() -> Result<()>
{
    let d = Deployment::start().await?;
    d.proxy.black_hole();
    leaderless(&d.replicas).await?;
    d.recovers_after(|| d.proxy.heal(), "black hole, healed")
        .await
}

/// A failover that demotes the old primary (`REPLICAOF` the new one) while the replicas'
/// connections stay open on it: every write there is answered `READONLY`. The endpoint name
/// points at the new primary for new connections.
#[tokio::test]
async fn an_old_primary_demoted_under_open_connections_readonly_recovers() -> Result<()> {
    let d = Deployment::start().await?;
    d.standby.promote();
    d.primary.replicate(&d.standby);
    d.switch_and_recover(d.standby.addr(), "READONLY on the demoted primary")
        .await
}

/// The old primary made a replica of a primary it cannot reach, serving no stale data (as a
/// node does that lost its own primary mid-failover): every command there is answered
/// `MASTERDOWN`, the reader's included. The endpoint name points at the promoted standby.
#[tokio::test]
async fn a_primary_that_lost_its_own_primary_masterdown_recovers() -> Result<()> {
    let d = Deployment::start().await?;
    d.standby.promote();
    let nowhere = free_port().to_string();
    d.primary
        .command(&["CONFIG", "SET", "replica-serve-stale-data", "no"])?;
    d.primary.command(&["REPLICAOF", "127.0.0.1", &nowhere])?;
    d.switch_and_recover(d.standby.addr(), "MASTERDOWN on the old primary")
        .await
}

/// The measured failover: the primary goes silent on its open connections, its
/// replica is promoted, and the endpoint name moves to it.
#[tokio::test]
async fn a_replica_promoted_while_the_old_primary_is_silent_recovers() -> Result<()> {
    let d = Deployment::start().await?;
    d.proxy.black_hole();
    d.standby.promote();
    d.switch_and_recover(
        d.standby.addr(),
        "promoted replica behind the moved endpoint",
    )
    .await
}

/// Nothing here follows `MOVED`/`ASK`: a sharded Redis Cluster is refused at start-up, with a
/// message that says what to use instead, rather than half working until its first failover.
#[tokio::test]
async fn a_sharded_redis_cluster_is_refused_at_start_up() -> Result<()> {
    let redis = RedisServer::start_sharded();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ratecast"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            &redis.url(),
        ])
        .args([
            "--upstream-url",
            "http://127.0.0.1:9",
            "--upstream",
            "coingecko",
        ])
        .env_clear()
        .envs(common::coverage_env())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), run).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{:?}: {stderr}", out.status);
    ensure!(
        stderr.contains("is a sharded Redis Cluster (cluster_enabled:1), which is not supported")
            && stderr.contains("use a non-clustered primary endpoint"),
        "{stderr}"
    );
    Ok(())
}

/// The harness itself, as the lost-write cases use it: a dump taken, writes after it lost by a
/// `SHUTDOWN NOSAVE`, the restart on the same port back at the dump; and the proxy's black
/// hole holding a command until it heals, and its reset ending the connection.
#[tokio::test]
async fn the_harness_restarts_from_a_dump_and_the_proxy_holds_heals_and_resets() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut redis = RedisServer::start_persistent();
    redis.command(&["SET", "k", "saved"])?;
    redis.save();
    redis.command(&["SET", "k", "lost"])?;
    redis.shutdown_nosave();
    redis.restart_from_dump();
    ensure!(
        redis.command(&["GET", "k"])? == "saved",
        "not back at the dump"
    );
    redis.restart();
    ensure!(
        redis.command(&["GET", "k"])?.is_empty(),
        "restart() is empty"
    );

    let proxy = Proxy::start(redis.addr()).await;
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port)).await?;
    let mut reply = [0u8; 7];
    client.write_all(b"PING\r\n").await?;
    client.read_exact(&mut reply).await?;
    ensure!(&reply == b"+PONG\r\n", "relayed");
    proxy.black_hole();
    client.write_all(b"PING\r\n").await?;
    let silent = tokio::time::timeout(Duration::from_millis(300), client.read_exact(&mut reply));
    ensure!(silent.await.is_err(), "answered through the black hole");
    proxy.heal();
    tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut reply)).await??;
    ensure!(
        &reply == b"+PONG\r\n",
        "the held command is answered once healed"
    );
    proxy.reset_all();
    let after_reset = tokio::time::timeout(Duration::from_secs(2), client.read(&mut reply)).await?;
    ensure!(
        matches!(after_reset, Ok(0) | Err(_)),
        "connection still open after reset_all: {after_reset:?}"
    );
    Ok(())
}
