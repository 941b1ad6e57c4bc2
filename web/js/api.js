/*
 * Talking to the predict API. Every URL is relative to the API base, so the page works
 * at the API root and behind an API Gateway stage prefix; ?api=<base URL> points a
 * static copy elsewhere. No DOM access (fetch and timers only).
 */
import { errorMessage } from "./fields.js";

export const REQUEST_TIMEOUT_MS = 30000; // API Gateway gives up at 29 s

export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status; // 0 = no HTTP answer at all
    this.body = body;
  }
}

/** The API base URL (ends with "/") from the page's search string and base URI. */
export function resolveApiBase(search, baseURI) {
  const override = new URLSearchParams(search).get("api");
  const base = new URL(override || ".", baseURI);
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  return base;
}

/** api(path) GETs, api(path, {json}) POSTs; resolves with the JSON body or throws ApiError. */
export function makeApi(apiBase, fetchImpl = (...args) => fetch(...args)) {
  return async function api(path, options = {}) {
    const init = { method: "GET", headers: { Accept: "application/json" } };
    if (options.json !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.json);
    }
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    init.signal = controller.signal;
    let response;
    try {
      response = await fetchImpl(new URL(path, apiBase), init);
    } catch (err) {
      const why = err.name === "AbortError" ? "no answer within 30 s" : err.message;
      throw new ApiError(0, null, `Could not reach the API (${why}).`);
    } finally {
      clearTimeout(timer);
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, body, errorMessage(response.status, response.statusText, body));
    }
    if (body === null) {
      throw new ApiError(response.status, null, "The API answered with something that is not JSON.");
    }
    return body;
  };
}
