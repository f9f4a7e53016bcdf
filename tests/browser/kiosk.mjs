// The kiosk run: the wall page left open on a fast feed, its JavaScript heap sampled over the
// Chrome DevTools Protocol after a forced garbage collection, so a leak shows as a rising line.
//
//   node tests/browser/kiosk.mjs --minutes 10            # the documented run (docs/web.md)
//   node tests/browser/kiosk.mjs --seconds 60 --url '/'  # shorter, or team mode
//
// Against the real `ratecast serve` (RATECAST_BIN, default target/debug/ratecast) polling a fake
// CoinGecko every 250 ms that moves every unit on every poll: 4 deltas a second reach the page.
// Prints one line per sample and a JSON summary; kiosk.test.mjs runs a short one.

import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { fixtureRates, freePort, launchChromium, openPage, startFakeUpstream, startRatecast } from './support.mjs';

const MIB = 1024 * 1024;

/**
 * Runs the page for `seconds` at `perSecond` updates and samples it every `sampleEvery` seconds.
 * Returns {samples: [{t, heapMiB, nodes, listeners}], problems, warmup, summary}.
 */
export async function runKiosk({
  seconds, perSecond = 4, sampleEvery = 10, warmup = Math.min(180, seconds / 3), url = '/?wall=1',
  log = () => {},
}) {
  const fixture = fixtureRates();
  const upstream = await startFakeUpstream(structuredClone(fixture));
  let step = 0;
  // A random walk of every unit, small enough to stay plausible for hours.
  upstream.onRequest = (rates) => {
    step += 1;
    for (const [code, rate] of Object.entries(rates)) {
      if (code === 'btc') continue;
      rate.value = fixture[code].value * (1 + 0.01 * Math.sin(step / 40 + code.length) + 0.002 * (Math.random() - 0.5));
    }
  };
  const server = await startRatecast({
    port: await freePort(),
    upstreamUrl: upstream.url,
    // The poller sleeps its interval after each fetch, and a fetch takes 25-40 ms with a debug
    // build on a busy 2-core machine: 80 % of the period lands at the rate or a little above it
    // (the summary gives the rate measured from the server's delta counter).
    pollInterval: `${Math.floor((1000 / perSecond) * 0.8)}ms`,
  });
  const browser = await launchChromium();
  const problems = [];
  const samples = [];
  try {
    const page = await openPage(browser, `${server.url}${url}`, problems, { viewport: { width: 1920, height: 1080 } });
    await page.waitForFunction(() => document.querySelector('#status').textContent === 'Live');
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Performance.enable');
    const started = Date.now();
    const deltasAtStart = await deltaCount(server.url);
    for (;;) {
      await cdp.send('HeapProfiler.collectGarbage');
      const { usedSize } = await cdp.send('Runtime.getHeapUsage');
      const { metrics } = await cdp.send('Performance.getMetrics');
      const metric = (name) => metrics.find((m) => m.name === name)?.value;
      const sample = {
        t: Math.round((Date.now() - started) / 1000),
        heapMiB: +(usedSize / MIB).toFixed(3),
        nodes: metric('Nodes'),
        listeners: metric('JSEventListeners'),
      };
      samples.push(sample);
      log(`t=${sample.t}s heap=${sample.heapMiB} MiB nodes=${sample.nodes} listeners=${sample.listeners}`);
      if (Date.now() - started >= seconds * 1000) break;
      await new Promise((done) => setTimeout(done, sampleEvery * 1000));
    }
    const elapsed = (Date.now() - started) / 1000;
    const deltas = (await deltaCount(server.url)) - deltasAtStart;
    const status = await page.locator('#status').textContent();
    return { samples, problems, warmup, summary: summarise(samples, warmup, deltas / elapsed, status) };
  } finally {
    await browser.close();
    await server.kill();
    await upstream.close();
  }
}

/** Deltas the server published so far, from /metrics (0 when the counter is not there). */
async function deltaCount(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => /^ratecast_deltas_published_total(\{.*\})? /.test(l));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** Heap after warm-up: first, last, lowest, highest, growth (median of the last three samples
 * minus that of the first three) and the least-squares slope per minute. */
function summarise(samples, warmup, rate, status) {
  const steady = samples.filter((s) => s.t >= warmup);
  const heaps = steady.map((s) => s.heapMiB);
  const n = steady.length;
  const meanT = steady.reduce((a, s) => a + s.t, 0) / n;
  const meanH = heaps.reduce((a, h) => a + h, 0) / n;
  const cov = steady.reduce((a, s) => a + (s.t - meanT) * (s.heapMiB - meanH), 0);
  const varT = steady.reduce((a, s) => a + (s.t - meanT) ** 2, 0);
  // A sample taken mid-flash holds that flash's garbage-to-be: compare medians of three.
  const median3 = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
  const growth = median3(heaps.slice(-3)) - median3(heaps.slice(0, 3));
  // Replaced text nodes count until Blink collects them: the same medians tell growth from churn.
  const nodes = steady.map((s) => s.nodes);
  const nodesGrowth = median3(nodes.slice(-3)) - median3(nodes.slice(0, 3));
  return {
    updatesPerSecond: +rate.toFixed(2),
    seconds: samples[samples.length - 1].t,
    warmupSeconds: warmup,
    heapAtStartMiB: samples[0].heapMiB,
    heapAfterWarmupMiB: heaps[0],
    heapAtEndMiB: heaps[n - 1],
    heapMinMiB: Math.min(...heaps),
    heapMaxMiB: Math.max(...heaps),
    heapGrowthMiB: +growth.toFixed(3),
    // The lowest sample of each minute: what the page holds between flashes, minute by minute.
    floorPerMinuteMiB: floors(samples),
    slopeKiBPerMinute: varT ? +((cov / varT) * 60 * 1024).toFixed(1) : 0,
    nodes: [Math.min(...nodes), Math.max(...nodes)],
    nodesGrowth,
    listeners: [Math.min(...steady.map((s) => s.listeners)), Math.max(...steady.map((s) => s.listeners))],
    statusAtEnd: status,
  };
}

function floors(samples) {
  const byMinute = [];
  for (const { t, heapMiB } of samples) {
    const minute = Math.floor(t / 60);
    byMinute[minute] = Math.min(byMinute[minute] ?? Infinity, heapMiB);
  }
  return byMinute.filter((h) => h !== undefined);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string' },
      seconds: { type: 'string' },
      rate: { type: 'string', default: '4' },
      every: { type: 'string' },
      url: { type: 'string', default: '/?wall=1' },
    },
  });
  const seconds = values.seconds ? Number(values.seconds) : Number(values.minutes ?? 10) * 60;
  const result = await runKiosk({
    seconds,
    perSecond: Number(values.rate),
    sampleEvery: values.every ? Number(values.every) : Math.max(2, Math.round(seconds / 60)),
    url: values.url,
    log: (line) => console.log(line),
  });
  console.log(JSON.stringify(result.summary));
  if (result.problems.length) {
    console.error(result.problems.map((p) => p.text).join('\n'));
    process.exitCode = 1;
  }
}
