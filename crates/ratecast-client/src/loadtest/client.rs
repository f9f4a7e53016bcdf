//! One simulated subscriber: a minimal RFC 6455 client over a plain socket.
//!
//! Not tungstenite: the generator shares the box with the server, so a frame must cost it as
//! little as possible (one `recvmsg`, no copy, no UTF-8 pass, a borrowed parse of three
//! fields), and on Linux latency is taken from the kernel's receive timestamp (`SO_TIMESTAMPNS`),
//! so it measures when the frame reached this host, not when the generator got around to reading
//! it. Elsewhere (macOS) it falls back to the time the frame was read in user space.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ratecast_protocol::frames::Delta;
use ratecast_protocol::{FrameHead, FrameKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use tokio_util::sync::CancellationToken;

use super::stats::Shared;
use crate::table::{Check, DeltaBody, SnapshotBody, Table};
use ratecast_protocol::backoff::backoff;

/// Reconnect delays with `--reconnect`: quick at first (a rolling restart takes seconds), jittered
/// so that a replica's subscribers do not all come back in the same millisecond.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Frames are a few KiB; the buffer grows for bigger ones.
const READ_CHUNK: usize = 16 * 1024;
/// Larger frames end the connection (`too_big`): the server's are a few KiB, and a corrupt
/// length must not make the generator buffer gigabytes.
pub(crate) const MAX_FRAME: usize = 16 * 1024 * 1024;
const MAX_HANDSHAKE: usize = 16 * 1024;

/// Where and how every subscriber connects; resolved once, not per connection.
pub(crate) struct Target {
    /// `Host` header and request target of the upgrade request.
    pub host: String,
    pub path: String,
    pub addr: SocketAddr,
    /// Source addresses to spread subscribers over (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// Contiguity of `seq` is only defined for unfiltered connections.
    pub full_feed: bool,
    /// When a connection ends, connect again with `since=` the last seq seen.
    pub reconnect: bool,
    /// Fold every snapshot and delta into a table per subscriber and check its `checksum`.
    pub verify: bool,
    pub connect_timeout: Duration,
    /// What to offer in `Sec-WebSocket-Extensions`; compressed messages are then inflated as
    /// the server's answer says (see [`Inflater`]).
    pub deflate: Offer,
}

/// What a subscriber offers in `Sec-WebSocket-Extensions` (RFC 7692). Both deflate offers carry
/// `client_no_context_takeover`: the generator never compresses what it sends, so it costs
/// nothing and lets the server keep no inflater window for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Nothing: raw frames (`--no-deflate`, and the misbehaving clients).
    Raw,
    /// permessage-deflate without `server_no_context_takeover`, as browsers offer: the server
    /// may keep its LZ77 window across messages (the default).
    Deflate,
    /// permessage-deflate with `server_no_context_takeover` (`--deflate-no-context-takeover`):
    /// every compressed message inflates on its own.
    DeflateNoContextTakeover,
}

impl Offer {
    /// The header value, `None` for no offer.
    fn extensions(self) -> Option<&'static str> {
        match self {
            Self::Raw => None,
            Self::Deflate => Some("permessage-deflate; client_no_context_takeover"),
            Self::DeflateNoContextTakeover => {
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
            }
        }
    }
}

/// How one connection inflates compressed messages: what its 101 agreed to.
#[derive(Debug)]
pub(crate) enum Inflater {
    /// No permessage-deflate: a compressed frame is a protocol error.
    Off,
    /// The server answered `server_no_context_takeover`: each message inflates on its own,
    /// through the generator thread's inflater reset per message ([`inflate`]), so the
    /// connection holds none.
    PerMessage,
    /// The server keeps its LZ77 window: a message may refer back into the earlier compressed
    /// ones, so the connection needs an inflater of its own (and its window) that is never reset
    /// between messages; a reconnect starts a fresh one. A 15-bit window decodes whatever
    /// `server_max_window_bits` the server chose. Boxed, so that connections without takeover
    /// carry a small enum rather than room for an inflater.
    Takeover(Box<flate2::Decompress>),
}

impl Inflater {
    /// Whether permessage-deflate was negotiated (RSV1 is allowed).
    fn negotiated(&self) -> bool {
        !matches!(self, Self::Off)
    }

    /// Inflates one whole message (its frames' payloads, joined) into `out`, which never grows
    /// past [`MAX_FRAME`]. Errors are stable labels: `protocol`, `deflate`, `too_big`.
    fn inflate(&mut self, compressed: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            // Unreachable in practice: the header parser rejects RSV1 before it gets here.
            Self::Off => Err("protocol".to_owned()),
            Self::PerMessage => inflate(compressed, out),
            Self::Takeover(inflater) => inflate_with(inflater, compressed, out),
        }
    }
}

thread_local! {
    /// One inflater per generator thread (each runs one single-threaded runtime), for the
    /// connections whose messages each inflate on their own.
    static INFLATER: std::cell::RefCell<flate2::Decompress> =
        std::cell::RefCell::new(flate2::Decompress::new(false));
}

/// Inflates one RFC 7692 message that refers to no earlier one (the server answered
/// `server_no_context_takeover`) with the thread's inflater, reset first. See [`inflate_with`].
fn inflate(compressed: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    INFLATER.with_borrow_mut(|inflater| {
        inflater.reset(false);
        inflate_with(inflater, compressed, out)
    })
}

/// Inflates one RFC 7692 message into `out` (cleared first), which never grows past
/// [`MAX_FRAME`], with `inflater` as the earlier messages left it: the caller decides whether
/// its window carries over. Errors are stable labels: `deflate`, `too_big`.
///
/// A final block (BFINAL) ends the server's deflate stream: the inflater is reset for the next
/// message, whose references back into the old stream then fail as `deflate` rather than
/// decode wrong (ratecast's server only ever sync-flushes, RFC 7692 §7.2.1).
fn inflate_with(
    inflater: &mut flate2::Decompress,
    compressed: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
    out.clear();
    for input in [compressed, &TAIL[..]] {
        let start = inflater.total_in();
        loop {
            let at = (inflater.total_in() - start) as usize;
            if at == input.len() {
                break;
            }
            if out.len() == out.capacity() {
                if out.len() >= MAX_FRAME {
                    return Err("too_big".to_owned());
                }
                out.reserve((out.len() * 2).clamp(READ_CHUNK, MAX_FRAME) - out.len());
            }
            let before = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress_vec(&input[at..], out, flate2::FlushDecompress::Sync)
                .map_err(|_| "deflate".to_owned())?;
            if status == flate2::Status::StreamEnd {
                inflater.reset(false);
                return Ok(());
            }
            if (inflater.total_in(), inflater.total_out()) == before && out.len() < out.capacity() {
                return Err("deflate".to_owned());
            }
        }
    }
    Ok(())
}

pub(crate) async fn subscriber(
    id: usize,
    shard: usize,
    target: Arc<Target>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let started = Instant::now();
    let (stream, leftover, inflater) = tokio::select! {
        _ = stop.cancelled() => return shared.failed("cancelled".into()),
        res = tokio::time::timeout(target.connect_timeout, connect(&target, id, None)) => match res {
            Ok(Ok(connected)) => connected,
            Ok(Err(reason)) => return shared.failed(reason),
            Err(_) => return shared.failed("timeout".into()),
        },
    };
    shared.connected(shard, started.elapsed());
    let mut conn = Connection::new(stream, leftover, inflater, shard, target, shared);
    let mut attempt = 0;
    loop {
        let ended = tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            reason = conn.read_loop() => Some(reason),
        };
        let feed = &conn.feed;
        feed.shared.closed();
        let Some(reason) = ended else {
            feed.shared.final_seq(feed.last_seq);
            // Say goodbye (close 1000), but never let a slow server hold the end of the run.
            let close = [0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8];
            let _ =
                tokio::time::timeout(Duration::from_secs(1), conn.stream.write_all(&close)).await;
            return;
        };
        feed.shared.disconnected(reason);
        if !feed.target.reconnect {
            return;
        }
        // Back again with `since=` the last seq seen and its epoch: the server replays what was
        // missed, or (when it cannot) sends a snapshot, whose jump is counted as missed deltas.
        let (stream, leftover, inflater) = loop {
            attempt += 1;
            let wait = backoff(RECONNECT_FIRST, RECONNECT_MAX, attempt, &mut rand::rng());
            let feed = &conn.feed;
            let since = feed.last_seq.map(|seq| Resume {
                seq,
                epoch: feed.epoch.clone(),
            });
            let target = feed.target.clone();
            let connected = tokio::select! {
                _ = stop.cancelled() => return feed.shared.final_seq(feed.last_seq),
                _ = tokio::time::sleep(wait) => {
                    tokio::time::timeout(target.connect_timeout, connect(&target, id, since)).await
                }
            };
            match connected {
                Ok(Ok(connected)) => break connected,
                Ok(Err(reason)) => conn.feed.shared.reconnect_failed(reason),
                Err(_) => conn.feed.shared.reconnect_failed("timeout".into()),
            }
        };
        attempt = 0;
        conn.feed.shared.reconnected();
        conn.feed.resumed = true;
        // A new connection, a new deflate stream: its inflater starts afresh.
        (conn.stream, conn.buf, conn.inflater) = (stream, leftover, inflater);
        conn.message.clear();
        conn.message_compressed = false;
    }
}

struct Connection {
    stream: TcpStream,
    /// Received bytes not yet parsed into frames.
    buf: Vec<u8>,
    /// A fragmented text message being reassembled.
    message: Vec<u8>,
    /// How this connection inflates compressed messages, as its handshake agreed.
    inflater: Inflater,
    /// The message being reassembled had RSV1 on its first frame.
    message_compressed: bool,
    /// Scratch for inflated messages (kept only while one is being handled).
    inflated: Vec<u8>,
    feed: Feed,
}

/// What one subscriber tracks across frames (and, with `--reconnect`, across connections), and
/// where it reports.
struct Feed {
    last_seq: Option<u64>,
    /// The epoch of the last snapshot: `last_seq` means something only within it.
    epoch: Option<String>,
    /// With `verify`: the table the frames built, `None` until a snapshot and from a gap or
    /// a mismatch until the next one (each divergence is counted once).
    table: Option<Arc<Table>>,
    /// This connection resumed an earlier one: its first snapshot is not a resync but the
    /// server saying it could not replay.
    resumed: bool,
    shard: usize,
    target: Arc<Target>,
    shared: Arc<Shared>,
}

impl Connection {
    /// A new subscriber's connection, with nothing read yet past the 101 but `buf`.
    fn new(
        stream: TcpStream,
        buf: Vec<u8>,
        inflater: Inflater,
        shard: usize,
        target: Arc<Target>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            stream,
            buf,
            message: Vec::new(),
            inflater,
            message_compressed: false,
            inflated: Vec::new(),
            feed: Feed {
                last_seq: None,
                epoch: None,
                table: None,
                resumed: false,
                shard,
                target,
                shared,
            },
        }
    }

    /// Reads until the connection ends; returns why.
    async fn read_loop(&mut self) -> String {
        let fd = self.stream.as_raw_fd();
        let mut arrived_us = now_micros();
        loop {
            match self.parse_frames(arrived_us).await {
                Ok(()) => {}
                Err(reason) => return reason,
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            let read = loop {
                if let Err(e) = self.stream.readable().await {
                    return io_reason(&e);
                }
                let buf = &mut self.buf;
                match self
                    .stream
                    .try_io(Interest::READABLE, || recv_stamped(fd, buf))
                {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => break other,
                }
            };
            match read {
                Ok((0, _)) => return "eof".into(),
                Ok((_, stamp)) => arrived_us = stamp.unwrap_or_else(now_micros),
                Err(e) => return io_reason(&e),
            }
        }
    }

    /// Handles every complete frame in the buffer and keeps the incomplete rest.
    async fn parse_frames(&mut self, arrived_us: u64) -> Result<(), String> {
        let mut at = 0;
        while let Some(frame) = parse_header_with(&self.buf[at..], self.inflater.negotiated())? {
            let payload = at + frame.header_len..at + frame.header_len + frame.len;
            at = payload.end;
            match frame.opcode {
                // A compressed message in one frame.
                0x1 if frame.compressed && frame.fin && self.message.is_empty() => {
                    let mut out = std::mem::take(&mut self.inflated);
                    self.inflater.inflate(&self.buf[payload], &mut out)?;
                    self.feed.on_message(&out, arrived_us);
                    // Keep a frame's worth of room, not a one-off giant message.
                    out.clear();
                    out.shrink_to(READ_CHUNK);
                    self.inflated = out;
                }
                // Text, or a continuation of a fragmented one.
                0x1 | 0x0 if frame.fin && self.message.is_empty() => {
                    self.feed.on_message(&self.buf[payload], arrived_us)
                }
                0x1 | 0x0 => {
                    if frame.opcode == 0x1 {
                        self.message_compressed = frame.compressed;
                    }
                    self.message.extend_from_slice(&self.buf[payload]);
                    if frame.fin {
                        let message = std::mem::take(&mut self.message);
                        if std::mem::take(&mut self.message_compressed) {
                            let mut out = Vec::new();
                            self.inflater.inflate(&message, &mut out)?;
                            self.feed.on_message(&out, arrived_us);
                        } else {
                            self.feed.on_message(&message, arrived_us);
                        }
                    }
                }
                0x2 => {
                    self.feed.shared.c.other_frames.fetch_add(1, Relaxed);
                }
                0x8 => {
                    let body = &self.buf[payload];
                    return Err(match body {
                        [hi, lo, ..] => format!("close_{}", u16::from_be_bytes([*hi, *lo])),
                        _ => "close".into(),
                    });
                }
                0x9 => {
                    // Pong with the same payload (at most 125 bytes: checked in the header).
                    let pong = masked_frame(0xA, &self.buf[payload]);
                    self.stream
                        .write_all(&pong)
                        .await
                        .map_err(|e| io_reason(&e))?;
                }
                0xa => {}
                _ => return Err("protocol".into()),
            }
        }
        self.buf.drain(..at);
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct Header {
    pub fin: bool,
    /// RSV1: a compressed message's first frame (only with permessage-deflate negotiated).
    pub compressed: bool,
    pub opcode: u8,
    pub header_len: usize,
    pub len: usize,
}

/// A final client frame (masked, with a zero key: the generator gains nothing from hiding its
/// bytes from proxies) in any of the three length forms.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// The next complete frame's header, `None` while it is still incomplete. Errors are stable
/// labels: `protocol` (masked, reserved bits, bad control frame), `too_big`.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<Header>, String> {
    parse_header_with(buf, false)
}

/// [`parse_header`] on a connection that negotiated permessage-deflate (`deflate`): RSV1 is
/// then allowed on the first frame of a text message (RFC 7692 §6), nowhere else.
pub(crate) fn parse_header_with(buf: &[u8], deflate: bool) -> Result<Option<Header>, String> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err("protocol".into()); // servers must not mask (RFC 6455 §5.1)
    }
    let compressed = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 || (compressed && !(deflate && b0 & 0x0f == 0x1)) {
        return Err("protocol".into()); // reserved bits (RFC 6455 §5.2, RFC 7692 §6)
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    if opcode & 0x8 != 0 && (!fin || b1 & 0x7f > 125) {
        return Err("protocol".into()); // control frames: final, at most 125 bytes (§5.5)
    }
    let (len, ext) = match b1 & 0x7f {
        126 if rest.len() >= 2 => (u64::from(u16::from_be_bytes([rest[0], rest[1]])), 2),
        127 if rest.len() >= 8 => (
            u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")),
            8,
        ),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 0),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= MAX_FRAME)
        .ok_or_else(|| "too_big".to_owned())?;
    let header_len = 2 + ext;
    if buf.len() < header_len + len {
        return Ok(None);
    }
    Ok(Some(Header {
        fin,
        compressed,
        opcode,
        header_len,
        len,
    }))
}

impl Feed {
    fn on_message(&mut self, bytes: &[u8], arrived_us: u64) {
        let (shared, c) = (&self.shared, &self.shared.c);
        c.frames.fetch_add(1, Relaxed);
        c.bytes.fetch_add(bytes.len() as u64, Relaxed);
        let Ok(head) = serde_json::from_slice::<FrameHead>(bytes) else {
            c.unparsable.fetch_add(1, Relaxed);
            return;
        };
        match (head.kind, head.seq) {
            (FrameKind::Snapshot, Some(seq)) => self.on_snapshot(seq, bytes),
            (FrameKind::Delta, Some(seq)) => {
                // A replay: the resume worked.
                self.resumed = false;
                c.deltas.fetch_add(1, Relaxed);
                if let (Some(ts), true) = (head.ts, shared.steady.load(Relaxed)) {
                    let published_us = ts.saturating_mul(1000);
                    shared.latency(
                        self.shard,
                        arrived_us.saturating_sub(published_us),
                        now_micros().saturating_sub(published_us),
                    );
                }
                if self.target.full_feed
                    && let Some(last) = self.last_seq
                {
                    if seq > last + 1 {
                        c.gap_events.fetch_add(1, Relaxed);
                        c.missing_seqs.fetch_add(seq - last - 1, Relaxed);
                        // The table lacks the skipped deltas: the gap is counted, not a
                        // mismatch on top of it.
                        self.table = None;
                    } else if seq <= last {
                        c.out_of_order.fetch_add(1, Relaxed);
                    }
                }
                // A delta already applied (a replay overlapping what was held) is not folded
                // again: a late one would roll the table back.
                if self.last_seq.is_none_or(|last| seq > last) {
                    self.fold(bytes);
                }
                self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
            }
            (FrameKind::Heartbeat, _) => {
                c.heartbeats.fetch_add(1, Relaxed);
            }
            _ => {
                c.other_frames.fetch_add(1, Relaxed);
            }
        }
    }
}

impl Feed {
    /// A snapshot after the first one of the run: the server could not resume (after a
    /// reconnect) or gave up streaming to this connection (a resync). Either way the seqs it
    /// jumps over were never seen, and are counted missed; a snapshot of another epoch cannot
    /// say how many, and is counted as an epoch change instead.
    fn on_snapshot(&mut self, seq: u64, bytes: &[u8]) {
        let c = &self.shared.c;
        c.snapshots.fetch_add(1, Relaxed);
        // The rates only when they are checked; the epoch always (skipping the rest is cheaper).
        let folded = if self.target.verify {
            memo(None, bytes, || {
                match serde_json::from_slice::<SnapshotBody>(bytes) {
                    Ok(body) => {
                        let mut table = Table::default();
                        let check = table.replace(body.rates, body.checksum);
                        Folded {
                            epoch: body.epoch,
                            table: Some(Arc::new(table)),
                            check,
                        }
                    }
                    Err(_) => Folded::unparsable(),
                }
            })
        } else {
            let epoch = serde_json::from_slice::<EpochOf>(bytes).ok();
            Folded {
                epoch: epoch.and_then(|e| e.epoch),
                ..Folded::unparsable()
            }
        };
        let epoch = folded.epoch;
        if let Some(last) = self.last_seq {
            let resumed = std::mem::take(&mut self.resumed);
            if resumed {
                c.reconnect_snapshots.fetch_add(1, Relaxed);
            } else {
                c.resyncs.fetch_add(1, Relaxed);
            }
            if epoch != self.epoch {
                c.epoch_changes.fetch_add(1, Relaxed);
            } else {
                let skipped = seq.saturating_sub(last);
                if resumed {
                    c.missed_on_reconnect.fetch_add(skipped, Relaxed);
                }
                // On a filtered feed seqs jump by design: only the full feed knows what it missed.
                if self.target.full_feed {
                    c.missing_seqs.fetch_add(skipped, Relaxed);
                }
            }
        }
        self.epoch = epoch;
        self.last_seq = Some(seq);
        self.table = folded.table.filter(|_| self.checked(folded.check));
    }

    /// With `verify`: folds a delta into the table and checks the checksum it carries.
    fn fold(&mut self, bytes: &[u8]) {
        let Some(base) = self.table.take() else {
            return;
        };
        let folded = memo(Some(&base), bytes, || {
            match serde_json::from_slice::<DeltaBody>(bytes) {
                Ok(delta) => {
                    let epoch = delta.epoch.clone();
                    let mut table = Table::clone(&base);
                    let check = table.fold(&Delta::from(delta));
                    Folded {
                        epoch,
                        table: Some(Arc::new(table)),
                        check,
                    }
                }
                Err(_) => Folded::unparsable(),
            }
        });
        if folded.table.is_some() && folded.epoch != self.epoch {
            // A delta of another epoch without a snapshot before it: the table says nothing
            // about its seqs any more.
            self.shared.c.epoch_changes.fetch_add(1, Relaxed);
            return;
        }
        self.table = folded.table.filter(|_| self.checked(folded.check));
    }

    /// Counts the check; false on a mismatch.
    fn checked(&self, check: Check) -> bool {
        let c = &self.shared.c;
        match check {
            Check::Verified => {
                c.checksums_verified.fetch_add(1, Relaxed);
            }
            Check::Unchecked => {}
            Check::Mismatch { .. } => {
                c.checksum_mismatches.fetch_add(1, Relaxed);
                return false;
            }
        }
        true
    }
}

/// What folding one frame onto one table gave.
#[derive(Clone)]
struct Folded {
    epoch: Option<String>,
    /// The table after the frame; `None` when the frame did not parse (nothing to check).
    table: Option<Arc<Table>>,
    check: Check,
}

impl Folded {
    fn unparsable() -> Self {
        Self {
            epoch: None,
            table: None,
            check: Check::Unchecked,
        }
    }
}

/// One (table, frame) → result of a generator thread, see [`FOLDS`].
struct Fold {
    /// The table the frame was folded onto (`None`: a snapshot). Held, so that no other table
    /// can take its address while this entry lives.
    base: Option<Arc<Table>>,
    frame: Box<[u8]>,
    folded: Folded,
}

/// How many recent folds a generator thread keeps: one per table its subscribers hold, and
/// they hold few (all that got the same snapshot share one chain of tables).
const FOLDS_KEPT: usize = 16;

thread_local! {
    /// A generator thread's subscribers receive the same bytes onto the same tables, so each
    /// (table, frame) is parsed, folded and checksummed once and the result shared: per
    /// subscriber, the check cost ~24 µs a frame in a release build.
    static FOLDS: RefCell<VecDeque<Fold>> = const { RefCell::new(VecDeque::new()) };
}

/// `fold()`'s result for `frame` onto `base`, computed once per generator thread.
fn memo(base: Option<&Arc<Table>>, frame: &[u8], fold: impl FnOnce() -> Folded) -> Folded {
    FOLDS.with_borrow_mut(|folds| {
        let same_base = |other: &Option<Arc<Table>>| match (other, base) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if let Some(hit) = folds
            .iter()
            .find(|f| same_base(&f.base) && *f.frame == *frame)
        {
            return hit.folded.clone();
        }
        let folded = fold();
        folds.push_front(Fold {
            base: base.cloned(),
            frame: frame.into(),
            folded: folded.clone(),
        });
        folds.truncate(FOLDS_KEPT);
        folded
    })
}

/// Just the epoch of a frame, when the rest of it is not needed.
#[derive(serde::Deserialize)]
struct EpochOf {
    #[serde(default)]
    epoch: Option<String>,
}

/// Where a reconnect resumes: the last seq seen and the epoch it belongs to.
pub(crate) struct Resume {
    pub seq: u64,
    pub epoch: Option<String>,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `recvmsg` into the spare capacity of `buf`, with the kernel's receive time (µs since the
/// epoch) of the data when the socket has `SO_TIMESTAMPNS`.
#[cfg(target_os = "linux")]
fn recv_stamped(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<(usize, Option<u64>)> {
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    let mut control = [0u64; 8]; // room for one timespec cmsg, u64-aligned
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: fd is our open socket; msg points at live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised the first n bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n as usize) };
    let mut stamp = None;
    // SAFETY: standard cmsg walk over the control buffer the kernel filled in.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, stamp))
}

#[cfg(target_os = "linux")]
fn enable_rx_timestamps(stream: &TcpStream) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid fd and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of_val(&on) as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `recv` into the spare capacity of `buf`; no kernel timestamp outside Linux, so the caller
/// takes the time of the read instead.
#[cfg(not(target_os = "linux"))]
fn recv_stamped(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<(usize, Option<u64>)> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: fd is our open socket; the spare capacity is writable for its whole length.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised the first n bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok((n as usize, None))
}

#[cfg(not(target_os = "linux"))]
fn enable_rx_timestamps(_stream: &TcpStream) -> io::Result<()> {
    Ok(())
}

/// TCP connect (from the chosen source address) and the WebSocket upgrade, resuming after
/// `since` when given; returns the stream, any frame bytes that arrived with the 101 and how to
/// inflate what follows.
async fn connect(
    target: &Target,
    id: usize,
    since: Option<Resume>,
) -> Result<(TcpStream, Vec<u8>, Inflater), String> {
    connect_with(target, id, since, None, target.deflate).await
}

/// [`connect`] with a kernel receive buffer of `recv_buffer` bytes (a client that stops
/// reading then stalls the server's writes soon), offering `offer` rather than `target.deflate`.
pub(crate) async fn connect_with(
    target: &Target,
    id: usize,
    since: Option<Resume>,
    recv_buffer: Option<u32>,
    offer: Offer,
) -> Result<(TcpStream, Vec<u8>, Inflater), String> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| io_reason(&e))?;
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| io_reason(&e))?;
    }
    if !target.sources.is_empty() {
        let source = target.sources[id % target.sources.len()];
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| io_reason(&e))?;
    }
    let mut stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| io_reason(&e))?;
    // Pongs and the close frame are tiny; don't let Nagle hold them.
    stream.set_nodelay(true).map_err(|e| io_reason(&e))?;
    enable_rx_timestamps(&stream).map_err(|e| io_reason(&e))?;

    let key = generate_key();
    let path = match since {
        Some(resume) => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("since", &resume.seq.to_string());
            // Without the epoch the server cannot tell the seq is its own: it sends a snapshot.
            if let Some(epoch) = &resume.epoch {
                query.append_pair("epoch", epoch);
            }
            let join = if target.path.contains('?') { '&' } else { '?' };
            format!("{}{join}{}", target.path, query.finish())
        }
        None => target.path.clone(),
    };
    let extensions = offer
        .extensions()
        .map(|value| format!("Sec-WebSocket-Extensions: {value}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: ratecast-loadtest\r\n{extensions}\r\n",
        target.host
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| io_reason(&e))?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let end = loop {
        if buf.len() >= MAX_HANDSHAKE {
            return Err("handshake".into());
        }
        if stream.read_buf(&mut buf).await.map_err(|e| io_reason(&e))? == 0 {
            return Err("eof".into());
        }
        // Parsed again from the start as bytes arrive: the head is one or two reads.
        let mut probe = [httparse::EMPTY_HEADER; 32];
        match httparse::Response::new(&mut probe).parse(&buf) {
            Ok(httparse::Status::Complete(end)) => break end,
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err("handshake".into()),
        }
    };
    if response.parse(&buf[..end]).is_err() {
        return Err("handshake".into());
    }
    match response.code {
        Some(101) => {}
        Some(status) => {
            let body = &buf[end..];
            return Err(refusal(status, body));
        }
        None => return Err("handshake".into()),
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        return Err("handshake".into());
    }
    let inflater = agreed_deflate(response.headers, offer)?;
    buf.drain(..end);
    Ok((stream, buf, inflater))
}

/// How to inflate what the server sends, from the 101's `Sec-WebSocket-Extensions` against our
/// `offer` (RFC 7692 §5, §7.1). Accepted: no extension, or one permessage-deflate carrying only
/// what an answer may carry, each at most once — `server_no_context_takeover` (required when we
/// offered it), `client_no_context_takeover`, `server_max_window_bits=8..15` (a smaller window
/// than ours, which decodes any). With `server_no_context_takeover` each message inflates on its
/// own ([`Inflater::PerMessage`]); without it the server keeps its window
/// ([`Inflater::Takeover`]). Anything else fails the handshake (RFC 6455 §4.1, RFC 7692 §5):
/// an extension or parameter we did not offer (`client_max_window_bits`), an unknown or
/// repeated one, an invalid value.
fn agreed_deflate(headers: &[httparse::Header<'_>], offer: Offer) -> Result<Inflater, String> {
    let refused = || "handshake_extension".to_owned();
    // Some(whether the server answered server_no_context_takeover) once it agreed.
    let mut agreed: Option<bool> = None;
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
    {
        let value = std::str::from_utf8(header.value).map_err(|_| "handshake".to_owned())?;
        for extension in value.split(',').filter(|e| !e.trim().is_empty()) {
            let mut params = extension.split(';').map(str::trim);
            let is_deflate = params
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"));
            if offer == Offer::Raw || agreed.is_some() || !is_deflate {
                return Err(refused());
            }
            let mut seen = Vec::new();
            for param in params {
                let (name, value) = match param.split_once('=') {
                    Some((name, value)) => {
                        let value = value.trim();
                        // RFC 6455 §9.1 allows a quoted-string value.
                        let unquoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (name.trim_end(), Some(unquoted.unwrap_or(value)))
                    }
                    None => (param, None),
                };
                let known = match (name, value) {
                    ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
                    ("server_max_window_bits", Some(bits)) => {
                        matches!(bits, "8" | "9" | "10" | "11" | "12" | "13" | "14" | "15")
                    }
                    _ => false,
                };
                if !known || seen.contains(&name) {
                    return Err(refused());
                }
                seen.push(name);
            }
            let no_takeover = seen.contains(&"server_no_context_takeover");
            if offer == Offer::DeflateNoContextTakeover && !no_takeover {
                return Err(refused());
            }
            agreed = Some(no_takeover);
        }
    }
    Ok(match agreed {
        None => Inflater::Off,
        Some(true) => Inflater::PerMessage,
        Some(false) => Inflater::Takeover(Box::new(flate2::Decompress::new(false))),
    })
}

/// The label of a refused upgrade: the status and, when the body that came with the head is the
/// server's JSON error, its `code` (`http_429_too_many_connections`), so the summary can say
/// which limit was hit.
fn refusal(status: u16, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody<'a> {
        code: &'a str,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error)
            if !error.code.is_empty()
                && error
                    .code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            format!("http_{status}_{}", error.code)
        }
        _ => format!("http_{status}"),
    }
}

/// Short, stable labels for the summary's failure and disconnect tables.
pub(crate) fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => return "fd_limit".into(),
        Some(libc::EADDRNOTAVAIL) => return "no_source_port".into(),
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".into(),
        io::ErrorKind::ConnectionReset => "reset".into(),
        io::ErrorKind::TimedOut => "timeout".into(),
        io::ErrorKind::UnexpectedEof => "eof".into(),
        kind => format!("io_{kind:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fold is shared only for the same frame onto the very same table: two tables that are
    /// equal now may not be after the frame (one of them is what a mismatch is about).
    #[test]
    fn a_fold_is_shared_only_by_the_same_frame_onto_the_same_table() {
        let (a, b) = (Arc::new(Table::default()), Arc::new(Table::default()));
        let marked = |mark: &str| Folded {
            epoch: Some(mark.into()),
            ..Folded::unparsable()
        };
        let epoch = |folded: Folded| folded.epoch.unwrap();
        assert_eq!(epoch(memo(Some(&a), b"f", || marked("a"))), "a");
        assert_eq!(epoch(memo(Some(&a), b"f", || marked("again"))), "a");
        assert_eq!(epoch(memo(Some(&b), b"f", || marked("b"))), "b");
        assert_eq!(epoch(memo(Some(&a), b"g", || marked("g"))), "g");
        assert_eq!(epoch(memo(None, b"f", || marked("snapshot"))), "snapshot");
    }

    #[test]
    fn frame_headers_of_every_length_form() {
        assert!(parse_header(&[0x81]).unwrap().is_none());
        let h = parse_header(&[0x81, 3, b'a', b'b', b'c']).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.header_len, h.len), (true, 1, 2, 3));
        let mut medium = vec![0x01, 126, 0x01, 0x00];
        assert!(
            parse_header(&medium).unwrap().is_none(),
            "payload not there yet"
        );
        medium.resize(4 + 256, b'x');
        let h = parse_header(&medium).unwrap().unwrap();
        assert_eq!((h.fin, h.header_len, h.len), (false, 4, 256));
        let mut big = vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        big.resize(10 + 65_536, b'x');
        assert_eq!(parse_header(&big).unwrap().unwrap().len, 65_536);
        assert_eq!(
            parse_header(&[0x81, 0x85, 1, 2, 3, 4]).unwrap_err(),
            "protocol"
        );
    }

    #[test]
    fn a_length_near_2_pow_64_is_too_big_not_a_panic() {
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(u64::MAX - 5).to_be_bytes());
        assert_eq!(parse_header(&huge).unwrap_err(), "too_big");
        let mut over = vec![0x81, 127];
        over.extend_from_slice(&((MAX_FRAME as u64) + 1).to_be_bytes());
        assert_eq!(parse_header(&over).unwrap_err(), "too_big");
    }

    #[test]
    fn compressed_frames_only_where_deflate_was_negotiated() {
        assert!(
            parse_header_with(&[0xC1, 0], true)
                .unwrap()
                .unwrap()
                .compressed
        );
        assert_eq!(
            parse_header_with(&[0xC1, 0], false).unwrap_err(),
            "protocol"
        );
        assert_eq!(parse_header_with(&[0xC9, 0], true).unwrap_err(), "protocol");
        assert_eq!(parse_header_with(&[0xC0, 0], true).unwrap_err(), "protocol");
        assert_eq!(parse_header_with(&[0xE1, 0], true).unwrap_err(), "protocol");
        let text = br#"{"type":"delta","seq":1,"changed":{},"removed":[]}"#.repeat(20);
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut deflated = Vec::with_capacity(4096);
        c.compress_vec(&text, &mut deflated, flate2::FlushCompress::Sync)
            .unwrap();
        deflated.truncate(deflated.len() - 4);
        let mut out = Vec::new();
        inflate(&deflated, &mut out).unwrap();
        assert_eq!(out, text);
        // Twice on the same thread: the shared inflater is reset per message.
        inflate(&deflated, &mut out).unwrap();
        assert_eq!(out, text);
        assert_eq!(inflate(&[0xff, 0xff], &mut out).unwrap_err(), "deflate");
    }

    /// `Sec-WebSocket-Extensions: value`, as a 101 carries it.
    fn extensions(value: &str) -> httparse::Header<'_> {
        httparse::Header {
            name: "Sec-WebSocket-Extensions",
            value: value.as_bytes(),
        }
    }

    /// What a 101 with these extension headers makes of a connection that offered `offer`.
    fn agreed(offer: Offer, answers: &[&str]) -> Result<&'static str, String> {
        let headers: Vec<_> = answers.iter().map(|answer| extensions(answer)).collect();
        agreed_deflate(&headers, offer).map(|inflater| match inflater {
            Inflater::Off => "off",
            Inflater::PerMessage => "per_message",
            Inflater::Takeover(_) => "takeover",
        })
    }

    #[test]
    fn the_answer_picks_takeover_or_per_message_inflation() {
        use Offer::*;
        // Without server_no_context_takeover the server keeps its window, whatever else it says.
        for answer in [
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=9",
            "Permessage-Deflate ;client_no_context_takeover;server_max_window_bits = \"15\"",
        ] {
            assert_eq!(agreed(Deflate, &[answer]), Ok("takeover"), "{answer}");
        }
        for answer in [
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate;server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=8; server_no_context_takeover",
        ] {
            for offer in [Deflate, DeflateNoContextTakeover] {
                assert_eq!(agreed(offer, &[answer]), Ok("per_message"), "{answer}");
            }
        }
        for offer in [Raw, Deflate, DeflateNoContextTakeover] {
            assert_eq!(agreed(offer, &[]), Ok("off"), "declined");
        }
        // Asked not to, the server may only accept with server_no_context_takeover (RFC 7692
        // §7.1.1.1).
        assert_eq!(
            agreed(
                DeflateNoContextTakeover,
                &["permessage-deflate; client_no_context_takeover"]
            ),
            Err("handshake_extension".into())
        );
    }

    #[test]
    fn the_handshake_refuses_what_the_server_may_not_answer() {
        use Offer::*;
        for (offer, answers) in [
            (Raw, &["permessage-deflate; server_no_context_takeover"][..]),
            (Deflate, &["x-other"]),
            (Deflate, &["permessage-deflate, permessage-deflate"]),
            (Deflate, &["permessage-deflate", "permessage-deflate"]),
            (Deflate, &["permessage-deflate; client_max_window_bits=10"]),
            (Deflate, &["permessage-deflate; server_max_window_bits=16"]),
            (Deflate, &["permessage-deflate; server_max_window_bits=7"]),
            (Deflate, &["permessage-deflate; server_max_window_bits=+9"]),
            (Deflate, &["permessage-deflate; server_max_window_bits"]),
            (
                Deflate,
                &["permessage-deflate; server_no_context_takeover=1"],
            ),
            (
                Deflate,
                &["permessage-deflate; client_no_context_takeover; client_no_context_takeover"],
            ),
            (Deflate, &["permessage-deflate; x_unknown"]),
            (Deflate, &["permessage-deflate;"]),
        ] {
            assert_eq!(
                agreed(offer, answers),
                Err("handshake_extension".into()),
                "{offer:?} {answers:?}"
            );
        }
    }

    /// Small delta frames that repeat one another, as a live feed's do.
    fn deltas(n: u64) -> Vec<Vec<u8>> {
        (0..n)
            .map(|seq| {
                format!(
                    r#"{{"type":"delta","seq":{seq},"ts":1732550000123,"changed":{{"usd":{{"value":{}.25,"type":"fiat"}}}},"removed":[]}}"#,
                    41_000 + seq * 7
                )
                .into_bytes()
            })
            .collect()
    }

    /// `messages` compressed as a server with context takeover does (RFC 7692 §7.2.1): one raw
    /// deflate stream with a `window_bits` window, sync-flushed after each message, the flush's
    /// trailing 00 00 ff ff cut off.
    fn takeover_stream(window_bits: u8, messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut deflate = flate2::Compress::new_with_window_bits(
            flate2::Compression::default(),
            false,
            window_bits,
        );
        messages
            .iter()
            .map(|message| {
                let mut out = Vec::with_capacity(2 * message.len() + 64);
                let before = deflate.total_in();
                deflate
                    .compress_vec(message, &mut out, flate2::FlushCompress::Sync)
                    .unwrap();
                assert_eq!(deflate.total_in() - before, message.len() as u64);
                assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
                out.truncate(out.len() - 4);
                out
            })
            .collect()
    }

    #[test]
    fn a_takeover_inflater_keeps_the_window_across_messages() {
        for bits in [9, 12, 15] {
            let messages = deltas(20);
            let stream = takeover_stream(bits, &messages);
            let answer = format!(
                "permessage-deflate; client_no_context_takeover; server_max_window_bits={bits}"
            );
            let mut inflater = agreed_deflate(&[extensions(&answer)], Offer::Deflate).unwrap();
            assert!(matches!(inflater, Inflater::Takeover(_)), "{bits} bits");
            let mut out = Vec::new();
            for (compressed, message) in stream.iter().zip(&messages) {
                inflater.inflate(compressed, &mut out).unwrap();
                assert_eq!(out, *message, "{bits} bits");
            }
            // The same bytes through the per-message path (an inflater reset per message): the
            // first message stands alone, every later one refers back into a window it lacks.
            inflate(&stream[0], &mut out).unwrap();
            assert_eq!(out, messages[0]);
            for (n, compressed) in stream.iter().enumerate().skip(1) {
                assert_eq!(
                    inflate(compressed, &mut out),
                    Err("deflate".into()),
                    "{bits} bits, message {n}"
                );
            }
        }
    }

    /// A server may end a message with a final block (RFC 7692 §7.2.3.4): its stream is over, so
    /// the next message starts a new one, which must not read as empty.
    #[test]
    fn after_a_final_block_the_next_message_starts_a_new_stream() {
        let messages = deltas(2);
        let mut finished = Vec::with_capacity(256);
        flate2::Compress::new(flate2::Compression::default(), false)
            .compress_vec(&messages[0], &mut finished, flate2::FlushCompress::Finish)
            .unwrap();
        let alone = takeover_stream(15, &messages[1..]).remove(0);
        let mut inflater = Inflater::Takeover(Box::new(flate2::Decompress::new(false)));
        let mut out = Vec::new();
        inflater.inflate(&finished, &mut out).unwrap();
        assert_eq!(out, messages[0]);
        inflater.inflate(&alone, &mut out).unwrap();
        assert_eq!(out, messages[1]);
    }

    /// An unmasked server frame.
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            n @ 0..=125 => frame.push(n as u8),
            n => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    /// The read path of a connection whose server keeps its context: compressed messages, in
    /// one frame or fragmented, inflate through the connection's inflater; a raw message
    /// between them (RSV1 clear) bypasses it and is in no window.
    #[tokio::test]
    async fn a_takeover_connection_reads_compressed_raw_and_fragmented_messages() {
        let messages = deltas(5);
        let compressed = [&messages[0], &messages[2], &messages[3], &messages[4]].map(Vec::clone);
        let stream = takeover_stream(15, &compressed);
        let (head, tail) = stream[2].split_at(stream[2].len() / 2);
        let wire = [
            server_frame(0xC1, &stream[0]),
            server_frame(0x81, &messages[1]),
            server_frame(0xC1, &stream[1]),
            server_frame(0x41, head),
            server_frame(0x80, tail),
            server_frame(0xC1, &stream[3]),
        ]
        .concat();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::new(1));
        let answer = "permessage-deflate; client_no_context_takeover";
        let mut conn = Connection::new(
            TcpStream::connect(addr).await.unwrap(),
            wire,
            agreed_deflate(&[extensions(answer)], Offer::Deflate).unwrap(),
            0,
            Arc::new(Target {
                host: String::new(),
                path: String::new(),
                addr,
                sources: Vec::new(),
                full_feed: true,
                reconnect: false,
                verify: false,
                connect_timeout: Duration::from_secs(1),
                deflate: Offer::Deflate,
            }),
            shared.clone(),
        );
        conn.parse_frames(0).await.unwrap();
        assert!(conn.buf.is_empty());
        let c = &shared.c;
        assert_eq!((c.deltas.load(Relaxed), c.unparsable.load(Relaxed)), (5, 0));
        assert_eq!(
            c.bytes.load(Relaxed),
            messages.iter().map(|m| m.len() as u64).sum::<u64>()
        );
        assert_eq!(
            (c.gap_events.load(Relaxed), c.out_of_order.load(Relaxed)),
            (0, 0)
        );
        assert_eq!(conn.feed.last_seq, Some(4));
    }

    #[test]
    fn reserved_bits_and_bad_control_frames_are_protocol_errors() {
        for bad in [
            &[0xC1, 0][..],       // RSV1
            &[0xA1, 0],           // RSV2
            &[0x91, 0],           // RSV3
            &[0x09, 0],           // ping without FIN
            &[0x89, 126, 0, 200], // ping over 125 bytes
        ] {
            assert_eq!(parse_header(bad).unwrap_err(), "protocol", "{bad:?}");
        }
    }

    #[test]
    fn pongs_and_client_frames_use_the_right_length_form() {
        let short = masked_frame(0xA, &[7; 125]);
        assert_eq!(&short[..2], &[0x8A, 0x80 | 125]);
        assert_eq!(short.len(), 2 + 4 + 125);
        let medium = masked_frame(0x1, &[b'x'; 300]);
        assert_eq!(&medium[..4], &[0x81, 0x80 | 126, 0x01, 0x2C]);
        assert_eq!(medium.len(), 4 + 4 + 300);
        let long = masked_frame(0x1, &vec![b'x'; 70_000]);
        assert_eq!(&long[..2], &[0x81, 0x80 | 127]);
        assert_eq!(long.len(), 10 + 4 + 70_000);
    }
}

/// Issue 12, point 7: the load generator's reader over arbitrary bytes.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// An unmasked server frame in the given length form (0: shortest).
    fn server_frame(first: u8, payload: &[u8], form: u8) -> Vec<u8> {
        let mut out = vec![first];
        match (payload.len(), form) {
            (n @ 0..=125, 0) => out.push(n as u8),
            (n, 0 | 1) if n <= 0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            (n, _) => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    proptest! {
        #[test]
        fn headers_of_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some(h)) = parse_header(&bytes) {
                prop_assert!(h.header_len + h.len <= bytes.len());
            }
        }

        #[test]
        fn every_valid_frame_parses_whole_and_not_before(
            payload in proptest::collection::vec(any::<u8>(), 0..400),
            form in 0u8..3,
            opcode in prop_oneof![Just(0x1u8), Just(0x2), Just(0x0)],
            fin in any::<bool>(),
        ) {
            let first = if fin { 0x80 | opcode } else { opcode };
            let frame = server_frame(first, &payload, form);
            let h = parse_header(&frame).unwrap().unwrap();
            prop_assert_eq!((h.fin, h.opcode, h.len), (fin, opcode, payload.len()));
            prop_assert_eq!(h.header_len + h.len, frame.len());
            for cut in 0..frame.len() {
                prop_assert!(parse_header(&frame[..cut]).unwrap().is_none());
            }
        }

        #[test]
        fn pongs_echo_any_ping_payload(payload in proptest::collection::vec(any::<u8>(), 0..=125)) {
            let pong = masked_frame(0xA, &payload);
            prop_assert_eq!(pong[0], 0x8A);
            prop_assert_eq!(usize::from(pong[1] & 0x7F), payload.len());
            prop_assert_eq!(&pong[6..], &payload[..]);
        }
    }
}
