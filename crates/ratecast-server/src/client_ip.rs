//! The client IP, the same everywhere (rate limits, connection caps, logs): the TCP peer,
//! unless the peer is a trusted proxy, in which case X-Forwarded-For is read right to left
//! and the first address that is not a trusted proxy is the client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use ipnet::IpNet;
use tower_governor::GovernorError;
use tower_governor::key_extractor::KeyExtractor;

#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Arc<[IpNet]>,
}

impl ClientIpResolver {
    pub fn new(trusted: &[IpNet]) -> Self {
        Self {
            trusted: trusted.into(),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|ip| !self.is_trusted(**ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
    }

    /// The client IP of a request served with `into_make_service_with_connect_info`.
    pub fn of<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
        Some(self.resolve(peer, req.headers()))
    }
}

impl KeyExtractor for ClientIpResolver {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        self.of(req).ok_or(GovernorError::UnableToExtractKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let r = ClientIpResolver::default();
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(r.resolve(peer, &headers("1.2.3.4")), peer);
    }

    #[test]
    fn trusted_proxy_chain_is_walked_from_the_right() {
        let r = ClientIpResolver::new(&["10.0.0.0/8".parse().unwrap()]);
        let peer: IpAddr = "10.0.1.5".parse().unwrap();
        // A client-supplied spoof on the left is ignored; the last untrusted hop wins.
        assert_eq!(
            r.resolve(peer, &headers("6.6.6.6, 198.51.100.7, 10.0.2.2")),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(r.resolve(peer, &headers("garbage")), peer);
        assert_eq!(r.resolve(peer, &HeaderMap::new()), peer);
    }
}
