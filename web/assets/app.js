// Wiring: reads the URL, feeds frames from the connection into the state, and the state's changes
// into the view (table in team mode, tiles in wall mode).

import { Connection } from './connection.js';
import { RateState } from './state.js';
import { TableView, TileView, renderStatus } from './render.js';

const DEFAULT_WALL_SYMBOLS = ['usd', 'eur', 'gbp', 'jpy', 'eth', 'xau'];

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);
const wall = params.get('wall') === '1';
const listed = (params.get('symbols') ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean);
const symbols = wall && listed.length === 0 ? DEFAULT_WALL_SYMBOLS : listed;
let base = (params.get('base') ?? 'btc').toLowerCase();

const state = new RateState();
document.body.classList.toggle('wall', wall);
$('#tiles').hidden = !wall;
$('#team').hidden = wall;
const view = wall ? new TileView($('#tiles'), symbols) : new TableView($('#rates'), $('#base-label'));
const statusNodes = { bar: $('#status-bar'), status: $('#status'), age: $('#age'), demo: $('#demo') };
let linkState = 'connecting';

const connection = new Connection({
  // The base must be streamed too, even when it is not a tile.
  symbols: symbols.length ? [...new Set([...symbols, base])] : [],
  since: () => state.seq,
  onFrame,
  onState(next) {
    linkState = next;
    if (next === 'live') loadHistories();
    updateStatus();
  },
});

function onFrame(frame) {
  switch (frame.type) {
    case 'snapshot':
      show(state.applySnapshot(frame));
      break;
    case 'delta': {
      // Filtered streams skip seqs by design; only the full feed can detect a gap.
      const changes = state.applyDelta(frame, { contiguous: symbols.length === 0 });
      if (changes === 'gap') connection.resync();
      else if (changes) show(changes);
      break;
    }
    case 'heartbeat': {
      // Behind on the full feed, or a seq that went backwards (a restarted server): resync.
      const behind = symbols.length === 0 && frame.seq > state.seq;
      if (state.seq !== null && (behind || frame.seq < state.seq)) connection.resync();
      break;
    }
    case 'status':
      state.applyStatus(frame);
      break;
  }
  updateStatus();
}

/** Puts one change set on screen: new cells, changed values (flashed), removed cells. */
function show(changes) {
  for (const code of changes.removed) view.remove(code);
  if (!state.rates.has(base)) base = state.rates.has('btc') ? 'btc' : state.rates.keys().next().value;
  if (base === undefined) return;
  view.setBase(base, state.rates.get(base));
  const everything = changes.changed.has(base);
  for (const [code, rate] of state.rates) {
    let cells = view.cells.get(code);
    const added = !cells;
    if (added) cells = view.add(code, rate);
    if (!cells || !(added || everything || changes.changed.has(code))) continue;
    const ratio = state.ratio(code, base);
    view.setValue(cells, ratio, rate.unit);
    if (!added) cells.flash(state.previousRatio(code, base, changes), ratio);
    cells.setTrend(state.ratioSeries(code, base), Date.now());
  }
  view.reorder();
  if (!wall) fillBaseSelect();
  loadHistories();
}

/** Redraws every value and trend against the current base, without flashing. */
function redrawAll() {
  view.setBase(base, state.rates.get(base));
  for (const [code, cells] of view.cells) {
    view.setValue(cells, state.ratio(code, base), state.rates.get(code).unit);
    cells.setTrend(state.ratioSeries(code, base), Date.now());
  }
  view.reorder();
}

const historyRequested = new Set();
let historyScheduled = false;

/** Fetches, in one request, the history of every shown code not fetched yet. Waits for a live
 * link: a server that is just starting has no history yet. */
function loadHistories() {
  if (historyScheduled || linkState !== 'live') return;
  historyScheduled = true;
  setTimeout(fetchHistories, 0);
}

/** On failure the codes are forgotten, so the next change set asks again. */
async function fetchHistories() {
  historyScheduled = false;
  const codes = [...new Set([...view.cells.keys(), base])].filter(
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
  let baseChanged = false;
  for (const [code, series] of Object.entries(points)) {
    // A code removed while the request ran has nothing to draw.
    if (!state.rates.has(code)) continue;
    state.setHistory(code, series);
    if (code === base) baseChanged = true;
    else view.cells.get(code)?.setTrend(state.ratioSeries(code, base), Date.now());
  }
  if (baseChanged) redrawAll();
}

function updateStatus() {
  let shown = linkState === 'silent' ? 'stale' : linkState;
  let detail = linkState === 'silent' ? 'no heartbeat' : null;
  if (shown === 'live' && state.stale) {
    shown = 'stale';
    // The server flags stale data when the upstream is down or the data outlived its threshold.
    const upstream = state.upstream?.status;
    detail = upstream && upstream !== 'ok' ? `upstream ${upstream}` : 'no fresh data';
  }
  const ageMs = shown === 'live' || state.dataTs === null ? null : Date.now() - state.dataTs;
  renderStatus(statusNodes, { state: shown, detail, ageMs, demo: state.source === 'demo' });
}

/** Keeps the current view in the URL so it can be bookmarked or put on a screen. */
function remember(name, value, fallback) {
  const url = new URL(location.href);
  if (value && value !== fallback) url.searchParams.set(name, value);
  else url.searchParams.delete(name);
  history.replaceState(null, '', url);
}

const baseSelect = $('#base');
let baseOptions = '';

function fillBaseSelect() {
  const codes = [...state.rates.keys()].join();
  if (codes === baseOptions) return;
  baseOptions = codes;
  const groups = new Map();
  for (const [code, rate] of state.rates) {
    if (!groups.has(rate.type)) groups.set(rate.type, document.createElement('optgroup'));
    groups.get(rate.type).label = rate.type;
    groups.get(rate.type).append(new Option(`${code.toUpperCase()} — ${rate.name}`, code));
  }
  baseSelect.replaceChildren(...groups.values());
  baseSelect.value = base;
}

if (!wall) {
  const filter = $('#filter');
  const sort = $('#sort');
  filter.value = params.get('q') ?? '';
  sort.value = ['name', 'value', 'change'].includes(params.get('sort')) ? params.get('sort') : 'name';
  view.setQuery(filter.value);
  view.setSort(sort.value);
  baseSelect.addEventListener('change', () => {
    base = baseSelect.value;
    remember('base', base, 'btc');
    redrawAll();
    loadHistories();
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
