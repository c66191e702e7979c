// Charts: uPlot (vendored, window.uPlot) for series, plain elements for the state timeline.
import { esc, stateName, time, timeZone } from "./format.js";
import { t } from "./i18n.js";

const COLOURS = ["#1f5fbf", "#c62828", "#2e9d47", "#d99a00", "#7b3fb0", "#00838f", "#6d4c41", "#e0692b"];

function size(el, height) { return { width: Math.max(280, el.clientWidth || 600), height }; }

// A time chart of one or more series. onZoom(startMs, endMs) is called when the user drags
// over a range; returns {plot, setData(xs, ...ys), destroy()}.
export function timeChart(el, labels, { height = 260, onZoom = null, spanGaps = false } = {}) {
  const opts = {
    ...size(el, height),
    ms: 1,
    ...(timeZone() ? { tzDate: (ts) => window.uPlot.tzDate(new Date(ts), timeZone()) } : {}),
    series: [{}, ...labels.map((label, i) => ({ label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps }))],
    axes: [{}, { size: 60 }],
    cursor: { drag: { x: true, y: false, setScale: false } },
    legend: { live: true },
    hooks: {
      setSelect: [(u) => {
        if (!onZoom || u.select.width < 5) return;
        const a = u.posToVal(u.select.left, "x");
        const b = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        onZoom(Math.floor(a), Math.ceil(b));
      }],
    },
  };
  const plot = new window.uPlot(opts, [[], ...labels.map(() => [])], el);
  const resize = new ResizeObserver(() => plot.setSize(size(el, height)));
  resize.observe(el);
  return {
    plot,
    setData(xs, ...ys) { plot.setData([xs, ...ys]); },
    destroy() { resize.disconnect(); plot.destroy(); },
  };
}

// A live chart: samples appended as they arrive, the last `windowMs` shown, redrawn at most once a frame.
export function liveChart(el, labels, windowMs) {
  const chart = timeChart(el, labels, { height: 220, spanGaps: true });
  const xs = [];
  const ys = labels.map(() => []);
  let queued = false;
  const draw = () => {
    queued = false;
    const cut = Date.now() - windowMs;
    let drop = 0;
    while (drop < xs.length && xs[drop] < cut) drop++;
    if (drop) { xs.splice(0, drop); ys.forEach((y) => y.splice(0, drop)); }
    chart.setData(xs, ...ys);
  };
  return {
    // values: one per series, null where a series has no value at this instant
    add(ts, values) {
      let i = xs.length;
      while (i > 0 && xs[i - 1] > ts) i--;
      if (i > 0 && xs[i - 1] === ts) values.forEach((v, k) => { if (v !== null) ys[k][i - 1] = v; });
      else { xs.splice(i, 0, ts); values.forEach((v, k) => ys[k].splice(i, 0, v)); }
      if (!queued) { queued = true; requestAnimationFrame(draw); }
    },
    count: () => xs.length,
    destroy: () => chart.destroy(),
  };
}

// State intervals [{start_ms, end_ms, state, reason_id}] as coloured bands over [start, end).
export function timeline(el, intervals, start, end) {
  const span = Math.max(1, end - start);
  const parts = [];
  let at = start;
  for (const iv of intervals) {
    const a = Math.max(start, iv.start_ms);
    const b = Math.min(end, iv.end_ms ?? end);
    if (b <= a) continue;
    if (a > at) parts.push(`<span class="s-no_data" style="width:${((a - at) / span) * 100}%"></span>`);
    const title = `${stateName(iv.state)} ${time(a)}–${time(b)}${iv.reason_id ? ` · ${iv.reason_id}` : ""}`;
    parts.push(`<span class="s-${esc(iv.state)}" data-state="${esc(iv.state)}" style="width:${((b - a) / span) * 100}%" title="${esc(title)}"></span>`);
    at = b;
  }
  el.innerHTML = `<div class="timeline" role="img" aria-label="${esc(t("machine.timeline"))}">${parts.join("")}</div>
    <div class="axis"><span>${time(start)}</span><span>${time(start + span / 2)}</span><span>${time(end)}</span></div>`;
}
