//! The RFC 6455 opening handshake, checked before a connection takes a slot.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use tungstenite::handshake::derive_accept_key;

use crate::error::ApiError;

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `Sec-WebSocket-Accept` value for a valid RFC 6455 upgrade request.
pub fn accept(request: &Request) -> Result<HeaderValue, ApiError> {
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
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| ApiError::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn rfc_accept_key() {
        let request = Request::get("/ws")
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Body::empty())
            .unwrap();
        assert_eq!(accept(&request).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
