//! Core: poller, store, REST API, health, metrics, config and demo, black-box against a fake CoinGecko.

mod common;

use std::io::Write;

use axum::http::StatusCode;
use common::{FakeUpstream, Reply, TestServer, fixture, wait_until};
use serde_json::Value;

#[tokio::test]
async fn serves_the_real_payload_shape_intact() {
    // Exponent notation straight from the wire, not re-serialised by serde.
    let body = common::FIXTURE.replacen("\"value\": 1,", "\"value\": 1.0E0,", 1);
    let body = body.replace("\"value\": 573445178.483", "\"value\": 5.73445178483E8");
    let upstream = FakeUpstream::start(Reply::body(body)).await;
    let server = TestServer::start_ready(&upstream, &[]).await;

    let (status, rates) = server.get_json("/api/v1/rates").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rates["source"], "coingecko");
    assert_eq!(rates["stale"], false);
    assert_eq!(rates["upstream"]["status"], "ok");
    assert_eq!(rates["rates"].as_object().unwrap().len(), 61);
    assert_eq!(rates["rates"]["bits"]["unit"], "μBTC");
    assert_eq!(rates["rates"]["vnd"]["unit"], "₫");
    assert_eq!(rates["rates"]["bdt"]["unit"], "৳");
    assert_eq!(rates["rates"]["btc"]["value"], 1.0);
    assert!(humantime::parse_rfc3339(rates["updated_at"].as_str().unwrap()).is_ok());

    let (_, one) = server.get_json("/api/v1/rates/eth").await;
    assert_eq!(one["rate"]["name"], "Ether");
    assert_eq!(one["code"], "eth");
}

#[tokio::test]
async fn one_change_makes_exactly_one_new_seq_and_unchanged_polls_none() {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let seq = server.seq().await;
    upstream.wait_requests(3).await;
    assert_eq!(server.seq().await, seq, "unchanged polls publish nothing");

    upstream.set_value("usd", 50_000.5);
    wait_until(|| async { server.seq().await != seq }).await;
    upstream.wait_requests(3).await;
    assert_eq!(server.seq().await, seq + 1);
    let (_, usd) = server.get_json("/api/v1/rates/usd").await;
    assert_eq!(usd["rate"]["value"], 50_000.5);

    let (_, history) = server.get_json("/api/v1/history/usd").await;
    let points = history["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[1][1], 50_000.5);
    assert!(points[0][0].as_u64().unwrap() <= points[1][0].as_u64().unwrap());
    assert_eq!(server.metric("ratecast_deltas_published_total").await, 2.0);
}

#[tokio::test]
async fn currencies_may_appear_and_disappear() {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let mut next = fixture();
    next["rates"].as_object_mut().unwrap().remove("eur");
    next["rates"]["zzz"] =
        serde_json::json!({"name": "Zed", "unit": "Z", "value": 3.5, "type": "stablecoin"});
    upstream.set(Reply::Json(next));
    wait_until(|| async { server.get("/api/v1/rates/zzz").await.status() == 200 }).await;
    let (status, body) = server.get_json("/api/v1/rates/eur").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("eur"));
    assert_eq!(
        server.get_json("/api/v1/history/eur").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get_json("/api/v1/rates/zzz").await.1["rate"]["type"],
        "stablecoin"
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn accepts_gzip_and_sends_the_demo_api_key_header() {
    let upstream = FakeUpstream::start(Reply::Raw {
        status: 200,
        body: gzip(common::FIXTURE.as_bytes()),
        headers: vec![
            ("content-encoding", "gzip".into()),
            ("content-type", "application/json".into()),
        ],
    })
    .await;
    let server = TestServer::start_ready(&upstream, &["--api-key", "CG-secret"]).await;
    assert_eq!(
        server.get_json("/api/v1/rates").await.1["rates"]
            .as_object()
            .unwrap()
            .len(),
        61
    );
    assert_eq!(
        upstream.last_header("x-cg-demo-api-key").as_deref(),
        Some("CG-secret")
    );
    assert!(
        upstream
            .last_header("accept-encoding")
            .unwrap()
            .contains("gzip")
    );
}

/// Every kind of upstream fault keeps the last good data served, is counted, and recovers.
#[tokio::test]
async fn upstream_faults_keep_last_good_data_and_recover() {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let good = server.get_json("/api/v1/rates").await.1;

    let mut negative = fixture();
    negative["rates"]["usd"]["value"] = (-1.0).into();
    let mut nan = fixture();
    nan["rates"]["usd"]["value"] = "NaN".into();
    let oversized = format!("{{\"rates\":{{}},\"pad\":\"{}\"}}", "x".repeat(2 << 20));
    let faults = [
        (
            "malformed",
            Reply::body("<html>gateway</html>"),
            "invalid_payload",
        ),
        (
            "truncated",
            Reply::body(&common::FIXTURE[..500]),
            "invalid_payload",
        ),
        ("oversized", Reply::body(oversized), "too_large"),
        ("negative", Reply::Json(negative), "invalid_payload"),
        ("nan", Reply::Json(nan), "invalid_payload"),
        ("http 500", Reply::status(500), "http_5xx"),
        (
            "http 429",
            Reply::Raw {
                status: 429,
                body: vec![],
                headers: vec![("retry-after", "0".into())],
            },
            "rate_limited",
        ),
    ];
    for (name, reply, kind) in faults {
        let sample = format!("ratecast_upstream_requests_total{{outcome=\"{kind}\"}}");
        let before = server.metric_if_any(&sample).await.unwrap_or(0.0);
        upstream.set(reply);
        wait_until(|| async { server.metric_if_any(&sample).await.unwrap_or(0.0) >= before + 3.0 })
            .await;
        let during = server.get_json("/api/v1/rates").await.1;
        assert_eq!(
            during["rates"], good["rates"],
            "{name}: last good data kept"
        );
        assert_eq!(during["seq"], good["seq"], "{name}");
        assert_eq!(during["upstream"]["status"], "down", "{name}");
        assert_eq!(during["upstream"]["last_error"], kind, "{name}");
        assert_eq!(
            during["stale"], true,
            "{name}: down upstream flags the data stale"
        );
        assert_eq!(
            server.get("/readyz").await.status(),
            200,
            "{name}: stale data beats no data"
        );

        upstream.set(Reply::Json(fixture()));
        wait_until(|| async {
            server.get_json("/api/v1/rates").await.1["upstream"]["status"] == "ok"
        })
        .await;
        assert_eq!(
            server.get_json("/api/v1/rates").await.1["stale"],
            false,
            "{name}: recovered"
        );
    }
    assert_eq!(server.metric("ratecast_upstream_up").await, 1.0);
}

#[tokio::test]
async fn etag_and_if_none_match() {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &["--poll-interval", "1h"]).await;
    let first = server.get("/api/v1/rates").await;
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let again = client
        .get(server.url("/api/v1/rates"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert!(again.bytes().await.unwrap().is_empty());
    let other = client
        .get(server.url("/api/v1/rates"))
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn errors_are_json_and_never_500() {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    for (path, status, code) in [
        ("/nope", 404, "not_found"),
        ("/api/v1/rates/xyz", 404, "not_found"),
        ("/api/v1/rates/..%2F..%2Fetc", 404, "not_found"),
        ("/api/v1/history/nope", 404, "not_found"),
        ("/api/v1/history/a%20b", 404, "not_found"),
        ("/api/v2/rates", 404, "not_found"),
        ("/api/v1/rates/%FF%FE", 400, "bad_request"),
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
        assert_eq!(body["code"], code, "{path}");
    }
    let post = reqwest::Client::new()
        .post(server.url("/api/v1/rates"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert!(post.json::<Value>().await.unwrap()["error"].is_string());
    let headers = server.get("/api/v1/rates").await.headers().clone();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(headers.get("server").is_none(), "no version leak");
}

#[tokio::test]
async fn api_rate_limit_per_client_ip_honours_trusted_proxies_only() {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let extra = [
        "--rate-limit-per-second",
        "1",
        "--rate-limit-burst",
        "3",
        "--trusted-proxy",
        "127.0.0.1/32",
    ];
    let server = TestServer::start_ready(&upstream, &extra).await;
    let client = reqwest::Client::new();
    let get = |xff: &'static str| {
        client
            .get(server.url("/api/v1/rates"))
            .header("x-forwarded-for", xff)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(get("198.51.100.1").await.unwrap().status(), 200);
    }
    let limited = get("198.51.100.1").await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        limited.json::<Value>().await.unwrap()["code"],
        "rate_limited"
    );
    // Another client behind the same (trusted) proxy has its own budget.
    assert_eq!(get("198.51.100.2").await.unwrap().status(), 200);
    // Health and metrics are not rate limited.
    assert_eq!(server.get("/healthz").await.status(), 200);

    // Without a trusted proxy, X-Forwarded-For is ignored: everyone shares the peer's budget.
    let untrusting = TestServer::start_ready(&upstream, &extra[..4]).await;
    let get = |xff: &'static str| {
        client
            .get(untrusting.url("/api/v1/rates"))
            .header("x-forwarded-for", xff)
            .send()
    };
    for i in 0..3 {
        assert_eq!(
            get(["10.0.0.1", "10.0.0.2", "10.0.0.3"][i])
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(get("10.0.0.4").await.unwrap().status(), 429);
}

#[tokio::test]
async fn readiness_before_data_with_data_and_after_shutdown_starts() {
    let upstream = FakeUpstream::start(Reply::status(500)).await;
    let mut server = TestServer::start(common::config(&upstream.url(), &[])).await;
    upstream.wait_requests(2).await;
    let (status, body) = server.get_json("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reason"], "no data yet");
    assert_eq!(server.get("/healthz").await.status(), 200);
    assert_eq!(
        server.get_json("/api/v1/rates").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    upstream.set(Reply::Json(fixture()));
    server.wait_ready().await;
    server.begin_stop().await.unwrap();

    // After shutdown starts, the same router answers 503 (checked in-process: the listener is closed).
    let state = ratecast_server::AppState::new(common::config(&upstream.url(), &[]));
    state.shutdown.cancel();
    let response = tower::ServiceExt::oneshot(
        ratecast_server::app(state),
        axum::http::Request::get("/readyz")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["reason"],
        "shutting down"
    );
}

#[tokio::test]
async fn metrics_use_prometheus_names() {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    server.get("/api/v1/rates/usd").await;
    let text = server.get("/metrics").await.text().await.unwrap();
    for name in [
        "ratecast_upstream_requests_total{outcome=\"ok\"}",
        "ratecast_upstream_request_duration_seconds_bucket",
        "ratecast_upstream_last_success_timestamp_seconds",
        "ratecast_data_age_seconds",
        "ratecast_deltas_published_total",
        "ratecast_seq",
        "ratecast_http_requests_total{route=\"/api/v1/rates/{code}\",status=\"200\"}",
        "ratecast_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert!(server.metric("ratecast_seq").await > 0.0);
}

#[tokio::test]
async fn separate_metrics_listener_takes_metrics_off_the_main_port() {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = probe.local_addr().unwrap().to_string();
    drop(probe);
    let server = TestServer::start_ready(&upstream, &["--metrics-listen", &metrics_addr]).await;
    assert_eq!(server.get("/metrics").await.status(), 404);
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ratecast_seq"));
}

#[tokio::test]
async fn demo_mode_moves_values_and_says_demo() {
    let config = common::config("http://127.0.0.1:9", &["--demo"]);
    let server = TestServer::start(config).await;
    server.wait_ready().await;
    let first = server.get_json("/api/v1/rates").await.1;
    assert_eq!(first["source"], "demo");
    wait_until(|| async { server.seq().await >= first["seq"].as_u64().unwrap() + 3 }).await;
    let later = server.get_json("/api/v1/rates").await.1;
    assert_ne!(later["rates"], first["rates"]);
    assert_eq!(later["rates"].as_object().unwrap().len(), 61);
    assert_eq!(
        server.get_json("/api/v1/rates/usd").await.1["source"],
        "demo"
    );
}

#[tokio::test]
async fn several_histories_in_one_request() {
    let upstream = FakeUpstream::start(Reply::Json(fixture())).await;
    let server = TestServer::start_ready(&upstream, &[]).await;
    let seq = server.seq().await;
    upstream.set_value("usd", 1.0);
    wait_until(|| async { server.seq().await == seq + 1 }).await;

    let (status, body) = server.get_json("/api/v1/history?codes=usd,EUR,nope").await;
    assert_eq!(status, StatusCode::OK);
    let points = body["points"].as_object().unwrap();
    assert_eq!(
        points.keys().collect::<Vec<_>>(),
        ["eur", "usd"],
        "unknown codes are left out"
    );
    assert_eq!(points["usd"].as_array().unwrap().len(), 2);
    assert_eq!(points["usd"][1][1], 1.0);
    assert_eq!(points["eur"].as_array().unwrap().len(), 1);

    let (_, all) = server.get_json("/api/v1/history").await;
    assert_eq!(all["points"].as_object().unwrap().len(), 61);
    let (status, body) = server.get_json("/api/v1/history?codes=%3Cscript%3E").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "bad_request");
}
