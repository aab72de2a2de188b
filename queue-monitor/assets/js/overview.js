// Overview: workers online, tasks/s, failure rate, and per task type the runtime and wait
// percentiles over time, as charts. Numbers follow the live `stats`; the series are
// fetched again every few seconds.
import { card, duration, el, fill, get, link, number, onLive, percent, table, throttled } from "./lib.js";
import { timeChart } from "./charts.js";

const REFRESH_MS = 5000;

// Buckets kept before the first one with any task, so a young monitor's charts are not a
// long flat line (the whole window shows once it has history).
const LEAD = 5;

// The overview without its leading empty buckets (the same cut for every series).
function trimmed(overview) {
  const active = (values) => values.findIndex((value) => value !== null && value !== 0);
  const firsts = [active(overview.series.tasks_per_second)]
    .concat(Object.values(overview.task_types).map((type) => active(type.time.map((_, index) => (type.succeeded[index] || 0) + (type.failed[index] || 0)))))
    .filter((index) => index >= 0);
  const first = firsts.length ? Math.min(...firsts) : overview.series.time.length;
  const start = overview.series.time[Math.max(0, Math.min(first, overview.series.time.length - LEAD) - LEAD)];
  if (start === undefined) return overview;
  const cut = (columns) => {
    const from = columns.time.findIndex((moment) => moment >= start);
    if (from <= 0) return columns;
    return Object.fromEntries(Object.entries(columns).map(([key, values]) => [key, Array.isArray(values) ? values.slice(from) : values]));
  };
  return {
    ...overview,
    series: cut(overview.series),
    task_types: Object.fromEntries(Object.entries(overview.task_types).map(([name, type]) => [name, cut(type)])),
  };
}

export async function render(main) {
  const cards = el("div", { class: "cards", id: "overview-cards" });
  const throughput = timeChart("Tasks per second", [{ label: "succeeded + failed" }, { label: "failed", color: "#dc2626" }], "rate");
  const failures = timeChart("Failure rate", [{ label: "failure rate", color: "#dc2626" }], "ratio");
  const picker = el("select", { id: "task-type", "aria-label": "task type" });
  const runtime = timeChart("Runtime", [{ label: "p50" }, { label: "p95", color: "#ea580c" }, { label: "p99", color: "#dc2626" }], "seconds");
  const wait = timeChart("Wait before start", [{ label: "p50" }, { label: "p95", color: "#ea580c" }, { label: "p99", color: "#dc2626" }], "seconds");
  const types = el("div", { id: "task-types" });
  fill(
    main,
    el("h1", {}, "Overview", el("span", { class: "sub", id: "overview-window" })),
    cards,
    el("div", { class: "grid" }, el("div", { class: "panel" }, throughput.node), el("div", { class: "panel" }, failures.node)),
    el("div", { class: "panel" },
      el("div", { class: "actions" }, el("h2", {}, "Latency by task type"), el("label", { class: "field" }, "task type", picker)),
      el("div", { class: "grid" }, runtime.node, wait.node)),
    el("div", { class: "panel" }, el("h2", {}, "Task types"), types),
  );

  let overview = null;
  let live = null;
  let chosen = null;

  const drawCards = () => {
    if (!overview) return;
    const online = live ? live.workers_online : overview.workers_online;
    const rate = live ? live.tasks_per_second : overview.tasks_per_second;
    fill(
      cards,
      card("Workers online", number(online), online > 0 ? "good" : "bad"),
      card("Workers offline", number(overview.workers_offline)),
      card("Tasks / s", number(rate, 2)),
      card("Failure rate (1 min)", percent(overview.failure_rate), overview.failure_rate > 0.05 ? "bad" : ""),
      card("Succeeded", number(overview.totals.succeeded)),
      card("Failed", number(overview.totals.failed), overview.totals.failed ? "bad" : ""),
      card("Retried", number(overview.totals.retried)),
      card("Revoked", number(overview.totals.revoked)),
    );
  };

  const drawTypes = () => {
    const names = Object.keys(overview.task_types).sort();
    const sum = (values) => values.reduce((total, value) => total + (value || 0), 0);
    const last = (values) => [...values].reverse().find((value) => value !== null && value !== undefined) ?? null;
    const totals = Object.fromEntries(names.map((name) => {
      const type = overview.task_types[name];
      return [name, sum(type.succeeded) + sum(type.failed)];
    }));
    if (!chosen || !overview.task_types[chosen]) {
      chosen = names.slice().sort((a, b) => totals[b] - totals[a])[0] || null;
    }
    if (picker.options.length !== names.length || [...picker.options].some((option, index) => option.value !== names[index])) {
      fill(picker, names.map((name) => el("option", { value: name }, name)));
    }
    if (chosen) picker.value = chosen;
    fill(types, table(
      ["Task", { text: "Succeeded", class: "num" }, { text: "Failed", class: "num" }, { text: "Runtime p50", class: "num" },
        { text: "p95", class: "num" }, { text: "p99", class: "num" }, { text: "Wait p95", class: "num" }],
      names.map((name) => {
        const type = overview.task_types[name];
        return el("tr", { class: name === chosen ? "selected" : "" },
          el("td", {}, link(`/tasks?name=${encodeURIComponent(name)}`, name)),
          el("td", { class: "num" }, number(sum(type.succeeded))),
          el("td", { class: "num" }, number(sum(type.failed))),
          el("td", { class: "num" }, duration(last(type.runtime_p50))),
          el("td", { class: "num" }, duration(last(type.runtime_p95))),
          el("td", { class: "num" }, duration(last(type.runtime_p99))),
          el("td", { class: "num" }, duration(last(type.wait_p95))));
      }),
      "No task has run in this window yet.",
    ));
    const type = chosen && overview.task_types[chosen];
    if (type) {
      runtime.update(type.time, type.runtime_p50, type.runtime_p95, type.runtime_p99);
      wait.update(type.time, type.wait_p50, type.wait_p95, type.wait_p99);
    } else {
      runtime.update([], [], [], []);
      wait.update([], [], [], []);
    }
  };

  const refresh = async () => {
    overview = trimmed(await get("/api/dashboard/overview"));
    const series = overview.series;
    document.getElementById("overview-window").textContent =
      `last ${duration(series.time.length * overview.bucket_seconds)}, ${duration(overview.bucket_seconds)} buckets`;
    throughput.update(series.time, series.tasks_per_second, series.failures_per_second);
    failures.update(series.time, series.failure_rate);
    drawCards();
    drawTypes();
  };

  picker.addEventListener("change", () => {
    chosen = picker.value;
    drawTypes();
  });
  await refresh();
  const again = throttled(refresh, REFRESH_MS);
  setInterval(again, REFRESH_MS);
  onLive("stats", (stats) => {
    live = stats;
    drawCards();
  });
  onLive("lagged", again);
}
