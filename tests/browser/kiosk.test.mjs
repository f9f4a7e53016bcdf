// A kiosk run (kiosk.mjs; the 10-minute one is documented in docs/web.md): the wall at
// 4 updates a second keeps its DOM, its listeners and, past warm-up, its heap.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runKiosk } from './kiosk.mjs';

// What one update may add to the wall's heap, from a measurement: `node kiosk.mjs --seconds 100
// --every 3` (2026-12-04, 4.8 updates/s) grew 0.13 MiB in 400 updates after warm-up, ~340 B an
// update — the sparkline history of the ~8 codes the wall subscribes to, one [ts, value] point
// each per update until each holds 720 (web/assets/state.js) — and nothing else. Twice that is
// allowed; a leak of a few hundred bytes an update fails (the former bound, 1 MiB over ~96
// updates, let ~11 KB an update through).
const HISTORY_BYTES_PER_UPDATE = 340;
const SECONDS = 100;
const WARMUP = 15;

test('the wall at 4 updates/s: heap, DOM nodes and listeners stay flat after warm-up', async (t) => {
  const { summary, problems, samples } = await runKiosk({ seconds: SECONDS, sampleEvery: 3, warmup: WARMUP });
  const shown = JSON.stringify(summary);
  assert.ok(summary.updatesPerSecond >= 3.5, `a fast feed: ${shown}`);
  assert.equal(summary.statusAtEnd, 'Live');
  // Growth between the medians of the first and the last three samples after warm-up, per
  // update between them.
  const steady = samples.filter((s) => s.t >= WARMUP);
  const span = steady[steady.length - 2].t - steady[1].t;
  const perUpdate = (summary.heapGrowthMiB * 1024 * 1024) / (summary.updatesPerSecond * span);
  t.diagnostic(`heap growth after warm-up: ${perUpdate.toFixed(0)} B per update over ${span} s`);
  assert.ok(perUpdate < 2 * HISTORY_BYTES_PER_UPDATE,
    `heap grew ${perUpdate.toFixed(0)} B per update over ${span} s (at most ${2 * HISTORY_BYTES_PER_UPDATE}): ${shown}`);
  assert.equal(summary.listeners[0], summary.listeners[1], `listeners: ${shown}`);
  // A flash adds its marker's text for a second, and replaced text nodes wait for Blink's
  // collector; nothing should come and stay.
  const nodes = steady.map((s) => s.nodes);
  assert.ok(summary.nodesGrowth <= 30, `DOM nodes: ${nodes.join(' ')}`);
  assert.deepEqual(problems.map((p) => p.text), []);
});
