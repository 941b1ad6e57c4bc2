/*
 * Chart scaling for the page's inline SVG charts. Pure: numbers in, coordinates and
 * labels out; the DOM side (svg()) lives with each chart.
 */

/** [lo, hi] around the values with 15% padding (a small band when they are all equal). */
export function paddedRange(values) {
  const finite = values.filter(Number.isFinite);
  if (!finite.length) return null;
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  const pad = hi - lo > 1e-9 ? (hi - lo) * 0.15 : Math.max(Math.abs(hi) * 0.02, 0.001);
  lo -= pad;
  hi += pad;
  return [lo, hi];
}

/**
 * A scale for `count` points across a W x H box with margins m {l, r, t, b}: x(i) spreads
 * the points (one point sits in the middle), y(v) maps [lo, hi] upwards, ticks(n) gives
 * n + 1 evenly spaced {value, y, label} lines, digits enough to tell them apart.
 */
export function makeScale(values, count, { W = 320, H = 150, m = { l: 48, r: 14, t: 12, b: 26 } } = {}) {
  const range = paddedRange(values);
  if (!range || count < 1) return null;
  const [lo, hi] = range;
  const innerW = W - m.l - m.r;
  const innerH = H - m.t - m.b;
  const digits = hi - lo < 0.01 ? 4 : 3;
  const x = (i) => (count === 1 ? m.l + innerW / 2 : m.l + 8 + (i * (innerW - 16)) / (count - 1));
  const y = (value) => m.t + (1 - (value - lo) / (hi - lo)) * innerH;
  const ticks = (n = 2) => Array.from({ length: n + 1 }, (_, i) => {
    const value = lo + ((hi - lo) * i) / n;
    return { value, y: y(value), label: value.toFixed(digits) };
  });
  return { lo, hi, digits, x, y, ticks, W, H, m };
}

/** An SVG path through the points, skipping gaps (null values) as separate runs. */
export function linePath(points) {
  let d = "";
  let pen = false;
  for (const p of points) {
    if (p === null || !Number.isFinite(p[0]) || !Number.isFinite(p[1])) {
      pen = false;
      continue;
    }
    d += `${d ? " " : ""}${pen ? "L" : "M"}${p[0].toFixed(1)},${p[1].toFixed(1)}`;
    pen = true;
  }
  return d;
}

/** Label every k-th of n points so that at most `max` labels show (and the last). */
export function labelIndexes(n, max = 8) {
  const every = Math.max(1, Math.ceil(n / max));
  const out = [];
  for (let i = 0; i < n; i++) if (i % every === 0 || i === n - 1) out.push(i);
  return out;
}
