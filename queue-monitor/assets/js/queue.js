// One queue: its backlog over time, its dead letters (browse, requeue, purge) and delayed
// tasks (browse, run now), and purging its ready messages.
import { act, badge, card, duration, el, fill, get, link, number, onLive, pathArgument, paths, post, table, text, throttled, time, toast } from "./lib.js";
import { timeChart } from "./charts.js";

const LISTED = 200;

// The arguments of a listed message as the producer showed them (argsrepr), else as JSON.
function args(message) {
  const shown = message.argsrepr ?? (message.args === null || message.args === undefined ? "" : text(message.args));
  const keywords = message.kwargsrepr ?? (message.kwargs === null || message.kwargs === undefined ? "" : JSON.stringify(message.kwargs));
  return keywords && keywords !== "{}" ? `${shown} ${keywords}` : shown;
}

function selection(container) {
  return [...container.querySelectorAll("input[type=checkbox][data-id]:checked")].map((box) => box.dataset.id);
}

function checkbox(id) {
  return id ? el("input", { type: "checkbox", dataset: { id }, "aria-label": `select ${id}` }) : "";
}

export async function render(main) {
  const name = pathArgument();
  const base = `/api/dashboard/queues/${encodeURIComponent(name)}`;
  const cards = el("div", { class: "cards" });
  const chart = timeChart("Backlog", [{ label: "ready" }, { label: "delayed", color: "#9333ea" }, { label: "dead letters", color: "#dc2626" }], "count", 240);
  const deadLetters = el("div", { id: "dead-letters" });
  const delayed = el("div", { id: "delayed" });
  const flags = el("span");
  fill(
    main,
    el("h1", {}, link("/queues", "Queues"), " / ", el("span", { id: "queue-name" }, name), flags),
    cards,
    el("div", { class: "panel" }, chart.node,
      el("div", { class: "actions" },
        el("button", { class: "danger", id: "purge-ready", onclick: () => purgeReady() }, "Purge ready messages…"))),
    el("div", { class: "panel" }, el("h2", {}, "Dead letters"), deadLetters),
    el("div", { class: "panel" }, el("h2", {}, "Delayed tasks"), delayed),
  );

  let queue = null;
  const drawQueue = () => {
    fill(flags, (queue.flags || []).map((flag) => badge(flag === "backlog" ? "backlog" : "old messages", "flag")));
    fill(
      cards,
      card("Ready", number(queue.messages), queue.flags && queue.flags.includes("backlog") ? "bad" : ""),
      card("Oldest message", queue.oldest_age_seconds === null ? "–" : duration(queue.oldest_age_seconds), queue.flags && queue.flags.includes("oldest_age") ? "bad" : ""),
      card("Delayed", number(queue.delayed)),
      card("Dead letters", number(queue.dead_letters), queue.dead_letters ? "bad" : ""),
      card("Consumers", number((queue.consumers || []).length)),
    );
    const points = queue.series || [];
    chart.update(points.map((point) => point.time), points.map((point) => point.messages),
      points.map((point) => point.delayed), points.map((point) => point.dead_letters));
  };

  const loadDeadLetters = async () => {
    let answer;
    try {
      answer = await get(`${base}/dead-letters`, { limit: LISTED });
    } catch (error) {
      fill(deadLetters, el("p", { class: "muted" }, error.message));
      return;
    }
    const rows = answer.messages.map((message) => el("tr", { dataset: { id: message.id || "" } },
      el("td", {}, checkbox(message.id)),
      el("td", { class: "mono" }, message.id ? link(paths.task(message.id), message.id) : el("span", { class: "muted" }, `undecodable (${number(message.size)} bytes)`)),
      el("td", {}, message.task || ""),
      el("td", { class: "mono clip", title: args(message) }, args(message)),
      el("td", {}, message.reason || message.undecodable || ""),
      el("td", { class: "num" }, number(message.retries))));
    fill(deadLetters,
      el("p", { class: "muted" }, `${number(Math.max(answer.total ?? 0, answer.messages.length))} dead letter(s)${answer.messages.length < (answer.total || 0) ? `, the oldest ${answer.messages.length} shown` : ""}.`),
      table(["", "Task id", "Task", "Arguments", "Reason", { text: "Retries", class: "num" }], rows, "No dead letters."),
      el("div", { class: "actions" },
        el("button", { id: "requeue-selected", onclick: () => requeue(selection(deadLetters)) }, "Requeue selected"),
        el("button", { id: "requeue-all", onclick: () => requeue(null) }, "Requeue all"),
        el("button", { class: "danger", id: "purge-dead-letters", onclick: () => purgeDeadLetters() }, "Purge all dead letters…")));
  };

  const loadDelayed = async () => {
    let answer;
    try {
      answer = await get(`${base}/delayed`, { limit: LISTED });
    } catch (error) {
      fill(delayed, el("p", { class: "muted" }, error.message));
      return;
    }
    const rows = answer.messages.map((message) => el("tr", { dataset: { id: message.id || "" } },
      el("td", {}, checkbox(message.id)),
      el("td", { class: "mono" }, message.id ? link(paths.task(message.id), message.id) : "undecodable"),
      el("td", {}, message.task || ""),
      el("td", { class: "mono clip", title: args(message) }, args(message)),
      el("td", { title: message.eta || "" }, message.due ? `${time(message.due)} (${duration(Math.max(0, message.due - Date.now() / 1000))})` : "–"),
      el("td", {}, message.id ? el("button", { class: "run-now", onclick: () => runNow([message.id]) }, "Run now") : "")));
    fill(delayed,
      el("p", { class: "muted" }, `${number(Math.max(answer.total ?? 0, answer.messages.length))} delayed task(s), soonest first.`),
      table(["", "Task id", "Task", "Arguments", "Due", ""], rows, "No delayed tasks."),
      el("div", { class: "actions" },
        el("button", { id: "run-selected", onclick: () => runNow(selection(delayed)) }, "Run selected now")));
  };

  const refresh = async () => {
    queue = await get(base);
    drawQueue();
  };
  const reloadLists = () => Promise.all([loadDeadLetters(), loadDelayed()]);
  const refreshAll = async () => {
    await refresh();
    await reloadLists();
  };

  async function purgeReady() {
    await act(`Remove every ready message of ${name}? This cannot be undone.`, () => post(`${base}/purge`), (answer) => `Purged ${answer.affected} message(s)`);
    await refreshAll();
  }
  async function requeue(ids) {
    if (ids && !ids.length) return toast("Select dead letters first", "error");
    await act(null, () => post(`${base}/dead-letters/requeue`, {}, ids ? { ids } : undefined), (answer) => `Requeued ${answer.affected} message(s)`);
    await refreshAll();
  }
  async function purgeDeadLetters() {
    await act(`Delete every dead letter of ${name}? This cannot be undone.`, () => post(`${base}/dead-letters/purge`), (answer) => `Purged ${answer.affected} dead letter(s)`);
    await refreshAll();
  }
  async function runNow(ids) {
    if (!ids.length) return toast("Select delayed tasks first", "error");
    let done = 0;
    for (const id of ids) {
      const answer = await act(null, () => post(`${base}/delayed/${encodeURIComponent(id)}/run-now`), () => `Sent ${id} now`);
      if (answer) done += 1;
    }
    if (ids.length > 1) toast(`${done} of ${ids.length} sent now`);
    await refreshAll();
  }

  await refreshAll();
  const again = throttled(refresh, 1000);
  const lists = throttled(reloadLists, 5000);
  onLive("queues", (update) => {
    const mine = update.queues.find((one) => one.name === name);
    if (!mine) return;
    const changed = !queue || mine.dead_letters !== queue.dead_letters || mine.delayed !== queue.delayed;
    again();
    if (changed) lists();
  });
  onLive("lagged", () => {
    again();
    lists();
  });
}
