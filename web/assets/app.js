// Wiring: reads the URL, feeds frames from the connection into the state, and the state's changes
// into the view (table in team mode, tiles in wall mode).

import { Connection } from './connection.js';
import { RateState, describeFailover, describeStatus, unitNote } from './state.js';
import { TableView, TileView, renderFreshness, renderStatus } from './render.js';

// A room that watches crypto reads prices: BTC and ETH first, then the usual fiat and gold.
const DEFAULT_WALL_SYMBOLS = ['btc', 'eth', 'eur', 'gbp', 'jpy', 'xau'];
const DEFAULT_QUOTE = 'usd';
const STORE_QUOTE = 'ratecast.quote';
const STORE_VIEW = 'ratecast.view';

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);
const wall = params.get('wall') === '1';

/** localStorage can be absent or refuse (private windows, kiosk policies): then nothing is kept. */
const stored = {
  get(key) {
    try {
      return localStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch {
      // the URL still carries the choice
    }
  },
};

// The currency prices are counted in: the URL first (`base=` is the old name, kept so wall
// URLs already on screens keep working), then the viewer's last choice, then USD.
let quote = (params.get('quote') ?? params.get('base') ?? stored.get(STORE_QUOTE) ?? DEFAULT_QUOTE).toLowerCase();
// 'price': what one unit costs in the quote ("ETH $1,698.06"); 'btc': what one BTC buys of each
// unit, CoinGecko's own view ("1 BTC = 14.553 ETH").
let perBtc = (params.get('view') ?? stored.get(STORE_VIEW)) === 'btc';

const listed = (params.get('symbols') ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean);
// The quote's own tile would always read 1; the default set shows BTC in its place.
const symbols = wall && listed.length === 0
  ? DEFAULT_WALL_SYMBOLS.filter((code) => code !== quote || perBtc)
  : listed;

const state = new RateState();
document.body.classList.toggle('wall', wall);
$('#tiles').hidden = !wall;
$('#team').hidden = wall;
$('#freshness').hidden = !wall;
const view = wall ? new TileView($('#tiles'), symbols) : new TableView($('#rates'), $('#value-label'));
const statusNodes = { bar: $('#status-bar'), status: $('#status'), age: $('#age'), demo: $('#demo') };
const freshnessNodes = { root: $('#freshness'), age: $('#fresh-age'), via: $('#fresh-via'), why: $('#fresh-why') };
let linkState = 'connecting';

const connection = new Connection({
  // The quote must be streamed too, even when it is not a tile; BTC is the per-BTC divisor.
  symbols: symbols.length ? [...new Set([...symbols, quote, 'btc'])] : [],
  resume: () => state.resumePoint(),
  onFrame,
  onState(next) {
    linkState = next;
    loadHistories();
    updateStatus();
  },
});

function onFrame(frame) {
  switch (frame.type) {
    case 'snapshot':
      show(state.applySnapshot(frame));
      // Shown even when wrong: the fresh snapshot then redraws exactly what differs.
      if (!state.verify(frame)) connection.restart();
      break;
    case 'delta': {
      // Filtered streams skip seqs by design; only the full feed can detect a gap.
      const changes = state.applyDelta(frame, { contiguous: symbols.length === 0 });
      if (changes === 'gap') connection.resync();
      else if (changes) {
        show(changes);
        // The copy is not the server's: start again from a snapshot, not from this seq.
        if (!state.verify(frame)) connection.restart();
      }
      break;
    }
    case 'heartbeat': {
      state.applyHeartbeat(frame);
      // Behind on the full feed, a seq that went backwards (a restarted server) or another
      // epoch (the server's stream started again): resync.
      const behind = symbols.length === 0 && frame.seq > state.seq;
      const otherEpoch = frame.epoch !== undefined && frame.epoch !== state.epoch;
      if (state.seq !== null && (behind || frame.seq < state.seq || otherEpoch)) connection.resync();
      break;
    }
    case 'status':
      state.applyStatus(frame);
      break;
  }
  // A unit's mark follows its source and flag, and a stale one names the serving source.
  for (const [code, cells] of view.cells) cells.setNote(unitNote(state.rates.get(code), state.failover));
  updateStatus();
}

/**
 * Every shown number is ratio(top, bottom) = "1 BOTTOM = x TOP", in TOP's unit:
 * a price is (quote, code), "1 ETH = $1,698.06"; the per-BTC view is (code, btc).
 */
function pair(code) {
  return perBtc ? [code, 'btc'] : [quote, code];
}

/** Shows ratio(top, bottom) in `cells`; returns it. */
function setValue(cells, top, bottom) {
  const ratio = state.ratio(top, bottom);
  const side = (code) => ({ code, unit: state.rates.get(code).unit });
  view.setValue(cells, ratio, side(top), side(bottom));
  return ratio;
}

/** The quote when the chosen one is not served (an unknown code): USD, else BTC, else any. */
function settleQuote() {
  if (state.rates.has(quote)) return;
  quote = [DEFAULT_QUOTE, 'btc'].find((code) => state.rates.has(code)) ?? state.rates.keys().next().value;
}

/** Puts one change set on screen: new cells, changed values (flashed), removed cells. */
function show(changes) {
  for (const code of changes.removed) view.remove(code);
  settleQuote();
  if (quote === undefined || (perBtc && !state.rates.has('btc'))) return;
  view.setMode({ quote, perBtc });
  for (const [code, rate] of state.rates) {
    let cells = view.cells.get(code);
    const added = !cells;
    if (added) cells = view.add(code, rate);
    const [top, bottom] = pair(code);
    if (!cells || !(added || changes.changed.has(top) || changes.changed.has(bottom))) continue;
    const ratio = setValue(cells, top, bottom);
    if (!added) cells.flash(state.previousRatio(top, bottom, changes), ratio);
    cells.setTrend(state.ratioSeries(top, bottom), Date.now());
  }
  view.reorder();
  if (!wall) fillQuoteSelect();
  loadHistories();
}

/** Redraws every value and trend for the current quote and view, without flashing. */
function redrawAll() {
  settleQuote();
  view.setMode({ quote, perBtc });
  for (const [code, cells] of view.cells) {
    const [top, bottom] = pair(code);
    if (!state.rates.has(top) || !state.rates.has(bottom)) continue;
    setValue(cells, top, bottom);
    cells.setTrend(state.ratioSeries(top, bottom), Date.now());
  }
  view.reorder();
}

const historyRequested = new Set();
let historyScheduled = false;

/** Fetches, in one request, the history of every shown code not fetched yet. Waits for data:
 * a server that holds none has no history either. */
function loadHistories() {
  if (historyScheduled || linkState !== 'live' || !state.hasData) return;
  historyScheduled = true;
  setTimeout(fetchHistories, 0);
}

/** On failure the codes are forgotten, so the next change set asks again. */
async function fetchHistories() {
  historyScheduled = false;
  // The quote and BTC are the other side of every shown ratio, tile or not.
  const codes = [...new Set([...view.cells.keys(), quote, 'btc'])].filter(
    (code) => state.rates.has(code) && !historyRequested.has(code),
  );
  if (!codes.length) return;
  codes.forEach((code) => historyRequested.add(code));
  const forget = () => codes.forEach((code) => historyRequested.delete(code));
  let points;
  try {
    const response = await fetch(`/api/v1/history?codes=${codes.map(encodeURIComponent).join(',')}`);
    if (response.status === 429) {
      const wait = Number(response.headers.get('Retry-After')) || 1;
      setTimeout(forget, wait * 1000);
      return;
    }
    if (!response.ok) throw new Error(`history: ${response.status}`);
    points = (await response.json()).points;
  } catch {
    forget();
    return;
  }
  let everything = false;
  for (const [code, series] of Object.entries(points)) {
    // A code removed while the request ran has nothing to draw.
    if (!state.rates.has(code)) continue;
    state.setHistory(code, series);
    if (code === quote || code === 'btc') everything = true;
    else if (view.cells.has(code) && pair(code).every((side) => state.rates.has(side))) {
      view.cells.get(code).setTrend(state.ratioSeries(...pair(code)), Date.now());
    }
  }
  if (everything) redrawAll();
}

function updateStatus() {
  const status = describeStatus(state, linkState, Date.now());
  document.body.dataset.status = status.state;
  // For whoever debugs a wall: how often this page's copy disagreed with the server's checksum.
  document.body.dataset.checksumMismatches = state.checksumMismatches;
  document.body.classList.toggle('no-data', !state.hasData);
  const failover = describeFailover(state, linkState, Date.now());
  renderStatus(statusNodes, status, state.source === 'demo', failover);
  if (wall) renderFreshness(freshnessNodes, status, failover);
}

/** Keeps the current view in the URL so it can be bookmarked or put on a screen. */
function remember(name, value, fallback) {
  const url = new URL(location.href);
  if (value && value !== fallback) url.searchParams.set(name, value);
  else url.searchParams.delete(name);
  history.replaceState(null, '', url);
}

const quoteSelect = $('#quote');
let quoteOptions = '';

function fillQuoteSelect() {
  const codes = [...state.rates.keys()].join();
  if (codes !== quoteOptions) {
    quoteOptions = codes;
    const groups = new Map();
    for (const [code, rate] of state.rates) {
      if (!groups.has(rate.type)) groups.set(rate.type, document.createElement('optgroup'));
      groups.get(rate.type).label = rate.type;
      groups.get(rate.type).append(new Option(`${code.toUpperCase()} — ${rate.name}`, code));
    }
    quoteSelect.replaceChildren(...groups.values());
  }
  quoteSelect.value = quote;
}

if (!wall) {
  const filter = $('#filter');
  const sort = $('#sort');
  const perBtcBox = $('#per-btc');
  filter.value = params.get('q') ?? '';
  sort.value = ['name', 'value', 'change'].includes(params.get('sort')) ? params.get('sort') : 'name';
  perBtcBox.checked = perBtc;
  quoteSelect.disabled = perBtc;
  view.setQuery(filter.value);
  view.setSort(sort.value);
  quoteSelect.addEventListener('change', () => {
    quote = quoteSelect.value;
    stored.set(STORE_QUOTE, quote);
    remember('base', null);
    remember('quote', quote, DEFAULT_QUOTE);
    redrawAll();
    loadHistories();
  });
  perBtcBox.addEventListener('change', () => {
    perBtc = perBtcBox.checked;
    // Per BTC, the quote plays no part: the select says so rather than looking ignored.
    quoteSelect.disabled = perBtc;
    stored.set(STORE_VIEW, perBtc ? 'btc' : 'price');
    remember('view', perBtc ? 'btc' : 'price', 'price');
    redrawAll();
  });
  filter.addEventListener('input', () => {
    view.setQuery(filter.value);
    remember('q', filter.value.trim(), '');
  });
  sort.addEventListener('change', () => {
    view.setSort(sort.value);
    remember('sort', sort.value, 'name');
  });
}

setInterval(updateStatus, 1000);
connection.start();
