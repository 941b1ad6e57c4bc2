import assert from "node:assert/strict";
import { test } from "node:test";

import {
  alarmOverview, alarmText, featureRows, latestFigures, qualitySeries, shortAlarmName,
} from "../js/monitoring.js";

const model = (role, version, logloss) => ({ role, version, run_id: "r",
  figures: { rows: 10, logloss, auc: 0.7, calibration_ratio: 1.1 } });

const summary = {
  quality: [
    { part: 4, rows: 10, models: [model("production", 3, 0.47)] },
    { part: 5, rows: 10, models: [model("production", 3, 0.48), model("previous", 2, 0.46)],
      comparison: { logloss_diff_upper95: -0.01, previous_better: true } },
  ],
};

test("quality series align roles on the parts, null where a role was not scored", () => {
  const { parts, series } = qualitySeries(summary, "logloss");
  assert.deepEqual(parts, [4, 5]);
  assert.deepEqual(series.map((s) => s.role), ["production", "previous"]);
  assert.deepEqual(series[0].values, [0.47, 0.48]);
  assert.deepEqual(series[1].values, [null, 0.46]);
  assert.deepEqual(series[1].versions, [2]);
  assert.deepEqual(qualitySeries({ quality: [] }, "auc"), { parts: [], series: [] });
  assert.deepEqual(qualitySeries(null, "auc").series, []);
});

test("an AUC of null (one class) is a gap, not a zero", () => {
  const s = { quality: [{ part: 1, models: [{ role: "production", version: 1,
    figures: { auc: null } }] }] };
  assert.deepEqual(qualitySeries(s, "auc").series, []);
});

test("feature rows: flagged first, then by score over threshold; the prediction too", () => {
  const report = {
    features: [
      { feature: "I1", score: 0.05, threshold: 0.1, flagged: false },
      { feature: "C7", score: 0.2, threshold: 0.1, flagged: true },
      { feature: "I2", score: 0.09, threshold: 0.1, flagged: false },
    ],
    prediction: { feature: "prediction", score: 0.5, threshold: 0.1, flagged: true },
  };
  const rows = featureRows(report, 3);
  assert.deepEqual(rows.map((r) => r.feature), ["prediction", "C7", "I2"]);
  assert.equal(rows[1].ratio, 2);
  assert.deepEqual(featureRows(null), []);
});

test("alarm overview: the worst state wins; counts per state", () => {
  const alarms = [{ state: "OK" }, { state: "ALARM" }, { state: "INSUFFICIENT_DATA" }];
  assert.equal(alarmOverview(alarms).worst, "ALARM");
  assert.equal(alarmOverview([{ state: "OK" }]).worst, "OK");
  assert.equal(alarmOverview([]).worst, "none");
  assert.equal(alarmText(alarms), "3 alarms: 1 in ALARM, 1 insufficient data, 1 OK");
  assert.equal(alarmText([]), "no alarms");
});

test("the newest part's figures and short alarm names", () => {
  const latest = latestFigures(summary);
  assert.equal(latest.part, 5);
  assert.equal(latest.previous.version, 2);
  assert.equal(latest.comparison.previous_better, true);
  assert.equal(latestFigures({ quality: [] }), null);
  assert.equal(shortAlarmName("ctr-dev-monitor-quality-logloss"), "quality-logloss");
  assert.equal(shortAlarmName("other"), "other");
});
