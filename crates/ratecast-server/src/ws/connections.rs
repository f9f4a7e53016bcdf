//! Connection slots: the global and per-client-IP caps on open WebSocket connections.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use metrics::Gauge;

/// Why a connection gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("server is at its connection limit")]
    ServerFull,
    #[error("too many connections from one client address")]
    PerIpLimit,
}

impl SlotError {
    /// The `reason` label of `ratecast_ws_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::ServerFull => "server_full",
            Self::PerIpLimit => "per_ip_limit",
        }
    }
}

/// Open connections, globally and per client IP.
#[derive(Default)]
pub struct Connections {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    next_id: AtomicU64,
}

/// Holds one connection slot; dropping it (on any path, panics included) frees the slot.
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    ip: IpAddr,
    pub id: u64,
    /// The open-connections gauge, kept in step with the slot.
    gauge: Option<Gauge>,
}

impl ConnectionSlot {
    /// Counts this slot in `gauge` for as long as it lives.
    pub fn counted_in(mut self, gauge: Gauge) -> Self {
        gauge.increment(1.0);
        self.gauge = Some(gauge);
        self
    }
}

impl Connections {
    /// Takes a slot for `ip`, or says why not.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<ConnectionSlot, SlotError> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(SlotError::ServerFull);
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= max_per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(SlotError::PerIpLimit);
        }
        *count += 1;
        Ok(ConnectionSlot {
            connections: self.clone(),
            ip,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            gauge: None,
        })
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.connections.per_ip.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
        });
        self.connections.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(gauge) = &self.gauge {
            gauge.decrement(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_capped_and_released_on_every_path_panics_included() {
        let connections = Arc::new(Connections::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = connections.try_acquire(ip, 3, 2).unwrap();
        let _b = connections.try_acquire(ip, 3, 2).unwrap();
        assert_eq!(
            connections.try_acquire(ip, 3, 2).err(),
            Some(SlotError::PerIpLimit)
        );
        let c = connections.try_acquire(other, 3, 2).unwrap();
        assert_eq!(
            connections.try_acquire(other, 3, 2).err(),
            Some(SlotError::ServerFull)
        );
        drop(a);
        assert_eq!(connections.open(), 2);
        let panicking = tokio::spawn(async move {
            let _slot = c;
            panic!("connection task panics");
        });
        assert!(panicking.await.is_err());
        assert_eq!(connections.open(), 1);
        assert!(
            !connections.per_ip.contains_key(&other),
            "empty per-IP entries are removed"
        );
    }
}
