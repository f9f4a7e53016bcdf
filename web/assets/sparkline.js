// A sparkline is an SVG polyline built through the DOM (no inline style, so CSP holds); the
// stroke colour comes from the stylesheet through the up/down/flat class.

const SVG_NS = 'http://www.w3.org/2000/svg';
const WIDTH = 100;
const HEIGHT = 30;
const PAD = 2; // keeps the stroke inside the box at the extremes

export function createSparkline() {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('aria-hidden', 'true');
  svg.classList.add('spark');
  const line = document.createElementNS(SVG_NS, 'polyline');
  line.setAttribute('vector-effect', 'non-scaling-stroke');
  svg.append(line);
  return svg;
}

/** Draws a step series [[ts, value], ...] from its first point up to `now`. */
export function drawSparkline(svg, series, now) {
  const line = svg.firstChild;
  if (series.length === 0) {
    line.setAttribute('points', '');
    return;
  }
  const start = series[0][0];
  const span = Math.max(now - start, 1);
  const values = series.map(([, v]) => v);
  const low = Math.min(...values);
  const range = Math.max(...values) - low || 1;
  const x = (ts) => ((ts - start) / span) * WIDTH;
  const y = (v) => HEIGHT - PAD - ((v - low) / range) * (HEIGHT - 2 * PAD);
  const points = series.map(([ts, v]) => `${x(ts).toFixed(2)},${y(v).toFixed(2)}`);
  // The last value holds until now.
  points.push(`${WIDTH},${y(values[values.length - 1]).toFixed(2)}`);
  line.setAttribute('points', points.join(' '));
  const trend = Math.sign(values[values.length - 1] - values[0]);
  svg.classList.toggle('up', trend > 0);
  svg.classList.toggle('down', trend < 0);
}
