//! Observers of a cluster under faults, and the invariants they check (issue 20, point 6):
//! WebSocket clients that fold their stream into a table as the page does, and a sampler of
//! every replica's REST body. After the fault:
//! - every client's table equals its replica's `/api/v1/rates` at the same `(epoch, seq)`;
//! - no `(epoch, seq)` was ever shown (by a client or REST) with two different tables;
//! - REST `seq` never went back on a replica;
//! - every replica converged on one `(epoch, seq, checksum)`;
//! - no frame's `checksum` disagreed with the client's table, and no full-feed delta skipped a
//!   `seq`.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use ratecast_protocol::Rates;
use ratecast_protocol::checksum::table_checksum;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::ws_connect;

/// What one observer showed at one `(epoch, seq)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub epoch: String,
    pub seq: u64,
    pub table: Rates,
}

/// A client's fold of its stream, with its whole history.
#[derive(Default)]
struct Fold {
    table: Rates,
    last: Option<(String, u64)>,
    history: Vec<Seen>,
    /// Frames whose `checksum` did not match the folded table.
    mismatches: usize,
    /// Full-feed deltas that did not follow the last `seq` of their epoch.
    gaps: usize,
}

impl Fold {
    fn apply(&mut self, frame: &Value) -> Result<()> {
        let epoch = frame["epoch"].as_str().unwrap_or_default().to_owned();
        let Some(seq) = frame["seq"].as_u64() else {
            return Ok(());
        };
        match frame["type"].as_str() {
            Some("snapshot") => self.table = serde_json::from_value(frame["rates"].clone())?,
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

/// One replica as the observers see it.
#[derive(Clone)]
pub struct Target {
    pub ws_url: String,
    pub rates_url: String,
}

/// A client's fold, its task, and the replica (index into `targets`) it is on.
type Client = (Arc<Mutex<Fold>>, JoinHandle<Result<()>>, usize);

pub struct Observers {
    stop: CancellationToken,
    targets: Vec<Target>,
    clients: Vec<Client>,
    rest_log: Arc<Mutex<Vec<(usize, Seen)>>>,
    sampler: JoinHandle<()>,
    http: reqwest::Client,
}

/// What one REST body says; `None` while the replica has no data or does not answer.
async fn rest(http: &reqwest::Client, url: &str) -> Option<Seen> {
    let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
    Some(Seen {
        epoch: body["epoch"].as_str().unwrap_or_default().to_owned(),
        seq: body["seq"].as_u64()?,
        table: serde_json::from_value(body["rates"].clone()).ok()?,
    })
}

impl Observers {
    /// `clients_per_target` folding clients on each target, and REST sampled every 20 ms.
    pub fn start(targets: Vec<Target>, clients_per_target: usize) -> Self {
        let stop = CancellationToken::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let mut clients = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            for _ in 0..clients_per_target {
                let (fold, task) = follow(target.ws_url.clone(), stop.clone());
                clients.push((fold, task, i));
            }
        }
        let rest_log: Arc<Mutex<Vec<(usize, Seen)>>> = Arc::default();
        let sampler = tokio::spawn({
            let (stop, log, http) = (stop.clone(), rest_log.clone(), http.clone());
            let urls: Vec<String> = targets.iter().map(|t| t.rates_url.clone()).collect();
            async move {
                while !stop.is_cancelled() {
                    for (i, url) in urls.iter().enumerate() {
                        if let Some(seen) = rest(&http, url).await {
                            log.lock().unwrap().push((i, seen));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self {
            stop,
            targets,
            clients,
            rest_log,
            sampler,
            http,
        }
    }

    /// The replicas' REST bodies now (all of them answering).
    async fn heads(&self) -> Option<Vec<Seen>> {
        let mut heads = Vec::new();
        for target in &self.targets {
            heads.push(rest(&self.http, &target.rates_url).await?);
        }
        Some(heads)
    }

    /// Waits (at most `limit`) until every replica is on one `(epoch, seq)` and every client at
    /// its replica's, then checks the invariants over everything observed.
    pub async fn settle_and_check(self, limit: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        let settled = loop {
            if let Some(heads) = self.heads().await
                && heads.iter().all(|h| *h == heads[0])
                && self.clients.iter().all(|(fold, _, i)| {
                    fold.lock().unwrap().last == Some((heads[*i].epoch.clone(), heads[*i].seq))
                })
            {
                break true;
            }
            if tokio::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let heads = self.heads().await.context("a replica does not answer")?;
        self.stop.cancel();
        self.sampler.await?;
        let rest_log = std::mem::take(&mut *self.rest_log.lock().unwrap());
        let mut observations: Vec<Seen> = rest_log.iter().map(|(_, s)| s.clone()).collect();
        for (n, (fold, task, i)) in self.clients.into_iter().enumerate() {
            task.await??;
            let fold = Arc::try_unwrap(fold)
                .ok()
                .context("fold still shared")?
                .into_inner()?;
            ensure!(
                fold.mismatches == 0,
                "client {n}: {} checksum mismatches",
                fold.mismatches
            );
            ensure!(
                fold.gaps == 0,
                "client {n}: {} deltas that skipped a seq",
                fold.gaps
            );
            ensure!(
                fold.table == heads[i].table,
                "client {n} ended with a table that differs from its replica's at {:?}",
                fold.last
            );
            observations.extend(fold.history);
        }
        let mut tables: HashMap<(String, u64), Rates> = HashMap::new();
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
        for replica in 0..self.targets.len() {
            let seqs: Vec<u64> = rest_log
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
            "the replicas and their clients did not settle on one (epoch, seq) within {limit:?}"
        );
        Ok(())
    }
}

/// Connects to `url` and folds every frame until `stop`.
fn follow(url: String, stop: CancellationToken) -> (Arc<Mutex<Fold>>, JoinHandle<Result<()>>) {
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
