//! Every replica's stream reader, the leader's included: Redis → store, so that every replica
//! serves the same `seq` with the same frame bytes. It loads the whole state (snapshot,
//! history, the newest deltas for `?since=`) on start, after a gap or a reconnect, and when the
//! generation changed (Redis was emptied); it flags the data stale while Redis is unreachable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use redis::Value;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{ClusterError, ClusterStatus, Conn, Keys, READ_BLOCK, STREAM_DELTAS};
use crate::metrics::Metrics;
use crate::store::{ApplyError, Restore, Store};
use ratecast_protocol::backoff::backoff;
use ratecast_protocol::frames::{Delta, ServerFrame};
use ratecast_protocol::time::unix_ms;
use ratecast_protocol::{Rates, UpstreamState};

/// Longest wait between attempts while Redis is away: how soon after it returns every replica
/// is current again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Entries taken per read.
const READ_COUNT: usize = 128;

pub(super) struct Reader {
    pub conn: Conn,
    pub keys: Keys,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<ClusterStatus>,
}

/// Where this replica is in the shared state.
struct Position {
    /// Generation of the state held; `None` until the first load.
    generation: Option<String>,
    /// Last stream entry applied.
    last_id: String,
    /// Why the whole state must be loaded before reading on (a bounded label).
    reload: Option<&'static str>,
}

/// A whole state read from Redis.
struct Loaded {
    generation: String,
    last_id: String,
    restore: Restore,
}

impl Reader {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut at = Position {
            generation: None,
            last_id: "0-0".into(),
            reload: Some("start"),
        };
        let mut failures = 0u32;
        loop {
            let step = tokio::select! {
                result = self.step(&mut at) => result,
                () = shutdown.cancelled() => return,
            };
            match step {
                Ok(()) => {
                    if failures > 0 {
                        info!(failures, "cluster: Redis reachable again");
                        self.store.set_backplane_fault(None, SystemTime::now());
                    }
                    failures = 0;
                    self.status.connected.store(true, Ordering::Relaxed);
                }
                Err(err) => {
                    failures += 1;
                    self.status.connected.store(false, Ordering::Relaxed);
                    self.metrics
                        .counter(
                            "ratecast_cluster_redis_errors_total",
                            &[("kind", err.kind())],
                        )
                        .increment(1);
                    // Whatever was missed while away is taken whole on return.
                    at.reload.get_or_insert("reconnect");
                    // One failed read may be a blip; two in a row are an outage.
                    if failures >= 2 {
                        self.store
                            .set_backplane_fault(Some(err.kind()), SystemTime::now());
                    }
                    if failures == 2 && matches!(err, ClusterError::Behind(_)) {
                        warn!(error = %err, "cluster: the shared state is behind what this replica served; serving the last state, flagged stale, until a new epoch");
                    } else if failures == 2 {
                        warn!(error = %err, kind = err.kind(), "cluster: Redis unreachable; serving the last state, flagged stale");
                    } else {
                        debug!(error = %err, kind = err.kind(), failures, "cluster: read failed");
                    }
                    let delay = backoff(
                        Duration::from_millis(100),
                        MAX_RETRY_DELAY,
                        failures,
                        &mut rand::rng(),
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// One load, or one blocking read and what it brought.
    async fn step(&mut self, at: &mut Position) -> Result<(), ClusterError> {
        if let Some(reason) = at.reload {
            match self.load().await? {
                Some(loaded) => {
                    let seq = loaded.restore.seq;
                    if let Err(behind) = self.store.restore(loaded.restore, SystemTime::now()) {
                        // Serving it would take `seq` back and re-issue served `seq`s with
                        // other content: keep serving what is held (flagged stale if it lasts)
                        // until the leader starts a new epoch or the state passes ours.
                        self.metrics.cluster_divergences.increment(1);
                        return Err(ClusterError::Behind(behind.to_string()));
                    }
                    self.metrics.seq.set(seq as f64);
                    if at.generation.as_deref() != Some(&loaded.generation) {
                        info!(seq, reason, generation = %loaded.generation, "cluster: loaded the shared state");
                    } else {
                        debug!(seq, reason, "cluster: reloaded the shared state");
                    }
                    at.generation = Some(loaded.generation);
                    at.last_id = loaded.last_id;
                }
                // Nothing shared yet (a new cluster, or Redis emptied): keep what is served
                // and read from the start of whatever stream comes.
                None => {
                    at.last_id = "0-0".into();
                    self.read_waiting().await?;
                }
            }
            self.metrics
                .counter("ratecast_cluster_resyncs_total", &[("reason", reason)])
                .increment(1);
            at.reload = None;
            return Ok(());
        }
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(&at.last_id)
            .query_async(&mut self.conn)
            .await?;
        let entries = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
        let mut any = false;
        for entry in entries {
            any = true;
            at.reload = self.apply(at, &entry);
            if at.reload.is_some() {
                return Ok(());
            }
            at.last_id = entry.id;
        }
        if !any {
            at.reload = self.check_head(at).await?;
        }
        Ok(())
    }

    /// Applies one entry; says why the whole state must be loaded instead, if it must.
    fn apply(&self, at: &Position, entry: &StreamId) -> Option<&'static str> {
        let field = |name: &str| text(&entry.map, name);
        let kind = field("k")?;
        if kind == "r" || field("gen") != at.generation {
            return Some("generation");
        }
        let now = SystemTime::now();
        if let Some(ts) = field("ts").and_then(|t| t.parse::<u64>().ok()) {
            let lag = unix_ms(now).saturating_sub(ts) as f64 / 1000.0;
            self.metrics.cluster_stream_lag.set(lag);
            self.metrics.cluster_stream_delay.record(lag);
        }
        if kind == "d" {
            let seq: u64 = field("seq")?.parse().ok()?;
            let (_, held, held_frame) = self.store.head();
            if seq == held && held_frame.is_some_and(|f| bytes(&entry.map, "frame") != Some(f)) {
                // The `seq` we served, with other content: the shared state lost writes and
                // a leader re-issued it. Never build on it.
                warn!(
                    seq,
                    "cluster: a served seq was re-issued with other content"
                );
                self.metrics.cluster_divergences.increment(1);
                return Some("diverged");
            }
            if seq <= held {
                // Already applied (a reload overlapped the read): nothing to do, and its
                // upstream state is older than the one held.
                return None;
            }
            if seq != held + 1 {
                return Some("gap");
            }
            let frame = bytes(&entry.map, "frame")?;
            let Ok(ServerFrame::Delta(delta)) = serde_json::from_slice::<ServerFrame>(&frame)
            else {
                warn!(
                    seq,
                    "cluster: unreadable delta in the stream; loading the whole state"
                );
                return Some("gap");
            };
            match self.store.apply_published(&delta, frame, now) {
                Ok(_) => {}
                Err(ApplyError::Checksum { .. }) => {
                    warn!(
                        seq,
                        "cluster: the delta's checksum does not match the table it leads to; loading the whole state"
                    );
                    self.metrics.cluster_divergences.increment(1);
                    return Some("diverged");
                }
                Err(ApplyError::OtherEpoch { .. }) => return Some("generation"),
                Err(ApplyError::NotNext { .. } | ApplyError::NoState) => return Some("gap"),
            }
            self.metrics.seq.set(seq as f64);
            self.metrics.deltas_published.increment(1);
        }
        if let Some(upstream) =
            field("up").and_then(|u| serde_json::from_str::<UpstreamState>(&u).ok())
        {
            self.store.set_upstream(upstream, now);
        }
        None
    }

    /// After a quiet read: has the shared state moved on without us (a trimmed stream, a new
    /// generation)?
    async fn check_head(&mut self, at: &Position) -> Result<Option<&'static str>, ClusterError> {
        let (generation, seq): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(&self.keys.state)
            .arg(&["gen", "seq"])
            .query_async(&mut self.conn)
            .await?;
        Ok(match (generation, seq) {
            (Some(g), _) if Some(&g) != at.generation.as_ref() => Some("generation"),
            (Some(_), Some(seq)) if seq > self.store.seq() => Some("gap"),
            // Our generation, behind what we served: it lost writes (the reload refuses it
            // and waits for the leader's new epoch).
            (Some(_), Some(seq)) if seq < self.store.seq() => Some("behind"),
            (None, _) => {
                self.read_waiting().await?;
                None
            }
            _ => None,
        })
    }

    /// While this replica has no data: the leader's view of the upstream when every poll so
    /// far failed (`publish`'s waiting key), so that its status says why there is no data and
    /// when the next attempt is, as a standalone server's does.
    async fn read_waiting(&mut self) -> Result<(), ClusterError> {
        if self.store.view().is_some() {
            return Ok(());
        }
        let waiting: Option<String> = redis::cmd("GET")
            .arg(&self.keys.waiting)
            .query_async(&mut self.conn)
            .await?;
        if let Some(upstream) = waiting.and_then(|u| serde_json::from_str::<UpstreamState>(&u).ok())
        {
            self.store.set_upstream(upstream, SystemTime::now());
        }
        Ok(())
    }

    /// The whole state, read consistently: the state hash and the stream's tail in one
    /// transaction, then the histories with the `seq` again (retried if it moved).
    async fn load(&mut self) -> Result<Option<Loaded>, ClusterError> {
        for _ in 0..5 {
            let (state, tail): (HashMap<String, Vec<u8>>, StreamRangeReply) = redis::pipe()
                .atomic()
                .hgetall(&self.keys.state)
                .cmd("XREVRANGE")
                .arg(&self.keys.stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(STREAM_DELTAS * 2)
                .query_async(&mut self.conn)
                .await?;
            if state.is_empty() {
                return Ok(None);
            }
            let get = |name: &str| {
                state
                    .get(name)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .ok_or_else(|| ClusterError::Data(format!("state has no {name}")))
            };
            let generation = get("gen")?.to_owned();
            let seq: u64 = get("seq")?
                .parse()
                .map_err(|_| ClusterError::Data("seq".into()))?;
            let ts: u64 = get("ts")?
                .parse()
                .map_err(|_| ClusterError::Data("ts".into()))?;
            let rates: Rates = serde_json::from_str(get("snapshot")?)
                .map_err(|e| ClusterError::Data(format!("snapshot: {e}")))?;
            let upstream: UpstreamState = serde_json::from_str(get("up")?)
                .map_err(|e| ClusterError::Data(format!("upstream state: {e}")))?;

            let codes: Vec<&String> = rates.keys().collect();
            let mut pipe = redis::pipe();
            pipe.atomic().hget(&self.keys.state, "seq");
            for code in &codes {
                pipe.lrange(self.keys.history(code), 0, -1);
            }
            let mut replies: Vec<Value> = pipe.query_async(&mut self.conn).await?;
            if replies.is_empty() {
                return Err(ClusterError::Data("empty transaction reply".into()));
            }
            let lists = replies.split_off(1);
            let again: Option<u64> = redis::from_redis_value(replies.remove(0))
                .map_err(|e| ClusterError::Data(e.to_string()))?;
            if again != Some(seq) {
                continue;
            }
            let mut history = HashMap::new();
            for (code, list) in codes.into_iter().zip(lists) {
                let points: Vec<String> =
                    redis::from_redis_value(list).map_err(|e| ClusterError::Data(e.to_string()))?;
                let points = points
                    .iter()
                    .filter_map(|p| {
                        let (t, v) = p.split_once(' ')?;
                        Some((t.parse().ok()?, v.parse().ok()?))
                    })
                    .collect();
                history.insert(code.clone(), points);
            }
            let last_id = tail
                .ids
                .first()
                .map_or_else(|| format!("{seq}-0"), |e| e.id.clone());
            let mut deltas: Vec<(Delta, Bytes)> = tail
                .ids
                .iter()
                .filter(|e| {
                    text(&e.map, "k").as_deref() == Some("d")
                        && text(&e.map, "gen").as_deref() == Some(generation.as_str())
                })
                .filter_map(|e| {
                    let frame = bytes(&e.map, "frame")?;
                    match serde_json::from_slice::<ServerFrame>(&frame).ok()? {
                        ServerFrame::Delta(delta) => Some((delta, frame)),
                        _ => None,
                    }
                })
                .collect();
            deltas.reverse();
            let epoch = generation.clone();
            return Ok(Some(Loaded {
                generation,
                last_id,
                restore: Restore {
                    epoch: epoch.into(),
                    seq,
                    ts,
                    rates,
                    upstream,
                    history,
                    deltas,
                },
            }));
        }
        Err(ClusterError::Data(
            "the state kept moving during the load".into(),
        ))
    }
}

fn text(map: &HashMap<String, Value>, name: &str) -> Option<String> {
    redis::from_redis_value_ref(map.get(name)?).ok()
}

fn bytes(map: &HashMap<String, Value>, name: &str) -> Option<Bytes> {
    match map.get(name)? {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        _ => None,
    }
}
