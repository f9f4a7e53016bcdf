//! Cluster mode when Redis comes back with older data than the replicas served (issue 20): a
//! restart from an RDB taken a few deltas ago, as a managed Redis restored from a snapshot or
//! failed over to a replica that had not received the last writes does.
//!
//! Every client folds its stream into its own table; the test then checks, over everything any
//! client or REST body showed: no `(epoch, seq)` ever names two tables, REST `seq` never goes
//! back, every client's table equals its replica's at the same `(epoch, seq)`, and the replicas
//! converge on one `(epoch, seq, checksum)`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

mod common;
#[path = "common/redis.rs"]
#[allow(dead_code)] // only its free_port
mod redis_server;

use common::{FakeUpstream, Reply, TestServer, config, fixture, wait_until, ws_connect};
use ratecast_protocol::Rates;
use ratecast_protocol::checksum::table_checksum;
use redis_server::free_port;

/// A `redis-server` with a data directory of its own, so that it can `SAVE`, stop without
/// saving, and start again from that older dump on the same port.
struct PersistentRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PersistentRedis {
    fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "ratecast-lost-writes-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("data dir");
        let mut redis = Self {
            port,
            dir,
            child: None,
        };
        redis.spawn();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.command("PING").is_ok_and(|r| r == "+PONG\r\n") {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One inline command; the first reply line.
    fn command(&self, command: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("{command}\r\n").as_bytes())?;
        let mut reply = vec![0u8; 256];
        let n = stream.read(&mut reply)?;
        Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
    }

    /// The state as of now, on disk.
    fn save(&self) {
        assert_eq!(self.command("SAVE").expect("SAVE"), "+OK\r\n");
    }

    /// Stops without saving and starts again from the last `save`: the writes since are lost.
    fn restart_from_dump(&mut self) {
        let _ = self.command("SHUTDOWN NOSAVE");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.spawn();
    }
}

impl Drop for PersistentRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one observer (a client's fold, or a REST body) showed at one `(epoch, seq)`.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    epoch: String,
    seq: u64,
    table: Rates,
}

/// A client that folds its stream as the page does and keeps its whole history.
#[derive(Default)]
struct Fold {
    table: Rates,
    last: Option<(String, u64)>,
    history: Vec<Seen>,
    /// Frames whose `checksum` did not match the folded table.
    mismatches: usize,
    /// Full-feed deltas that did not follow the last `seq` (a client would miss changes).
    gaps: usize,
    snapshots: usize,
}

impl Fold {
    fn apply(&mut self, frame: &Value) -> Result<()> {
        let epoch = frame["epoch"].as_str().unwrap_or_default().to_owned();
        let Some(seq) = frame["seq"].as_u64() else {
            return Ok(());
        };
        match frame["type"].as_str() {
            Some("snapshot") => {
                self.table = serde_json::from_value(frame["rates"].clone())?;
                self.snapshots += 1;
            }
            Some("delta") => {
                if self
                    .last
                    .as_ref()
                    .is_some_and(|(e, s)| *e != epoch || seq != s + 1)
                {
                    self.gaps += 1;
                }
                let delta: ratecast_protocol::frames::Delta =
                    serde_json::from_value(frame.clone())?;
                delta.apply_to(&mut self.table);
            }
            _ => return Ok(()),
        }
        if let Some(checksum) = frame["checksum"].as_u64()
            && checksum != u64::from(table_checksum(&self.table))
        {
            self.mismatches += 1;
        }
        self.last = Some((epoch.clone(), seq));
        self.history.push(Seen {
            epoch,
            seq,
            table: self.table.clone(),
        });
        Ok(())
    }
}

/// Connects to `url` and folds every frame until `stop`.
fn follow(
    url: String,
    stop: CancellationToken,
) -> (Arc<Mutex<Fold>>, tokio::task::JoinHandle<Result<()>>) {
    let fold = Arc::new(Mutex::new(Fold::default()));
    let task = tokio::spawn({
        let fold = fold.clone();
        async move {
            let mut ws = ws_connect(&url).await?;
            loop {
                let msg = tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    msg = ws.next() => msg.context("stream ended")??,
                };
                if let Message::Text(text) = msg {
                    let frame: Value = serde_json::from_str(text.as_str())?;
                    fold.lock().unwrap().apply(&frame)?;
                }
            }
        }
    });
    (fold, task)
}

/// What one REST body says.
async fn rest(server: &TestServer) -> Result<Seen> {
    let (_, body) = server.get_json("/api/v1/rates").await;
    Ok(Seen {
        epoch: body["epoch"].as_str().unwrap_or_default().to_owned(),
        seq: body["seq"].as_u64().context("seq")?,
        table: serde_json::from_value(body["rates"].clone())?,
    })
}

#[tokio::test]
async fn a_restart_from_an_older_dump_never_shows_a_wrong_table() -> Result<()> {
    let mut redis = PersistentRedis::start();
    let mut payload = fixture();
    let upstream = FakeUpstream::start(Reply::Json(payload.clone())).await;
    let flags = ["--redis-url", &redis.url(), "--poll-interval", "100ms"];
    let servers = [
        TestServer::start(config(&upstream.url(), &flags)).await,
        TestServer::start(config(&upstream.url(), &flags)).await,
    ];
    for server in &servers {
        server.wait_ready().await;
    }

    let stop = CancellationToken::new();
    let clients: Vec<_> = (0..4)
        .map(|i| follow(servers[i % 2].ws_url(""), stop.clone()))
        .collect();
    // REST on every replica, sampled throughout: its `seq` must never go back.
    let rest_log: Arc<Mutex<Vec<(usize, Seen)>>> = Arc::default();
    let sampler = tokio::spawn({
        let (stop, log) = (stop.clone(), rest_log.clone());
        let urls: Vec<String> = servers.iter().map(|s| s.url("/api/v1/rates")).collect();
        async move {
            let http = reqwest::Client::new();
            while !stop.is_cancelled() {
                for (i, url) in urls.iter().enumerate() {
                    let Ok(reply) = http.get(url).send().await else {
                        continue;
                    };
                    let Ok(body) = reply.json::<Value>().await else {
                        continue;
                    };
                    if let (Some(seq), Ok(table)) = (
                        body["seq"].as_u64(),
                        serde_json::from_value(body["rates"].clone()),
                    ) {
                        let epoch = body["epoch"].as_str().unwrap_or_default().to_owned();
                        log.lock().unwrap().push((i, Seen { epoch, seq, table }));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // One upstream change, and every replica serving it.
    let mut value = 40_000.0;
    let mut step = async |payload: &mut Value| {
        value += 1.0;
        payload["rates"]["usd"]["value"] = value.into();
        upstream.set(Reply::Json(payload.clone()));
        wait_until(|| async {
            let mut all = true;
            for s in &servers {
                all &= rest(s).await.is_ok_and(|r| r.table["usd"].value == value);
            }
            all
        })
        .await;
    };
    for _ in 0..3 {
        step(&mut payload).await;
    }
    let before = rest(&servers[0]).await?;
    redis.save();
    // Published, served, and then lost with Redis.
    for _ in 0..5 {
        step(&mut payload).await;
    }
    redis.restart_from_dump();
    for _ in 0..3 {
        step(&mut payload).await;
    }
    // Quiet: every replica on one `(epoch, seq)`, every client at its replica's. A client that
    // never gets there is reported by the checks below, with what it holds.
    let settled = within(Duration::from_secs(15), || async {
        let (a, b) = (rest(&servers[0]).await, rest(&servers[1]).await);
        matches!((&a, &b), (Ok(a), Ok(b)) if a == b)
            && clients.iter().enumerate().all(|(i, (fold, _))| {
                let fold = fold.lock().unwrap();
                let target = if i % 2 == 0 { &a } else { &b };
                target
                    .as_ref()
                    .is_ok_and(|t| fold.last == Some((t.epoch.clone(), t.seq)))
            })
    })
    .await;
    stop.cancel();
    sampler.await?;

    let after = rest(&servers[0]).await?;
    ensure!(
        after.epoch != before.epoch,
        "the state that lost writes did not start a new epoch ({})",
        after.epoch
    );
    // Every observation of one `(epoch, seq)` names one table.
    let mut tables: HashMap<(String, u64), Rates> = HashMap::new();
    let mut observations: Vec<Seen> = rest_log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| s.clone())
        .collect();
    for (i, (fold, task)) in clients.into_iter().enumerate() {
        task.await??;
        let fold = Arc::try_unwrap(fold)
            .ok()
            .context("fold still shared")?
            .into_inner()?;
        ensure!(
            fold.mismatches == 0,
            "client {i}: {} checksum mismatches",
            fold.mismatches
        );
        ensure!(
            fold.gaps == 0,
            "client {i}: {} deltas that skipped a seq",
            fold.gaps
        );
        let server = rest(&servers[i % 2]).await?;
        ensure!(
            fold.table == server.table,
            "client {i} ended with a table that differs from its replica's at {:?}",
            fold.last
        );
        observations.extend(fold.history);
    }
    for seen in observations {
        let table = tables
            .entry((seen.epoch.clone(), seen.seq))
            .or_insert_with(|| seen.table.clone());
        ensure!(
            *table == seen.table,
            "seq {} of epoch {:?} was shown with two different tables",
            seen.seq,
            seen.epoch
        );
    }
    for replica in 0..2 {
        let seqs: Vec<u64> = rest_log
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| *i == replica)
            .map(|(_, s)| s.seq)
            .collect();
        ensure!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "REST seq went back on replica {replica}"
        );
    }
    ensure!(
        settled,
        "the replicas and their clients did not settle on one (epoch, seq)"
    );
    Ok(())
}

/// Polls `cond` every 10 ms until it holds (true) or `limit` passes (false).
async fn within<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
