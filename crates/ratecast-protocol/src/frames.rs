//! The wire protocol (docs/protocol.md): frames the server sends and commands clients send.
//! Pure data shared by the server, `ratecast watch` and the load generator.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::rates::{Change, Rate, Rates, UnitFlag};
use crate::status::{Failover, Source, UpstreamState};

/// Every server → client text frame, tagged by `type` (the tags are [`FrameKind`]'s names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    Snapshot(Snapshot),
    Delta(Delta),
    Status(Status),
    Heartbeat(Heartbeat),
    Pong(Pong),
    Error(ErrorFrame),
}

/// The whole table at `seq`: the first frame of a connection and every resync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream's epoch: `seq`s compare only within one (see docs/protocol.md).
    #[serde(default)]
    pub epoch: String,
    pub seq: u64,
    /// Publish time of `seq`, ms since the epoch.
    pub ts: u64,
    pub source: Source,
    pub stale: bool,
    /// When the upstream last confirmed these rates (ms since the epoch): the data's age is
    /// counted from here, not from the last change.
    #[serde(default)]
    pub checked_at: Option<u64>,
    pub rates: Rates,
    /// Set while a fallback source serves in place of the failing primary (`source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// [`crate::checksum`] of `rates`; absent only from servers older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u32>,
}

/// What changed from `seq - 1` to `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default)]
    pub epoch: String,
    pub seq: u64,
    pub ts: u64,
    pub changed: BTreeMap<String, ChangedRate>,
    pub removed: Vec<String>,
    /// [`crate::checksum`] of the table once this delta is applied (of the units the
    /// connection receives, on a filtered one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u32>,
}

impl Delta {
    /// Folds this delta into a client's table (what every client does with each delta).
    pub fn apply_to(&self, rates: &mut Rates) {
        for (code, change) in &self.changed {
            rates.insert(
                code.clone(),
                Rate {
                    name: change.name.clone(),
                    unit: change.unit.clone(),
                    value: change.value,
                    kind: change.kind.clone(),
                    source: change.source,
                    flag: change.flag,
                },
            );
        }
        for code in &self.removed {
            rates.remove(code);
        }
    }
}

/// A new or changed unit with its previous value (`null` when just added).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangedRate {
    pub name: String,
    pub unit: String,
    pub value: f64,
    #[serde(rename = "type")]
    pub kind: String,
    pub prev: Option<f64>,
    /// As [`Rate::source`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// As [`Rate::flag`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<UnitFlag>,
}

impl From<&Change> for ChangedRate {
    fn from(change: &Change) -> Self {
        let Rate {
            name,
            unit,
            value,
            kind,
            source,
            flag,
        } = change.rate.clone();
        Self {
            name,
            unit,
            value,
            kind,
            prev: change.prev,
            source,
            flag,
        }
    }
}

/// Sent when the upstream state or the stale flag changes, and to a new connection while the
/// server holds no data (it says why, and when the next attempt is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub epoch: String,
    pub ts: u64,
    pub source: Source,
    /// The data is not confirmed current: the upstream is down, or has not confirmed it for
    /// longer than the stale threshold.
    pub stale: bool,
    pub upstream: UpstreamState,
    /// Why the data is stale or missing, for people; `None` when all is well.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the rates last changed (ms since the epoch); `None` before the first data.
    #[serde(default)]
    pub updated_at: Option<u64>,
    /// When the upstream last confirmed the rates (ms since the epoch).
    #[serde(default)]
    pub checked_at: Option<u64>,
}

/// Sent every heartbeat interval so browsers (which cannot see pings) can tell a quiet feed from a dead one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(default)]
    pub epoch: String,
    pub seq: u64,
    pub ts: u64,
    /// When the upstream last confirmed the rates (ms since the epoch), so that a page can
    /// show the data's age without a status frame.
    #[serde(default)]
    pub checked_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub ts: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub error: String,
}

/// Client → server commands, tagged by `op`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ClientCommand {
    Ping,
    /// Replace the connection's filter; empty or null means the full feed.
    Subscribe {
        symbols: Option<Vec<String>>,
    },
}

impl ServerFrame {
    /// Serialises once; the bytes are shared by every subscriber that gets this frame.
    pub fn encode(&self) -> Bytes {
        // Serialising these plain structs cannot fail: every map key is a string and floats
        // were validated finite on the way in.
        Bytes::from(serde_json::to_vec(self).expect("frame serialises"))
    }
}

/// The `type` tag of a server frame; `Unknown` for types a newer server may add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    Snapshot,
    Delta,
    Status,
    Heartbeat,
    Pong,
    Error,
    #[serde(other)]
    Unknown,
}

/// The fields every consumer that only counts and orders frames needs, parsed without
/// allocating (the load generator reads hundreds of thousands of frames a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct FrameHead {
    #[serde(rename = "type")]
    pub kind: FrameKind,
    pub seq: Option<u64>,
    pub ts: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One list of tags: a frame the server encodes is read back as the kind it is.
    #[test]
    fn every_frame_reads_back_as_its_kind() {
        let frames = [
            (
                ServerFrame::Snapshot(Snapshot {
                    epoch: "e1".into(),
                    seq: 7,
                    ts: 1,
                    source: Source::Demo,
                    stale: false,
                    checked_at: Some(1),
                    rates: Rates::new(),
                    failover: None,
                    checksum: Some(0),
                }),
                FrameKind::Snapshot,
            ),
            (
                ServerFrame::Delta(Delta {
                    epoch: "e1".into(),
                    seq: 8,
                    ts: 2,
                    changed: BTreeMap::new(),
                    removed: vec![],
                    checksum: Some(1),
                }),
                FrameKind::Delta,
            ),
            (
                ServerFrame::Status(Status {
                    epoch: "e1".into(),
                    ts: 3,
                    source: Source::CoinGecko,
                    stale: true,
                    upstream: UpstreamState::default(),
                    reason: Some("why".into()),
                    updated_at: None,
                    checked_at: Some(2),
                }),
                FrameKind::Status,
            ),
            (
                ServerFrame::Heartbeat(Heartbeat {
                    epoch: "e1".into(),
                    seq: 9,
                    ts: 4,
                    checked_at: None,
                }),
                FrameKind::Heartbeat,
            ),
            (ServerFrame::Pong(Pong { ts: 5 }), FrameKind::Pong),
            (
                ServerFrame::Error(ErrorFrame { error: "x".into() }),
                FrameKind::Error,
            ),
        ];
        for (frame, kind) in frames {
            let bytes = frame.encode();
            let head: FrameHead = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(head.kind, kind, "{}", String::from_utf8_lossy(&bytes));
            let back: ServerFrame = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(back, frame);
        }
        let future: FrameHead = serde_json::from_str(r#"{"type":"later","seq":1}"#).unwrap();
        assert_eq!(future.kind, FrameKind::Unknown);
    }
}
