/*
 * The 39 Criteo fields and what the page checks before the API does. Pure: no DOM.
 * The API has the final word (ctr.criteo); these are instant hints.
 */
export const INT_FIELDS = Array.from({ length: 13 }, (_, i) => `I${i + 1}`);
export const CAT_FIELDS = Array.from({ length: 26 }, (_, i) => `C${i + 1}`);
export const FIELDS = INT_FIELDS.concat(CAT_FIELDS);
export const HEX8 = /^[0-9a-f]{8}$/; // the API rejects uppercase rather than guess

/**
 * The hint beside a field while typing: "" when fine or empty, else a few words.
 * `badInput`: the browser could not read a number input.
 */
export function localHint(name, raw, badInput = false) {
  const value = String(raw ?? "").trim();
  if (badInput) return "not a number";
  if (value === "") return "";
  if (name.startsWith("C") && !HEX8.test(value)) {
    return HEX8.test(value.toLowerCase()) ? "lowercase" : "8 hex chars";
  }
  if (name.startsWith("I") && !Number.isInteger(Number(value))) return "integer";
  return "";
}

/** A request row from field values (name -> text): empty = missing (left out). */
export function rowFromValues(values) {
  const row = {};
  for (const name of INT_FIELDS) {
    const value = String(values[name] ?? "").trim();
    if (value !== "") row[name] = Number(value); // non-integers go through; the API says why not
  }
  for (const name of CAT_FIELDS) {
    const value = String(values[name] ?? "").trim();
    if (value !== "") row[name] = value;
  }
  return row;
}

/** The non-empty lines of the TSV box (CR removed). */
export function linesFromText(text) {
  return String(text).replace(/\r/g, "").split("\n").filter((line) => line !== "");
}

/** A sample row as one TSV line (when /samples gave no line). */
export function lineFromRow(row) {
  return FIELDS.map((name) => row[name] ?? "").join("\t");
}

/** Where a problem belongs: {field, line} from a loc like ["body","rows",0,"C3"]. */
export function locate(loc) {
  const field = loc.find((part) => typeof part === "string" && FIELDS.includes(part)) || null;
  const at = loc.findIndex((part) => part === "lines" || part === "rows");
  const line = at >= 0 && Number.isInteger(loc[at + 1]) ? loc[at + 1] : null;
  return { field, line };
}

/** Field-level problems in our contract ({errors}) or FastAPI's default shape ({detail}). */
export function fieldProblems(body) {
  if (!body) return [];
  const list = Array.isArray(body.errors) ? body.errors : Array.isArray(body.detail) ? body.detail : [];
  return list.map((e) => ({
    loc: Array.isArray(e.loc) ? e.loc : [],
    msg: String(e.msg ?? e.message ?? "invalid value"),
  }));
}

/** The sentence to show for a failed answer. */
export function errorMessage(status, statusText, body) {
  if (body && typeof body.message === "string") return body.message;
  if (body && typeof body.detail === "string") return body.detail;
  if (body && typeof body.error === "string") return body.error;
  return `The API answered HTTP ${status} ${statusText || ""}`.trim();
}
