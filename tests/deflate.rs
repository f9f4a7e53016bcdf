//! permessage-deflate (RFC 7692, issue 23): negotiation, compress-once feed frames, and the
//! stream-robustness rules for compressed client frames. Raw sockets, so every bit is seen;
//! compressed frames are inflated here with flate2's own `Decompress`, not the server's code.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{FakeUpstream, Reply, TestServer, client_frame, close_payload_code, raw_ws_with};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHROMIUM_OFFER: &str = "permessage-deflate; client_max_window_bits";
/// A client that asks for self-contained messages (each inflates on its own).
const SELF_CONTAINED_OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_max_window_bits";

/// Upgrades with `extensions` offered (none: no header); returns the socket, the 101's
/// `Sec-WebSocket-Extensions` (if any) and the bytes that came after it.
async fn connect(
    addr: SocketAddr,
    extensions: Option<&str>,
) -> Result<(TcpStream, Option<String>, Vec<u8>)> {
    let offer = extensions
        .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
        .unwrap_or_default();
    let (tcp, head, early) = raw_ws_with(addr, "", None, &offer).await?;
    let agreed = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    });
    Ok((tcp, agreed, early))
}

/// A masked client frame with any first byte (FIN, RSV bits, opcode).
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = client_frame(0, payload);
    frame[0] = first;
    frame
}

/// RFC 7692 compression of one message, client side (flate2, 15-bit window, no takeover).
fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    c.compress_vec(payload, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A frame from the server, inflated when RSV1 is set.
#[derive(Debug)]
struct Got {
    opcode: u8,
    compressed: bool,
    /// Bytes on the wire, header included.
    wire: usize,
    /// The payload as sent (still compressed when `compressed`).
    sent: Vec<u8>,
    payload: Vec<u8>,
}

/// Runs every compressed frame of `frames` through C zlib (tests/fixtures/inflate_check.py)
/// with a window of `bits`, each on its own: it holds back-references to that window, as a
/// browser may.
fn check_with_zlib(frames: &[Got], bits: u8) -> Result<()> {
    zlib_check(frames, bits, false)
}

/// [`check_with_zlib`] for a connection with context takeover: one inflater for all of
/// `frames`, as a browser keeps.
fn check_stream_with_zlib(frames: &[Got], bits: u8) -> Result<()> {
    zlib_check(frames, bits, true)
}

fn zlib_check(frames: &[Got], bits: u8, stream: bool) -> Result<()> {
    use std::fmt::Write as _;
    let mut lines = String::new();
    for f in frames.iter().filter(|f| f.compressed) {
        let hex = |b: &[u8]| {
            b.iter().fold(String::new(), |mut s, x| {
                let _ = write!(s, "{x:02x}");
                s
            })
        };
        writeln!(lines, "{bits} {} {}", hex(&f.sent), hex(&f.payload))?;
    }
    let mut child = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/inflate_check.py"
        ))
        .args(stream.then_some("--stream"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("python3")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let _ = std::io::Write::write_all(&mut stdin, lines.as_bytes());
    drop(stdin);
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// How a connection's compressed frames are inflated, by flate2's `Decompress` (not the server's
/// code): `Own(bits)`, a fresh inflater per message (the server promised no context takeover);
/// `Kept`, one inflater for the connection, whose window carries over (context takeover).
enum Inflate {
    Own(u8),
    Kept(Box<Decompress>),
}

impl Inflate {
    /// The way the 101's `Sec-WebSocket-Extensions` (`agreed`) says, with a window of `bits`.
    fn for_agreed(agreed: Option<&str>, bits: u8) -> Self {
        match agreed {
            Some(agreed) if !agreed.contains("server_no_context_takeover") => {
                Self::Kept(Box::new(Decompress::new_with_window_bits(false, bits)))
            }
            _ => Self::Own(bits),
        }
    }

    /// Output is taken 16 bytes at a time, so every back-reference must reach into the
    /// inflater's own window: a frame compressed with a larger window than negotiated, or
    /// reaching past what this connection was sent, fails here ("too far back") or inflates to
    /// other bytes.
    fn inflate(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        let mut own;
        let d = match self {
            Self::Own(bits) => {
                own = Decompress::new_with_window_bits(false, *bits);
                &mut own
            }
            Self::Kept(d) => &mut **d,
        };
        let mut input = data.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let (start, mut out) = (d.total_in(), Vec::new());
        while ((d.total_in() - start) as usize) < input.len() {
            let mut chunk = Vec::with_capacity(16);
            let at = (d.total_in() - start) as usize;
            d.decompress_vec(&input[at..], &mut chunk, FlushDecompress::Sync)
                .context("server frame does not inflate")?;
            anyhow::ensure!(
                (d.total_in() - start) as usize > at || !chunk.is_empty(),
                "inflater stuck"
            );
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// Reads frames until `done` says so, the server closes, or 10 s pass (an error then).
async fn read_frames(
    tcp: &mut TcpStream,
    mut buf: Vec<u8>,
    inflater: &mut Inflate,
    mut done: impl FnMut(&[Got]) -> bool,
) -> Result<Vec<Got>> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while buf.len() >= 2 {
            let (b0, b1) = (buf[0], buf[1]);
            anyhow::ensure!(
                b0 & 0x80 != 0 && b0 & 0x30 == 0 && b1 & 0x80 == 0,
                "bad header {b0:#x} {b1:#x}"
            );
            let (len, header) = match b1 & 0x7F {
                126 if buf.len() < 4 => break,
                126 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() < 10 => break,
                127 => (u64::from_be_bytes(buf[2..10].try_into()?) as usize, 10),
                n => (n as usize, 2),
            };
            if buf.len() < header + len {
                break;
            }
            let (opcode, compressed) = (b0 & 0x0F, b0 & 0x40 != 0);
            anyhow::ensure!(!compressed || opcode == 1, "RSV1 on opcode {opcode}");
            let data = &buf[header..header + len];
            let payload = if compressed {
                inflater.inflate(data)?
            } else {
                data.to_vec()
            };
            if opcode == 1 {
                serde_json::from_slice::<Value>(&payload).context("text frame is not JSON")?;
            }
            frames.push(Got {
                opcode,
                compressed,
                wire: header + len,
                sent: data.to_vec(),
                payload,
            });
            buf.drain(..header + len);
            if opcode == 8 || done(&frames) {
                return Ok(frames);
            }
        }
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .context("no frame within 10 s")?
            .unwrap_or(0);
        if n == 0 {
            return Ok(frames);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A text frame's JSON; `Null` for any other frame (a heartbeat's ping comes in between on a
/// slow run).
fn json(frame: &Got) -> Value {
    match frame.opcode {
        1 => serde_json::from_slice(&frame.payload).unwrap(),
        _ => Value::Null,
    }
}

fn close_code(frames: &[Got]) -> Option<u16> {
    frames
        .iter()
        .find(|f| f.opcode == 8)
        .and_then(|f| close_payload_code(&f.payload))
}

async fn server(extra: &[&str]) -> (FakeUpstream, TestServer) {
    let upstream = FakeUpstream::start(Reply::Changing(common::payload_with_units(60))).await;
    let server = TestServer::start_ready(&upstream, extra).await;
    (upstream, server)
}

/// Issue 23, point 3: an offer that asks `server_no_context_takeover` is answered with no
/// context takeover both ways, and the snapshot and the deltas arrive compressed (RSV1), each
/// inflating on its own to the same JSON a raw subscriber receives for the same `seq`, in under
/// half the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_contained_offer_gets_every_feed_frame_compressed_once_and_identical() -> Result<()>
{
    let (_upstream, server) = server(&[]).await;
    let (mut deflated, agreed, early_d) = connect(server.addr, Some(SELF_CONTAINED_OFFER)).await?;
    assert_eq!(
        agreed.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let (mut raw, none, early_r) = connect(server.addr, None).await?;
    assert_eq!(none, None, "no offer, no extension");
    let deltas = |frames: &[Got]| frames.iter().filter(|f| json(f)["type"] == "delta").count() >= 5;
    let got_d = read_frames(&mut deflated, early_d, &mut Inflate::Own(15), deltas).await?;
    let got_r = read_frames(&mut raw, early_r, &mut Inflate::Own(15), deltas).await?;
    assert_eq!(json(&got_d[0])["type"], "snapshot");
    let feed =
        |f: &&Got| f.opcode == 1 && matches!(json(f)["type"].as_str(), Some("snapshot" | "delta"));
    assert!(
        got_d.iter().filter(feed).all(|f| f.compressed),
        "every snapshot and delta compressed"
    );
    assert!(
        got_r.iter().all(|f| !f.compressed),
        "the raw subscriber gets raw frames"
    );
    let (mut compared, mut wire_d, mut wire_r) = (0, 0, 0);
    for d in got_d.iter().filter(|f| json(f)["type"] == "delta") {
        if let Some(r) = got_r
            .iter()
            .find(|r| json(r)["seq"] == json(d)["seq"] && json(r)["type"] == "delta")
        {
            assert_eq!(d.payload, r.payload, "same bytes once inflated");
            compared += 1;
            wire_d += d.wire;
            wire_r += r.wire;
        }
    }
    assert!(compared >= 3, "only {compared} deltas in common");
    assert!(
        wire_d * 2 < wire_r,
        "compressed {wire_d} B vs raw {wire_r} B"
    );
    server.stop().await;
    Ok(())
}

/// `server_max_window_bits` is honoured (frames inflate with a 9-bit window); 8 cannot be
/// produced by zlib, so that offer is declined and the next one taken, or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_bits_are_honoured_or_the_offer_declined() -> Result<()> {
    let (_upstream, server) = server(&[]).await;
    let (mut tcp, agreed, early) = connect(
        server.addr,
        Some("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9; server_no_context_takeover; client_max_window_bits"),
    )
    .await?;
    assert_eq!(
        agreed.as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
        )
    );
    let got = read_frames(&mut tcp, early, &mut Inflate::Own(9), |f| f.len() >= 3).await?;
    assert!(got[0].compressed && json(&got[0])["type"] == "snapshot");
    check_with_zlib(&got, 9)?;

    let (mut tcp, agreed, early) = connect(
        server.addr,
        Some("permessage-deflate; server_max_window_bits=8"),
    )
    .await?;
    assert_eq!(agreed, None);
    let got = read_frames(&mut tcp, early, &mut Inflate::Own(15), |f| !f.is_empty()).await?;
    assert!(!got[0].compressed);
    server.stop().await;
    Ok(())
}

/// The server flag (`--no-permessage-deflate`) declines every offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_flag_turns_it_off() -> Result<()> {
    let (_upstream, server) = server(&["--no-permessage-deflate"]).await;
    let (mut tcp, agreed, early) = connect(server.addr, Some(CHROMIUM_OFFER)).await?;
    assert_eq!(agreed, None);
    let got = read_frames(&mut tcp, early, &mut Inflate::Own(15), |f| f.len() >= 2).await?;
    assert!(got.iter().all(|f| !f.compressed));
    server.stop().await;
    Ok(())
}

/// `--no-deflate-context-takeover`: a browser's offer is answered with no context takeover, and
/// every compressed frame inflates on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_flag_turns_context_takeover_off() -> Result<()> {
    let (_upstream, server) = server(&["--no-deflate-context-takeover"]).await;
    let (mut tcp, agreed, early) = connect(server.addr, Some(CHROMIUM_OFFER)).await?;
    assert_eq!(
        agreed.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let deltas = |f: &[Got]| f.iter().filter(|f| json(f)["type"] == "delta").count() >= 5;
    let got = read_frames(&mut tcp, early, &mut Inflate::Own(15), deltas).await?;
    check_with_zlib(&got, 15)?;
    assert_eq!(
        server
            .metric("ratecast_ws_deflate_shared_frames_total")
            .await,
        0.0
    );
    server.stop().await;
    Ok(())
}

/// Sends `bytes` on a connection with (or without) deflate negotiated and returns the close
/// code the server answers with.
async fn close_code_after(
    server: &TestServer,
    negotiate: bool,
    bytes: &[u8],
) -> Result<Option<u16>> {
    let offer = negotiate.then_some(CHROMIUM_OFFER);
    let (mut tcp, agreed, early) = connect(server.addr, offer).await?;
    assert_eq!(agreed.is_some(), negotiate);
    tcp.write_all(bytes).await?;
    let mut inflater = Inflate::for_agreed(agreed.as_deref(), 15);
    let frames = read_frames(&mut tcp, early, &mut inflater, |_| false).await?;
    Ok(close_code(&frames))
}

/// Issue 23, point 6: RSV1 where RFC 7692 forbids it closes with 1002; data that does not
/// inflate with 1007; a decompression bomb with 1009, before it is inflated past 4 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_frames_that_break_the_rules_close_with_a_clear_code() -> Result<()> {
    let (_upstream, server) = server(&[]).await;
    let ping = deflate(br#"{"op":"ping"}"#);
    // RSV1 on a control frame.
    assert_eq!(
        close_code_after(&server, true, &masked(0xC9, b"")).await?,
        Some(1002)
    );
    // RSV1 without negotiation.
    assert_eq!(
        close_code_after(&server, false, &masked(0xC1, &ping)).await?,
        Some(1002)
    );
    // RSV1 on a continuation frame.
    let mut on_continuation = masked(0x41, &ping[..3]);
    on_continuation.extend(masked(0xC0, &ping[3..]));
    assert_eq!(
        close_code_after(&server, true, &on_continuation).await?,
        Some(1002)
    );
    // RSV2 is never negotiated.
    assert_eq!(
        close_code_after(&server, true, &masked(0xA1, b"{}")).await?,
        Some(1002)
    );
    // Not deflate data (a reserved block type).
    assert_eq!(
        close_code_after(&server, true, &masked(0xC1, &[0xff, 0xff, 0xff])).await?,
        Some(1007)
    );
    // A bomb: 1 MiB of spaces in well under 4 KiB of deflate.
    let bomb = deflate(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 4096, "{} bytes", bomb.len());
    assert_eq!(
        close_code_after(&server, true, &masked(0xC1, &bomb)).await?,
        Some(1009)
    );
    // Still serving.
    let (mut tcp, agreed, early) = connect(server.addr, Some(CHROMIUM_OFFER)).await?;
    let mut inflater = Inflate::for_agreed(agreed.as_deref(), 15);
    assert!(
        !read_frames(&mut tcp, early, &mut inflater, |f| !f.is_empty())
            .await?
            .is_empty()
    );
    server.stop().await;
    Ok(())
}

/// A compressed command, whole or fragmented over three frames (RSV1 on the first only, a ping
/// between the fragments), and an uncompressed one on the same connection, are all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_commands_whole_or_fragmented_are_answered() -> Result<()> {
    let (_upstream, server) = server(&[]).await;
    let (mut tcp, agreed, early) = connect(server.addr, Some(CHROMIUM_OFFER)).await?;
    assert!(agreed.is_some());
    let ping = deflate(br#"{"op":"ping"}"#);
    let mut bytes = masked(0xC1, &ping);
    bytes.extend(masked(0x41, &ping[..2]));
    bytes.extend(masked(0x00, &ping[2..4]));
    bytes.extend(masked(0x89, b"between"));
    bytes.extend(masked(0x80, &ping[4..]));
    bytes.extend(masked(0x81, br#"{"op":"ping"}"#));
    tcp.write_all(&bytes).await?;
    let pongs = |f: &[Got]| {
        f.iter()
            .filter(|f| f.opcode == 1 && json(f)["type"] == "pong")
            .count()
    };
    let mut inflater = Inflate::for_agreed(agreed.as_deref(), 15);
    let got = read_frames(&mut tcp, early, &mut inflater, |f| pongs(f) >= 3).await?;
    assert_eq!(pongs(&got), 3, "{got:?}");
    assert!(
        got.iter()
            .any(|f| f.opcode == 0xA && f.payload == b"between")
    );
    assert_eq!(close_code(&got), None);
    server.stop().await;
    Ok(())
}

/// Issue 23, point 3: compressed **once** per publication, not per subscriber nor per shard.
/// Six subscribers (over every shard) negotiate the same window without context takeover;
/// while the first reads 20 deltas, the server's compression count grows by about 20 (a few
/// heartbeats or in-flight deltas aside), where compressing per subscriber would make it ~120
/// and per shard ~40.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_feed_frame_is_compressed_once_for_every_subscriber() -> Result<()> {
    let (_upstream, server) = server(&[]).await;
    let mut subscribers = Vec::new();
    for _ in 0..6 {
        let (mut tcp, agreed, early) = connect(server.addr, Some(SELF_CONTAINED_OFFER)).await?;
        assert!(agreed.is_some());
        // Up to the snapshot: every subscriber is in its shard before counting starts.
        let mut got =
            read_frames(&mut tcp, early, &mut Inflate::Own(15), |f| !f.is_empty()).await?;
        assert!(got.remove(0).compressed);
        subscribers.push(tcp);
    }
    let before = server
        .metric("ratecast_ws_deflate_compressions_total")
        .await;
    // Deltas published after `before` was read (older ones may wait in the socket buffer).
    let from = server.seq().await;
    let deltas = |frames: &[Got]| {
        frames
            .iter()
            .filter(|f| f.opcode == 1 && json(f)["type"] == "delta")
            .filter(|f| json(f)["seq"].as_u64() > Some(from))
            .count()
    };
    let first = &mut subscribers[0];
    let got = read_frames(first, Vec::new(), &mut Inflate::Own(15), |f| {
        deltas(f) >= 20
    })
    .await?;
    let compressions = server
        .metric("ratecast_ws_deflate_compressions_total")
        .await
        - before;
    assert_eq!(deltas(&got), 20);
    assert!(
        (15.0..=30.0).contains(&compressions),
        "{compressions} compressions while one subscriber of six read 20 deltas"
    );
    server.stop().await;
    Ok(())
}

/// Issue 23, points 3 and 5: a browser's offer (no `server_no_context_takeover`) is answered
/// with context takeover. On the recorded CoinGecko payload (the demo's walk), every delta
/// inflates through the connection's one inflater to the same bytes a raw subscriber gets for
/// the same `seq`, and once the subscriber has a window's worth of the shared stream its deltas
/// take **at most 35 % of the raw bytes** (self-contained: ~42 %). A subscriber that joins
/// later, with a 9-bit window, is checked the same way, and by C zlib as one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_offer_gets_deltas_in_the_shared_context_in_a_third_of_the_bytes() -> Result<()> {
    let server = TestServer::start(common::config("http://127.0.0.1:9", &["--demo"])).await;
    server.wait_ready().await;
    let (mut raw, _, early_r) = connect(server.addr, None).await?;
    let (mut first, agreed, early_1) = connect(server.addr, Some(CHROMIUM_OFFER)).await?;
    assert_eq!(
        agreed.as_deref(),
        Some("permessage-deflate; client_no_context_takeover")
    );
    let deltas = |n: usize| {
        move |frames: &[Got]| frames.iter().filter(|f| json(f)["type"] == "delta").count() >= n
    };
    let mut inflate_1 = Inflate::for_agreed(agreed.as_deref(), 15);
    let got_1 = read_frames(&mut first, early_1, &mut inflate_1, deltas(10)).await?;
    // A later subscriber, 9-bit window: its first deltas cannot lean on a stream it never had.
    let nine = "permessage-deflate; server_max_window_bits=9";
    let (mut late, agreed_9, early_9) = connect(server.addr, Some(nine)).await?;
    assert_eq!(
        agreed_9.as_deref(),
        Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=9")
    );
    let mut inflate_9 = Inflate::for_agreed(agreed_9.as_deref(), 9);
    let got_9 = read_frames(&mut late, early_9, &mut inflate_9, deltas(30)).await?;
    let mut got_1 = got_1;
    got_1.extend(read_frames(&mut first, Vec::new(), &mut inflate_1, deltas(30)).await?);
    let got_r = read_frames(&mut raw, early_r, &mut Inflate::Own(15), |f| {
        let last = |got: &[Got]| got.iter().rev().find_map(|f| json(f)["seq"].as_u64());
        f.iter().filter_map(|f| json(f)["seq"].as_u64()).max() >= last(&got_1).max(last(&got_9))
    })
    .await?;
    for (got, bits) in [(&got_1, 15), (&got_9, 9)] {
        let feed = got.iter().filter(|f| json(f)["type"] == "delta");
        let (mut compared, mut wire, mut wire_raw) = (0, 0, 0);
        for (i, d) in feed.enumerate() {
            let seq = &json(d)["seq"];
            let r = got_r
                .iter()
                .find(|r| &json(r)["seq"] == seq && json(r)["type"] == "delta")
                .with_context(|| format!("raw subscriber has no delta {seq}"))?;
            assert_eq!(
                d.payload, r.payload,
                "window {bits}: delta {seq} inflates the same"
            );
            assert!(d.compressed, "window {bits}: delta {seq} compressed");
            // A 15-bit window holds ~16 deltas of this payload: count from the 20th.
            if i >= 20 {
                compared += 1;
                wire += d.wire;
                wire_raw += r.wire;
            }
        }
        assert!(
            compared >= 10,
            "window {bits}: only {compared} deltas compared"
        );
        let share = wire as f64 / wire_raw as f64;
        println!(
            "window {bits}: {wire} B for {wire_raw} B raw ({:.1} %)",
            share * 100.0
        );
        if bits == 15 {
            assert!(
                share <= 0.35,
                "window 15: deltas take {:.1} % of raw",
                share * 100.0
            );
        }
    }
    check_stream_with_zlib(&got_9, 9)?;
    server.stop().await;
    Ok(())
}
