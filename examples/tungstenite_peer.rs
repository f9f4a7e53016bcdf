//! A task-per-subscriber tokio-tungstenite peer for benches/fanout.rs: relays a ratecast
//! server's full feed to its own subscribers the way benches/support/node/ws-peer.mjs does, so
//! the bench measures the two peers and ratecast with the same generator in one run.
//!
//! The plain Rust design, not a strawman: hyper for HTTP and the upgrade (tokio-tungstenite's
//! `server-custom-accept` example), one task per subscriber on the multi-threaded runtime, each
//! upstream frame received once as `Utf8Bytes` and shared through a `tokio::sync::broadcast`
//! channel (a reference count per subscriber, no copy, no re-serialisation), one `send` (one
//! write) per frame. Sockets configured as ratecast's own task-per-subscriber `/ws` was (commit
//! 3285130): a 4 KiB read buffer (subscribers send almost nothing) and no write batching.
//!
//! Mirrors ws-peer.mjs: the last snapshot and the deltas after it are kept, so a new subscriber
//! gets a contiguous feed (snapshot, then those deltas, then live frames); every other frame
//! (deltas, heartbeats, status) is relayed; a later upstream snapshot is kept but not relayed.
//! Answers /readyz and /healthz (200 once it holds a snapshot) and /metrics with the bytes and
//! frames written to subscriber sockets under ratecast's metric names, so the bench reads all
//! three alike. No permessage-deflate: tokio-tungstenite has none. Exits when upstream closes.
//!
//! Usage: `PORT=… UPSTREAM=ws://127.0.0.1:…/ws cargo run --release --example tungstenite_peer`

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Live frames a subscriber may fall behind by before it is closed as a slow consumer (1008):
/// 100 s of frames at the bench's fastest tick, so no subscriber the generator keeps up with is
/// ever dropped (ws-peer.mjs buffers without bound).
const LAG_FRAMES: usize = 1024;

/// What a new subscriber is sent before the live frames.
#[derive(Default)]
struct Feed {
    /// The last upstream snapshot; `None` until one arrived (not ready).
    snapshot: Option<Utf8Bytes>,
    /// The deltas after it.
    since: Vec<Utf8Bytes>,
}

struct Relay {
    /// Locked by the upstream reader while it updates the feed and publishes a frame, and by a new
    /// subscriber while it copies the feed and subscribes: no frame is lost or doubled between.
    feed: Mutex<Feed>,
    live: broadcast::Sender<Utf8Bytes>,
    /// Frames and bytes written to subscribers (`/metrics`).
    frames: AtomicU64,
    bytes: AtomicU64,
}

impl Relay {
    fn feed(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let port: u16 = std::env::var("PORT").context("PORT")?.parse()?;
    let upstream_url = std::env::var("UPSTREAM").context("UPSTREAM")?;
    let relay = Arc::new(Relay {
        feed: Mutex::default(),
        live: broadcast::channel(LAG_FRAMES).0,
        frames: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let (upstream, _) = tokio_tungstenite::connect_async(&upstream_url)
        .await
        .with_context(|| format!("cannot connect to {upstream_url}"))?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    tokio::spawn(accept(listener, relay.clone()));
    relay_upstream(upstream, &relay).await;
    // As ws-peer.mjs: without its upstream the peer has nothing to serve.
    std::process::exit(1)
}

/// Reads the upstream feed until it ends: keeps the snapshot and the deltas after it, publishes
/// every frame but snapshots to the subscribers.
async fn relay_upstream<S>(mut upstream: WebSocketStream<S>, relay: &Relay)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = upstream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let kind = frame_type(&text);
        let mut feed = relay.feed();
        match kind {
            Some("snapshot") => {
                feed.snapshot = Some(text);
                feed.since.clear();
                continue;
            }
            Some("delta") => feed.since.push(text.clone()),
            _ => {}
        }
        // An error only says that nobody subscribes yet.
        let _ = relay.live.send(text);
    }
}

/// The frame's `type`, from its first 40 bytes as ws-peer.mjs reads it (frames open with it).
fn frame_type(text: &str) -> Option<&str> {
    let head = &text.as_bytes()[..text.len().min(40)];
    let head = std::str::from_utf8(head).ok()?;
    let rest = &head[head.find(r#""type":""#)? + 8..];
    Some(&rest[..rest.find('"')?])
}

async fn accept(listener: TcpListener, relay: Arc<Relay>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, relay.clone()));
            // Errors are the client's (a reset mid-request): nothing to do but drop it.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn answer(
    mut req: Request<Incoming>,
    relay: Arc<Relay>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = |code: StatusCode| {
        let mut response = Response::new(Full::default());
        *response.status_mut() = code;
        response
    };
    let response = match req.uri().path() {
        "/readyz" | "/healthz" if relay.feed().snapshot.is_some() => status(StatusCode::OK),
        "/readyz" | "/healthz" => status(StatusCode::SERVICE_UNAVAILABLE),
        "/metrics" => Response::new(Full::from(format!(
            "ratecast_ws_bytes_sent_total {}\nratecast_ws_frames_sent_total {}\n",
            relay.bytes.load(Ordering::Relaxed),
            relay.frames.load(Ordering::Relaxed)
        ))),
        "/ws" => match req.headers().get(SEC_WEBSOCKET_KEY) {
            None => status(StatusCode::BAD_REQUEST),
            Some(key) => {
                let accept = derive_accept_key(key.as_bytes());
                tokio::spawn(async move {
                    if let Ok(upgraded) = hyper::upgrade::on(&mut req).await {
                        let io = Counted {
                            io: TokioIo::new(upgraded),
                            relay: relay.clone(),
                        };
                        let config = WebSocketConfig::default()
                            .read_buffer_size(4 * 1024)
                            .write_buffer_size(0);
                        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config));
                        subscriber(ws.await, &relay).await;
                    }
                });
                let mut response = status(StatusCode::SWITCHING_PROTOCOLS);
                let headers = response.headers_mut();
                headers.insert(CONNECTION, "Upgrade".parse().expect("static"));
                headers.insert(UPGRADE, "websocket".parse().expect("static"));
                headers.insert(
                    SEC_WEBSOCKET_ACCEPT,
                    accept.parse().expect("base64 is a header value"),
                );
                response
            }
        },
        _ => status(StatusCode::NOT_FOUND),
    };
    Ok(response)
}

/// One subscriber's task: the snapshot and the deltas since, then every live frame, until the
/// client leaves, the socket fails or the client falls `LAG_FRAMES` behind.
async fn subscriber<S>(mut ws: WebSocketStream<S>, relay: &Relay)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (backlog, mut live) = {
        let feed = relay.feed();
        let backlog: Vec<Utf8Bytes> = feed
            .snapshot
            .iter()
            .chain(
                feed.snapshot
                    .is_some()
                    .then_some(&feed.since)
                    .into_iter()
                    .flatten(),
            )
            .cloned()
            .collect();
        (backlog, relay.live.subscribe())
    };
    for frame in backlog {
        if ws.send(Message::Text(frame)).await.is_err() {
            return;
        }
        relay.frames.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        tokio::select! {
            frame = live.recv() => match frame {
                Ok(frame) => {
                    if ws.send(Message::Text(frame)).await.is_err() {
                        return;
                    }
                    relay.frames.fetch_add(1, Ordering::Relaxed);
                }
                Err(RecvError::Lagged(_)) => {
                    let close = CloseFrame { code: CloseCode::Policy, reason: "slow consumer".into() };
                    let _ = ws.close(Some(close)).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            // Pings are answered by tungstenite itself; only the end of the stream matters here.
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A subscriber's socket, counting the bytes written to it (`ratecast_ws_bytes_sent_total`, as
/// ws-peer.mjs counts `bytesWritten`).
struct Counted<T> {
    io: T,
    relay: Arc<Relay>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.relay.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
