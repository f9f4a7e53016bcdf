//! A real `ratecast serve` process in cluster mode, for signals and for faults of its Redis,
//! observed from outside: `/readyz`, `/metrics`, `/api/v1/rates`.
#![allow(dead_code)] // each test binary uses its own subset

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::find_metric;
use super::redis::free_port;

/// The lease a replica gets unless `extra` says `--cluster-lease-ttl`: short for quick
/// takeovers, and 2 s keeps it from flapping on a busy box.
const LEASE_TTL: &str = "2s";

/// A replica behind the test's haproxy (which is on 127.0.0.1 and forwards the client's
/// address), open to thousands of subscribers from one address; `extra` adds or overrides
/// flags. Killed when dropped.
pub fn behind_proxy(
    port: u16,
    upstream: &str,
    redis: &str,
    extra: &[&str],
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ratecast"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream-url", upstream, "--poll-interval", "300ms"])
        .args(["--upstream", "coingecko"])
        .args(["--redis-url", redis])
        .args(["--trusted-proxy", "127.0.0.1/32"])
        .args(["--max-connections-per-ip", "10000"])
        .args(["--connection-rate-per-second", "0"])
        .args(extra)
        .env_clear()
        .envs(super::coverage_env())
        // `REPLICA_LOG=debug,...` to see a replica's decisions (how the last rolling-restart
        // snapshot was found).
        .env(
            "RUST_LOG",
            std::env::var("REPLICA_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ratecast starts")
}

pub struct Replica {
    pub child: Child,
    pub port: u16,
    http: reqwest::Client,
}

impl Replica {
    /// Polls `upstream` every 100 ms when it leads, through the Redis at `redis_url`.
    pub fn spawn(upstream: &str, redis_url: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ratecast"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream-url", upstream, "--redis-url", redis_url])
            .args(["--upstream", "coingecko"])
            .args(["--poll-interval", "100ms"])
            .args([
                "--rate-limit-per-second",
                "0",
                "--connection-rate-per-second",
                "0",
            ]);
        if !extra.contains(&"--cluster-lease-ttl") {
            command.args(["--cluster-lease-ttl", LEASE_TTL]);
        }
        let child = command
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("REPLICA_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ratecast binary runs");
        Self {
            child,
            port,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        Ok(self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(1))
            .send()
            .await?)
    }

    /// The `/readyz` body when it is ready, else `None`.
    pub async fn ready(&self) -> Option<Value> {
        let r = self.get("/readyz").await.ok()?;
        if r.status() != 200 {
            return None;
        }
        r.json().await.ok()
    }

    pub async fn is_leader(&self) -> bool {
        self.ready()
            .await
            .is_some_and(|r| r["cluster"]["role"] == "leader")
    }

    /// One metric sample (`name{labels}` exactly as rendered). An error when the replica does
    /// not answer or the series is absent: neither may read as 0.
    pub async fn metric(&self, sample: &str) -> Result<f64> {
        let text = self.get("/metrics").await?.text().await?;
        find_metric(&text, sample)
            .with_context(|| format!("no series {sample} in /metrics of :{}", self.port))
    }

    /// The `/api/v1/rates` body.
    pub async fn rates(&self) -> Result<Value> {
        let r = self.get("/api/v1/rates").await?;
        anyhow::ensure!(r.status() == 200, "/api/v1/rates: {}", r.status());
        Ok(r.json().await?)
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` replicas, once each is ready.
pub async fn spawn_cluster(
    upstream: &str,
    redis_url: &str,
    n: usize,
    extra: &[&str],
) -> Vec<Replica> {
    let replicas: Vec<Replica> = (0..n)
        .map(|_| Replica::spawn(upstream, redis_url, extra))
        .collect();
    for r in &replicas {
        super::wait_until(|| async { r.ready().await.is_some() }).await;
    }
    replicas
}

/// The index of the replica that leads, found within `within`.
pub async fn leader_of(replicas: &[Replica], within: Duration) -> Result<usize> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        for (i, r) in replicas.iter().enumerate() {
            if r.is_leader().await {
                return Ok(i);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no replica leads within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
