// The wall while CoinGecko fails and Coinbase serves in its place (issue 22), in a real headless
// Chromium against the real `ratecast serve`, a fake CoinGecko and a fake Coinbase: the wall
// stays live and says so in words, tags each unit Coinbase serves, dims the ones it does not
// carry, and goes back to normal when CoinGecko answers again.

import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { after, before, test } from 'node:test';
import {
  REPO, fixtureRates, freePort, launchChromium, lowContrast, openPage, startFakeCoinbase, startFakeUpstream,
  startRatecast,
} from './support.mjs';

const FIXTURE = fixtureRates();
const SYMBOLS = 'btc,eth,eur,gbp,vef,xau';

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
