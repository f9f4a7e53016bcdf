// Unit tests of the page's pure modules (no browser): the seq/resync rules and number formatting.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatAge, formatAmount, formatPercent } from '../../web/assets/format.js';
import { RateState, crc32, describeFailover, describeStatus, tableChecksum, unitNote } from '../../web/assets/state.js';

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

test('the table checksum is the documented one (checksum.rs: the_documented_example_holds)', () => {
  const rates = new Map([
    ['usd', { name: 'US Dollar', unit: '$', value: 41819.856, type: 'fiat' }],
    ['bits', { name: 'Bits', unit: 'μBTC', value: 1_000_000, type: 'crypto' }],
  ]);
  const canonical = 'bits\tBits\tμBTC\tcrypto\t412e848000000000\nusd\tUS Dollar\t$\tfiat\t40e46b7b645a1cac\n';
  assert.equal(tableChecksum(rates), crc32(new TextEncoder().encode(canonical)));
  assert.equal(tableChecksum(rates), 0xe0c9ac11);
  assert.equal(tableChecksum(new Map()), 0);
  // zlib's check value of CRC-32.
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  // Codes in UTF-8 byte order, not UTF-16's: U+FF5A sorts before U+1F600 in bytes, after it in JS.
  const order = (codes) => tableChecksum(new Map(codes.map((c) => [c, rate(1)])));
  assert.equal(order(['\u{1F600}', '\uFF5A']), crc32(new TextEncoder().encode(
    `\uFF5A\tx\t$\tfiat\t3ff0000000000000\n\u{1F600}\tx\t$\tfiat\t3ff0000000000000\n`)));
});

test('the checksum with sources and flags is the documented one (checksum.rs: the_documented_example_with_sources_holds)', () => {
  const rates = new Map([
    ['usd', { name: 'US Dollar', unit: '$', value: 41819.856, type: 'fiat', source: 'coinbase' }],
    ['vef', { name: 'Venezuelan bolívar fuerte', unit: 'Bs.F', value: 4187.4, type: 'fiat', flag: 'stale' }],
  ]);
  const canonical = 'usd\tUS Dollar\t$\tfiat\t40e46b7b645a1cac\tcoinbase\t\n'
    + 'vef\tVenezuelan bolívar fuerte\tBs.F\tfiat\t40b05b6666666666\t\tstale\n';
  assert.equal(tableChecksum(rates), crc32(new TextEncoder().encode(canonical)));
  assert.equal(tableChecksum(rates), 0x43e10140);
});

test('a checksum mismatch is counted and the copy is not resumed from until a snapshot', () => {
  const state = new RateState();
  const rates = { usd: rate(100), eur: rate(90) };
  const sum = (r) => tableChecksum(new Map(Object.entries(r)));
  const first = { ...snapshot(10, rates), epoch: 'e1', checksum: sum(rates) };
  state.applySnapshot(first);
  assert.ok(state.verify(first));
  assert.deepEqual(state.resumePoint(), { seq: 10, epoch: 'e1' });
  const good = { type: 'delta', epoch: 'e1', seq: 11, ts: Date.now(), changed: { usd: { ...rate(110), prev: 100 } }, removed: [] };
  state.applyDelta({ ...good, checksum: sum({ ...rates, usd: rate(110) }) }, { contiguous: true });
  assert.ok(state.verify({ ...good, checksum: sum({ ...rates, usd: rate(110) }) }));
  const bad = { ...good, seq: 12, changed: { usd: { ...rate(120), prev: 110 } }, checksum: 1 };
  state.applyDelta(bad, { contiguous: true });
  assert.equal(state.verify(bad), false);
  assert.equal(state.checksumMismatches, 1);
  assert.equal(state.resumePoint(), null, 'a wrong copy is not resumed from');
  // Frames without a checksum (older servers, a filtered replay's earlier frames) pass.
  assert.ok(state.verify({ ...good, seq: 13, checksum: undefined }));
  state.applySnapshot({ ...snapshot(20, rates), epoch: 'e1', checksum: sum(rates) });
  assert.deepEqual(state.resumePoint(), { seq: 20, epoch: 'e1' });
  // A delta of another epoch is a gap, whatever its seq.
  assert.equal(state.applyDelta({ ...good, epoch: 'e2', seq: 21 }, { contiguous: false }), 'gap');
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
  // Five significant digits below 100 (issue 14: "$1.0716"); these were four before.
  assert.equal(formatAmount(13.411, 'XAU'), '13.411\u202fXAU');
  assert.equal(formatAmount(0.0000404661, 'BTC'), '0.000040466\u202fBTC');
  assert.equal(formatAmount(1 / 587119903.705, 'BTC'), '1.7032E-9\u202fBTC');
  assert.equal(formatAmount(446097.215, 'R'), 'R446,097');
  // Prices in USD from the recorded payload: value(usd) / value(code).
  const usd = 24711.871;
  assert.equal(formatAmount(usd / 14.553, '$'), '$1,698.06');
  assert.equal(formatAmount(usd / 23059.66, '$'), '$1.0716');
  assert.equal(formatAmount(usd / 13.411, '$'), '$1,842.66');
  assert.equal(formatAmount(0.0000123, '$'), '$0.0000123');
  assert.equal(formatAmount(41819, '$'), '$41,819.00');
  assert.equal(formatAmount(1, '$'), '$1');
  assert.equal(formatAge(12_400), '12 s ago');
  assert.equal(formatAge(4 * 60_000), '4 min ago');
  assert.equal(formatPercent(0.01), '+1.00%');
  assert.equal(formatPercent(-0.0000123), '-0.0012%');
  assert.equal(formatPercent(0), '0.00%');
});

/** A state after `frames`, with the link open. */
function stateAfter(...frames) {
  const state = new RateState();
  for (const frame of frames) {
    if (frame.type === 'snapshot') state.applySnapshot(frame);
    else if (frame.type === 'status') state.applyStatus(frame);
    else if (frame.type === 'heartbeat') state.applyHeartbeat(frame);
  }
  return state;
}

const down = {
  status: 'down', last_success: null, last_error: 'connect', consecutive_failures: 3,
};

test('status: connecting, then waiting for data (never live without it), with why and next try', () => {
  const now = Date.now();
  assert.equal(describeStatus(new RateState(), 'connecting', now).state, 'connecting');
  // An open link without data is not live, whatever the server says of its upstream.
  const empty = describeStatus(new RateState(), 'live', now);
  assert.deepEqual(empty, { state: 'waiting', why: null, ageMs: null, nextMs: null });
  // Today's server: the upstream fields only.
  const today = stateAfter({ type: 'status', ts: now, source: 'coingecko', stale: true, upstream: down });
  assert.deepEqual(describeStatus(today, 'live', now), {
    state: 'waiting', why: 'CoinGecko unreachable (connect), 3 failed tries', ageMs: null, nextMs: null,
  });
  // The contract of issue 14: the server's reason and the poller's next attempt.
  const next = new Date(now + 4000).toISOString();
  const told = stateAfter({
    type: 'status', ts: now, source: 'coingecko', stale: true, reason: 'CoinGecko unreachable: connect',
    updated_at: null, checked_at: null, upstream: { ...down, next_attempt: next },
  });
  const status = describeStatus(told, 'live', now);
  assert.equal(status.state, 'waiting');
  assert.equal(status.why, 'CoinGecko unreachable: connect');
  assert.ok(Math.abs(status.nextMs - 4000) < 50, `next try in ${status.nextMs} ms`);
  assert.equal(describeStatus(told, 'reconnecting', now).state, 'reconnecting');
});

test('status: live with data; stale with age and why; no heartbeat; demo', () => {
  const now = Date.now();
  const fresh = stateAfter(snapshot(5, { btc: rate(1), usd: rate(100) }, now - 3000));
  assert.equal(describeStatus(fresh, 'live', now).state, 'live');
  assert.ok(Math.abs(describeStatus(fresh, 'live', now).ageMs - 3000) < 50);
  assert.deepEqual(describeStatus(fresh, 'silent', now).why, 'no heartbeat');
  assert.equal(describeStatus(fresh, 'silent', now).state, 'stale');
  const stale = stateAfter(
    snapshot(5, { btc: rate(1), usd: rate(100) }, now - 60_000),
    { type: 'status', ts: now, source: 'coingecko', stale: true, reason: 'CoinGecko unreachable: timeout',
      upstream: { ...down, last_error: 'timeout' } },
  );
  const status = describeStatus(stale, 'live', now);
  assert.equal(status.state, 'stale');
  assert.equal(status.why, 'CoinGecko unreachable: timeout');
  assert.ok(Math.abs(status.ageMs - 60_000) < 50, `age ${status.ageMs}`);
  // Stale with a healthy upstream (the data outlived the threshold) still says why.
  const old = stateAfter({ ...snapshot(5, { btc: rate(1) }, now - 60_000), stale: true });
  assert.equal(describeStatus(old, 'live', now).why, 'no fresh data');
  const demo = stateAfter({ ...snapshot(5, { btc: rate(1) }, now), source: 'demo' });
  assert.equal(describeStatus(demo, 'live', now).state, 'demo');
});

test('data age counts from checked_at (heartbeats refresh it), on the server clock', () => {
  const now = Date.now();
  // The server's clock runs 10 min behind the browser's; its snapshot is an hour old in data
  // terms but was confirmed current 2 s ago.
  const skew = 10 * 60_000;
  const state = stateAfter(
    { ...snapshot(5, { btc: rate(1) }, now - skew - 3600_000), checked_at: now - skew - 2000 },
    { type: 'heartbeat', seq: 5, ts: now - skew, checked_at: now - skew - 2000 },
  );
  assert.ok(Math.abs(state.dataAge(now) - 2000) < 50, `age ${state.dataAge(now)}`);
  // The next heartbeat brings a newer confirmation.
  state.applyHeartbeat({ type: 'heartbeat', seq: 5, ts: now - skew, checked_at: now - skew - 1000 });
  assert.ok(Math.abs(state.dataAge(now) - 1000) < 50, `age ${state.dataAge(now)}`);
  // Without checked_at (today's server) the frame times stand in.
  const plain = stateAfter(snapshot(5, { btc: rate(1) }, now - 5000));
  assert.ok(Math.abs(plain.dataAge(now) - 5000) < 50, `age ${plain.dataAge(now)}`);
});

test('history stays bounded at several changes a second, keeping its first point', () => {
  const state = new RateState();
  const start = Date.now() - 3600_000;
  state.applySnapshot(snapshot(1, { btc: rate(1), usd: rate(100) }, start));
  for (let i = 1; i <= 5000; i++) {
    state.applyDelta({ seq: 1 + i, ts: start + i * 250, changed: { usd: rate(100 + (i % 7)) }, removed: [] },
      { contiguous: true });
  }
  const points = state.history.get('usd');
  assert.ok(points.length <= 720, `${points.length} points`);
  assert.deepEqual(points[0], [start, 100]);
  assert.equal(points[points.length - 1][0], start + 5000 * 250);
});

test('a fresh delta clears the stale flag; a replayed old one does not', () => {
  const now = Date.now();
  const state = stateAfter(
    snapshot(5, { btc: rate(1), usd: rate(100) }, now - 60_000),
    { type: 'status', ts: now, source: 'coingecko', stale: true, upstream: { ...down, status: 'ok' } },
  );
  const delta = (seq, ts) => ({ type: 'delta', seq, ts, changed: { usd: rate(100 + seq) }, removed: [] });
  state.applyDelta(delta(6, now - 50_000), { contiguous: true });
  assert.equal(describeStatus(state, 'live', now).state, 'stale');
  state.applyDelta(delta(7, now - 100), { contiguous: true });
  assert.equal(describeStatus(state, 'live', now).state, 'live');
});

const failover = (since) => ({ via: 'coinbase', primary_error: 'connect', primary_failing_since: since });

test('source and flag fold like the other fields: a snapshot sets them, a delta changes or clears them', () => {
  const state = new RateState();
  const usd = { ...rate(100), source: 'coinbase' };
  const vef = { ...rate(4187.4), flag: 'stale' };
  const first = { ...snapshot(10, { btc: rate(1, 'BTC'), usd, vef }), failover: failover(null) };
  state.applySnapshot(first);
  assert.equal(state.rates.get('usd').source, 'coinbase');
  assert.equal(state.rates.get('vef').flag, 'stale');
  assert.equal(state.rates.get('btc').source, undefined);
  assert.equal(state.failover.via, 'coinbase');
  assert.equal(tableChecksum(state.rates), tableChecksum(new Map(Object.entries({ btc: rate(1, 'BTC'), usd, vef }))));
  // A delta that changes only a unit's source or flag: the table follows, no value change reported.
  const delta = {
    type: 'delta', seq: 11, ts: Date.now(), removed: [],
    changed: { usd: { ...rate(100), prev: 100 }, vef: { ...rate(4187.4), flag: 'held', prev: 4187.4 } },
  };
  const changes = state.applyDelta(delta, { contiguous: true });
  assert.equal(state.rates.get('usd').source, undefined);
  assert.equal(state.rates.get('vef').flag, 'held');
  assert.deepEqual([...changes.changed], []);
  assert.deepEqual([...changes.retagged].sort(), ['usd', 'vef']);
  assert.equal(tableChecksum(state.rates), tableChecksum(new Map(Object.entries({
    btc: rate(1, 'BTC'), usd: rate(100), vef: { ...rate(4187.4), flag: 'held' },
  }))));
  // The primary answers again: a status frame without failover ends it.
  state.applyStatus({ type: 'status', ts: Date.now(), source: 'coingecko', stale: false, upstream: { status: 'ok' } });
  assert.equal(state.failover, null);
});

test('failover: "via Coinbase — CoinGecko unreachable for 4 min", counting from primary_failing_since', () => {
  const now = Date.now();
  const state = stateAfter(snapshot(5, { btc: rate(1) }, now));
  assert.equal(describeFailover(state, 'live', now), null);
  state.applyStatus({
    type: 'status', ts: now, source: 'coingecko', stale: false,
    upstream: { status: 'degraded', last_error: 'connect', failover: failover(new Date(now - 4 * 60_000).toISOString()) },
  });
  assert.equal(describeStatus(state, 'live', now).state, 'live');
  assert.deepEqual(describeFailover(state, 'live', now), { via: 'Coinbase', why: 'CoinGecko unreachable for 4 min' });
  assert.equal(describeFailover(state, 'live', now + 60_000).why, 'CoinGecko unreachable for 5 min');
  // Each failure kind in words; without a start time, no duration.
  const words = (kind, since = null) => {
    state.failover = { ...failover(since), primary_error: kind };
    return describeFailover(state, 'live', now).why;
  };
  assert.equal(words('timeout'), 'CoinGecko not answering');
  assert.equal(words('rate_limited', new Date(now - 30_000).toISOString()), 'CoinGecko rate limiting us for 30 s');
  assert.equal(words('http_5xx'), 'CoinGecko failing');
  assert.equal(words('invalid_payload'), 'CoinGecko answering nonsense');
  assert.equal(words('something_new'), 'CoinGecko failing');
  // Only while the data is live: a lost link or stale data says that instead.
  assert.equal(describeFailover(state, 'reconnecting', now), null);
  assert.equal(describeFailover(state, 'silent', now), null);
});

test('unit notes: a fallback names its source, stale and held say why in words', () => {
  const via = failover(null);
  assert.equal(unitNote(rate(1), via), null);
  assert.deepEqual(unitNote({ ...rate(1), source: 'coinbase' }, via), { kind: 'via', text: 'Coinbase' });
  assert.deepEqual(unitNote({ ...rate(1), flag: 'stale' }, via),
    { kind: 'stale', text: 'not updated — Coinbase does not carry it' });
  assert.deepEqual(unitNote({ ...rate(1), flag: 'stale' }, null), { kind: 'stale', text: 'not updated' });
  assert.deepEqual(unitNote({ ...rate(1), source: 'coinbase', flag: 'held' }, via),
    { kind: 'held', text: 'held — sources disagree' });
});
