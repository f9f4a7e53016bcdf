//! permessage-deflate (RFC 7692), compressed once.
//!
//! The server always negotiates `server_no_context_takeover`: every message it sends is a
//! self-contained raw-deflate stream, so one compressed copy of a frame decodes on every client
//! that negotiated a window at least as large. A feed frame (snapshot, delta, status,
//! heartbeat) is therefore compressed **once per publication per window size in use**, in
//! [`Deflater::prepare`] (shared by every shard), and the same bytes go to every subscriber that
//! negotiated that window; the others get the raw frame. Per-filter frames, replays and replies
//! go out uncompressed (RSV1 clear), which RFC 7692 §6 allows at any time.
//!
//! Windows: flate2's zlib-rs backend compresses with 9–15 bits of window. A client that asks
//! for `server_max_window_bits=8` cannot be honoured (zlib has no 256-byte raw-deflate window)
//! and that offer is declined, never mis-negotiated (see [`super::handshake::negotiate_deflate`]).
//!
//! The server also answers `client_no_context_takeover` (RFC 7692 §7.1.1.2 lets it), so each
//! client message is inflated on its own, by [`inflate`], with a bounded output: a connection
//! keeps no inflater between messages, and a decompression bomb stops at the message cap.

use std::collections::VecDeque;
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

/// Raw-deflate `payload` with a window of `bits`, as one RFC 7692 message: a sync flush,
/// with its trailing `00 00 ff ff` removed. `None` if the compressor fails (the raw frame
/// is sent then).
pub fn compress(compressor: &mut Compress, payload: &[u8]) -> Option<Vec<u8>> {
    compressor.reset();
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    loop {
        let consumed = compressor.total_in() as usize;
        compressor
            .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
            .ok()?;
        // Done when every byte is in and the flush did not fill the buffer.
        if compressor.total_in() as usize == payload.len() && out.len() < out.capacity() {
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

/// One feed payload, framed once: the raw text frame, and its compressed frame per window,
/// made the first time a shard needs it and then shared by all shards.
pub struct Prepared {
    payload: Bytes,
    raw: Bytes,
    compressed: [OnceLock<Bytes>; VARIANTS],
}

impl Prepared {
    /// The frame for `variant` (0: raw). A payload that deflate does not shrink goes raw.
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
}

/// Compress-once for every shard: the recent payloads' prepared frames, and one reusable
/// compressor per window (reset per message: no context takeover).
pub struct Deflater {
    recent: Mutex<VecDeque<Arc<Prepared>>>,
    compressors: Mutex<[Option<Compress>; VARIANTS]>,
    /// `ratecast_ws_deflate_compressions_total`: shows compress-once from outside.
    compressions: Counter,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new(Counter::noop())
    }
}

impl Deflater {
    pub fn new(compressions: Counter) -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            compressors: Mutex::new(Default::default()),
            compressions,
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

    proptest! {
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
