//! REST routes, health, metrics, and the middleware every HTTP response goes through.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::codes::parse_codes;
use crate::error::ApiError;
use crate::etag;
use crate::rate_limit;
use crate::state::AppState;
use crate::store::View;
use ratecast_protocol::rates::{Rates, is_valid_code};
use ratecast_protocol::time::rfc3339_opt;
use ratecast_protocol::{Source, UpstreamState};

/// REST handlers answer from memory; anything slower than this is stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The REST API, health and (unless served separately) metrics, with their middleware.
pub fn routes(state: &AppState) -> Router<AppState> {
    let rest = Arc::new(RestCache::default());
    let api = Router::new()
        .route(
            "/api/v1/rates",
            get(move |state: State<AppState>, headers: HeaderMap| {
                let rest = rest.clone();
                async move { rates(state, headers, &rest) }
            }),
        )
        .route("/api/v1/rates/{code}", get(rate))
        .route("/api/v1/history", get(histories))
        .route("/api/v1/history/{code}", get(history));
    let api = match rate_limit::layer(
        state.config.rate_limit_per_second,
        state.config.rate_limit_burst,
        &state.client_ip,
        None,
    ) {
        Some(layer) => api.layer(layer),
        None => api,
    };
    let router = Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.config.metrics_listen.is_none() {
        router.route("/metrics", get(metrics))
    } else {
        router
    }
}

/// Middleware shared by every router: request metrics, tracing, panics → JSON 500, and the
/// security headers (set here only, for every response, the page's included; the page adds its
/// Content-Security-Policy). Timeouts are layered on the REST routes alone, so `/ws` is exempt.
pub fn with_middleware(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), track_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetResponseHeaderLayer::overriding(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_FRAME_OPTIONS,
                    HeaderValue::from_static("DENY"),
                ))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal.into_response()
                }))
                .layer(TraceLayer::new_for_http().on_failure(log_failure)),
        )
}

/// 503s are expected and counted in metrics (readiness before the first data and while
/// draining, refusals at the connection cap): logged at debug so they do not flood a cluster's
/// error logs. Any other server error is an error.
fn log_failure(failure: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    let latency_ms = latency.as_millis() as u64;
    match failure {
        ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
            tracing::debug!(latency_ms, "503: not ready, draining or at capacity");
        }
        failure => tracing::error!(%failure, latency_ms, "response failed"),
    }
}

/// A timeout for plain request/response routes (never for the WebSocket upgrade).
pub fn timeout_layer() -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT)
}

async fn track_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    state.metrics.http_request(
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn not_found(State(state): State<AppState>) -> ApiError {
    state.metrics.http_request("unmatched".into(), 404, 0.0);
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"error": "method not allowed", "code": "method_not_allowed"})),
    )
        .into_response()
}

fn no_data() -> ApiError {
    ApiError::Unavailable("no rates yet: the first poll has not succeeded".into())
}

fn json_response(body: impl Into<Body>, cache: &'static str) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, cache)
        .body(body.into())
        .unwrap_or_else(|_| ApiError::Internal.into_response())
}

/// `/api/v1/rates` as served: the body and its ETag, built once per view (a view is rebuilt
/// only when something a client sees changes: a new `seq`, the stale flag, the upstream state).
struct RestBody {
    view: Arc<View>,
    body: Bytes,
    etag: HeaderValue,
}

#[derive(Default)]
struct RestCache(Mutex<Option<Arc<RestBody>>>);

#[derive(Serialize)]
struct RestRates<'a> {
    /// `seq` compares only within one epoch (docs/protocol.md).
    epoch: &'a str,
    seq: u64,
    /// When the rates last changed.
    #[serde(with = "rfc3339_opt")]
    updated_at: Option<SystemTime>,
    /// When the upstream last confirmed them: the data's age, and the stale flag, count from here.
    #[serde(with = "rfc3339_opt")]
    checked_at: Option<SystemTime>,
    source: Source,
    stale: bool,
    upstream: &'a UpstreamState,
    /// Why the data is stale, for people (as in the stream's status frames); absent when fresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    rates: &'a Rates,
    /// The table's checksum, as the stream's frames carry it.
    checksum: u32,
}

impl RestCache {
    fn get(&self, view: Arc<View>) -> Result<Arc<RestBody>, ApiError> {
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rest) = cached.as_ref().filter(|r| Arc::ptr_eq(&r.view, &view)) {
            return Ok(rest.clone());
        }
        let body = serde_json::to_vec(&RestRates {
            epoch: &view.epoch,
            seq: view.seq,
            updated_at: Some(view.updated_at),
            checked_at: view.upstream.last_success,
            source: view.source,
            stale: view.stale,
            upstream: &view.upstream,
            reason: view.reason.as_deref(),
            rates: &view.rates,
            checksum: view.checksum,
        })
        .map_err(|_| ApiError::Internal)?;
        let etag = etag::strong(etag::fnv1a(&body));
        let rest = Arc::new(RestBody {
            view,
            body: body.into(),
            etag,
        });
        *cached = Some(rest.clone());
        Ok(rest)
    }
}

fn rates(
    State(state): State<AppState>,
    headers: HeaderMap,
    cache: &RestCache,
) -> Result<Response, ApiError> {
    let rest = cache.get(state.store.view().ok_or_else(no_data)?)?;
    let cache_control = HeaderValue::from_static("no-cache");
    if etag::none_match(&headers, &rest.etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, rest.etag.clone()),
                (header::CACHE_CONTROL, cache_control),
            ],
        )
            .into_response());
    }
    let mut response = json_response(rest.body.clone(), "no-cache");
    response
        .headers_mut()
        .insert(header::ETAG, rest.etag.clone());
    Ok(response)
}

type CodePath = Result<Path<String>, PathRejection>;

/// The `{code}` of a path: malformed encodings are a 400, codes outside the alphabet a 404.
fn known_code(path: CodePath) -> Result<String, ApiError> {
    let Path(code) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if is_valid_code(&code) {
        Ok(code)
    } else {
        Err(ApiError::NotFound(format!("unknown currency {code:?}")))
    }
}

async fn rate(State(state): State<AppState>, path: CodePath) -> Result<Response, ApiError> {
    let code = known_code(path)?;
    let view = state.store.view().ok_or_else(no_data)?;
    let rate = view
        .rates
        .get(&code)
        .ok_or_else(|| ApiError::NotFound(format!("unknown currency {code:?}")))?;
    let body = json!({
        "epoch": &*view.epoch,
        "seq": view.seq,
        "updated_at": humantime::format_rfc3339_millis(view.updated_at).to_string(),
        "checked_at": view.upstream.last_success.map(|t| humantime::format_rfc3339_millis(t).to_string()),
        "source": view.source,
        "stale": view.stale,
        "code": code,
        "rate": rate,
    });
    Ok(json_response(body.to_string(), "no-cache"))
}

async fn history(State(state): State<AppState>, path: CodePath) -> Result<Response, ApiError> {
    let code = known_code(path)?;
    let points = state
        .store
        .history(&code)
        .ok_or_else(|| ApiError::NotFound(format!("unknown currency {code:?}")))?;
    Ok(json_response(
        json!({ "code": code, "points": points }).to_string(),
        "no-cache",
    ))
}

#[derive(serde::Deserialize)]
struct HistoriesQuery {
    codes: Option<String>,
}

/// Several histories in one request (`?codes=usd,eur`; all units without it): a page loads
/// every sparkline at once instead of one request per unit against the rate limit.
async fn histories(
    State(state): State<AppState>,
    query: Result<Query<HistoriesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let codes = parse_codes(query.codes.as_deref().unwrap_or("").split(','))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let points = state.store.histories(&codes);
    Ok(json_response(
        json!({ "points": points }).to_string(),
        "no-cache",
    ))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let reason = if state.shutdown.is_cancelled() {
        Some("shutting down")
    } else if state.store.view().is_none() {
        Some("no data yet")
    } else {
        None
    };
    // Cluster mode: ready = has the shared state (loaded from Redis at least once). A Redis
    // outage later does not unready anyone: every replica keeps serving the last state, stale.
    let cluster = state.cluster.as_ref().map(|c| {
        json!({
            "role": if c.is_leader() { "leader" } else { "follower" },
            "redis": if c.is_connected() { "connected" } else { "unreachable" },
        })
    });
    let mut body = match reason {
        None => json!({"status": "ready"}),
        Some(reason) => json!({"status": "not_ready", "reason": reason}),
    };
    if let Some(cluster) = cluster {
        body["cluster"] = cluster;
    }
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text; the data age (since the upstream last confirmed the rates, as the stale
/// flag counts it) is computed at scrape time so it is never itself stale.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(checked) = state.store.view().and_then(|v| v.upstream.last_success) {
        let age = SystemTime::now()
            .duration_since(checked)
            .unwrap_or_default();
        state.metrics.data_age.set(age.as_secs_f64());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
