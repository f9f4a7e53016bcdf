// The wall display in a real headless Chromium, against the real `ratecast serve` and a fake
// CoinGecko whose values the tests change to drive deltas. Tests run in order and share one server.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { formatAmount } from '../../web/assets/format.js';
import {
  REPO, fixtureRates, freePort, launchChromium, lowContrast, openPage, parseAmount,
  startFakeUpstream, startRatecast, valueOf,
} from './support.mjs';

const SCREENSHOTS = resolve(REPO, 'docs/screenshots');
const FIXTURE = fixtureRates();
const CODES = Object.keys(FIXTURE);
// Chromium itself logs each refused WebSocket handshake while the server is down; the page cannot
// suppress these, so they are allowed inside the restart window and nowhere else.
const RESTART_NOISE = /WebSocket connection to .* failed|net::ERR_CONNECTION_REFUSED/;

const problems = [];
let restartWindow = null;
let upstream;
let port;
let server;
let browser;
let page; // team mode, shared by the tests that follow each other

/** Sets a unit's value upstream to `factor` × its fixture value. */
function move(code, factor) {
  upstream.rates[code].value = FIXTURE[code].value * factor;
  return upstream.rates[code].value;
}

/** Waits until the server's REST view holds `value` for `code` (one poll is 200 ms). */
async function serverHas(code, value) {
  for (let i = 0; i < 100; i++) {
    const body = await (await fetch(`${server.url}/api/v1/rates/${code}`)).json();
    if (body.rate?.value === value) return;
    await new Promise((done) => setTimeout(done, 100));
  }
  throw new Error(`server never saw ${code} = ${value}`);
}

/** A few rounds of small moves on several units, so the screenshots have history to show. */
async function wander(rounds) {
  const codes = ['eth', 'ltc', 'xrp', 'eur', 'gbp', 'jpy', 'aud', 'cad', 'chf', 'xau'];
  for (let round = 1; round <= rounds; round++) {
    for (const [i, code] of codes.entries()) move(code, 1 + 0.004 * Math.sin(round * 1.7 + i));
    await serverHas('xau', upstream.rates.xau.value);
  }
}

/** The server's seq: unchanged across a recovery means no delta was sent to bring it about. */
async function serverSeq() {
  return (await (await fetch(`${server.url}/api/v1/rates`)).json()).seq;
}

/** A counter from the server's /metrics, 0 when it has not been incremented yet. */
async function metric(name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

async function waitForStatus(target, pattern, timeout = 15_000) {
  await target.waitForFunction(
    (source) => new RegExp(source).test(document.querySelector('#status').textContent),
    pattern.source,
    { timeout },
  );
}

/** Price of one `code` in `quote` as the fake upstream has it now (CoinGecko's values are per BTC). */
function price(code, quote = 'usd') {
  return upstream.rates[quote].value / upstream.rates[code].value;
}

/** Font size (px) of the first element matching `selector`. */
function fontSize(target, selector) {
  return target.$eval(selector, (node) => parseFloat(getComputedStyle(node).fontSize));
}

async function waitForRows(target, count = CODES.length) {
  await target.waitForFunction((n) => document.querySelectorAll('tr[data-code]').length === n, count);
}

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  upstream = await startFakeUpstream(structuredClone(FIXTURE));
  port = await freePort();
  server = await startRatecast({ port, upstreamUrl: upstream.url });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.kill();
  await upstream?.close();
});

test('the page is served with a strict CSP and revalidated by ETag', async () => {
  const response = await fetch(`${server.url}/`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/html/);
  const csp = response.headers.get('content-security-policy');
  assert.ok(csp, 'Content-Security-Policy header');
  for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"]) {
    assert.ok(csp.includes(directive), `${directive} in ${csp}`);
  }
  assert.doesNotMatch(csp, /unsafe/);
  const etag = response.headers.get('etag');
  assert.ok(etag);
  assert.equal(response.headers.get('cache-control'), 'no-cache');
  const again = await fetch(`${server.url}/`, { headers: { 'if-none-match': etag } });
  assert.equal(again.status, 304);
  const script = await fetch(`${server.url}/assets/app.js`);
  assert.match(script.headers.get('content-type'), /^text\/javascript/);
});

test('every currency renders, grouped by type, priced in USD by default; per BTC as a toggle', async () => {
  // A change before the page opens reaches it only through /api/v1/history.
  await serverHas('gbp', move('gbp', 1.02));
  page = await openPage(browser, `${server.url}/`, problems, { viewport: { width: 1280, height: 800 } });
  await waitForRows(page);
  await waitForStatus(page, /^Live$/);
  for (const code of CODES) {
    const row = page.locator(`tbody[data-type="${FIXTURE[code].type}"] tr[data-code="${code}"]`);
    assert.equal(await row.locator('.name').textContent(), FIXTURE[code].name, code);
  }
  const groups = await page.$$eval('#rates tbody', (bodies) => bodies.map((b) => b.dataset.type));
  assert.deepEqual(groups, ['crypto', 'fiat', 'commodity']);
  // Issue 14: what one unit costs in USD, from the recorded payload (the headline used to be the
  // per-BTC value, "1 BTC = …"; that view is now the toggle below).
  assert.equal(await page.locator('#value-label').textContent(), 'Price in USD');
  assert.equal(await page.inputValue('#quote'), 'usd');
  assert.equal(await valueOf(page, 'eth'), '$1,698.06');
  assert.equal(await valueOf(page, 'eur'), '$1.0716');
  assert.equal(await valueOf(page, 'xau'), '$1,842.66');
  assert.equal(await valueOf(page, 'btc'), '$24,711.87');
  assert.equal(await valueOf(page, 'usd'), '$1');
  assert.equal(await valueOf(page, 'jpy'), '$0.0074568');
  assert.equal(await valueOf(page, 'sats'), '$0.00024712');
  assert.equal(await valueOf(page, 'vnd'), '$0.00004209');
  assert.equal(await valueOf(page, 'gbp'), formatAmount(price('gbp'), '$'));
  assert.ok(await page.locator('#demo').isHidden(), 'no DEMO badge for CoinGecko data');
  // Accessibility: one live region (the status), a captioned table with row headers.
  assert.deepEqual(await page.$$eval('[aria-live]', (nodes) => nodes.map((n) => n.id)), ['status']);
  assert.equal(await page.locator('#rates caption').count(), 1);
  assert.equal(await page.locator('tr[data-code] > th[scope="row"]').count(), CODES.length);
  // The history loads: the window change of gbp comes from the point before the page opened
  // (GBP per BTC +2 %, so the pound's price in dollars fell by 1 - 1/1.02).
  await page.waitForFunction(() => document.querySelector('tr[data-code="gbp"] .window').textContent === '-1.96%');
  const texts = ['h1', '#status', 'caption', 'label', 'select', 'thead th', 'tr.group th', 'tbody th .name',
    'tbody th .code', 'td.unit', 'td.value .amount', '.window.down'];
  assert.deepEqual(await lowContrast(page, texts), [], 'WCAG AA contrast');
  // The per-BTC view: CoinGecko's own numbers, "1 BTC = …", kept in the URL.
  await page.check('#per-btc');
  await page.waitForFunction(() => document.querySelector('#value-label').textContent === '1 BTC =');
  assert.equal(await valueOf(page, 'usd'), '$24,711.87');
  assert.equal(await valueOf(page, 'sats'), '100,000,000\u202fsats');
  assert.equal(await valueOf(page, 'vnd'), '₫587,119,904');
  assert.equal(await valueOf(page, 'xau'), '13.411\u202fXAU'); // five significant digits now (was 13.41)
  assert.equal(await valueOf(page, 'btc'), '1\u202fBTC');
  assert.equal(await page.locator('tr[data-code="gbp"] .window').textContent(), '+2.00%');
  assert.deepEqual(await lowContrast(page, ['.window.up']), [], 'WCAG AA contrast');
  assert.equal(new URL(page.url()).searchParams.get('view'), 'btc');
});

test('wall tiles: the price in USD large, change and sparkline beneath, the inverse small', async () => {
  const wall = await openPage(browser, `${server.url}/?wall=1&symbols=eth,eur,xau`, problems, {
    viewport: { width: 1920, height: 1080 },
  });
  await wall.waitForFunction(() => document.querySelectorAll('.tile .amount:not(:empty)').length === 3);
  const tile = (code, part) => wall.locator(`.tile[data-code="${code}"] ${part}`).textContent();
  assert.equal(await tile('eth', '.amount'), '$1,698.06');
  assert.equal(await tile('eur', '.amount'), '$1.0716');
  assert.equal(await tile('xau', '.amount'), '$1,842.66');
  assert.equal(await tile('eth', '.per'), '1 ETH =');
  assert.equal(await tile('eth', '.inverse'), '1 USD = 0.00058891\u202fETH');
  assert.equal(await tile('eur', '.inverse'), '1 USD = €0.93314');
  const box = (part) => wall.locator(`.tile[data-code="eth"] ${part}`).boundingBox();
  const [value, change, spark, inverse] = await Promise.all(['.value', '.window', '.spark', '.inverse'].map(box));
  assert.ok(change.y >= value.y + value.height - 1 && spark.y >= value.y + value.height - 1, 'change and sparkline beneath the price');
  assert.ok(inverse.y >= spark.y + spark.height - 1, 'the inverse at the foot');
  const [big, small] = [await fontSize(wall, '.tile .value'), await fontSize(wall, '.tile .inverse')];
  assert.ok(big >= 4 * small, `price ${big}px, inverse ${small}px`);
  await wall.context().close();
});

test('a changed value updates and flashes in its direction; unchanged values stay still', async () => {
  const sparkBefore = await page.getAttribute('tr[data-code="usd"] polyline', 'points');
  move('usd', 1.01);
  move('eur', 0.99);
  const flashing = await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('tr.flash')];
    return rows.length >= 2 && rows.map((r) => `${r.dataset.code}:${r.classList.contains('up') ? 'up' : 'down'}`).sort();
  });
  assert.deepEqual(await flashing.jsonValue(), ['eur:down', 'usd:up']);
  assert.equal(await valueOf(page, 'usd'), '$24,958.99');
  assert.equal(await valueOf(page, 'eur'), '€22,829.06');
  assert.equal(await page.locator('tr[data-code="usd"] .marker').textContent(), '▲ +1.00%');
  assert.equal(await page.locator('tr[data-code="eur"] .marker').textContent(), '▼ -1.00%');
  assert.equal(await page.locator('tr[data-code="gbp"] .marker').textContent(), '');
  const animated = await page.$eval('tr[data-code="usd"] .amount', (node) => node.getAnimations().length);
  assert.ok(animated > 0, 'the flash is animated');
  // The sparkline and window change are extended from the delta.
  assert.notEqual(await page.getAttribute('tr[data-code="usd"] polyline', 'points'), sparkBefore);
  assert.equal(await page.locator('tr[data-code="usd"] .window').textContent(), '+1.00%');
  // About a second later the flash is over and nothing else flashed meanwhile.
  await page.waitForFunction(() => document.querySelectorAll('tr.flash').length === 0, null, { timeout: 3000 });
});

test('with prefers-reduced-motion a change shows the marker without animation', async () => {
  const still = await openPage(browser, `${server.url}/?view=btc`, problems, { reducedMotion: 'reduce' });
  await waitForRows(still);
  move('jpy', 1.005);
  await still.waitForSelector('tr[data-code="jpy"].flash.up');
  assert.equal(await still.locator('tr[data-code="jpy"] .marker').textContent(), '▲ +0.50%');
  assert.equal(await still.$eval('tr[data-code="jpy"] .amount', (node) => node.getAnimations().length), 0);
  await still.context().close();
});

test('the quote switch reprices every row and is remembered in the URL and local storage', async () => {
  await page.uncheck('#per-btc');
  await page.waitForFunction(() => document.querySelector('#value-label').textContent === 'Price in USD');
  assert.equal(new URL(page.url()).searchParams.get('view'), null, 'the default view leaves the URL');
  // In the price view a unit whose per-BTC value falls has a price that rises, and flashes so.
  move('eth', 1 / 1.01);
  await page.waitForSelector('tr[data-code="eth"].flash.up');
  assert.equal(await page.locator('tr[data-code="eth"] .marker').textContent(), '▲ +1.00%');
  assert.equal(await valueOf(page, 'eth'), formatAmount(price('eth'), '$'));
  await page.selectOption('#quote', 'eur');
  await page.waitForFunction(() => document.querySelector('#value-label').textContent === 'Price in EUR');
  assert.equal(await valueOf(page, 'eur'), '€1');
  assert.equal(await valueOf(page, 'usd'), formatAmount(price('usd', 'eur'), '€'));
  const eth = parseAmount(await valueOf(page, 'eth'));
  assert.ok(Math.abs(eth / price('eth', 'eur') - 1) < 1e-4, `ETH in EUR: ${eth}`);
  assert.equal(new URL(page.url()).searchParams.get('quote'), 'eur');
  assert.equal(await page.evaluate(() => localStorage.getItem('ratecast.quote')), 'eur');
  await page.reload();
  await waitForRows(page);
  assert.equal(await page.inputValue('#quote'), 'eur');
  assert.equal(await valueOf(page, 'eur'), '€1');
  // Remembered without the URL too: a plain / in the same browser opens in EUR.
  const again = await page.context().newPage();
  await again.goto(`${server.url}/`);
  await again.waitForFunction(() => document.querySelector('#value-label').textContent === 'Price in EUR');
  await again.close();
  await page.selectOption('#quote', 'usd');
  await page.waitForFunction(() => document.querySelector('#value-label').textContent === 'Price in USD');
  assert.equal(new URL(page.url()).searchParams.get('quote'), null, 'the default quote leaves the URL');
  assert.equal(await page.evaluate(() => localStorage.getItem('ratecast.quote')), 'usd');
});

test('team mode filters and sorts', async () => {
  await page.fill('#filter', 'pound');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-code]:not([hidden])').length === 1);
  assert.ok(await page.locator('tr[data-code="gbp"]').isVisible());
  assert.ok(await page.locator('tbody[data-type="crypto"]').isHidden(), 'empty groups hide');
  await page.fill('#filter', '');
  await page.selectOption('#sort', 'value');
  const values = await page.$$eval('tbody[data-type="fiat"] tr[data-code] .amount', (cells) => cells.map((c) => c.textContent));
  const numbers = values.map(parseAmount);
  assert.deepEqual(numbers, [...numbers].sort((a, b) => b - a), 'fiat sorted by value, highest first');
  assert.equal(new URL(page.url()).searchParams.get('sort'), 'value');
  await page.selectOption('#sort', 'name');
});

test('wall mode renders large tiles for exactly the chosen symbols, without scrollbars', async () => {
  await wander(6);
  // The wall URL of old (`base=usd`) still works: `base` is read as the quote.
  const wall = await openPage(browser, `${server.url}/?wall=1&symbols=usd,eur,gbp,eth&base=usd`, problems, {
    viewport: { width: 1920, height: 1080 },
  });
  await wall.waitForFunction(() => document.querySelectorAll('.tile .amount:not(:empty)').length === 4);
  await waitForStatus(wall, /^Live$/);
  assert.deepEqual(await wall.$$eval('.tile', (tiles) => tiles.map((t) => t.dataset.code)), ['usd', 'eur', 'gbp', 'eth']);
  assert.ok(await wall.locator('#rates').isHidden());
  // Issue 14: the tile is the euro's price in dollars (it was the euros one dollar buys).
  const eur = parseAmount(await wall.locator('.tile[data-code="eur"] .amount').textContent());
  assert.ok(Math.abs(eur / price('eur') - 1) < 1e-4, `tile EUR ${eur}`);
  // The default wall, as in the README: BTC in the quote's place.
  await wall.goto(`${server.url}/?wall=1`);
  await wall.waitForFunction(() => document.querySelectorAll('.tile .amount:not(:empty)').length === 6);
  assert.deepEqual(await wall.$$eval('.tile', (tiles) => tiles.map((t) => t.dataset.code)),
    ['btc', 'eth', 'eur', 'gbp', 'jpy', 'xau']);
  for (const [width, height, minFont] of [[1920, 1080, 80], [3840, 2160, 160]]) {
    await wall.setViewportSize({ width, height });
    const fit = await wall.evaluate(() => ({
      scroll: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
      tiles: [...document.querySelectorAll('.tile')].map((t) => t.getBoundingClientRect().bottom),
      font: Math.min(...[...document.querySelectorAll('.tile .value')].map((v) => parseFloat(getComputedStyle(v).fontSize))),
    }));
    assert.deepEqual(fit.scroll, [width, height], `no scrollbars at ${width}x${height}`);
    assert.ok(fit.tiles.every((bottom) => bottom <= height), 'tiles inside the screen');
    assert.ok(fit.font >= minFont, `values readable across a room at ${width}x${height}: ${fit.font}px`);
    assert.match(await wall.locator('#fresh-age').textContent(), /^updated \d+ s ago$/);
    const tileTexts = ['.tile .code', '.tile .name', '.tile .per', '.tile .amount', '.tile .inverse', '.tile .window', '#fresh-age'];
    assert.deepEqual(await lowContrast(wall, tileTexts), [], 'WCAG AA contrast');
    // A new value for each size, waited for by its text: the flash of the last one may still run.
    move('eth', 1.012 ** (width / 1920));
    await wall.waitForFunction(
      (expected) => document.querySelector('.tile[data-code="eth"].flash .amount')?.textContent === expected,
      formatAmount(price('eth'), '$'),
    );
    await wall.screenshot({ path: resolve(SCREENSHOTS, `wall-${width}x${height}.png`) });
  }
  await wall.context().close();
});

test('the wall shows the data age in large type, a stale banner across the room past the threshold', async () => {
  await serverHas('eur', move('eur', 0.999)); // fresh data (see the note on the server's clock below)
  const wall = await openPage(browser, `${server.url}/?wall=1`, problems, { viewport: { width: 1920, height: 1080 } });
  await wall.waitForFunction(() => document.querySelectorAll('.tile .amount:not(:empty)').length === 6);
  await wall.waitForFunction(() => /^updated \d+ s ago$/.test(document.querySelector('#fresh-age').textContent));
  const calm = await fontSize(wall, '#fresh-age');
  assert.ok(calm >= 40, `age readable across a room: ${calm}px`);
  assert.ok(!(await wall.locator('#freshness').evaluate((n) => n.classList.contains('alarm'))));
  const seq = await serverSeq();
  upstream.failing = true;
  try {
    await wall.waitForSelector('#freshness.alarm', { timeout: 20_000 });
    assert.match(await wall.locator('#fresh-age').textContent(), /^Stale — updated \d+ s ago/);
    assert.match(await wall.locator('#fresh-why').textContent(), /\S/, 'the banner says why');
    const banner = await fontSize(wall, '#fresh-age');
    assert.ok(banner >= 65, `banner readable across a room: ${banner}px`);
    assert.deepEqual(await lowContrast(wall, ['#fresh-age', '#fresh-why']), [], 'WCAG AA contrast');
    // The age keeps counting with no frame needed.
    const first = await wall.locator('#fresh-age').textContent();
    await wall.waitForFunction((before) => document.querySelector('#fresh-age').textContent !== before, first);
    const fit = await wall.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]);
    assert.deepEqual(fit, [1920, 1080], 'the banner pushes no tile off the screen');
    await wall.screenshot({ path: resolve(SCREENSHOTS, 'wall-stale-1920x1080.png') });
  } finally {
    upstream.failing = false;
  }
  // CoinGecko's usual case: it answers again with the same numbers. The server counts the age
  // from the last confirmation, so the banner clears with no delta at all.
  await wall.waitForSelector('#freshness:not(.alarm)', { timeout: 20_000 });
  assert.match(await wall.locator('#fresh-age').textContent(), /^updated \d+ s ago$/);
  assert.equal(await serverSeq(), seq, 'recovered on an unchanging upstream: no delta sent');
  await wall.context().close();
});

test('team mode and phone width screenshots, no sideways scrolling on a phone', async () => {
  await page.locator('#filter').blur();
  await wander(4);
  move('eth', 1.004);
  await page.waitForSelector('tr[data-code="eth"].flash');
  await page.screenshot({ path: resolve(SCREENSHOTS, 'team-1280x800.png') });
  const phone = await openPage(browser, `${server.url}/`, problems, {
    viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2,
  });
  await waitForRows(phone);
  assert.equal(await phone.evaluate(() => document.documentElement.scrollWidth), 390);
  await phone.screenshot({ path: resolve(SCREENSHOTS, 'phone-390x844.png') });
  await phone.context().close();
});

test('an outage longer than --stale-after, then the same rates again: live with no delta', async () => {
  upstream.failing = true;
  await waitForStatus(page, /^Stale — \S/, 20_000);
  assert.match(await page.locator('#age').textContent(), /^updated \d+ (s|min) ago/);
  // Past the server's 5 s --stale-after, so fresh data must come from a confirmation, not a change.
  await new Promise((done) => setTimeout(done, 6000));
  const seq = await serverSeq();
  upstream.failing = false;
  await waitForStatus(page, /^Live$/, 20_000);
  assert.equal(await page.locator('#age').textContent(), '');
  assert.equal(await serverSeq(), seq, 'recovered on an unchanging upstream: no delta sent');
});

test('units that appear or vanish upstream are added to or removed from the table', async () => {
  const history = page.waitForResponse((r) => r.url().endsWith('/api/v1/history?codes=zzz'));
  upstream.rates.zzz = { name: 'Test Index', unit: 'ZZZ', value: 42, type: 'index' };
  await page.waitForSelector('tbody[data-type="index"] tr[data-code="zzz"]');
  assert.equal((await history).status(), 200, 'a new unit gets its history');
  delete upstream.rates.vef;
  await page.waitForSelector('tr[data-code="vef"]', { state: 'detached' });
  const groups = await page.$$eval('#rates tbody', (bodies) => bodies.map((b) => b.dataset.type));
  assert.deepEqual(groups, ['crypto', 'fiat', 'commodity', 'index'], 'a new type goes after the known ones');
  delete upstream.rates.zzz;
  upstream.rates.vef = structuredClone(FIXTURE.vef);
  await page.waitForSelector('tr[data-code="vef"]');
  await page.waitForSelector('tr[data-code="zzz"]', { state: 'detached' });
  assert.ok(await page.locator('tbody[data-type="index"]').isHidden(), 'an empty group hides');
});

test('a frozen server: stale (no heartbeat), then the page reconnects and resumes with ?since=', async () => {
  const resumed = await metric('ratecast_ws_resumes_total{result="replayed"}');
  server.signal('SIGSTOP');
  try {
    await waitForStatus(page, /^Stale — no heartbeat$/);
    assert.match(await page.locator('#age').textContent(), /^updated \d+ (s|min) ago$/);
    move('chf', 1 / 1.015); // polled only once the server runs again; a dearer franc
    await waitForStatus(page, /^Reconnecting/);
  } finally {
    server.signal('SIGCONT');
  }
  await waitForStatus(page, /^Live$/);
  await page.waitForSelector('tr[data-code="chf"].flash.up');
  assert.equal(await metric('ratecast_ws_resumes_total{result="replayed"}'), resumed + 1);
});

test('server killed and restarted on the same port: reconnecting, then live and caught up', async () => {
  restartWindow = { from: Date.now() };
  await server.kill();
  await waitForStatus(page, /^Reconnecting/);
  const gbp = move('gbp', 1.03); // changes while the server is away
  await new Promise((done) => setTimeout(done, 1000));
  server = await startRatecast({ port, upstreamUrl: upstream.url });
  await waitForStatus(page, /^Live$/, 40_000);
  restartWindow.to = Date.now();
  // The page shows prices in USD since the quote test.
  await page.waitForFunction(
    (expected) => document.querySelector('tr[data-code="gbp"] .amount').textContent === expected,
    formatAmount(upstream.rates.usd.value / gbp, '$'),
  );
  await waitForRows(page);
  // And the stream flows again after the resync: fewer dollars per BTC, a cheaper bitcoin.
  move('usd', 0.98);
  await page.waitForSelector('tr[data-code="btc"].flash.down');
});

test('every checksum of the real server verified, across resumes and the restart', async () => {
  assert.equal(await page.evaluate(() => document.body.dataset.checksumMismatches), '0');
});

test('DEMO DATA is shown when the source is the demo', async () => {
  const demo = await startRatecast({ port: await freePort(), demo: true });
  try {
    const demoPage = await openPage(browser, `${demo.url}/?wall=1&symbols=usd,eth`, problems);
    await demoPage.waitForFunction(() => !document.querySelector('#demo').hidden);
    assert.equal(await demoPage.locator('#demo').textContent(), 'DEMO DATA');
    await waitForStatus(demoPage, /^Demo$/);
    await demoPage.context().close();
  } finally {
    await demo.kill();
  }
});

test('no console errors, uncaught exceptions or CSP violations', () => {
  const inRestart = (p) => restartWindow && p.at >= restartWindow.from && p.at <= restartWindow.to;
  const unexpected = problems.filter((p) => !(inRestart(p) && RESTART_NOISE.test(p.text)));
  assert.deepEqual(unexpected.map((p) => p.text), []);
});
