// The deck fits the screen it is shown on: every slide of a Marp HTML rendering laid out in
// headless Chromium (Debian's, through playwright-core from tests/browser) at 1920×1080, and
// checked for what a room would see go wrong:
//   - an element that runs past its slide's edge (text or a picture cut off);
//   - two blocks of a slide that overlap (a footer over a paragraph, a picture over a list);
//   - an element whose content is clipped inside it (scrollWidth/Height beyond its box);
//   - a chart whose smallest text, scaled to the screen, is under img/<chart>.json's
//     min_screen_text_px (build.py writes each chart's size and its smallest text).
// Usage: node fit-check.mjs DECK.html   (slides.sh renders it with marp's bare template: every
// slide laid out one after another, the deck's own CSS, no navigation script.)
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const { chromium } = createRequire(path.join(repo, 'tests/browser/package.json'))('playwright-core');
const [deck] = process.argv.slice(2);
const WIDTH = 1920;
const HEIGHT = 1080;
// Sub-pixel layout and anti-aliasing: a box may touch its neighbour or the edge by this much.
const SLACK = 1;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  // The stage runs as root, where Chromium's sandbox refuses to start.
  args: ['--no-sandbox', '--disable-gpu'],
});
let problems = [];
try {
  const page = await browser.newPage({ viewport: { width: WIDTH, height: HEIGHT } });
  await page.goto(pathToFileURL(path.resolve(deck)).href);
  await page.evaluate(() => document.fonts.ready);
  await page.waitForFunction(() => [...document.images].every((img) => img.complete));
  const slides = await page.evaluate(({ slack }) => {
    const inside = (r, box) => r.left >= box.left - slack && r.top >= box.top - slack
      && r.right <= box.right + slack && r.bottom <= box.bottom + slack;
    const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > slack
      && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > slack;
    const name = (el) => {
      const text = (el.getAttribute('src') ?? el.textContent ?? '').trim().replace(/\s+/g, ' ');
      return `<${el.tagName.toLowerCase()}${el.className ? `.${el.className}` : ''}> "${text.slice(0, 50)}"`;
    };
    return [...document.querySelectorAll('section')].map((section, i) => {
      const box = section.getBoundingClientRect();
      const found = [];
      const visible = [...section.querySelectorAll('*')]
        .filter((el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; });
      for (const el of visible) {
        if (!inside(el.getBoundingClientRect(), box)) found.push(`runs past the slide's edge: ${name(el)}`);
        const style = getComputedStyle(el);
        const clips = ['hidden', 'clip', 'auto', 'scroll'];
        if ((clips.includes(style.overflowX) && el.scrollWidth > el.clientWidth + slack)
          || (clips.includes(style.overflowY) && el.scrollHeight > el.clientHeight + slack)) {
          found.push(`its content is clipped: ${name(el)}`);
        }
      }
      // The slide's blocks, and every picture (two side by side share one paragraph).
      const blocks = [...section.children, ...section.querySelectorAll('img')]
        .filter((el) => visible.includes(el));
      for (const [k, a] of blocks.entries()) {
        for (const b of blocks.slice(k + 1)) {
          if (a.contains(b) || b.contains(a)) continue;
          if (overlap(a.getBoundingClientRect(), b.getBoundingClientRect())) found.push(`${name(a)} overlaps ${name(b)}`);
        }
      }
      const charts = [...section.querySelectorAll('img')].map((img) => ({
        src: img.getAttribute('src'), width: img.getBoundingClientRect().width,
      }));
      const title = section.querySelector('h1, h2')?.textContent.trim() ?? '';
      return { slide: i + 1, title, size: [box.width, box.height], found, charts };
    });
  }, { slack: SLACK });

  for (const s of slides) {
    if (Math.abs(s.size[0] - WIDTH) > SLACK || Math.abs(s.size[1] - HEIGHT) > SLACK) {
      s.found.push(`laid out at ${s.size.join('×')}, not ${WIDTH}×${HEIGHT}`);
    }
    for (const chart of s.charts) {
      const meta = path.join(path.dirname(path.resolve(deck)), chart.src.replace(/\.png$/, '.json'));
      // A chart is a PNG that build.py drew into img/ with its sidecar; the rest are pictures.
      if (!/^img\/.*\.png$/.test(chart.src) || !existsSync(meta)) continue;
      const { width_px: natural, min_text_px: smallest, min_screen_text_px: least } = JSON.parse(readFileSync(meta, 'utf8'));
      const onScreen = (smallest * chart.width) / natural;
      const line = `${chart.src}: smallest text ${onScreen.toFixed(1)} px on screen (at least ${least})`;
      if (onScreen < least) s.found.push(`chart text too small to read: ${line}`);
      else console.log(`   slide ${s.slide}: ${line}`);
    }
    console.log(`slide ${s.slide} ${s.found.length ? 'FAILS' : 'fits'}: ${s.title}`);
    for (const f of s.found) console.log(`   ${f}`);
  }
  problems = slides.filter((s) => s.found.length);
  if (!slides.length) problems = [{ slide: 'none' }];
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(`fit check: ${problems.length} slide(s) do not fit at ${WIDTH}×${HEIGHT}: ${problems.map((p) => p.slide).join(', ')}`);
  process.exit(1);
}
console.log(`fit check: every slide fits at ${WIDTH}×${HEIGHT}`);
