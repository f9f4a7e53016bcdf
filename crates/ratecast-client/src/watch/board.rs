//! The state behind the terminal table and how it is drawn.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime};

use crossterm::style::{Attribute, Color, Print, SetAttribute, SetForegroundColor};
use crossterm::terminal::{Clear, ClearType};
use crossterm::{cursor, queue};

use ratecast_protocol::{Failover, ServerFrame, Source, UnitFlag, UpstreamState, UpstreamStatus};

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
    /// Where the value came from when not the primary, and why it is held back, when it is.
    source: Option<Source>,
    flag: Option<UnitFlag>,
}

/// What a row's marker says (the legend under the table spells it out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// A fallback serves it: live data.
    Via(Source),
    /// The serving source does not carry it: the primary's last value.
    Stale,
    /// The sources disagree: the last value they agreed on.
    Held,
}

impl Mark {
    fn of(row: &Row) -> Option<Self> {
        match (row.flag, row.source) {
            (Some(UnitFlag::Held), _) => Some(Self::Held),
            (Some(UnitFlag::Stale), _) => Some(Self::Stale),
            (None, Some(source)) => Some(Self::Via(source)),
            (None, None) => None,
        }
    }

    fn symbol(self) -> char {
        match self {
            Self::Via(_) => '*',
            Self::Stale => '~',
            Self::Held => '!',
        }
    }

    /// Its legend entry; `serving` names the source that does not carry a stale unit.
    fn legend(self, serving: Option<Source>) -> String {
        let symbol = self.symbol();
        match (self, serving) {
            (Self::Via(source), _) => format!("{symbol} via {} (live)", source.name()),
            (Self::Stale, Some(via)) => {
                format!("{symbol} not updated: {} does not carry it", via.name())
            }
            (Self::Stale, None) => format!("{symbol} not updated"),
            (Self::Held, _) => format!("{symbol} held: sources disagree"),
        }
    }
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
    /// Set while a fallback serves for the failing primary (`source`).
    failover: Option<Failover>,
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
            failover: None,
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
                    let mark = (rate.source, rate.flag);
                    self.upsert(code, rate.name, rate.unit, rate.value, mark);
                }
                (self.seq, self.data_ts) = (Some(s.seq), Some(s.ts));
                (self.source, self.stale) = (Some(s.source), s.stale);
                self.failover = s.failover;
            }
            ServerFrame::Delta(d) => {
                for code in &d.removed {
                    self.rows.remove(code);
                }
                for (code, rate) in d.changed {
                    let mark = (rate.source, rate.flag);
                    self.upsert(code, rate.name, rate.unit, rate.value, mark);
                }
                (self.seq, self.data_ts) = (Some(d.seq), Some(d.ts));
            }
            ServerFrame::Status(s) => {
                (self.source, self.stale) = (Some(s.source), s.stale);
                self.failover = s.upstream.failover.clone();
                self.upstream = Some(s.upstream);
            }
            ServerFrame::Error(e) => self.last_error = Some(e.error),
            ServerFrame::Heartbeat(_) | ServerFrame::Pong(_) => {}
        }
        self.reprice();
    }

    fn upsert(
        &mut self,
        code: String,
        name: String,
        unit: String,
        raw: f64,
        (source, flag): (Option<Source>, Option<UnitFlag>),
    ) {
        let row = self.rows.entry(code).or_insert_with(|| Row {
            name: String::new(),
            unit: String::new(),
            raw,
            shown: None,
            before: None,
            changed_at: None,
            source: None,
            flag: None,
        });
        (row.name, row.unit, row.raw) = (name, unit, raw);
        (row.source, row.flag) = (source, flag);
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
                "{:<8} {:<28} {:>value_width$}   {}",
                "CODE", "NAME", heading, "CHANGE"
            ),
        )?;

        let marks: Vec<Mark> = {
            let mut marks: Vec<Mark> = codes
                .iter()
                .filter_map(|code| Mark::of(&self.rows[*code]))
                .collect();
            marks.sort_by_key(|mark| mark.symbol());
            marks.dedup();
            marks
        };
        // Room for the status, heading, hint and legend lines.
        let room = usize::from(height).saturating_sub(4 + usize::from(!marks.is_empty()));
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
            let mark = Mark::of(row);
            let text = format!(
                "{:<8} {:<28} {:>value_width$} {} {}",
                code.to_uppercase(),
                truncate(&row.name, 28),
                cell,
                mark.map_or(' ', Mark::symbol),
                change
            );
            // A value held back is greyed, whatever it did last: it is not the live one.
            let color = match mark {
                Some(Mark::Stale | Mark::Held) => Color::DarkGrey,
                _ if flashing => color,
                _ => Color::Reset,
            };
            line(out, color, flashing, &truncate(&text, usize::from(width)))?;
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
        if !marks.is_empty() {
            let serving = self.failover.as_ref().map(|f| f.via);
            let legend: Vec<String> = marks.iter().map(|m| m.legend(serving)).collect();
            line(out, Color::DarkGrey, false, &legend.join(" · "))?;
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
            Link::Live => match self.failover_words(SystemTime::now()) {
                // Live, from a fallback: not an alarm, but not the usual green either.
                Some(words) => (format!("live {words}"), Color::Cyan),
                None => ("live".to_owned(), Color::Green),
            },
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

impl Board {
    /// "via Coinbase — CoinGecko unreachable for 4 min", while a fallback serves.
    fn failover_words(&self, now: SystemTime) -> Option<String> {
        let failover = self.failover.as_ref()?;
        let primary = self.source.map_or("the primary source", Source::name);
        let mut words = format!(
            "via {} — {primary} {}",
            failover.via.name(),
            failure_words(&failover.primary_error)
        );
        if let Some(since) = failover.primary_failing_since {
            let failing = now.duration_since(since).unwrap_or_default();
            words.push_str(&format!(" for {}", minutes(failing)));
        }
        Some(words)
    }
}

/// A failure kind (`upstream.last_error`, `failover.primary_error`) in the words the page uses.
fn failure_words(kind: &str) -> &'static str {
    match kind {
        "connect" => "unreachable",
        "timeout" => "not answering",
        "rate_limited" => "rate limiting us",
        "http_other" => "refusing the request",
        "too_large" | "body" | "invalid_payload" => "answering nonsense",
        _ => "failing",
    }
}

/// "12 s", "4 min", "2 h", as the page counts.
fn minutes(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..90 => format!("{secs} s"),
        90..5_400 => format!("{} min", (secs + 30) / 60),
        _ => format!("{} h", (secs + 1_800) / 3_600),
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

    /// CoinGecko failing for 4 minutes: Coinbase serves USD, does not carry VEF, and the two
    /// disagree on EUR.
    fn failover_snapshot(now: SystemTime) -> ServerFrame {
        let rate = |name: &str, value, source, flag| {
            let mut rate = ratecast_protocol::Rate::new(name, "$", value, "fiat");
            (rate.source, rate.flag) = (source, flag);
            rate
        };
        ServerFrame::Snapshot(Snapshot {
            epoch: "e1".into(),
            seq: 7,
            ts: 1,
            source: Source::CoinGecko,
            stale: false,
            checked_at: Some(1),
            rates: [
                (
                    "usd".to_owned(),
                    rate("US Dollar", 40_000.0, Some(Source::Coinbase), None),
                ),
                (
                    "vef".to_owned(),
                    rate("Bolívar", 4_187.4, None, Some(UnitFlag::Stale)),
                ),
                (
                    "eur".to_owned(),
                    rate(
                        "Euro",
                        36_000.0,
                        Some(Source::Coinbase),
                        Some(UnitFlag::Held),
                    ),
                ),
            ]
            .into(),
            failover: Some(Failover {
                via: Source::Coinbase,
                primary_error: "connect".into(),
                primary_failing_since: Some(now - Duration::from_secs(4 * 60)),
            }),
            checksum: None,
        })
    }

    fn live_board(snapshot: ServerFrame) -> Board {
        let mut board = Board::new("ws://x".into(), vec![], None);
        board.link = Link::Live;
        board.apply(snapshot);
        board
    }

    fn drawn(board: &Board) -> String {
        let mut out = Vec::new();
        board.draw(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_failover_is_named_with_its_reason_and_each_unit_marked_with_a_legend() {
        let now = SystemTime::now();
        let board = live_board(failover_snapshot(now));
        assert_eq!(
            board.failover_words(now).as_deref(),
            Some("via Coinbase — CoinGecko unreachable for 4 min")
        );
        let screen = drawn(&board);
        assert!(
            screen.contains("live via Coinbase — CoinGecko unreachable for 4 min"),
            "{screen}"
        );
        for (code, mark) in [("USD", '*'), ("VEF", '~'), ("EUR", '!')] {
            let row = screen.lines().find(|l| l.contains(code)).unwrap();
            assert!(row.contains(&format!(" {mark} ")), "{code}: {row}");
        }
        assert!(
            screen.contains(
                "! held: sources disagree · * via Coinbase (live) · \
                 ~ not updated: Coinbase does not carry it"
            ),
            "{screen}"
        );
        assert_eq!(minutes(Duration::from_secs(30)), "30 s");
        assert_eq!(minutes(Duration::from_secs(2 * 3600)), "2 h");
    }

    #[test]
    fn the_primary_back_clears_the_failover_and_a_delta_clears_the_marks() {
        let now = SystemTime::now();
        let mut board = live_board(failover_snapshot(now));
        // The same value from the primary again: only the source changed.
        board.apply(delta("usd", 40_000.0));
        assert_eq!(Mark::of(&board.rows["usd"]), None);
        assert!(board.rows["usd"].changed_at.is_none());
        board.apply(ServerFrame::Status(ratecast_protocol::frames::Status {
            epoch: "e1".into(),
            ts: 3,
            source: Source::CoinGecko,
            stale: false,
            upstream: UpstreamState::default(),
            reason: None,
            checked_at: None,
            updated_at: None,
        }));
        assert_eq!(board.failover_words(now), None);
        let screen = drawn(&board);
        assert!(screen.contains("· live ·"), "{screen}");
        assert!(!screen.contains("unreachable"), "{screen}");
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
