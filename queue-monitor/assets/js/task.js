// One task: its state, arguments, result or traceback, retries, worker, parent and
// children, and the timeline of its events; actions: revoke, terminate, retry (send again).
// Follows the live `tasks` message for this task.
import { act, badge, duration, el, facts, fill, get, link, number, onLive, pathArgument, paths, post, pre, table, text, throttled, time, url, when } from "./lib.js";

const FINISHED = new Set(["SUCCESS", "FAILURE", "REVOKED", "REJECTED"]);
const EVENT_COLOURS = {
  "task-sent": "#6b7280", "task-received": "#6b7280", "task-started": "#1d4ed8", "task-succeeded": "#15803d",
  "task-failed": "#b91c1c", "task-retried": "#c2410c", "task-revoked": "#7e22ce", "task-rejected": "#7e22ce",
};

// The events on a time axis (SVG drawn here: a line, a dot per event, its offset below).
function timelineChart(events) {
  const namespace = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(namespace, "svg");
  svg.setAttribute("class", "timeline");
  svg.setAttribute("viewBox", "0 0 1000 56");
  svg.setAttribute("preserveAspectRatio", "none");
  if (!events.length) return svg;
  const start = events[0].timestamp;
  const span = Math.max(events[events.length - 1].timestamp - start, 1e-6);
  const x = (timestamp) => 20 + ((timestamp - start) / span) * 960;
  const line = document.createElementNS(namespace, "line");
  for (const [name, value] of [["x1", 20], ["x2", 980], ["y1", 18], ["y2", 18]]) line.setAttribute(name, value);
  svg.append(line);
  events.forEach((event, index) => {
    const dot = document.createElementNS(namespace, "circle");
    dot.setAttribute("cx", x(event.timestamp));
    dot.setAttribute("cy", 18);
    dot.setAttribute("r", 7);
    dot.setAttribute("fill", EVENT_COLOURS[event.type] || "#6b7280");
    const title = document.createElementNS(namespace, "title");
    title.textContent = `${event.type} at ${time(event.timestamp)}`;
    dot.append(title);
    svg.append(dot);
    const label = document.createElementNS(namespace, "text");
    label.setAttribute("x", x(event.timestamp));
    label.setAttribute("y", index % 2 ? 52 : 40);
    label.setAttribute("text-anchor", index === 0 ? "start" : index === events.length - 1 ? "end" : "middle");
    label.textContent = `${event.type.replace("task-", "")} +${duration(event.timestamp - start)}`;
    svg.append(label);
  });
  return svg;
}

export async function render(main) {
  const id = pathArgument();
  const heading = el("h1", {});
  const actions = el("div", { class: "actions" });
  const about = el("div");
  const data = el("div");
  const outcome = el("div", { id: "task-outcome" });
  const family = el("div");
  const timeline = el("div", { id: "timeline" });
  fill(
    main,
    heading,
    el("div", { class: "panel" }, actions),
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("h2", {}, "Task"), about),
      el("div", { class: "panel" }, el("h2", {}, "Arguments"), data)),
    el("div", { class: "panel" }, outcome),
    el("div", { class: "panel" }, el("h2", {}, "Workflow"), family),
    el("div", { class: "panel" }, el("h2", {}, "Timeline"), timeline),
  );

  let task = null;
  const refresh = async () => {
    try {
      task = await get(`/api/dashboard/tasks/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error.status !== 404) throw error;
      fill(heading, link("/tasks", "Tasks"), " / ", el("span", { class: "mono" }, id));
      fill(about, el("p", { class: "muted", id: "task-unknown" }, "No event of this task has been seen yet; this page updates when one comes."));
      return;
    }
    draw();
  };

  const draw = () => {
    fill(heading, link("/tasks", "Tasks"), " / ", el("span", { id: "task-name" }, task.name || "unknown task"),
      el("span", { id: "task-state" }, badge(task.state)), el("span", { class: "sub mono" }, task.uuid));
    const finished = FINISHED.has(task.state);
    fill(actions,
      el("button", { id: "revoke", disabled: finished, onclick: () => revoke(false) }, "Revoke"),
      el("button", { class: "danger", id: "terminate", disabled: finished, onclick: () => revoke(true) }, "Terminate…"),
      el("button", { id: "retry", disabled: !task.name, onclick: () => retry() }, "Send again"),
      el("span", { class: "muted" }, finished ? "Finished: nothing to revoke." : "Revoke: workers drop it before it starts. Terminate: also stops it while it runs."));
    fill(about, facts([
      ["State", badge(task.state)],
      ["Worker", task.worker ? link(paths.worker(task.worker), task.worker) : "–"],
      ["Queue", task.queue ? link(paths.queue(task.queue), task.queue) : task.routing_key || "–"],
      ["Sent", when(task.sent)],
      ["Received", when(task.received)],
      ["Started", when(task.started)],
      task.succeeded && ["Succeeded", when(task.succeeded)],
      task.failed && ["Failed", when(task.failed)],
      task.retried && ["Retried", when(task.retried)],
      task.revoked && ["Revoked", when(task.revoked)],
      task.rejected && ["Rejected", when(task.rejected)],
      ["Runtime", duration(task.runtime)],
      ["Waited", duration(task.wait)],
      ["Retries", number(task.retries)],
      task.eta && ["ETA", text(task.eta)],
      task.expires && ["Expires", text(task.expires)],
    ]));
    fill(data,
      el("div", { class: "field" }, "args", pre(task.args, "mono")),
      el("div", { class: "field" }, "kwargs", pre(task.kwargs, "mono")));
    if (task.exception || task.traceback) {
      fill(outcome, el("h2", {}, "Exception"), pre(task.exception, "error"),
        task.traceback ? el("div", {}, el("h2", {}, "Traceback"), pre(task.traceback, "error")) : null);
    } else {
      fill(outcome, el("h2", {}, "Result"), el("pre", { class: "block mono", id: "task-result" },
        task.result === null || task.result === undefined ? (FINISHED.has(task.state) ? "None" : "not finished yet") : text(task.result)));
    }
    const children = task.children || [];
    fill(family, facts([
      ["Parent", task.parent_id || task.parent ? link(paths.task(task.parent_id || task.parent), task.parent_id || task.parent) : "–"],
      ["Root", task.root_id && task.root_id !== task.uuid ? link(paths.task(task.root_id), task.root_id) : "this task"],
      ["Children", children.length ? el("div", {}, children.map((child) => el("div", {}, link(paths.task(child), child)))) : "–"],
    ]));
    const events = task.timeline || [];
    const start = events.length ? events[0].timestamp : 0;
    fill(timeline, timelineChart(events), table(["Event", "Time", { text: "+", class: "num" }, "Worker", "Fields"],
      events.map((event) => el("tr", { dataset: { event: event.type } },
        el("td", {}, event.type),
        el("td", {}, when(event.timestamp)),
        el("td", { class: "num" }, `+${duration(event.timestamp - start)}`),
        el("td", {}, event.hostname || ""),
        el("td", { class: "mono clip", title: JSON.stringify(event.fields || {}) }, Object.keys(event.fields || {}).length ? JSON.stringify(event.fields) : ""))),
      "No event recorded."));
  };

  async function revoke(terminate) {
    await act(terminate ? `Terminate ${task.name || id}? Workers drop it, and the one running it stops it (SIGTERM).` : null,
      () => post(`/api/dashboard/tasks/${encodeURIComponent(id)}/revoke`, { terminate: terminate ? "true" : "" }),
      terminate ? "Terminate sent" : "Revoke sent");
  }
  async function retry() {
    const where = task.queue ? `to ${task.queue}` : "to the monitor's default queue (its events did not say the queue)";
    const answer = await act(`Send ${task.name} again with the same arguments, as a new task, ${where}?`,
      () => post(`/api/dashboard/tasks/${encodeURIComponent(id)}/retry`), (result) => `Sent again as ${result["task-id"]}`);
    if (answer && answer["task-id"]) location.assign(url(paths.task(answer["task-id"])));
  }

  await refresh();
  const again = throttled(refresh, 500);
  onLive("tasks", (update) => {
    if (update.tasks.some((one) => one.uuid === id || one.parent_id === id)) again();
  });
  onLive("lagged", again);
}
