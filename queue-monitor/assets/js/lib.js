// What every page shares: building DOM from data (text only, never HTML), the JSON API
// with the CSRF header on actions, the live stream, formatting, toasts and confirmations.

// An element: `el("td", {class: "num"}, "12")`. Children are nodes or strings; strings
// become text nodes, so data from tasks (args, tracebacks, names) can never become markup.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Replaces the children of `node`.
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

// Where the monitor is served (`--url-prefix`, e.g. "/monitor"; "" at the root).
export const prefix = document.body.dataset.prefix || "";

// The address of the monitor's own `path` ("/tasks", "/api/…") under the prefix.
export function url(path) {
  return path.startsWith("/") ? `${prefix}${path}` : path;
}

// A link inside the monitor to `path` (one of `paths`, or "/tasks?…") with `text`.
export function link(path, text, attributes = {}) {
  return el("a", { href: url(path), ...attributes }, text);
}

export const paths = {
  task: (id) => `/tasks/${encodeURIComponent(id)}`,
  worker: (name) => `/workers/${encodeURIComponent(name)}`,
  queue: (name) => `/queues/${encodeURIComponent(name)}`,
};

// The last path segment (the task id, worker or queue of the page), decoded.
export function pathArgument() {
  const parts = location.pathname.split("/").filter(Boolean);
  return decodeURIComponent(parts[parts.length - 1] || "");
}

// ----- the API -----

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function cookie(name) {
  for (const pair of document.cookie.split(";")) {
    const [key, ...value] = pair.trim().split("=");
    if (key === name) return value.join("=");
  }
  return null;
}

// The double-submit token: the cookie's value, or asked for once when the cookie is missing.
async function csrfToken() {
  const fromCookie = cookie("queue_monitor_csrf");
  if (fromCookie) return fromCookie;
  const answer = await get("/api/csrf");
  return answer.token;
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body && body.error) || text || response.statusText;
    throw new ApiError(response.status, message);
  }
  return body;
}

// GET a JSON answer; `query` is an object of parameters (empty ones left out).
export async function get(path, query = {}) {
  const address = new URL(url(path), location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") address.searchParams.set(name, value);
  }
  const response = await fetch(address, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  return answer(response);
}

// POST (every action is one), with the CSRF header; `body` is sent as JSON when given.
export async function post(path, query = {}, body = undefined) {
  const address = new URL(url(path), location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") address.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json", "X-CSRF-Token": await csrfToken() };
  const init = { method: "POST", headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return answer(await fetch(address, init));
}

// Runs an action after the person confirmed it (when `question` is given), then says how
// it went in a toast; returns the answer, or null when cancelled or failed.
export async function act(question, action, success) {
  if (question && !(await confirmed(question))) return null;
  try {
    const result = await action();
    toast(typeof success === "function" ? success(result) : success || (result && result.message) || "Done");
    return result;
  } catch (error) {
    toast(error.message, "error");
    return null;
  }
}

// ----- live updates -----

const listeners = new Map();
let source = null;

// Calls `handler(data)` for each live event `type` (`tasks`, `workers`, `queues`, `beat`,
// `stats`, `lagged`, `hello`).
export function onLive(type, handler) {
  if (!listeners.has(type)) listeners.set(type, new Set());
  listeners.get(type).add(handler);
}

// Connects to /api/live (EventSource reconnects by itself) and shows its state in the bar.
export function connectLive(indicator) {
  if (source) return;
  source = new EventSource(url("/api/live"));
  const show = (state, text) => {
    indicator.className = `live ${state}`;
    indicator.textContent = text;
  };
  // A page left for another must let go of its stream: the browser keeps at most six
  // connections per host, and a page kept in the back/forward cache would hold one each.
  addEventListener("pagehide", () => source && source.close());
  // Back to a cached page: its data is stale and its stream closed; load it afresh.
  addEventListener("pageshow", (event) => event.persisted && location.reload());
  source.onopen = () => show("open", "live");
  source.onerror = () => show(source.readyState === EventSource.CLOSED ? "closed" : "connecting", "reconnecting…");
  for (const type of ["hello", "tasks", "workers", "queues", "beat", "stats", "lagged"]) {
    source.addEventListener(type, (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      if (type === "lagged") show("lagged", "caught up");
      for (const handler of listeners.get(type) || []) {
        try {
          handler(data);
        } catch (error) {
          console.error(`live ${type}`, error);
        }
      }
    });
  }
}

// Wraps `refresh` so that calls closer than `interval` ms coalesce into one (the last one
// runs, and never two at once).
export function throttled(refresh, interval = 1000) {
  let timer = null;
  let running = false;
  let again = false;
  let last = 0;
  const run = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = true;
    last = Date.now();
    try {
      await refresh();
    } catch (error) {
      console.error(error);
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  };
  const schedule = () => {
    if (timer) return;
    timer = setTimeout(run, Math.max(0, interval - (Date.now() - last)));
  };
  return schedule;
}

// ----- formatting -----

export function number(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function percent(ratio) {
  if (ratio === null || ratio === undefined) return "–";
  return `${(ratio * 100).toFixed(ratio > 0 && ratio < 0.01 ? 2 : 1)}%`;
}

// Seconds as "850 ms", "12.3 s", "4 min 5 s", "2 h 10 min".
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds === 0) return "0";
  if (seconds < 0.001) return `${(seconds * 1e6).toFixed(0)} µs`;
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 0)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.round((seconds % 86400) / 3600)} h`;
}

// Epoch seconds as local time: the time alone today, with the date otherwise.
export function time(epoch) {
  if (epoch === null || epoch === undefined) return "–";
  const date = new Date(epoch * 1000);
  const today = new Date().toDateString() === date.toDateString();
  const clock = date.toLocaleTimeString(undefined, { hour12: false });
  return today ? clock : `${date.toLocaleDateString()} ${clock}`;
}

export function ago(epoch) {
  if (epoch === null || epoch === undefined) return "–";
  const seconds = Date.now() / 1000 - epoch;
  if (seconds < 0) return `in ${duration(-seconds)}`;
  if (seconds < 1) return "just now";
  return `${duration(Math.round(seconds))} ago`;
}

// A time element: the local time, the exact one as its title.
export function when(epoch) {
  if (epoch === null || epoch === undefined) return el("span", { class: "muted" }, "–");
  return el("time", { datetime: new Date(epoch * 1000).toISOString(), title: new Date(epoch * 1000).toISOString() }, time(epoch));
}

export function badge(state, extra = "") {
  const text = state || "UNKNOWN";
  return el("span", { class: `badge ${text} ${extra}`.trim() }, text);
}

// A JSON value (or the string the worker sent) as readable text.
export function text(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

export function pre(value, extra = "") {
  return el("pre", { class: `block ${extra}`.trim() }, text(value) || "—");
}

export function table(headers, rows, emptyText = "Nothing here.") {
  const head = el("thead", {}, el("tr", {}, headers.map((header) =>
    typeof header === "string" ? el("th", {}, header) : el("th", { class: header.class }, header.text))));
  const body = el("tbody", {}, rows.length
    ? rows
    : el("tr", {}, el("td", { class: "empty", colspan: headers.length }, emptyText)));
  return el("table", {}, head, body);
}

export function card(label, value, extra = "") {
  return el("div", { class: `card ${extra}`.trim(), dataset: { card: label } }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

export function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.filter(Boolean).flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

// ----- toasts and confirmations -----

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const node = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(node);
  setTimeout(() => node.remove(), kind === "error" ? 8000 : 4000);
}

// Asks in the page's dialog (not window.confirm: the page stays scriptable and styled).
export function confirmed(question) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = question;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// An error shown in place of a page's content.
export function failure(error) {
  return el("div", { class: "panel" }, el("h2", {}, "Could not load this page"), pre(error.message || String(error), "error"));
}
