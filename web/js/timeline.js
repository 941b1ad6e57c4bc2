/* The audit timeline's items (registry events), shared by the history card and the
 * Monitoring panel. */
import { el } from "./dom.js";
import { aliasMove, eventKind, fmtAgo, fmtTime, versionLabel } from "./format.js";

export function historyItem(e) {
  const [label, colour] = eventKind(e.kind);
  const moves = [aliasMove("production", e.production_before, e.production_after),
    aliasMove("previous", e.previous_before, e.previous_after)].filter(Boolean);
  return el("li", { class: "timeline-item", "data-kind": e.kind },
    el("span", { class: `swatch swatch-${colour} timeline-dot`, "aria-hidden": "true" }),
    el("div", { class: "timeline-head" },
      el("time", { datetime: e.time, title: fmtAgo(e.time) || null, text: fmtTime(e.time) }),
      el("span", { class: `badge badge-${colour}`, text: label }),
      el("span", { class: "ver", text: versionLabel(e.version) })),
    el("p", { class: "timeline-reason", text: e.reason }),
    el("p", { class: "timeline-meta" },
      moves.length ? `${moves.join(" · ")} · ` : "",
      "by ", el("span", { class: "mono", text: e.actor })),
  );
}
