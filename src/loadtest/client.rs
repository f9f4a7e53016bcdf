//! One simulated subscriber: connect (from a chosen source address), then read frames, check
//! `seq` contiguity and record delivery latency until told to stop.

use std::borrow::Cow;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async_tls_with_config};
use tokio_util::sync::CancellationToken;

use super::stats::Shared;

/// Where and how every subscriber connects; resolved once, not per connection.
pub(crate) struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// Source addresses to spread subscribers over (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// Contiguity of `seq` is only defined for unfiltered connections.
    pub full_feed: bool,
    pub connect_timeout: Duration,
}

/// Just what the measurement needs from a frame; everything else (and unknown types) is skipped.
#[derive(Deserialize)]
struct FrameHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    seq: Option<u64>,
    ts: Option<u64>,
}

/// Snapshots are a few KiB and deltas smaller; a small read buffer keeps 10k+ clients cheap
/// (tungstenite's default is 128 KiB per connection).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) async fn subscriber(
    id: usize,
    shard: usize,
    target: Arc<Target>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let started = Instant::now();
    let mut ws = tokio::select! {
        _ = stop.cancelled() => return shared.failed("cancelled".into()),
        res = tokio::time::timeout(target.connect_timeout, connect(&target, id)) => match res {
            Ok(Ok(ws)) => ws,
            Ok(Err(reason)) => return shared.failed(reason),
            Err(_) => return shared.failed("timeout".into()),
        },
    };
    shared.connected(shard, started.elapsed());

    let mut last_seq = None;
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            msg = ws.next() => msg,
        };
        let reason = match msg {
            Some(Ok(Message::Text(text))) => {
                on_frame(text.as_bytes(), shard, &target, &shared, &mut last_seq);
                continue;
            }
            // Pings are answered by tungstenite itself; anything else is not in the protocol.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_) | Message::Frame(_))) => {
                shared.c.other_frames.fetch_add(1, Relaxed);
                continue;
            }
            Some(Ok(Message::Close(frame))) => match frame {
                Some(f) => format!("close_{}", u16::from(f.code)),
                None => "close".into(),
            },
            Some(Err(e)) => ws_reason(&e),
            None => "eof".into(),
        };
        shared.disconnected(reason);
        shared.closed();
        return;
    }
    shared.closed();
    // Say goodbye, but never let a slow server hold the end of the run.
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

fn on_frame(
    bytes: &[u8],
    shard: usize,
    target: &Target,
    shared: &Shared,
    last_seq: &mut Option<u64>,
) {
    let c = &shared.c;
    c.frames.fetch_add(1, Relaxed);
    c.bytes.fetch_add(bytes.len() as u64, Relaxed);
    let Ok(head) = serde_json::from_slice::<FrameHead>(bytes) else {
        c.unparsable.fetch_add(1, Relaxed);
        return;
    };
    match (head.kind.as_ref(), head.seq) {
        ("snapshot", Some(seq)) => {
            c.snapshots.fetch_add(1, Relaxed);
            if last_seq.is_some() {
                c.resyncs.fetch_add(1, Relaxed);
            }
            *last_seq = Some(seq);
        }
        ("delta", Some(seq)) => {
            c.deltas.fetch_add(1, Relaxed);
            if let (Some(ts), true) = (head.ts, shared.steady.load(Relaxed)) {
                shared.latency(shard, now_micros().saturating_sub(ts.saturating_mul(1000)));
            }
            if target.full_feed
                && let Some(last) = *last_seq
            {
                if seq > last + 1 {
                    c.gap_events.fetch_add(1, Relaxed);
                    c.missing_seqs.fetch_add(seq - last - 1, Relaxed);
                } else if seq <= last {
                    c.out_of_order.fetch_add(1, Relaxed);
                }
            }
            *last_seq = Some(last_seq.map_or(seq, |last| last.max(seq)));
        }
        ("heartbeat", _) => {
            c.heartbeats.fetch_add(1, Relaxed);
        }
        _ => {
            c.other_frames.fetch_add(1, Relaxed);
        }
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn connect(target: &Target, id: usize) -> Result<Ws, String> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| io_reason(&e))?;
    if !target.sources.is_empty() {
        let source = target.sources[id % target.sources.len()];
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| io_reason(&e))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| io_reason(&e))?;
    // Pongs and the close frame are tiny; don't let Nagle hold them.
    stream.set_nodelay(true).map_err(|e| io_reason(&e))?;
    let (ws, _response) =
        client_async_tls_with_config(target.url.as_str(), stream, Some(ws_config()), None)
            .await
            .map_err(|e| ws_reason(&e))?;
    Ok(ws)
}

/// Short, stable labels for the summary's failure and disconnect tables.
fn io_reason(e: &io::Error) -> String {
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

fn ws_reason(e: &tungstenite::Error) -> String {
    use tungstenite::Error;
    match e {
        Error::Io(io) => io_reason(io),
        Error::Http(response) => format!("http_{}", response.status().as_u16()),
        Error::Tls(_) => "tls".into(),
        Error::Protocol(_) => "protocol".into(),
        Error::Capacity(_) => "too_big".into(),
        Error::ConnectionClosed | Error::AlreadyClosed => "eof".into(),
        _ => "other".into(),
    }
}
