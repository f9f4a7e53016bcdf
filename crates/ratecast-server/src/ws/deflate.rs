//! permessage-deflate (RFC 7692), compressed once.
//!
//! Two forms of each compressed feed frame, each made **once per publication per window size
//! in use** (in [`Deflater`], shared by every shard) and sent as the same bytes to every
//! subscriber that can take it:
//!
//! - **self-contained**: a raw-deflate stream of its own, which decodes on every client that
//!   negotiated a window at least as large. Clients that asked `server_no_context_takeover`
//!   only ever get this form, and so does everyone for snapshots and status frames.
//! - **in the shared context** (context takeover): every delta of the full feed, in order,
//!   through one compressor per window that is never reset, so a delta back-references the
//!   deltas before it (its units' names, their previous values). On the recorded payload that is
//!   ~14 % of the raw bytes against ~42 % self-contained: a delta is mostly random digits, and
//!   the only place its redundancy lives is the previous delta. A client's inflater keeps the
//!   uncompressed data of the compressed messages *it* received, so the shared form is only
//!   sent to a subscriber whose last window's worth of compressed messages are exactly the
//!   shared stream's: see [`Run`]. Until then (after a snapshot, a resync, a replay) it gets the
//!   self-contained form of the same deltas, which fills its window with the same bytes.
//!
//! Frames outside the shared stream (heartbeats, status, per-filter frames, replays, replies) go
//! out uncompressed to takeover subscribers: RFC 7692 §6 allows that at any time, and an
//! uncompressed message does not enter the inflater's window, so it cannot break a run.
//!
//! Windows: flate2's zlib-rs backend compresses with 9–15 bits of window. A client that asks
//! for `server_max_window_bits=8` cannot be honoured (zlib has no 256-byte raw-deflate window)
//! and that offer is declined, never mis-negotiated (see [`super::handshake::negotiate_deflate`]).
//!
//! The server also answers `client_no_context_takeover` (RFC 7692 §7.1.1.2 lets it), so each
//! client message is inflated on its own, by [`inflate`], with a bounded output: a connection
//! keeps no inflater between messages, and a decompression bomb stops at the message cap.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use metrics::Counter;

use super::frame::{self, DecodeError};

/// Smallest server window the compressor can produce (zlib's raw deflate).
pub const MIN_WINDOW_BITS: u8 = 9;
/// The largest window RFC 7692 allows, and the default.
pub const MAX_WINDOW_BITS: u8 = 15;
/// Forms of one feed frame: index 0 raw, `bits - 8` compressed with a window of `bits`.
pub const VARIANTS: usize = (MAX_WINDOW_BITS - 7) as usize;
/// What RFC 7692 §7.2.1 strips from the end of each compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Recent payloads kept by [`Deflater::prepare`]: enough for the events in flight at once.
const RECENT: usize = 8;

/// The frame variant a connection receives: 0 for raw, else its negotiated window.
pub fn variant(window_bits: Option<u8>) -> usize {
    match window_bits {
        Some(bits @ MIN_WINDOW_BITS..=MAX_WINDOW_BITS) => usize::from(bits - 8),
        _ => 0,
    }
}

/// Raw-deflate `payload` with a window of `bits`, as one self-contained RFC 7692 message (the
/// compressor is reset first). `None` if the compressor fails (the raw frame is sent then).
pub fn compress(compressor: &mut Compress, payload: &[u8]) -> Option<Vec<u8>> {
    compressor.reset();
    compress_next(compressor, payload)
}

/// Raw-deflate `payload` as the next RFC 7692 message of `compressor`'s stream (its window
/// holds the messages before): a sync flush, with its trailing `00 00 ff ff` removed.
fn compress_next(compressor: &mut Compress, payload: &[u8]) -> Option<Vec<u8>> {
    let start = compressor.total_in();
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    loop {
        let consumed = (compressor.total_in() - start) as usize;
        compressor
            .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
            .ok()?;
        // Done when every byte is in and the flush did not fill the buffer.
        if (compressor.total_in() - start) as usize == payload.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    out.ends_with(&TAIL).then(|| {
        out.truncate(out.len() - TAIL.len());
        out
    })
}

/// A new raw-deflate compressor with a window of `bits` (9–15).
pub fn compressor(bits: u8) -> Compress {
    Compress::new_with_window_bits(
        Compression::best(),
        false,
        bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS),
    )
}

/// Inflates one client message (the payload of its frames, RSV1 on the first) with a fresh
/// 15-bit inflater (the client was told `client_no_context_takeover`). The output never grows
/// past `max + 1` bytes: more than `max` is [`DecodeError::TooBig`] (a decompression bomb
/// closes with 1009); data that is not deflate is [`DecodeError::BadDeflate`] (1007).
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(max + 1);
    for input in [compressed, &TAIL[..]] {
        let mut at = 0;
        while at < input.len() {
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
                .map_err(|_| DecodeError::BadDeflate)?;
            at += (inflater.total_in() - before_in) as usize;
            if out.len() > max {
                return Err(DecodeError::TooBig);
            }
            match status {
                // A final block ended the stream: what follows (our tail) is ignored.
                Status::StreamEnd => return Ok(out),
                _ if inflater.total_in() == before_in && inflater.total_out() == before_out => {
                    return Err(DecodeError::BadDeflate);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// One feed payload, framed once: the raw text frame, its self-contained compressed frame per
/// window, and (deltas) its frame in each window's shared context; each made the first time a
/// shard needs it and then shared by all shards.
pub struct Prepared {
    payload: Bytes,
    raw: Bytes,
    compressed: [OnceLock<Bytes>; VARIANTS],
    in_context: [OnceLock<Option<InContext>>; VARIANTS],
}

/// A delta compressed in a window's shared context: its frame, where its uncompressed payload
/// sits in that window's shared stream, and where the compressor's history began (its last
/// restart): the frame refers to nothing before `history_from`, nor more than a window back.
struct InContext {
    start: u64,
    end: u64,
    history_from: u64,
    frame: Bytes,
}

/// Where a takeover subscriber stands in its window's shared stream: it has received the
/// stream's bytes `from..to`, as compressed messages, with no other compressed message in
/// between. Its inflater's window then ends with the same bytes as the shared compressor's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    from: u64,
    to: u64,
}

/// Whether a frame has RSV1 set: a compressed message, which enters the client's window.
fn is_compressed(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 0x40 != 0)
}

impl Prepared {
    /// The frame for `variant` (0: raw), self-contained. A payload that deflate does not shrink
    /// goes raw.
    pub fn get(&self, variant: usize, deflater: &Deflater) -> &Bytes {
        if variant == 0 || variant >= VARIANTS {
            return &self.raw;
        }
        self.compressed[variant].get_or_init(|| {
            match deflater.compress(&self.payload, variant as u8 + 8) {
                Some(deflated) if deflated.len() < self.payload.len() => {
                    frame::encode_compressed(frame::opcode::TEXT, &deflated)
                }
                _ => self.raw.clone(),
            }
        })
    }

    /// The frame of this delta for a context-takeover subscriber of `variant` that stands at
    /// `run` (moved on past this delta): the shared-context frame once its run reaches back to
    /// all the history the frame may refer to (a whole window, or the stream's last restart),
    /// else the self-contained frame of the same bytes, and a request to restart the stream so
    /// that it can join. Whatever is sent, the client's window ends with exactly what the
    /// stream's does, or the run is ended (`None`). The flag says which form went.
    pub fn for_takeover(
        &self,
        variant: usize,
        run: &mut Option<Run>,
        deflater: &Deflater,
    ) -> (&Bytes, bool) {
        if variant == 0 || variant >= VARIANTS {
            *run = None;
            return (&self.raw, false);
        }
        let shared = self.in_context[variant]
            .get_or_init(|| deflater.compress_shared(&self.payload, variant as u8 + 8));
        let Some(shared) = shared else {
            *run = None;
            return (self.get(variant, deflater), false);
        };
        let from = match *run {
            Some(Run { from, to }) if to == shared.start => from,
            _ => shared.start,
        };
        *run = Some(Run {
            from,
            to: shared.end,
        });
        let window_back = shared.start.saturating_sub(1 << (variant + 8));
        if from <= shared.history_from.max(window_back) {
            return (&shared.frame, true);
        }
        // Read first: subscribers of both shards land here while joining, and a store each
        // would bounce the flag's cache line between cores on every one of them.
        if !deflater.joiners[variant].load(Ordering::Relaxed) {
            deflater.joiners[variant].store(true, Ordering::Relaxed);
        }
        let own = self.get(variant, deflater);
        if !is_compressed(own) {
            // Sent raw, it stays out of the client's window: the stream's copy would not.
            *run = None;
        }
        (own, false)
    }
}

/// One window's shared compression context: the compressor every delta goes through in turn,
/// how many uncompressed bytes it has taken (where the next delta starts), where its history
/// begins (its last restart) and how many deltas it has taken since.
#[derive(Default)]
struct SharedStream {
    compressor: Option<Compress>,
    end: u64,
    history_from: u64,
    since_restart: u32,
}

/// The fewest deltas between two restarts of a shared stream. A restart lets every subscriber
/// waiting to join do so at once (a wall that reconnects does not wait a window's worth of
/// deltas, ~16 of the full table at 15 bits: 8 minutes at a 30 s poll), and costs every joined
/// one a delta with no history (~42 % of raw instead of ~14 %). At most one restart in this many
/// deltas bounds that cost under constant churn to ~21 % of raw, and the wait to this many.
const MIN_DELTAS_BETWEEN_RESTARTS: u32 = 4;

/// Compress-once for every shard: the recent payloads' prepared frames, one reusable
/// compressor per window for self-contained frames (reset per message), and one shared
/// stream per window for context takeover.
pub struct Deflater {
    recent: Mutex<VecDeque<Arc<Prepared>>>,
    compressors: Mutex<[Option<Compress>; VARIANTS]>,
    shared: Mutex<[SharedStream; VARIANTS]>,
    /// Per window: a takeover subscriber got a self-contained delta because its run was too
    /// short; the stream restarts at its next delta if it may (see
    /// [`MIN_DELTAS_BETWEEN_RESTARTS`]).
    joiners: [AtomicBool; VARIANTS],
    /// `ratecast_ws_deflate_compressions_total`: shows compress-once from outside.
    compressions: Counter,
    /// `ratecast_ws_deflate_shared_frames_total`: deltas sent in a shared context.
    pub shared_frames: Counter,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new(Counter::noop(), Counter::noop())
    }
}

impl Deflater {
    pub fn new(compressions: Counter, shared_frames: Counter) -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            compressors: Mutex::new(Default::default()),
            shared: Mutex::new(Default::default()),
            joiners: Default::default(),
            compressions,
            shared_frames,
        }
    }

    /// The prepared frames of `payload`: the same `Arc` for every shard that asks about the
    /// same `Bytes` (compared by address: the cache holds a clone, so the address cannot be
    /// reused for other content while it is here). Locked once per shard per publication.
    pub fn prepare(&self, payload: &Bytes) -> Arc<Prepared> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let same = |p: &&Arc<Prepared>| {
            p.payload.as_ptr() == payload.as_ptr() && p.payload.len() == payload.len()
        };
        if let Some(found) = recent.iter().find(same) {
            return found.clone();
        }
        let prepared = Arc::new(Prepared {
            payload: payload.clone(),
            raw: frame::text(payload),
            compressed: Default::default(),
            in_context: Default::default(),
        });
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(prepared.clone());
        prepared
    }

    fn compress(&self, payload: &[u8], bits: u8) -> Option<Vec<u8>> {
        let mut compressors = self.compressors.lock().unwrap_or_else(|e| e.into_inner());
        let slot = compressors.get_mut(variant(Some(bits)))?;
        self.compressions.increment(1);
        compress(slot.get_or_insert_with(|| compressor(bits)), payload)
    }

    /// `payload` as the next message of window `bits`'s shared stream, restarted first (no
    /// history) when subscribers wait to join and the last restart is far enough back. Shards
    /// ask in the order they see deltas; whatever that order, [`Run`] only sends a frame to a
    /// subscriber that received the stream's previous message. A compressor that fails is
    /// replaced, which is a restart too.
    fn compress_shared(&self, payload: &[u8], bits: u8) -> Option<InContext> {
        let variant = variant(Some(bits));
        let mut streams = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let stream = streams.get_mut(variant)?;
        self.compressions.increment(1);
        let restart = stream.since_restart >= MIN_DELTAS_BETWEEN_RESTARTS
            && self.joiners[variant].swap(false, Ordering::Relaxed);
        let compressor = match &mut stream.compressor {
            Some(compressor) if !restart => compressor,
            slot => {
                let compressor = slot.get_or_insert_with(|| compressor(bits));
                compressor.reset();
                stream.history_from = stream.end;
                stream.since_restart = 0;
                compressor
            }
        };
        let Some(deflated) = compress_next(compressor, payload) else {
            stream.compressor = None;
            return None;
        };
        let start = stream.end;
        stream.end += payload.len() as u64;
        stream.since_restart = stream.since_restart.saturating_add(1);
        Some(InContext {
            start,
            end: stream.end,
            history_from: stream.history_from,
            frame: frame::encode_compressed(frame::opcode::TEXT, &deflated),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(entries: &[(String, f64)]) -> Vec<u8> {
        let rates: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(code, value)| {
                (
                    code.clone(),
                    serde_json::json!({"name": code.to_uppercase(), "unit": code, "value": value, "type": "crypto"}),
                )
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"type": "snapshot", "seq": 7, "rates": rates}))
            .unwrap()
    }

    #[test]
    fn a_frame_is_compressed_with_rsv1_and_smaller() {
        let payload = Bytes::from(table(
            &(0..60)
                .map(|i| (format!("c{i}"), f64::from(i) * 1.5))
                .collect::<Vec<_>>(),
        ));
        let deflater = Deflater::default();
        let prepared = deflater.prepare(&payload);
        assert!(Arc::ptr_eq(&prepared, &deflater.prepare(&payload)));
        let framed = prepared.get(variant(Some(15)), &deflater);
        assert_eq!(framed[0], 0xC1, "FIN + RSV1 + text");
        assert!(framed.len() * 3 < payload.len(), "{} bytes", framed.len());
        assert_eq!(prepared.get(0, &deflater)[0], 0x81);
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        let zeros = vec![0u8; 1 << 20];
        let bomb = compress(&mut compressor(15), &zeros).unwrap();
        assert!(bomb.len() < 4096);
        assert_eq!(inflate(&bomb, 4096), Err(DecodeError::TooBig));
        let fits = compress(&mut compressor(15), &zeros[..4096]).unwrap();
        assert_eq!(inflate(&fits, 4096).unwrap().len(), 4096);
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 4096),
            Err(DecodeError::BadDeflate)
        );
    }

    /// Checks `(window bits, compressed, expected)` messages with C zlib (through Python:
    /// tests/fixtures/inflate_check.py), an inflater that holds back-references to its window.
    pub(crate) fn zlib_inflates(messages: &[(u8, Vec<u8>, Vec<u8>)]) -> Result<(), String> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/inflate_check.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("python3: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        for (bits, compressed, expected) in messages {
            // A write fails once the checker has stopped at a bad message: its output says why.
            if writeln!(stdin, "{bits} {} {}", hex(compressed), hex(expected)).is_err() {
                break;
            }
        }
        drop(stdin);
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() {
            Ok(())
        } else {
            Err(said)
        }
    }

    /// Issue 23, point 6: any table compressed once decodes identically through an independent
    /// inflater (C zlib) at every window size the server negotiates. Cases are drawn by
    /// proptest and checked in one batch.
    #[test]
    fn any_table_compressed_once_decodes_identically_at_every_window() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let tables = (
            proptest::collection::vec(("[a-z]{2,6}", -1e12f64..1e12), 0..300),
            proptest::collection::vec(any::<u8>(), 0..1500),
        );
        let mut runner = TestRunner::deterministic();
        let deflater = Deflater::default();
        let mut messages = Vec::new();
        for _ in 0..64 {
            let (entries, noise) = tables.new_tree(&mut runner).unwrap().current();
            let mut payload = table(&entries);
            // Random bytes repeated: matches up to ~1.5 KB back, past the small windows.
            payload.extend_from_slice(&noise);
            payload.extend_from_slice(&noise);
            let payload = Bytes::from(payload);
            let prepared = deflater.prepare(&payload);
            for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
                let once = deflater.compress(&payload, bits).unwrap();
                assert_eq!(inflate(&once, payload.len()).unwrap(), &payload[..]);
                let framed = prepared.get(variant(Some(bits)), &deflater);
                if framed[0] & 0x40 != 0 {
                    let header = match framed[1] {
                        126 => 4,
                        127 => 10,
                        _ => 2,
                    };
                    assert_eq!(
                        &framed[header..],
                        &once[..],
                        "the frame carries the same bytes"
                    );
                } else {
                    assert_eq!(framed, prepared.get(0, &deflater));
                }
                messages.push((bits, once, payload.to_vec()));
            }
        }
        zlib_inflates(&messages).unwrap();
    }

    /// The payload of a frame made here, and whether it has RSV1 (compressed).
    fn unframe(framed: &[u8]) -> (&[u8], bool) {
        let header = match framed[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        (&framed[header..], is_compressed(framed))
    }

    /// A client's side of one connection with context takeover: one inflater, kept.
    struct Receiver {
        inflater: Decompress,
        run: Option<Run>,
    }

    impl Receiver {
        /// Takes one frame as a browser would: a compressed message through the kept inflater,
        /// 16 bytes of output at a time; a raw one as it is. Returns what it stands for.
        fn take(&mut self, framed: &[u8]) -> Result<Vec<u8>, String> {
            let (data, compressed) = unframe(framed);
            if !compressed {
                return Ok(data.to_vec());
            }
            let input = [data, &TAIL[..]].concat();
            let (start, mut out) = (self.inflater.total_in(), Vec::new());
            while ((self.inflater.total_in() - start) as usize) < input.len() {
                let at = (self.inflater.total_in() - start) as usize;
                let mut chunk = Vec::with_capacity(16);
                self.inflater
                    .decompress_vec(&input[at..], &mut chunk, FlushDecompress::Sync)
                    .map_err(|e| e.to_string())?;
                if (self.inflater.total_in() - start) as usize == at && chunk.is_empty() {
                    return Err("inflater stuck".into());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(out)
        }
    }

    /// What a takeover subscriber does at one delta.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Is sent the delta (`Prepared::for_takeover`).
        Delta,
        /// Misses it (its socket was draining): nothing reaches its inflater.
        Miss,
        /// Is resynced: a self-contained snapshot, and its run starts again.
        Snapshot,
        /// Gets a heartbeat: uncompressed, outside the stream.
        Heartbeat,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => Just(Step::Delta),
            1 => Just(Step::Miss),
            1 => Just(Step::Snapshot),
            1 => Just(Step::Heartbeat),
        ]
    }

    /// A subscriber that joins a running stream (a wall reconnecting) is in the shared context
    /// within [`MIN_DELTAS_BETWEEN_RESTARTS`] + 1 deltas, not after a window's worth (~16 of
    /// these), and the one already in it loses one delta's context to the restart, no more.
    #[test]
    fn a_late_joiner_is_in_the_shared_context_after_a_few_deltas() {
        let deflater = Deflater::default();
        let variant = variant(Some(15));
        let receiver = || Receiver {
            inflater: Decompress::new(false),
            run: None,
        };
        let (mut early, mut late) = (receiver(), receiver());
        let (mut early_shared, mut late_shared) = (Vec::new(), Vec::new());
        for i in 0..40 {
            let payload = Bytes::from(table(
                &(0..30)
                    .map(|u| (format!("unit{u}"), f64::from(i * 30 + u) * 1.001))
                    .collect::<Vec<_>>(),
            ));
            let prepared = deflater.prepare(&payload);
            let receivers = if i < 20 {
                vec![(&mut early, &mut early_shared)]
            } else {
                vec![
                    (&mut early, &mut early_shared),
                    (&mut late, &mut late_shared),
                ]
            };
            for (receiver, shared) in receivers {
                let (frame, in_context) =
                    prepared.for_takeover(variant, &mut receiver.run, &deflater);
                assert_eq!(receiver.take(frame).unwrap(), payload);
                shared.push(in_context);
            }
        }
        assert!(payload_window_deltas() > 10);
        let joined = late_shared.iter().position(|&s| s).expect("never joined");
        assert!(
            joined <= MIN_DELTAS_BETWEEN_RESTARTS as usize + 1,
            "joined after {joined} deltas"
        );
        assert!(late_shared[joined..].iter().all(|&s| s));
        assert_eq!(
            early_shared.iter().filter(|&&s| !s).count(),
            0,
            "{early_shared:?}"
        );
    }

    /// How many of the test's 30-unit tables a 15-bit window holds.
    fn payload_window_deltas() -> usize {
        let one = table(
            &(0..30)
                .map(|u| (format!("unit{u}"), f64::from(u) * 1.001))
                .collect::<Vec<_>>(),
        );
        (1 << 15) / one.len()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Issue 23, points 3 and 6, context takeover: two shards ask for the deltas'
        /// shared-context frames in any interleaving (and a far-behind shard for a payload the
        /// cache let go), subscribers miss deltas, are resynced and get heartbeats in between;
        /// every message each subscriber is sent inflates, through the one inflater its
        /// connection keeps, to exactly the payload it stands for.
        #[test]
        fn takeover_subscribers_inflate_every_delta_whatever_they_missed(
            bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS,
            walk in proptest::collection::vec(0u32..1_000_000, 24..48),
            interleaving in proptest::collection::vec(any::<bool>(), 96),
            steps in proptest::collection::vec(step(), 6 * 48),
        ) {
            // Deltas of a table whose values walk: each leans on the previous ones.
            let payloads: Vec<Bytes> = walk
                .iter()
                .enumerate()
                .map(|(i, &seed)| {
                    let entries: Vec<(String, f64)> = (0..(20 + seed as usize % 60))
                        .map(|u| (format!("unit{u}"), f64::from(seed ^ (u as u32 * 7919)) / 1e3))
                        .collect();
                    let mut payload = table(&entries);
                    payload.extend_from_slice(format!("{i}").as_bytes());
                    Bytes::from(payload)
                })
                .collect();
            let snapshot = Bytes::from(table(&[("snap".into(), 1.5)]));
            let variant = variant(Some(bits));
            let deflater = Deflater::default();
            // Three subscribers on each of two shards; each shard walks the deltas in order.
            let mut shards: Vec<(usize, Vec<Receiver>)> = (0..2)
                .map(|_| {
                    (0, (0..3)
                        .map(|_| Receiver {
                            inflater: Decompress::new_with_window_bits(false, bits),
                            run: None,
                        })
                        .collect())
                })
                .collect();
            let mut steps = steps.into_iter().cycle();
            let mut picks = interleaving.into_iter().cycle();
            let mut shared = 0;
            while shards.iter().any(|(next, _)| *next < payloads.len()) {
                let pick = usize::from(picks.next().unwrap());
                let (next, receivers) = match &mut shards[pick] {
                    (next, _) if *next == payloads.len() => &mut shards[1 - pick],
                    shard => shard,
                };
                let payload = &payloads[*next];
                *next += 1;
                let prepared = deflater.prepare(payload);
                for receiver in receivers {
                    let (sent, expected) = match steps.next().unwrap() {
                        Step::Delta => {
                            let (frame, in_context) =
                                prepared.for_takeover(variant, &mut receiver.run, &deflater);
                            shared += usize::from(in_context);
                            (frame.clone(), payload)
                        }
                        Step::Miss => continue,
                        Step::Snapshot => {
                            receiver.run = None;
                            (deflater.prepare(&snapshot).get(variant, &deflater).clone(), &snapshot)
                        }
                        Step::Heartbeat => (frame::text(b"{}"), &Bytes::from_static(b"{}")),
                    };
                    let got = receiver.take(&sent);
                    prop_assert_eq!(got.as_deref(), Ok(&expected[..]));
                }
            }
            prop_assert!(shared > 0, "no frame came in the shared context");
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_inflater(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            if let Ok(out) = inflate(&bytes, 4096) {
                prop_assert!(out.len() <= 4096);
            }
        }
    }
}
