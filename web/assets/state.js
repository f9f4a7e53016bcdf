// The client's copy of the feed: rates by code, seq, epoch, source, staleness and per-code
// history, and the checksum that proves the copy is the server's. Pure data, no DOM and no
// network, so the rules about seq, epochs and resyncs live in one place.

import { formatDuration } from './format.js';

const HISTORY_SPAN_MS = 24 * 3600 * 1000; // what /api/v1/history keeps
// A sparkline is a few hundred pixels wide: more points than this add nothing to see, and a
// feed of several changes a second would otherwise grow the page's memory for a whole day.
const HISTORY_MAX_POINTS = 720;

// A delta younger than this (server clock) counts as the server's word that the data is current.
const FRESH_DELTA_MS = 5000;

// CRC-32 as zlib, gzip and PNG compute it (IEEE 802.3, reflected polynomial 0xEDB88320).
const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});

/** CRC-32 of `bytes` (a Uint8Array), as an unsigned 32-bit number. */
export function crc32(bytes) {
  let c = 0xffffffff;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const utf8 = new TextEncoder();
const bits = new DataView(new ArrayBuffer(8));

/** The 16 lower-case hex digits of a value's IEEE-754 binary64 bits, big-endian (Rust's `f64::to_bits`). */
function valueBits(value) {
  bits.setFloat64(0, value);
  return bits.getBigUint64(0).toString(16).padStart(16, '0');
}

/** Byte order of two UTF-8 strings (JS's own string order compares UTF-16 units, which differs
 * from it past U+FFFF). */
function byteOrder(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * The checksum the server puts in every snapshot and delta (docs/protocol.md, *Checksum*):
 * CRC-32 of the UTF-8 lines `code\tname\tunit\ttype\t<value bits>\n`, one per unit in ascending
 * byte order of code; 0 for an empty table. A unit with a `source` or a `flag` has both before
 * the newline, each empty when absent (`\tcoinbase\t`, `\t\tstale`), so that the right numbers
 * from the wrong source do not pass.
 * @param {Map<string, {name: string, unit: string, value: number, type: string, source?: string, flag?: string}>} rates
 */
export function tableChecksum(rates) {
  const lines = [...rates].map(([code, { name, unit, type, value, source, flag }]) => ({
    code: utf8.encode(code),
    line: `${code}\t${name}\t${unit}\t${type}\t${valueBits(value)}${
      source || flag ? `\t${source ?? ''}\t${flag ?? ''}` : ''}\n`,
  }));
  lines.sort((a, b) => byteOrder(a.code, b.code));
  return crc32(utf8.encode(lines.map(({ line }) => line).join('')));
}

/** What one frame changed: code -> previous BTC value (null when the code is new), removals,
 * and the codes whose source or flag changed with the same value (their marks are redrawn, not
 * flashed). */
function emptyChanges() {
  return { changed: new Map(), removed: [], retagged: new Set() };
}

export class RateState {
  constructor() {
    /** code -> {name, unit, value, type, source?, flag?}; value is "how many of this unit one
     * BTC buys"; source (absent: the primary) and flag as the frame gave them. */
    this.rates = new Map();
    this.seq = null;
    /** The stream's epoch (opaque): `seq` compares only within it. */
    this.epoch = null;
    /** Frames whose checksum disagreed with this copy, since the page was opened. */
    this.checksumMismatches = 0;
    /** True from a mismatch until the next snapshot: the copy is known wrong, so a reconnect
     * must not resume from it. */
    this.diverged = false;
    this.source = null;
    /** {via, primary_error, primary_failing_since} while a fallback serves for the failing
     * primary (`source`); null otherwise. */
    this.failover = null;
    this.stale = false;
    this.upstream = null;
    /** The server's words for why the data is stale or missing, when it says. */
    this.reason = null;
    /** When the server's poller tries the upstream next (ms, server clock), when it says. */
    this.nextAttempt = null;
    /** Newest moment the data was known good (ms, server clock), for "updated 12 s ago": the
     * server's checked_at (its last successful poll) when it sends one, else the newest frame
     * time that carried good data. */
    this.dataTs = null;
    /** Browser clock minus server clock (ms, network delay included) from the newest frame, so
     * that a wall PC whose clock is off still shows the right age. */
    this.clockOffset = 0;
    /** code -> [[ts_ms, btc_value], ...], oldest first. */
    this.history = new Map();
  }

  /** A snapshot replaces everything: codes it lacks are removed, so after a resync all is consistent. */
  applySnapshot(frame) {
    const changes = emptyChanges();
    for (const code of [...this.rates.keys()]) {
      if (!Object.hasOwn(frame.rates, code)) this.#remove(code, changes);
    }
    for (const [code, rate] of Object.entries(frame.rates)) this.#put(code, rate, frame.ts, changes);
    this.seq = frame.seq;
    this.epoch = frame.epoch ?? null;
    this.diverged = false;
    this.#setSource(frame);
    this.failover = frame.failover ?? null;
    this.#checked(frame);
    // A snapshot's ts is when its data was published, stale or not (the server keeps it).
    this.#seen(frame.ts);
    return changes;
  }

  /**
   * Applies one delta. Returns null for a delta already applied (a resume may replay it) and
   * 'gap' when a full feed skipped a seq or the delta is of another epoch (its seq says nothing
   * of ours), in which case nothing is applied and a resync is due.
   */
  applyDelta(frame, { contiguous }) {
    if (this.epoch !== null && frame.epoch !== undefined && frame.epoch !== this.epoch) return 'gap';
    if (this.seq !== null && frame.seq <= this.seq) return null;
    if (contiguous && this.seq !== null && frame.seq !== this.seq + 1) return 'gap';
    const changes = emptyChanges();
    for (const [code, rate] of Object.entries(frame.changed)) this.#put(code, rate, frame.ts, changes);
    for (const code of frame.removed ?? []) this.#remove(code, changes);
    this.seq = frame.seq;
    this.#checked(frame);
    this.#seen(frame.ts);
    // A delta published just now comes from a poll that just succeeded: the data is current.
    // (Today's server clears its stale flag on such a delta without a status frame; a replayed
    // delta of a resume is old and proves nothing.)
    if (Date.now() - this.clockOffset - frame.ts < FRESH_DELTA_MS) this.stale = false;
    return changes;
  }

  /**
   * Checks the copy against the checksum a snapshot or delta carries, once it is applied (frames
   * without one pass: older servers, the earlier frames of a filtered replay). False on a
   * mismatch, which is counted; the copy then stays diverged until the next snapshot.
   */
  verify(frame) {
    if (!Number.isInteger(frame.checksum) || tableChecksum(this.rates) === frame.checksum) return true;
    this.checksumMismatches += 1;
    this.diverged = true;
    return false;
  }

  /** Where a reconnect resumes ({seq, epoch}), or null for a fresh snapshot: no data yet, or a
   * copy the checksum proved wrong. */
  resumePoint() {
    return this.seq === null || this.diverged ? null : { seq: this.seq, epoch: this.epoch };
  }

  /** Status frames say what the upstream is doing; their optional fields (reason, checked_at,
   * upstream.next_attempt) are used when the server sends them. */
  applyStatus(frame) {
    this.#setSource(frame);
    this.#clock(frame);
    this.upstream = frame.upstream ?? this.upstream;
    if (frame.upstream) this.failover = frame.upstream.failover ?? null;
    if (Object.hasOwn(frame, 'reason')) this.reason = frame.reason || null;
    const next = Date.parse(this.upstream?.next_attempt ?? '');
    this.nextAttempt = Number.isNaN(next) ? null : next;
    const lastSuccess = Date.parse(this.upstream?.last_success ?? '');
    if (!Number.isNaN(lastSuccess) && this.hasData) this.#seen(lastSuccess);
  }

  /** Heartbeats refresh the data's age (checked_at) between changes. */
  applyHeartbeat(frame) {
    this.#clock(frame);
  }

  /** True once a snapshot arrived: before it the page has nothing true to show. */
  get hasData() {
    return this.seq !== null;
  }

  /** Age of the data (ms) at browser time `now`, or null without data. */
  dataAge(now) {
    return this.dataTs === null ? null : Math.max(0, now - this.clockOffset - this.dataTs);
  }

  /** Time until the server's next upstream attempt (ms), or null when it did not say. */
  nextAttemptIn(now) {
    return this.nextAttempt === null ? null : Math.max(0, this.nextAttempt - (now - this.clockOffset));
  }

  /** Merges fetched history with the points the live feed appended while the fetch ran. */
  setHistory(code, points) {
    const fetched = points.filter(([, value]) => value > 0);
    const lastFetched = fetched.length ? fetched[fetched.length - 1][0] : -Infinity;
    const live = (this.history.get(code) ?? []).filter(([ts]) => ts > lastFetched);
    this.history.set(code, trim([...fetched, ...live]));
  }

  /** Value of `code` counted in `base`: "1 BASE = x CODE". */
  ratio(code, base) {
    return this.rates.get(code).value / this.rates.get(base).value;
  }

  /** The same ratio before `changes` were applied (for the % of a flash). */
  previousRatio(code, base, changes) {
    const before = (c) => (changes.changed.has(c) ? changes.changed.get(c) : this.rates.get(c).value);
    const top = before(code);
    const bottom = before(base);
    return top === null || bottom === null ? null : top / bottom;
  }

  /** History of ratio(code, base) as [[ts, value]]: both step series merged on their timestamps. */
  ratioSeries(code, base) {
    const top = this.history.get(code) ?? [];
    const bottom = this.history.get(base) ?? [];
    if (code === base) return [];
    // A base with no history (BTC itself is always 1) is taken as constant.
    if (bottom.length === 0) {
      const value = this.rates.get(base).value;
      return top.map(([ts, v]) => [ts, v / value]);
    }
    const series = [];
    let i = 0;
    let j = 0;
    let x = null;
    let y = null;
    while (i < top.length || j < bottom.length) {
      const ts = Math.min(top[i]?.[0] ?? Infinity, bottom[j]?.[0] ?? Infinity);
      while (i < top.length && top[i][0] === ts) x = top[i++][1];
      while (j < bottom.length && bottom[j][0] === ts) y = bottom[j++][1];
      if (x !== null && y !== null) series.push([ts, x / y]);
    }
    return series;
  }

  #put(code, rate, ts, changes) {
    const before = this.rates.get(code);
    const { name, unit, value, type, source, flag } = rate;
    // Absent fields stay absent: the checksum tells "no source" from any source.
    this.rates.set(code, { name, unit, value, type, ...(source && { source }), ...(flag && { flag }) });
    if (before && before.value === value) {
      if (before.source !== source || before.flag !== flag) changes.retagged.add(code);
      return;
    }
    changes.changed.set(code, before ? before.value : null);
    const points = this.history.get(code) ?? [];
    points.push([ts, value]);
    this.history.set(code, trim(points));
  }

  #remove(code, changes) {
    this.rates.delete(code);
    this.history.delete(code);
    changes.removed.push(code);
  }

  #setSource(frame) {
    this.source = frame.source ?? this.source;
    this.stale = Boolean(frame.stale);
  }

  /** Heartbeats and status frames are stamped as they are sent, so they set the clock offset
   * (a snapshot or a replayed delta carries the time of its data instead). */
  #clock(frame) {
    if (Number.isFinite(frame.ts)) this.clockOffset = Date.now() - frame.ts;
    this.#checked(frame);
  }

  /** checked_at is the server's last confirmation that the data is current. */
  #checked(frame) {
    if (Number.isFinite(frame.checked_at) && this.hasData) this.#seen(frame.checked_at);
  }

  #seen(ts) {
    this.dataTs = Math.max(ts, this.dataTs ?? 0);
  }
}

/**
 * Drops points older than the history span; past HISTORY_MAX_POINTS, every other point of the
 * older half goes, so the line keeps its first point (the window change) and its whole span.
 */
function trim(points) {
  const since = Date.now() - HISTORY_SPAN_MS;
  // A unit that has not moved for a day keeps its points: a flat line is still true.
  const start = points.findIndex(([ts]) => ts >= since);
  let kept = start > 0 ? points.slice(start) : points;
  if (kept.length > HISTORY_MAX_POINTS) {
    const half = kept.length >> 1;
    kept = [...kept.slice(0, half).filter((_, i) => i % 2 === 0), ...kept.slice(half)];
  }
  return kept;
}

// What a failure kind (upstream.last_error) means to someone reading the screen.
const FAILURE_WORDS = {
  connect: 'unreachable',
  timeout: 'not answering',
  rate_limited: 'rate limiting us',
  http_5xx: 'failing',
  http_other: 'refusing the request',
  too_large: 'answering too much',
  body: 'cutting its answer short',
  invalid_payload: 'answering nonsense',
};

// Sources by the names people know them by.
const SOURCE_NAMES = { coingecko: 'CoinGecko', coinbase: 'Coinbase', demo: 'the demo source' };

function sourceName(source, otherwise) {
  return SOURCE_NAMES[source] ?? otherwise;
}

function failureWords(kind) {
  return FAILURE_WORDS[kind] ?? 'failing';
}

/** Why, from the upstream fields alone (servers that send no `reason`): "CoinGecko unreachable
 * (connect), 3 failed tries". Null while the upstream is fine. */
function upstreamWhy(upstream, source) {
  if (!upstream || upstream.status === 'ok' || !upstream.last_error) return null;
  const who = sourceName(source, 'upstream');
  const words = failureWords(upstream.last_error);
  const tries = upstream.consecutive_failures > 1 ? `, ${upstream.consecutive_failures} failed tries` : '';
  return `${who} ${words} (${upstream.last_error})${tries}`;
}

/**
 * What the status line says, from the link and the data the page holds:
 * - connecting: no socket yet;
 * - waiting: the server answers but holds no data yet (why, and the next attempt, when known);
 * - live: data held, confirmed current by the server;
 * - stale: data held but not confirmed current (the server's flag, or no heartbeat): age, why;
 * - reconnecting: the socket dropped;
 * - demo: live data from the server's demo source.
 * Never live without data.
 *
 * @param {RateState} state
 * @param {'connecting'|'live'|'reconnecting'|'silent'} link the Connection's state
 * @param {number} now browser time (ms)
 * @returns {{state: string, why: string|null, ageMs: number|null, nextMs: number|null}}
 */
export function describeStatus(state, link, now) {
  const ageMs = state.dataAge(now);
  const nextMs = state.nextAttemptIn(now);
  const upstream = () => state.reason ?? upstreamWhy(state.upstream, state.source);
  if (link === 'connecting' || link === 'reconnecting') return { state: link, why: null, ageMs, nextMs: null };
  if (!state.hasData) {
    const why = link === 'silent' ? 'no heartbeat' : upstream();
    return { state: 'waiting', why, ageMs: null, nextMs };
  }
  if (link === 'silent') return { state: 'stale', why: 'no heartbeat', ageMs, nextMs: null };
  if (state.stale) return { state: 'stale', why: upstream() ?? 'no fresh data', ageMs, nextMs };
  return { state: state.source === 'demo' ? 'demo' : 'live', why: null, ageMs, nextMs: null };
}

/**
 * While a fallback serves live data for the failing primary: who serves, and why in words,
 * counting up from when the primary began failing: {via: 'Coinbase', why: 'CoinGecko
 * unreachable for 4 min'}. Null otherwise, and whenever the data is not live (a lost link or
 * stale data has its own words).
 *
 * @param {RateState} state
 * @param {'connecting'|'live'|'reconnecting'|'silent'} link
 * @param {number} now browser time (ms)
 */
export function describeFailover(state, link, now) {
  if (!state.failover || describeStatus(state, link, now).state !== 'live') return null;
  const { via, primary_error: error, primary_failing_since: since } = state.failover;
  const who = `${sourceName(state.source, 'the primary source')} ${failureWords(error)}`;
  const start = Date.parse(since ?? '');
  const why = Number.isNaN(start) ? who : `${who} for ${formatDuration(now - state.clockOffset - start)}`;
  return { via: sourceName(via, via), why };
}

/**
 * What a unit's mark says, or null for a live value from the primary:
 * - via: a fallback serves it ("Coinbase"): live data, a calm tag;
 * - stale: the serving source does not carry it, so it shows the primary's last value;
 * - held: the sources disagree, so it shows the last value they agreed on.
 * @param {{source?: string, flag?: string}} rate
 * @param {{via: string}|null} failover the state's
 */
export function unitNote(rate, failover) {
  if (rate.flag === 'held') return { kind: 'held', text: 'held — sources disagree' };
  if (rate.flag === 'stale') {
    const via = failover ? sourceName(failover.via, null) : null;
    return { kind: 'stale', text: via ? `not updated — ${via} does not carry it` : 'not updated' };
  }
  if (rate.source) return { kind: 'via', text: sourceName(rate.source, rate.source) };
  return null;
}
