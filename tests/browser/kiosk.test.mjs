// A short kiosk run (kiosk.mjs; the 10-minute one is documented in docs/web.md): the wall at
// 4 updates a second keeps its DOM, its listeners and, past warm-up, its heap.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runKiosk } from './kiosk.mjs';

test('the wall at 4 updates/s: heap, DOM nodes and listeners stay flat after warm-up', async () => {
  const { summary, problems, samples } = await runKiosk({ seconds: 45, sampleEvery: 3, warmup: 15 });
  const shown = JSON.stringify(summary);
  assert.ok(summary.updatesPerSecond >= 3.5, `a fast feed: ${shown}`);
  assert.equal(summary.statusAtEnd, 'Live');
  // Each tile's history is capped (720 points), so what grows during warm-up is bounded; a leak
  // of a frame, a node or a closure per update would pass 1 MiB in this half minute.
  assert.ok(summary.heapGrowthMiB < 1, `heap: ${shown}`);
  assert.equal(summary.listeners[0], summary.listeners[1], `listeners: ${shown}`);
  // A flash adds its marker's text for a second, and replaced text nodes wait for Blink's
  // collector; nothing should come and stay.
  const nodes = samples.filter((s) => s.t >= 15).map((s) => s.nodes);
  assert.ok(summary.nodesGrowth <= 30, `DOM nodes: ${nodes.join(' ')}`);
  assert.deepEqual(problems.map((p) => p.text), []);
});
