// Queues: backlog per queue and per priority, the oldest message's age, delayed and dead
// letters; flagged queues stand out; a chart of the backlog over time. Follows the live
// `queues` message sent after each poll of the broker.
import { badge, card, duration, el, fill, get, link, number, onLive, paths, table, throttled } from "./lib.js";
import { timeChart } from "./charts.js";

// Queues drawn in the backlog chart (the largest backlogs).
const CHARTED = 8;

export async function render(main) {
  const cards = el("div", { class: "cards" });
  const list = el("div", { id: "queue-table" });
  const chartHolder = el("div");
  fill(
    main,
    el("h1", {}, "Queues", el("span", { class: "sub", id: "queue-thresholds" })),
    cards,
    el("div", { class: "panel" }, list),
    el("div", { class: "panel" }, chartHolder),
  );

  let chart = null;
  let chartedNames = "";
  let answer = await get("/api/dashboard/queues");
  // Points per queue, from the full answer and then one per poll.
  const series = new Map();
  for (const queue of answer.queues) series.set(queue.name, queue.series || []);

  const drawChart = () => {
    const charted = [...answer.queues].sort((a, b) => b.messages - a.messages).slice(0, CHARTED).map((queue) => queue.name).sort();
    if (charted.join("\n") !== chartedNames) {
      if (chart) chart.destroy();
      chart = timeChart("Ready messages", charted.map((name) => ({ label: name })), "count", 260);
      fill(chartHolder, chart.node);
      chartedNames = charted.join("\n");
    }
    // One time axis: every poll time of the charted queues, each series aligned on it.
    const times = [...new Set(charted.flatMap((name) => (series.get(name) || []).map((point) => point.time)))].sort((a, b) => a - b);
    const columns = charted.map((name) => {
      const byTime = new Map((series.get(name) || []).map((point) => [point.time, point.messages]));
      return times.map((moment) => (byTime.has(moment) ? byTime.get(moment) : null));
    });
    chart.update(times, ...columns);
  };

  const draw = () => {
    const thresholds = answer.thresholds;
    document.getElementById("queue-thresholds").textContent =
      `flagged at ${number(thresholds.backlog)} messages or an oldest message older than ${duration(thresholds.oldest_age_seconds)}; read every ${duration(answer.interval_seconds)}`;
    const total = (key) => answer.queues.reduce((sum, queue) => sum + (queue[key] || 0), 0);
    const flagged = answer.queues.filter((queue) => queue.flagged).length;
    fill(
      cards,
      card("Queues", number(answer.queues.length)),
      card("Ready messages", number(total("messages"))),
      card("Delayed", number(total("delayed"))),
      card("Dead letters", number(total("dead_letters")), total("dead_letters") ? "bad" : ""),
      card("Flagged", number(flagged), flagged ? "bad" : "good"),
    );
    const rows = [...answer.queues].sort((a, b) => Number(b.flagged) - Number(a.flagged) || a.name.localeCompare(b.name)).map((queue) =>
      el("tr", { class: queue.flagged ? "flagged" : "", dataset: { queue: queue.name } },
        el("td", {}, link(paths.queue(queue.name), queue.name)),
        el("td", { class: "num messages" }, number(queue.messages)),
        el("td", {}, Object.entries(queue.by_priority || {}).sort((a, b) => Number(b[0]) - Number(a[0]))
          .map(([priority, count]) => el("span", { class: "chip", title: `priority ${priority}` }, `${priority}: ${number(count)}`))),
        el("td", { class: "num" }, queue.oldest_age_seconds === null ? "–" : duration(queue.oldest_age_seconds)),
        el("td", { class: "num delayed" }, number(queue.delayed)),
        el("td", { class: "num dead-letters" }, number(queue.dead_letters)),
        el("td", {}, (queue.consumers || []).map((worker) => el("span", { class: "chip" }, link(paths.worker(worker), worker)))),
        el("td", {}, (queue.flags || []).map((flag) => badge(flag === "backlog" ? "backlog" : "old messages", "flag")),
          queue.error ? el("span", { class: "badge FAILURE", title: queue.error }, "broker error") : null),
      ));
    fill(list, table(
      ["Queue", { text: "Ready", class: "num" }, "By priority", { text: "Oldest", class: "num" }, { text: "Delayed", class: "num" },
        { text: "Dead letters", class: "num" }, "Consumers", "Flags"],
      rows,
      "No queue known yet: queues show once a worker consumes them or when given with --queue.",
    ));
    drawChart();
  };

  draw();
  onLive("queues", (update) => {
    const known = new Map(answer.queues.map((queue) => [queue.name, queue]));
    for (const queue of update.queues) {
      const points = series.get(queue.name) || [];
      if (!points.length || points[points.length - 1].time !== queue.updated) {
        points.push({ time: queue.updated, messages: queue.messages, oldest_age_seconds: queue.oldest_age_seconds, delayed: queue.delayed, dead_letters: queue.dead_letters });
      }
      series.set(queue.name, points.slice(-720));
      known.set(queue.name, { ...queue, series: undefined });
    }
    answer = { ...answer, now: update.now, queues: [...known.values()] };
    draw();
  });
  const reload = throttled(async () => {
    answer = await get("/api/dashboard/queues");
    for (const queue of answer.queues) series.set(queue.name, queue.series || []);
    draw();
  });
  onLive("lagged", reload);
}
