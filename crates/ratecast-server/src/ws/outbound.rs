//! A subscriber's outbound side: the one path every byte to its socket takes — feed frames,
//! replies (pongs, errors), and the close frame.
//!
//! It is a small state machine. **Idle**: a frame is written at once with one non-blocking
//! `write()`. If the socket takes only part of it (or nothing), a flusher task is given the rest
//! and the state becomes **Draining**: from then on nothing else writes to the socket until the
//! flusher reports back (`Command::Flushed`). Feed frames arriving meanwhile are skipped and a
//! snapshot is owed; replies wait in a queue bounded by the connection's reply budget (each
//! holds a permit of it); a close waits behind them. **Closing**: the close frame is out or being
//! flushed; nothing more is written. So there is exactly one writer per socket by construction,
//! and a close frame is never cut short by another write. A slow consumer (a flusher timed out)
//! is handed to a closer task for [`SLOW_CLOSE_GRACE`]: it finishes the frame that was cut and
//! writes the 1008 close if the client reads again, then shuts the socket down either way.

use std::collections::VecDeque;
use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::CloseReason;
use super::fanout::{Command, Peer};

/// Replies (pongs, errors, subscribe answers) one connection may have queued or in flight;
/// its reader waits for room (and closes with 1008 if none frees up within the write timeout).
pub const REPLY_BUDGET: usize = 16;

/// How long a slow consumer's socket is still written to once it is cut: time for a client
/// that reads again to get the rest of the frame cut mid-way and the 1008 close, so it learns
/// why it was dropped. Fixed and short: the connection keeps its slot (and fd) until it ends,
/// whether the client read or not, and the shard has let go of it already.
pub const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Idle,
    Draining,
    Closing,
}

/// What became of a frame handed to [`Outbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// The socket took it whole.
    Written,
    /// A flusher has it, or it waits behind the one that is draining.
    Pending,
    /// A feed frame dropped while draining; a snapshot is owed.
    Skipped,
    /// The socket failed: the subscriber is finished.
    Dead,
    /// The close frame is out: the subscriber is finished.
    Closed,
}

/// How a flusher ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flushed {
    /// The socket took every byte in time.
    Done,
    /// The socket failed (reset, broken pipe).
    Failed,
    /// The socket did not take the bytes within the write timeout. `tail`: what is left of a
    /// frame cut mid-way, to be finished before a close frame may follow (empty when not one
    /// byte of the frame went out).
    TimedOut { tail: Bytes },
}

/// Where flushers report, and how long they may take.
#[derive(Clone)]
pub(super) struct Flusher {
    pub commands: mpsc::UnboundedSender<Command>,
    pub write_timeout: Duration,
}

pub(super) struct Outbound {
    pub peer: Arc<Peer>,
    state: State,
    /// Replies waiting for the flusher, each holding one permit of the reply budget.
    held: VecDeque<(Bytes, Option<OwnedSemaphorePermit>)>,
    /// Close after the held replies.
    closing: Option<CloseReason>,
    /// Feed frames were skipped while draining: send a snapshot once drained.
    pub missed: bool,
}

impl Outbound {
    pub fn new(peer: Arc<Peer>) -> Self {
        Self {
            peer,
            state: State::Idle,
            held: VecDeque::new(),
            closing: None,
            missed: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// A feed frame (delta, snapshot, heartbeat, status): written now, or skipped while the
    /// socket drains (and a snapshot is owed).
    #[inline]
    pub fn feed(&mut self, frame: &Bytes, flusher: &Flusher) -> Sent {
        match self.state {
            State::Idle => self.write(frame, flusher),
            State::Draining => {
                self.missed = true;
                Sent::Skipped
            }
            State::Closing => Sent::Skipped,
        }
    }

    /// A reply: written now, or queued behind the flusher (bounded by the reply budget whose
    /// permit it holds until it is handed to the socket).
    pub fn reply(
        &mut self,
        frame: Bytes,
        permit: Option<OwnedSemaphorePermit>,
        flusher: &Flusher,
    ) -> Sent {
        match self.state {
            State::Idle => self.write(&frame, flusher),
            State::Draining => {
                self.held.push_back((frame, permit));
                Sent::Pending
            }
            State::Closing => Sent::Skipped,
        }
    }

    /// Sends the close frame for `reason` after anything held; then nothing more is written.
    pub fn close(&mut self, reason: CloseReason, flusher: &Flusher) -> Sent {
        match self.state {
            State::Idle => {
                self.state = State::Closing;
                match self.write_raw(&reason.frame(), flusher) {
                    Sent::Written => Sent::Closed,
                    other => other,
                }
            }
            State::Draining => {
                self.closing.get_or_insert(reason);
                Sent::Pending
            }
            State::Closing => Sent::Pending,
        }
    }

    /// A slow consumer whose flusher timed out: nothing more is queued; a closer task takes
    /// the socket (the `tail` of the cut frame, then the 1008 close, within the grace).
    pub fn close_slow(&mut self, tail: Bytes) {
        self.state = State::Closing;
        self.held.clear();
        tokio::spawn(close_slow(self.peer.clone(), tail));
    }

    /// The flusher finished: write what was held (stopping if the socket fills again), then
    /// the pending close. `Written` means idle again (the caller sends an owed snapshot).
    pub fn flushed(&mut self, flusher: &Flusher) -> Sent {
        match self.state {
            State::Closing => return Sent::Closed,
            State::Idle => return Sent::Written,
            State::Draining => self.state = State::Idle,
        }
        while let Some((frame, _permit)) = self.held.pop_front() {
            match self.write(&frame, flusher) {
                Sent::Written => {}
                other => return other,
            }
        }
        match self.closing.take() {
            Some(reason) => self.close(reason, flusher),
            None => Sent::Written,
        }
    }

    #[inline]
    fn write(&mut self, frame: &Bytes, flusher: &Flusher) -> Sent {
        let sent = self.write_raw(frame, flusher);
        if sent == Sent::Pending {
            self.state = State::Draining;
        }
        sent
    }

    /// One non-blocking write of shared bytes (no reference-count traffic on the fast path);
    /// what does not fit goes to a flusher. Leaves `state` to the caller.
    ///
    /// A plain `send(2)` on the socket, not `TcpStream::try_write`: that one first loads the
    /// socket's tokio readiness record, a cache line of its own per subscriber that a burst
    /// over thousands of sockets misses every time (5.4 % of the server's CPU at 1,000
    /// subscribers in `perf`, almost all of it that one load; BENCHMARKS.md). Bypassing it is
    /// sound here: a flusher waits with `writable()`, and if the readiness it sees is stale its
    /// `try_write` gets `WouldBlock`, which clears it, and it waits again. `MSG_NOSIGNAL`, as
    /// std's own writes: a reset peer is an error here, never a `SIGPIPE`.
    #[inline]
    fn write_raw(&mut self, frame: &Bytes, flusher: &Flusher) -> Sent {
        let socket = socket2::SockRef::from(&self.peer.stream);
        match socket.send_with_flags(frame, libc::MSG_NOSIGNAL) {
            Ok(n) if n == frame.len() => Sent::Written,
            Ok(n) => {
                self.spawn_flusher(frame.slice(n..), n == 0, flusher);
                Sent::Pending
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.spawn_flusher(frame.clone(), true, flusher);
                Sent::Pending
            }
            Err(_) => Sent::Dead,
        }
    }

    fn spawn_flusher(&self, rest: Bytes, whole: bool, flusher: &Flusher) {
        tokio::spawn(flush(
            self.peer.clone(),
            rest,
            whole,
            flusher.commands.clone(),
            flusher.write_timeout,
        ));
    }
}

/// Writes `rest` as the socket takes it, within `write_timeout`, and reports to the shard.
async fn flush(
    peer: Arc<Peer>,
    mut rest: Bytes,
    whole: bool,
    commands: mpsc::UnboundedSender<Command>,
    write_timeout: Duration,
) {
    let started = rest.len();
    let flushed = tokio::time::timeout(write_timeout, write_all(&peer, &mut rest)).await;
    let outcome = match flushed {
        Ok(Ok(())) => Flushed::Done,
        Ok(Err(_)) => Flushed::Failed,
        Err(_) if whole && rest.len() == started => Flushed::TimedOut { tail: Bytes::new() },
        Err(_) => Flushed::TimedOut { tail: rest },
    };
    let _ = commands.send(Command::Flushed(peer.id, outcome));
}

/// A slow consumer's last writes: the rest of the frame it was cut in, then the 1008 close,
/// as far as the socket takes them within [`SLOW_CLOSE_GRACE`]; then the socket is shut down
/// both ways whatever was written (which also ends the reader and frees the slot). One task
/// per cut connection, off the shard: neither the fan-out nor any other subscriber waits.
async fn close_slow(peer: Arc<Peer>, mut tail: Bytes) {
    let mut close = CloseReason::SlowConsumer.frame();
    let _ = tokio::time::timeout(SLOW_CLOSE_GRACE, async {
        write_all(&peer, &mut tail).await?;
        write_all(&peer, &mut close).await
    })
    .await;
    let _ = socket2::SockRef::from(&peer.stream).shutdown(Shutdown::Both);
}

/// Writes all of `rest` as the socket takes it, advancing it; the caller bounds the time.
async fn write_all(peer: &Peer, rest: &mut Bytes) -> io::Result<()> {
    while !rest.is_empty() {
        peer.stream.writable().await?;
        match peer.stream.try_write(rest) {
            Ok(n) => rest.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
