/*
 * Formatting numbers, times and registry facts for the page. Pure: no DOM, no
 * globals; `node --test web/test` covers it.
 */
export const KNOWN_STATUSES = ["production", "previous", "rejected", "candidate", "archived"];

// Audit event kinds (ctr.registry.audit) -> label and the badge colour they share.
export const EVENT_KINDS = {
  registered: ["registered", "candidate"],
  promoted: ["promoted", "production"],
  manual_promote: ["promoted by hand", "production"],
  rejected: ["rejected", "rejected"],
  rollback: ["rolled back", "previous"],
};

/** A number from a JSON number or a numeric string; NaN for anything else. */
export function num(value) {
  if (typeof value === "number") return value;
  if (typeof value === "string" && value.trim() !== "") return Number(value);
  return NaN;
}

export function fmtMetric(value, digits = 4) {
  const x = num(value);
  return Number.isFinite(x) ? x.toFixed(digits) : "—";
}

export function fmtCount(value) {
  const x = num(value);
  return Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : "—";
}

export function fmtShare(value) {
  const x = num(value);
  return Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : "—";
}

/** A probability as a percentage with two decimals, never rounding to 0 or 100. */
export function fmtPercent(p) {
  const pct = p * 100;
  if (pct > 0 && pct < 0.01) return "<0.01";
  if (pct < 100 && pct > 99.99) return ">99.99";
  return pct.toFixed(2);
}

/** A signed number: "+0.0123" / "−0.0456" (a real minus sign). */
export function fmtSigned(value, digits = 4) {
  const x = num(value);
  if (!Number.isFinite(x)) return "—";
  const text = Math.abs(x).toFixed(digits);
  return `${x < 0 ? "−" : "+"}${text}`;
}

export function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  let date;
  if (typeof value === "number") date = new Date(value > 1e12 ? value : value * 1000);
  else date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "2026-03-05 14:03 UTC" — one time zone for everyone reading the same page. */
export function fmtTime(value) {
  const date = toDate(value);
  if (!date) return value ? String(value) : "—";
  return `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

export function fmtAgo(value, now = Date.now()) {
  const date = toDate(value);
  if (!date) return "";
  const seconds = Math.round((now - date.getTime()) / 1000);
  if (seconds < 0) return "";
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function statusOf(version) {
  const status = String(version.status || "").toLowerCase();
  return KNOWN_STATUSES.includes(status) ? status : "none";
}

export function metric(version, key) {
  return (version.metrics || {})[key] ?? version[key];
}

export function versionLabel(n) {
  return n === null || n === undefined ? "none" : `v${n}`;
}

/** "production v2 → v3" when an alias moved, else null. */
export function aliasMove(name, before, after) {
  if (String(before ?? "") === String(after ?? "")) return null;
  return `${name} ${versionLabel(before)} → ${versionLabel(after)}`;
}

/** "vs v2: -0.00250 (upper -0.00151)": the gate's comparison on shared rows. */
export function gateText(v) {
  const g = v.gate || {};
  if (!g.logloss_diff_upper95) return "—";
  const against = g.compared_with_version === "prior" ? "prior" : `v${g.compared_with_version}`;
  return `vs ${against}: ${g.logloss_diff_mean} (upper ${g.logloss_diff_upper95})`;
}

/** The label and badge colour of an audit event kind (unknown kinds: their name, grey). */
export function eventKind(kind) {
  if (EVENT_KINDS[kind]) return EVENT_KINDS[kind];
  if (String(kind).includes("rollback")) return [String(kind).replace(/_/g, " "), "previous"];
  return [String(kind), "none"];
}
