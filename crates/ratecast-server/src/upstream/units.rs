//! The units a fallback source fills in, in CoinGecko's terms (docs/sources.md): each of
//! CoinGecko's codes, names, units and types, and where its value comes from. A CoinGecko unit
//! absent from this table is one the fallback does not carry; during a failover it keeps its last
//! CoinGecko value and is flagged stale on its own.

/// Where a unit's value comes from when CoinGecko does not give it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Origin {
    /// Coinbase's rate for this code (`data.rates`, keyed by its upper-case ticker).
    Coinbase(&'static str),
    /// A fixed number per BTC by definition (1 BTC, 10⁶ bits, 10⁸ sats): derived, never read,
    /// so no upstream glitch can move it.
    PerBtc(f64),
}

/// One CoinGecko unit and its origin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    /// CoinGecko's code: the key the served table uses whatever the source.
    pub code: &'static str,
    pub origin: Origin,
    pub name: &'static str,
    pub unit: &'static str,
    pub kind: &'static str,
}

const fn unit(
    code: &'static str,
    origin: Origin,
    name: &'static str,
    unit: &'static str,
    kind: &'static str,
) -> Unit {
    Unit {
        code,
        origin,
        name,
        unit,
        kind,
    }
}

use Origin::{Coinbase, PerBtc};

/// CoinGecko's units that Coinbase's `/v2/exchange-rates` gives too, or that need no source.
/// Not here: `bnb` (not among Coinbase's rates), `vef` (Coinbase lists VES, the bolívar after
/// its 2018 redenomination, a different currency), `xau` (Coinbase rounds it to whole ounces,
/// several percent at ~13 oz per BTC). The reasons, with what could not be confirmed:
/// docs/sources.md.
pub const UNITS: &[Unit] = &[
    unit("btc", PerBtc(1.0), "Bitcoin", "BTC", "crypto"),
    unit("eth", Coinbase("ETH"), "Ether", "ETH", "crypto"),
    unit("ltc", Coinbase("LTC"), "Litecoin", "LTC", "crypto"),
    unit("bch", Coinbase("BCH"), "Bitcoin Cash", "BCH", "crypto"),
    unit("eos", Coinbase("EOS"), "EOS", "EOS", "crypto"),
    unit("xrp", Coinbase("XRP"), "XRP", "XRP", "crypto"),
    unit("xlm", Coinbase("XLM"), "Lumens", "XLM", "crypto"),
    unit("link", Coinbase("LINK"), "Chainlink", "LINK", "crypto"),
    unit("dot", Coinbase("DOT"), "Polkadot", "DOT", "crypto"),
    unit("yfi", Coinbase("YFI"), "Yearn.finance", "YFI", "crypto"),
    unit("usd", Coinbase("USD"), "US Dollar", "$", "fiat"),
    unit(
        "aed",
        Coinbase("AED"),
        "United Arab Emirates Dirham",
        "DH",
        "fiat",
    ),
    unit("ars", Coinbase("ARS"), "Argentine Peso", "$", "fiat"),
    unit("aud", Coinbase("AUD"), "Australian Dollar", "A$", "fiat"),
    unit("bdt", Coinbase("BDT"), "Bangladeshi Taka", "৳", "fiat"),
    unit("bhd", Coinbase("BHD"), "Bahraini Dinar", "BD", "fiat"),
    unit("bmd", Coinbase("BMD"), "Bermudian Dollar", "$", "fiat"),
    unit("brl", Coinbase("BRL"), "Brazil Real", "R$", "fiat"),
    unit("cad", Coinbase("CAD"), "Canadian Dollar", "CA$", "fiat"),
    unit("chf", Coinbase("CHF"), "Swiss Franc", "Fr.", "fiat"),
    unit("clp", Coinbase("CLP"), "Chilean Peso", "CLP$", "fiat"),
    unit("cny", Coinbase("CNY"), "Chinese Yuan", "¥", "fiat"),
    unit("czk", Coinbase("CZK"), "Czech Koruna", "Kč", "fiat"),
    unit("dkk", Coinbase("DKK"), "Danish Krone", "kr.", "fiat"),
    unit("eur", Coinbase("EUR"), "Euro", "€", "fiat"),
    unit(
        "gbp",
        Coinbase("GBP"),
        "British Pound Sterling",
        "£",
        "fiat",
    ),
    unit("hkd", Coinbase("HKD"), "Hong Kong Dollar", "HK$", "fiat"),
    unit("huf", Coinbase("HUF"), "Hungarian Forint", "Ft", "fiat"),
    unit("idr", Coinbase("IDR"), "Indonesian Rupiah", "Rp", "fiat"),
    unit("ils", Coinbase("ILS"), "Israeli New Shekel", "₪", "fiat"),
    unit("inr", Coinbase("INR"), "Indian Rupee", "₹", "fiat"),
    unit("jpy", Coinbase("JPY"), "Japanese Yen", "¥", "fiat"),
    unit("krw", Coinbase("KRW"), "South Korean Won", "₩", "fiat"),
    unit("kwd", Coinbase("KWD"), "Kuwaiti Dinar", "KD", "fiat"),
    unit("lkr", Coinbase("LKR"), "Sri Lankan Rupee", "Rs", "fiat"),
    unit("mmk", Coinbase("MMK"), "Burmese Kyat", "K", "fiat"),
    unit("mxn", Coinbase("MXN"), "Mexican Peso", "MX$", "fiat"),
    unit("myr", Coinbase("MYR"), "Malaysian Ringgit", "RM", "fiat"),
    unit("ngn", Coinbase("NGN"), "Nigerian Naira", "₦", "fiat"),
    unit("nok", Coinbase("NOK"), "Norwegian Krone", "kr", "fiat"),
    unit("nzd", Coinbase("NZD"), "New Zealand Dollar", "NZ$", "fiat"),
    unit("php", Coinbase("PHP"), "Philippine Peso", "₱", "fiat"),
    unit("pkr", Coinbase("PKR"), "Pakistani Rupee", "₨", "fiat"),
    unit("pln", Coinbase("PLN"), "Polish Zloty", "zł", "fiat"),
    unit("rub", Coinbase("RUB"), "Russian Ruble", "₽", "fiat"),
    unit("sar", Coinbase("SAR"), "Saudi Riyal", "SR", "fiat"),
    unit("sek", Coinbase("SEK"), "Swedish Krona", "kr", "fiat"),
    unit("sgd", Coinbase("SGD"), "Singapore Dollar", "S$", "fiat"),
    unit("thb", Coinbase("THB"), "Thai Baht", "฿", "fiat"),
    unit("try", Coinbase("TRY"), "Turkish Lira", "₺", "fiat"),
    unit("twd", Coinbase("TWD"), "New Taiwan Dollar", "NT$", "fiat"),
    unit("uah", Coinbase("UAH"), "Ukrainian hryvnia", "₴", "fiat"),
    unit("vnd", Coinbase("VND"), "Vietnamese đồng", "₫", "fiat"),
    unit("zar", Coinbase("ZAR"), "South African Rand", "R", "fiat"),
    unit(
        "xdr",
        Coinbase("XDR"),
        "IMF Special Drawing Rights",
        "XDR",
        "fiat",
    ),
    unit(
        "xag",
        Coinbase("XAG"),
        "Silver - Troy Ounce",
        "XAG",
        "commodity",
    ),
    unit("bits", PerBtc(1e6), "Bits", "μBTC", "crypto"),
    unit("sats", PerBtc(1e8), "Satoshi", "sats", "crypto"),
];

/// How many units come from Coinbase's payload (the rest are derived).
pub fn read_from_coinbase() -> usize {
    UNITS
        .iter()
        .filter(|u| matches!(u.origin, Origin::Coinbase(_)))
        .count()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const COINGECKO: &str =
        include_str!("../../../../tests/fixtures/coingecko-exchange-rates-2022.json");
    const DOC: &str = include_str!("../../../../docs/sources.md");

    #[test]
    fn every_unit_is_coingeckos_own_and_each_code_appears_once() {
        let fixture: serde_json::Value = serde_json::from_str(COINGECKO).unwrap();
        let rates = fixture["rates"].as_object().unwrap();
        for u in UNITS {
            let theirs = &rates[u.code];
            assert_eq!(theirs["name"], u.name, "{}", u.code);
            assert_eq!(theirs["unit"], u.unit, "{}", u.code);
            assert_eq!(theirs["type"], u.kind, "{}", u.code);
        }
        let codes: BTreeSet<_> = UNITS.iter().map(|u| u.code).collect();
        assert_eq!(codes.len(), UNITS.len());
        let tickers: BTreeSet<_> = UNITS
            .iter()
            .filter_map(|u| match u.origin {
                Origin::Coinbase(code) => Some(code),
                Origin::PerBtc(_) => None,
            })
            .collect();
        assert_eq!(tickers.len(), read_from_coinbase());
        let missing: Vec<_> = rates
            .keys()
            .filter(|code| !codes.contains(code.as_str()))
            .collect();
        assert_eq!(missing, ["bnb", "vef", "xau"]);
    }

    /// docs/sources.md's table says the same as this one, unit by unit: `| `code` | `TICKER` |`,
    /// `derived` or `—` for one Coinbase does not give.
    #[test]
    fn the_documented_table_is_this_one() {
        let fixture: serde_json::Value = serde_json::from_str(COINGECKO).unwrap();
        let all: Vec<&str> = fixture["rates"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let documented: BTreeMap<&str, &str> = DOC
            .lines()
            .filter_map(|line| {
                let mut cells = line.split('|').map(str::trim).skip(1);
                let code = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
                Some((code, cells.next()?)).filter(|(code, _)| all.contains(code))
            })
            .collect();
        for code in all {
            let expected = match UNITS.iter().find(|u| u.code == code).map(|u| u.origin) {
                Some(Origin::Coinbase(ticker)) => format!("`{ticker}`"),
                Some(Origin::PerBtc(_)) => "derived".to_owned(),
                None => "—".to_owned(),
            };
            assert_eq!(documented.get(code), Some(&expected.as_str()), "{code}");
        }
    }
}
