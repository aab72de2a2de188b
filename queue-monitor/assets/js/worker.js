// One worker: its stats, running, reserved and scheduled tasks, queues, registered tasks
// and configuration; actions: shutdown, pool grow/shrink/autoscale, add/cancel consumer,
// rate and time limits.
import { act, ago, card, el, facts, fill, get, link, number, onLive, pathArgument, paths, post, pre, table, text, throttled, time, when } from "./lib.js";
import { workerStatus } from "./workers.js";

function field(label, input) {
  return el("label", { class: "field" }, label, input);
}

// A task as inspect lists it (active, reserved, scheduled: the latter wraps it in `request`).
function inspected(entry) {
  const task = entry.request || entry;
  return {
    id: task.id,
    name: task.name || task.type,
    args: task.argsrepr ?? text(task.args),
    kwargs: task.kwargsrepr ?? text(task.kwargs),
    started: task.time_start,
    eta: entry.eta,
  };
}

export async function render(main) {
  const hostname = pathArgument();
  const api = (path) => `${path}/${encodeURIComponent(hostname)}`;
  const cards = el("div", { class: "cards" });
  const about = el("div");
  const running = el("div", { id: "active-tasks" });
  const reserved = el("div", { id: "reserved-tasks" });
  const scheduled = el("div", { id: "scheduled-tasks" });
  const queues = el("div", { id: "worker-queues" });
  const registered = el("div");
  const stats = el("div");
  const conf = el("div");
  const status = el("span");

  const growBy = el("input", { type: "number", min: 1, value: 1, id: "pool-n", "aria-label": "processes" });
  const autoscaleMin = el("input", { type: "number", min: 0, placeholder: "min", id: "autoscale-min" });
  const autoscaleMax = el("input", { type: "number", min: 1, placeholder: "max", id: "autoscale-max" });
  const newQueue = el("input", { type: "text", placeholder: "queue", id: "consumer-queue" });
  const limitTask = el("select", { id: "limit-task", "aria-label": "task" });
  const rate = el("input", { type: "text", placeholder: "10/m", id: "rate-limit" });
  const soft = el("input", { type: "number", min: 0, step: "any", placeholder: "soft s", id: "soft-limit" });
  const hard = el("input", { type: "number", min: 0, step: "any", placeholder: "hard s", id: "hard-limit" });

  fill(
    main,
    el("h1", {}, link("/workers", "Workers"), " / ", el("span", { id: "worker-name" }, hostname), status),
    cards,
    el("div", { class: "panel" }, el("h2", {}, "Actions"),
      el("div", { class: "actions" },
        el("div", { class: "group" }, field("pool", growBy),
          el("button", { id: "pool-grow", onclick: () => control("pool/grow", { n: growBy.value }) }, "Grow"),
          el("button", { id: "pool-shrink", onclick: () => control("pool/shrink", { n: growBy.value }) }, "Shrink")),
        el("div", { class: "group" }, field("autoscale", el("span", { class: "actions" }, autoscaleMin, autoscaleMax)),
          el("button", { id: "autoscale", onclick: () => control("pool/autoscale", { min: autoscaleMin.value, max: autoscaleMax.value }) }, "Autoscale")),
        el("div", { class: "group" }, field("consume a queue", newQueue),
          el("button", { id: "add-consumer", onclick: () => control("queue/add-consumer", { queue: newQueue.value.trim() }) }, "Add consumer")),
        el("div", { class: "group" },
          el("button", { class: "danger", id: "shutdown", onclick: () => control("shutdown", {}, `Shut down ${hostname}? It finishes its running tasks and exits.`) }, "Shut down…"))),
      el("div", { class: "actions" },
        el("div", { class: "group" }, field("task", limitTask), field("rate limit", rate),
          el("button", { id: "set-rate-limit", onclick: () => limit("rate-limit", { ratelimit: rate.value.trim() }) }, "Set rate limit")),
        el("div", { class: "group" }, field("soft (s)", soft), field("hard (s)", hard),
          el("button", { id: "set-time-limit", onclick: () => limit("timeout", { soft: soft.value, hard: hard.value }) }, "Set time limits")))),
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("h2", {}, "About"), about),
      el("div", { class: "panel" }, el("h2", {}, "Queues consumed"), queues)),
    el("div", { class: "panel" }, el("h2", {}, "Running tasks"), running),
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("h2", {}, "Reserved (prefetched)"), reserved),
      el("div", { class: "panel" }, el("h2", {}, "Scheduled (ETA)"), scheduled)),
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("h2", {}, "Registered tasks"), registered),
      el("div", { class: "panel" }, el("h2", {}, "Stats"), stats)),
    el("div", { class: "panel" }, el("h2", {}, "Configuration"), conf),
  );

  let worker = null;

  const taskRows = (entries, withActions) => entries.map(inspected).map((task) => el("tr", { dataset: { task: task.id || "" } },
    el("td", { class: "mono" }, task.id ? link(paths.task(task.id), task.id) : "–"),
    el("td", {}, task.name || ""),
    el("td", { class: "mono clip", title: `${task.args} ${task.kwargs}` }, `${task.args || ""} ${task.kwargs && task.kwargs !== "{}" ? task.kwargs : ""}`),
    el("td", {}, task.started ? ago(task.started) : task.eta ? String(task.eta) : "–"),
    withActions && task.id
      ? el("td", { class: "actions" },
        el("button", { onclick: () => revoke(task.id, false) }, "Revoke"),
        el("button", { class: "danger", onclick: () => revoke(task.id, true) }, "Terminate…"))
      : el("td")));

  const draw = () => {
    fill(status, workerStatus(worker));
    fill(
      cards,
      card("Concurrency", number(worker.concurrency)),
      card("Running", number(worker.active ? worker.active.length : worker.active_tasks)),
      card("Reserved", number(worker.reserved_tasks)),
      card("Processed", number(worker.processed)),
      card("Prefetch", number(worker.prefetch_count)),
      card("Heartbeat", ago(worker.last_heartbeat), worker.online ? "" : "bad"),
    );
    fill(about, facts([
      ["Status", worker.status || (worker.online ? "online" : "offline")],
      ["Software", [worker.sw_ident, worker.sw_ver, worker.sw_sys].filter(Boolean).join(" ")],
      ["Process", worker.pid ? String(worker.pid) : "–"],
      ["Pool", worker.stats && worker.stats.pool ? text(worker.stats.pool.implementation || "") : "–"],
      ["Load average", (worker.loadavg || []).map((load) => number(load, 2)).join(" ") || "–"],
      ["Heartbeat every", worker.freq ? `${worker.freq} s` : "–"],
      ["Last heartbeat", when(worker.last_heartbeat)],
      ["Inspected", worker.inspected_at ? time(worker.inspected_at) : "not answered yet"],
    ]));
    const consumed = worker.active_queues ? worker.active_queues.map((queue) => queue.name) : worker.queues || [];
    fill(queues, table(["Queue", "Exchange", "Routing key", ""],
      consumed.map((name) => {
        const detail = (worker.active_queues || []).find((queue) => queue.name === name) || {};
        return el("tr", { dataset: { queue: name } },
          el("td", {}, link(paths.queue(name), name)),
          el("td", { class: "muted" }, detail.exchange ? `${detail.exchange.name} (${detail.exchange.type})` : ""),
          el("td", { class: "muted" }, detail.routing_key || ""),
          el("td", {}, el("button", { class: "cancel-consumer", onclick: () => control("queue/cancel-consumer", { queue: name }, `Stop consuming ${name} on ${hostname}?`) }, "Cancel consumer")));
      }), "Not consuming any queue."));
    const headers = ["Task id", "Task", "Arguments", "Since", ""];
    fill(running, table(headers, taskRows(worker.active || [], true), "Nothing running."));
    fill(reserved, table(headers, taskRows(worker.reserved || [], true), "Nothing reserved."));
    fill(scheduled, table(headers, taskRows(worker.scheduled || [], true), "Nothing scheduled."));
    const names = worker.registered || [];
    fill(registered, names.length ? el("div", {}, names.map((name) => el("span", { class: "chip" }, name))) : el("p", { class: "muted" }, "Not answered yet."));
    const taskNames = names.map((name) => name.split(" ")[0]);
    if ([...limitTask.options].map((option) => option.value).join("\n") !== taskNames.join("\n")) {
      const chosen = limitTask.value;
      fill(limitTask, taskNames.map((name) => el("option", { value: name }, name)));
      if (taskNames.includes(chosen)) limitTask.value = chosen;
    }
    fill(stats, worker.stats ? pre(worker.stats) : el("p", { class: "muted" }, "Not answered yet."));
    fill(conf, worker.conf ? pre(worker.conf) : el("p", { class: "muted" }, "Not answered yet."));
  };

  const refresh = async () => {
    worker = await get(`/api/dashboard/workers/${encodeURIComponent(hostname)}`);
    draw();
  };

  async function control(action, query, question = null) {
    await act(question, () => post(api(`/api/worker/${action}`), query));
    await refresh();
  }
  async function limit(kind, query) {
    const task = limitTask.value;
    if (!task) return;
    await act(null, () => post(`/api/task/${kind}/${encodeURIComponent(task)}`, { workername: hostname, ...query }));
    await refresh();
  }
  async function revoke(id, terminate) {
    await act(terminate ? `Terminate task ${id}? Its process is signalled (SIGTERM).` : null,
      () => post(`/api/dashboard/tasks/${encodeURIComponent(id)}/revoke`, { terminate: terminate ? "true" : "" }));
    await refresh();
  }

  await refresh();
  const again = throttled(refresh, 2000);
  onLive("workers", (update) => {
    if (update.workers.some((one) => one.hostname === hostname)) again();
  });
  onLive("tasks", (update) => {
    if (update.tasks.some((task) => task.worker === hostname)) again();
  });
  onLive("lagged", again);
}
