// A first run against an upstream that never answers (offline, or behind a proxy): the page
// says it waits for the first data, and why, and never says "Live" above an empty screen.
// A server of its own, without data, in a real headless Chromium.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { REPO, freePort, launchChromium, lowContrast, openPage, startRatecast } from './support.mjs';

const SCREENSHOTS = resolve(REPO, 'docs/screenshots');
const problems = [];
let browser;

async function waitForStatus(target, pattern, timeout = 15_000) {
  await target.waitForFunction(
    (source) => new RegExp(source).test(document.querySelector('#status').textContent),
    pattern.source,
    { timeout },
  );
}

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

test('first run against an unreachable upstream: waiting for data, with the reason; never Live', async () => {
  // Nothing listens on this port: every poll fails to connect. The server greets a connection
  // that arrives before any data with its current status frame (reason, next attempt); the slow
  // poll interval also keeps later failures' status frames within the page's view.
  const nowhere = `http://127.0.0.1:${await freePort()}`;
  const lonely = await startRatecast({ port: await freePort(), upstreamUrl: nowhere, ready: false, pollInterval: '3s' });
  try {
    const wall = await openPage(browser, `${lonely.url}/?wall=1`, problems, { viewport: { width: 1920, height: 1080 } });
    const team = await openPage(browser, `${lonely.url}/`, problems, { viewport: { width: 1280, height: 800 } });
    for (const target of [wall, team]) {
      await waitForStatus(target, /^Waiting for first data — .*unreachable/, 30_000);
    }
    assert.match(await team.locator('#age').textContent(), /^(next try in \d+ s)?$/);
    assert.equal(await wall.locator('#fresh-age').textContent().then((t) => t.split(' — ')[0]), 'Waiting for first data');
    assert.match(await wall.locator('#fresh-why').textContent(), /unreachable/);
    assert.equal(await wall.locator('.tile').count(), 0);
    assert.deepEqual(await lowContrast(wall, ['#fresh-age', '#fresh-why']), [], 'WCAG AA contrast');
    await wall.screenshot({ path: resolve(SCREENSHOTS, 'waiting-1920x1080.png') });
    // A few more heartbeats: still waiting, and never once "Live".
    await new Promise((done) => setTimeout(done, 3000));
    for (const target of [wall, team]) {
      const said = await target.evaluate(() => window.statusLog);
      assert.ok(said.length > 0);
      assert.ok(!said.some((text) => /^Live/.test(text)), `said: ${[...new Set(said)].join(' | ')}`);
      assert.match(said[said.length - 1], /^Waiting for first data/);
    }
    await wall.context().close();
    await team.context().close();
  } finally {
    await lonely.kill();
  }
});

test('no console errors, uncaught exceptions or CSP violations', () => {
  assert.deepEqual(problems.map((p) => p.text), []);
});
