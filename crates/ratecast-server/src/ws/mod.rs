//! The live stream (`GET /ws`, docs/protocol.md): snapshot, contiguous deltas, resume,
//! filters, heartbeats, liveness, slow-consumer isolation, connection limits and drain.
//!
//! No WebSocket library on the server side: [`handshake`] answers the upgrade, the accept loop
//! hands the socket back as a plain `TcpStream`, and each connection is then a [`reader`] task
//! (client commands, pings, liveness) plus a place in one of a few [`fanout`] shards that write
//! pre-encoded frames ([`frame`]) to many sockets. [`connections`] caps how many are open.

pub mod connections;
pub mod fanout;
pub mod frame;
pub mod handshake;
mod reader;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{Instrument, debug, info_span};

pub use self::connections::{ConnectionSlot, Connections, SlotError};
use self::fanout::{Clock, Command, Peer, Shard, ShardContext};
use self::frame::DecodeError;
use self::reader::Reader;
use crate::accept::Takeover;
use crate::codes::{CodesError, parse_codes};
use crate::error::ApiError;
use crate::every::every;
use crate::rate_limit;
use crate::state::AppState;
use ratecast_protocol::frames::{self as protocol, ServerFrame};
use ratecast_protocol::time::unix_ms;

/// Client messages larger than this close the connection with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// Why the server closes a connection: each reason is one close code (RFC 6455 §7.4.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CloseReason {
    /// The client closed, or its socket failed.
    Normal,
    /// The server is shutting down.
    GoingAway,
    /// The client does not read its frames in time.
    SlowConsumer,
    /// The client broke the protocol.
    Protocol(DecodeError),
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::SlowConsumer => 1008,
            Self::Protocol(e) => e.close_code(),
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "",
            Self::GoingAway => "server shutting down; reconnect",
            Self::SlowConsumer => "slow consumer: frames not read in time",
            Self::Protocol(e) => e.reason(),
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
    /// One shard per core: each fan-out loop runs on its own worker thread. Also starts the
    /// heartbeat, encoded once per beat and seen by every shard.
    pub fn start(state: &AppState) -> Self {
        let clock = Clock::new();
        let count = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (beat, heartbeats) = watch::channel(Bytes::new());
        state.tasks.spawn(heartbeat(state.clone(), beat));
        let context = ShardContext {
            store: state.store.clone(),
            metrics: state.metrics.clone(),
            write_timeout: state.config.ws.write_timeout,
            idle_timeout: state.config.ws.idle_timeout,
            shutdown: state.shutdown.clone(),
        };
        Self {
            shards: fanout::start(&context, &state.tasks, heartbeats, count, clock).into(),
            clock,
        }
    }

    fn shard(&self, id: u64) -> &Shard {
        &self.shards[id as usize % self.shards.len()]
    }
}

/// Every heartbeat interval, a heartbeat frame with the current `seq`: browsers (which cannot
/// see pings) tell a quiet feed from a dead one, and the shards check their peers' liveness.
async fn heartbeat(state: AppState, beat: watch::Sender<Bytes>) {
    every(state.config.ws.heartbeat_interval, &state.shutdown, || {
        let frame = ServerFrame::Heartbeat(protocol::Heartbeat {
            seq: state.store.seq(),
            ts: unix_ms(SystemTime::now()),
            checked_at: state.store.checked_at(),
        })
        .encode();
        beat.send_replace(frame);
    })
    .await;
}

#[derive(Debug, Deserialize)]
pub struct StreamParams {
    since: Option<u64>,
    symbols: Option<String>,
}

/// The `/ws` route with its per-IP connection-rate limit; starts the fan-out.
pub fn routes(state: &AppState) -> Router<AppState> {
    let hub = Hub::start(state);
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
    match rate_limit::layer(
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
) -> Result<Option<Arc<BTreeSet<String>>>, CodesError> {
    let set = parse_codes(symbols)?;
    Ok((!set.is_empty()).then(|| Arc::new(set)))
}

async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<Query<StreamParams>, QueryRejection>,
    request: Request,
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
    // Browsers always send Origin; other clients may not, and are not the CSWSH risk. An
    // Origin that is not even text cannot be on the allow-list.
    if !config.allowed_origin.is_empty()
        && let Some(origin) = headers.get(header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|o| config.allowed_origin.iter().any(|a| a == o))
    {
        let shown = String::from_utf8_lossy(origin.as_bytes());
        return refuse(
            "origin",
            ApiError::Forbidden(format!("origin {shown:?} is not allowed")),
        );
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
        Err(e) => return refuse("bad_request", ApiError::BadRequest(e.to_string())),
    };
    let accept = match handshake::accept(&request) {
        Ok(accept) => accept,
        Err(e) => return refuse("bad_request", e),
    };
    let Some(takeover) = request.extensions().get::<Takeover>() else {
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
        Err(e @ SlotError::PerIpLimit) => {
            return refuse(
                e.label(),
                ApiError::TooManyConnections(format!("too many connections from {ip}")),
            );
        }
        Err(e @ SlotError::ServerFull) => {
            return refuse(
                e.label(),
                ApiError::Unavailable(
                    "server is at its connection limit; try another replica".into(),
                ),
            );
        }
    };
    let on_upgrade = takeover.claim();
    state.metrics.ws_accepted.increment(1);
    let span = info_span!("ws", conn = slot.id, %ip);
    let tasks = state.tasks.clone();
    tasks.spawn(
        async move {
            let Ok(upgraded) = on_upgrade.await else {
                return debug!("connection ended before the upgrade");
            };
            let peer = Arc::new(Peer {
                id: slot.id,
                stream: upgraded.stream,
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
                    shutdown: state.shutdown.clone(),
                };
                reader.run(upgraded.read_buf).await;
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
