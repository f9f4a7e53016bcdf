// permessage-deflate (issue 23) in a real headless Chromium: the browser offers it, the server
// agrees (compressing each frame once), and the page renders the same table as a page whose
// server declines it (--no-permessage-deflate). The socket's negotiated `extensions` are read
// from a WebSocket wrapper installed before the page's own scripts (CSP does not apply to it).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  fixtureRates, freePort, launchChromium, startFakeUpstream, startRatecast,
} from './support.mjs';

const FIXTURE = fixtureRates();
let upstream;
let compressed;
let raw;
let browser;

before(async () => {
  upstream = await startFakeUpstream(structuredClone(FIXTURE));
  compressed = await startRatecast({ port: await freePort(), upstreamUrl: upstream.url });
  raw = await startRatecast({
    port: await freePort(),
    upstreamUrl: upstream.url,
    extraArgs: ['--no-permessage-deflate'],
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await compressed?.kill();
  await raw?.kill();
  await upstream?.close();
});

/** Every row's code and shown value, in table order. */
function table(page) {
  return page.$$eval('tr[data-code]', (rows) =>
    rows.map((row) => `${row.dataset.code} ${row.querySelector('td.value .amount')?.textContent}`));
}

/** The extensions of the page's open WebSocket ('' when none was negotiated). */
function extensions(page) {
  return page.evaluate(() => window.sockets.find((s) => s.readyState === 1)?.extensions);
}

async function waitFor(page, code, text) {
  await page.waitForFunction(
    ([c, t]) => document.querySelector(`tr[data-code="${c}"] td.value .amount`)?.textContent === t,
    [code, text],
    { timeout: 20_000 },
  );
}

test('Chromium negotiates permessage-deflate and renders the same table as without it', async () => {
  const problems = [];
  // The wrapper must be in place before the page's scripts run: an init script of the context.
  const pages = [];
  for (const server of [compressed, raw]) {
    const context = await browser.newContext({ locale: 'en-US' });
    await context.addInitScript(() => {
      window.sockets = [];
      const Native = window.WebSocket;
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          window.sockets.push(this);
        }
      };
    });
    const page = await context.newPage();
    page.on('pageerror', (error) => problems.push(`uncaught: ${error.message}`));
    await page.goto(`${server.url}/`);
    await page.waitForSelector('tr[data-code="eth"] td.value .amount');
    pages.push(page);
  }
  const [deflated, plain] = pages;
  await deflated.waitForFunction(() => window.sockets.some((s) => s.readyState === 1));
  await plain.waitForFunction(() => window.sockets.some((s) => s.readyState === 1));
  assert.equal(
    await extensions(deflated),
    'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
  );
  assert.equal(await extensions(plain), '');

  // Deltas: both pages follow the same moves.
  for (const factor of [1.01, 1.02]) {
    for (const code of ['eth', 'eur', 'xau']) upstream.rates[code].value = FIXTURE[code].value * factor;
    const shown = await table(deflated);
    await deflated.waitForFunction((before) => {
      const now = [...document.querySelectorAll('tr[data-code]')].map(
        (row) => `${row.dataset.code} ${row.querySelector('td.value .amount')?.textContent}`);
      return JSON.stringify(now) !== JSON.stringify(before);
    }, shown, { timeout: 20_000 });
  }
  const xau = await deflated.locator('tr[data-code="xau"] td.value .amount').textContent();
  await waitFor(plain, 'xau', xau);
  await waitFor(deflated, 'eth', await plain.locator('tr[data-code="eth"] td.value .amount').textContent());
  const [a, b] = [await table(deflated), await table(plain)];
  assert.ok(a.length > 10, `${a.length} rows`);
  assert.deepEqual(a, b);
  assert.deepEqual(problems, []);
});
