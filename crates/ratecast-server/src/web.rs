//! The wall display: the page under `web/`, embedded in the binary at compile time.
//!
//! One static table maps each URL to its bytes, so one binary serves everything and nothing is
//! looked up on disk at run time. Every answer carries a strong `ETag` (a hash of the bytes) and
//! `Cache-Control: no-cache`: browsers keep their copy but revalidate it, so a redeploy is picked up
//! on the next load and an unchanged file costs a 304. The HTML carries a strict
//! Content-Security-Policy; the page has no inline script or style, so nothing needs relaxing.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::etag::{self, fnv1a};

/// Policy for the HTML page. `connect-src 'self'` also admits the same-origin `ws:`/`wss:` URL of
/// `/ws` (CSP Level 3, as Chromium implements it; the browser test checks that the stream flows).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Revalidate on every use: the URLs are not content-addressed, so a long max-age would keep an old
/// page on the wall after a deploy.
const CACHE_CONTROL: &str = "no-cache";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Computed by the compiler from `body`, so it is the same on every replica of one build.
    etag_hash: u64,
}

/// `asset!(file under web/, content type)`, served at `/file`.
macro_rules! asset {
    ($file:literal, $content_type:expr) => {
        asset!(concat!("/", $file), $file, $content_type)
    };
    ($path:expr, $file:literal, $content_type:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("../../../web/", $file));
        Asset {
            path: $path,
            content_type: $content_type,
            body: BODY,
            etag_hash: fnv1a(BODY),
        }
    }};
}

const JS: &str = "text/javascript; charset=utf-8";

/// Everything the page needs. A unit test checks that every file under `web/` is listed here.
static ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("assets/style.css", "text/css; charset=utf-8"),
    asset!("assets/favicon.svg", "image/svg+xml"),
    asset!("assets/app.js", JS),
    asset!("assets/connection.js", JS),
    asset!("assets/state.js", JS),
    asset!("assets/render.js", JS),
    asset!("assets/format.js", JS),
    asset!("assets/sparkline.js", JS),
];

/// The page and its assets; the caller merges this into the application router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &headers) }),
        )
    })
}

/// The file, or a 304 when the browser's copy is current. The security headers every response
/// gets are set by the shared middleware (`http::with_middleware`); only the page's own
/// Content-Security-Policy is set here.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = etag::strong(asset.etag_hash);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    if etag::none_match(request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if asset.content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn text(response: &Response, name: header::HeaderName) -> &str {
        response.headers()[name].to_str().unwrap()
    }

    fn page() -> &'static str {
        std::str::from_utf8(ASSETS[0].body).unwrap()
    }

    #[tokio::test]
    async fn page_has_strict_csp_and_validators() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            text(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        let csp = text(&response, header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(text(&response, header::CACHE_CONTROL), "no-cache");
        let etag = text(&response, header::ETAG);
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 18);
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert_eq!(body, ASSETS[0].body);
    }

    #[tokio::test]
    async fn matching_if_none_match_gets_304_without_body() {
        let etag = text(&get("/assets/app.js", None).await, header::ETAG).to_owned();
        for tag in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".into(),
        ] {
            let response = get("/assets/app.js", Some(&tag)).await;
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{tag}");
            assert_eq!(text(&response, header::ETAG), etag);
            assert_eq!(text(&response, header::CACHE_CONTROL), "no-cache");
            let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
            assert!(body.is_empty());
        }
    }

    #[tokio::test]
    async fn stale_if_none_match_gets_the_file() {
        let response = get("/assets/style.css", Some("\"0000000000000000\"")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            text(&response, header::CONTENT_TYPE),
            "text/css; charset=utf-8"
        );
        assert!(
            response
                .headers()
                .get(header::CONTENT_SECURITY_POLICY)
                .is_none()
        );
    }

    #[tokio::test]
    async fn unknown_asset_is_not_served() {
        let response = get("/assets/nope.js", None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn etags_differ_between_files() {
        let mut hashes: Vec<u64> = ASSETS.iter().map(|a| a.etag_hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), ASSETS.len());
    }

    /// A file added under `web/` but not to the table would 404 only in a browser.
    #[test]
    fn every_file_under_web_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(&root).unwrap().to_str().unwrap();
                let url = match relative {
                    "index.html" => "/".to_owned(),
                    other => format!("/{other}"),
                };
                assert!(
                    ASSETS.iter().any(|a| a.path == url),
                    "{relative} is not in ASSETS"
                );
            }
        }
    }

    /// CSP would block these, so the page must not rely on them.
    #[test]
    fn page_has_no_inline_script_or_style() {
        let html = page();
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "inline style attribute");
        let handler = html.split(" on").skip(1).find(|rest| {
            let name_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(0);
            name_end > 0 && rest[name_end..].starts_with('=')
        });
        assert!(handler.is_none(), "inline event handler: on{handler:?}");
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline <script>");
        }
    }

    /// Every `src`/`href` the page names is in the table.
    #[test]
    fn page_references_resolve() {
        for attribute in ["src=\"", "href=\""] {
            for rest in page().split(attribute).skip(1) {
                let url = &rest[..rest.find('"').unwrap()];
                assert!(ASSETS.iter().any(|a| a.path == url), "{url} not embedded");
            }
        }
    }
}
