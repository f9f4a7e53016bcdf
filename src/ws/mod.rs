//! The live stream (`GET /ws`, docs/protocol.md): snapshot, contiguous deltas, resume,
//! filters, heartbeats, liveness, slow-consumer isolation, connection limits and drain.
//!
//! The upgrade is done here (no WebSocket library on the server side): after the handshake each
//! connection is a raw TCP socket shared by a reader task (client commands, pings, liveness) and
//! one of a few fan-out shards ([`fanout`]) that write pre-encoded frames to many sockets.

pub mod fanout;
pub mod frame;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dashmap::DashMap;
use hyper_util::rt::TokioIo;
use metrics::Gauge;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span, warn};

use self::fanout::{Clock, Command, Peer, Shard};
use self::frame::{Decoder, Incoming};
use crate::AppState;
use crate::error::ApiError;
use crate::model;
use crate::protocol::{self, ClientCommand, ServerFrame};

/// Client messages larger than this close the connection with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
}

/// Open connections, globally and per client IP.
#[derive(Default)]
pub struct Connections {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    next_id: AtomicU64,
}

/// Holds one connection slot; dropping it (on any path, panics included) frees the slot.
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    ip: IpAddr,
    pub id: u64,
    /// The open-connections gauge, kept in step with the slot.
    gauge: Option<Gauge>,
}

impl ConnectionSlot {
    /// Counts this slot in `gauge` for as long as it lives.
    pub fn counted_in(mut self, gauge: Gauge) -> Self {
        gauge.increment(1.0);
        self.gauge = Some(gauge);
        self
    }
}

impl Connections {
    /// Takes a slot for `ip`, or says why not.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<ConnectionSlot, &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("server_full");
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= max_per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("per_ip_limit");
        }
        *count += 1;
        Ok(ConnectionSlot {
            connections: self.clone(),
            ip,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            gauge: None,
        })
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.connections.per_ip.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
        });
        self.connections.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(gauge) = &self.gauge {
            gauge.decrement(1.0);
        }
    }
}

/// The fan-out shards and the clock their peers report liveness on.
#[derive(Clone)]
pub struct Hub {
    shards: Arc<[Shard]>,
    clock: Clock,
}

impl Hub {
    /// One shard per core: each fan-out loop runs on its own worker thread.
    pub fn start(state: &AppState) -> Self {
        let clock = Clock::new();
        let count = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            shards: fanout::start(state, count, clock).into(),
            clock,
        }
    }

    fn shard(&self, id: u64) -> &Shard {
        &self.shards[id as usize % self.shards.len()]
    }
}

#[derive(Debug, Deserialize)]
pub struct StreamParams {
    since: Option<u64>,
    symbols: Option<String>,
}

/// The `/ws` route with its per-IP connection-rate limit.
pub fn routes(state: &AppState, hub: Hub) -> Router<AppState> {
    let router = Router::new().route(
        "/ws",
        get(
            move |state: State<AppState>,
                  peer: ConnectInfo<SocketAddr>,
                  params: Result<Query<StreamParams>, QueryRejection>,
                  request: Request| upgrade(state, peer, params, request, hub.clone()),
        ),
    );
    let ws = &state.config.ws;
    let refused = state.metrics.counter(
        "ratecast_ws_connections_refused_total",
        &[("reason", "rate_limited")],
    );
    match crate::http::rate_limit_layer(
        ws.connection_rate_per_second,
        ws.connection_rate_burst,
        &state.client_ip,
        Some(refused),
    ) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

fn parse_symbols<'a>(
    symbols: impl IntoIterator<Item = &'a str>,
) -> Result<Option<Arc<BTreeSet<String>>>, String> {
    let set = model::parse_codes(symbols)?;
    Ok((!set.is_empty()).then(|| Arc::new(set)))
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `Sec-WebSocket-Accept` value for a valid RFC 6455 upgrade request.
fn handshake(request: &Request) -> Result<HeaderValue, ApiError> {
    let headers = request.headers();
    let is_upgrade = request.method() == Method::GET
        && header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket");
    if !is_upgrade {
        return Err(ApiError::BadRequest(
            "not a WebSocket upgrade request".into(),
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(ApiError::BadRequest(
            "unsupported WebSocket version (13 expected)".into(),
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty() && k.len() <= 64)
        .ok_or_else(|| ApiError::BadRequest("missing Sec-WebSocket-Key".into()))?;
    HeaderValue::from_str(&frame::accept_key(key.as_bytes())).map_err(|_| ApiError::Internal)
}

async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<Query<StreamParams>, QueryRejection>,
    mut request: Request,
    hub: Hub,
) -> Response {
    let refuse = |reason: &'static str, err: ApiError| {
        state
            .metrics
            .counter(
                "ratecast_ws_connections_refused_total",
                &[("reason", reason)],
            )
            .increment(1);
        err.into_response()
    };
    let config = &state.config.ws;
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        if !config.allowed_origin.is_empty() && !config.allowed_origin.iter().any(|a| a == origin) {
            return refuse(
                "origin",
                ApiError::Forbidden(format!("origin {origin:?} is not allowed")),
            );
        }
    }
    if state.shutdown.is_cancelled() {
        return refuse(
            "shutting_down",
            ApiError::Unavailable("server is shutting down; reconnect".into()),
        );
    }
    let Ok(Query(params)) = params else {
        return refuse(
            "bad_request",
            ApiError::BadRequest("bad query: since must be a number".into()),
        );
    };
    let filter = match parse_symbols(params.symbols.as_deref().unwrap_or("").split(',')) {
        Ok(filter) => filter,
        Err(e) => return refuse("bad_request", ApiError::BadRequest(e)),
    };
    let accept = match handshake(&request) {
        Ok(accept) => accept,
        Err(e) => return refuse("bad_request", e),
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return refuse(
            "bad_request",
            ApiError::BadRequest("connection cannot be upgraded".into()),
        );
    };
    let ip = state.client_ip.resolve(peer.ip(), request.headers());
    let slot = match state.connections.try_acquire(
        ip,
        config.max_connections,
        config.max_connections_per_ip,
    ) {
        Ok(slot) => slot.counted_in(state.metrics.ws_connections.clone()),
        Err("per_ip_limit") => {
            return refuse(
                "per_ip_limit",
                ApiError::TooManyConnections(format!("too many connections from {ip}")),
            );
        }
        Err(reason) => {
            return refuse(
                reason,
                ApiError::Unavailable(
                    "server is at its connection limit; try another replica".into(),
                ),
            );
        }
    };
    state.metrics.ws_accepted.increment(1);
    let span = info_span!("ws", conn = slot.id, %ip);
    let tasks = state.tasks.clone();
    tasks.spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => return debug!(error = %e, "upgrade failed"),
            };
            let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
                return warn!("upgraded connection is not a TCP stream");
            };
            let peer = Arc::new(Peer {
                id: slot.id,
                stream: parts.io.into_inner(),
                last_heard: AtomicU64::new(hub.clock.now_ms()),
                closed: AtomicBool::new(false),
            });
            let shard = hub.shard(slot.id).commands.clone();
            let added = Command::Add {
                peer: peer.clone(),
                since: params.since,
                filter,
            };
            if shard.send(added).await.is_ok() {
                let reader = Reader {
                    peer,
                    shard,
                    clock: hub.clock,
                    _slot: slot,
                };
                reader.run(parts.read_buf, &state).await;
            }
        }
        .instrument(span),
    );
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| ApiError::Internal.into_response())
}

/// Reads one client's frames: commands, pings, close. Owns the connection slot.
struct Reader {
    peer: Arc<Peer>,
    shard: mpsc::Sender<Command>,
    clock: Clock,
    _slot: ConnectionSlot,
}

impl Reader {
    async fn run(self, early: bytes::Bytes, state: &AppState) {
        debug!("connected");
        let mut decoder = Decoder::new(MAX_CLIENT_MESSAGE);
        decoder.buffer().extend_from_slice(&early);
        // `early` points into hyper's 8 KiB connection buffer: holding it would keep that
        // buffer alive for the whole life of an idle connection.
        drop(early);
        let end = self.read_loop(&mut decoder, state).await;
        if let Err((code, reason)) = end {
            let _ = self
                .shard
                .send(Command::Close(self.peer.id, code, reason))
                .await;
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

    async fn read_loop(
        &self,
        decoder: &mut Decoder,
        state: &AppState,
    ) -> Result<(), (u16, &'static str)> {
        loop {
            loop {
                match decoder.next_message() {
                    Ok(Some(message)) => self.on_message(message).await?,
                    Ok(None) => break,
                    Err(e) => return Err((e.close_code(), e.reason())),
                }
            }
            decoder.shrink();
            tokio::select! {
                readable = self.peer.stream.readable() => readable.map_err(|_| (close::NORMAL, ""))?,
                // The shard sends 1001 on shutdown; give the client a moment to close its side.
                () = linger(&state.shutdown) => return Ok(()),
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

    async fn reply(&self, frame: bytes::Bytes) -> Result<(), (u16, &'static str)> {
        // A closed shard means shutdown: stop reading.
        self.shard
            .send(Command::Reply(self.peer.id, frame))
            .await
            .map_err(|_| (close::GOING_AWAY, ""))
    }

    async fn reply_json(&self, frame: ServerFrame) -> Result<(), (u16, &'static str)> {
        self.reply(frame::text(&frame.encode())).await
    }

    async fn on_message(&self, message: Incoming) -> Result<(), (u16, &'static str)> {
        match message {
            Incoming::Ping(payload) => {
                self.reply(frame::encode(frame::opcode::PONG, &payload))
                    .await
            }
            Incoming::Pong => Ok(()),
            Incoming::Close => Err((close::NORMAL, "")),
            Incoming::Text(text) => match serde_json::from_str::<ClientCommand>(&text) {
                Ok(ClientCommand::Ping) => {
                    let ts = model::unix_ms(SystemTime::now());
                    self.reply_json(ServerFrame::Pong(protocol::Pong { ts }))
                        .await
                }
                Ok(ClientCommand::Subscribe { symbols }) => {
                    match parse_symbols(symbols.iter().flatten().map(String::as_str)) {
                        Ok(filter) => self
                            .shard
                            .send(Command::Subscribe(self.peer.id, filter))
                            .await
                            .map_err(|_| (close::GOING_AWAY, "")),
                        Err(error) => {
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
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_capped_and_released_on_every_path_panics_included() {
        let connections = Arc::new(Connections::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = connections.try_acquire(ip, 3, 2).unwrap();
        let _b = connections.try_acquire(ip, 3, 2).unwrap();
        assert_eq!(
            connections.try_acquire(ip, 3, 2).err(),
            Some("per_ip_limit")
        );
        let c = connections.try_acquire(other, 3, 2).unwrap();
        assert_eq!(
            connections.try_acquire(other, 3, 2).err(),
            Some("server_full")
        );
        drop(a);
        assert_eq!(connections.open(), 2);
        let panicking = tokio::spawn(async move {
            let _slot = c;
            panic!("connection task panics");
        });
        assert!(panicking.await.is_err());
        assert_eq!(connections.open(), 1);
        assert!(
            !connections.per_ip.contains_key(&other),
            "empty per-IP entries are removed"
        );
    }
}
