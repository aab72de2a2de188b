// Beat: the periodic schedulers (`queue beat`) as their beat-heartbeat events tell them.
// Per schedule: who leads (holder, fencing token), every instance (online or offline, last
// seen) and the entries with their last and next runs. Follows the live `beat` message;
// the relative times ("in 4 s") move on every second.
import { badge, card, duration, el, facts, fill, get, number, onLive, table, throttled, when } from "./lib.js";

// The monitor's clock minus the browser's, in seconds (relative times use the monitor's).
let skew = 0;

function now() {
  return Date.now() / 1000 + skew;
}

// `epoch` from now: "in 4 s", "12 s ago", "in 3 min 5 s", "now".
export function relative(epoch, at = now()) {
  if (epoch === null || epoch === undefined) return "";
  const seconds = Math.round(epoch - at);
  const span = Math.abs(seconds);
  if (span === 0) return "now";
  const text = span < 60 ? `${span} s` : duration(span);
  return seconds > 0 ? `in ${text}` : `${text} ago`;
}

// A time and, after it, how far it is from now (kept current by `tick`).
function moment(epoch, extra = "") {
  if (epoch === null || epoch === undefined) return el("span", { class: "muted" }, "–");
  return el("span", { class: extra },
    when(epoch), " ", el("span", { class: "muted relative", dataset: { at: String(epoch), wrap: "1" } }, `(${relative(epoch)})`));
}

// Brings every relative time under `root` up to now.
function tick(root) {
  for (const node of root.querySelectorAll(".relative[data-at]")) {
    const text = relative(Number(node.dataset.at));
    node.textContent = node.dataset.wrap ? `(${text})` : text;
  }
}

function role(instance) {
  if (instance.leader) return badge("leader", "leader");
  // Says it leads but is offline, or another holds a newer token: not the leader.
  return badge(instance.leading ? "was leading" : "follower", "follower");
}

function schedulePanel(schedule) {
  const leader = schedule.leader;
  const others = schedule.instances.filter((instance) => !instance.leader);
  return el("section", { class: "beat-schedule", dataset: { schedule: schedule.name } },
    el("div", { class: "grid" },
      el("div", { class: "panel" },
        el("h2", {}, "Schedule ", el("span", { class: "mono" }, schedule.name)),
        facts([
          ["Leader", leader
            ? el("span", { class: "beat-leader mono" }, leader.holder)
            : el("span", { class: "beat-leader no-leader" }, badge("none", "offline"), " no online instance holds the lease")],
          ["Fencing token", el("span", { class: "beat-token" }, leader && leader.token !== null ? String(leader.token) : "–")],
          ["Leader's last heartbeat", leader ? moment(leader.last_seen) : "–"],
          ["Instances", `${number(schedule.online)} online of ${number(schedule.instances.length)}`],
          ["Schedule as told by", schedule.entries_from ? el("span", { class: "mono" }, schedule.entries_from) : "–"],
        ])),
      el("div", { class: "panel" },
        el("h2", {}, "Instances", el("span", { class: "sub" }, others.length ? `${others.length} besides the leader` : "")),
        table(
          ["Holder", "Role", "Status", { text: "Token", class: "num" }, "Last seen", { text: "Every", class: "num" }],
          schedule.instances.map((instance) => el("tr", { dataset: { holder: instance.holder } },
            el("td", { class: "mono" }, instance.holder),
            el("td", { class: "role" }, role(instance)),
            el("td", { class: "status" }, badge(instance.status, instance.status)),
            el("td", { class: "num" }, instance.token === null ? "–" : String(instance.token)),
            el("td", { class: "nowrap" }, moment(instance.last_seen)),
            el("td", { class: "num" }, instance.interval === null ? "–" : duration(instance.interval)))),
          "No instance.",
        ))),
    el("div", { class: "panel" },
      el("h2", {}, "Entries"),
      table(
        ["Entry", "Task", "Schedule", "Last run", "Next run"],
        schedule.entries.map((entry) => el("tr", { dataset: { entry: entry.name } },
          el("td", {}, entry.name),
          el("td", { class: "mono" }, entry.task),
          el("td", { class: "mono schedule" }, entry.schedule),
          el("td", { class: "nowrap last-run" }, moment(entry.last_run)),
          el("td", { class: "nowrap next-run" }, moment(entry.next_run)))),
        "This schedule has no entries.",
      )));
}

export async function render(main) {
  const cards = el("div", { class: "cards" });
  const list = el("div", { id: "beat-schedules" });
  fill(main, el("h1", {}, "Beat", el("span", { class: "sub" }, "periodic schedules, from the heartbeats of queue beat")), cards, list);

  let answer = null;
  const take = (update) => {
    answer = update;
    skew = update.now - Date.now() / 1000;
  };
  take(await get("/api/beat"));

  const draw = () => {
    const schedules = answer.schedules;
    const instances = schedules.flatMap((schedule) => schedule.instances);
    const online = instances.filter((instance) => instance.online).length;
    const led = schedules.filter((schedule) => schedule.leader).length;
    const upcoming = schedules.flatMap((schedule) => schedule.entries.map((entry) => entry.next_run)).filter((at) => at !== null);
    const soonest = upcoming.length ? Math.min(...upcoming) : null;
    fill(
      cards,
      card("Schedules", number(schedules.length)),
      card("Led", number(led), !schedules.length ? "" : led === schedules.length ? "good" : "bad"),
      card("Instances online", number(online)),
      card("Offline", number(instances.length - online)),
      card("Entries", number(schedules.reduce((total, schedule) => total + schedule.entries.length, 0))),
      card("Next run", soonest === null ? "–" : el("span", { class: "relative", dataset: { at: String(soonest) } }, relative(soonest))),
    );
    if (!schedules.length) {
      fill(list, el("div", { class: "panel" }, el("p", { class: "empty" },
        "No beat seen yet. Beat instances show once they send heartbeats (queue beat with events on: [beat] events = true, or Beat::send_events(true)).")));
      return;
    }
    fill(list, schedules.map(schedulePanel));
    tick(list);
  };

  draw();
  onLive("beat", (update) => {
    take(update);
    draw();
  });
  onLive("lagged", throttled(async () => {
    take(await get("/api/beat"));
    draw();
  }));
  setInterval(() => tick(main), 1000);
}
