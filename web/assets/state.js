// The client's copy of the feed: rates by code, seq, source, staleness and per-code history.
// Pure data, no DOM and no network, so the rules about seq and resyncs live in one place.

const HISTORY_SPAN_MS = 24 * 3600 * 1000; // what /api/v1/history keeps
const HISTORY_MAX_POINTS = 3000; // a day of 30 s polls

/** What one frame changed: code -> previous BTC value (null when the code is new), and removals. */
function emptyChanges() {
  return { changed: new Map(), removed: [] };
}

export class RateState {
  constructor() {
    /** code -> {name, unit, value, type}; value is "how many of this unit one BTC buys". */
    this.rates = new Map();
    this.seq = null;
    this.source = null;
    this.stale = false;
    this.upstream = null;
    /** Newest moment the data was known good (ms), for "data 3 min old". */
    this.dataTs = null;
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
    this.#setSource(frame);
    if (!frame.stale) this.#seen(frame.ts);
    return changes;
  }

  /**
   * Applies one delta. Returns null for a delta already applied (a resume may replay it) and
   * 'gap' when a full feed skipped a seq, in which case nothing is applied and a resync is due.
   */
  applyDelta(frame, { contiguous }) {
    if (this.seq !== null && frame.seq <= this.seq) return null;
    if (contiguous && this.seq !== null && frame.seq !== this.seq + 1) return 'gap';
    const changes = emptyChanges();
    for (const [code, rate] of Object.entries(frame.changed)) this.#put(code, rate, frame.ts, changes);
    for (const code of frame.removed ?? []) this.#remove(code, changes);
    this.seq = frame.seq;
    this.#seen(frame.ts);
    return changes;
  }

  applyStatus(frame) {
    this.#setSource(frame);
    this.upstream = frame.upstream ?? this.upstream;
    const lastSuccess = Date.parse(this.upstream?.last_success ?? '');
    if (!Number.isNaN(lastSuccess)) this.#seen(lastSuccess);
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
    const { name, unit, value, type } = rate;
    this.rates.set(code, { name, unit, value, type });
    if (before && before.value === value) return;
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

  #seen(ts) {
    this.dataTs = Math.max(ts, this.dataTs ?? 0);
  }
}

function trim(points) {
  const since = Date.now() - HISTORY_SPAN_MS;
  const start = Math.max(points.findIndex(([ts]) => ts >= since), points.length - HISTORY_MAX_POINTS, 0);
  return start > 0 ? points.slice(start) : points;
}
