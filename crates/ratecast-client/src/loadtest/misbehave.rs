//! Clients that misbehave on purpose, for `--flooders` and `--soak`: each runs one connection
//! with one behaviour and says how it ended (a stable label such as `close_1008` or `eof`).

use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::client::{Offer, Target, connect_with, io_reason, masked_frame, parse_header};

/// What a client does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Reads and answers pings for a while, then closes with 1000.
    Read,
    /// Stops reading with a tiny receive buffer: the server must close it as a slow consumer.
    Slow,
    /// Sends bytes that are not a valid frame.
    Garbage,
    /// Reads a little, then resets the connection (SO_LINGER 0).
    Reset,
    /// Sends pings and commands as fast as it can.
    Flood,
    /// Goes silent (reads nothing, answers nothing): the server's idle timeout must drop it.
    Vanish,
}

impl Behaviour {
    pub fn random(rng: &mut impl Rng) -> Self {
        // Mostly well-behaved readers, as in real traffic.
        match rng.random_range(0..10) {
            0..=4 => Self::Read,
            5 => Self::Slow,
            6 => Self::Garbage,
            7 => Self::Reset,
            8 => Self::Flood,
            _ => Self::Vanish,
        }
    }
}

/// How one misbehaving connection went.
#[derive(Debug, Default)]
pub struct Outcome {
    /// How it ended: `close_NNNN`, `eof`, `reset`, `left` (we closed), `timeout`, `connect_…`.
    pub ended: String,
    /// Frames that did not parse as RFC 6455 server frames (must stay 0).
    pub corrupt: bool,
}

/// Flood frames: a ping, a JSON ping and a subscribe, over and over, in one write.
fn flood_batch() -> Vec<u8> {
    let mut batch = Vec::new();
    for _ in 0..32 {
        batch.extend(masked_frame(0x9, b"flood"));
        batch.extend(masked_frame(0x1, br#"{"op":"ping"}"#));
        batch.extend(masked_frame(
            0x1,
            br#"{"op":"subscribe","symbols":["usd"]}"#,
        ));
    }
    batch
}

/// Runs one connection with `behaviour`; `linger` bounds how long it stays (the slow and
/// silent ones wait for the server to act, up to `linger`).
pub(crate) async fn run(
    target: &Target,
    id: usize,
    behaviour: Behaviour,
    linger: Duration,
) -> Outcome {
    let recv_buffer = (behaviour == Behaviour::Slow).then_some(4096);
    // Misbehaving clients read raw frames: they never offer permessage-deflate.
    let (mut stream, leftover, _) =
        match connect_with(target, id, None, recv_buffer, Offer::Raw).await {
            Ok(connected) => connected,
            Err(reason) => {
                return Outcome {
                    ended: format!("connect_{reason}"),
                    ..Outcome::default()
                };
            }
        };
    let mut reader = Frames {
        buf: leftover,
        corrupt: false,
    };
    let ended = match behaviour {
        Behaviour::Read => {
            let (mut r, mut w) = stream.split();
            match tokio::time::timeout(linger, reader.read_until_close(&mut r, Some(&mut w))).await
            {
                Ok(ended) => ended,
                Err(_) => {
                    let _ = w.write_all(&close_frame(1000)).await;
                    "left".into()
                }
            }
        }
        Behaviour::Slow | Behaviour::Vanish => {
            // Not a byte read until the server gives up on it (or `linger` passes).
            tokio::time::sleep(linger.min(Duration::from_secs(2))).await;
            let (mut r, _) = stream.split();
            tokio::time::timeout(linger, reader.read_until_close(&mut r, None))
                .await
                .unwrap_or_else(|_| "timeout".into())
        }
        Behaviour::Garbage => {
            let mut junk = vec![0u8; 64];
            rand::rng().fill(&mut junk[..]);
            junk[0] = 0xF3; // reserved bits and opcode: never a valid frame
            let (mut r, mut w) = stream.split();
            let _ = w.write_all(&junk).await;
            tokio::time::timeout(linger, reader.read_until_close(&mut r, None))
                .await
                .unwrap_or_else(|_| "timeout".into())
        }
        Behaviour::Reset => {
            let (mut r, mut w) = stream.split();
            let _ = tokio::time::timeout(
                Duration::from_millis(300),
                reader.read_until_close(&mut r, Some(&mut w)),
            )
            .await;
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            "reset".into()
        }
        Behaviour::Flood => flood(&mut stream, &mut reader, linger).await,
    };
    Outcome {
        ended,
        corrupt: reader.corrupt,
    }
}

/// Writes flood batches while reading whatever comes back, until the server closes.
async fn flood(stream: &mut TcpStream, reader: &mut Frames, linger: Duration) -> String {
    let batch = flood_batch();
    let (mut r, mut w) = stream.split();
    let writing = async {
        loop {
            if w.write_all(&batch).await.is_err() {
                // The server is gone; let the reader see how it ended.
                std::future::pending::<()>().await;
            }
            tokio::task::yield_now().await;
        }
    };
    let ended = tokio::time::timeout(linger, async {
        tokio::select! {
            ended = reader.read_until_close(&mut r, None) => ended,
            () = writing => unreachable!("the writer never ends"),
        }
    })
    .await;
    ended.unwrap_or_else(|_| "timeout".into())
}

fn close_frame(code: u16) -> Vec<u8> {
    masked_frame(0x8, &code.to_be_bytes())
}

/// Server frames as they arrive: parsed, pings answered, close codes reported.
struct Frames {
    buf: Vec<u8>,
    corrupt: bool,
}

impl Frames {
    /// Reads until the server closes or the connection ends; answers pings when it can write.
    async fn read_until_close(
        &mut self,
        r: &mut ReadHalf<'_>,
        mut w: Option<&mut WriteHalf<'_>>,
    ) -> String {
        loop {
            loop {
                let frame = match parse_header(&self.buf) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(reason) => {
                        self.corrupt = true;
                        return reason;
                    }
                };
                let payload = frame.header_len..frame.header_len + frame.len;
                match frame.opcode {
                    0x0..=0x2 | 0xA => {}
                    0x8 => {
                        return match self.buf[payload] {
                            [hi, lo, ..] => format!("close_{}", u16::from_be_bytes([hi, lo])),
                            _ => "close".into(),
                        };
                    }
                    0x9 => {
                        if let Some(w) = w.as_mut() {
                            let pong = masked_frame(0xA, &self.buf[payload]);
                            let _ = w.write_all(&pong).await;
                        }
                    }
                    _ => {
                        self.corrupt = true;
                        return "protocol".into();
                    }
                }
                self.buf.drain(..frame.header_len + frame.len);
            }
            self.buf.reserve(16 * 1024);
            match r.read_buf(&mut self.buf).await {
                Ok(0) => return "eof".into(),
                Ok(_) => {}
                Err(e) => return io_reason(&e),
            }
        }
    }
}
