//! Fan-out shards: a few tasks, each owning the write side of many subscribers.
//!
//! On each broadcast event a shard writes the shared, pre-encoded frame to every subscriber
//! with one non-blocking `write()`: no task wake-up, copy, lock or allocation per subscriber
//! on the full feed. A socket that cannot take a frame at once is handed to a short-lived
//! flusher task; while it drains, the subscriber misses frames and is resynced with a
//! snapshot afterwards. A flusher that cannot drain within the write timeout closes it (1008).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::{CloseReason, frame};
use crate::metrics::Metrics;
use crate::store::{DeltaEvent, Event, Resume, Store, View};
use ratecast_protocol::Rates;
use ratecast_protocol::frames::{self as protocol, ServerFrame};
use ratecast_protocol::time::unix_ms;

/// Commands a shard takes besides broadcast events (bounded; a client can only slow itself).
pub const COMMAND_BUFFER: usize = 4_096;
/// Control frames (pongs, errors) kept for a subscriber whose socket is draining.
const MAX_HELD_CONTROL: usize = 4;

/// A connected peer, shared by its reader task and its shard.
pub struct Peer {
    pub id: u64,
    pub stream: TcpStream,
    /// Milliseconds since the shard clock's start when the peer last sent anything.
    pub last_heard: AtomicU64,
    /// Set by the reader when it is done: the shard drops the peer at its next look.
    pub closed: AtomicBool,
}

pub enum Command {
    /// A new subscriber: send it a snapshot (or the replay after `since`) and then the feed.
    Add {
        peer: Arc<Peer>,
        since: Option<u64>,
        filter: Option<Arc<BTreeSet<String>>>,
    },
    /// A frame answering the client (pong, error).
    Reply(u64, Bytes),
    /// New filter; answered with a snapshot for it.
    Subscribe(u64, Option<Arc<BTreeSet<String>>>),
    /// Close for this reason (the reader found a protocol error, or the client closed).
    Close(u64, CloseReason),
    /// The reader is gone.
    Remove(u64),
    /// A flusher finished: the socket took everything in time.
    Drained(u64),
    /// A flusher timed out: the client does not read.
    Slow(u64),
}

/// Handle to one shard.
#[derive(Clone)]
pub struct Shard {
    pub commands: mpsc::Sender<Command>,
}

struct Subscriber {
    peer: Arc<Peer>,
    filter: Option<Arc<BTreeSet<String>>>,
    /// Last `seq` the client is up to date with; `None` until it has had a snapshot.
    last_seq: Option<u64>,
    /// A flusher owns the socket's writes until it reports back.
    draining: bool,
    /// Frames were skipped while draining: send a snapshot once drained.
    missed: bool,
    held: Vec<Bytes>,
}

enum Written {
    Done,
    Draining,
    Dead,
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
    pub write_timeout: Duration,
    /// A peer that sends nothing (not even a pong) for this long is dropped.
    pub idle_timeout: Duration,
    pub shutdown: CancellationToken,
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
    (0..count.max(1))
        .map(|_| {
            let (commands, rx) = mpsc::channel(COMMAND_BUFFER);
            let events = context.store.events();
            let worker = Worker {
                context: context.clone(),
                subscribers: HashMap::new(),
                commands: commands.clone(),
                clock,
                snapshot_cache: None,
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
    commands: mpsc::Sender<Command>,
    clock: Clock,
    /// The full-feed snapshot of the newest view, framed once for every new subscriber.
    snapshot_cache: Option<(Arc<View>, Bytes)>,
}

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: broadcast::Receiver<Event>,
        mut heartbeats: watch::Receiver<Bytes>,
    ) {
        let shutdown = self.context.shutdown.clone();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(command) = commands.recv() => self.on_command(command),
                event = events.recv() => match event {
                    Ok(event) => self.on_event(event),
                    Err(RecvError::Lagged(missed)) => {
                        debug!(missed, "shard lagged behind the broadcast; resyncing its subscribers");
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
                        self.on_heartbeat(&beat);
                    }
                    Err(_) => break,
                },
            }
        }
        let going_away = {
            let reason = CloseReason::GoingAway;
            frame::close(reason.code(), reason.reason())
        };
        for sub in self.subscribers.values() {
            if !sub.draining {
                let _ = sub.peer.stream.try_write(&going_away);
            }
            let _ = socket2::SockRef::from(&sub.peer.stream).shutdown(Shutdown::Write);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Add {
                peer,
                since,
                filter,
            } => {
                let id = peer.id;
                let sub = Subscriber {
                    peer,
                    filter,
                    last_seq: None,
                    draining: false,
                    missed: false,
                    held: Vec::new(),
                };
                self.subscribers.insert(id, sub);
                self.start_feed(id, since);
            }
            Command::Reply(id, bytes) => {
                if let Some(sub) = self.subscribers.get_mut(&id) {
                    if sub.draining {
                        if sub.held.len() < MAX_HELD_CONTROL {
                            sub.held.push(bytes);
                        }
                    } else {
                        self.write(id, bytes);
                    }
                }
            }
            Command::Subscribe(id, filter) => {
                if let Some(sub) = self.subscribers.get_mut(&id) {
                    sub.filter = filter;
                    self.resync(id, false);
                }
            }
            Command::Close(id, reason) => {
                if let Some(sub) = self.subscribers.remove(&id) {
                    // The reader asked for this close and is draining the input itself.
                    close(&sub, reason, Shutdown::Write);
                }
            }
            Command::Remove(id) => {
                self.subscribers.remove(&id);
            }
            Command::Drained(id) => {
                let Some(sub) = self.subscribers.get_mut(&id) else {
                    return;
                };
                sub.draining = false;
                let held = std::mem::take(&mut sub.held);
                let missed = std::mem::take(&mut sub.missed);
                for bytes in held {
                    self.write(id, bytes);
                }
                if missed {
                    self.resync(id, true);
                }
            }
            Command::Slow(id) => {
                if let Some(sub) = self.subscribers.remove(&id) {
                    self.context.metrics.ws_slow_consumer_closes.increment(1);
                    debug!(conn = id, "slow consumer: closing");
                    // A client that does not read may not close either: end its reader too.
                    close(&sub, CloseReason::SlowConsumer, Shutdown::Both);
                }
            }
        }
    }

    /// First frames of a new subscriber: the replay after `since` when every delta is held,
    /// else a snapshot (none yet if there is no data: the first delta will bring one).
    fn start_feed(&mut self, id: u64, since: Option<u64>) {
        let Some(since) = since else {
            self.resync(id, false);
            return;
        };
        let (view, resume) = self.context.store.resume(since);
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
                for delta in &deltas {
                    if let Some(frame) = delta_frame(delta, sub.filter.as_deref()) {
                        out.extend_from_slice(&frame);
                    }
                }
                sub.last_seq = Some(view.seq);
                if !out.is_empty() {
                    self.write(id, out.freeze());
                }
            }
            _ => {
                metrics
                    .counter("ratecast_ws_resumes_total", &[("result", "snapshot")])
                    .increment(1);
                self.resync(id, false);
            }
        }
    }

    /// Sends the current snapshot (for the subscriber's filter); later deltas it covers are skipped.
    fn resync(&mut self, id: u64, count: bool) {
        let Some(view) = self.context.store.view() else {
            // No data yet: say why (the status frame carries the reason and the next attempt).
            let status = frame::text(&self.context.store.current_status());
            self.write(id, status);
            return;
        };
        let Some(sub) = self.subscribers.get_mut(&id) else {
            return;
        };
        if sub.draining {
            sub.missed = true;
            return;
        }
        sub.last_seq = Some(view.seq);
        let frame = match sub.filter.as_deref() {
            None => match &self.snapshot_cache {
                Some((cached, bytes)) if Arc::ptr_eq(cached, &view) => bytes.clone(),
                _ => {
                    let bytes = frame::text(&view.snapshot_frame);
                    self.snapshot_cache = Some((view.clone(), bytes.clone()));
                    bytes
                }
            },
            Some(filter) => frame::text(&filtered_snapshot(&view, filter)),
        };
        if count {
            self.context.metrics.ws_resyncs.increment(1);
        }
        self.write(id, frame);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Delta(delta) => self.fan_out(&delta),
            Event::Status(json) => self.broadcast(&frame::text(&json)),
        }
    }

    fn on_heartbeat(&mut self, json: &Bytes) {
        self.drop_unresponsive();
        // The heartbeat and a ping in one write.
        let mut both = BytesMut::from(&frame::text(json)[..]);
        both.extend_from_slice(&frame::encode(frame::opcode::PING, b""));
        self.broadcast(&both.freeze());
    }

    fn fan_out(&mut self, delta: &Arc<DeltaEvent>) {
        let shared = frame::text(&delta.frame);
        let (mut frames, mut bytes) = (0u64, 0u64);
        let mut dead = Vec::new();
        let mut behind = Vec::new();
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
            if sub.draining {
                sub.missed = true;
                continue;
            }
            sub.last_seq = Some(delta.seq);
            let filtered;
            let frame = match sub.filter.as_deref() {
                None => &shared,
                Some(filter) => match delta_frame(delta, Some(filter)) {
                    Some(frame) => {
                        filtered = frame;
                        &filtered
                    }
                    None => continue,
                },
            };
            frames += 1;
            bytes += frame.len() as u64;
            match write_or_drain(sub, frame, &self.commands, self.context.write_timeout) {
                Written::Dead => dead.push(id),
                Written::Done | Written::Draining => {}
            }
        }
        for id in dead {
            self.subscribers.remove(&id);
        }
        for id in behind {
            self.resync(id, false);
        }
        let metrics = &self.context.metrics;
        metrics.ws_frames_sent.increment(frames);
        metrics.ws_bytes_sent.increment(bytes);
        // Publish to the last write of this shard: the worst delay any of its subscribers saw.
        if frames > 0 {
            let delay = unix_ms(SystemTime::now()).saturating_sub(delta.ts);
            metrics.ws_delivery_delay.record(delay as f64 / 1000.0);
        }
    }

    fn broadcast(&mut self, frame: &Bytes) {
        let mut dead = Vec::new();
        let mut sent = 0u64;
        for (&id, sub) in &mut self.subscribers {
            if sub.draining {
                continue;
            }
            sent += 1;
            if let Written::Dead =
                write_or_drain(sub, frame, &self.commands, self.context.write_timeout)
            {
                dead.push(id);
            }
        }
        for id in dead {
            self.subscribers.remove(&id);
        }
        self.context.metrics.ws_frames_sent.increment(sent);
        self.context
            .metrics
            .ws_bytes_sent
            .increment(sent * frame.len() as u64);
    }

    fn write(&mut self, id: u64, frame: Bytes) {
        let Some(sub) = self.subscribers.get_mut(&id) else {
            return;
        };
        let len = frame.len() as u64;
        match write_or_drain(sub, &frame, &self.commands, self.context.write_timeout) {
            Written::Dead => {
                self.subscribers.remove(&id);
            }
            Written::Done | Written::Draining => {
                self.context.metrics.ws_frames_sent.increment(1);
                self.context.metrics.ws_bytes_sent.increment(len);
            }
        }
    }

    /// Drops peers whose reader is gone or that sent nothing (not even a pong) for too long.
    fn drop_unresponsive(&mut self) {
        let now = self.clock.now_ms();
        let idle = self.context.idle_timeout.as_millis() as u64;
        self.subscribers.retain(|_, sub| {
            let gone = sub.peer.closed.load(Ordering::Acquire);
            let silent = now.saturating_sub(sub.peer.last_heard.load(Ordering::Relaxed)) > idle;
            if silent && !gone {
                debug!(conn = sub.peer.id, "peer unresponsive; dropping");
                let _ = socket2::SockRef::from(&sub.peer.stream).shutdown(Shutdown::Both);
            }
            !(gone || silent)
        });
    }
}

/// One non-blocking write of shared bytes (no reference-count traffic on the fast path);
/// what does not fit goes to a flusher task.
fn write_or_drain(
    sub: &mut Subscriber,
    frame: &Bytes,
    commands: &mpsc::Sender<Command>,
    write_timeout: Duration,
) -> Written {
    match sub.peer.stream.try_write(frame) {
        Ok(n) if n == frame.len() => Written::Done,
        Ok(n) => {
            sub.draining = true;
            tokio::spawn(drain(
                sub.peer.clone(),
                frame.slice(n..),
                commands.clone(),
                write_timeout,
            ));
            Written::Draining
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            sub.draining = true;
            tokio::spawn(drain(
                sub.peer.clone(),
                frame.clone(),
                commands.clone(),
                write_timeout,
            ));
            Written::Draining
        }
        Err(_) => Written::Dead,
    }
}

async fn drain(
    peer: Arc<Peer>,
    mut rest: Bytes,
    commands: mpsc::Sender<Command>,
    write_timeout: Duration,
) {
    let flushed = tokio::time::timeout(write_timeout, async {
        while !rest.is_empty() {
            peer.stream.writable().await?;
            match peer.stream.try_write(&rest) {
                Ok(n) => {
                    bytes::Buf::advance(&mut rest, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await;
    let report = match flushed {
        Ok(Ok(())) => Command::Drained(peer.id),
        Ok(Err(_)) => Command::Remove(peer.id),
        Err(_) => Command::Slow(peer.id),
    };
    let _ = commands.send(report).await;
}

/// Best effort: the close frame if the socket takes it now, then no more writes (and, with
/// `Shutdown::Both`, no more reads either, which ends the peer's reader task).
fn close(sub: &Subscriber, reason: CloseReason, how: Shutdown) {
    if !sub.draining {
        let _ = sub
            .peer
            .stream
            .try_write(&frame::close(reason.code(), reason.reason()));
    }
    let _ = socket2::SockRef::from(&sub.peer.stream).shutdown(how);
}

/// The framed delta for a filter (`None`: the full feed's shared bytes are used instead), or
/// `None` when the delta touches none of the filter's codes.
fn delta_frame(delta: &DeltaEvent, filter: Option<&BTreeSet<String>>) -> Option<Bytes> {
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
        seq: delta.seq,
        ts: delta.ts,
        changed,
        removed,
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
    ServerFrame::Snapshot(protocol::Snapshot {
        seq: view.seq,
        ts: view.ts,
        source: view.source,
        stale: view.stale,
        checked_at: view.upstream.last_success.map(unix_ms),
        rates,
    })
    .encode()
}
