// Time-series charts on uPlot (vendored, MIT): one helper for every chart of the pages.
import { el, duration, number } from "./lib.js";

export const palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

// Axis value formatters by kind.
const formats = {
  count: (value) => number(value, value !== null && Math.abs(value) < 10 && value % 1 ? 1 : 0),
  rate: (value) => (value === null ? "–" : `${number(value, value < 10 ? 2 : 0)}/s`),
  seconds: (value) => duration(value),
  ratio: (value) => (value === null ? "–" : `${(value * 100).toFixed(1)}%`),
};

// The least top of the value axis, so a quiet series does not fill the chart with noise.
const floors = { count: 1, rate: 1, seconds: 0.001, ratio: 0.01 };

// Time axis steps in seconds: whole seconds and up (the labels show no fractions).
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

// Axis times as the local wall clock.
function clock(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString(undefined, { hour12: false });
}

// A chart in a panel: `series` is [{label, color?}], `kind` formats the values
// ("count", "rate", "seconds", "ratio"). Returns {node, update(time, ...columns)}.
export function timeChart(title, series, kind = "count", height = 220) {
  const holder = el("div", { class: "chart" });
  const node = el("div", {}, el("div", { class: "chart-title" }, title), holder);
  const format = formats[kind] || formats.count;
  let plot = null;
  let pending = null;

  const options = (width) => ({
    width,
    height,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true }, y: { range: (_, min, max) => [Math.min(0, min ?? 0), Math.max(max ?? 0, floors[kind] ?? 1) * 1.1] } },
    axes: [
      { stroke: "#667085", grid: { stroke: "#eef1f5" }, incrs: TIME_STEPS, values: (_, ticks) => ticks.map(clock) },
      { stroke: "#667085", grid: { stroke: "#eef1f5" }, size: 70, values: (_, ticks) => ticks.map(format) },
    ],
    series: [
      {},
      ...series.map((one, index) => ({
        label: one.label,
        stroke: one.color || palette[index % palette.length],
        width: 2,
        spanGaps: kind === "count",
        points: { size: 4 },
        value: (_, value) => format(value),
      })),
    ],
  });

  const draw = (columns) => {
    const width = holder.clientWidth || 600;
    if (!window.uPlot) return;
    if (!plot) {
      plot = new window.uPlot(options(width), columns, holder);
      new ResizeObserver(() => {
        const now = holder.clientWidth;
        if (plot && now && Math.abs(now - plot.width) > 2) plot.setSize({ width: now, height });
      }).observe(holder);
    } else {
      plot.setData(columns);
    }
  };

  return {
    node,
    // time: epoch seconds; each further argument one series' values (null = gap).
    update(time, ...columns) {
      const data = [time, ...columns];
      if (!holder.isConnected) {
        pending = data;
        requestAnimationFrame(() => pending && (draw(pending), (pending = null)));
        return;
      }
      draw(data);
    },
    destroy() {
      if (plot) plot.destroy();
      plot = null;
    },
  };
}
