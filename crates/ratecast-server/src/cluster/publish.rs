//! The leader's publication: one Lua script that checks the lease token and then, atomically,
//! assigns the next cluster-wide `seq`, appends the entry to the bounded stream, and stores the
//! snapshot, the upstream state and the history under keys.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use redis::Script;

use super::{ClusterError, Conn, Keys, Lease, STREAM_DELTAS};
use crate::store::{Store, delta_frame};
use ratecast_protocol::UpstreamState;
use ratecast_protocol::checksum::table_checksum;
use ratecast_protocol::rates::{Rates, diff};
use ratecast_protocol::time::unix_ms;
use tracing::warn;

/// Points kept per unit in Redis, as the store keeps them.
const HISTORY_POINTS: usize = 2_880;

/// KEYS: 1 lease, 2 state, 3 stream, 4.. history lists (changed units, then removed ones).
/// ARGV: 1 token, 2 kind (d: delta, u: upstream state / confirmation, r: new generation),
///   3 generation to write, 4 the `seq` the leader built on ('' when there is no state yet),
///   5 new `seq`, 6 ts (ms), 7 delta frame, 8 upstream state (JSON), 9 snapshot rates (JSON),
///   10 poll time (ms), 11 MINID (oldest `seq` kept), 12 points per list, 13 changed lists,
///   14 the generation the leader built on ('' when there is no state yet),
///   15.. per changed list: the new point "ts value" (d), or every point as a JSON array (r).
/// Returns 'ok', 'fenced' (the lease is not ours) or 'conflict' (the state is not what the
/// leader built on). `seq` never goes back: a delta takes exactly held + 1 in the same
/// generation; a new generation replaces no state, or exactly the state the leader read (one
/// that lost writes it had published), with a `seq` above any before (time-based, and above
/// what the leader published and served).
const PUBLISH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end
local gen = redis.call('HGET', KEYS[2], 'gen')
local seq = redis.call('HGET', KEYS[2], 'seq')
local kind = ARGV[2]
if ARGV[4] == '' then
  if gen or kind ~= 'r' then return 'conflict' end
elseif gen ~= ARGV[14] or seq ~= ARGV[4] then
  return 'conflict'
elseif (kind == 'r') ~= (ARGV[3] ~= ARGV[14]) then
  return 'conflict'
end
local changed = tonumber(ARGV[13])
local cap = tonumber(ARGV[12])
if kind == 'r' then
  redis.call('DEL', KEYS[3])
  for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
  for i = 1, changed do
    local points = cjson.decode(ARGV[14 + i])
    for j = 1, #points, 1000 do
      redis.call('RPUSH', KEYS[3 + i], unpack(points, j, math.min(j + 999, #points)))
    end
  end
elseif kind == 'd' then
  for i = 1, changed do
    redis.call('RPUSH', KEYS[3 + i], ARGV[14 + i])
    redis.call('LTRIM', KEYS[3 + i], -cap, -1)
  end
  for i = 4 + changed, #KEYS do redis.call('DEL', KEYS[i]) end
end
local id
if kind == 'u' then
  local last = redis.call('HGET', KEYS[2], 'last_u')
  if last then redis.call('XDEL', KEYS[3], last) end
  id = ARGV[5] .. '-*'
else
  id = ARGV[5] .. '-0'
end
id = redis.call('XADD', KEYS[3], 'MINID', ARGV[11], id,
  'k', kind, 'gen', ARGV[3], 'seq', ARGV[5], 'ts', ARGV[6], 'frame', ARGV[7], 'up', ARGV[8])
if kind == 'u' then
  redis.call('HSET', KEYS[2], 'last_u', id)
else
  redis.call('HDEL', KEYS[2], 'last_u')
  redis.call('HSET', KEYS[2], 'ts', ARGV[6], 'snapshot', ARGV[9])
end
redis.call('HSET', KEYS[2], 'gen', ARGV[3], 'seq', ARGV[5], 'up', ARGV[8], 'polled', ARGV[10])
return 'ok'
";

/// KEYS: 1 lease, 2 state, 3 waiting. ARGV: 1 token, 2 upstream state (JSON), 3 expiry (ms).
/// The leader's view of the upstream while the cluster has no data yet (every poll so far
/// failed), so that followers say why, as a standalone server does. Returns 'ok', 'fenced', or
/// 'conflict' when there is state after all (the caller reloads and publishes normally).
const WAITING: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'conflict' end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return 'ok'
";

/// How long the waiting key outlives the leader's last failed poll: readers use it only while
/// they have no data, and a first good poll makes it moot; this only tidies it away.
const WAITING_EXPIRY: Duration = Duration::from_secs(3_600);

/// What the leader builds its next delta on: the shared state as of its last publication.
#[derive(Debug, Clone)]
struct Base {
    generation: String,
    seq: u64,
    rates: Rates,
    /// The state read is behind this `seq`, which this leader published or its replica served
    /// (in this generation or a later one): the shared state lost acknowledged writes (a
    /// failover to a replica that had not received them — or had stopped replicating a
    /// generation ago —, a restart from an older RDB/AOF). Building on it would re-issue served
    /// `seq`s with other content, or take `seq` back, so the next publication starts a new
    /// generation (epoch) above this mark instead.
    lost_writes_after: Option<u64>,
}

/// The shared state's head, read when a replica takes the lease.
#[derive(Debug, Default)]
pub(super) struct Head {
    /// When the last leader polled: the next poll waits for the interval from there.
    pub polled: Option<SystemTime>,
    /// The last leader's view of the upstream (failure count, last error).
    pub upstream: Option<UpstreamState>,
}

/// `gen`, `seq`, `snapshot`, `polled`, `up` of the state hash.
type HeadFields = (
    Option<String>,
    Option<u64>,
    Option<String>,
    Option<u64>,
    Option<String>,
);

/// What one publication was.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Published {
    Delta(u64),
    Confirm,
    /// A new generation (the state was missing: first start, or Redis was emptied).
    Reset(u64),
    /// A new generation replacing a state that lost writes this leader published or served.
    NewEpoch(u64),
    /// A failure before any state exists: only the upstream state, under the waiting key.
    Waiting,
}

impl Published {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delta(_) => "delta",
            Self::Confirm => "confirm",
            Self::Reset(_) => "reset",
            Self::NewEpoch(_) => "new_epoch",
            Self::Waiting => "waiting",
        }
    }
}

pub(super) struct Publisher {
    conn: Conn,
    keys: Keys,
    script: Script,
    waiting: Script,
    /// Seeds a new generation's history and keeps `seq` above what this replica served.
    store: Arc<Store>,
    base: Option<Base>,
    /// The highest `seq` this publisher published, with its generation: with what its replica
    /// served, the high-water mark a reloaded state must not be behind.
    published: Option<(String, u64)>,
}

impl Publisher {
    pub fn new(conn: Conn, keys: Keys, store: Arc<Store>) -> Self {
        Self {
            conn,
            keys,
            script: Script::new(PUBLISH),
            waiting: Script::new(WAITING),
            store,
            base: None,
            published: None,
        }
    }

    /// `Some(mark)` when a state at `seq` of `generation` is behind what this leader published
    /// or its replica served, in any generation: a lower `seq`, or the same `seq` of another
    /// generation. Generations count too: a Redis replica that stopped replicating a generation
    /// ago and is then promoted brings back an older generation at a lower `seq`.
    fn lost_writes(&self, generation: &str, seq: u64) -> Option<u64> {
        let (epoch, held, _) = self.store.head();
        let served = self
            .store
            .view()
            .is_some()
            .then(|| (epoch.to_string(), held));
        let (mark_generation, mark) = [self.published.clone(), served]
            .into_iter()
            .flatten()
            .max_by_key(|&(_, seq)| seq)?;
        (mark > seq || (mark == seq && mark_generation != generation)).then_some(mark)
    }

    /// The table the shared state holds, as last loaded or published.
    pub fn served(&self) -> Option<&Rates> {
        self.base.as_ref().map(|base| &base.rates)
    }

    /// Reads the shared state's head and what to build on (when taking the lease, and after a
    /// conflict).
    pub async fn load(&mut self) -> Result<Head, ClusterError> {
        let (generation, seq, snapshot, polled, upstream): HeadFields = redis::cmd("HMGET")
            .arg(&self.keys.state)
            .arg(&["gen", "seq", "snapshot", "polled", "up"])
            .query_async(&mut self.conn)
            .await?;
        self.base = match (generation, seq, snapshot) {
            (Some(generation), Some(seq), Some(snapshot)) => {
                let lost_writes_after = self.lost_writes(&generation, seq);
                if let Some(mark) = lost_writes_after {
                    warn!(
                        generation,
                        seq,
                        mark,
                        "cluster: the shared state lost writes already served; starting a new epoch"
                    );
                }
                Some(Base {
                    rates: serde_json::from_str(&snapshot)
                        .map_err(|e| ClusterError::Data(format!("snapshot: {e}")))?,
                    generation,
                    seq,
                    lost_writes_after,
                })
            }
            _ => None,
        };
        Ok(Head {
            polled: polled.map(|ms| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
            upstream: upstream.and_then(|u| serde_json::from_str(&u).ok()),
        })
    }

    /// Publishes one poll's outcome: `Some(rates)` after a good poll (a delta, or a
    /// confirmation when nothing changed), `None` after a failure (the upstream state only).
    /// On a conflict it reloads the state and tries once more.
    pub async fn publish(
        &mut self,
        lease: &Lease,
        rates: Option<&Rates>,
        upstream: &UpstreamState,
        now: SystemTime,
    ) -> Result<Published, ClusterError> {
        for _ in 0..2 {
            match self.try_publish(lease, rates, upstream, now).await {
                Err(ClusterError::Conflict) => {
                    self.load().await?;
                }
                other => return other,
            }
        }
        Err(ClusterError::Conflict)
    }

    /// No state yet and the poll failed: the upstream state alone, for followers to show.
    async fn publish_waiting(
        &mut self,
        lease: &Lease,
        up: &str,
    ) -> Result<Published, ClusterError> {
        let result: String = self
            .waiting
            .key(&self.keys.lease)
            .key(&self.keys.state)
            .key(&self.keys.waiting)
            .arg(&lease.token)
            .arg(up)
            .arg(WAITING_EXPIRY.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await?;
        match result.as_str() {
            "ok" => Ok(Published::Waiting),
            "fenced" => Err(ClusterError::Fenced),
            "conflict" => Err(ClusterError::Conflict),
            other => Err(ClusterError::Data(format!("waiting answered {other:?}"))),
        }
    }

    /// A new generation's history lists (as JSON arrays, in `table`'s order): what this replica
    /// holds, plus the new value where it differs from the last point.
    fn seed_history(&self, table: &Rates, ts: u64) -> Result<Vec<String>, ClusterError> {
        let histories = self.store.histories(&BTreeSet::new());
        table
            .iter()
            .map(|(code, rate)| {
                let held = histories.get(code);
                let mut series: Vec<String> = held
                    .map(|s| s.iter().map(|(t, v)| format!("{t} {v}")).collect())
                    .unwrap_or_default();
                if held.and_then(|s| s.last()).map(|p| p.1) != Some(rate.value) {
                    series.push(format!("{ts} {}", rate.value));
                }
                let skip = series.len().saturating_sub(HISTORY_POINTS);
                serde_json::to_string(&series[skip..])
                    .map_err(|e| ClusterError::Data(e.to_string()))
            })
            .collect()
    }

    async fn try_publish(
        &mut self,
        lease: &Lease,
        rates: Option<&Rates>,
        upstream: &UpstreamState,
        now: SystemTime,
    ) -> Result<Published, ClusterError> {
        let ts = unix_ms(now);
        let up = serde_json::to_string(upstream).map_err(|e| ClusterError::Data(e.to_string()))?;
        let mut invocation = self.script.key(&self.keys.lease);
        invocation.key(&self.keys.state).key(&self.keys.stream);
        let (published, next_base, kind, generation, built_on, held, seq, frame, snapshot);
        let mut points: Vec<String> = Vec::new();
        let lost = self.base.as_ref().and_then(|b| b.lost_writes_after);
        match (&self.base, rates) {
            (None, None) => return self.publish_waiting(lease, &up).await,
            (None, Some(_))
            | (
                Some(Base {
                    lost_writes_after: Some(_),
                    ..
                }),
                _,
            ) => {
                // A new generation: a `seq` above any of an earlier one (1,024 per ms of wall
                // time since the epoch stays below 2^53 until the 23rd century), above what
                // this replica served and above the high-water mark of lost writes. Its table:
                // this poll's, or after a failed poll the newest this replica served (the
                // shared state's is older than what was served).
                let served = self.store.view();
                let new_seq = (ts * 1_024)
                    .max(served.as_ref().map_or(0, |v| v.seq) + 1)
                    .max(lost.unwrap_or(0) + 1);
                let table = match (rates, &served, &self.base) {
                    (Some(rates), _, _) => rates.clone(),
                    (None, Some(view), _) => (*view.rates).clone(),
                    (None, None, Some(base)) => base.rates.clone(),
                    (None, None, None) => unreachable!("matched above"),
                };
                for code in table.keys() {
                    invocation.key(self.keys.history(code));
                }
                points = self.seed_history(&table, ts)?;
                kind = "r";
                generation = format!("{:016x}", rand::rng().random::<u64>());
                (built_on, held) = match &self.base {
                    Some(base) => (base.generation.clone(), base.seq.to_string()),
                    None => (String::new(), String::new()),
                };
                seq = new_seq;
                frame = Vec::new();
                published = match lost {
                    Some(_) => Published::NewEpoch(new_seq),
                    None => Published::Reset(new_seq),
                };
                next_base = Some(Base {
                    generation: generation.clone(),
                    seq,
                    rates: table.clone(),
                    lost_writes_after: None,
                });
                snapshot = Some(table);
            }
            (Some(base), rates) => {
                let changes = rates.map(|r| diff(&base.rates, r)).unwrap_or_default();
                generation = base.generation.clone();
                built_on = base.generation.clone();
                held = base.seq.to_string();
                if changes.is_empty() {
                    kind = "u";
                    seq = base.seq;
                    frame = Vec::new();
                    snapshot = None;
                    published = Published::Confirm;
                    next_base = Some(base.clone());
                } else {
                    kind = "d";
                    seq = base.seq + 1;
                    let table = rates.cloned().unwrap_or_default();
                    frame = delta_frame(&generation, seq, ts, &changes, table_checksum(&table))
                        .to_vec();
                    for (code, change) in &changes.changed {
                        invocation.key(self.keys.history(code));
                        points.push(format!("{ts} {}", change.rate.value));
                    }
                    for code in &changes.removed {
                        invocation.key(self.keys.history(code));
                    }
                    published = Published::Delta(seq);
                    next_base = Some(Base {
                        generation: generation.clone(),
                        seq,
                        rates: table.clone(),
                        lost_writes_after: None,
                    });
                    snapshot = Some(table);
                }
            }
        }
        let snapshot = match snapshot {
            Some(rates) => {
                serde_json::to_string(&rates).map_err(|e| ClusterError::Data(e.to_string()))?
            }
            None => String::new(),
        };
        invocation
            .arg(&lease.token)
            .arg(kind)
            .arg(&generation)
            .arg(&held)
            .arg(seq.to_string())
            .arg(ts.to_string())
            .arg(frame)
            .arg(up)
            .arg(snapshot)
            .arg(ts.to_string())
            .arg(seq.saturating_sub(STREAM_DELTAS - 1).to_string())
            .arg(HISTORY_POINTS)
            .arg(points.len())
            .arg(&built_on);
        for point in &points {
            invocation.arg(point);
        }
        let result: String = invocation.invoke_async(&mut self.conn).await?;
        match result.as_str() {
            "ok" => {
                if let Some(base) = &next_base
                    && self
                        .published
                        .as_ref()
                        .is_none_or(|(_, seq)| base.seq >= *seq)
                {
                    self.published = Some((base.generation.clone(), base.seq));
                }
                self.base = next_base;
                Ok(published)
            }
            "fenced" => Err(ClusterError::Fenced),
            "conflict" => Err(ClusterError::Conflict),
            other => Err(ClusterError::Data(format!("publish answered {other:?}"))),
        }
    }
}
