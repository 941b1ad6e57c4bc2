import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CAT_FIELDS, FIELDS, INT_FIELDS, errorMessage, fieldProblems, lineFromRow, linesFromText,
  localHint, locate, rowFromValues,
} from "../js/fields.js";

test("the 39 fields in the API's order", () => {
  assert.equal(INT_FIELDS.length, 13);
  assert.equal(CAT_FIELDS.length, 26);
  assert.deepEqual(FIELDS.slice(12, 14), ["I13", "C1"]);
});

test("local hints match what the API rejects", () => {
  assert.equal(localHint("C3", "68fd1e64"), "");
  assert.equal(localHint("C3", "68FD1E64"), "lowercase");
  assert.equal(localHint("C3", "zzzz"), "8 hex chars");
  assert.equal(localHint("I1", "3.5"), "integer");
  assert.equal(localHint("I1", " -7 "), "");
  assert.equal(localHint("I1", ""), "");
  assert.equal(localHint("I1", "", true), "not a number");
});

test("a row leaves empty fields out and sends integers as numbers", () => {
  const row = rowFromValues({ I1: "5", I2: " ", I3: "2.5", C1: " 68fd1e64 ", C2: "" });
  assert.deepEqual(row, { I1: 5, I3: 2.5, C1: "68fd1e64" });
});

test("TSV text becomes its non-empty lines; a row becomes a 39-field line", () => {
  assert.deepEqual(linesFromText("a\tb\r\n\nc\n"), ["a\tb", "c"]);
  const line = lineFromRow({ I1: 1, C26: "abcdef01" });
  assert.equal(line.split("\t").length, 39);
  assert.ok(line.startsWith("1\t") && line.endsWith("\tabcdef01"));
});

test("API problems are placed on their field and line", () => {
  assert.deepEqual(locate(["body", "rows", 0, "C3"]), { field: "C3", line: 0 });
  assert.deepEqual(locate(["body", "lines", 2]), { field: null, line: 2 });
  assert.deepEqual(locate(["body"]), { field: null, line: null });
  assert.deepEqual(fieldProblems({ errors: [{ loc: ["body", "rows", 0, "I1"], msg: "bad" }] }),
    [{ loc: ["body", "rows", 0, "I1"], msg: "bad" }]);
  assert.deepEqual(fieldProblems({ detail: [{ loc: "x", message: "m" }] }), [{ loc: [], msg: "m" }]);
  assert.deepEqual(fieldProblems(null), []);
});

test("the error sentence prefers the API's message", () => {
  assert.equal(errorMessage(422, "Unprocessable", { message: "too many rows" }), "too many rows");
  assert.equal(errorMessage(404, "Not Found", { detail: "Not Found" }), "Not Found");
  assert.equal(errorMessage(502, "Bad Gateway", null), "The API answered HTTP 502 Bad Gateway");
});
