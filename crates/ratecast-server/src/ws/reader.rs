//! One task per connection reads the client's frames: commands, pings, close, liveness. It
//! never writes: every outbound byte goes through the connection's shard.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::connections::ConnectionSlot;
use super::fanout::{Clock, Command, Peer};
use super::frame::{self, Decoder, Incoming};
use super::{CloseReason, MAX_CLIENT_MESSAGE, parse_symbols};
use ratecast_protocol::frames::{self as protocol, ClientCommand, ServerFrame};
use ratecast_protocol::time::unix_ms;

/// Reads one client's frames: commands, pings, close. Owns the connection slot.
pub(super) struct Reader {
    pub peer: Arc<Peer>,
    pub shard: mpsc::Sender<Command>,
    pub clock: Clock,
    /// Freed (with the gauge) when the reader ends, on every path.
    pub _slot: ConnectionSlot,
    /// Shutdown: stop reading shortly after it starts.
    pub shutdown: CancellationToken,
}

impl Reader {
    pub async fn run(self, early: Bytes) {
        debug!("connected");
        let mut decoder = Decoder::new(MAX_CLIENT_MESSAGE);
        decoder.buffer().extend_from_slice(&early);
        // `early` points into hyper's 8 KiB connection buffer: holding it would keep that
        // buffer alive for the whole life of an idle connection.
        drop(early);
        let end = self.read_loop(&mut decoder).await;
        if let Err(reason) = end {
            let _ = self.shard.send(Command::Close(self.peer.id, reason)).await;
            self.discard_input().await;
        }
        debug!("disconnected");
    }

    /// Reads and drops what the client still sends, until it closes or a second passes:
    /// closing a socket with unread input makes the kernel reset the connection, and the
    /// client could lose the close frame that says why.
    async fn discard_input(&self) {
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            loop {
                if self.peer.stream.readable().await.is_err() {
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

    async fn read_loop(&self, decoder: &mut Decoder) -> Result<(), CloseReason> {
        loop {
            loop {
                match decoder.next_message() {
                    Ok(Some(message)) => self.on_message(message).await?,
                    Ok(None) => break,
                    Err(e) => return Err(CloseReason::Protocol(e)),
                }
            }
            decoder.shrink();
            tokio::select! {
                readable = self.peer.stream.readable() => readable.map_err(|_| CloseReason::Normal)?,
                // The shard sends 1001 on shutdown; give the client a moment to close its side.
                () = linger(&self.shutdown) => return Ok(()),
            }
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

    async fn reply(&self, frame: Bytes) -> Result<(), CloseReason> {
        // A closed shard means shutdown: stop reading.
        self.shard
            .send(Command::Reply(self.peer.id, frame))
            .await
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
            Incoming::Close => Err(CloseReason::Normal),
            Incoming::Text(text) => match serde_json::from_str::<ClientCommand>(&text) {
                Ok(ClientCommand::Ping) => {
                    let ts = unix_ms(SystemTime::now());
                    self.reply_json(ServerFrame::Pong(protocol::Pong { ts }))
                        .await
                }
                Ok(ClientCommand::Subscribe { symbols }) => {
                    match parse_symbols(symbols.iter().flatten().map(String::as_str)) {
                        Ok(filter) => self
                            .shard
                            .send(Command::Subscribe(self.peer.id, filter))
                            .await
                            .map_err(|_| CloseReason::GoingAway),
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

/// Completes shortly after shutdown starts.
async fn linger(shutdown: &tokio_util::sync::CancellationToken) {
    shutdown.cancelled().await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.peer.closed.store(true, Ordering::Release);
        let _ = self.shard.try_send(Command::Remove(self.peer.id));
    }
}
