/*
 * Per-row explanations of POST /predict?explain=true: {base_value, contributions:
 * [{field, value}, ... all 39]} in logit units (value > 0 pushes the click probability
 * up). Pure: the largest contributions as signed bars; the DOM side is in app.js.
 */

/**
 * The `n` contributions of largest magnitude (the API sorts them; sorted again here so
 * the page does not depend on it), each with `width`: its share of the largest
 * magnitude in percent, and `sign`: "up" or "down".
 */
export function topContributions(explanation, n = 5) {
  const list = (explanation && Array.isArray(explanation.contributions))
    ? explanation.contributions.filter((c) => c && Number.isFinite(c.value)) : [];
  const top = list.slice().sort((a, b) => Math.abs(b.value) - Math.abs(a.value)).slice(0, n);
  const largest = top.length ? Math.abs(top[0].value) : 0;
  return top.map((c) => ({
    field: String(c.field),
    value: c.value,
    sign: c.value < 0 ? "down" : "up",
    width: largest > 0 ? (Math.abs(c.value) / largest) * 100 : 0,
  }));
}

/** The logit of the base value plus every contribution, as a probability. */
export function probabilityFromLogits(explanation) {
  if (!explanation || !Number.isFinite(explanation.base_value)) return null;
  const total = (explanation.contributions || [])
    .reduce((sum, c) => sum + (Number.isFinite(c.value) ? c.value : 0), explanation.base_value);
  return 1 / (1 + Math.exp(-total));
}
