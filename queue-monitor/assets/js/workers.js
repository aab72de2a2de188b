// Workers: who is online, what each runs and consumes, from events and inspect; follows the
// live `workers` message.
import { ago, badge, card, el, fill, get, link, number, onLive, paths, table, throttled } from "./lib.js";

export function workerStatus(worker) {
  return badge(worker.online ? "online" : "offline", worker.online ? "online" : "offline");
}

export async function render(main) {
  const cards = el("div", { class: "cards" });
  const list = el("div", { id: "worker-table" });
  fill(main, el("h1", {}, "Workers"), cards, el("div", { class: "panel" }, list));

  const workers = new Map();
  for (const worker of (await get("/api/dashboard/workers")).workers) workers.set(worker.hostname, worker);

  const draw = () => {
    const all = [...workers.values()].sort((a, b) => Number(b.online) - Number(a.online) || a.hostname.localeCompare(b.hostname));
    const online = all.filter((worker) => worker.online);
    const sum = (key) => online.reduce((total, worker) => total + (worker[key] || 0), 0);
    fill(
      cards,
      card("Online", number(online.length), online.length ? "good" : "bad"),
      card("Offline", number(all.length - online.length)),
      card("Concurrency", number(sum("concurrency"))),
      card("Running", number(sum("active_tasks") || sum("active"))),
      card("Reserved", number(sum("reserved_tasks"))),
      card("Processed", number(sum("processed"))),
    );
    fill(list, table(
      ["Worker", "Status", "Software", { text: "Concurrency", class: "num" }, { text: "Running", class: "num" },
        { text: "Reserved", class: "num" }, { text: "Processed", class: "num" }, "Load", "Queues", "Last heartbeat"],
      all.map((worker) => el("tr", { dataset: { worker: worker.hostname } },
        el("td", {}, link(paths.worker(worker.hostname), worker.hostname)),
        el("td", {}, workerStatus(worker)),
        el("td", { class: "muted" }, [worker.sw_ident, worker.sw_ver].filter(Boolean).join(" ")),
        el("td", { class: "num concurrency" }, number(worker.concurrency)),
        el("td", { class: "num" }, number(worker.active_tasks ?? worker.active)),
        el("td", { class: "num" }, number(worker.reserved_tasks)),
        el("td", { class: "num" }, number(worker.processed)),
        el("td", { class: "muted" }, (worker.loadavg || []).map((load) => number(load, 2)).join(" ")),
        el("td", {}, (worker.queues || []).map((queue) => el("span", { class: "chip" }, link(paths.queue(queue), queue)))),
        el("td", { class: "muted" }, ago(worker.last_heartbeat)))),
      "No worker seen yet. Workers show once they send events (celery worker -E, or task_events(true)) or answer inspect.",
    ));
  };

  draw();
  onLive("workers", (update) => {
    for (const worker of update.workers) workers.set(worker.hostname, worker);
    draw();
  });
  // Heartbeat ages move on even when nothing changes.
  setInterval(draw, 5000);
  onLive("lagged", throttled(async () => {
    for (const worker of (await get("/api/dashboard/workers")).workers) workers.set(worker.hostname, worker);
    draw();
  }));
}
