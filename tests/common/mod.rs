//! Shared test fixtures: a fake CoinGecko on 127.0.0.1:0 and a real ratecast server on port 0.
#![allow(dead_code)] // each test binary uses its own subset

pub mod haproxy;
pub mod observe;
pub mod proxy;
pub mod redis;
pub mod replica;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode};
use axum::routing::get;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use ratecast_server::Config;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const FIXTURE: &str = include_str!("../fixtures/coingecko-exchange-rates-2022.json");

/// The recorded CoinGecko payload as JSON, to modify per test.
pub fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture parses")
}

/// A valid payload with `units` made-up units (bigger frames than the real ~60).
pub fn payload_with_units(units: usize) -> Value {
    let rates: serde_json::Map<String, Value> = (0..units)
        .map(|i| {
            let rate = serde_json::json!({"name": format!("Unit number {i}"), "unit": "U", "value": 1.0 + i as f64, "type": "fiat"});
            (format!("u{i}"), rate)
        })
        .collect();
    serde_json::json!({ "rates": rates })
}

/// What the fake answers next.
#[derive(Clone)]
pub enum Reply {
    Json(Value),
    /// This payload with every value moved a little on each request: a delta per poll.
    Changing(Value),
    Raw {
        status: u16,
        body: Vec<u8>,
        headers: Vec<(&'static str, String)>,
    },
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self::Raw {
            status,
            body: br#"{"error":"nope"}"#.to_vec(),
            headers: vec![],
        }
    }
    pub fn body(body: impl Into<Vec<u8>>) -> Self {
        Self::Raw {
            status: 200,
            body: body.into(),
            headers: vec![],
        }
    }
}

#[derive(Default)]
struct FakeState {
    reply: Option<Reply>,
    requests: usize,
    last_headers: HeaderMap,
}

/// A fake CoinGecko serving `GET /api/v3/exchange_rates`.
#[derive(Clone)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakeUpstream {
    pub async fn start(reply: Reply) -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            reply: Some(reply),
            ..Default::default()
        }));
        let handler_state = state.clone();
        let app = axum::Router::new().route(
            "/api/v3/exchange_rates",
            get(move |headers: HeaderMap| {
                let state = handler_state.clone();
                async move {
                    let reply = {
                        let mut s = state.lock().unwrap();
                        s.requests += 1;
                        s.last_headers = headers;
                        s.reply.clone().expect("reply set")
                    };
                    let requests = state.lock().unwrap().requests;
                    match reply {
                        Reply::Changing(mut v) => {
                            for rate in v["rates"].as_object_mut().unwrap().values_mut() {
                                let value = rate["value"].as_f64().unwrap();
                                rate["value"] = (value * (1.0 + requests as f64 * 1e-6)).into();
                            }
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Body::from(v.to_string()))
                                .unwrap()
                        }
                        Reply::Json(v) => Response::builder()
                            .header("content-type", "application/json")
                            .body(Body::from(v.to_string()))
                            .unwrap(),
                        Reply::Raw {
                            status,
                            body,
                            headers,
                        } => {
                            let mut r =
                                Response::builder().status(StatusCode::from_u16(status).unwrap());
                            for (k, v) in headers {
                                r = r.header(k, v);
                            }
                            r.body(Body::from(body)).unwrap()
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, reply: Reply) {
        self.state.lock().unwrap().reply = Some(reply);
    }

    /// Sets one unit's value in the current JSON reply.
    pub fn set_value(&self, code: &str, value: f64) {
        let mut s = self.state.lock().unwrap();
        if let Some(Reply::Json(v)) = &mut s.reply {
            v["rates"][code]["value"] = value.into();
        } else {
            panic!("set_value needs a JSON reply");
        }
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.last_headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// Waits until the fake has answered `n` more requests.
    pub async fn wait_requests(&self, n: usize) {
        let target = self.requests() + n;
        wait_until(|| async { self.requests() >= target }).await;
    }
}

#[derive(Parser)]
#[command(args_override_self = true)]
struct Args {
    #[command(flatten)]
    config: Config,
}

/// A real ratecast server on 127.0.0.1:0; shut down (and awaited) on `stop`, aborted on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    http: reqwest::Client,
}

/// Fast timings for tests; `extra` overrides or adds flags.
pub fn config(upstream: &str, extra: &[&str]) -> Config {
    let mut argv = vec![
        "ratecast",
        "--listen",
        "127.0.0.1:0",
        "--upstream-url",
        upstream,
        // CoinGecko alone, today's behaviour; the tests of failover name their sources.
        "--upstream",
        "coingecko",
        "--poll-interval",
        "50ms",
        "--max-backoff",
        "100ms",
        "--request-timeout",
        "2s",
        "--rate-limit-per-second",
        "0",
        "--connection-rate-per-second",
        "0",
    ];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv)
        .expect("test config parses")
        .config
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            ratecast_server::run(listener, config, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    /// Starts against `upstream` and waits for the first data.
    pub async fn start_ready(upstream: &FakeUpstream, extra: &[&str]) -> Self {
        let server = Self::start(config(&upstream.url(), extra)).await;
        server.wait_ready().await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.addr, query)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.get(path).await;
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        (status, r.json().await.expect("JSON body"))
    }

    pub async fn wait_ready(&self) {
        wait_until(|| async { self.get("/readyz").await.status() == 200 }).await;
    }

    /// The stream's epoch (REST): what a resuming client sends with `since`.
    pub async fn epoch(&self) -> String {
        self.get_json("/api/v1/rates").await.1["epoch"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn seq(&self) -> u64 {
        self.get_json("/api/v1/rates").await.1["seq"]
            .as_u64()
            .unwrap()
    }

    /// The value of one metric sample (`name{labels}` exactly as rendered). Panics when the
    /// series is absent: a renamed metric must fail its test, not read as 0.
    pub async fn metric(&self, sample: &str) -> f64 {
        self.metric_if_any(sample)
            .await
            .unwrap_or_else(|| panic!("no series {sample} in /metrics"))
    }

    /// The value of one metric sample, `None` while the series has not been created.
    pub async fn metric_if_any(&self, sample: &str) -> Option<f64> {
        let text = self.get("/metrics").await.text().await.unwrap();
        find_metric(&text, sample)
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }

    /// Triggers shutdown without waiting.
    pub fn begin_stop(&mut self) -> JoinHandle<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Polls `cond` every 10 ms for up to 10 s.
pub async fn wait_until<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn ws_connect(url: &str) -> Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("ws connect")?;
    Ok(ws)
}

/// Next text frame as JSON (skipping pings), within 5 s.
pub async fn next_json(ws: &mut Ws) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .context("no frame within 5 s")?
            .context("stream ended")??;
        match msg {
            Message::Text(t) => return Ok(serde_json::from_str(t.as_str())?),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => anyhow::bail!("unexpected message {other:?}"),
        }
    }
}

/// Next frame of `kind` (skipping heartbeats and status frames), within 5 s.
pub async fn next_of(ws: &mut Ws, kind: &str) -> Result<Value> {
    loop {
        let v = next_json(ws).await?;
        if v["type"] == kind {
            return Ok(v);
        }
        anyhow::ensure!(
            v["type"] == "heartbeat" || v["type"] == "status",
            "expected {kind}, got {v}"
        );
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) -> Result<()> {
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// Reads until the server closes; returns the close code (None if the TCP stream just ended).
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code.into()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
            Err(_) => panic!("connection not closed within 10 s"),
        }
    }
}

/// A raw WebSocket client socket after a completed upgrade, and the bytes that came with the
/// 101 (for tests that need partial reads, tiny buffers, resets or hand-made frames).
pub async fn raw_ws(
    addr: SocketAddr,
    query: &str,
    recv_buffer: Option<u32>,
) -> Result<(TcpStream, Vec<u8>)> {
    let (tcp, _head, early) = raw_ws_with(addr, query, recv_buffer, "").await?;
    Ok((tcp, early))
}

/// [`raw_ws`] with `headers` (`Name: value\r\n` lines) added to the request; also returns the
/// 101's head.
pub async fn raw_ws_with(
    addr: SocketAddr,
    query: &str,
    recv_buffer: Option<u32>,
    headers: &str,
) -> Result<(TcpStream, String, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let mut tcp = socket.connect(addr).await?;
    let request = format!(
        "GET /ws{query} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
    Ok((tcp, head, buf.split_off(end)))
}

/// A masked client frame (zero key), final, in any length form: the load generator's own.
#[allow(unused_imports)] // each test binary uses its own subset
pub use ratecast_client::loadtest::masked_frame as client_frame;

/// A server frame as received: opcode and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Splits received bytes into server frames, strictly: final frames only, unmasked, no
/// reserved bits, known opcodes, control frames of at most 125 bytes, text that is UTF-8 JSON.
/// Returns the frames and the incomplete rest; an error names the first byte that breaks the
/// framing (a stream with two writers interleaving fails here).
pub fn parse_server_frames(buf: &[u8]) -> Result<(Vec<ServerFrame>, usize)> {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            return Ok((frames, at));
        }
        let (b0, b1) = (rest[0], rest[1]);
        anyhow::ensure!(
            b0 & 0x70 == 0 && b1 & 0x80 == 0 && b0 & 0x80 != 0,
            "bad frame header {b0:#04x} {b1:#04x} at byte {at}"
        );
        let opcode = b0 & 0x0F;
        anyhow::ensure!(
            matches!(opcode, 0x1 | 0x8 | 0x9 | 0xA),
            "unexpected opcode {opcode:#x} at byte {at}"
        );
        let (len, header) = match b1 & 0x7F {
            126 if rest.len() < 4 => return Ok((frames, at)),
            126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 if rest.len() < 10 => return Ok((frames, at)),
            127 => (u64::from_be_bytes(rest[2..10].try_into()?) as usize, 10),
            n => (n as usize, 2),
        };
        anyhow::ensure!(len < 16 << 20, "absurd frame length {len} at byte {at}");
        anyhow::ensure!(
            opcode < 8 || len <= 125,
            "control frame of {len} bytes at byte {at}"
        );
        if rest.len() < header + len {
            return Ok((frames, at));
        }
        let payload = rest[header..header + len].to_vec();
        if opcode == 0x1 {
            serde_json::from_slice::<Value>(&payload).with_context(|| {
                format!(
                    "text frame at byte {at} is not JSON: {:?}",
                    String::from_utf8_lossy(&payload[..payload.len().min(80)])
                )
            })?;
        }
        frames.push(ServerFrame { opcode, payload });
        at += header + len;
    }
}

/// How a raw stream ended.
#[derive(Debug, PartialEq)]
pub enum RawEnd {
    /// A close frame, with its payload.
    Close(Vec<u8>),
    /// The stream ended; `cut` bytes of an unfinished frame came before the end.
    End { cut: usize },
}

/// Reads a raw stream until the server closes or ends it (or `limit` passes), checking every
/// byte parses as frames. Returns the frames, and the close frame's payload (None: the stream
/// just ended).
pub async fn read_raw_until_end(
    tcp: &mut TcpStream,
    buf: Vec<u8>,
    limit: Duration,
) -> Result<(Vec<ServerFrame>, Option<Vec<u8>>)> {
    let (frames, end) = read_raw_to_end(tcp, buf, limit).await?;
    match end {
        RawEnd::Close(payload) => Ok((frames, Some(payload))),
        RawEnd::End { cut: 0 } => Ok((frames, None)),
        RawEnd::End { cut } => anyhow::bail!("stream ended {cut} bytes into a frame"),
    }
}

/// Like [`read_raw_until_end`], but a stream may end inside a frame (a connection dropped
/// mid-write): says how it ended.
pub async fn read_raw_to_end(
    tcp: &mut TcpStream,
    mut buf: Vec<u8>,
    limit: Duration,
) -> Result<(Vec<ServerFrame>, RawEnd)> {
    use tokio::io::AsyncReadExt;
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (mut got, used) = parse_server_frames(&buf)?;
        buf.drain(..used);
        let close = got.iter().position(|f| f.opcode == 0x8);
        if let Some(i) = close {
            let payload = got[i].payload.clone();
            got.truncate(i);
            frames.extend(got);
            return Ok((frames, RawEnd::Close(payload)));
        }
        frames.extend(got);
        let mut chunk = vec![0u8; 16 * 1024];
        let n = match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => anyhow::bail!("stream neither closed nor ended within {limit:?}"),
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0, // reset: the stream ended
        };
        if n == 0 {
            return Ok((frames, RawEnd::End { cut: buf.len() }));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The close code of a close frame's payload (None for an empty one).
pub fn close_payload_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// The number of open file descriptors of process `pid` (Linux /proc).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A `ratecast serve` subprocess on a free port, killed on drop; stderr goes to a file so a
/// test can look for panics.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
}

impl ServerProcess {
    /// Starts `ratecast serve --demo` with `extra` flags and waits until /readyz says 200.
    pub async fn start(bin: &str, extra: &[&str]) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log =
            std::env::temp_dir().join(format!("ratecast-test-{}-{port}.log", std::process::id()));
        let child = std::process::Command::new(bin)
            .args(["serve", "--demo", "--listen", &addr.to_string()])
            .args([
                "--rate-limit-per-second",
                "0",
                "--connection-rate-per-second",
                "0",
            ])
            .args(extra)
            .env_clear()
            .envs(coverage_env())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let server = Self { child, addr, log };
        wait_until(|| async {
            http_get_close(addr, "/readyz")
                .await
                .is_ok_and(|r| r.0 == 200)
        })
        .await;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One metric sample from /metrics; an error when the series is absent.
    pub async fn metric(&self, sample: &str) -> Result<f64> {
        let (_, text) = http_get_close(self.addr, "/metrics").await?;
        find_metric(&text, sample).with_context(|| format!("no series {sample} in /metrics"))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The value of `sample` (`name{labels}` exactly as rendered) in Prometheus text.
pub fn find_metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// `GET path` on a fresh connection with `Connection: close`, read to the end: no pooled
/// connection stays open to count among the server's fds. Returns the status and the body.
pub async fn http_get_close(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).context("no status line")?.parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    Ok((status, body))
}

/// Runs the load test to completion; returns (exit code, stdout, stderr).
pub async fn loadtest(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ratecast"))
            .arg("loadtest")
            .args(args)
            .env_clear()
            .envs(coverage_env())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("loadtest finished within 60 s")
    .expect("loadtest runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// What a subprocess keeps of this process's environment after `env_clear()`: only
/// `LLVM_PROFILE_FILE`, so that a coverage run (`cargo tarpaulin --engine llvm`, README) counts
/// the lines the binary ran in it. Empty in every other run.
pub fn coverage_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars().filter(|(name, _)| name == "LLVM_PROFILE_FILE")
}
