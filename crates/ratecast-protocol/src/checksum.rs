//! The table checksum every snapshot and delta carries (`checksum`, docs/protocol.md): a client
//! folds the frames it receives into its own table and compares this with what the server's
//! table was after the frame. A mismatch means its table is wrong (a lost write re-issued a `seq`,
//! a bug, a proxy that mangled a frame): it starts again from a snapshot.
//!
//! The canonical form is simple enough for any language to rebuild: for each unit, in ascending
//! byte order of its code, the line
//!
//! ```text
//! code \t name \t unit \t type \t value \n
//! ```
//!
//! UTF-8, where `value` is the 16 lower-case hex digits of the IEEE-754 binary64 bits of the
//! value (big-endian, as `f64::to_bits`): exact, and free of any float-to-text rules. A unit
//! that carries a `source` or a `flag` (docs/protocol.md, "Sources") has them too, each empty
//! when absent, before the newline:
//!
//! ```text
//! code \t name \t unit \t type \t value \t source \t flag \n
//! ```
//!
//! so that a client whose table has the right numbers from the wrong source also notices. The
//! checksum is the CRC-32 (IEEE 802.3, the one zlib, gzip and PNG use) of those bytes, on the
//! wire as a JSON number. An empty table has checksum 0.

use std::collections::BTreeSet;

use crate::rates::{Rate, Rates, UnitFlag};
use crate::status::Source;

/// The checksum of the whole table.
pub fn table_checksum(rates: &Rates) -> u32 {
    checksum_of(rates.iter())
}

/// The checksum of the units of `rates` that `filter` names: what a filtered connection holds.
pub fn filtered_checksum(rates: &Rates, filter: &BTreeSet<String>) -> u32 {
    checksum_of(filter.iter().filter_map(|code| rates.get_key_value(code)))
}

/// `units` must come in ascending order of code (a `BTreeMap`'s or `BTreeSet`'s order).
fn checksum_of<'a>(units: impl Iterator<Item = (&'a String, &'a Rate)>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let mut line = Vec::with_capacity(128);
    for (code, rate) in units {
        line.clear();
        for field in [code, &rate.name, &rate.unit, &rate.kind] {
            line.extend_from_slice(field.as_bytes());
            line.push(b'\t');
        }
        line.extend_from_slice(format!("{:016x}", rate.value.to_bits()).as_bytes());
        if rate.source.is_some() || rate.flag.is_some() {
            for tag in [
                rate.source.map(Source::label),
                rate.flag.map(UnitFlag::as_str),
            ] {
                line.push(b'\t');
                line.extend_from_slice(tag.unwrap_or_default().as_bytes());
            }
        }
        line.push(b'\n');
        hasher.update(&line);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(name: &str, unit: &str, value: f64, kind: &str) -> Rate {
        Rate::new(name, unit, value, kind)
    }

    /// The documented example in docs/protocol.md: a third-party client checks its own
    /// implementation against this value.
    #[test]
    fn the_documented_example_holds() {
        let rates: Rates = [
            ("usd".to_string(), rate("US Dollar", "$", 41819.856, "fiat")),
            (
                "bits".to_string(),
                rate("Bits", "μBTC", 1_000_000.0, "crypto"),
            ),
        ]
        .into();
        let canonical = "bits\tBits\tμBTC\tcrypto\t412e848000000000\n\
                         usd\tUS Dollar\t$\tfiat\t40e46b7b645a1cac\n";
        assert_eq!(
            table_checksum(&rates),
            crc32fast::hash(canonical.as_bytes())
        );
        assert_eq!(
            table_checksum(&rates),
            0xe0c9_ac11,
            "{:#010x}",
            table_checksum(&rates)
        );
        assert_eq!(table_checksum(&Rates::new()), 0);
    }

    /// The documented example of a unit served by a fallback source, and one held back.
    #[test]
    fn the_documented_example_with_sources_holds() {
        let mut usd = rate("US Dollar", "$", 41819.856, "fiat");
        usd.source = Some(Source::Coinbase);
        let mut vef = rate("Venezuelan bolívar fuerte", "Bs.F", 4187.4, "fiat");
        vef.flag = Some(UnitFlag::Stale);
        let rates: Rates = [("usd".to_string(), usd), ("vef".to_string(), vef)].into();
        let canonical = "usd\tUS Dollar\t$\tfiat\t40e46b7b645a1cac\tcoinbase\t\n\
                         vef\tVenezuelan bolívar fuerte\tBs.F\tfiat\t40b05b6666666666\t\tstale\n";
        assert_eq!(
            table_checksum(&rates),
            crc32fast::hash(canonical.as_bytes())
        );
        assert_eq!(table_checksum(&rates), 0x43e1_0140);
    }

    #[test]
    fn every_field_and_the_filter_count() {
        let base: Rates = [
            ("usd".to_string(), rate("US Dollar", "$", 1.0, "fiat")),
            ("eur".to_string(), rate("Euro", "€", 2.0, "fiat")),
        ]
        .into();
        let sum = table_checksum(&base);
        for change in [
            |r: &mut Rate| r.value = f64::from_bits(r.value.to_bits() + 1),
            |r: &mut Rate| r.name.push('x'),
            |r: &mut Rate| r.unit.push('x'),
            |r: &mut Rate| r.kind.push('x'),
            |r: &mut Rate| r.source = Some(Source::Coinbase),
            |r: &mut Rate| r.flag = Some(UnitFlag::Held),
        ] {
            let mut other = base.clone();
            change(other.get_mut("usd").unwrap());
            assert_ne!(table_checksum(&other), sum);
        }
        let only_usd: BTreeSet<String> = ["usd".to_string(), "xau".to_string()].into();
        let usd: Rates = [("usd".to_string(), base["usd"].clone())].into();
        assert_eq!(filtered_checksum(&base, &only_usd), table_checksum(&usd));
    }
}
