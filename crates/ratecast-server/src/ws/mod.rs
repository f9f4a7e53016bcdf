//! The live stream (`GET /ws`, docs/protocol.md): snapshot, contiguous deltas, resume,
//! filters, heartbeats, liveness, slow-consumer isolation, connection limits and drain.
//!
//! No WebSocket library on the server side: [`handshake`] answers the upgrade, the accept loop
//! hands the socket back as a plain `TcpStream`, and each connection is then a [`reader`] task
//! (client commands, pings, liveness) plus a place in one of a few [`fanout`] shards that write
//! pre-encoded frames ([`frame`]) to many sockets. [`connections`] caps how many are open.

pub mod connections;
pub mod deflate;
pub mod fanout;
pub mod frame;
pub mod handshake;
pub mod outbound;
pub mod reader;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use std::time::SystemTime;
use tokio::sync::Semaphore;

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
use tracing::{Instrument, debug, debug_span};

pub use self::connections::{ConnectionSlot, Connections, SlotError};
use self::fanout::{Clock, Command, Peer, Shard, ShardContext};
use self::frame::DecodeError;
use self::reader::{Reader, ReaderLimits};
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
    /// The client's socket failed or ended: nothing to send.
    Normal,
    /// The client sent a valid close: echo its code (an empty close for none).
    Echo(Option<u16>),
    /// The server is shutting down.
    GoingAway,
    /// The client does not read its frames in time.
    SlowConsumer,
    /// The client sends frames faster than its budget allows.
    FrameRate,
    /// The client's replies piled up unread for the whole write timeout.
    ReplyQueue,
    /// The client broke the protocol.
    Protocol(DecodeError),
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::Echo(code) => code.unwrap_or(1000),
            Self::GoingAway => 1001,
            Self::SlowConsumer | Self::FrameRate | Self::ReplyQueue => 1008,
            Self::Protocol(e) => e.close_code(),
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal | Self::Echo(_) => "",
            Self::GoingAway => "server shutting down; reconnect",
            Self::SlowConsumer => "slow consumer: frames not read in time",
            Self::FrameRate => "too many frames: client frame budget exceeded",
            Self::ReplyQueue => "replies not read: reply queue full",
            Self::Protocol(e) => e.reason(),
        }
    }

    /// The close frame: the peer's own code echoed (RFC 6455 §5.5.1), or ours with a reason.
    pub fn frame(self) -> Bytes {
        match self {
            Self::Echo(None) => frame::close_empty(),
            _ => frame::close(self.code(), self.reason()),
        }
    }

    /// The `reason` label of `ratecast_ws_budget_closes_total`, for budget closes.
    pub fn budget_label(self) -> Option<&'static str> {
        match self {
            Self::FrameRate => Some("frame_rate"),
            Self::ReplyQueue => Some("reply_queue"),
            _ => None,
        }
    }
}

/// The fan-out shards and the clock their peers report liveness on.
#[derive(Clone)]
pub struct Hub {
    shards: Arc<[Shard]>,
    clock: Clock,
    limits: ReaderLimits,
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
            limits: ReaderLimits {
                frames_per_second: state.config.ws.client_frames_per_second,
                frames_burst: state.config.ws.client_frames_burst,
                write_timeout: state.config.ws.write_timeout,
            },
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
            epoch: state.store.epoch().to_string(),
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
    /// The epoch `since` belongs to; a resume without it gets a snapshot.
    epoch: Option<String>,
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

/// With an allow-list, the request's one `Origin` must be on it; the refused value (shown
/// lossily) otherwise. Browsers always send Origin; other clients may not, and are not the
/// CSWSH risk. An Origin that is not text, or several of them, cannot be on the list.
fn origin_allowed(allowed: &[String], headers: &axum::http::HeaderMap) -> Result<(), String> {
    if allowed.is_empty() {
        return Ok(());
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let (Some(origin), more) = (origins.next(), origins.next()) else {
        return Ok(());
    };
    let listed = origin
        .to_str()
        .is_ok_and(|o| allowed.iter().any(|a| a == o));
    if listed && more.is_none() {
        Ok(())
    } else {
        let refused = if listed {
            more.unwrap_or(origin)
        } else {
            origin
        };
        Err(String::from_utf8_lossy(refused.as_bytes()).into_owned())
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
    if let Err(origin) = origin_allowed(&config.allowed_origin, headers) {
        return refuse(
            "origin",
            ApiError::Forbidden(format!("origin {origin:?} is not allowed")),
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
    let deflate = if config.no_permessage_deflate {
        None
    } else {
        handshake::negotiate_deflate(headers, !config.no_deflate_context_takeover)
    };
    let accept = match handshake::accept(&request) {
        Ok(accept) => accept,
        Err(e) => {
            state
                .metrics
                .counter(
                    "ratecast_ws_connections_refused_total",
                    &[("reason", "bad_request")],
                )
                .increment(1);
            return e.into_response();
        }
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
    let window_bits = deflate.as_ref().map(|d| d.window_bits);
    let deflate_takeover = deflate.as_ref().is_some_and(|d| d.takeover);
    let on_upgrade = takeover.claim();
    state.metrics.ws_accepted.increment(1);
    // Debug level: an enabled span is kept, with its formatted fields, for the connection's
    // whole life (0.26 KiB per idle subscriber at the default `info`, measured), and every
    // event inside it is at debug level anyway.
    let span = debug_span!("ws", conn = slot.id, %ip);
    let tasks = state.tasks.clone();
    tasks.spawn(
        async move {
            let Ok(upgraded) = on_upgrade.await else {
                return debug!("connection ended before the upgrade");
            };
            if let Some(since) = params.since {
                state.store.catch_up(since, params.epoch.as_deref()).await;
            }
            let peer = Arc::new(Peer {
                id: slot.id,
                stream: upgraded.stream,
                last_heard: AtomicU64::new(hub.clock.now_ms()),
                closed: AtomicBool::new(false),
                replies: Arc::new(Semaphore::new(outbound::REPLY_BUDGET)),
                deflate: window_bits,
                deflate_takeover,
            });
            let shard = hub.shard(slot.id).commands.clone();
            let added = Command::Add {
                peer: peer.clone(),
                since: params.since.map(|since| (since, params.epoch)),
                filter,
            };
            if shard.send(added).is_ok() {
                let reader = Reader {
                    peer,
                    shard,
                    clock: hub.clock,
                    _slot: slot,
                    limits: hub.limits,
                    metrics: state.metrics.clone(),
                };
                // A task of its own, so that what this one holds (the app state, the query,
                // the hub) is not kept for the connection's whole life.
                let span = tracing::Span::current();
                state
                    .tasks
                    .spawn(reader.run(upgraded.read_buf).instrument(span));
            }
        }
        .instrument(span),
    );
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(deflate) = deflate {
        response = response.header(header::SEC_WEBSOCKET_EXTENSIONS, deflate.response);
    }
    response
        .body(Body::empty())
        .unwrap_or_else(|_| ApiError::Internal.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Issue 12, point 7: query and command parsing never panics, and what it accepts
        /// is a set of lower-case codes.
        #[test]
        fn symbol_lists_never_panic(raw in ".{0,200}") {
            if let Ok(Some(codes)) = parse_symbols(raw.split(',')) {
                for code in codes.iter() {
                    prop_assert_eq!(code.to_lowercase(), code.clone());
                }
            }
        }

        #[test]
        fn origin_checks_never_panic(
            origins in proptest::collection::vec(proptest::collection::vec(32u8..255, 0..40), 0..3),
        ) {
            let mut headers = axum::http::HeaderMap::new();
            for origin in &origins {
                if let Ok(value) = axum::http::HeaderValue::from_bytes(origin) {
                    headers.append(header::ORIGIN, value);
                }
            }
            let allowed = ["https://rates.example.com".to_owned()];
            let verdict = origin_allowed(&allowed, &headers);
            let all: Vec<_> = headers.get_all(header::ORIGIN).iter().collect();
            let ok = all.is_empty() || (all.len() == 1 && all[0] == "https://rates.example.com");
            prop_assert_eq!(verdict.is_ok(), ok);
        }

        /// Random bytes, and keys of 23–25 characters drawn from the base64 alphabet plus its
        /// near misses (URL-safe `-` `_`, `=`, `.`, space, NUL, a high byte): accepted exactly
        /// when they have a key's shape (RFC 6455 §4.1: base64 of 16 bytes).
        #[test]
        fn random_and_near_miss_keys_are_judged_by_their_shape(
            key in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                proptest::collection::vec(near_miss_char(), 23..=25),
                (proptest::collection::vec(near_miss_char(), 22), Just(b"==".to_vec()))
                    .prop_map(|(head, pad)| [head, pad].concat()),
            ],
        ) {
            prop_assert_eq!(handshake::is_valid_key(&key), key_shaped(&key));
        }

        /// Any 16 bytes in base64 are a valid key.
        #[test]
        fn every_16_byte_nonce_in_base64_is_a_valid_key(nonce in any::<[u8; 16]>()) {
            let key = base64(&nonce);
            prop_assert!(handshake::is_valid_key(key.as_bytes()), "{}", key);
        }

        /// A valid key changed in one way is refused: a length off by up to 3, a character
        /// outside the alphabet, or its padding touched.
        #[test]
        fn a_key_changed_anywhere_is_refused(
            nonce in any::<[u8; 16]>(),
            change in 0usize..4,
            at in 0usize..24,
            byte in prop_oneof![
                3 => proptest::sample::select(NEAR_MISSES.to_vec()),
                1 => any::<u8>().prop_filter("outside base64", |b| !ALPHABET.contains(b) && *b != b'='),
            ],
            n in 1usize..4,
        ) {
            let mut key = base64(&nonce).into_bytes();
            match change {
                0 => key.truncate(24 - n),
                1 => key.extend(std::iter::repeat_n(b'A', n)),
                2 => key[at] = byte,
                _ => key[22 + at % 2] = b"AQgw+/"[at % 6],
            }
            prop_assert!(!handshake::is_valid_key(&key), "{:?}", String::from_utf8_lossy(&key));
        }
    }

    /// Standard base64 with padding (RFC 4648 §4), written out so the test does not share code
    /// with what it checks.
    fn base64(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    /// Bytes a careless check lets through: the URL-safe alphabet, padding, separators.
    const NEAR_MISSES: &[u8] = b"-_.* \t\0\x80\xff";

    /// Mostly the base64 alphabet, sometimes padding or a near miss.
    fn near_miss_char() -> impl Strategy<Value = u8> {
        prop_oneof![
            20 => proptest::sample::select(ALPHABET.to_vec()),
            1 => Just(b'='),
            1 => proptest::sample::select(NEAR_MISSES.to_vec()),
        ]
    }

    /// 24 bytes: 22 of the base64 alphabet, then `==`.
    fn key_shaped(key: &[u8]) -> bool {
        match key.split_last_chunk::<2>() {
            Some((head, b"==")) => head.len() == 22 && head.iter().all(|c| ALPHABET.contains(c)),
            _ => false,
        }
    }

    #[test]
    fn base64_of_the_rfc_6455_sample_nonce() {
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }
}
