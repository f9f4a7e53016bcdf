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

/// What a connection negotiated for permessage-deflate (RFC 7692), and the response header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateAgreed {
    /// The server's LZ77 window in bits (9–15): the variant of each feed frame it receives.
    pub window_bits: u8,
    /// The server keeps its compression context between messages (the client did not ask
    /// `server_no_context_takeover`, and the server allows it): deltas may come in the shared
    /// context (see [`super::deflate`]).
    pub takeover: bool,
    /// The `Sec-WebSocket-Extensions` value of the 101.
    pub response: HeaderValue,
}

/// Picks the first permessage-deflate offer in the request's `Sec-WebSocket-Extensions` that
/// can be honoured (RFC 7692 §5–7), or `None` (the connection then runs uncompressed).
///
/// The response carries `server_no_context_takeover` when the client asked it or `takeover` is
/// off (every frame is then self-contained); otherwise the server keeps its context and deltas
/// may back-reference earlier ones, in a context shared by every such subscriber. It always
/// carries `client_no_context_takeover` (§7.1.1.2: a server may always ask it; then no
/// inflater is kept between client messages). `server_max_window_bits=N` is honoured for N in
/// 9–15 and echoed; an offer asking 8 is declined (zlib cannot produce a 256-byte raw-deflate
/// window). `client_max_window_bits` (with or without a value) only limits the client, whose
/// messages we inflate with a 15-bit window, so it is accepted and not answered. An offer with
/// an unknown or repeated parameter, or an invalid value, is declined (§7).
pub fn negotiate_deflate(headers: &HeaderMap, takeover: bool) -> Option<DeflateAgreed> {
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    offers.filter_map(deflate_offer).next().map(|offer| {
        let takeover = takeover && !offer.no_takeover;
        let mut response = if takeover {
            "permessage-deflate; client_no_context_takeover"
        } else {
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        }
        .to_owned();
        let window_bits = offer.window_bits;
        if window_bits < super::deflate::MAX_WINDOW_BITS {
            response.push_str(&format!("; server_max_window_bits={window_bits}"));
        }
        DeflateAgreed {
            window_bits,
            takeover,
            // Built from ASCII literals and digits: always a valid header value.
            response: HeaderValue::from_str(&response)
                .unwrap_or(HeaderValue::from_static("permessage-deflate")),
        }
    })
}

/// What one acceptable offer asks of the server.
struct Offer {
    window_bits: u8,
    /// `server_no_context_takeover`: every message must be self-contained.
    no_takeover: bool,
}

/// The server's side of one offer (`name; param[=value]; ...`), or `None` to decline it.
fn deflate_offer(offer: &str) -> Option<Offer> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut window_bits = super::deflate::MAX_WINDOW_BITS;
    let mut no_takeover = false;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        let bits = |value: Option<&str>| -> Option<u8> {
            let value = value?;
            // RFC 7692 §7.1.2: a decimal integer, no leading zero.
            let ok = !value.is_empty()
                && value.len() <= 2
                && !value.starts_with('0')
                && value.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| value.parse().ok())
                .flatten()
                .filter(|b| (8..=15).contains(b))
        };
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => no_takeover = true,
            ("client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", value) => {
                bits(value)?;
            }
            ("server_max_window_bits", value) => {
                window_bits = bits(value)?;
                if window_bits < super::deflate::MIN_WINDOW_BITS {
                    return None;
                }
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(Offer {
        window_bits,
        no_takeover,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn offer_with(values: &[&str], takeover: bool) -> Option<(u8, String)> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        negotiate_deflate(&headers, takeover).map(|a| {
            let response = a.response.to_str().unwrap().to_owned();
            assert_eq!(a.takeover, !response.contains("server_no_context_takeover"));
            (a.window_bits, response)
        })
    }

    fn offer(values: &[&str]) -> Option<(u8, String)> {
        offer_with(values, true)
    }

    #[test]
    fn permessage_deflate_offers() {
        const BOTH: &str =
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        const TAKEOVER: &str = "permessage-deflate; client_no_context_takeover";
        // Chromium's and Firefox's offer: the server keeps its context (shared stream).
        assert_eq!(
            offer(&["permessage-deflate; client_max_window_bits"]),
            Some((15, TAKEOVER.into()))
        );
        assert_eq!(offer(&["permessage-deflate"]), Some((15, TAKEOVER.into())));
        // Unless the server's flag turns takeover off, or the client asks for none.
        assert_eq!(
            offer_with(&["permessage-deflate"], false),
            Some((15, BOTH.into()))
        );
        assert_eq!(
            offer(&["permessage-deflate; server_no_context_takeover"]),
            Some((15, BOTH.into()))
        );
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=10; client_no_context_takeover"]),
            Some((10, format!("{TAKEOVER}; server_max_window_bits=10")))
        );
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=\"12\""]).map(|o| o.0),
            Some(12)
        );
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=15; server_no_context_takeover"]),
            Some((15, BOTH.into()))
        );
        // 8 cannot be honoured: that offer is declined, the next one taken.
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=8"]),
            None
        );
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9"]).map(|o| o.0),
            Some(9)
        );
        assert_eq!(
            offer(&["x-webkit-deflate-frame", "permessage-deflate"]).map(|o| o.0),
            Some(15)
        );
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(offer(&[bad]), None, "{bad}");
        }
    }

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
