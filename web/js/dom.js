/*
 * Building DOM nodes: el("p", {class: "x"}, "text", otherNode), svg(...), fill(node, ...).
 * Attribute rules: null/undefined/false are left out, true is an empty attribute,
 * "text" sets textContent, "onclick" and friends add listeners.
 */
export const SVG_NS = "http://www.w3.org/2000/svg";

/** Create an element: el("p", {class: "x"}, "text", otherNode). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  appendAll(node, children);
  return node;
}

/** Replace a node's content, with el()'s rules for children (arrays, null). */
export function fill(node, ...children) {
  node.replaceChildren();
  appendAll(node, children);
}

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  appendAll(node, children);
  return node;
}

export function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

export function appendAll(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** A status badge: <span class="badge badge-production">production</span>. */
export function badge(status, text) {
  return el("span", { class: `badge badge-${status}`, text: text ?? status });
}

/** A notice box with a title, a message and extra paragraphs or nodes. */
export function notice(kind, title, message, ...extra) {
  return el("div", { class: `notice notice-${kind}` },
    el("p", { class: "notice-title", text: title }),
    el("p", { class: "notice-message", text: message }),
    extra.map((item) => (typeof item === "string" ? el("p", { class: "notice-extra", text: item }) : item)));
}
