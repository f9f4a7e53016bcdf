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
    /// The value as displayed (raw, or converted to `--base`), and the one before its last change.
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
    base: Option<String>,
    rows: BTreeMap<String, Row>,
    pub seq: Option<u64>,
    data_ts: Option<u64>,
    source: Option<Source>,
    stale: bool,
    upstream: Option<UpstreamState>,
    pub link: Link,
    last_error: Option<String>,
}

impl Board {
    pub fn new(url: String, symbols: Vec<String>, base: Option<String>) -> Self {
        Self {
            url,
            symbols,
            base,
            rows: BTreeMap::new(),
            seq: None,
            data_ts: None,
            source: None,
            stale: false,
            upstream: None,
            link: Link::Connecting,
            last_error: None,
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

    /// Recomputes every displayed value; a change of the base moves every row, so flashes are
    /// decided on what is shown, not on which codes the frame named.
    fn reprice(&mut self) {
        let base = match &self.base {
            Some(code) => match self.rows.get(code) {
                Some(row) => Some(row.raw),
                None => return,
            },
            None => None,
        };
        let now = Instant::now();
        for row in self.rows.values_mut() {
            // Price of one unit in the base: (base per BTC) / (unit per BTC).
            let value = base.map_or(row.raw, |b| b / row.raw);
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
        let heading = match &self.base {
            Some(base) => format!("price in {base}"),
            None => "per 1 BTC".to_owned(),
        };
        line(
            out,
            Color::Reset,
            true,
            &format!("{:<8} {:<28} {:>22}  {}", "CODE", "NAME", heading, "CHANGE"),
        )?;

        let codes: Vec<&String> = if self.symbols.is_empty() {
            self.rows.keys().collect()
        } else {
            self.symbols
                .iter()
                .filter(|c| self.rows.contains_key(*c))
                .collect()
        };
        let room = usize::from(height).saturating_sub(4);
        let now = Instant::now();
        for code in codes.iter().take(room) {
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
            let unit = if self.base.is_some() { "" } else { &row.unit };
            let text = format!(
                "{:<8} {:<28} {:>18} {:<3}  {}",
                code,
                truncate(&row.name, 28),
                number(value),
                truncate(unit, 3),
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

/// Six significant digits: rates span 1e-6 (BTC per unit) to 1e9 (VND per BTC).
fn number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (5 - magnitude).clamp(0, 12) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratecast_protocol::frames::{ChangedRate, Delta, Snapshot};

    fn snapshot() -> ServerFrame {
        let rate = |name: &str, value| ratecast_protocol::Rate {
            name: name.into(),
            unit: "$".into(),
            value,
            kind: "fiat".into(),
        };
        ServerFrame::Snapshot(Snapshot {
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
        })
    }

    fn delta(code: &str, value: f64) -> ServerFrame {
        let changed = ChangedRate {
            name: "x".into(),
            unit: "$".into(),
            value,
            kind: "fiat".into(),
            prev: None,
        };
        ServerFrame::Delta(Delta {
            seq: 8,
            ts: 2,
            changed: [(code.to_owned(), changed)].into(),
            removed: vec![],
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
    fn a_base_change_moves_every_price() {
        let mut board = Board::new("ws://x".into(), vec![], Some("usd".into()));
        board.apply(snapshot());
        assert_eq!(board.rows["eur"].shown, Some(40_000.0 / 36_000.0));
        board.apply(delta("usd", 44_000.0));
        assert_eq!(board.rows["eur"].shown, Some(44_000.0 / 36_000.0));
        assert!(board.rows["eur"].changed_at.is_some());
        assert_eq!(board.rows["usd"].shown, Some(1.0));
    }

    #[test]
    fn numbers_keep_six_significant_digits() {
        assert_eq!(number(41_819.856), "41819.9");
        assert_eq!(number(0.000_023_912_3), "0.0000239123");
        assert_eq!(number(15_327_290.981), "15327291");
    }
}
