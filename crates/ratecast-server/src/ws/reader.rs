//! One task per connection reads the client's frames: commands, pings, close, liveness. It
//! never writes: every outbound byte goes through the connection's shard.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::debug;

use super::connections::ConnectionSlot;
use super::fanout::{Clock, Command, Peer};
use super::frame::{self, Decoder, Incoming};
use super::{CloseReason, MAX_CLIENT_MESSAGE, parse_symbols};
use crate::metrics::Metrics;
use ratecast_protocol::frames::{self as protocol, ClientCommand, ServerFrame};
use ratecast_protocol::time::unix_ms;

/// Client frames per second with a burst allowance: a token bucket counted in milli-frames.
/// A rate of 0 means no limit.
#[derive(Debug, Clone)]
pub struct FrameBudget {
    /// Milli-frames added per millisecond (= frames per second).
    rate: u64,
    capacity: u64,
    level: u64,
    at_ms: u64,
}

impl FrameBudget {
    pub fn new(per_second: u32, burst: u32, now_ms: u64) -> Self {
        let capacity = u64::from(burst.max(1)) * 1000;
        Self {
            rate: u64::from(per_second),
            capacity,
            level: capacity,
            at_ms: now_ms,
        }
    }

    /// Spends `frames`; false when the budget does not cover them.
    pub fn take(&mut self, frames: u64, now_ms: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let refill = now_ms.saturating_sub(self.at_ms).saturating_mul(self.rate);
        self.level = self.level.saturating_add(refill).min(self.capacity);
        self.at_ms = self.at_ms.max(now_ms);
        let cost = frames.saturating_mul(1000);
        match self.level.checked_sub(cost) {
            Some(left) => {
                self.level = left;
                true
            }
            None => false,
        }
    }
}

/// The reader's limits, from `WsConfig`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReaderLimits {
    pub frames_per_second: u32,
    pub frames_burst: u32,
    /// How long a reply may wait for room in the connection's reply budget.
    pub write_timeout: Duration,
}

/// Reads one client's frames: commands, pings, close. Owns the connection slot.
pub(super) struct Reader {
    pub peer: Arc<Peer>,
    pub shard: mpsc::UnboundedSender<Command>,
    pub clock: Clock,
    /// Freed (with the gauge) when the reader ends, on every path.
    pub _slot: ConnectionSlot,
    pub limits: ReaderLimits,
    pub metrics: Arc<Metrics>,
}

impl Reader {
    pub async fn run(self, early: Bytes) {
        debug!("connected");
        let mut decoder = Decoder::new(MAX_CLIENT_MESSAGE).inflating(self.peer.deflate.is_some());
        decoder.buffer().extend_from_slice(&early);
        // `early` points into hyper's 8 KiB connection buffer: holding it would keep that
        // buffer alive for the whole life of an idle connection.
        drop(early);
        let limits = self.limits;
        let mut budget = FrameBudget::new(
            limits.frames_per_second,
            limits.frames_burst,
            self.clock.now_ms(),
        );
        let end = self.read_loop(&mut decoder, &mut budget).await;
        if let Err(reason) = end {
            if let Some(label) = reason.budget_label() {
                self.metrics
                    .counter("ratecast_ws_budget_closes_total", &[("budget", label)])
                    .increment(1);
            }
            debug!(code = reason.code(), reason = reason.reason(), "closing");
            if reason != CloseReason::Normal {
                let _ = self.shard.send(Command::Close(self.peer.id, reason));
            }
            // Boxed, with its buffer: only a closing connection pays for them, not every
            // idle one's task (the reader's future is as large as its largest await).
            Box::pin(self.discard_input()).await;
        }
        debug!("disconnected");
    }

    /// Reads and drops what the client still sends, until it closes or a second passes:
    /// closing a socket with unread input makes the kernel reset the connection, and the
    /// client could lose the close frame that says why.
    async fn discard_input(&self) {
        let mut sink = vec![0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                if self.read_ready().await.is_err() {
                    return;
                }
                match self.peer.stream.try_read(&mut sink) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }

    /// Waits until the socket has input, through the socket's one reader waker slot rather
    /// than `readable()`'s waiter list: this replaces the waker hyper's connection task left
    /// there when it read the request. With `readable()`, that stale waker kept the finished
    /// HTTP/1 task's memory (1.1 KiB, measured: `tests/idle_memory.rs`) alive until the
    /// client's first frame after the upgrade: for an idle subscriber, until the first pong.
    /// The reader is the socket's only reader, so the slot's "last caller is woken" is right.
    async fn read_ready(&self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.peer.stream.poll_read_ready(cx)).await
    }

    /// `Ok` when the connection simply ended (EOF, reset, silence, shutdown); `Err` with the
    /// close to send otherwise.
    async fn read_loop(
        &self,
        decoder: &mut Decoder,
        budget: &mut FrameBudget,
    ) -> Result<(), CloseReason> {
        let mut counted = 0;
        loop {
            loop {
                let message = decoder.next_message();
                let frames = decoder.frames() - counted;
                counted = decoder.frames();
                if !budget.take(frames, self.clock.now_ms()) {
                    return Err(CloseReason::FrameRate);
                }
                match message {
                    // Pongs (every heartbeat's answer) need nothing; the rest is boxed (one
                    // allocation per client command, ping or close), so an idle connection's
                    // task does not carry the reply path's timers and permits (856 B, measured).
                    Ok(Some(Incoming::Pong)) => {}
                    Ok(Some(message)) => Box::pin(self.on_message(message)).await?,
                    Ok(None) => break,
                    Err(e) => return Err(CloseReason::Protocol(e)),
                }
            }
            decoder.shrink();
            // No timer here: the shard drops a peer silent for the idle timeout, and closes
            // every socket on shutdown (`fanout::Worker::close_all`), both ways: this read then
            // ends. Two timers per idle connection cost 256 B of its task (measured).
            self.read_ready().await.map_err(|_| CloseReason::Normal)?;
            match self.peer.stream.try_read_buf(decoder.buffer()) {
                Ok(0) => return Ok(()),
                Ok(_) => self
                    .peer
                    .last_heard
                    .store(self.clock.now_ms(), Ordering::Relaxed),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Ok(()),
            }
        }
    }

    /// A permit of the connection's reply budget; none within the write timeout means the
    /// client is not reading its replies.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, CloseReason> {
        let replies = self.peer.replies.clone();
        match tokio::time::timeout(self.limits.write_timeout, replies.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(CloseReason::GoingAway),
            Err(_) => Err(CloseReason::ReplyQueue),
        }
    }

    async fn reply(&self, frame: Bytes) -> Result<(), CloseReason> {
        let permit = self.permit().await?;
        // A closed shard means shutdown: stop reading.
        self.shard
            .send(Command::Reply(self.peer.id, frame, permit))
            .map_err(|_| CloseReason::GoingAway)
    }

    async fn reply_json(&self, frame: ServerFrame) -> Result<(), CloseReason> {
        self.reply(frame::text(&frame.encode())).await
    }

    async fn on_message(&self, message: Incoming) -> Result<(), CloseReason> {
        match message {
            Incoming::Ping(payload) => {
                self.reply(frame::encode(frame::opcode::PONG, &payload))
                    .await
            }
            Incoming::Pong => Ok(()),
            Incoming::Close(code) => Err(CloseReason::Echo(code)),
            Incoming::Text(text) => match serde_json::from_str::<ClientCommand>(&text) {
                Ok(ClientCommand::Ping) => {
                    let ts = unix_ms(SystemTime::now());
                    self.reply_json(ServerFrame::Pong(protocol::Pong { ts }))
                        .await
                }
                Ok(ClientCommand::Subscribe { symbols }) => {
                    match parse_symbols(symbols.iter().flatten().map(String::as_str)) {
                        Ok(filter) => {
                            let permit = self.permit().await?;
                            self.shard
                                .send(Command::Subscribe(self.peer.id, filter, permit))
                                .map_err(|_| CloseReason::GoingAway)
                        }
                        Err(error) => {
                            let error = error.to_string();
                            self.reply_json(ServerFrame::Error(protocol::ErrorFrame { error }))
                                .await
                        }
                    }
                }
                Err(e) => {
                    let error = format!("bad command: {e}");
                    self.reply_json(ServerFrame::Error(protocol::ErrorFrame { error }))
                        .await
                }
            },
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.peer.closed.store(true, Ordering::Release);
        // The shard's queue is unbounded (its senders are budgeted): this always arrives.
        let _ = self.shard.send(Command::Remove(self.peer.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_budget_allows_its_burst_then_its_rate() {
        let mut budget = FrameBudget::new(10, 50, 0);
        assert!(budget.take(50, 0), "the burst");
        assert!(!budget.take(1, 0), "then nothing left");
        assert!(!budget.take(2, 100), "one frame refilled after 100 ms");
        assert!(budget.take(1, 100));
        assert!(budget.take(10, 1_100), "ten per second");
        let mut unlimited = FrameBudget::new(0, 1, 0);
        assert!(unlimited.take(u64::MAX, 0));
    }

    proptest! {
        /// Whatever the timing, a client never gets more than its burst plus the rate.
        #[test]
        fn the_budget_never_allows_more_than_burst_plus_rate(
            rate in 1u32..100,
            burst in 1u32..100,
            steps in proptest::collection::vec((0u64..500, 1u64..20), 1..50),
        ) {
            let mut budget = FrameBudget::new(rate, burst, 0);
            let (mut now, mut allowed) = (0u64, 0u64);
            for (dt, frames) in steps {
                now += dt;
                if budget.take(frames, now) {
                    allowed += frames;
                }
            }
            prop_assert!(allowed <= u64::from(burst) + now * u64::from(rate) / 1000);
        }
    }
}
