//! The versioned rates store: current table, `seq`, a ring of recent deltas (for resume), a
//! per-unit history (for sparklines), the upstream state, and the broadcast of every change.
//!
//! Every stream frame is serialised here, once, when the change happens; the fan-out writes
//! those bytes to every socket.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use ratecast_protocol::checksum::table_checksum;
use ratecast_protocol::frames::{self as protocol, ServerFrame};
use ratecast_protocol::rates::{Change, Changes, Rate, Rates, diff};
use ratecast_protocol::time::unix_ms;
use ratecast_protocol::{Failover, Source, UpstreamState, UpstreamStatus};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub source: Source,
    /// Deltas kept for `?since=` resume.
    pub ring_capacity: usize,
    /// Points kept per unit, and their maximum age, for `/api/v1/history`.
    pub history_points: usize,
    pub history_window: Duration,
    /// Data older than this is flagged stale even if the upstream has not been declared down.
    pub stale_after: Duration,
    /// Events buffered per fan-out shard before the shard lags and resyncs its subscribers.
    pub broadcast_capacity: usize,
    /// Cluster mode: how long a `?since=` a few deltas ahead of the held `seq` waits for this
    /// replica to catch up (see [`Store::catch_up`]). `None` standalone, where a `since` ahead
    /// can only come from another process and is answered with a snapshot at once.
    pub resume_catch_up: Option<Duration>,
}

impl StoreConfig {
    pub fn new(source: Source, stale_after: Duration) -> Self {
        Self {
            source,
            ring_capacity: 1_024,
            history_points: 2_880,
            history_window: Duration::from_secs(24 * 3600),
            stale_after,
            broadcast_capacity: 256,
            resume_catch_up: None,
        }
    }
}

/// One published change, with its full-feed frame serialised once.
#[derive(Debug)]
pub struct DeltaEvent {
    /// The epoch `seq` belongs to: a subscriber of another epoch gets a snapshot instead.
    pub epoch: Arc<str>,
    pub seq: u64,
    pub ts: u64,
    pub changes: Changes,
    pub frame: Bytes,
}

/// What the broadcast channel carries: cheap to clone (an `Arc` or a `Bytes`).
#[derive(Debug, Clone)]
pub enum Event {
    Delta(Arc<DeltaEvent>),
    /// A pre-serialised status frame.
    Status(Bytes),
}

/// The current table and everything derived from it, rebuilt on each change.
#[derive(Debug)]
pub struct View {
    /// The stream's epoch (docs/protocol.md): `seq`s compare only within one.
    pub epoch: Arc<str>,
    pub seq: u64,
    /// Publish time of `seq` (ms since the epoch).
    pub ts: u64,
    pub updated_at: SystemTime,
    pub source: Source,
    pub stale: bool,
    pub upstream: UpstreamState,
    pub rates: Arc<Rates>,
    /// [`table_checksum`] of `rates`, computed once per view.
    pub checksum: u32,
    /// Full-feed snapshot frame.
    pub snapshot_frame: Bytes,
    /// Why the data is stale or missing (the status frame's `reason`), for the REST body.
    pub reason: Option<String>,
}

/// A whole state taken from elsewhere (the cluster's Redis), replacing this store's.
#[derive(Debug, Clone)]
pub struct Restore {
    /// The shared state's epoch (the cluster's generation).
    pub epoch: Arc<str>,
    pub seq: u64,
    /// Publish time of `seq` (ms since the epoch).
    pub ts: u64,
    pub rates: Rates,
    pub upstream: UpstreamState,
    /// Points per unit, oldest first.
    pub history: HashMap<String, Vec<(u64, f64)>>,
    /// The newest published deltas with their frames as published, oldest first, ending at
    /// `seq` (kept for `?since=` when contiguous).
    pub deltas: Vec<(protocol::Delta, Bytes)>,
}

/// Why a published delta was not applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("delta {got} does not follow seq {held}")]
    NotNext { held: u64, got: u64 },
    #[error("no state to apply a delta to")]
    NoState,
    #[error("delta {seq} belongs to epoch {got:?}, not the held {held:?}")]
    OtherEpoch {
        held: Arc<str>,
        got: String,
        seq: u64,
    },
    /// The table this delta leads to is not the one it was published with: the held table is
    /// not the one the publisher built on (a lost write re-issued this `seq`).
    #[error("delta {seq}: the table after it has checksum {ours}, the publisher's had {theirs}")]
    Checksum { seq: u64, ours: u32, theirs: u32 },
}

/// Why a whole state was not restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    /// A lower `seq` than served (or the same of another epoch): the shared state lost writes
    /// this replica already served. Serving it would take `seq` back and re-issue served `seq`s
    /// with other content; the publisher starts a new epoch instead.
    #[error("the shared state is at seq {got}, behind the {held} already served")]
    Behind { held: u64, got: u64 },
}

/// Resume outcome for `?since=`.
pub enum Resume {
    /// Every delta after `since` is held: replay these, then go live.
    Replay(Vec<Arc<DeltaEvent>>),
    /// Not all are held (or `since` is from another process): start from a snapshot.
    Snapshot,
}

pub struct Store {
    config: StoreConfig,
    inner: RwLock<Inner>,
    events: broadcast::Sender<Event>,
    /// The held epoch and `seq` once there is data (`None` before), for connections waiting to
    /// catch up ([`Store::catch_up`]).
    held: watch::Sender<Option<(Arc<str>, u64)>>,
}

/// A `since` at most this many deltas ahead of the held `seq` is waited for in cluster mode:
/// replicas apply the shared stream within milliseconds of each other, so a client that left a
/// replica a moment ahead is at most a delta or two ahead; anything further is not from this
/// cluster's stream and gets its snapshot without waiting.
const CATCH_UP_DELTAS: u64 = 16;

struct Inner {
    /// Standalone: new per process. Cluster mode: the shared state's generation.
    epoch: Arc<str>,
    seq: u64,
    rates: Arc<Rates>,
    /// [`table_checksum`] of `rates`, computed once whenever they change.
    checksum: u32,
    upstream: UpstreamState,
    stale: bool,
    view: Option<Arc<View>>,
    /// The newest status frame, for connections that arrive before the first data.
    status_frame: Bytes,
    ring: VecDeque<Arc<DeltaEvent>>,
    history: HashMap<String, VecDeque<(u64, f64)>>,
    /// Cluster mode: why the link to the shared state is down (a bounded kind); the data is
    /// then stale whatever the upstream says. Always `None` standalone.
    backplane_fault: Option<&'static str>,
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        let (events, _) = broadcast::channel(config.broadcast_capacity);
        let store = Self {
            held: watch::Sender::new(None),
            inner: RwLock::new(Inner {
                epoch: new_epoch(),
                seq: initial_seq(),
                rates: Arc::default(),
                checksum: table_checksum(&Rates::new()),
                upstream: UpstreamState::default(),
                stale: false,
                view: None,
                status_frame: Bytes::new(),
                ring: VecDeque::with_capacity(config.ring_capacity),
                history: HashMap::new(),
                backplane_fault: None,
            }),
            config,
            events,
        };
        {
            let mut inner = store.write();
            inner.status_frame = store.status_frame(&inner, unix_ms(SystemTime::now()));
        }
        store
    }

    pub fn source(&self) -> Source {
        self.config.source
    }

    /// Applies an accepted poll. Returns the new `seq` when anything changed.
    pub fn apply(&self, rates: Rates, now: SystemTime) -> Option<u64> {
        let mut inner = self.write();
        let changes = diff(&inner.rates, &rates);
        if changes.is_empty() {
            return None;
        }
        let seq = inner.seq + 1;
        let ts = unix_ms(now);
        let checksum = table_checksum(&rates);
        let frame = delta_frame(&inner.epoch, seq, ts, &changes, checksum);
        self.push_delta(&mut inner, (rates, checksum), changes, seq, ts, frame, now);
        Some(seq)
    }

    /// Applies a delta published elsewhere (cluster mode), with its frame as published so that
    /// every replica sends the same bytes. It must follow the held `seq` in the held epoch, and
    /// lead to the table the publisher had (its checksum): a replica never serves a table that
    /// differs from the one the frame's checksum names.
    pub fn apply_published(
        &self,
        delta: &protocol::Delta,
        frame: Bytes,
        now: SystemTime,
    ) -> Result<u64, ApplyError> {
        let mut inner = self.write();
        if inner.view.is_none() {
            return Err(ApplyError::NoState);
        }
        if delta.seq != inner.seq + 1 {
            return Err(ApplyError::NotNext {
                held: inner.seq,
                got: delta.seq,
            });
        }
        if *delta.epoch != *inner.epoch {
            return Err(ApplyError::OtherEpoch {
                held: inner.epoch.clone(),
                got: delta.epoch.clone(),
                seq: delta.seq,
            });
        }
        let changes = changes_of(delta);
        let mut rates = (*inner.rates).clone();
        apply_changes(&mut rates, &changes);
        let ours = table_checksum(&rates);
        if let Some(theirs) = delta.checksum
            && theirs != ours
        {
            return Err(ApplyError::Checksum {
                seq: delta.seq,
                ours,
                theirs,
            });
        }
        self.push_delta(
            &mut inner,
            (rates, ours),
            changes,
            delta.seq,
            delta.ts,
            frame,
            now,
        );
        Ok(delta.seq)
    }

    #[allow(clippy::too_many_arguments)]
    fn push_delta(
        &self,
        inner: &mut Inner,
        (rates, checksum): (Rates, u32),
        changes: Changes,
        seq: u64,
        ts: u64,
        frame: Bytes,
        now: SystemTime,
    ) {
        self.record_history(inner, &changes, ts, now);
        // The event holds no table: the ring keeps 1,024 of them, and filtered subscribers
        // take their checksum from the view (the soak measured ~10 MB of tables otherwise).
        let rates = Arc::new(rates);
        let event = Arc::new(DeltaEvent {
            epoch: inner.epoch.clone(),
            seq,
            ts,
            changes,
            frame,
        });
        if inner.ring.len() == self.config.ring_capacity {
            inner.ring.pop_front();
        }
        inner.ring.push_back(event.clone());
        inner.seq = seq;
        self.held.send_replace(Some((inner.epoch.clone(), seq)));
        inner.rates = rates;
        inner.checksum = checksum;
        inner.stale = self.is_stale(inner, now);
        self.rebuild_view(inner, ts, now);
        // Sent under the write lock so that a subscriber's snapshot and its receiver agree.
        let _ = self.events.send(Event::Delta(event));
    }

    /// Replaces the whole state (cluster mode: on start, after a gap, or when the cluster's
    /// Redis was emptied or started a new epoch). Connected clients get one delta event from
    /// the old table to the new one at the new `seq`: full-feed subscribers whose `seq` it does
    /// not follow, and every subscriber when the epoch changed, are resynced with a snapshot by
    /// the fan-out, never replayed. The ring holds only the given deltas, so a `since=` from
    /// before is answered with a snapshot.
    ///
    /// A state behind the held `seq` — of this epoch or another, or at the same `seq` of
    /// another epoch — is refused ([`RestoreError::Behind`]): `seq` never goes back, and a new
    /// epoch always starts above every `seq` served (the publisher's high-water mark).
    pub fn restore(&self, restore: Restore, now: SystemTime) -> Result<(), RestoreError> {
        let (same, changes) = {
            let inner = self.read();
            if inner.view.is_some()
                && (restore.seq < inner.seq
                    || (restore.seq == inner.seq && inner.epoch != restore.epoch))
            {
                return Err(RestoreError::Behind {
                    held: inner.seq,
                    got: restore.seq,
                });
            }
            let same =
                inner.view.is_some() && inner.seq == restore.seq && inner.epoch == restore.epoch;
            (same, diff(&inner.rates, &restore.rates))
        };
        if same && changes.is_empty() {
            self.set_upstream(restore.upstream, now);
            return Ok(());
        }
        let mut inner = self.write();
        inner.epoch = restore.epoch.clone();
        inner.upstream = restore.upstream;
        inner.ring.clear();
        let mut expected = None;
        for (delta, frame) in restore.deltas.into_iter().rev() {
            if expected.is_some_and(|e| e != delta.seq)
                || (expected.is_none() && delta.seq != restore.seq)
            {
                break;
            }
            expected = Some(delta.seq - 1);
            if *delta.epoch != *restore.epoch {
                break;
            }
            let changes = changes_of(&delta);
            inner.ring.push_front(Arc::new(DeltaEvent {
                epoch: restore.epoch.clone(),
                seq: delta.seq,
                ts: delta.ts,
                changes,
                frame,
            }));
            if inner.ring.len() == self.config.ring_capacity {
                break;
            }
        }
        tracing::debug!(
            seq = restore.seq,
            ring = inner.ring.len(),
            "restored the shared state"
        );
        let oldest = unix_ms(now).saturating_sub(self.config.history_window.as_millis() as u64);
        inner.history = restore
            .history
            .into_iter()
            .map(|(code, points)| {
                let skip = points.len().saturating_sub(self.config.history_points);
                let kept = points.into_iter().skip(skip).filter(|&(t, _)| t >= oldest);
                (code, kept.collect())
            })
            .collect();
        inner.seq = restore.seq;
        self.held
            .send_replace(Some((restore.epoch.clone(), restore.seq)));
        let rates = Arc::new(restore.rates);
        let checksum = table_checksum(&rates);
        inner.rates = rates.clone();
        inner.checksum = checksum;
        inner.stale = self.is_stale(&inner, now);
        self.rebuild_view(&mut inner, restore.ts, now);
        let event = Arc::new(DeltaEvent {
            frame: delta_frame(&restore.epoch, restore.seq, restore.ts, &changes, checksum),
            epoch: restore.epoch,
            seq: restore.seq,
            ts: restore.ts,
            changes,
        });
        let _ = self.events.send(Event::Delta(event));
        inner.status_frame = self.status_frame(&inner, unix_ms(now));
        let _ = self.events.send(Event::Status(inner.status_frame.clone()));
        Ok(())
    }

    /// The upstream state as the cluster's leader reported it (cluster mode).
    pub fn set_upstream(&self, upstream: UpstreamState, now: SystemTime) {
        self.update(now, |inner| inner.upstream = upstream);
    }

    /// Cluster mode: the link to the shared state is down (`Some(kind)`) or back (`None`).
    /// While down the data is stale, and the status frame and REST body say why.
    pub fn set_backplane_fault(&self, fault: Option<&'static str>, now: SystemTime) {
        self.update(now, |inner| inner.backplane_fault = fault);
    }

    /// A poll succeeded: the upstream confirmed the rates now, changed or not (the stale clock
    /// restarts here, so an upstream that keeps answering the same numbers never goes stale).
    /// `failover`: set while a fallback source gave these rates in place of the primary.
    pub fn record_success(&self, now: SystemTime, failover: Option<Failover>) {
        self.update_upstream(now, |state| {
            state.record_success(now);
            state.failover = failover;
        });
    }

    /// A poll failed with `kind`; the poller tries again at `next_attempt`.
    pub fn record_failure(&self, kind: &str, now: SystemTime, next_attempt: Option<SystemTime>) {
        self.update_upstream(now, |state| state.record_failure(kind, next_attempt));
    }

    /// Re-evaluates the stale flag as time passes (no poll needed to go stale).
    pub fn refresh_stale(&self, now: SystemTime) {
        self.update_upstream(now, |_| {});
    }

    fn update_upstream(&self, now: SystemTime, update: impl FnOnce(&mut UpstreamState)) {
        self.update(now, |inner| update(&mut inner.upstream));
    }

    fn update(&self, now: SystemTime, update: impl FnOnce(&mut Inner)) {
        let mut inner = self.write();
        let visible = |inner: &Inner| {
            let u = &inner.upstream;
            (
                u.status,
                inner.stale,
                u.last_error.clone(),
                u.consecutive_failures,
                u.failover.clone(),
                inner.backplane_fault,
            )
        };
        let before = visible(&inner);
        update(&mut inner);
        inner.stale = self.is_stale(&inner, now);
        let ts = unix_ms(now);
        // Views change when anything in them does (the REST body carries `last_success`).
        if let Some(view) = &inner.view
            && (view.upstream != inner.upstream
                || view.stale != inner.stale
                || view.reason != self.reason(&inner))
        {
            let (view_ts, updated_at) = (view.ts, view.updated_at);
            self.rebuild_view(&mut inner, view_ts, updated_at);
        }
        // Status frames only when something a viewer reads changes: not on every good poll.
        if before != visible(&inner) {
            inner.status_frame = self.status_frame(&inner, ts);
            let _ = self.events.send(Event::Status(inner.status_frame.clone()));
        }
    }

    fn status_frame(&self, inner: &Inner, ts: u64) -> Bytes {
        ServerFrame::Status(protocol::Status {
            epoch: inner.epoch.to_string(),
            ts,
            source: self.config.source,
            stale: inner.stale,
            upstream: inner.upstream.clone(),
            reason: self.reason(inner),
            updated_at: inner.view.as_ref().map(|v| unix_ms(v.updated_at)),
            checked_at: inner.upstream.last_success.map(unix_ms),
        })
        .encode()
    }

    /// Why the data is missing or stale, in words for the people reading a status line.
    fn reason(&self, inner: &Inner) -> Option<String> {
        let upstream = &inner.upstream;
        let failing = upstream.consecutive_failures > 0;
        let error = upstream
            .last_error
            .as_deref()
            .map(|kind| describe_error(self.config.source, kind));
        if let Some(fault) = inner.backplane_fault {
            return Some(match fault {
                "behind" => "the cluster's shared state lost its newest writes; serving the last data it published until the cluster starts a new epoch".to_owned(),
                fault => format!(
                    "lost contact with the cluster's shared state ({fault}); serving the last data it published"
                ),
            });
        }
        match (&inner.view, inner.stale, failing, error) {
            (None, _, true, Some(error)) => Some(error),
            (Some(_), true, true, Some(error)) => Some(error),
            (Some(_), true, _, _) => Some(format!(
                "{} has not confirmed the rates for over {}",
                self.config.source.name(),
                humantime::format_duration(self.config.stale_after)
            )),
            _ => None,
        }
    }

    /// The newest status frame: what a connection that arrives before the first data is told.
    pub fn current_status(&self) -> Bytes {
        self.read().status_frame.clone()
    }

    /// When the upstream last confirmed the rates (ms since the epoch).
    pub fn checked_at(&self) -> Option<u64> {
        self.read().upstream.last_success.map(unix_ms)
    }

    /// Stale = not confirmed current: the upstream is down, or its last good answer is older
    /// than the threshold. The age of the last *change* does not matter (CoinGecko may answer
    /// the same numbers for minutes). The demo source ages out exactly like CoinGecko (one
    /// branch for both, so drills time the production path); a demo polled less often than
    /// `--stale-after` (an idle bench) must raise `--stale-after` above its poll interval.
    fn is_stale(&self, inner: &Inner, now: SystemTime) -> bool {
        if inner.backplane_fault.is_some() {
            return true;
        }
        let upstream = &inner.upstream;
        let unconfirmed = upstream
            .last_success
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > self.config.stale_after);
        upstream.status == UpstreamStatus::Down || unconfirmed
    }

    fn rebuild_view(&self, inner: &mut Inner, ts: u64, updated_at: SystemTime) {
        let checksum = inner.checksum;
        let snapshot_frame = ServerFrame::Snapshot(protocol::Snapshot {
            epoch: inner.epoch.to_string(),
            seq: inner.seq,
            ts,
            source: self.config.source,
            stale: inner.stale,
            checked_at: inner.upstream.last_success.map(unix_ms),
            rates: (*inner.rates).clone(),
            failover: inner.upstream.failover.clone(),
            checksum: Some(checksum),
        })
        .encode();
        let reason = self.reason(inner);
        inner.view = Some(Arc::new(View {
            epoch: inner.epoch.clone(),
            checksum,
            seq: inner.seq,
            ts,
            updated_at,
            source: self.config.source,
            stale: inner.stale,
            upstream: inner.upstream.clone(),
            rates: inner.rates.clone(),
            snapshot_frame,
            reason,
        }));
    }

    fn record_history(&self, inner: &mut Inner, changes: &Changes, ts: u64, now: SystemTime) {
        let oldest = unix_ms(now).saturating_sub(self.config.history_window.as_millis() as u64);
        for (code, change) in &changes.changed {
            let points = inner.history.entry(code.clone()).or_default();
            while points.len() >= self.config.history_points
                || points.front().is_some_and(|&(t, _)| t < oldest)
            {
                points.pop_front();
            }
            points.push_back((ts, change.rate.value));
        }
        for code in &changes.removed {
            inner.history.remove(code);
        }
    }

    /// The current view; `None` until the first good poll.
    pub fn view(&self) -> Option<Arc<View>> {
        self.read().view.clone()
    }

    pub fn seq(&self) -> u64 {
        self.read().seq
    }

    /// The current epoch (standalone: this process's; cluster mode: the shared state's once
    /// loaded).
    pub fn epoch(&self) -> Arc<str> {
        self.read().epoch.clone()
    }

    /// The epoch and `seq` held, and the frame published at that `seq` (`None` before any
    /// delta): what a cluster reader compares a stream entry with.
    pub fn head(&self) -> (Arc<str>, u64, Option<Bytes>) {
        let inner = self.read();
        let frame = inner
            .ring
            .back()
            .filter(|d| d.seq == inner.seq)
            .map(|d| d.frame.clone());
        (inner.epoch.clone(), inner.seq, frame)
    }

    /// History of one unit, oldest first; `None` for a unit not currently served.
    pub fn history(&self, code: &str) -> Option<Vec<(u64, f64)>> {
        let inner = self.read();
        inner.rates.get(code)?;
        Some(
            inner
                .history
                .get(code)
                .map(|p| p.iter().copied().collect())
                .unwrap_or_default(),
        )
    }

    /// Histories of the served units among `codes` (all served units when empty).
    pub fn histories(&self, codes: &BTreeSet<String>) -> BTreeMap<String, Vec<(u64, f64)>> {
        let inner = self.read();
        let points = |code: &String| {
            let series = inner.history.get(code).map(|p| p.iter().copied().collect());
            (code.clone(), series.unwrap_or_default())
        };
        if codes.is_empty() {
            inner.rates.keys().map(points).collect()
        } else {
            codes
                .iter()
                .filter(|c| inner.rates.contains_key(*c))
                .map(points)
                .collect()
        }
    }

    /// The stream of changes from now on. A subscriber that then takes [`Store::view`] or
    /// [`Store::resume`] sees every event after that view's `seq` on this receiver.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Cluster mode: waits (at most [`StoreConfig::resume_catch_up`]) until a `?since=` can be
    /// answered as the cluster would: until this replica has loaded the shared state (a
    /// restarted replica may be handed connections by a load balancer before its first load),
    /// and, when `since` is a few deltas ahead of the held `seq`, until it holds `since` (the
    /// client left a replica that applied the shared stream a moment earlier). The client then
    /// gets its replay instead of a snapshot. Returns at once standalone.
    pub async fn catch_up(&self, since: u64, epoch: Option<&str>) {
        let Some(limit) = self.config.resume_catch_up else {
            return;
        };
        // Once loaded, a `since` of another epoch (or none) is answered at once: a snapshot.
        let answerable = |held: &Option<(Arc<str>, u64)>| {
            held.as_ref().is_some_and(|(held_epoch, h)| {
                epoch != Some(&**held_epoch) || since <= *h || since - h > CATCH_UP_DELTAS
            })
        };
        let mut held = self.held.subscribe();
        if answerable(&held.borrow_and_update()) {
            return;
        }
        let waited = tokio::time::timeout(limit, held.wait_for(answerable)).await;
        tracing::debug!(
            since,
            caught_up = waited.is_ok(),
            "resume waited for the shared state"
        );
    }

    /// The current view and, when `since` is of the held epoch and every delta after it is
    /// still held, those deltas. A `since` without an epoch (a client older than the field)
    /// or of another epoch gets a snapshot: its `seq` may name other content here.
    pub fn resume(&self, since: u64, epoch: Option<&str>) -> (Option<Arc<View>>, Resume) {
        let inner = self.read();
        let oldest_held = inner.ring.front().map_or(inner.seq + 1, |d| d.seq);
        let resume = if epoch == Some(&*inner.epoch)
            && since <= inner.seq
            && since + 1 >= oldest_held
            && inner.view.is_some()
        {
            Resume::Replay(
                inner
                    .ring
                    .iter()
                    .filter(|d| d.seq > since)
                    .cloned()
                    .collect(),
            )
        } else {
            Resume::Snapshot
        };
        (inner.view.clone(), resume)
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way readers
        // care about (every field is replaced whole), so poisoning is ignored.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The full-feed delta frame of `changes` at `seq`, with the checksum of the table it leads
/// to: built the same way wherever it is built.
pub fn delta_frame(epoch: &str, seq: u64, ts: u64, changes: &Changes, checksum: u32) -> Bytes {
    ServerFrame::Delta(protocol::Delta {
        epoch: epoch.to_owned(),
        seq,
        ts,
        changed: changes
            .changed
            .iter()
            .map(|(code, change)| (code.clone(), change.into()))
            .collect(),
        removed: changes.removed.clone(),
        checksum: Some(checksum),
    })
    .encode()
}

/// The rate model's view of a delta frame.
pub fn changes_of(delta: &protocol::Delta) -> Changes {
    Changes {
        changed: delta
            .changed
            .iter()
            .map(|(code, c)| {
                let rate = Rate {
                    name: c.name.clone(),
                    unit: c.unit.clone(),
                    value: c.value,
                    kind: c.kind.clone(),
                    source: c.source,
                    flag: c.flag,
                };
                (code.clone(), Change { rate, prev: c.prev })
            })
            .collect(),
        removed: delta.removed.clone(),
    }
}

/// `rates` moved forward by `changes`.
pub fn apply_changes(rates: &mut Rates, changes: &Changes) {
    for (code, change) in &changes.changed {
        rates.insert(code.clone(), change.rate.clone());
    }
    for code in &changes.removed {
        rates.remove(code);
    }
}

/// Words for an upstream failure kind (the bounded labels of `UpstreamError::kind`).
fn describe_error(source: Source, kind: &str) -> String {
    let upstream = source.name();
    match kind {
        "timeout" => format!("{upstream} did not answer in time"),
        "connect" => format!("{upstream} is unreachable"),
        "rate_limited" => format!("{upstream}'s rate limit was hit (HTTP 429)"),
        "http_5xx" => format!("{upstream} has a server error"),
        "http_other" => format!("{upstream} refused the request"),
        "too_large" | "body" | "invalid_payload" => format!("{upstream} sent an unusable answer"),
        other => format!("{upstream} failed: {other}"),
    }
}

/// A standalone server's epoch: new per process, so a `since=` from another process (or
/// replica) never names a `seq` of this one.
fn new_epoch() -> Arc<str> {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>()).into()
}

/// `seq` starts at a random per-process offset (below 2^52, so JavaScript reads it exactly):
/// a `since=` that a client got from another replica then falls outside our ring and yields
/// a snapshot instead of a wrong replay.
fn initial_seq() -> u64 {
    use rand::Rng;
    rand::rng().random_range(1u64 << 32..1u64 << 48) << 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(value: f64) -> Rate {
        Rate::new("US Dollar", "$", value, "fiat")
    }

    fn table(usd: f64) -> Rates {
        [
            ("usd".to_string(), rate(usd)),
            ("eur".to_string(), rate(2.0)),
        ]
        .into()
    }

    fn store() -> Store {
        Store::new(StoreConfig::new(
            Source::CoinGecko,
            Duration::from_secs(180),
        ))
    }

    fn restore(seq: u64, usd: f64, deltas: Vec<(protocol::Delta, Bytes)>) -> Restore {
        Restore {
            epoch: "g1".into(),
            seq,
            ts: 1,
            rates: table(usd),
            upstream: UpstreamState::default(),
            history: HashMap::new(),
            deltas,
        }
    }

    fn published(seq: u64, prev: f64, usd: f64) -> (protocol::Delta, Bytes) {
        let changes = diff(&table(prev), &table(usd));
        let frame = delta_frame("g1", seq, seq, &changes, table_checksum(&table(usd)));
        match serde_json::from_slice(&frame).unwrap() {
            ServerFrame::Delta(delta) => (delta, frame),
            _ => unreachable!(),
        }
    }

    #[test]
    fn published_deltas_keep_their_bytes_and_must_follow() {
        let store = store();
        let now = SystemTime::now();
        let (delta, frame) = published(11, 1.0, 1.5);
        assert_eq!(
            store.apply_published(&delta, frame.clone(), now),
            Err(ApplyError::NoState)
        );
        store.restore(restore(10, 1.0, vec![]), now).unwrap();
        assert_eq!(store.apply_published(&delta, frame.clone(), now), Ok(11));
        assert_eq!(store.view().unwrap().rates["usd"].value, 1.5);
        let (gap, gap_frame) = published(13, 1.5, 2.0);
        assert_eq!(
            store.apply_published(&gap, gap_frame, now),
            Err(ApplyError::NotNext { held: 11, got: 13 })
        );
        match store.resume(10, Some("g1")).1 {
            Resume::Replay(deltas) => assert_eq!(deltas[0].frame, frame),
            Resume::Snapshot => panic!("not replayed"),
        }
    }

    #[test]
    fn a_restore_replays_its_deltas_and_snapshots_anything_older() {
        let store = store();
        let now = SystemTime::now();
        store.restore(restore(5, 1.0, vec![]), now).unwrap();
        let mut events = store.events();
        let deltas = vec![published(99, 1.0, 1.5), published(100, 1.5, 2.0)];
        store.restore(restore(100, 2.0, deltas), now).unwrap();
        assert!(matches!(store.resume(98, Some("g1")).1, Resume::Replay(d) if d.len() == 2));
        assert!(matches!(store.resume(97, Some("g1")).1, Resume::Snapshot));
        // A `since` from before the restore (another generation): a snapshot, never a replay.
        assert!(matches!(store.resume(5, Some("g1")).1, Resume::Snapshot));
        // Connected clients hear of it: one delta event at the new seq (the fan-out resyncs
        // those it does not follow).
        match events.try_recv() {
            Ok(Event::Delta(d)) => assert_eq!((d.seq, d.changes.changed.len()), (100, 1)),
            other => panic!("{other:?}"),
        }
    }

    /// A delta published on another table than the one held (a lost write re-issued its `seq`)
    /// is refused by its checksum: the replica never serves a table the publisher did not have.
    #[test]
    fn a_delta_whose_checksum_disagrees_is_not_applied() {
        let store = store();
        let now = SystemTime::now();
        store.restore(restore(10, 1.0, vec![]), now).unwrap();
        // Published on a table where eur was 3.0 (not the 2.0 held): the delta only moves usd,
        // so it applies cleanly here; only the checksum of the table it leads to tells.
        let mut other = table(1.2);
        other.get_mut("eur").unwrap().value = 3.0;
        let mut after = other.clone();
        after.get_mut("usd").unwrap().value = 1.5;
        let changes = diff(&table(1.2), &table(1.5));
        let frame = delta_frame("g1", 11, 11, &changes, table_checksum(&after));
        let ServerFrame::Delta(delta) = serde_json::from_slice(&frame).unwrap() else {
            unreachable!()
        };
        assert!(matches!(
            store.apply_published(&delta, frame, now),
            Err(ApplyError::Checksum { seq: 11, .. })
        ));
        assert_eq!(store.seq(), 10);
        assert_eq!(store.view().unwrap().rates["usd"].value, 1.0);
    }

    /// `seq` never goes back: an older state, of this epoch or another, is refused; a new epoch
    /// above it is taken and sent to every subscriber.
    #[test]
    fn an_older_state_is_refused_whatever_its_epoch() {
        let store = store();
        let now = SystemTime::now();
        store.restore(restore(10, 1.0, vec![]), now).unwrap();
        assert_eq!(
            store.restore(restore(8, 2.0, vec![]), now),
            Err(RestoreError::Behind { held: 10, got: 8 })
        );
        assert_eq!(store.seq(), 10);
        // Nor may another epoch take `seq` back (a Redis replica promoted with a generation
        // from before), or reuse the held one.
        for seq in [8, 10] {
            let older = Restore {
                epoch: "g0".into(),
                ..restore(seq, 2.0, vec![])
            };
            assert_eq!(
                store.restore(older, now),
                Err(RestoreError::Behind { held: 10, got: seq })
            );
        }
        let mut events = store.events();
        let new_epoch = Restore {
            epoch: "g2".into(),
            ..restore(20, 2.0, vec![])
        };
        store.restore(new_epoch, now).unwrap();
        assert_eq!(&*store.epoch(), "g2");
        match events.try_recv() {
            Ok(Event::Delta(d)) => assert_eq!((&*d.epoch, d.seq), ("g2", 20)),
            other => panic!("{other:?}"),
        }
        // A `since` of the old epoch is never replayed, even at a seq the new one holds.
        assert!(matches!(store.resume(20, Some("g1")).1, Resume::Snapshot));
        assert!(matches!(store.resume(20, None).1, Resume::Snapshot));
    }

    #[test]
    fn a_backplane_fault_is_stale_with_a_reason() {
        let store = store();
        let now = SystemTime::now();
        store.restore(restore(5, 1.0, vec![]), now).unwrap();
        store.record_success(now, None);
        assert!(!store.view().unwrap().stale);
        store.set_backplane_fault(Some("io"), now);
        let view = store.view().unwrap();
        assert!(view.stale);
        assert!(
            view.reason
                .as_deref()
                .unwrap_or("")
                .contains("shared state (io)")
        );
        store.set_backplane_fault(None, now);
        assert!(!store.view().unwrap().stale);
        assert_eq!(store.view().unwrap().reason, None);
    }
}
