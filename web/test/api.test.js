import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, makeApi, resolveApiBase } from "../js/api.js";

test("the API base is the page's directory, or ?api=", () => {
  assert.equal(resolveApiBase("", "http://h/restapis/x/v1/_user_request_/").href,
    "http://h/restapis/x/v1/_user_request_/");
  assert.equal(resolveApiBase("?api=http://other:9/base", "http://h/").href, "http://other:9/base/");
});

function fakeFetch(status, text, statusText = "") {
  const calls = [];
  const impl = async (url, init) => {
    calls.push({ url: String(url), init });
    return { ok: status >= 200 && status < 300, status, statusText, text: async () => text };
  };
  return { impl, calls };
}

test("GET and POST resolve with the JSON body", async () => {
  const { impl, calls } = fakeFetch(200, '{"ok": true}');
  const api = makeApi(new URL("http://h/v1/"), impl);
  assert.deepEqual(await api("health"), { ok: true });
  await api("predict", { json: { rows: [{}] } });
  assert.equal(calls[0].url, "http://h/v1/health");
  assert.equal(calls[1].init.method, "POST");
  assert.equal(calls[1].init.body, '{"rows":[{}]}');
});

test("an error answer throws ApiError with the API's message and body", async () => {
  const { impl } = fakeFetch(422, '{"message": "bad row", "errors": []}', "Unprocessable");
  const api = makeApi(new URL("http://h/"), impl);
  await assert.rejects(api("predict", { json: {} }), (err) =>
    err instanceof ApiError && err.status === 422 && err.message === "bad row"
    && Array.isArray(err.body.errors));
});

test("no answer at all is status 0; a non-JSON 200 is an error too", async () => {
  const api = makeApi(new URL("http://h/"), async () => { throw new TypeError("connection refused"); });
  await assert.rejects(api("health"), (err) => err.status === 0 && /connection refused/.test(err.message));
  const html = makeApi(new URL("http://h/"), fakeFetch(200, "<html>").impl);
  await assert.rejects(html("health"), /not JSON/);
});
