import assert from "node:assert/strict";
import { test } from "node:test";

import {
  aliasMove, eventKind, fmtAgo, fmtCount, fmtMetric, fmtPercent, fmtShare, fmtSigned, fmtTime,
  gateText, metric, num, statusOf, toDate,
} from "../js/format.js";

test("num reads numbers and numeric strings only", () => {
  assert.equal(num(3), 3);
  assert.equal(num(" 2.5 "), 2.5);
  assert.ok(Number.isNaN(num("")));
  assert.ok(Number.isNaN(num(null)));
  assert.ok(Number.isNaN(num("abc")));
});

test("metrics, counts and shares have a dash for missing values", () => {
  assert.equal(fmtMetric(0.123456), "0.1235");
  assert.equal(fmtMetric("0.5", 2), "0.50");
  assert.equal(fmtMetric(undefined), "—");
  assert.equal(fmtCount(1234567.4), "1,234,567");
  assert.equal(fmtShare(0.256), "25.6%");
  assert.equal(fmtShare(null), "—");
});

test("percentages never round a probability to 0 or 100", () => {
  assert.equal(fmtPercent(0.25), "25.00");
  assert.equal(fmtPercent(0.00001), "<0.01");
  assert.equal(fmtPercent(0.99999), ">99.99");
  assert.equal(fmtPercent(0), "0.00");
  assert.equal(fmtPercent(1), "100.00");
});

test("signed numbers use a real minus sign", () => {
  assert.equal(fmtSigned(-0.0012, 4), "−0.0012");
  assert.equal(fmtSigned(0.5, 1), "+0.5");
  assert.equal(fmtSigned("x"), "—");
});

test("times are UTC to the minute; epoch seconds and milliseconds both work", () => {
  assert.equal(fmtTime("2026-03-05T14:03:59+00:00"), "2026-03-05 14:03 UTC");
  assert.equal(fmtTime(1772719380), "2026-03-05 14:03 UTC");
  assert.equal(fmtTime(1772719380000), "2026-03-05 14:03 UTC");
  assert.equal(fmtTime("not a time"), "not a time");
  assert.equal(fmtTime(null), "—");
  assert.equal(toDate(""), null);
});

test("ago counts back from now and says nothing about the future", () => {
  const now = Date.parse("2026-03-05T14:00:00Z");
  assert.equal(fmtAgo("2026-03-05T13:59:30Z", now), "just now");
  assert.equal(fmtAgo("2026-03-05T13:15:00Z", now), "45 min ago");
  assert.equal(fmtAgo("2026-03-05T09:00:00Z", now), "5 h ago");
  assert.equal(fmtAgo("2026-03-01T14:00:00Z", now), "4 d ago");
  assert.equal(fmtAgo("2026-03-05T15:00:00Z", now), "");
});

test("registry facts: status, metric, alias moves, gate text, event kinds", () => {
  assert.equal(statusOf({ status: "Production" }), "production");
  assert.equal(statusOf({ status: "weird" }), "none");
  assert.equal(metric({ metrics: { auc: 0.7 } }, "auc"), 0.7);
  assert.equal(metric({ auc: 0.6 }, "auc"), 0.6);
  assert.equal(aliasMove("production", 2, 3), "production v2 → v3");
  assert.equal(aliasMove("previous", null, null), null);
  assert.equal(aliasMove("previous", 1, null), "previous v1 → none");
  assert.equal(gateText({ gate: { compared_with_version: "2", logloss_diff_mean: "-0.002",
    logloss_diff_upper95: "-0.001" } }), "vs v2: -0.002 (upper -0.001)");
  assert.equal(gateText({ gate: { compared_with_version: "prior", logloss_diff_mean: "1",
    logloss_diff_upper95: "2" } }), "vs prior: 1 (upper 2)");
  assert.equal(gateText({}), "—");
  assert.deepEqual(eventKind("rollback"), ["rolled back", "previous"]);
  assert.deepEqual(eventKind("auto_rollback"), ["auto rollback", "previous"]);
  assert.deepEqual(eventKind("new_kind"), ["new_kind", "none"]);
});
