//! Client input naming units: `?symbols=` on the stream, `?codes=` on the history API, and the
//! stream's `subscribe` command all take a list of unit codes, read by one rule here.

use std::collections::BTreeSet;

use ratecast_protocol::rates::is_valid_code;

/// Most codes one list may name.
pub const MAX_CODES: usize = 256;

/// Why a list of codes is refused (answered as a 400 or an `error` frame).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodesError {
    #[error("invalid symbol {0:?}")]
    Invalid(String),
    #[error("at most {MAX_CODES} symbols")]
    TooMany,
}

/// A client's list of unit codes: trimmed, lower-cased, deduplicated; empty means "all".
pub fn parse_codes<'a>(
    codes: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<String>, CodesError> {
    let mut set = BTreeSet::new();
    for code in codes {
        let code = code.trim().to_ascii_lowercase();
        if code.is_empty() {
            continue;
        }
        if !is_valid_code(&code) {
            return Err(CodesError::Invalid(code));
        }
        set.insert(code);
        // Checked as it grows: a hostile list of a million names is refused at the 257th.
        if set.len() > MAX_CODES {
            return Err(CodesError::TooMany);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_lowercases_dedups_and_refuses_bad_or_too_many() {
        let set = parse_codes(" USD,eur,,usd ".split(',')).unwrap();
        assert_eq!(set, BTreeSet::from(["usd".to_owned(), "eur".to_owned()]));
        assert_eq!(
            parse_codes(["usd", "e$r"]),
            Err(CodesError::Invalid("e$r".into()))
        );
        let many: Vec<String> = (0..=MAX_CODES).map(|i| format!("c{i}")).collect();
        assert_eq!(
            parse_codes(many.iter().map(String::as_str)),
            Err(CodesError::TooMany)
        );
        assert!(parse_codes(many[..MAX_CODES].iter().map(String::as_str)).is_ok());
    }
}
