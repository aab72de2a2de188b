// Tasks: search the whole history with filters (state, name, worker, time range) and
// Flower's search syntax; the filters live in the address, so a search can be shared.
// On the first page the list follows the live `tasks` message.
import { badge, duration, el, fill, get, link, number, onLive, paths, table, throttled, url, when } from "./lib.js";

const STATES = ["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED"];
const SORTS = [
  ["-timestamp", "last change, newest first"],
  ["timestamp", "last change, oldest first"],
  ["-received", "received, newest first"],
  ["-runtime", "runtime, longest first"],
  ["runtime", "runtime, shortest first"],
  ["name", "name"],
  ["state", "state"],
];
const PAGE = 50;

// `datetime-local` value (local time) <-> epoch seconds.
function toLocalInput(epoch) {
  if (!epoch) return "";
  const date = new Date(Number(epoch) * 1000);
  const pad = (value) => String(value).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}
function fromLocalInput(value) {
  if (!value) return "";
  const epoch = new Date(value).getTime() / 1000;
  return Number.isFinite(epoch) ? String(Math.floor(epoch)) : "";
}

export async function render(main) {
  const params = new URLSearchParams(location.search);
  const search = el("input", { type: "search", name: "q", class: "wide", id: "search", value: params.get("q") || "",
    placeholder: "state:FAILURE name:tasks.add args:42 kwargs:user=7", "aria-label": "search" });
  const states = el("select", { name: "state", id: "state-filter", "aria-label": "state" },
    el("option", { value: "" }, "any state"), STATES.map((state) => el("option", { value: state }, state)));
  states.value = params.get("state") || "";
  const names = el("select", { name: "name", id: "name-filter", "aria-label": "task name" }, el("option", { value: "" }, "any task"));
  const workers = el("select", { name: "worker", id: "worker-filter", "aria-label": "worker" }, el("option", { value: "" }, "any worker"));
  const from = el("input", { type: "datetime-local", name: "from", value: toLocalInput(params.get("from")), "aria-label": "from" });
  const to = el("input", { type: "datetime-local", name: "to", value: toLocalInput(params.get("to")), "aria-label": "to" });
  const sort = el("select", { name: "sort", id: "sort", "aria-label": "sort" }, SORTS.map(([value, label]) => el("option", { value }, label)));
  sort.value = params.get("sort") || "-timestamp";
  let offset = Number(params.get("offset") || 0);

  const summary = el("span", { class: "muted", id: "task-count" });
  const results = el("div", { id: "task-table" });
  const previous = el("button", { id: "previous-page" }, "← Newer");
  const next = el("button", { id: "next-page" }, "Older →");
  const form = el("form", { class: "filters", id: "task-search" },
    el("label", {}, "search", search), el("label", {}, "state", states), el("label", {}, "task", names),
    el("label", {}, "worker", workers), el("label", {}, "received from", from), el("label", {}, "to", to),
    el("label", {}, "sort", sort), el("button", { class: "primary", type: "submit" }, "Search"),
    el("button", { type: "button", id: "clear-search", onclick: () => clear() }, "Clear"));

  fill(
    main,
    el("h1", {}, "Tasks", summary),
    el("div", { class: "panel" }, form,
      el("div", { class: "help" }, "Search syntax (Flower's): terms all match; ", el("code", {}, "OR"), " between terms; ",
        el("code", {}, "field:value"), " with name, state, worker, args, kwargs, result; ", el("code", {}, "kwargs:key=value"),
        "; quotes for spaces; plain words match id, name, worker, args and result.")),
    el("div", { class: "panel" }, results, el("div", { class: "pager" }, previous, next)),
  );

  // The filter lists: every task name in the history, every worker known.
  const [types, known] = await Promise.all([get("/api/task/types").catch(() => ({ "task-types": [] })), get("/api/dashboard/workers").catch(() => ({ workers: [] }))]);
  for (const name of types["task-types"].sort()) names.append(el("option", { value: name }, name));
  for (const worker of known.workers.map((one) => one.hostname).sort()) workers.append(el("option", { value: worker }, worker));
  for (const [select, key] of [[names, "name"], [workers, "worker"]]) {
    const wanted = params.get(key);
    if (wanted && ![...select.options].some((option) => option.value === wanted)) select.append(el("option", { value: wanted }, wanted));
    select.value = wanted || "";
  }

  const query = () => ({
    q: search.value.trim(), state: states.value, name: names.value, worker: workers.value,
    from: fromLocalInput(from.value), to: fromLocalInput(to.value), sort: sort.value === "-timestamp" ? "" : sort.value,
    offset: offset || "",
  });

  let shown = new Set();
  const load = async (fresh = false) => {
    const wanted = query();
    const address = new URLSearchParams(Object.entries(wanted).filter(([, value]) => value !== ""));
    history.replaceState(null, "", url(address.toString() ? `/tasks?${address}` : "/tasks"));
    let answer;
    try {
      answer = await get("/api/dashboard/tasks", { ...wanted, sort: sort.value, limit: PAGE });
    } catch (error) {
      fill(results, el("p", { class: "error", role: "alert" }, error.message));
      summary.textContent = "";
      return;
    }
    const before = shown;
    shown = new Set(answer.tasks.map((task) => task.uuid));
    summary.textContent = `${number(answer.total)}${answer.total_capped ? "+" : ""} found in ${number(answer.took_ms, 1)} ms`;
    fill(results, table(
      ["State", "Task", "Id", "Arguments", "Result", "Worker", "Received", { text: "Runtime", class: "num" }, { text: "Wait", class: "num" }],
      answer.tasks.map((task) => el("tr", { class: fresh && !before.has(task.uuid) ? "fresh" : "", dataset: { task: task.uuid, state: task.state } },
        el("td", {}, badge(task.state)),
        el("td", { class: "nowrap" }, task.name || el("span", { class: "muted" }, "unknown")),
        el("td", { class: "mono nowrap" }, link(paths.task(task.uuid), `${task.uuid.slice(0, 8)}…`, { title: task.uuid })),
        el("td", { class: "mono clip", title: `${task.args || ""} ${task.kwargs || ""}` }, `${task.args || ""}${task.kwargs && task.kwargs !== "{}" ? ` ${task.kwargs}` : ""}`),
        el("td", { class: `mono clip${task.exception ? " error" : ""}`, title: task.exception || task.result || "" }, task.exception || task.result || ""),
        el("td", { class: "nowrap" }, task.worker ? link(paths.worker(task.worker), task.worker) : ""),
        el("td", {}, when(task.received ?? task.timestamp)),
        el("td", { class: "num" }, duration(task.runtime)),
        el("td", { class: "num" }, duration(task.wait)))),
      "No task matches.",
    ));
    previous.disabled = offset === 0;
    next.disabled = offset + PAGE >= answer.total;
  };

  const clear = () => {
    search.value = "";
    states.value = names.value = workers.value = from.value = to.value = "";
    sort.value = "-timestamp";
    offset = 0;
    load();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    offset = 0;
    load();
  });
  for (const select of [states, names, workers, sort]) select.addEventListener("change", () => { offset = 0; load(); });
  previous.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
  next.addEventListener("click", () => { offset += PAGE; load(); });

  await load();
  // Live: on the first page, search again (at most once a second) when tasks change; a
  // task name or worker not in the lists yet is added to them.
  const again = throttled(() => load(true), 1000);
  onLive("tasks", (update) => {
    for (const task of update.tasks) {
      if (task.name && ![...names.options].some((option) => option.value === task.name)) names.append(el("option", { value: task.name }, task.name));
      if (task.worker && ![...workers.options].some((option) => option.value === task.worker)) workers.append(el("option", { value: task.worker }, task.worker));
    }
    if (offset === 0) again();
  });
  onLive("lagged", again);
}
