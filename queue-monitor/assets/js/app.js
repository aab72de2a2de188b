// The entry point of every page: marks the page in the nav bar, connects the live stream,
// shows the broker and loads the page's own module (named by <body data-page>).
import { connectLive, failure, fill, get } from "./lib.js";

const pages = {
  overview: () => import("./overview.js"),
  queues: () => import("./queues.js"),
  queue: () => import("./queue.js"),
  workers: () => import("./workers.js"),
  worker: () => import("./worker.js"),
  tasks: () => import("./tasks.js"),
  task: () => import("./task.js"),
  beat: () => import("./beat.js"),
};

// Which nav entry a page belongs to.
const sections = { queue: "queues", worker: "workers", task: "tasks" };

// Anything the Content-Security-Policy blocked is a bug of these pages: counted where the
// browser tests look, and logged.
addEventListener("securitypolicyviolation", (event) => {
  document.body.dataset.policyViolations = String(Number(document.body.dataset.policyViolations || 0) + 1);
  console.error(`blocked by the Content-Security-Policy: ${event.violatedDirective} ${event.blockedURI}`);
});

async function start() {
  const page = document.body.dataset.page;
  const section = sections[page] || page;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
  connectLive(document.getElementById("live"));
  get("/api/dashboard/status")
    .then((status) => {
      document.getElementById("broker").textContent = status.broker;
    })
    .catch(() => {});
  const main = document.getElementById("main");
  try {
    const module = await (pages[page] || pages.overview)();
    await module.render(main);
    document.body.dataset.ready = "true";
  } catch (error) {
    console.error(error);
    fill(main, failure(error));
    document.body.dataset.ready = "error";
  }
}

// uPlot loads as a deferred classic script; modules run after it, so it is there by now.
start();
