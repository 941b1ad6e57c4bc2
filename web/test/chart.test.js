import assert from "node:assert/strict";
import { test } from "node:test";

import { labelIndexes, linePath, makeScale, paddedRange } from "../js/chart.js";

test("the range pads 15% each side, or a small band around equal values", () => {
  const [lo, hi] = paddedRange([1, 2]);
  assert.ok(Math.abs(lo - 0.85) < 1e-12 && Math.abs(hi - 2.15) < 1e-12);
  const [a, b] = paddedRange([0.5, 0.5]);
  assert.ok(a < 0.5 && b > 0.5 && b - a < 0.05);
  assert.equal(paddedRange([NaN]), null);
});

test("y maps the range upwards inside the margins; x spreads points", () => {
  const s = makeScale([0, 10], 3, { W: 200, H: 100, m: { l: 20, r: 10, t: 10, b: 20 } });
  assert.ok(s.y(s.lo) === 80 && s.y(s.hi) === 10, `${s.y(s.lo)} ${s.y(s.hi)}`);
  assert.ok(s.y(10) < s.y(0));
  assert.equal(s.x(0), 28);
  assert.equal(s.x(2), 200 - 10 - 8);
  const one = makeScale([1], 1, { W: 200, H: 100, m: { l: 20, r: 10, t: 10, b: 20 } });
  assert.equal(one.x(0), 20 + 170 / 2);
  const ticks = s.ticks(2);
  assert.equal(ticks.length, 3);
  assert.equal(ticks[0].y, 80);
  assert.equal(ticks[2].label, s.hi.toFixed(3));
  assert.equal(makeScale([], 3), null);
});

test("more digits for a narrow range", () => {
  assert.equal(makeScale([0.4701, 0.4712], 2).digits, 4);
  assert.equal(makeScale([0.3, 0.6], 2).digits, 3);
});

test("a path skips gaps", () => {
  assert.equal(linePath([[0, 0], [1.25, 2], null, [3, 4], [5, 6]]), "M0.0,0.0 L1.3,2.0 M3.0,4.0 L5.0,6.0");
  assert.equal(linePath([]), "");
});

test("at most max labels, always the last", () => {
  assert.deepEqual(labelIndexes(3), [0, 1, 2]);
  const many = labelIndexes(20, 8);
  assert.ok(many.length <= 9 && many.at(-1) === 19 && many[0] === 0);
});
