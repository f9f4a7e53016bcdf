// The wall while CoinGecko fails and Coinbase serves in its place (issue 22), in a real headless
// Chromium against the real `ratecast serve`, a fake CoinGecko and a fake Coinbase: the wall
// stays live and says so in words, tags each unit Coinbase serves, dims the ones it does not
// carry, and goes back to normal when CoinGecko answers again.

import assert from 'node:assert/strict';
import http from 'node:http';
import { resolve } from 'node:path';
import { after, before, test } from 'node:test';
import {
  REPO, fixtureRates, freePort, launchChromium, lowContrast, openPage, startFakeUpstream, startRatecast,
} from './support.mjs';

const FIXTURE = fixtureRates();
// What Coinbase does not carry of CoinGecko's units (VEF is gone from its list; bits and sats
// are CoinGecko's own).
const NOT_ON_COINBASE = new Set(['vef', 'bits', 'sats']);
const SYMBOLS = 'btc,eth,eur,gbp,vef,xau';

/**
 * Coinbase's GET /v2/exchange-rates?currency=BTC on 127.0.0.1:0: one BTC in each unit, upper-case
 * codes, values as decimal strings, from the same fixture as the fake CoinGecko (so the
 * cross-check finds nothing to hold).
 */
async function startFakeCoinbase() {
  const rates = Object.fromEntries(
    Object.entries(FIXTURE)
      .filter(([code]) => !NOT_ON_COINBASE.has(code))
      .map(([code, { value }]) => [code.toUpperCase(), String(value)]),
  );
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (req.method !== 'GET' || url.pathname !== '/v2/exchange-rates' || url.searchParams.get('currency') !== 'BTC') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ data: { currency: 'BTC', rates } }));
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((done) => server.close(done)),
  };
}

const problems = [];
let coingecko;
let coinbase;
let server;
let browser;

before(async () => {
  coingecko = await startFakeUpstream(structuredClone(FIXTURE));
  coinbase = await startFakeCoinbase();
  server = await startRatecast({
    port: await freePort(),
    upstreamUrl: coingecko.url,
    extraArgs: ['--upstream', 'coingecko,coinbase', '--coinbase-url', coinbase.url, '--failover-after', '1s'],
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.kill();
  await coinbase?.close();
  await coingecko?.close();
});

const WAIT = { timeout: 20_000 };
const note = (wall, code) => wall.evaluate((c) => {
  const tile = document.querySelector(`.tile[data-code="${c}"]`);
  return { kind: tile.dataset.note ?? null, text: tile.querySelector('.note').textContent };
}, code);

test('CoinGecko down: the wall stays live via Coinbase, says why, tags and dims units; CoinGecko back: all clear', async () => {
  const wall = await openPage(browser, `${server.url}/?wall=1&symbols=${SYMBOLS}`, problems, {
    viewport: { width: 1920, height: 1080 },
  });
  await wall.waitForFunction(() => document.querySelectorAll('.tile .amount:not(:empty)').length === 6, null, WAIT);
  assert.equal(await wall.locator('#fresh-via').textContent(), '');
  assert.deepEqual(await note(wall, 'eur'), { kind: null, text: '' });

  coingecko.failing = true; // 503: CoinGecko "failing" (http_5xx)
  try {
    await wall.waitForFunction(
      () => /^via Coinbase — CoinGecko failing( for \d+ s)?$/.test(document.querySelector('#fresh-via').textContent),
      null,
      WAIT,
    );
    await wall.waitForFunction(() => document.querySelector('.tile[data-code="vef"]').dataset.note === 'stale', null, WAIT);
    assert.deepEqual(await note(wall, 'eur'), { kind: 'via', text: 'Coinbase' });
    assert.deepEqual(await note(wall, 'eth'), { kind: 'via', text: 'Coinbase' });
    // Coinbase rounds gold to whole ounces: the mapping leaves it out (docs/sources.md).
    assert.deepEqual(await note(wall, 'xau'), { kind: 'stale', text: 'not updated — Coinbase does not carry it' });
    assert.deepEqual(await note(wall, 'vef'), { kind: 'stale', text: 'not updated — Coinbase does not carry it' });
    // Live, not stale: a source confirms the table, past --stale-after (5 s) too.
    await new Promise((done) => setTimeout(done, 6000));
    assert.equal(await wall.evaluate(() => document.body.dataset.status), 'live');
    assert.ok(!(await wall.locator('#freshness').evaluate((n) => n.classList.contains('alarm'))), 'no stale banner');
    assert.match(await wall.locator('#status').textContent(), /^Live — via Coinbase$/);
    assert.match(await wall.locator('#fresh-via').textContent(), /^via Coinbase — CoinGecko failing for \d+ s$/);
    const size = await wall.$eval('#fresh-via', (n) => parseFloat(getComputedStyle(n).fontSize));
    assert.ok(size >= 40, `the failover line is readable across a room: ${size}px`);
    assert.deepEqual(
      await lowContrast(wall, ['#fresh-via', '.tile[data-note="via"] .note', '.tile[data-note="stale"] .note']),
      [],
      'WCAG AA contrast',
    );
    // Calm: nothing on the wall animates for the failover.
    assert.equal(await wall.evaluate(() => document.getAnimations().filter((a) => !a.animationName?.startsWith('flash')).length), 0);
    const fit = await wall.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]);
    assert.deepEqual(fit, [1920, 1080], 'the failover line pushes no tile off the screen');
    // The page's checksum (with the units' sources and flags) agrees with the real server's.
    assert.equal(await wall.evaluate(() => document.body.dataset.checksumMismatches), '0');
    await wall.screenshot({ path: resolve(REPO, 'docs/screenshots/wall-failover-1920x1080.png') });
  } finally {
    coingecko.failing = false;
  }

  await wall.waitForFunction(() => document.querySelector('#fresh-via').textContent === '', null, WAIT);
  await wall.waitForFunction(() => !document.querySelector('.tile[data-note]'), null, WAIT);
  assert.equal(await wall.locator('#status').textContent(), 'Live');
  assert.equal(await wall.evaluate(() => document.body.dataset.checksumMismatches), '0');
  await wall.context().close();
});

test('no console errors, uncaught exceptions or CSP violations', () => {
  assert.deepEqual(problems.map((p) => p.text), []);
});
