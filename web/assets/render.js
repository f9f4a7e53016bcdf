// Rendering: the team table and the wall tiles. Each code owns a few cells that are updated in place,
// so a delta touches only the cells of the codes it changed.

import { formatAge, formatAmount, formatDuration, formatPercent } from './format.js';
import { createSparkline, drawSparkline } from './sparkline.js';

const FLASH_MS = 1200;
const TYPE_ORDER = ['crypto', 'fiat', 'commodity'];
const TYPE_LABEL = { crypto: 'Crypto', fiat: 'Fiat', commodity: 'Commodities' };

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Known types in TYPE_ORDER, then any other type CoinGecko adds, alphabetically. */
function compareTypes(a, b) {
  const rank = (type) => (TYPE_ORDER.includes(type) ? TYPE_ORDER.indexOf(type) : TYPE_ORDER.length);
  return rank(a) - rank(b) || a.localeCompare(b);
}

/** Value, flash, and trend updates shared by table rows and tiles. */
class Cells {
  constructor(code, name, root) {
    this.code = code;
    this.name = name;
    this.root = root;
    this.amount = element('span', 'amount');
    this.marker = element('span', 'marker');
    this.change = element('span', 'window');
    /** Where the value came from or why it is held back, when not live from the primary. */
    this.note = element('span', 'note');
    this.spark = createSparkline();
    this.ratio = null;
    this.windowChange = null;
    this.timer = null;
  }

  setValue(ratio, unit) {
    this.ratio = ratio;
    const text = formatAmount(ratio, unit);
    if (this.amount.textContent !== text) this.amount.textContent = text;
  }

  /** Colour, arrow and % for about a second; the stylesheet animates it unless motion is reduced. */
  flash(before, after) {
    if (before === null || before === after || !(before > 0)) return;
    const up = after > before;
    clearTimeout(this.timer);
    this.root.classList.remove('flash', 'up', 'down');
    void this.root.offsetWidth; // restart the CSS animation on back-to-back changes
    this.root.classList.add('flash', up ? 'up' : 'down');
    this.marker.textContent = `${up ? '▲' : '▼'} ${formatPercent(after / before - 1)}`;
    this.timer = setTimeout(() => {
      this.root.classList.remove('flash', 'up', 'down');
      this.marker.textContent = '';
    }, FLASH_MS);
  }

  /** `note`: state.js's unitNote, or null. The root's data-note styles the whole cell or tile
   * (a fallback's tag is calm: its data is live; stale and held dim the value). */
  setNote(note) {
    setText(this.note, note?.text ?? '');
    if (note) this.root.dataset.note = note.kind;
    else delete this.root.dataset.note;
  }

  setTrend(series, now) {
    drawSparkline(this.spark, series, now);
    const first = series[0]?.[1];
    this.windowChange = first > 0 && this.ratio !== null ? this.ratio / first - 1 : null;
    this.change.textContent = this.windowChange === null ? '–' : formatPercent(this.windowChange);
    this.change.classList.toggle('up', this.windowChange > 0);
    this.change.classList.toggle('down', this.windowChange < 0);
  }
}

/** Team mode: one table, a tbody per type, rows sortable and filterable. */
export class TableView {
  constructor(table, valueLabel) {
    this.table = table;
    this.valueLabel = valueLabel;
    this.groups = new Map();
    this.cells = new Map();
    this.sort = 'name';
    this.query = '';
  }

  /** The value column's heading says what its numbers are. */
  setMode({ quote, perBtc }) {
    const label = perBtc ? '1 BTC =' : `Price in ${quote.toUpperCase()}`;
    if (this.valueLabel.textContent !== label) this.valueLabel.textContent = label;
  }

  /** `top`/`bottom`: {code, unit}; the cell reads "1 BOTTOM = ratio TOP". */
  setValue(cells, ratio, top) {
    cells.setValue(ratio, top.unit);
  }

  add(code, rate) {
    const row = element('tr');
    row.dataset.code = code;
    const cells = new Cells(code, rate.name, row);
    const head = element('th');
    head.scope = 'row';
    head.append(element('span', 'name', rate.name), ' ', element('abbr', 'code', code.toUpperCase()), cells.note);
    const value = element('td', 'value');
    value.append(cells.amount, cells.marker);
    const change = element('td', 'change');
    change.append(cells.change);
    const trend = element('td', 'trend');
    trend.append(cells.spark);
    row.append(head, element('td', 'unit', rate.unit), value, change, trend);
    row.hidden = !this.#matches(cells);
    this.#group(rate.type).append(row);
    this.cells.set(code, cells);
    return cells;
  }

  remove(code) {
    const cells = this.cells.get(code);
    if (!cells) return;
    const group = cells.root.parentElement;
    cells.root.remove();
    this.cells.delete(code);
    this.#refreshGroup(group);
  }

  setSort(sort) {
    this.sort = sort;
    for (const th of this.table.tHead.rows[0].cells) {
      if (th.dataset.sort) th.setAttribute('aria-sort', th.dataset.sort === sort ? sortDirection(sort) : 'none');
    }
    this.reorder();
  }

  setQuery(query) {
    this.query = query.trim().toLowerCase();
    for (const cells of this.cells.values()) cells.root.hidden = !this.#matches(cells);
    for (const group of this.groups.values()) this.#refreshGroup(group);
  }

  /** Moves rows only when the order actually changed. */
  reorder() {
    const key = {
      name: (a, b) => a.name.localeCompare(b.name),
      value: (a, b) => b.ratio - a.ratio,
      change: (a, b) => (b.windowChange ?? -Infinity) - (a.windowChange ?? -Infinity),
    }[this.sort];
    for (const group of this.groups.values()) {
      const rows = [...group.rows].slice(1);
      const sorted = rows.map((row) => this.cells.get(row.dataset.code)).sort(key).map((c) => c.root);
      if (sorted.some((row, i) => row !== rows[i])) group.append(...sorted);
    }
  }

  #matches(cells) {
    return !this.query || cells.code.includes(this.query) || cells.name.toLowerCase().includes(this.query);
  }

  #group(type) {
    if (!this.groups.has(type)) {
      const body = element('tbody');
      body.dataset.type = type;
      const heading = element('th', null, TYPE_LABEL[type] ?? type);
      heading.scope = 'colgroup';
      heading.colSpan = 5;
      const row = element('tr', 'group');
      row.append(heading);
      body.append(row);
      const next = [...this.table.tBodies].find((other) => compareTypes(other.dataset.type, type) > 0);
      this.table.insertBefore(body, next ?? null);
      this.groups.set(type, body);
    }
    return this.groups.get(type);
  }

  #refreshGroup(group) {
    group.hidden = ![...group.rows].slice(1).some((row) => !row.hidden);
  }
}

function sortDirection(sort) {
  return sort === 'name' ? 'ascending' : 'descending';
}

/** Width of `text` in digit widths, roughly: separators and spaces are about half a digit, so
 * "$24,711.87" (9) and "$0.0074568" (9.5) get the same, largest size that fits. */
function textWidth(text) {
  let width = 0;
  for (const char of text) width += /[.,\s]/u.test(char) ? 0.5 : 1;
  return width;
}

/** Wall mode: one large tile per chosen symbol, in the order given, laid out to fill the screen. */
export class TileView {
  constructor(container, symbols) {
    this.container = container;
    this.symbols = symbols;
    this.cells = new Map();
    // The freshness line under the tiles grows into a banner when the data is stale: the tiles
    // follow their container's size, not just the window's.
    new ResizeObserver(() => this.#layout()).observe(container);
  }

  /** Each tile says what it counts ("1 ETH ="), so there is no shared heading to change. */
  setMode() {}

  /** Price large; the change and the sparkline beneath; the inverse small at the foot. */
  add(code, rate) {
    if (!this.symbols.includes(code)) return null;
    const tile = element('article', 'tile');
    tile.dataset.code = code;
    const cells = new Cells(code, rate.name, tile);
    cells.inverse = element('p', 'inverse');
    const head = element('header');
    head.append(element('h2', 'code', code.toUpperCase()), element('p', 'name', rate.name));
    cells.per = element('span', 'per');
    // "1 USD =" on the left, the unit's note (its source, or why it is held back) on the right.
    const subhead = element('p', 'subhead');
    subhead.append(cells.per, cells.note);
    const value = element('p', 'value');
    value.append(cells.amount, cells.marker);
    const movement = element('div', 'movement');
    movement.append(cells.change, cells.spark);
    tile.append(head, subhead, value, movement, cells.inverse);
    this.cells.set(code, cells);
    const order = (c) => this.symbols.indexOf(c);
    const next = [...this.container.children].find((t) => order(t.dataset.code) > order(code));
    this.container.insertBefore(tile, next ?? null);
    this.#layout();
    return cells;
  }

  remove(code) {
    this.cells.get(code)?.root.remove();
    this.cells.delete(code);
    this.#layout();
  }

  /** "1 ETH =" / "$1,698.06" large / "1 USD = 0.00058891 ETH" small. */
  setValue(cells, ratio, top, bottom) {
    cells.setValue(ratio, top.unit);
    const per = `1 ${bottom.code.toUpperCase()} =`;
    if (cells.per.textContent !== per) cells.per.textContent = per;
    cells.amount.parentElement.style.setProperty('--chars', Math.max(textWidth(cells.amount.textContent), 4));
    const inverse = `1 ${top.code.toUpperCase()} = ${formatAmount(1 / ratio, bottom.unit)}`;
    if (cells.inverse.textContent !== inverse) cells.inverse.textContent = inverse;
  }

  /** Tiles keep the order of ?symbols=. */
  reorder() {}

  /** Picks the column count that gives the largest tiles of roughly 16:10 on this screen. */
  #layout() {
    const count = this.container.children.length || 1;
    const { clientWidth: width, clientHeight: height } = this.container;
    let best = 1;
    let bestSize = 0;
    for (let cols = 1; cols <= count; cols++) {
      const rows = Math.ceil(count / cols);
      const size = Math.min(width / cols / 1.6, height / rows);
      if (size > bestSize) [best, bestSize] = [cols, size];
    }
    this.container.style.setProperty('--cols', best);
    this.container.style.setProperty('--rows', Math.ceil(count / best));
  }
}

const STATUS_LABEL = {
  connecting: 'Connecting…',
  waiting: 'Waiting for first data',
  live: 'Live',
  stale: 'Stale',
  reconnecting: 'Reconnecting…',
  demo: 'Demo',
};

/** "updated 12 s ago · next try in 4 s": the parts of a status that count time. */
function timing({ ageMs, nextMs }) {
  const parts = [];
  if (ageMs !== null) parts.push(`updated ${formatAge(ageMs)}`);
  if (nextMs !== null) parts.push(`next try in ${formatDuration(nextMs)}`);
  return parts.join(' · ');
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * The status line: state and why are the only live region (they change rarely); the ticking age
 * beside it is not announced. Live and demo data need no age in the bar; live data from a
 * fallback (`failover`: state.js's describeFailover) says so, "Live — via Coinbase", and why
 * beside it, "CoinGecko unreachable for 4 min".
 */
export function renderStatus(nodes, status, demo, failover) {
  const label = STATUS_LABEL[status.state];
  const why = status.why ?? (failover && `via ${failover.via}`);
  setText(nodes.status, why ? `${label} — ${why}` : label);
  nodes.bar.dataset.state = status.state;
  nodes.bar.classList.toggle('failover', Boolean(failover));
  const calm = status.state === 'live' || status.state === 'demo';
  setText(nodes.age, calm ? failover?.why ?? '' : timing(status));
  nodes.demo.hidden = !demo;
}

/**
 * The wall's data age in large type, "updated 12 s ago", and while a fallback serves, where the
 * data comes from, "via Coinbase — CoinGecko unreachable for 4 min" (calm: the data is live);
 * a banner readable across the room when the data is not confirmed current (stale, link lost)
 * or there is none yet.
 */
export function renderFreshness(nodes, status, failover) {
  const calm = status.state === 'live' || status.state === 'demo';
  nodes.root.dataset.state = status.state;
  nodes.root.classList.toggle('alarm', !calm);
  setText(nodes.via, failover ? `via ${failover.via} — ${failover.why}` : '');
  if (calm) {
    setText(nodes.age, status.ageMs === null ? '' : `updated ${formatAge(status.ageMs)}`);
    setText(nodes.why, '');
    return;
  }
  const when = timing(status);
  setText(nodes.age, when ? `${STATUS_LABEL[status.state]} — ${when}` : STATUS_LABEL[status.state]);
  setText(nodes.why, status.why ?? '');
}
