//! The live stream (`GET /ws`, docs/protocol.md): snapshot, contiguous deltas, resume,
//! filters, heartbeats, liveness, slow-consumer isolation, connection limits and drain.
//!
//! One task per connection. Full-feed connections write the frame bytes the store serialised
//! once; only filtered connections build frames of their own.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use dashmap::DashMap;
use metrics::Gauge;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, timeout};
use tracing::{Instrument, debug, info_span};

use crate::AppState;
use crate::error::ApiError;
use crate::model::{self, Rates};
use crate::protocol::{self, ClientCommand, ServerFrame};
use crate::store::{DeltaEvent, Event, Resume, View};

/// Client frames larger than this close the connection with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Most symbols one filter may name.
pub const MAX_SYMBOLS: usize = 256;
/// One in this many connections records its delivery delay (a histogram sample per frame per
/// subscriber would cost more than the frame).
const DELAY_SAMPLE_EVERY: u64 = 16;
/// Time allowed to hand a close frame to a peer that may not be reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const UNSUPPORTED: u16 = 1003;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
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

#[derive(Debug, Deserialize)]
pub struct StreamParams {
    since: Option<u64>,
    symbols: Option<String>,
}

/// The `/ws` route with its per-IP connection-rate limit.
pub fn routes(state: &AppState) -> Router<AppState> {
    let router = Router::new().route("/ws", get(upgrade));
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
    let set: BTreeSet<String> = symbols
        .into_iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = set.iter().find(|s| !model::is_valid_code(s)) {
        return Err(format!("invalid symbol {bad:?}"));
    }
    if set.len() > MAX_SYMBOLS {
        return Err(format!("at most {MAX_SYMBOLS} symbols"));
    }
    Ok((!set.is_empty()).then(|| Arc::new(set)))
}

async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
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
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return refuse(
                "bad_request",
                ApiError::BadRequest(format!("not a WebSocket upgrade: {e}")),
            );
        }
    };
    let ip = state.client_ip.resolve(peer.ip(), &headers);
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
    let tasks = state.tasks.clone();
    ws.max_message_size(MAX_CLIENT_MESSAGE * 16)
        .max_frame_size(MAX_CLIENT_MESSAGE * 16)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            let span = info_span!("ws", conn = slot.id, %ip);
            let connection = Connection {
                socket,
                state,
                filter,
                last_seq: None,
                last_heard: Instant::now(),
                sample_delay: slot.id % DELAY_SAMPLE_EVERY == 0,
                _slot: slot,
            };
            tasks.track_future(connection.run(params.since).instrument(span))
        })
}

/// Why a connection ended.
enum End {
    /// The peer closed or the socket failed.
    Gone,
    /// We close with this code and reason.
    Close(u16, &'static str),
    /// The peer stopped reading: its socket did not take a frame in time.
    SlowConsumer,
    /// Nothing heard from the peer within the idle timeout (pings unanswered).
    Unresponsive,
}

struct Connection {
    socket: WebSocket,
    state: AppState,
    filter: Option<Arc<BTreeSet<String>>>,
    /// Last `seq` this client is up to date with; `None` until it has a snapshot.
    last_seq: Option<u64>,
    last_heard: Instant,
    sample_delay: bool,
    _slot: ConnectionSlot,
}

impl Connection {
    async fn run(mut self, since: Option<u64>) {
        let metrics = self.state.metrics.clone();
        debug!("connected");
        let end = match self.serve(since).await {
            Ok(()) => End::Gone,
            Err(end) => end,
        };
        match end {
            End::Gone => {}
            End::Close(code, reason) => self.close(code, reason).await,
            End::SlowConsumer => {
                metrics.ws_slow_consumer_closes.increment(1);
                self.close(close::POLICY, "slow consumer: frames not read in time")
                    .await;
            }
            End::Unresponsive => debug!("peer unresponsive; dropping"),
        }
        debug!("disconnected");
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = timeout(CLOSE_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
    }

    async fn serve(&mut self, since: Option<u64>) -> Result<(), End> {
        let store = self.state.store.clone();
        let mut events = match since {
            Some(since) => {
                let (view, resume, rx) = store.resume(since);
                let result = match (view, resume) {
                    (Some(view), Resume::Replay(deltas)) => {
                        for delta in &deltas {
                            self.send_delta(delta).await?;
                        }
                        self.last_seq = Some(view.seq);
                        "replayed"
                    }
                    (view, _) => {
                        if let Some(view) = view {
                            self.send_snapshot(&view).await?;
                        }
                        "snapshot"
                    }
                };
                self.state
                    .metrics
                    .counter("ratecast_ws_resumes_total", &[("result", result)])
                    .increment(1);
                rx
            }
            None => {
                let (view, rx) = store.subscribe();
                if let Some(view) = view {
                    self.send_snapshot(&view).await?;
                }
                rx
            }
        };
        let shutdown = self.state.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(End::Close(close::GOING_AWAY, "server shutting down; reconnect")),
                event = events.recv() => match event {
                    Ok(event) => self.on_event(event).await?,
                    Err(RecvError::Lagged(missed)) => {
                        debug!(missed, "lagged behind the broadcast; resyncing");
                        self.state.metrics.ws_resyncs.increment(1);
                        self.resync().await?;
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
                message = self.socket.recv() => match message {
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        self.on_message(message).await?;
                    }
                    Some(Err(_)) | None => return Ok(()),
                },
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Result<(), End> {
        match event {
            Event::Delta(delta) => match self.last_seq {
                None => self.resync().await,
                // Already covered by the snapshot or replay this client got.
                Some(last) if delta.seq <= last => Ok(()),
                Some(last) if self.filter.is_none() && delta.seq != last + 1 => self.resync().await,
                Some(_) => self.send_delta(&delta).await,
            },
            Event::Status(frame) => self.send(frame).await,
            Event::Heartbeat(frame) => {
                if self.last_heard.elapsed() > self.state.config.ws.idle_timeout {
                    return Err(End::Unresponsive);
                }
                self.send(frame).await?;
                self.write(Message::Ping(Bytes::new())).await
            }
        }
    }

    async fn on_message(&mut self, message: Message) -> Result<(), End> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return Err(End::Close(
                    close::UNSUPPORTED,
                    "binary frames are not supported",
                ));
            }
            Message::Close(_) => return Err(End::Gone),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
        };
        if text.len() > MAX_CLIENT_MESSAGE {
            return Err(End::Close(close::TOO_BIG, "message over 4 KiB"));
        }
        match serde_json::from_str::<ClientCommand>(text.as_str()) {
            Ok(ClientCommand::Ping) => {
                let pong = ServerFrame::Pong(protocol::Pong { ts: now_ms() });
                self.send(pong.encode()).await
            }
            Ok(ClientCommand::Subscribe { symbols }) => {
                match parse_symbols(symbols.iter().flatten().map(String::as_str)) {
                    Ok(filter) => {
                        self.filter = filter;
                        self.resync().await
                    }
                    Err(error) => self.send_error(error).await,
                }
            }
            Err(e) => self.send_error(format!("bad command: {e}")).await,
        }
    }

    async fn send_error(&mut self, error: String) -> Result<(), End> {
        self.send(ServerFrame::Error(protocol::ErrorFrame { error }).encode())
            .await
    }

    /// A fresh snapshot of the current view; later deltas it already covers are skipped.
    async fn resync(&mut self) -> Result<(), End> {
        match self.state.store.view() {
            Some(view) => self.send_snapshot(&view).await,
            None => Ok(()),
        }
    }

    async fn send_snapshot(&mut self, view: &View) -> Result<(), End> {
        self.last_seq = Some(view.seq);
        let frame = match &self.filter {
            None => view.snapshot_frame.clone(),
            Some(filter) => ServerFrame::Snapshot(protocol::Snapshot {
                seq: view.seq,
                ts: view.ts,
                source: view.source,
                stale: view.stale,
                rates: filtered_rates(&view.rates, filter),
            })
            .encode(),
        };
        self.send(frame).await
    }

    async fn send_delta(&mut self, delta: &DeltaEvent) -> Result<(), End> {
        self.last_seq = Some(delta.seq);
        let frame = match &self.filter {
            None => delta.frame.clone(),
            Some(filter) => match filtered_delta(delta, filter) {
                Some(frame) => frame,
                None => return Ok(()),
            },
        };
        self.send(frame).await?;
        if self.sample_delay {
            let delay = now_ms().saturating_sub(delta.ts);
            self.state
                .metrics
                .ws_delivery_delay
                .record(delay as f64 / 1000.0);
        }
        Ok(())
    }

    /// Sends a pre-serialised JSON text frame.
    async fn send(&mut self, frame: Bytes) -> Result<(), End> {
        let len = frame.len() as u64;
        // Every frame comes from `ServerFrame::encode` (serde_json), so it is UTF-8.
        let text = Utf8Bytes::try_from(frame).map_err(|_| End::Close(1011, "internal error"))?;
        self.write(Message::Text(text)).await?;
        self.state.metrics.ws_frames_sent.increment(1);
        self.state.metrics.ws_bytes_sent.increment(len);
        Ok(())
    }

    async fn write(&mut self, message: Message) -> Result<(), End> {
        match timeout(
            self.state.config.ws.write_timeout,
            self.socket.send(message),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::SlowConsumer),
        }
    }
}

fn filtered_rates(rates: &Rates, filter: &BTreeSet<String>) -> Rates {
    filter
        .iter()
        .filter_map(|code| rates.get(code).map(|rate| (code.clone(), rate.clone())))
        .collect()
}

/// The delta restricted to `filter`, or `None` when it touches none of those codes.
fn filtered_delta(delta: &DeltaEvent, filter: &BTreeSet<String>) -> Option<Bytes> {
    let changed: std::collections::BTreeMap<_, _> = delta
        .changes
        .changed
        .iter()
        .filter(|(code, _)| filter.contains(*code))
        .map(|(code, change)| (code.clone(), change.into()))
        .collect();
    let removed: Vec<String> = delta
        .changes
        .removed
        .iter()
        .filter(|c| filter.contains(*c))
        .cloned()
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return None;
    }
    Some(
        ServerFrame::Delta(protocol::Delta {
            seq: delta.seq,
            ts: delta.ts,
            changed,
            removed,
        })
        .encode(),
    )
}

fn now_ms() -> u64 {
    model::unix_ms(SystemTime::now())
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
