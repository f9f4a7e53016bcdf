// Test fixtures: a fake CoinGecko, the real ratecast binary, Debian's Chromium via playwright-core,
// and Debian's Firefox ESR via puppeteer-core (WebDriver BiDi: playwright cannot drive a stock
// Firefox, only its own patched build, which cannot be downloaded here).

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BINARY = process.env.RATECAST_BIN ?? resolve(REPO, 'target/debug/ratecast');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const FIREFOX = process.env.FIREFOX_BIN ?? '/usr/bin/firefox-esr';

export function fixtureRates() {
  const path = resolve(REPO, 'tests/fixtures/coingecko-exchange-rates-2022.json');
  return JSON.parse(readFileSync(path, 'utf8')).rates;
}

/**
 * CoinGecko's GET /api/v3/exchange_rates on 127.0.0.1:0, answering from `rates`, which the test
 * edits to drive deltas. `failing = true` answers 503, as an upstream outage; `onRequest`, when
 * set, runs before each answer (the kiosk run moves the rates there: one change per poll).
 */
export async function startFakeUpstream(rates) {
  const upstream = { rates, failing: false, onRequest: null };
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || new URL(req.url, 'http://x').pathname !== '/api/v3/exchange_rates') {
      res.writeHead(404).end();
      return;
    }
    upstream.onRequest?.(upstream.rates);
    if (upstream.failing) {
      res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"down"}');
    } else {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ rates: upstream.rates }));
    }
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  upstream.url = `http://127.0.0.1:${server.address().port}`;
  upstream.close = () => new Promise((done) => server.close(done));
  return upstream;
}

/** A free loopback port, so the server can be restarted on the same one. */
export async function freePort() {
  const probe = net.createServer();
  await new Promise((done) => probe.listen(0, '127.0.0.1', done));
  const { port } = probe.address();
  await new Promise((done) => probe.close(done));
  return port;
}

/**
 * Starts `ratecast serve` and resolves once /readyz says it holds data, or with `ready: false`
 * once it answers at all (/healthz: an upstream that never answers leaves it without data).
 * Its log level: RUST_LOG.
 */
export async function startRatecast({ port, upstreamUrl, demo = false, ready = true, pollInterval = '200ms', extraArgs = [] }) {
  const args = [
    'serve',
    '--listen', `127.0.0.1:${port}`,
    '--poll-interval', pollInterval,
    '--heartbeat-interval', '1s',
    '--stale-after', '5s',
    '--shutdown-grace', '2s',
  ];
  if (!demo) args.push('--upstream-url', upstreamUrl);
  args.push(...extraArgs);
  const child = spawn(BINARY, args, {
    env: { ...process.env, RATECAST_DEMO: String(demo), RUST_LOG: process.env.RUST_LOG ?? 'ratecast=error' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = new Promise((done) => child.once('exit', done));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`ratecast exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/${ready ? 'readyz' : 'healthz'}`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error('ratecast not ready within 20 s');
    await new Promise((done) => setTimeout(done, 100));
  }
  return {
    url,
    /** Sends a signal without waiting: SIGSTOP freezes the server with its sockets open. */
    signal(name) {
      child.kill(name);
    },
    /** Kills the process (SIGKILL by default: no goodbye frames) and waits until it is gone. */
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

export async function launchChromium() {
  // playwright-core gives every launch a fresh temporary --user-data-dir of its own.
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/** The page's settle time: CI shares two cores, and Firefox starts slowly. */
const WAIT = { timeout: 20_000 };

/**
 * The two browsers behind one small interface, for tests that must hold in both: `launch()`,
 * then `open(browser, url, init, problems)` gives a page in a fresh context where `init` runs
 * before the page's own scripts (CSP does not apply to it) and uncaught errors go to `problems`;
 * the page offers `evaluate(fn, arg)` and `waitFor(fn, arg)` (until `fn(arg)` in the page is
 * truthy).
 */
export const ENGINES = {
  chromium: {
    launch: launchChromium,
    async open(browser, url, init, problems) {
      const context = await browser.newContext({ locale: 'en-US' });
      await context.addInitScript(init);
      const page = await context.newPage();
      page.on('pageerror', (error) => problems.push(`uncaught: ${error.message}`));
      await page.goto(url);
      return {
        evaluate: (fn, arg) => page.evaluate(fn, arg),
        waitFor: (fn, arg) => page.waitForFunction(fn, arg, WAIT),
      };
    },
  },
  firefox: {
    launch: () => puppeteer.launch({
      browser: 'firefox',
      executablePath: FIREFOX,
      headless: true,
      // The pages format numbers for navigator.language, as Chromium's contexts do for en-US.
      extraPrefsFirefox: { 'intl.locale.requested': 'en-US', 'intl.accept_languages': 'en-US' },
    }),
    async open(browser, url, init, problems) {
      const context = await browser.createBrowserContext();
      const page = await context.newPage();
      await page.evaluateOnNewDocument(init);
      page.on('pageerror', (error) => problems.push(`uncaught: ${error.message}`));
      await page.goto(url);
      return {
        evaluate: (fn, arg) => page.evaluate(fn, arg),
        waitFor: (fn, arg) => page.waitForFunction(fn, WAIT, arg),
      };
    },
  },
};

/**
 * Opens a page in a fresh context that records console errors, uncaught exceptions and CSP
 * violations into `problems` (each {at, text}), so a test can assert that there were none.
 */
export async function openPage(browser, url, problems, options = {}) {
  const context = await browser.newContext({ locale: 'en-US', ...options });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') {
      problems.push({ at: Date.now(), text: `${message.text()} (${message.location().url})` });
    }
  });
  page.on('pageerror', (error) => problems.push({ at: Date.now(), text: `uncaught: ${error.message}` }));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      console.error(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`);
    });
    // Every text the status line ever showed, so a test can assert what was never said.
    window.statusLog = [];
    document.addEventListener('DOMContentLoaded', () => {
      const status = document.querySelector('#status');
      window.statusLog.push(status.textContent);
      new MutationObserver(() => window.statusLog.push(status.textContent))
        .observe(status, { childList: true, characterData: true, subtree: true });
    });
  });
  await page.goto(url);
  return page;
}

/** Text of a row's value cell in team mode. */
export function valueOf(page, code) {
  return page.locator(`tr[data-code="${code}"] td.value .amount`).textContent();
}

/** Parses "€0.9147", "1,234.5 ETH", "2.668E-9 BTC" back into a number. */
export function parseAmount(text) {
  return Number(text.replace(/,/g, '').match(/-?\d+(\.\d+)?(E-?\d+)?/i)[0]);
}

/**
 * WCAG contrast of the first visible, non-empty element of each selector against its effective
 * background; returns those under `minimum` (AA: 4.5) as "selector: ratio".
 */
export function lowContrast(page, selectors, minimum = 4.5) {
  return page.evaluate(([list, min]) => {
    const rgba = (css) => css.match(/[\d.]+/g).map(Number);
    const channel = (v) => (v / 255 <= 0.03928 ? v / 255 / 12.92 : ((v / 255 + 0.055) / 1.055) ** 2.4);
    const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    const background = (node) => {
      for (let n = node; n; n = n.parentElement) {
        const [r, g, b, a = 1] = rgba(getComputedStyle(n).backgroundColor);
        if (a === 1) return [r, g, b];
      }
      return [255, 255, 255];
    };
    const failures = [];
    for (const selector of list) {
      const node = [...document.querySelectorAll(selector)].find((n) => n.checkVisibility() && n.textContent.trim());
      if (!node) {
        failures.push(`${selector}: nothing visible to check`);
        continue;
      }
      const [fg, bg] = [luminance(rgba(getComputedStyle(node).color)), luminance(background(node))];
      const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
      if (ratio < min) failures.push(`${selector}: ${ratio.toFixed(2)}`);
    }
    return failures;
  }, [selectors, minimum]);
}
