//! Shared test fixtures: a fake CoinGecko on 127.0.0.1:0 and a real ratecast server on port 0.
#![allow(dead_code)] // each test binary uses its own subset

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

    pub async fn seq(&self) -> u64 {
        self.get_json("/api/v1/rates").await.1["seq"]
            .as_u64()
            .unwrap()
    }

    /// The value of one metric sample (`name{labels}` exactly as rendered), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0.0, |v| v.trim().parse().unwrap())
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
