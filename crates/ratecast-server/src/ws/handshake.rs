//! The RFC 6455 opening handshake, checked before a connection takes a slot.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tungstenite::handshake::derive_accept_key;

/// Why an upgrade request is refused (RFC 6455 §4.2.1–4.2.2). Leaves as the API's JSON error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    /// Answered 426 with `Sec-WebSocket-Version: 13`, so the client can retry with it.
    #[error("unsupported WebSocket version (13 expected)")]
    Version,
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    BadKey,
}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            Self::Version => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
            _ => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        let body = Json(json!({ "error": self.to_string(), "code": code }));
        let mut response = (status, body).into_response();
        if self == Self::Version {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// True when `key` is the base64 of exactly 16 bytes: 22 alphabet characters and `==`.
pub fn is_valid_key(key: &[u8]) -> bool {
    let is_b64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    key.len() == 24 && key[..22].iter().all(is_b64) && &key[22..] == b"=="
}

/// The `Sec-WebSocket-Accept` value for a valid RFC 6455 upgrade request.
pub fn accept(request: &Request) -> Result<HeaderValue, HandshakeError> {
    let headers = request.headers();
    let is_upgrade = request.method() == Method::GET
        && header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket");
    if !is_upgrade {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(HandshakeError::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::MissingKey)?;
    if !is_valid_key(key.as_bytes()) {
        return Err(HandshakeError::BadKey);
    }
    // The accept value is base64: always a valid header value.
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| HandshakeError::BadKey)
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

    #[test]
    fn keys_must_be_16_bytes_of_base64() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b""[..],
            b"x",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25j",
            b"dGhlIHNhbXBsZSBub25jZQ==dGhl",
            b"dGhlIHNhbXBsZSBub25j*Q==",
            b"dGhlIHNhbXBsZSBub25jZQ=A",
        ] {
            assert!(!is_valid_key(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
