// Opens the wall in headless Chromium (Debian's, through playwright-core from tests/browser)
// and keeps it open, so the page lives through what the drill does next, as a wall would; takes
// its picture once the status line shows WANT (e.g. "Stale") plus SETTLE ms, or fails after
// TIMEOUT ms. A page loaded fresh during an outage could not show how old the data is: this one
// was open before it.
// Usage: node demo/wall-shot.mjs URL OUT.png WANT [SETTLE_MS] [TIMEOUT_MS]
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { chromium } = createRequire(path.join(repo, 'tests/browser/package.json'))('playwright-core');
const [url, out, want, settle = '4000', timeout = '120000'] = process.argv.slice(2);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  // The e2e stage runs as root, where Chromium's sandbox refuses to start.
  args: ['--no-sandbox', '--disable-gpu'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
  await page.goto(url);
  const status = page.locator('#status');
  await status.filter({ hasText: want }).waitFor({ timeout: Number(timeout) });
  await page.waitForTimeout(Number(settle));
  await page.screenshot({ path: out });
  console.log(JSON.stringify({ status: await status.textContent(), age: await page.locator('#age').textContent() }));
} finally {
  await browser.close();
}
