/*
 * The Monitoring panel's data: GET /monitoring (ctr.monitoring.view.MonitoringView)
 * turned into chart series, table rows and a one-line alarm state. Pure: no DOM.
 */

export const QUALITY_METRICS = [
  { key: "logloss", title: "Fresh-data logloss", note: "lower is better" },
  { key: "auc", title: "Fresh-data AUC", note: "higher is better" },
  { key: "calibration_ratio", title: "Calibration (mean prediction / observed rate)",
    note: "1 is calibrated" },
];

/**
 * Per role (production, previous) the metric's value on each part, aligned on the
 * parts of the summary (null where the role was not scored): {parts, series:[{role,
 * versions, values}]}. Roles with no value at all are left out.
 */
export function qualitySeries(summary, key) {
  const reports = (summary && summary.quality) || [];
  const parts = reports.map((r) => r.part);
  const series = [];
  for (const role of ["production", "previous"]) {
    const versions = new Set();
    const values = reports.map((r) => {
      const m = (r.models || []).find((model) => model.role === role);
      if (!m) return null;
      versions.add(m.version);
      const v = m.figures ? m.figures[key] : null;
      return typeof v === "number" && Number.isFinite(v) ? v : null;
    });
    if (values.some((v) => v !== null)) series.push({ role, versions: [...versions], values });
  }
  return { parts, series };
}

/** Drift or skew features, flagged first, then by score relative to threshold. */
export function featureRows(report, limit = 12) {
  if (!report) return [];
  const all = (report.features || []).concat(report.prediction ? [report.prediction] : []);
  const ratio = (f) => (f.threshold > 0 ? f.score / f.threshold : f.score);
  return all
    .slice()
    .sort((a, b) => Number(b.flagged) - Number(a.flagged) || ratio(b) - ratio(a))
    .slice(0, limit)
    .map((f) => ({ ...f, ratio: ratio(f) }));
}

const SEVERITY = { ALARM: 3, INSUFFICIENT_DATA: 2, OK: 1 };

/** The worst state among the alarms ("none" without alarms) and a count per state. */
export function alarmOverview(alarms) {
  const counts = { ALARM: 0, INSUFFICIENT_DATA: 0, OK: 0 };
  let worst = "none";
  for (const a of alarms || []) {
    counts[a.state] = (counts[a.state] || 0) + 1;
    if ((SEVERITY[a.state] || 0) > (SEVERITY[worst] || 0)) worst = a.state;
  }
  return { worst, counts, total: (alarms || []).length };
}

/** "2 alarms in ALARM, 1 OK" / "no alarms". */
export function alarmText(alarms) {
  const { counts, total } = alarmOverview(alarms);
  if (!total) return "no alarms";
  const parts = [];
  if (counts.ALARM) parts.push(`${counts.ALARM} in ALARM`);
  if (counts.INSUFFICIENT_DATA) parts.push(`${counts.INSUFFICIENT_DATA} insufficient data`);
  if (counts.OK) parts.push(`${counts.OK} OK`);
  return `${total} alarm${total > 1 ? "s" : ""}: ${parts.join(", ")}`;
}

/** The newest part's figures per role, for the panel's headline numbers. */
export function latestFigures(summary) {
  const reports = (summary && summary.quality) || [];
  const last = reports[reports.length - 1];
  if (!last) return null;
  const pick = (role) => (last.models || []).find((m) => m.role === role) || null;
  return { part: last.part, rows: last.rows, production: pick("production"),
    previous: pick("previous"), comparison: last.comparison || null };
}

/** Short alarm names: the stack's "<stack>-monitor-" prefix removed. */
export function shortAlarmName(name) {
  const at = String(name).indexOf("-monitor-");
  return at >= 0 ? String(name).slice(at + "-monitor-".length) : String(name);
}
