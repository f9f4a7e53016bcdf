//! The state behind the terminal table and how it is drawn.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crossterm::style::{Attribute, Color, Print, SetAttribute, SetForegroundColor};
use crossterm::terminal::{Clear, ClearType};
use crossterm::{cursor, queue};

use ratecast_protocol::{ServerFrame, Source, UpstreamState, UpstreamStatus};

/// How long a changed value stays highlighted.
const FLASH: Duration = Duration::from_millis(1500);

struct Row {
    name: String,
    unit: String,
    /// CoinGecko's value: how many of this unit one BTC buys.
    raw: f64,
    /// The value as displayed (the price in the quote, or the raw value), and the one before
    /// its last change.
    shown: Option<f64>,
    before: Option<f64>,
    changed_at: Option<Instant>,
}

/// Connection state for the status line.
pub(crate) enum Link {
    Connecting,
    Live,
    Reconnecting {
        attempt: u32,
        at: Instant,
        why: String,
    },
}

pub(crate) struct Board {
    url: String,
    /// Codes to show, in this order; empty means every code, sorted.
    symbols: Vec<String>,
    /// Prices are what one unit costs in this unit; `None`: raw values per 1 BTC.
    quote: Option<String>,
    rows: BTreeMap<String, Row>,
    pub seq: Option<u64>,
    data_ts: Option<u64>,
    source: Option<Source>,
    stale: bool,
    upstream: Option<UpstreamState>,
    pub link: Link,
    last_error: Option<String>,
    /// Frames whose checksum disagreed with the table (each one made `watch` start afresh).
    pub checksum_mismatches: u64,
}

impl Board {
    pub fn new(url: String, symbols: Vec<String>, quote: Option<String>) -> Self {
        Self {
            url,
            symbols,
            quote,
            rows: BTreeMap::new(),
            seq: None,
            data_ts: None,
            source: None,
            stale: false,
            upstream: None,
            link: Link::Connecting,
            last_error: None,
            checksum_mismatches: 0,
        }
    }

    pub fn apply(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Snapshot(s) => {
                self.rows.retain(|code, _| s.rates.contains_key(code));
                for (code, rate) in s.rates {
                    self.upsert(code, rate.name, rate.unit, rate.value);
                }
                (self.seq, self.data_ts) = (Some(s.seq), Some(s.ts));
                (self.source, self.stale) = (Some(s.source), s.stale);
            }
            ServerFrame::Delta(d) => {
                for code in &d.removed {
                    self.rows.remove(code);
                }
                for (code, rate) in d.changed {
                    self.upsert(code, rate.name, rate.unit, rate.value);
                }
                (self.seq, self.data_ts) = (Some(d.seq), Some(d.ts));
            }
            ServerFrame::Status(s) => {
                (self.source, self.stale) = (Some(s.source), s.stale);
                self.upstream = Some(s.upstream);
            }
            ServerFrame::Error(e) => self.last_error = Some(e.error),
            ServerFrame::Heartbeat(_) | ServerFrame::Pong(_) => {}
        }
        self.reprice();
    }

    fn upsert(&mut self, code: String, name: String, unit: String, raw: f64) {
        let row = self.rows.entry(code).or_insert_with(|| Row {
            name: String::new(),
            unit: String::new(),
            raw,
            shown: None,
            before: None,
            changed_at: None,
        });
        (row.name, row.unit, row.raw) = (name, unit, raw);
    }

    /// Recomputes every displayed value; a change of the quote moves every row, so flashes are
    /// decided on what is shown, not on which codes the frame named.
    fn reprice(&mut self) {
        let quote = match &self.quote {
            Some(code) => match self.rows.get(code) {
                Some(row) => Some(row.raw),
                None => return,
            },
            None => None,
        };
        let now = Instant::now();
        for row in self.rows.values_mut() {
            // Price of one unit in the quote: (quote per BTC) / (unit per BTC).
            let value = quote.map_or(row.raw, |q| q / row.raw);
            if row.shown.is_some_and(|v| v != value) {
                row.before = row.shown;
                row.changed_at = Some(now);
            }
            row.shown = Some(value);
        }
    }

    pub fn draw(&self, out: &mut impl Write) -> io::Result<()> {
        let (width, height) = crossterm::terminal::size().unwrap_or((100, 30));
        queue!(out, cursor::MoveTo(0, 0))?;
        self.status_line(out)?;
        let codes: Vec<&String> = if self.symbols.is_empty() {
            self.rows.keys().collect()
        } else {
            self.symbols
                .iter()
                .filter(|c| self.rows.contains_key(*c))
                .collect()
        };
        let quote = self
            .quote
            .as_ref()
            .and_then(|q| self.rows.get(q).map(|row| (q, row.unit.as_str())));
        let heading = match quote {
            Some((code, _)) => format!("price in {}", code.to_uppercase()),
            None => "per 1 BTC".to_owned(),
        };
        let cells: Vec<String> = codes
            .iter()
            .filter_map(|code| {
                let row = &self.rows[*code];
                let value = row.shown?;
                Some(match quote {
                    Some((_, unit)) => price(value, unit),
                    None => format!("{} {}", number(value), row.unit),
                })
            })
            .collect();
        // Wide enough for every value with its unit: units are never cut ("μBTC", "BCH").
        let width_of = |s: &String| s.chars().count();
        let value_width = cells.iter().map(width_of).max().unwrap_or(0).max(22);
        line(
            out,
            Color::Reset,
            true,
            &format!(
                "{:<8} {:<28} {:>value_width$}  {}",
                "CODE", "NAME", heading, "CHANGE"
            ),
        )?;

        let room = usize::from(height).saturating_sub(4);
        let now = Instant::now();
        let shown = codes
            .iter()
            .filter(|code| self.rows[**code].shown.is_some());
        for (code, cell) in shown.zip(&cells).take(room) {
            let row = &self.rows[*code];
            let Some(value) = row.shown else { continue };
            let flashing = row
                .changed_at
                .is_some_and(|t| now.duration_since(t) < FLASH);
            let (arrow, color, pct) = match row.before {
                Some(b) if value > b => ("▲", Color::Green, (value / b - 1.0) * 100.0),
                Some(b) if value < b => ("▼", Color::Red, (value / b - 1.0) * 100.0),
                _ => (" ", Color::Reset, 0.0),
            };
            let change = if row.before.is_some() {
                format!("{arrow} {pct:+.3}%")
            } else {
                String::new()
            };
            let text = format!(
                "{:<8} {:<28} {:>value_width$}  {}",
                code.to_uppercase(),
                truncate(&row.name, 28),
                cell,
                change
            );
            line(
                out,
                if flashing { color } else { Color::Reset },
                flashing,
                &truncate(&text, usize::from(width)),
            )?;
        }
        if codes.len() > room {
            line(
                out,
                Color::DarkGrey,
                false,
                &format!(
                    "… {} more rows (enlarge the terminal or use --symbols)",
                    codes.len() - room
                ),
            )?;
        }
        line(out, Color::DarkGrey, false, "q or Ctrl-C to quit")?;
        queue!(out, Clear(ClearType::FromCursorDown))?;
        out.flush()
    }

    fn status_line(&self, out: &mut impl Write) -> io::Result<()> {
        let (state, color) = match &self.link {
            Link::Connecting => ("connecting".to_owned(), Color::Yellow),
            Link::Reconnecting { attempt, at, why } => {
                let wait = at.saturating_duration_since(Instant::now()).as_secs_f32();
                (
                    format!("reconnecting (attempt {attempt}, in {wait:.0}s: {why})"),
                    Color::Yellow,
                )
            }
            Link::Live if self.stale => ("stale".to_owned(), Color::Red),
            Link::Live => ("live".to_owned(), Color::Green),
        };
        let mut parts = vec![state];
        if self.source == Some(Source::Demo) {
            parts.push("demo".into());
        }
        if let Some(ts) = self.data_ts {
            let age =
                ratecast_protocol::time::unix_ms(std::time::SystemTime::now()).saturating_sub(ts);
            parts.push(format!("data age {:.1}s", age as f64 / 1000.0));
        }
        if let Some(seq) = self.seq {
            parts.push(format!("seq {seq}"));
        }
        if let Some(up) = &self.upstream {
            let status = match up.status {
                UpstreamStatus::Ok => "ok",
                UpstreamStatus::Degraded => "degraded",
                UpstreamStatus::Down => "down",
            };
            parts.push(format!("upstream {status}"));
        }
        if self.checksum_mismatches > 0 {
            parts.push(format!("checksum mismatches {}", self.checksum_mismatches));
        }
        if let Some(error) = &self.last_error {
            parts.push(format!("server said: {error}"));
        }
        line(
            out,
            color,
            true,
            &format!("ratecast watch {} · {}", self.url, parts.join(" · ")),
        )
    }
}

fn line(out: &mut impl Write, color: Color, bold: bool, text: &str) -> io::Result<()> {
    queue!(out, SetForegroundColor(color))?;
    if bold {
        queue!(out, SetAttribute(Attribute::Bold))?;
    }
    queue!(
        out,
        Print(text),
        SetAttribute(Attribute::Reset),
        Clear(ClearType::UntilNewLine),
        cursor::MoveToNextLine(1)
    )
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Six significant digits with thousands separators: values span 1e-6 (BTC per unit) to 1e9
/// (VND per BTC), and "$0.0000123" and "$41,819.9" should both read at a glance.
fn number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (5 - magnitude).clamp(0, 12) as usize;
    let fixed = format!("{:.decimals$}", v.abs());
    let (int, frac) = fixed.split_once('.').unwrap_or((&fixed, ""));
    // Trailing zeros carry no information: "$1.0716", not "$1.07160".
    let frac = frac.trim_end_matches('0');
    let mut grouped = String::with_capacity(fixed.len() + int.len() / 3 + 1);
    if v < 0.0 {
        grouped.push('-');
    }
    for (i, digit) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if !frac.is_empty() {
        grouped.push('.');
        grouped.push_str(frac);
    }
    grouped
}

/// A price in the quote's unit: a currency sign goes first ("$1,698.06"), a code after
/// ("0.0123 BCH").
fn price(value: f64, unit: &str) -> String {
    let sign = unit.chars().count() <= 2 && !unit.chars().any(char::is_alphanumeric);
    if sign {
        format!("{unit}{}", number(value))
    } else {
        format!("{} {unit}", number(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratecast_protocol::frames::{ChangedRate, Delta, Snapshot};

    fn snapshot() -> ServerFrame {
        let rate = |name: &str, value| ratecast_protocol::Rate::new(name, "$", value, "fiat");
        ServerFrame::Snapshot(Snapshot {
            epoch: "e1".into(),
            seq: 7,
            ts: 1,
            source: Source::Demo,
            stale: false,
            checked_at: Some(1),
            rates: [
                ("usd".to_owned(), rate("US Dollar", 40_000.0)),
                ("eur".to_owned(), rate("Euro", 36_000.0)),
            ]
            .into(),
            failover: None,
            checksum: None,
        })
    }

    fn delta(code: &str, value: f64) -> ServerFrame {
        let changed = ChangedRate {
            name: "x".into(),
            unit: "$".into(),
            value,
            kind: "fiat".into(),
            prev: None,
            source: None,
            flag: None,
        };
        ServerFrame::Delta(Delta {
            epoch: "e1".into(),
            seq: 8,
            ts: 2,
            changed: [(code.to_owned(), changed)].into(),
            removed: vec![],
            checksum: None,
        })
    }

    #[test]
    fn flashes_only_changed_rows_in_raw_mode() {
        let mut board = Board::new("ws://x".into(), vec![], None);
        board.apply(snapshot());
        board.apply(delta("usd", 41_000.0));
        assert!(board.rows["usd"].changed_at.is_some());
        assert_eq!(board.rows["usd"].before, Some(40_000.0));
        assert!(board.rows["eur"].changed_at.is_none());
        assert_eq!(board.seq, Some(8));
    }

    #[test]
    fn a_quote_change_moves_every_price() {
        let mut board = Board::new("ws://x".into(), vec![], Some("usd".into()));
        board.apply(snapshot());
        assert_eq!(board.rows["eur"].shown, Some(40_000.0 / 36_000.0));
        board.apply(delta("usd", 44_000.0));
        assert_eq!(board.rows["eur"].shown, Some(44_000.0 / 36_000.0));
        assert!(board.rows["eur"].changed_at.is_some());
        assert_eq!(board.rows["usd"].shown, Some(1.0));
    }

    #[test]
    fn numbers_keep_six_significant_digits_grouped() {
        assert_eq!(number(41_819.856), "41,819.9");
        assert_eq!(number(0.000_023_912_3), "0.0000239123");
        assert_eq!(number(15_327_290.981), "15,327,291");
        assert_eq!(number(1_698.058), "1,698.06");
        assert_eq!(number(-1_234.5), "-1,234.5");
        assert_eq!(number(999.5), "999.5");
        assert_eq!(number(1.0), "1");
    }

    #[test]
    fn prices_put_a_currency_sign_first_and_a_code_after() {
        assert_eq!(price(1_698.058, "$"), "$1,698.06");
        assert_eq!(price(1.071_6, "€"), "€1.0716");
        assert_eq!(price(0.012_3, "BCH"), "0.0123 BCH");
        assert_eq!(price(1_000_000.0, "μBTC"), "1,000,000 μBTC");
    }
}
