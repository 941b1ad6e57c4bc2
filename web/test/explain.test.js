import assert from "node:assert/strict";
import { test } from "node:test";

import { probabilityFromLogits, topContributions } from "../js/explain.js";

const explanation = {
  base_value: -1.0,
  contributions: [
    { field: "I1", value: 0.1 }, { field: "C3", value: -0.8 }, { field: "I5", value: 0.4 },
    { field: "C9", value: 0.0 }, { field: "C1", value: -0.2 }, { field: "I2", value: 0.05 },
  ],
};

test("the top contributions by magnitude, signed, scaled to the largest", () => {
  const top = topContributions(explanation, 3);
  assert.deepEqual(top.map((c) => c.field), ["C3", "I5", "C1"]);
  assert.deepEqual(top.map((c) => c.sign), ["down", "up", "down"]);
  assert.equal(top[0].width, 100);
  assert.equal(top[1].width, 50);
  assert.equal(topContributions(explanation).length, 5);
});

test("no or odd explanations give no bars", () => {
  assert.deepEqual(topContributions(null), []);
  assert.deepEqual(topContributions({ contributions: [{ field: "I1", value: NaN }] }), []);
  assert.deepEqual(topContributions({ contributions: [{ field: "I1", value: 0 }] })[0].width, 0);
});

test("base value plus contributions is the prediction's logit", () => {
  const p = probabilityFromLogits(explanation);
  assert.ok(Math.abs(p - 1 / (1 + Math.exp(1.45))) < 1e-12);
  assert.equal(probabilityFromLogits({}), null);
});
