// permessage-deflate (issue 23) in real headless browsers, Chromium and Firefox: the browser
// offers it, the server agrees (compressing each frame once), and the page renders the same
// table as a page whose server declines it (--no-permessage-deflate). Both sides are read: the
// socket's negotiated `extensions`, from a WebSocket wrapper installed before the page's own
// scripts, and the server's count of compressed frames.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ENGINES, fixtureRates, freePort, startFakeUpstream, startRatecast } from './support.mjs';

const FIXTURE = fixtureRates();
let upstream;

before(async () => {
  upstream = await startFakeUpstream(structuredClone(FIXTURE));
});

after(async () => {
  await upstream?.close();
});

/**
 * Runs in the page before its own scripts: records every WebSocket it opens in
 * `window.sockets`, and gives `window.shownTable()`, every row's code and shown value in order.
 */
function instrument() {
  window.sockets = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.sockets.push(this);
    }
  };
  window.shownTable = () => [...document.querySelectorAll('tr[data-code]')].map(
    (row) => `${row.dataset.code} ${row.querySelector('td.value .amount')?.textContent}`);
}

const shownTable = () => window.shownTable();

/** A counter of the server's (0 before its first sample). */
async function counter(server, name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  return Number(text.match(new RegExp(`^${name} (\\S+)$`, 'm'))?.[1] ?? 0);
}
const compressions = (server) => counter(server, 'ratecast_ws_deflate_compressions_total');

for (const [name, engine] of Object.entries(ENGINES)) {
  test(`${name} negotiates permessage-deflate and renders the same table as without it`, async (t) => {
    // Fresh servers per browser: the compression count is this browser's alone, and the
    // rates start from the fixture again, so that the moves below are changes.
    upstream.rates = structuredClone(FIXTURE);
    const compressed = await startRatecast({ port: await freePort(), upstreamUrl: upstream.url });
    t.after(() => compressed.kill());
    const raw = await startRatecast({
      port: await freePort(),
      upstreamUrl: upstream.url,
      extraArgs: ['--no-permessage-deflate'],
    });
    t.after(() => raw.kill());
    const browser = await engine.launch();
    t.after(() => browser.close());

    const problems = [];
    const pages = [];
    for (const server of [compressed, raw]) {
      const page = await engine.open(browser, `${server.url}/`, instrument, problems);
      await page.waitFor(() => document.querySelector('tr[data-code="eth"] td.value .amount')
        && window.sockets.some((s) => s.readyState === 1));
      pages.push(page);
    }
    const [deflated, plain] = pages;
    // The negotiated extension: Firefox reports only its name, Chromium its parameters too; the
    // browser did not ask for self-contained messages, so the server keeps its context.
    const extension = (page) => page.evaluate(
      () => window.sockets.find((s) => s.readyState === 1).extensions);
    const agreed = await extension(deflated);
    assert.equal(agreed.split(';')[0], 'permessage-deflate');
    assert.ok(!agreed.includes('server_no_context_takeover'), agreed);
    assert.equal(await extension(plain), '');

    // Deltas: both pages follow the same moves. With context takeover each delta refers back
    // to the ones before: the browser's inflater must keep its window across messages.
    for (const factor of [1.01, 1.02, 1.03, 1.04, 1.05, 1.06]) {
      for (const code of ['eth', 'eur', 'xau']) upstream.rates[code].value = FIXTURE[code].value * factor;
      const shown = await deflated.evaluate(shownTable);
      await deflated.waitFor((before) => JSON.stringify(window.shownTable()) !== JSON.stringify(before), shown);
    }
    // The other page settles on the same rates (the upstream is polled every 200 ms).
    const final = await deflated.evaluate(shownTable);
    await plain.waitFor((other) => JSON.stringify(window.shownTable()) === JSON.stringify(other), final);
    const [a, b] = [await deflated.evaluate(shownTable), await plain.evaluate(shownTable)];
    assert.ok(a.length > 10, `${a.length} rows`);
    assert.deepEqual(a, b);

    // The server's side: it compressed frames for this page, and never for the other one; some
    // deltas went in the shared context (the page is its only subscriber, there from the start).
    assert.ok(await compressions(compressed) > 0, 'no frame compressed');
    assert.ok(await counter(compressed, 'ratecast_ws_deflate_shared_frames_total') > 0, 'no shared-context delta');
    assert.equal(await compressions(raw), 0);
    assert.deepEqual(problems, []);
  });
}
