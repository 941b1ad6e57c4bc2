/*
 * The Monitoring panel (DOM): fresh-data quality charts for production and previous,
 * the newest part's drift table, the served-traffic skew, alarm states and the audit
 * timeline, from GET /monitoring. The numbers are prepared by monitoring.js.
 */
import { labelIndexes, linePath, makeScale } from "./chart.js";
import { el, fill, notice, svg } from "./dom.js";
import { fmtCount, fmtMetric, fmtShare, fmtSigned, fmtTime } from "./format.js";
import {
  QUALITY_METRICS, alarmOverview, alarmText, featureRows, latestFigures, qualitySeries,
  shortAlarmName,
} from "./monitoring.js";
import { historyItem } from "./timeline.js";

const TIMELINE_SHOWN = 8;

export function renderMonitoring(card, body, view) {
  if (!view.available || !view.summary) {
    card.dataset.state = "empty";
    fill(body,
      el("div", { class: "empty-state", id: "monitoring-empty" },
        el("p", { class: "empty-title", text: "No monitoring yet" }),
        el("p", { text: view.message || "The monitor step has not written a summary yet." })),
      alarmsBlock(view),
      timelineBlock(view.timeline || []));
    return;
  }
  const summary = view.summary;
  card.dataset.state = "ready";
  card.dataset.alarm = alarmOverview(view.alarms).worst;
  fill(body,
    headline(summary, view),
    el("div", { class: "charts charts-3", id: "monitoring-charts" },
      QUALITY_METRICS.map((m) => qualityChart(summary, m))),
    el("ul", { class: "legend", "aria-label": "Chart legend" },
      el("li", {}, el("span", { class: "swatch swatch-production", "aria-hidden": "true" }),
        `production${summary.production_version ? ` v${summary.production_version}` : ""}`),
      summary.previous_version
        ? el("li", {}, el("span", { class: "swatch swatch-previous", "aria-hidden": "true" }),
          `previous v${summary.previous_version}`)
        : null),
    el("div", { class: "monitor-grid" },
      featureBlock("Drift", "drift", summary.drift, driftCaption(summary.drift)),
      featureBlock("Served-traffic skew", "skew", summary.skew, skewCaption(summary.skew))),
    alarmsBlock(view),
    timelineBlock(view.timeline || []),
  );
}

export function renderMonitoringError(card, body, error) {
  card.dataset.state = "error";
  fill(body, notice("error", "Monitoring is unavailable", error.message));
}

function headline(summary, view) {
  const latest = latestFigures(summary);
  const { worst } = alarmOverview(view.alarms);
  const items = [];
  if (latest && latest.production) {
    const f = latest.production.figures;
    items.push(["Newest part", `part ${latest.part} · ${fmtCount(latest.rows)} rows`]);
    items.push([`Logloss v${latest.production.version}`, fmtMetric(f.logloss)]);
    if (latest.previous) {
      items.push([`Logloss v${latest.previous.version} (previous)`, fmtMetric(latest.previous.figures.logloss)]);
    }
    if (latest.comparison) {
      items.push(["Previous − production (upper 95%)",
        `${fmtSigned(latest.comparison.logloss_diff_upper95, 5)}${latest.comparison.previous_better ? " · previous better" : ""}`]);
    }
  }
  items.push(["Summary written", fmtTime(summary.generated_at)]);
  return el("div", { class: "monitor-head" },
    el("p", { class: `alarm-pill alarm-${worst.toLowerCase()}`, id: "monitoring-alarm-state",
      "data-state": worst, text: worst === "none" ? "No alarms" : worst === "OK" ? "All alarms OK" : `${worst}` }),
    el("dl", { class: "mini-stats" },
      items.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v })))));
}

/** One chart: the metric per part, production and previous as two lines. */
function qualityChart(summary, { key, title, note }) {
  const { parts, series } = qualitySeries(summary, key);
  const figure = el("figure", { class: "chart", "data-metric": key },
    el("figcaption", {}, el("span", { class: "chart-title", text: title }),
      el("span", { class: "chart-note", text: note })));
  const scale = makeScale(series.flatMap((s) => s.values.filter((v) => v !== null)), parts.length);
  if (!scale) {
    figure.append(el("p", { class: "chart-empty", text: "No values yet" }));
    return figure;
  }
  const description = series.map((s) => `${s.role}: ${s.values.map((v) => fmtMetric(v)).join(", ")}`).join("; ");
  const chart = svg("svg", {
    viewBox: `0 0 ${scale.W} ${scale.H}`, role: "img", class: "chart-svg",
    "aria-label": `${title} per part: ${description}`, preserveAspectRatio: "xMidYMid meet",
  });
  for (const tick of scale.ticks(2)) {
    chart.append(
      svg("line", { x1: scale.m.l, x2: scale.W - scale.m.r, y1: tick.y, y2: tick.y, class: "grid-line" }),
      svg("text", { x: scale.m.l - 6, y: tick.y + 3.5, class: "axis-label", "text-anchor": "end" }, tick.label));
  }
  for (const i of labelIndexes(parts.length)) {
    chart.append(svg("text", { x: scale.x(i), y: scale.H - 8, class: "axis-label", "text-anchor": "middle" },
      `p${parts[i]}`));
  }
  for (const s of series) {
    const coords = s.values.map((v, i) => (v === null ? null : [scale.x(i), scale.y(v)]));
    chart.append(svg("path", { d: linePath(coords), class: `series series-${s.role}` }));
    s.values.forEach((v, i) => {
      if (v === null) return;
      chart.append(svg("g", { class: `point point-${s.role}` },
        svg("title", {}, `${s.role} · part ${parts[i]} · ${fmtMetric(v)}`),
        svg("circle", { cx: scale.x(i), cy: scale.y(v), r: 3 })));
    });
  }
  figure.append(chart);
  return figure;
}

function driftCaption(drift) {
  if (!drift) return "No drift report yet.";
  return `Part ${drift.part} (${fmtCount(drift.rows)} rows) against the v${drift.baseline_version} `
    + `training baseline · ${drift.method}`;
}

function skewCaption(skew) {
  if (!skew) return "No skew report yet: it needs prediction logs.";
  return `${fmtCount(skew.records)} logged predictions, ${fmtTime(skew.since)} – ${fmtTime(skew.until)}, `
    + `against the v${skew.baseline_version} training baseline`;
}

function featureBlock(title, id, report, caption) {
  const rows = featureRows(report, 10);
  const flagged = report ? report.flagged || [] : [];
  return el("section", { class: "monitor-block", id: `monitoring-${id}`, "aria-label": title },
    el("h3", {}, title, " ",
      report ? el("span", { class: flagged.length ? "badge badge-rejected" : "badge badge-production",
        text: flagged.length ? `${flagged.length} flagged` : "no flags" }) : null),
    el("p", { class: "card-note", text: caption }),
    rows.length
      ? el("div", { class: "table-scroll" }, el("table", { class: "data-table", id: `${id}-table` },
        el("thead", {}, el("tr", {}, ["Feature", "Score", "Threshold", "Unseen", ""].map((h, i) =>
          el("th", { scope: "col", class: i > 0 && i < 4 ? "num" : null, text: h })))),
        el("tbody", {}, rows.map((f) => el("tr", { "data-flagged": f.flagged ? "true" : "false", "data-feature": f.feature },
          el("th", { scope: "row", class: "mono", text: f.feature }),
          el("td", { class: "num", text: fmtMetric(f.score) }),
          el("td", { class: "num", text: fmtMetric(f.threshold) }),
          el("td", { class: "num", text: f.unseen_share === null || f.unseen_share === undefined ? "—" : fmtShare(f.unseen_share) }),
          el("td", {}, f.flagged ? el("span", { class: "badge badge-rejected", text: "drift" }) : ""))))))
      : null);
}

function alarmsBlock(view) {
  const alarms = view.alarms || [];
  const source = view.alarms_source === "cloudwatch" ? "live from CloudWatch"
    : view.alarms_source === "summary" ? "as the monitor step saw them" : "";
  return el("section", { class: "monitor-block", id: "monitoring-alarms", "aria-label": "Alarms" },
    el("h3", { text: "Alarms" }),
    el("p", { class: "card-note", text: `${alarmText(alarms)}${source ? ` · ${source}` : ""}` }),
    view.alarms_error ? el("p", { class: "field-error", text: view.alarms_error }) : null,
    alarms.length ? el("ul", { class: "alarm-list" }, alarms.map((a) =>
      el("li", { "data-state": a.state },
        el("span", { class: `alarm-pill alarm-${a.state.toLowerCase()}`, text: a.state }),
        el("span", { class: "mono", title: a.name, text: shortAlarmName(a.name) }),
        a.reason ? el("span", { class: "alarm-reason", text: a.reason }) : null))) : null);
}

function timelineBlock(events) {
  return el("section", { class: "monitor-block", id: "monitoring-timeline", "aria-label": "Audit timeline" },
    el("h3", { text: "Audit timeline" }),
    events.length
      ? el("ol", { class: "timeline" }, events.slice(0, TIMELINE_SHOWN).map(historyItem))
      : el("p", { class: "card-note", text: "No registry events yet." }));
}
