// permessage-deflate (issue 23) in real headless browsers, Chromium and Firefox: the browser
// offers it, the server agrees (compressing each frame once, deltas in its shared context), and
// the page renders the same table as a page whose server declines it (--no-permessage-deflate).
// Both sides are read: the socket's negotiated `extensions` and every message it inflated, from a
// WebSocket wrapper installed before the page's own scripts, and the server's counts of
// compressed frames and of deltas sent in the shared context.

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
 * `window.sockets` and counts the messages that are not JSON in `window.unparsable` (the page
 * itself skips those quietly), and gives `window.shownTable()`, every row's code and shown value
 * in order.
 */
function instrument() {
  window.sockets = [];
  window.unparsable = 0;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.sockets.push(this);
      this.addEventListener('message', (event) => {
        try {
          JSON.parse(event.data);
        } catch {
          window.unparsable += 1;
        }
      });
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

    // Deltas: both pages follow the same moves, each of every unit, so that a few deltas fill
    // the 32 KiB window and the later ones come in the shared context, referring back to the
    // ones before: the browser's inflater must keep its window across messages.
    const initial = await plain.evaluate(shownTable);
    // Moved from here at twice the poll rate, not waiting for the pages (a hidden page's
    // polling is throttled): every move is a delta of its own.
    for (let move = 1; move <= 12; move += 1) {
      // Each unit by its own factor: the page shows prices against one quote, which moving
      // every unit alike would leave as they were.
      Object.keys(FIXTURE).forEach((code, i) => {
        upstream.rates[code].value = FIXTURE[code].value * (1 + (move * ((i % 7) + 1)) / 1000);
      });
      await new Promise((done) => setTimeout(done, 400));
    }
    // Both servers have polled the last move by now (every 200 ms): the pages show its rates.
    await new Promise((done) => setTimeout(done, 1000));
    const final = await plain.evaluate(shownTable);
    assert.notDeepEqual(final, initial, 'the moves reached the page');
    await deflated.waitFor((other) => JSON.stringify(window.shownTable()) === JSON.stringify(other), final);
    const [a, b] = [await deflated.evaluate(shownTable), await plain.evaluate(shownTable)];
    assert.ok(a.length > 10, `${a.length} rows`);
    assert.deepEqual(a, b);
    // And got there on its first connection, every frame agreeing with the server's checksum: a
    // delta that inflated wrong would have shown as a mismatch or a reconnect, even if the page
    // then recovered to the right table.
    assert.deepEqual(await deflated.evaluate(
      () => [window.sockets.length, window.unparsable, document.body.dataset.checksumMismatches]),
    [1, 0, '0']);

    // The server's side: it compressed frames for this page, and never for the other one; some
    // deltas went in the shared context.
    assert.ok(await compressions(compressed) > 0, 'no frame compressed');
    const shared = await counter(compressed, 'ratecast_ws_deflate_shared_frames_total');
    assert.ok(shared >= 3, `${shared} deltas in the shared context`);
    assert.equal(await compressions(raw), 0);
    assert.deepEqual(problems, []);
  });
}
