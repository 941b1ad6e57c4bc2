/*
 * The CTR pipeline's web page: shows the production model with its provenance,
 * the registered versions, the registry's history (/model-history: every
 * registration, promotion, rejection and rollback), the Monitoring panel
 * (/monitoring: fresh-data quality, drift, skew, alarms) and asks the prediction API
 * for click probabilities.
 *
 * Plain browser JavaScript as ES modules, no build step and no libraries: this file
 * wires the page; js/ holds the parts (format, fields, chart, monitoring and api are
 * pure and tested with `node --test web/test`). Every API URL is relative to the
 * page, so the same files work at the API root and behind an API Gateway stage prefix
 * (/restapis/<id>/<stage>/_user_request_/). A static deployment elsewhere can point
 * at the API with ?api=<base URL>.
 */
import { ApiError, makeApi, resolveApiBase } from "./js/api.js";
import { badge, el, fill, notice, svg } from "./js/dom.js";
import {
  CAT_FIELDS, FIELDS, INT_FIELDS, fieldProblems, lineFromRow, linesFromText, localHint, locate,
  rowFromValues,
} from "./js/fields.js";
import {
  fmtAgo, fmtCount, fmtMetric, fmtPercent, fmtShare, fmtSigned, fmtTime, gateText, metric, num, statusOf, toDate,
} from "./js/format.js";
import { labelIndexes, linePath, makeScale } from "./js/chart.js";
import { renderMonitoring, renderMonitoringError } from "./js/monitoring-panel.js";
import { historyItem } from "./js/timeline.js";
import { topContributions } from "./js/explain.js";

const SAMPLE_BATCH = 5;
const POLL_MS = 10000;
const HISTORY_LIMIT = 20;

const apiBase = resolveApiBase(window.location.search, document.baseURI);
const api = makeApi(apiBase);

const state = {
  info: null, // last /model-info body
  history: null, // last /model-history body
  health: null, // last /health body
  monitoring: null, // last /monitoring body
  samples: [], // [{row, line}] from /samples, used in turn
  sampleIndex: -1,
  sampleSource: null,
  sampleLabel: null, // label of the sample currently in the inputs, until it is edited
  provenance: new Map(), // version -> model block of a /predict answer
  busy: false,
};

const $ = (id) => document.getElementById(id);
const inputs = {}; // field name -> <input>

/* ---------- header status ---------- */

function renderHealth(health, error) {
  const pill = $("api-status");
  const text = pill.querySelector(".status-text");
  if (error) {
    pill.dataset.state = "error";
    text.textContent = error.status === 0 ? "API unreachable" : `API error ${error.status}`;
    pill.title = error.message;
    return;
  }
  pill.title = "";
  if (health.model_loaded && health.version !== null && health.version !== undefined) {
    pill.dataset.state = health.serving_behind ? "warn" : "ok";
    text.textContent = health.serving_behind
      ? `Serving v${health.version} · registry v${health.registry_production_version}`
      : `Serving v${health.version}`;
    const age = num(health.pointer_age_seconds);
    if (health.serving_behind) {
      pill.title = `The registry's production version is v${health.registry_production_version}; `
        + "serving catches up at the next pipeline run";
    } else if (Number.isFinite(age)) {
      pill.title = `Production pointer written ${Math.round(age)} s ago`;
    }
  } else {
    pill.dataset.state = "warn";
    text.textContent = "No model yet";
    if (health.no_model_reason) pill.title = health.no_model_reason;
  }
}

/* ---------- models ---------- */

/**
 * The served version: its provenance (/model-info "production", from the bundle)
 * over its registry entry, then what a /predict answer told us about it.
 */
function productionEntry(info) {
  if (!info || info.production_version === null || info.production_version === undefined) {
    return null;
  }
  const version = String(info.production_version);
  const listed = (info.versions || []).find((v) => String(v.version) === version) || {};
  const served = info.production || {};
  const answered = state.provenance.get(version) || {};
  const merged = Object.assign({ status: "production" }, answered, listed, served);
  merged.version = info.production_version;
  merged.metrics = Object.assign({}, listed.metrics, served.metrics);
  return merged;
}

async function loadModels() {
  const prodCard = $("production-card");
  const versionsCard = $("versions-card");
  prodCard.setAttribute("aria-busy", "true");
  versionsCard.setAttribute("aria-busy", "true");
  const [health, info, history] = await Promise.allSettled(
    [api("health"), api("model-info"), api(`model-history?limit=${HISTORY_LIMIT}`)]);
  if (health.status === "fulfilled") {
    state.health = health.value;
    renderHealth(health.value, null);
  } else {
    renderHealth(null, health.reason);
  }
  if (info.status === "fulfilled") {
    state.info = info.value;
    renderProduction();
    renderVersions();
  } else {
    renderModelsError(info.reason);
  }
  prodCard.removeAttribute("aria-busy");
  versionsCard.removeAttribute("aria-busy");
  if (history.status === "fulfilled") {
    state.history = history.value;
    renderHistory();
  } else {
    renderHistoryError(history.reason);
  }
  $("history-card").removeAttribute("aria-busy");
}

/* ---------- registry history ---------- */

function renderHistory() {
  const body = $("history-body");
  const events = (state.history && state.history.events) || [];
  $("history-card").dataset.state = events.length ? "ready" : "empty";
  if (!events.length) {
    fill(body,
      el("div", { class: "empty-state", id: "history-empty" },
        el("p", { class: "empty-title", text: "No registry events yet" }),
        el("p", { text: "Each registration, promotion, rejection and rollback is recorded here, with who did it and why." })),
    );
    return;
  }
  fill(body, el("ol", { class: "timeline", id: "history-list" }, events.map(historyItem)));
}


function renderHistoryError(error) {
  $("history-card").dataset.state = "error";
  fill($("history-body"),
    el("div", { class: "notice notice-error", role: "alert" },
      el("p", { class: "notice-title", text: "The registry history is unavailable" }),
      el("p", { text: error.message })));
}

function renderModelsError(error) {
  const retry = () => loadModels();
  for (const [cardId, bodyId] of [["production-card", "production-body"], ["versions-card", "versions-body"]]) {
    $(cardId).dataset.state = "error";
    fill($(bodyId),
      el("div", { class: "notice notice-error", role: "alert" },
        el("p", { class: "notice-title", text: "Model information is unavailable" }),
        el("p", { text: error.message }),
        el("button", { type: "button", class: "btn btn-small", text: "Try again", onclick: retry })),
    );
  }
}

function renderProduction() {
  const card = $("production-card");
  const body = $("production-body");
  const info = state.info;
  const entry = productionEntry(info);
  if (!entry) {
    card.dataset.state = "no-model";
    fill(body,
      el("div", { class: "empty-state", id: "no-model" },
        el("p", { class: "empty-title", text: "No model in production yet" }),
        el("p", {
          text: "The pipeline has not promoted a model. As soon as training registers a " +
            "version that passes the quality gate and reload publishes it, it shows up " +
            "here — this page checks every 10 seconds.",
        })),
    );
    return;
  }
  card.dataset.state = "ready";
  const aliases = (entry.aliases || []).filter((a) => a !== "production");
  const registered = entry.registered_at || entry.created_at;
  const rows = [
    ["Run name", entry.run_name || "—", ""],
    ["Run ID", entry.run_id || "—", "mono"],
    ["Artifact URI", entry.artifact_uri || "shown with each prediction",
      entry.artifact_uri ? "mono" : "muted"],
    entry.trained_at
      ? ["Trained", `${fmtTime(entry.trained_at)} · ${fmtAgo(entry.trained_at)}`, ""]
      : ["Registered", registered ? `${fmtTime(registered)} · ${fmtAgo(registered)}` : "—", ""],
  ];
  if (entry.data_window) rows.push(["Data window", entry.data_window, ""]);
  if (entry.execution) rows.push(["Pipeline run", entry.execution, "mono"]);

  const secondary = [
    ["Calibration error", fmtMetric(metric(entry, "calibration_error"))],
    ["Train rows", fmtCount(metric(entry, "train_rows"))],
    ["Holdout rows", fmtCount(metric(entry, "holdout_rows"))],
    ["Positive rate", fmtShare(metric(entry, "positive_rate"))],
  ];

  fill(body,
    el("div", { class: "prod-head" },
      el("p", { class: "prod-version", id: "production-version" },
        el("span", { class: "prod-v", text: `v${entry.version}` }),
        badge("production"),
        aliases.map((a) => el("span", { class: "alias", text: a }))),
      el("p", { class: "prod-name", text: entry.model_name || info.model_name || "" })),
    el("div", { class: "stats" },
      stat("Holdout logloss", fmtMetric(metric(entry, "holdout_logloss")), "lower is better"),
      stat("Holdout AUC", fmtMetric(metric(entry, "holdout_auc")), "higher is better")),
    el("dl", { class: "kv" },
      rows.map(([k, v, cls]) => [el("dt", { text: k }), el("dd", { class: cls, text: v })])),
    el("dl", { class: "mini-stats" },
      secondary.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v })))),
  );
}

function stat(label, value, note) {
  return el("div", { class: "stat" },
    el("p", { class: "stat-label", text: label }),
    el("p", { class: "stat-value", text: value }),
    el("p", { class: "stat-note", text: note }));
}

function renderVersions() {
  const body = $("versions-body");
  const versions = (state.info.versions || []).slice();
  $("versions-card").dataset.state = versions.length ? "ready" : "empty";
  if (!versions.length) {
    fill(body,
      el("div", { class: "empty-state" },
        el("p", { class: "empty-title", text: "No versions registered yet" }),
        el("p", { text: "Each training run registers a version; rejected ones are listed too, with the reason." })),
    );
    return;
  }
  versions.sort((a, b) => num(a.version) - num(b.version));
  const newestFirst = versions.slice().reverse();

  const table = el("table", { class: "versions", id: "versions-table" },
    el("caption", { class: "visually-hidden", text: "Registered model versions" }),
    el("thead", {}, el("tr", {},
      ["Version", "Status", "Logloss", "AUC", "Gate (shared rows)", "Run"].map((h, i) =>
        el("th", { scope: "col", class: i === 2 || i === 3 ? "num" : null, text: h })))),
    el("tbody", {}, newestFirst.map(versionRow)));

  fill(body,
    el("div", { class: "charts" },
      metricChart(versions, "holdout_logloss", "Holdout logloss", "lower is better"),
      metricChart(versions, "holdout_auc", "Holdout AUC", "higher is better")),
    el("p", { class: "chart-caveat", id: "chart-caveat",
      text: "Each version is measured on its own holdout (the newest rows when it was "
        + "trained), so these points are not a like-for-like comparison; the Gate column "
        + "is: candidate minus production (or the prior) on the same rows, with its 95% "
        + "upper bound." }),
    legend(versions),
    el("div", { class: "table-scroll", tabindex: "0", role: "region", "aria-label": "Versions table" }, table),
  );
}

function versionRow(v) {
  const status = statusOf(v);
  const runId = v.run_id ? String(v.run_id) : "";
  const created = toDate(v.created_at);
  return el("tr", { "data-status": status },
    el("th", { scope: "row" },
      el("span", { class: "ver", text: `v${v.version}` }),
      created ? el("span", { class: "ver-date", title: fmtTime(created), text: created.toISOString().slice(0, 10) }) : null),
    el("td", {}, badge(status),
      v.status_reason ? el("span", { class: "reason", title: v.status_reason, text: v.status_reason }) : null),
    el("td", { class: "num", "data-label": "Logloss", text: fmtMetric(metric(v, "holdout_logloss")) }),
    el("td", { class: "num", "data-label": "AUC", text: fmtMetric(metric(v, "holdout_auc")) }),
    el("td", { class: "gate-cell", "data-label": "Gate", title: v.holdout ? `measured on ${v.holdout}` : null,
      text: gateText(v) }),
    el("td", { class: "run-cell" },
      el("span", { class: "run-name", title: v.run_name || null, text: v.run_name || "—" }),
      runId ? el("span", { class: "run-id mono", title: runId, text: runId.slice(0, 8) }) : null),
  );
}


function legend(versions) {
  const present = new Set(versions.map(statusOf));
  return el("ul", { class: "legend", "aria-label": "Chart legend" },
    ["production", "previous", "rejected", "candidate", "archived", "none"]
      .filter((s) => present.has(s))
      .map((s) => el("li", {}, el("span", { class: `swatch swatch-${s}`, "aria-hidden": "true" }), s)));
}

/** One small line chart of a metric across versions, drawn as inline SVG. */
function metricChart(versions, key, title, note) {
  const points = versions
    .map((v) => ({ v, y: num(metric(v, key)) }))
    .filter((p) => Number.isFinite(p.y));
  const figure = el("figure", { class: "chart" },
    el("figcaption", {}, el("span", { class: "chart-title", text: title }),
      el("span", { class: "chart-note", text: note })));
  if (!points.length) {
    figure.append(el("p", { class: "chart-empty", text: "No values yet" }));
    return figure;
  }
  const scale = makeScale(points.map((p) => p.y), points.length);
  const { W, H, m, x, y } = scale;

  const description = points
    .map((p) => `v${p.v.version} ${p.y.toFixed(4)} (${statusOf(p.v)})`)
    .join(", ");
  const chart = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title} by version: ${description}`,
    class: "chart-svg", preserveAspectRatio: "xMidYMid meet",
  });

  for (const tick of scale.ticks(2)) {
    chart.append(
      svg("line", { x1: m.l, x2: W - m.r, y1: tick.y, y2: tick.y, class: "grid-line" }),
      svg("text", { x: m.l - 6, y: tick.y + 3.5, class: "axis-label", "text-anchor": "end" }, tick.label),
    );
  }
  for (const i of labelIndexes(points.length)) {
    chart.append(svg("text", { x: x(i), y: H - 8, class: "axis-label", "text-anchor": "middle" }, `v${points[i].v.version}`));
  }
  if (points.length > 1) {
    chart.append(svg("path", { d: linePath(points.map((p, i) => [x(i), y(p.y)])), class: "series" }));
  }
  points.forEach((p, i) => {
    const status = statusOf(p.v);
    const group = svg("g", { class: `point point-${status}` },
      svg("title", {}, `v${p.v.version} · ${status} · ${p.y.toFixed(4)}`));
    if (status === "production") {
      group.append(svg("circle", { cx: x(i), cy: y(p.y), r: 8, class: "halo" }));
    }
    group.append(svg("circle", { cx: x(i), cy: y(p.y), r: status === "production" ? 5 : 4 }));
    chart.append(group);
  });
  figure.append(chart);
  return figure;
}

/* ---------- the form ---------- */

function buildFields() {
  const intGrid = $("int-fields");
  const catGrid = $("cat-fields");
  for (const name of INT_FIELDS) {
    intGrid.append(field(name, {
      type: "number", step: "1", inputmode: "numeric", placeholder: "—",
    }));
  }
  for (const name of CAT_FIELDS) {
    catGrid.append(field(name, {
      type: "text", pattern: "[0-9a-f]{8}", maxlength: "8", placeholder: "—",
      autocapitalize: "off", spellcheck: "false", class: "mono",
    }));
  }
}

function field(name, attrs) {
  const input = el("input", Object.assign({
    id: `f-${name}`, name, autocomplete: "off",
    "aria-describedby": `f-${name}-hint f-${name}-error`,
  }, attrs));
  input.addEventListener("input", () => {
    clearFieldError(name);
    inputsEdited();
  });
  input.addEventListener("blur", () => checkLocally(name));
  inputs[name] = input;
  return el("div", { class: "field", "data-field": name },
    el("div", { class: "field-top" },
      el("label", { for: input.id, text: name }),
      el("span", { class: "field-hint", id: `f-${name}-hint` })),
    input,
    el("p", { class: "field-error", id: `f-${name}-error` }));
}

/**
 * Instant hints while typing; the API's answer on submit has the final word.
 * The hint sits beside the label, so showing it never moves the layout (a
 * shift on blur would move the Predict button away from a click in progress).
 */
function checkLocally(name) {
  const input = inputs[name];
  const hint = localHint(name, input.value, input.validity.badInput);
  $(`f-${name}-hint`).textContent = hint;
  if (hint) input.setAttribute("aria-invalid", "true");
}

/** A full message under the field: from the API, or for input the browser cannot read. */
function setFieldError(name, message) {
  inputs[name].setAttribute("aria-invalid", "true");
  $(`f-${name}-hint`).textContent = "";
  $(`f-${name}-error`).textContent = message;
}

function clearFieldError(name) {
  inputs[name].removeAttribute("aria-invalid");
  $(`f-${name}-hint`).textContent = "";
  $(`f-${name}-error`).textContent = "";
}

function clearAllErrors() {
  FIELDS.forEach(clearFieldError);
  $("tsv-line").removeAttribute("aria-invalid");
  $("tsv-line-error").textContent = "";
  const formError = $("fields-form-error");
  formError.hidden = true;
  formError.textContent = "";
}

function inputsEdited() {
  state.sampleLabel = null;
  const result = $("result");
  if (result.dataset.state === "done") result.dataset.stale = "true";
}

function rowFromFields() {
  return rowFromValues(Object.fromEntries(FIELDS.map((name) => [name, inputs[name].value])));
}

async function submitFields(event) {
  event.preventDefault();
  if (state.busy) return;
  clearAllErrors();
  // A number input the browser cannot parse reports "" — never send that as "missing".
  const unreadable = INT_FIELDS.filter((name) => inputs[name].validity.badInput);
  if (unreadable.length) {
    unreadable.forEach((name) => setFieldError(name, "Not a number the browser can read."));
    inputs[unreadable[0]].focus();
    return;
  }
  await predict({ rows: [rowFromFields()] }, { mode: "fields" });
}

async function submitLine(event) {
  event.preventDefault();
  if (state.busy) return;
  clearAllErrors();
  const lines = linesFromText($("tsv-line").value);
  if (!lines.length) {
    showLineError(["Paste a Criteo line first (or load a sample)."]);
    return;
  }
  await predict({ lines }, { mode: "line", lines });
}

function showLineError(messages) {
  const area = $("tsv-line");
  area.setAttribute("aria-invalid", "true");
  fill($("tsv-line-error"), messages.map((m) => el("span", { text: m })));
  area.focus();
}

/* ---------- predictions ---------- */

function setBusy(busy) {
  state.busy = busy;
  for (const button of document.querySelectorAll("form button[type=submit]")) {
    button.disabled = busy;
    button.textContent = busy ? "Predicting…" : "Predict";
  }
  $("result").setAttribute("aria-busy", busy ? "true" : "false");
}

async function predict(payload, context) {
  setBusy(true);
  const result = $("result");
  result.dataset.state = "loading";
  delete result.dataset.stale;
  fill(result, el("div", { class: "loading" },
    el("span", { class: "spinner", "aria-hidden": "true" }), "Asking the model…"));
  const started = performance.now();
  try {
    const explain = $("explain-toggle").checked;
    const body = await api(explain ? "predict?explain=true" : "predict", { json: payload });
    const elapsed = performance.now() - started;
    if (body.model && body.model.version !== undefined) {
      state.provenance.set(String(body.model.version), body.model);
    }
    renderPrediction(body, context, elapsed);
    if (window.matchMedia("(max-width: 960px)").matches) {
      // One column: the answer is below the long form, bring it into view.
      $("result").closest(".card").scrollIntoView({ block: "start" });
    }
    const shown = productionEntry(state.info);
    if (body.model && (!shown || String(shown.version) !== String(body.model.version))) {
      loadModels(); // serving moved on (or the page was stale): catch up
    } else if (shown && !(state.info.production || {}).artifact_uri) {
      renderProduction(); // the answer's provenance fills what /model-info lacked
    }
  } catch (error) {
    renderPredictionError(error, context);
  } finally {
    setBusy(false);
  }
}

function renderPrediction(body, context, elapsed) {
  const result = $("result");
  const predictions = Array.isArray(body.predictions) ? body.predictions : [];
  const model = body.model || {};
  result.dataset.state = "done";

  let headline;
  if (predictions.length === 1) {
    const p = num(predictions[0]);
    headline = el("div", { class: "headline" },
      el("p", { class: "headline-label", text: "Click probability" }),
      el("p", { class: "headline-value", id: "result-percentage" },
        fmtPercent(p), el("span", { class: "unit", text: "%" })),
      el("div", { class: "meter", "aria-hidden": "true" },
        el("span", { style: `width: ${Math.max(0, Math.min(100, p * 100)).toFixed(2)}%` })),
      el("p", { class: "headline-raw" }, "p = ",
        el("code", { id: "result-probability", text: p.toFixed(6) })));
  } else {
    headline = el("div", { class: "headline" },
      el("p", { class: "headline-label", text: `${predictions.length} click probabilities` }),
      el("ol", { class: "multi", id: "result-list" }, predictions.map((raw, i) => {
        const p = num(raw);
        return el("li", {},
          el("span", { class: "multi-line", text: `Line ${i + 1}` }),
          el("span", { class: "multi-pct", text: `${fmtPercent(p)}%` }),
          el("code", { text: p.toFixed(6) }));
      })));
  }

  const truth = state.sampleLabel === null ? null
    : el("p", { class: "truth" }, "In the data this impression was ",
      el("strong", { text: state.sampleLabel ? "clicked" : "not clicked" }), ".");

  const provenance = [
    ["Model", model.name || "—", ""],
    ["Run name", model.run_name || "—", ""],
    ["Run ID", model.run_id || "—", "mono"],
    ["Artifact URI", model.artifact_uri || "—", "mono"],
    ["Trained", model.trained_at ? fmtTime(model.trained_at) : "—", ""],
  ];

  const when = new Date().toISOString().slice(11, 19);
  fill(result,
    el("p", { class: "stale-note", text: "The inputs changed since this prediction." }),
    headline,
    explanationBars(body),
    truth,
    el("div", { class: "produced-by" },
      el("p", { class: "produced-title" }, "Produced by ",
        el("strong", { id: "result-version", text: `v${model.version ?? "?"}` }),
        model.alias ? badge(statusOf({ status: model.alias })) : null),
      el("dl", { class: "kv" },
        provenance.map(([k, v, cls]) => [el("dt", { text: k }), el("dd", { class: cls, text: v })]))),
    el("p", { class: "result-foot", text:
      `${context.mode === "line" ? "From the TSV box" : "From the 39 fields"} · ` +
      `${Math.round(elapsed)} ms round trip · ${when} UTC` }),
  );
}


function renderPredictionError(error, context) {
  const result = $("result");
  if (error.status === 503) {
    result.dataset.state = "no-model";
    fill(result, notice("warn", "No model to answer yet", error.message,
      "Predictions start working once the pipeline has promoted a model."));
    loadModels();
    return;
  }
  if (error.status !== 422) {
    result.dataset.state = "error";
    const title = error.status === 0 ? "Could not reach the API" : `The API failed (HTTP ${error.status})`;
    fill(result, notice("error", title, error.message));
    return;
  }

  result.dataset.state = "invalid";
  const problems = fieldProblems(error.body);
  const unplaced = [];
  const placed = [];
  const lineMessages = [];
  for (const problem of problems) {
    const { field, line } = locate(problem.loc);
    if (context.mode === "fields" && field) {
      const existing = $(`f-${field}-error`).textContent;
      const first = !placed.includes(field);
      setFieldError(field, first || !existing ? problem.msg : `${existing} ${problem.msg}`);
      if (first) placed.push(field);
    } else if (context.mode === "line" && (field || line !== null)) {
      const where = [context.lines.length > 1 && line !== null ? `Line ${line + 1}` : null, field]
        .filter(Boolean).join(", ");
      lineMessages.push(where ? `${where}: ${problem.msg}` : problem.msg);
    } else {
      unplaced.push(problem.msg);
    }
  }

  if (context.mode === "line") {
    const all = lineMessages.concat(unplaced);
    const noTabs = context.lines.some((line) => !line.includes("\t"));
    if (noTabs) all.push("Hint: the line has no tab characters; Criteo lines are tab-separated.");
    showLineError(all.length ? all : [error.message]);
  } else if (unplaced.length) {
    const formError = $("fields-form-error");
    formError.textContent = unplaced.join(" ");
    formError.hidden = false;
  }

  const items = placed.map((name) => el("li", {},
    el("a", {
      href: `#f-${name}`, text: name,
      onclick: (event) => { event.preventDefault(); inputs[name].focus(); },
    }), `: ${$(`f-${name}-error`).textContent}`));
  const summary = placed.length
    ? `${placed.length} field${placed.length > 1 ? "s" : ""} need${placed.length > 1 ? "" : "s"} attention — the messages are next to them.`
    : context.mode === "line" ? "The details are under the TSV box." : "The details are under the form.";
  fill(result, notice("error", "The API rejected the input", error.message, summary,
    items.length ? el("ul", { class: "problem-list" }, items) : null));
  if (placed.length) inputs[placed[0]].focus();
}


/** The first row's five largest contributions (logit units) as signed bars, when the
 * answer carries explanations (POST /predict?explain=true). */
function explanationBars(body) {
  const explanations = Array.isArray(body.explanations) ? body.explanations : [];
  const top = topContributions(explanations[0], 5);
  if (!top.length) return null;
  const rows = Array.isArray(body.predictions) && body.predictions.length > 1 ? " (line 1)" : "";
  return el("figure", { class: "explain", id: "result-explanation" },
    el("figcaption", {}, `Largest contributions${rows}`,
      el("span", { class: "chart-note", text: " logit units, + raises the probability" })),
    el("ol", { class: "explain-bars" }, top.map((c) =>
      el("li", { "data-field": c.field, "data-sign": c.sign },
        el("span", { class: "explain-field mono", text: c.field }),
        el("span", { class: "explain-track", "aria-hidden": "true" },
          el("span", { class: `explain-bar explain-${c.sign}`, style: `width: ${c.width.toFixed(1)}%` })),
        el("span", { class: "explain-value mono", text: fmtSigned(c.value, 3) })))));
}

/* ---------- samples ---------- */

async function loadSample() {
  const button = $("load-sample");
  const note = $("sample-note");
  button.disabled = true;
  note.dataset.state = "loading";
  note.textContent = "Fetching sample rows…";
  try {
    if (state.sampleIndex + 1 >= state.samples.length) {
      const body = await api(`samples?n=${SAMPLE_BATCH}`);
      const rows = Array.isArray(body.rows) ? body.rows : [];
      const lines = Array.isArray(body.lines) ? body.lines : [];
      const labels = Array.isArray(body.labels) ? body.labels : [];
      state.samples = rows.map((row, i) => ({ row, line: lines[i], label: labels[i] }));
      state.sampleSource = body.source || null;
      state.sampleIndex = -1;
      if (!state.samples.length) throw new ApiError(200, body, "The newest data has no rows to sample.");
    }
    state.sampleIndex += 1;
    const sample = state.samples[state.sampleIndex];
    fillSample(sample);
    const label = sampleLabel(sample);
    note.dataset.state = "ready";
    fill(note,
      `Sample ${state.sampleIndex + 1} of ${state.samples.length}`,
      state.sampleSource ? [" from ", el("code", { text: state.sampleSource })] : "",
      label === null ? "" : [" · label ", el("strong", { text: label ? "1 (click)" : "0 (no click)" })],
      ". Press Predict to score it.");
  } catch (error) {
    note.dataset.state = "error";
    note.textContent = `Could not load a sample: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

/** Whether the sample row was clicked in the data (true/false), or null if unknown. */
function sampleLabel(sample) {
  const label = sample.label ?? sample.row.label;
  return label === undefined || label === null ? null : Number(label) === 1;
}

function fillSample(sample) {
  clearAllErrors();
  for (const name of FIELDS) {
    const value = sample.row[name];
    inputs[name].value = value === null || value === undefined ? "" : String(value);
  }
  $("tsv-line").value = sample.line ?? lineFromRow(sample.row);
  state.sampleLabel = sampleLabel(sample);
  const result = $("result");
  if (result.dataset.state === "done") result.dataset.stale = "true";
}

function clearInputs() {
  $("fields-form").reset();
  $("tsv-line").value = "";
  clearAllErrors();
  state.sampleLabel = null;
  const note = $("sample-note");
  note.textContent = "";
  delete note.dataset.state;
}

/* ---------- tabs ---------- */

function selectTab(tab, focus) {
  for (const other of document.querySelectorAll("[role=tab]")) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) tab.focus();
}

function wireTabs() {
  const tabs = Array.from(document.querySelectorAll("[role=tab]"));
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", (event) => {
      const moves = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      selectTab(tabs[(moves[event.key] + tabs.length) % tabs.length], true);
    });
  });
}

/* ---------- polling ---------- */

async function poll() {
  if (document.hidden || state.busy) return;
  try {
    const health = await api("health");
    const before = state.health;
    state.health = health;
    renderHealth(health, null);
    // A new version in serving means new registry facts too: refetch them.
    if (!state.info || String(before?.version ?? null) !== String(health.version ?? null)) {
      loadModels();
    }
  } catch (error) {
    renderHealth(null, error);
  }
}

/* ---------- monitoring ---------- */

async function loadMonitoring() {
  const card = $("monitoring-card");
  card.setAttribute("aria-busy", "true");
  try {
    state.monitoring = await api("monitoring?timeline=20");
    renderMonitoring(card, $("monitoring-body"), state.monitoring);
  } catch (error) {
    renderMonitoringError(card, $("monitoring-body"), error);
  } finally {
    card.removeAttribute("aria-busy");
  }
}

/* ---------- start ---------- */

function start() {
  $("api-base").textContent = apiBase.toString();
  buildFields();
  wireTabs();
  $("fields-form").addEventListener("submit", submitFields);
  $("line-form").addEventListener("submit", submitLine);
  $("tsv-line").addEventListener("input", () => {
    $("tsv-line").removeAttribute("aria-invalid");
    $("tsv-line-error").textContent = "";
    inputsEdited();
  });
  $("load-sample").addEventListener("click", loadSample);
  $("clear-input").addEventListener("click", clearInputs);
  $("refresh-models").addEventListener("click", loadModels);
  $("refresh-monitoring").addEventListener("click", loadMonitoring);
  loadModels();
  loadMonitoring();
  window.setInterval(poll, POLL_MS);
}

start();
