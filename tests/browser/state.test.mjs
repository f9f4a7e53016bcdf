// Unit tests of the page's pure modules (no browser): the seq/resync rules and number formatting.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatAmount, formatPercent } from '../../web/assets/format.js';
import { RateState } from '../../web/assets/state.js';

const rate = (value, unit = '$', type = 'fiat') => ({ name: 'x', unit, value, type });

function snapshot(seq, rates, ts = Date.now()) {
  return { type: 'snapshot', seq, ts, source: 'coingecko', stale: false, rates };
}

test('deltas apply in order; duplicates are ignored and a gap on the full feed asks for a resync', () => {
  const state = new RateState();
  state.applySnapshot(snapshot(10, { btc: rate(1, 'BTC'), usd: rate(100), eur: rate(90) }));
  const delta = (seq, changed) => ({ type: 'delta', seq, ts: Date.now(), changed, removed: [] });
  const changes = state.applyDelta(delta(11, { usd: { ...rate(110), prev: 100 } }), { contiguous: true });
  assert.deepEqual([...changes.changed], [['usd', 100]]);
  assert.equal(state.applyDelta(delta(11, { usd: rate(120) }), { contiguous: true }), null);
  assert.equal(state.rates.get('usd').value, 110);
  assert.equal(state.applyDelta(delta(13, { usd: rate(130) }), { contiguous: true }), 'gap');
  assert.equal(state.seq, 11);
  // A filtered stream skips seqs by design.
  assert.ok(state.applyDelta(delta(13, { usd: rate(130) }), { contiguous: false }));
  assert.equal(state.seq, 13);
});

test('a snapshot replaces the table: vanished codes are removed, changes reported with prev', () => {
  const state = new RateState();
  state.applySnapshot(snapshot(1, { btc: rate(1), usd: rate(100), old: rate(5) }));
  const changes = state.applySnapshot(snapshot(2, { btc: rate(1), usd: rate(101), neu: rate(7) }));
  assert.deepEqual(changes.removed, ['old']);
  assert.deepEqual([...changes.changed].sort(), [['neu', null], ['usd', 100]]);
  assert.deepEqual([...state.rates.keys()].sort(), ['btc', 'neu', 'usd']);
});

test('ratios against a base, before and after a change', () => {
  const state = new RateState();
  state.applySnapshot(snapshot(1, { btc: rate(1), usd: rate(100), eur: rate(90) }));
  assert.equal(state.ratio('eur', 'usd'), 0.9);
  assert.equal(state.ratio('usd', 'usd'), 1);
  const changes = state.applyDelta(
    { seq: 2, ts: Date.now(), changed: { usd: { ...rate(120), prev: 100 } }, removed: [] },
    { contiguous: true },
  );
  assert.equal(state.previousRatio('eur', 'usd', changes), 0.9);
  assert.equal(state.ratio('eur', 'usd'), 0.75);
});

test('history series against a base merge both step series on their timestamps', () => {
  const t = Date.now() - 60_000;
  const state = new RateState();
  state.applySnapshot(snapshot(1, { btc: rate(1), usd: rate(100), eur: rate(90) }, t));
  state.setHistory('eur', [[t + 1000, 80], [t + 3000, 90]]);
  state.setHistory('usd', [[t + 2000, 100]]);
  assert.deepEqual(state.ratioSeries('eur', 'usd'), [[t + 2000, 0.8], [t + 3000, 0.9]]);
  // A base without history (BTC is 1 by definition) counts as constant.
  state.history.delete('btc');
  assert.deepEqual(state.ratioSeries('eur', 'btc'), [[t + 1000, 80], [t + 3000, 90]]);
  assert.deepEqual(state.ratioSeries('usd', 'usd'), []);
});

test('fetched history keeps the live points that arrived after it', () => {
  const state = new RateState();
  state.applySnapshot(snapshot(1, { btc: rate(1), usd: rate(100) }));
  const live = state.history.get('usd')[0];
  state.setHistory('usd', [[live[0] - 5000, 95]]);
  assert.deepEqual(state.history.get('usd'), [[live[0] - 5000, 95], live]);
});

test('numbers read sensibly from sats to gold, with the unit where it belongs', () => {
  assert.equal(formatAmount(587119903.705, '₫'), '₫587,119,904');
  assert.equal(formatAmount(100000000, 'sats'), '100,000,000\u202fsats');
  assert.equal(formatAmount(24711.871, '$'), '$24,711.87');
  assert.equal(formatAmount(13.411, 'XAU'), '13.41\u202fXAU');
  assert.equal(formatAmount(0.0000404661, 'BTC'), '0.00004047\u202fBTC');
  assert.equal(formatAmount(1 / 587119903.705, 'BTC'), '1.703E-9\u202fBTC');
  assert.equal(formatAmount(446097.215, 'R'), 'R446,097');
  assert.equal(formatPercent(0.01), '+1.00%');
  assert.equal(formatPercent(-0.0000123), '-0.0012%');
  assert.equal(formatPercent(0), '0.00%');
});
