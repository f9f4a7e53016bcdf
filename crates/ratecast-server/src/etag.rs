//! Entity tags: one hash for every ETag the server makes (the page's files at compile time, the
//! REST body per view at run time) and one `If-None-Match` reading.

use axum::http::{HeaderMap, HeaderValue, header};

/// 64-bit FNV-1a: tiny, stable across Rust releases and builds (so every replica of one build
/// tags the same bytes alike), and usable in `const` context. Not a defence against
/// collisions crafted on purpose; nothing here needs one.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// A strong entity tag, `"<16 hex digits>"`, as a header value.
pub fn strong(hash: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{hash:016x}\""))
        .expect("a quoted hex string is a valid header value")
}

/// RFC 9110 §13.1.2: true when `If-None-Match` is `*` or lists `etag` under weak comparison
/// (a `W/` prefix on either side is ignored), across repeated headers and comma lists.
pub fn none_match(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || opaque(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn weak_comparison_lists_and_star() {
        let etag = strong(0xabc);
        let tag = etag.to_str().unwrap().to_owned();
        for matching in [
            vec![tag.clone()],
            vec![format!("W/{tag}")],
            vec![format!("\"other\", {tag}")],
            vec!["\"other\"".to_owned(), format!(" W/{tag} ")],
            vec!["*".to_owned()],
        ] {
            let values: Vec<&str> = matching.iter().map(String::as_str).collect();
            assert!(none_match(&request(&values), &etag), "{matching:?}");
        }
        for other in [vec![], vec!["\"0000000000000abd\""], vec!["abc"]] {
            assert!(!none_match(&request(&other), &etag), "{other:?}");
        }
    }

    #[test]
    fn hash_is_stable() {
        // Published FNV-1a test vectors: the tags survive a change of Rust release.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
