// The page checks the table checksum of every snapshot and delta, in a real headless Chromium.
// The server is a fake of the test's own (the page's files from web/, and a minimal WebSocket
// endpoint that plays one script per connection), so that it can send a wrong checksum and
// record the URL of every connection the page opens.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { tableChecksum } from '../../web/assets/state.js';
import { REPO, launchChromium, openPage, parseAmount, valueOf } from './support.mjs';

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };

const table = (usd) => ({
  btc: { name: 'Bitcoin', unit: 'BTC', value: 1, type: 'crypto' },
  usd: { name: 'US Dollar', unit: '$', value: usd, type: 'fiat' },
});
const sum = (rates) => tableChecksum(new Map(Object.entries(rates)));
const snapshot = (seq, usd) => ({
  type: 'snapshot', epoch: 'e1', seq, ts: Date.now(), source: 'coingecko', stale: false,
  checked_at: Date.now(), rates: table(usd), checksum: sum(table(usd)),
});
const delta = (seq, usd, prev, checksum = sum(table(usd))) => ({
  type: 'delta', epoch: 'e1', seq, ts: Date.now(),
  changed: { usd: { ...table(usd).usd, prev } }, removed: [], checksum,
});

/** One script per connection: frames to send, and whether to drop the connection after them. */
const SCRIPTS = [
  { frames: [snapshot(10, 20000), delta(11, 21000, 20000)], drop: true },
  // The resume: a delta whose checksum is not the table's after it.
  { frames: [delta(12, 22000, 21000, sum(table(22000)) ^ 1)] },
  { frames: [snapshot(20, 25000)] },
];

/** A text frame from the server (unmasked, final). */
function textFrame(text) {
  const payload = Buffer.from(text);
  const header = payload.length < 126
    ? Buffer.from([0x81, payload.length])
    : Buffer.from([0x81, 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([header, payload]);
}

let server;
let browser;
const urls = [];

before(async () => {
  server = http.createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/api/v1/history') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"points":{}}');
      return;
    }
    const file = path === '/' ? 'index.html' : path.slice(1);
    try {
      const body = readFileSync(resolve(REPO, 'web', file));
      res.writeHead(200, { 'content-type': TYPES[file.slice(file.lastIndexOf('.'))] }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  server.on('upgrade', (req, socket) => {
    const script = SCRIPTS[urls.length] ?? { frames: [] };
    urls.push(req.url);
    const accept = createHash('sha1')
      .update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest('base64');
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
      + `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
    for (const frame of script.frames) socket.write(textFrame(JSON.stringify(frame)));
    socket.on('error', () => {});
    if (script.drop) socket.end();
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.closeAllConnections();
  await new Promise((done) => server?.close(done));
});

test('a wrong checksum: the page counts it, reconnects without since and shows the fresh snapshot', async () => {
  const problems = [];
  const page = await openPage(browser, `http://127.0.0.1:${server.address().port}/`, problems);
  await page.waitForFunction(() => document.body.dataset.checksumMismatches === '1', null, { timeout: 15_000 })
    .catch((e) => { throw new Error(`${e.message}: ${JSON.stringify({ urls, problems })}`); });
  // The third connection's snapshot: 1 BTC = $25,000 (not the $22,000 of the bad delta).
  await page.waitForFunction(
    () => document.querySelector('tr[data-code="btc"] .amount')?.textContent.includes('25,000'),
    null,
    { timeout: 15_000 },
  );
  assert.equal(parseAmount(await valueOf(page, 'btc')), 25000);
  // A plain drop resumes with the seq and its epoch; the copy the checksum proved wrong does not.
  assert.deepEqual(urls, ['/ws', '/ws?since=11&epoch=e1', '/ws']);
  assert.equal(await page.evaluate(() => document.body.dataset.checksumMismatches), '1');
  assert.deepEqual(problems.filter((p) => /uncaught|CSP/.test(p.text)).map((p) => p.text), []);
  await page.context().close();
});
