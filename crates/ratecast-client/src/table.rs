//! A client's copy of the server's table, folded from the snapshots and deltas it receives and
//! checked against the `checksum` each of them carries (docs/protocol.md, *Checksum*). `watch`
//! and `loadtest` fold the same way, so a table that drifted is caught the same way in both.

use std::collections::BTreeMap;

use serde::Deserialize;

use ratecast_protocol::Rates;
use ratecast_protocol::checksum::table_checksum;
use ratecast_protocol::frames::{ChangedRate, Delta};

/// What a checked frame says about the table it leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The frame's checksum matches the folded table.
    Verified,
    /// The frame carries no checksum (an older server, or a filtered replay's earlier frames).
    Unchecked,
    /// The folded table is not the server's: it must be replaced by a fresh snapshot.
    Mismatch { carried: u32, folded: u32 },
}

/// The table as the frames built it (of the connection's units only, on a filtered one: the
/// server's checksum then covers those units too).
#[derive(Debug, Default, Clone)]
pub struct Table {
    pub rates: Rates,
}

impl Table {
    /// A snapshot replaces the whole table.
    pub fn replace(&mut self, rates: Rates, carried: Option<u32>) -> Check {
        self.rates = rates;
        self.check(carried)
    }

    /// A delta folds into it.
    pub fn fold(&mut self, delta: &Delta) -> Check {
        delta.apply_to(&mut self.rates);
        self.check(delta.checksum)
    }

    fn check(&self, carried: Option<u32>) -> Check {
        let Some(carried) = carried else {
            return Check::Unchecked;
        };
        match table_checksum(&self.rates) {
            folded if folded == carried => Check::Verified,
            folded => Check::Mismatch { carried, folded },
        }
    }
}

/// The parts of a snapshot a folding client needs, read leniently: other servers speaking the
/// protocol may leave out what ratecast's own snapshots always carry (`source`, `stale`).
#[derive(Debug, Deserialize)]
pub struct SnapshotBody {
    #[serde(default)]
    pub epoch: Option<String>,
    #[serde(default)]
    pub rates: Rates,
    #[serde(default)]
    pub checksum: Option<u32>,
}

/// The parts of a delta a folding client needs, as leniently.
#[derive(Debug, Deserialize)]
pub struct DeltaBody {
    #[serde(default)]
    pub epoch: Option<String>,
    pub seq: u64,
    #[serde(default)]
    pub changed: BTreeMap<String, ChangedRate>,
    #[serde(default)]
    pub removed: Vec<String>,
    #[serde(default)]
    pub checksum: Option<u32>,
}

impl From<DeltaBody> for Delta {
    fn from(body: DeltaBody) -> Self {
        Delta {
            epoch: body.epoch.unwrap_or_default(),
            seq: body.seq,
            ts: 0,
            changed: body.changed,
            removed: body.removed,
            checksum: body.checksum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratecast_protocol::Rate;

    fn rate(value: f64) -> Rate {
        Rate::new("US Dollar", "$", value, "fiat")
    }

    #[test]
    fn a_snapshot_and_a_delta_are_verified_and_a_wrong_checksum_is_caught() {
        let rates: Rates = [("usd".to_string(), rate(1.0))].into();
        let mut table = Table::default();
        let sum = table_checksum(&rates);
        assert_eq!(table.replace(rates.clone(), Some(sum)), Check::Verified);
        assert_eq!(table.replace(rates, None), Check::Unchecked);
        let mut next: Rates = table.rates.clone();
        next.insert("usd".into(), rate(2.0));
        let delta = Delta {
            epoch: "e".into(),
            seq: 2,
            ts: 0,
            changed: [(
                "usd".to_string(),
                ChangedRate {
                    name: "US Dollar".into(),
                    unit: "$".into(),
                    value: 2.0,
                    kind: "fiat".into(),
                    prev: Some(1.0),
                    source: None,
                    flag: None,
                },
            )]
            .into(),
            removed: vec![],
            checksum: Some(table_checksum(&next).wrapping_add(1)),
        };
        assert_eq!(
            table.fold(&delta),
            Check::Mismatch {
                carried: table_checksum(&next).wrapping_add(1),
                folded: table_checksum(&next),
            }
        );
    }
}

/// Issue 20, point 4: folding what the server sends gives the server's table, and its checksum,
/// at every step; a delta folded onto the wrong base is caught by the checksum.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use ratecast_protocol::rates::diff;
    use ratecast_protocol::{Rate, ServerFrame, Source, UnitFlag};

    /// Few codes, so that successive tables share, change, add and remove units.
    fn table() -> impl Strategy<Value = Rates> {
        let code = prop::sample::select(vec!["usd", "eur", "eth", "sats", "xau", "vnd", "bits"]);
        let text = prop::sample::select(vec!["US Dollar", "$", "μBTC", "₫", "৳", "Ether", ""]);
        let kind = prop::sample::select(vec!["fiat", "crypto", "commodity", "index"]);
        // Any finite positive value: every bit of it is in the canonical form, so the wire
        // must carry it exactly.
        let value = prop::num::f64::POSITIVE | prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL;
        // A fallback source and a flag change a unit as much as its value does (issue 22).
        let source = prop::option::of(prop::sample::select(vec![Source::Coinbase, Source::Demo]));
        let flag = prop::option::of(prop::sample::select(vec![UnitFlag::Stale, UnitFlag::Held]));
        let rate = (text.clone(), text, value, kind, source, flag).prop_map(
            |(name, unit, value, kind, source, flag)| Rate {
                source,
                flag,
                ..Rate::new(name, unit, value, kind)
            },
        );
        prop::collection::btree_map(code.prop_map(String::from), rate, 0..7)
    }

    /// What the server sends for `old` → `new` at `seq`, read back from the wire as a client
    /// reads it.
    fn wire_delta(old: &Rates, new: &Rates, seq: u64) -> Delta {
        let changes = diff(old, new);
        let frame = ServerFrame::Delta(Delta {
            epoch: "e1".into(),
            seq,
            ts: 0,
            changed: changes
                .changed
                .iter()
                .map(|(code, change)| (code.clone(), change.into()))
                .collect(),
            removed: changes.removed.clone(),
            checksum: Some(table_checksum(new)),
        })
        .encode();
        let body: DeltaBody = serde_json::from_slice(&frame).expect("a delta reads back");
        body.into()
    }

    proptest! {
        #[test]
        fn a_folded_stream_is_the_servers_table_at_every_step(
            tables in prop::collection::vec(table(), 1..12),
        ) {
            let snapshot = serde_json::to_vec(&tables[0]).expect("rates serialise");
            let mut folded = Table::default();
            let rates: Rates = serde_json::from_slice(&snapshot).expect("rates read back");
            prop_assert_eq!(
                folded.replace(rates, Some(table_checksum(&tables[0]))),
                Check::Verified
            );
            for (seq, pair) in tables.windows(2).enumerate() {
                let delta = wire_delta(&pair[0], &pair[1], seq as u64 + 1);
                prop_assert_eq!(folded.fold(&delta), Check::Verified);
                prop_assert_eq!(&folded.rates, &pair[1]);
                prop_assert_eq!(table_checksum(&folded.rates), table_checksum(&pair[1]));
            }
        }

        #[test]
        fn a_delta_on_the_wrong_base_is_caught(
            base in table(),
            wrong in table(),
            next in table(),
        ) {
            let delta = wire_delta(&base, &next, 1);
            let mut folded = Table { rates: wrong.clone() };
            let mut expected = wrong;
            delta.apply_to(&mut expected);
            // Folding onto another base yields the server's table only when the delta
            // overwrote every difference; any other outcome must be a mismatch.
            let check = folded.fold(&delta);
            if expected == next {
                prop_assert_eq!(check, Check::Verified);
            } else {
                prop_assert!(matches!(check, Check::Mismatch { .. }), "{:?}", check);
            }
        }
    }
}
