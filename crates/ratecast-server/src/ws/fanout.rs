//! Fan-out shards: a few tasks, each owning the write side of many subscribers.
//!
//! On each broadcast event a shard writes the shared, pre-encoded frame to every subscriber
//! with one non-blocking `write()`: no task wake-up, copy, lock or allocation per subscriber
//! on the full feed. Every write — feed, replies, close — goes through the subscriber's
//! [`Outbound`] state machine, so a socket has exactly one writer. A socket that cannot take a
//! frame at once is handed to a short-lived flusher; while it drains, the subscriber misses feed
//! frames and is resynced with a snapshot afterwards. A flusher that cannot drain within the
//! write timeout makes it a slow consumer: it leaves the shard at once and a closer task
//! finishes its cut frame and sends the 1008 close if it reads again within a short grace, then
//! shuts it down both ways, which ends its reader too.
//! A burst yields to the runtime every [`YIELD_EVERY`] writes, so HTTP handlers and readers on
//! the same worker thread are not stalled by a 10k-subscriber fan-out.

use std::collections::{BTreeSet, HashMap};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::deflate::{self, Deflater, Prepared, Run, VARIANTS};
use super::outbound::{Flushed, Flusher, Outbound, Sent, State};
use super::{CloseReason, frame};
use crate::metrics::Metrics;
use crate::store::{DeltaEvent, Event, Resume, Store, View};
use ratecast_protocol::Rates;
use ratecast_protocol::checksum::{filtered_checksum, table_checksum};
use ratecast_protocol::frames::{self as protocol, ServerFrame};
use ratecast_protocol::time::unix_ms;

/// How long after shutdown starts clients have to answer the 1001 before their sockets are
/// shut down both ways.
const SHUTDOWN_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Writes between two cooperative yields during a burst.
pub const YIELD_EVERY: usize = 512;

/// A connected peer, shared by its reader task, its shard and (while draining) its flusher.
pub struct Peer {
    pub id: u64,
    pub stream: TcpStream,
    /// Milliseconds since the shard clock's start when the peer last sent anything.
    pub last_heard: AtomicU64,
    /// Set by the reader when it is done: the shard drops the peer at its next look.
    pub closed: AtomicBool,
    /// The connection's reply budget: a reply or subscribe command holds a permit until its
    /// frame is handed to the socket, so one client's queue is bounded and cannot grow the
    /// shard's (see [`super::outbound::REPLY_BUDGET`]).
    pub replies: Arc<Semaphore>,
    /// The permessage-deflate window it negotiated (`None`: raw frames only).
    pub deflate: Option<u8>,
    /// It negotiated server context takeover: its deltas may come in the shared context.
    pub deflate_takeover: bool,
}

/// What a shard is asked to do. Its queue is unbounded but every sender is budgeted: per
/// connection one `Add`, at most `REPLY_BUDGET` replies/subscribes (each holds a permit), one
/// `Close`, one `Remove` and one `Flushed` per flusher (at most one at a time).
pub enum Command {
    /// A new subscriber: send it a snapshot (or the replay after `since`) and then the feed.
    Add {
        peer: Arc<Peer>,
        /// `?since=` and the epoch it belongs to (`?epoch=`).
        since: Option<(u64, Option<String>)>,
        filter: Option<Arc<BTreeSet<String>>>,
    },
    /// A frame answering the client (pong, error).
    Reply(u64, Bytes, OwnedSemaphorePermit),
    /// New filter; answered with a snapshot for it.
    Subscribe(u64, Option<Arc<BTreeSet<String>>>, OwnedSemaphorePermit),
    /// Close for this reason (the reader found a protocol error, or the client closed).
    Close(u64, CloseReason),
    /// The reader is gone.
    Remove(u64),
    /// A flusher ended.
    Flushed(u64, Flushed),
}

/// Handle to one shard.
#[derive(Clone)]
pub struct Shard {
    pub commands: mpsc::UnboundedSender<Command>,
}

struct Subscriber {
    out: Outbound,
    filter: Option<Arc<BTreeSet<String>>>,
    /// Last `seq` the client is up to date with; `None` until it has had a snapshot.
    last_seq: Option<u64>,
    /// Which form of a feed frame it gets: 0 raw, else compressed ([`deflate::variant`]).
    variant: usize,
    /// With context takeover: where it stands in its window's shared stream (`None` for the
    /// others, and until it has had a delta since its last snapshot or replay).
    run: Option<Run>,
    takeover: bool,
}

/// A monotonic millisecond clock shared by readers (`last_heard`) and shards.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Self(Instant::now())
    }
    pub fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What a shard uses of the server's state, and nothing more.
#[derive(Clone)]
pub struct ShardContext {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// A socket that cannot take its pending bytes within this is a slow consumer.
    pub write_timeout: std::time::Duration,
    /// A peer that sends nothing (not even a pong) for this long is dropped.
    pub idle_timeout: std::time::Duration,
    pub shutdown: CancellationToken,
}

/// Why a subscriber leaves its shard: decides how its socket is shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Our close frame is out: no more writes; the reader reads the client's close.
    CloseSent,
    /// The socket failed, the client is silent, or its reader is gone: both ways, so
    /// the reader (if any) sees the end at once and frees the slot and the fd.
    Dropped,
    /// A slow consumer: its closer task writes its last bytes and shuts it down.
    HandedToCloser,
}

/// Starts `count` shards on `tasks`; they run until shutdown, then close every subscriber
/// with 1001.
pub fn start(
    context: &ShardContext,
    tasks: &TaskTracker,
    heartbeats: watch::Receiver<Bytes>,
    count: usize,
    clock: Clock,
) -> Vec<Shard> {
    let metrics = &context.metrics;
    let deflater = Arc::new(Deflater::new(
        metrics.counter("ratecast_ws_deflate_compressions_total", &[]),
        metrics.counter("ratecast_ws_deflate_shared_frames_total", &[]),
    ));
    (0..count.max(1))
        .map(|_| {
            let (commands, rx) = mpsc::unbounded_channel();
            let events = context.store.events();
            let worker = Worker {
                context: context.clone(),
                subscribers: HashMap::new(),
                flusher: Flusher {
                    commands: commands.clone(),
                    write_timeout: context.write_timeout,
                },
                clock,
                snapshot_cache: None,
                epoch: context.store.epoch(),
                deflater: deflater.clone(),
                variants_in_use: [0; VARIANTS],
            };
            tasks.spawn(worker.run(rx, events, heartbeats.clone()));
            Shard { commands }
        })
        .collect()
}

struct Worker {
    context: ShardContext,
    subscribers: HashMap<u64, Subscriber>,
    /// For flushers to report back.
    flusher: Flusher,
    clock: Clock,
    /// The full-feed snapshot of the newest view, framed once for every new subscriber.
    snapshot_cache: Option<(Arc<View>, Arc<Prepared>)>,
    /// Compress-once, shared by every shard.
    deflater: Arc<Deflater>,
    /// Subscribers per frame variant without context takeover: only the variants in use are
    /// compressed up front (takeover subscribers ask for the form they need as they go).
    variants_in_use: [usize; VARIANTS],
    /// The epoch of the last delta event: one of another epoch resyncs every subscriber, since
    /// their `seq`s say nothing of the new epoch's.
    epoch: Arc<str>,
}

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: broadcast::Receiver<Event>,
        mut heartbeats: watch::Receiver<Bytes>,
    ) {
        let shutdown = self.context.shutdown.clone();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(command) = commands.recv() => self.on_command(command),
                event = events.recv() => match event {
                    Ok(event) => self.on_event(event).await,
                    Err(RecvError::Lagged(missed)) => {
                        debug!(missed, "shard lagged behind the broadcast; resyncing its subscribers");
                        self.context.metrics.ws_shard_lagged.increment(1);
                        // Everyone gets the current view: the epoch first, as in `follow_epoch`.
                        self.epoch = self.context.store.epoch();
                        let ids: Vec<u64> = self.subscribers.keys().copied().collect();
                        for id in ids {
                            self.resync(id, true);
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                changed = heartbeats.changed() => match changed {
                    Ok(()) => {
                        let beat = heartbeats.borrow_and_update().clone();
                        self.on_heartbeat(&beat).await;
                    }
                    Err(_) => break,
                },
            }
        }
        self.close_all(&mut commands).await;
    }

    /// Shutdown: 1001 to everyone through their outbound state (after what a flusher holds),
    /// then serve flusher reports until every close is out or the write timeout passes. After
    /// [`SHUTDOWN_LINGER`] (time for clients to answer the close), every socket is shut down
    /// both ways, which ends the readers of those that did not: readers have no timer of
    /// their own.
    async fn close_all(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) {
        let linger = tokio::time::sleep(SHUTDOWN_LINGER);
        let mut peers: Vec<Arc<Peer>> = (self.subscribers.values())
            .map(|sub| sub.out.peer.clone())
            .collect();
        let ids: Vec<u64> = self.subscribers.keys().copied().collect();
        for id in ids {
            self.close(id, CloseReason::GoingAway);
        }
        let _ = tokio::time::timeout(self.context.write_timeout, async {
            while !self.subscribers.is_empty() {
                match commands.recv().await {
                    Some(Command::Flushed(id, outcome)) => self.on_flushed(id, outcome),
                    Some(Command::Remove(id)) => self.finish(id, Ending::Dropped),
                    // Upgraded as shutdown began: its reader runs, so it is closed too, the
                    // same way as everyone else.
                    Some(Command::Add {
                        peer,
                        since,
                        filter,
                    }) => {
                        let id = peer.id;
                        peers.push(peer.clone());
                        self.on_command(Command::Add {
                            peer,
                            since,
                            filter,
                        });
                        self.close(id, CloseReason::GoingAway);
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        })
        .await;
        let ids: Vec<u64> = self.subscribers.keys().copied().collect();
        for id in ids {
            self.finish(id, Ending::Dropped);
        }
        linger.await;
        // No sender can add a peer once the queue is closed: those still queued end here.
        commands.close();
        while let Ok(command) = commands.try_recv() {
            if let Command::Add { peer, .. } = command {
                peers.push(peer);
            }
        }
        for peer in peers {
            let _ = socket2::SockRef::from(&peer.stream).shutdown(Shutdown::Both);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Add {
                peer,
                since,
                filter,
            } => {
                // Its first frames are of the store's epoch: the shard moves there first, so
                // that the change's own event, which may come later, does not resync it again.
                self.follow_epoch();
                let id = peer.id;
                let variant = deflate::variant(peer.deflate);
                let takeover = peer.deflate_takeover && variant != 0;
                if !takeover {
                    self.variants_in_use[variant] += 1;
                }
                let sub = Subscriber {
                    out: Outbound::new(peer),
                    filter,
                    last_seq: None,
                    variant,
                    run: None,
                    takeover,
                };
                self.subscribers.insert(id, sub);
                self.start_feed(id, since);
            }
            Command::Reply(id, bytes, permit) => {
                if let Some(sub) = self.subscribers.get_mut(&id) {
                    let len = bytes.len() as u64;
                    let sent = sub.out.reply(bytes, Some(permit), &self.flusher);
                    self.after(id, sent, len);
                }
            }
            Command::Subscribe(id, filter, _permit) => {
                if let Some(sub) = self.subscribers.get_mut(&id) {
                    sub.filter = filter;
                    self.resync(id, false);
                }
            }
            Command::Close(id, reason) => self.close(id, reason),
            Command::Remove(id) => self.finish(id, Ending::Dropped),
            Command::Flushed(id, outcome) => self.on_flushed(id, outcome),
        }
    }

    fn on_flushed(&mut self, id: u64, outcome: Flushed) {
        let Some(sub) = self.subscribers.get_mut(&id) else {
            return;
        };
        match outcome {
            Flushed::Done => {
                let sent = sub.out.flushed(&self.flusher);
                let owed = sent == Sent::Written && std::mem::take(&mut sub.out.missed);
                self.after(id, sent, 0);
                if owed {
                    self.resync(id, true);
                }
            }
            Flushed::Failed => self.finish(id, Ending::Dropped),
            Flushed::TimedOut { tail } => {
                if sub.out.state() == State::Closing {
                    // Our own close frame did not go out in time: give up on it.
                    return self.finish(id, Ending::Dropped);
                }
                self.context.metrics.ws_slow_consumer_closes.increment(1);
                debug!(conn = id, cut = tail.len(), "slow consumer: closing");
                sub.out.close_slow(tail);
                self.finish(id, Ending::HandedToCloser);
            }
        }
    }

    /// Sends the close frame for `reason` through the outbound state.
    fn close(&mut self, id: u64, reason: CloseReason) {
        if let Some(sub) = self.subscribers.get_mut(&id) {
            let sent = sub.out.close(reason, &self.flusher);
            self.after(id, sent, 0);
        }
    }

    /// Accounts for one write and ends the subscriber if it is finished.
    fn after(&mut self, id: u64, sent: Sent, len: u64) {
        match sent {
            Sent::Written | Sent::Pending => {
                if len > 0 {
                    self.context.metrics.ws_frames_sent.increment(1);
                    self.context.metrics.ws_bytes_sent.increment(len);
                }
            }
            Sent::Skipped => {}
            Sent::Dead => self.finish(id, Ending::Dropped),
            Sent::Closed => self.finish(id, Ending::CloseSent),
        }
    }

    /// Removes a subscriber and shuts its socket down (the fd closes once the reader and any
    /// flusher let go of the peer).
    fn finish(&mut self, id: u64, ending: Ending) {
        if let Some(sub) = self.subscribers.remove(&id) {
            if !sub.takeover {
                self.variants_in_use[sub.variant] -= 1;
            }
            let how = match ending {
                Ending::CloseSent => Shutdown::Write,
                Ending::Dropped => Shutdown::Both,
                Ending::HandedToCloser => return,
            };
            let _ = socket2::SockRef::from(&sub.out.peer.stream).shutdown(how);
        }
    }

    /// First frames of a new subscriber: the replay after `since` when every delta is held,
    /// else a snapshot (none yet if there is no data: the first delta will bring one).
    fn start_feed(&mut self, id: u64, since: Option<(u64, Option<String>)>) {
        let Some((since, epoch)) = since else {
            self.resync(id, false);
            return;
        };
        let (view, resume) = self.context.store.resume(since, epoch.as_deref());
        let metrics = &self.context.metrics;
        match (view, resume) {
            (Some(view), Resume::Replay(deltas)) => {
                metrics
                    .counter("ratecast_ws_resumes_total", &[("result", "replayed")])
                    .increment(1);
                let Some(sub) = self.subscribers.get_mut(&id) else {
                    return;
                };
                let mut out = BytesMut::new();
                // A filtered replay's checksums: only the view's table is known, and it is the
                // table after the last delta this connection is sent (the later ones touch none
                // of its codes): that frame carries it, the ones before carry none.
                let filter = sub.filter.as_deref();
                let last_sent = match filter {
                    None => deltas.len().checked_sub(1),
                    Some(filter) => deltas.iter().rposition(|d| touches(d, filter)),
                };
                for (i, delta) in deltas.iter().enumerate() {
                    let rates = (Some(i) == last_sent).then_some(&view.rates);
                    if let Some(frame) = delta_frame(delta, filter, rates) {
                        out.extend_from_slice(&frame);
                    }
                }
                sub.last_seq = Some(view.seq);
                // The replay goes out uncompressed: the client's window misses those deltas.
                sub.run = None;
                if !out.is_empty() {
                    let out = out.freeze();
                    let sent = sub.out.feed(&out, &self.flusher);
                    self.after(id, sent, out.len() as u64);
                }
            }
            (view, _) => {
                debug!(
                    conn = id,
                    since,
                    held = view.map(|v| v.seq),
                    "resume: not every delta after since is held; snapshot"
                );
                metrics
                    .counter("ratecast_ws_resumes_total", &[("result", "snapshot")])
                    .increment(1);
                self.resync(id, false);
            }
        }
    }

    /// Sends the current snapshot (for the subscriber's filter); later deltas it covers are skipped.
    fn resync(&mut self, id: u64, count: bool) {
        let Some(sub) = self.subscribers.get_mut(&id) else {
            return;
        };
        // A snapshot (or status) is a compressed message of its own: the run starts again.
        sub.run = None;
        let Some(view) = self.context.store.view() else {
            // No data yet: say why (the status frame carries the reason and the next attempt).
            let prepared = self.deflater.prepare(&self.context.store.current_status());
            let status = prepared.get(sub.variant, &self.deflater);
            let sent = sub.out.feed(status, &self.flusher);
            self.after(id, sent, status.len() as u64);
            return;
        };
        match sub.out.state() {
            State::Idle => {}
            State::Draining => {
                sub.out.missed = true;
                return;
            }
            State::Closing => return,
        }
        sub.last_seq = Some(view.seq);
        let frame = match sub.filter.as_deref() {
            None => match &self.snapshot_cache {
                Some((cached, prepared)) if Arc::ptr_eq(cached, &view) => {
                    prepared.get(sub.variant, &self.deflater).clone()
                }
                _ => {
                    let prepared = self.deflater.prepare(&view.snapshot_frame);
                    let bytes = prepared.get(sub.variant, &self.deflater).clone();
                    self.snapshot_cache = Some((view.clone(), prepared));
                    bytes
                }
            },
            Some(filter) => frame::text(&filtered_snapshot(&view, filter)),
        };
        if count {
            self.context.metrics.ws_resyncs.increment(1);
        }
        let sent = sub.out.feed(&frame, &self.flusher);
        self.after(id, sent, frame.len() as u64);
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Delta(delta) => self.fan_out(&delta).await,
            Event::Status(json) => {
                let framed = self.framed(&self.deflater.prepare(&json), None);
                self.broadcast(&framed).await;
            }
        }
    }

    async fn on_heartbeat(&mut self, json: &Bytes) {
        self.drop_unresponsive();
        // The heartbeat and a ping in one write.
        let ping = frame::encode(frame::opcode::PING, b"");
        let framed = self.framed(&self.deflater.prepare(json), Some(&ping));
        self.broadcast(&framed).await;
    }

    /// A feed payload as each variant in use without context takeover receives it (compressed
    /// once, for all shards), with `then` appended; variants nobody here uses hold the raw frame.
    fn framed(&self, prepared: &Prepared, then: Option<&[u8]>) -> [Bytes; VARIANTS] {
        let form = |variant: usize| {
            let frame = prepared.get(variant, &self.deflater);
            match then {
                None => frame.clone(),
                Some(then) => {
                    let mut both = BytesMut::with_capacity(frame.len() + then.len());
                    both.extend_from_slice(frame);
                    both.extend_from_slice(then);
                    both.freeze()
                }
            }
        };
        let raw = form(0);
        std::array::from_fn(|variant| match variant {
            0 => raw.clone(),
            v if self.variants_in_use[v] > 0 => form(v),
            _ => raw.clone(),
        })
    }

    /// A new epoch in the store (the shared state lost writes, or was replaced): every table
    /// held downstream may be wrong, so everyone starts again from a snapshot. The store is the
    /// truth, not the order events arrive in: a subscriber added after the change was fed from
    /// the new epoch already. The epoch is read before any view, so a view is never older.
    fn follow_epoch(&mut self) {
        let current = self.context.store.epoch();
        if current == self.epoch {
            return;
        }
        debug!(epoch = %current, "new epoch; resyncing every subscriber");
        self.epoch = current;
        let ids: Vec<u64> = self.subscribers.keys().copied().collect();
        for id in ids {
            self.resync(id, true);
        }
    }

    async fn fan_out(&mut self, delta: &Arc<DeltaEvent>) {
        if delta.epoch != self.epoch {
            // Either the shard has not followed the store to this epoch yet (everyone is resynced
            // to the current view, which this delta is part of), or it already has and this is
            // an event of an epoch the store has left: nobody needs it.
            self.follow_epoch();
            return;
        }
        let prepared = self.deflater.prepare(&delta.frame);
        let shared = self.framed(&prepared, None);
        // The table after this delta, for filtered subscribers' checksums: the view, while it
        // is still this delta's (a shard that runs behind sends filtered frames without one).
        let after = self
            .context
            .store
            .view()
            .filter(|v| v.seq == delta.seq && v.epoch == delta.epoch);
        let (mut frames, mut bytes, mut in_context) = (0u64, 0u64, 0u64);
        let mut dead = Vec::new();
        let mut behind = Vec::new();
        let mut since_yield = 0;
        for (&id, sub) in &mut self.subscribers {
            match sub.last_seq {
                None => {
                    behind.push(id);
                    continue;
                }
                Some(last) if delta.seq <= last => continue,
                Some(last) if sub.filter.is_none() && delta.seq != last + 1 => {
                    behind.push(id);
                    continue;
                }
                Some(_) => {}
            }
            if sub.out.state() != State::Idle {
                sub.out.missed |= sub.out.state() == State::Draining;
                continue;
            }
            sub.last_seq = Some(delta.seq);
            let filtered;
            let frame = match sub.filter.as_deref() {
                None if sub.takeover => {
                    let (frame, shared) =
                        prepared.for_takeover(sub.variant, &mut sub.run, &self.deflater);
                    in_context += u64::from(shared);
                    frame
                }
                None => &shared[sub.variant],
                Some(filter) => {
                    match delta_frame(delta, Some(filter), after.as_ref().map(|v| &v.rates)) {
                        Some(frame) => {
                            filtered = frame;
                            &filtered
                        }
                        None => continue,
                    }
                }
            };
            frames += 1;
            bytes += frame.len() as u64;
            if sub.out.feed(frame, &self.flusher) == Sent::Dead {
                dead.push(id);
            }
            since_yield += 1;
            if since_yield == YIELD_EVERY {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        for id in dead {
            self.finish(id, Ending::Dropped);
        }
        for id in behind {
            self.resync(id, false);
        }
        let metrics = &self.context.metrics;
        metrics.ws_frames_sent.increment(frames);
        metrics.ws_bytes_sent.increment(bytes);
        self.deflater.shared_frames.increment(in_context);
        // Publish to the last write of this shard: the worst delay any of its subscribers saw.
        if frames > 0 {
            let delay = unix_ms(SystemTime::now()).saturating_sub(delta.ts);
            metrics.ws_delivery_delay.record(delay as f64 / 1000.0);
        }
    }

    async fn broadcast(&mut self, framed: &[Bytes; VARIANTS]) {
        let mut dead = Vec::new();
        let (mut sent, mut bytes, mut since_yield) = (0u64, 0u64, 0);
        for (&id, sub) in &mut self.subscribers {
            // Outside the shared stream: uncompressed to takeover subscribers (see `deflate`).
            let frame = &framed[if sub.takeover { 0 } else { sub.variant }];
            match sub.out.feed(frame, &self.flusher) {
                Sent::Dead => dead.push(id),
                Sent::Written | Sent::Pending => {
                    sent += 1;
                    bytes += frame.len() as u64;
                }
                Sent::Skipped | Sent::Closed => continue,
            }
            since_yield += 1;
            if since_yield == YIELD_EVERY {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        for id in dead {
            self.finish(id, Ending::Dropped);
        }
        self.context.metrics.ws_frames_sent.increment(sent);
        self.context.metrics.ws_bytes_sent.increment(bytes);
    }

    /// Drops peers whose reader is gone or that sent nothing (not even a pong) for too long.
    fn drop_unresponsive(&mut self) {
        let now = self.clock.now_ms();
        let idle = self.context.idle_timeout.as_millis() as u64;
        let gone: Vec<u64> = self
            .subscribers
            .iter()
            .filter(|(_, sub)| {
                let peer = &sub.out.peer;
                peer.closed.load(Ordering::Acquire)
                    || now.saturating_sub(peer.last_heard.load(Ordering::Relaxed)) > idle
            })
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            debug!(conn = id, "peer unresponsive or gone; dropping");
            self.finish(id, Ending::Dropped);
        }
    }
}

/// Whether `delta` changes or removes any of `filter`'s codes.
fn touches(delta: &DeltaEvent, filter: &BTreeSet<String>) -> bool {
    delta
        .changes
        .changed
        .keys()
        .any(|code| filter.contains(code))
        || delta
            .changes
            .removed
            .iter()
            .any(|code| filter.contains(code))
}

/// The framed delta for a filter (`None`: the full feed's shared bytes are used instead), or
/// `None` when the delta touches none of the filter's codes. A filtered frame carries the
/// checksum of the filter's units in `rates`, the table after it, when that is known.
fn delta_frame(
    delta: &DeltaEvent,
    filter: Option<&BTreeSet<String>>,
    rates: Option<&Arc<Rates>>,
) -> Option<Bytes> {
    let Some(filter) = filter else {
        return Some(frame::text(&delta.frame));
    };
    let changed: std::collections::BTreeMap<_, _> = delta
        .changes
        .changed
        .iter()
        .filter(|(code, _)| filter.contains(*code))
        .map(|(code, change)| (code.clone(), change.into()))
        .collect();
    let removed: Vec<String> = delta
        .changes
        .removed
        .iter()
        .filter(|c| filter.contains(*c))
        .cloned()
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return None;
    }
    let json = ServerFrame::Delta(protocol::Delta {
        epoch: delta.epoch.to_string(),
        seq: delta.seq,
        ts: delta.ts,
        changed,
        removed,
        checksum: rates.map(|rates| filtered_checksum(rates, filter)),
    })
    .encode();
    Some(frame::text(&json))
}

fn filtered_snapshot(view: &View, filter: &BTreeSet<String>) -> Bytes {
    let rates: Rates = filter
        .iter()
        .filter_map(|code| {
            view.rates
                .get(code)
                .map(|rate| (code.clone(), rate.clone()))
        })
        .collect();
    let checksum = table_checksum(&rates);
    ServerFrame::Snapshot(protocol::Snapshot {
        epoch: view.epoch.to_string(),
        seq: view.seq,
        ts: view.ts,
        source: view.source,
        stale: view.stale,
        checked_at: view.upstream.last_success.map(unix_ms),
        rates,
        failover: view.upstream.failover.clone(),
        checksum: Some(checksum),
    })
    .encode()
}
