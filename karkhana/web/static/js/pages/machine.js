// One machine: state and OEE, live values and a live chart (SSE), history with zoom (rollups),
// and the state timeline.
import { get, optional } from "../api.js";
import { t } from "../i18n.js";
import { esc, num, pct, stateName, time } from "../format.js";
import { watch } from "../live.js";
import { liveChart, timeChart, timeline } from "../charts.js";

const LIVE_WINDOW_MS = 10 * 60_000;
const RANGES = { "1h": 3_600_000, "8h": 8 * 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000 };
const HISTORY_POINTS = 600;

export async function render(el, params, ctx) {
  const id = params[0];
  const machine = await get(`/api/v1/machines/${encodeURIComponent(id)}`);
  const template = await get(`/api/v1/templates/${encodeURIComponent(machine.template)}`).catch(() => ({ signals: [] }));
  const info = new Map(template.signals.map((s) => [s.key, s]));
  const numeric = machine.signals.filter((s) => ["number", "counter"].includes((info.get(s.name) || {}).kind));
  const line = ctx.lines.get(machine.line_id);
  const site = ctx.machines.get(id)?.site_id;
  const label = (s) => `${(info.get(s.name) || {}).name || s.name}${s.unit ? ` (${s.unit})` : ""}`;

  el.innerHTML = `
    <div class="toolbar"><h1>${esc(machine.name)}</h1>
      ${line ? `<a href="#/line/${encodeURIComponent(line.id)}">${esc(line.name)}</a>` : ""}</div>
    <div class="kpis" id="kpis"></div>
    <section class="panel"><h2>${esc(t("machine.live"))}</h2>
      <div class="toolbar"><select id="live-signal" aria-label="${esc(t("machine.signal"))}">${numeric
        .map((s) => `<option value="${esc(s.name)}">${esc(label(s))}</option>`).join("")}</select></div>
      <div class="chart" id="live-chart"></div></section>
    <section class="panel"><h2>${esc(t("machine.values"))}</h2>
      <table class="values"><tbody>${machine.signals.map((s) => `<tr data-signal="${esc(s.name)}">
        <td>${esc((info.get(s.name) || {}).name || s.name)}</td><td class="v">–</td><td class="ts hint"></td></tr>`).join("")}
      </tbody></table></section>
    <section class="panel"><h2>${esc(t("machine.history"))}</h2>
      <div class="toolbar"><select id="hist-signal" aria-label="${esc(t("machine.signal"))}">${numeric
        .map((s) => `<option value="${esc(s.name)}">${esc(label(s))}</option>`).join("")}</select>
        <span class="seg">${Object.keys(RANGES).map((r) => `<button type="button" data-range="${r}">${esc(t(`range.${r}`))}</button>`).join(" ")}</span>
        <button type="button" id="unzoom" hidden>${esc(t("machine.unzoom"))}</button></div>
      <p class="hint">${esc(t("machine.zoom_hint"))}</p><p class="error" id="hist-error" role="alert"></p>
      <div class="chart" id="hist-chart"></div>
      <h2>${esc(t("machine.timeline"))}</h2><div id="timeline"><p class="hint">${esc(t("common.loading"))}</p></div></section>`;

  const kpis = el.querySelector("#kpis");
  const showKpis = async () => {
    const [plant, oee] = await Promise.all([
      optional("/api/v1/production/overview", site ? { site_id: site } : undefined),
      optional("/api/v1/production/oee", { machine_id: id, shift: "current" }).catch(() => null),
    ]);
    const m = plant ? plant.machines.find((x) => x.machine_id === id) : null;
    const box = (value, name, extra = "") => `<div class="kpi" ${extra}><b>${value}</b><span>${esc(name)}</span></div>`;
    kpis.innerHTML = [
      box(esc(stateName(m ? m.state : "no_data")), t("machine.state"), `data-state="${esc(m ? m.state : "no_data")}"`),
      box(m && m.speed ? `${num(m.speed.value)} <small>${esc(m.speed.unit)}</small>` : "–", t("tile.speed")),
      box(num(m ? m.output : null, 0), t("tile.output")),
      box(oee ? pct(oee.oee) : "–", t("tile.oee"), 'id="kpi-oee"'),
      box(oee ? pct(oee.availability) : "–", t("oee.availability")),
      box(oee ? pct(oee.performance) : "–", t("oee.performance")),
      box(oee ? pct(oee.quality) : "–", t("oee.quality")),
    ].join("");
    return m;
  };
  const current = await showKpis().catch(() => null);
  const kpiTimer = setInterval(() => showKpis().catch(() => {}), 5000);

  // latest value of every signal, then live
  const rows = new Map([...el.querySelectorAll("tr[data-signal]")].map((r) => [r.dataset.signal, r]));
  const unitOf = new Map(machine.signals.map((s) => [s.name, s.unit]));
  const setValue = (signal, ts, value) => {
    const row = rows.get(signal);
    if (!row) return;
    const last = Number(row.dataset.ts || 0);
    if (ts < last) return;
    row.dataset.ts = ts;
    row.querySelector(".v").textContent = `${typeof value === "number" ? num(value, 2) : value}${unitOf.get(signal) ? ` ${unitOf.get(signal)}` : ""}`;
    row.querySelector(".ts").textContent = time(ts);
  };
  for (const device of new Set(machine.signals.map((s) => s.device_id))) {
    const latest = await optional(`/api/v1/telemetry/${encodeURIComponent(device)}/latest`).catch(() => ({}));
    for (const s of machine.signals.filter((x) => x.device_id === device)) {
      const v = (latest || {})[s.key];
      if (v) setValue(s.name, v.ts, v.value);
    }
  }

  // live chart of one signal, seeded with the last minutes from the store
  const liveSelect = el.querySelector("#live-signal");
  const speedSignal = current && current.speed ? numeric.find((s) => s.unit === current.speed.unit) : null;
  if (speedSignal) liveSelect.value = speedSignal.name;
  let live = null;
  const startLive = async () => {
    if (live) live.destroy();
    const box = el.querySelector("#live-chart");
    box.innerHTML = "";
    if (!liveSelect.value) return;
    const s = numeric.find((x) => x.name === liveSelect.value);
    live = liveChart(box, [label(s)], LIVE_WINDOW_MS);
    const end = Date.now();
    const seed = await get(`/api/v1/machines/${encodeURIComponent(id)}/signals/${encodeURIComponent(s.name)}`,
      { start: end - LIVE_WINDOW_MS, end: end + 1 }).catch(() => ({ points: [] }));
    for (const [ts, v] of seed.points.slice(-2000)) live.add(ts, [v]);
  };
  liveSelect.addEventListener("change", startLive);
  await startLive();
  const stopLive = watch({ machine_id: id }, (samples) => {
    for (const s of samples) {
      setValue(s.signal, s.ts, s.value);
      if (live && s.signal === liveSelect.value && typeof s.value === "number") live.add(s.ts, [s.value]);
    }
  });

  // history with zoom, from the store's rollups (points=)
  const histSelect = el.querySelector("#hist-signal");
  if (speedSignal) histSelect.value = speedSignal.name;
  let range = "8h";
  let zoom = null;
  const history = numeric.length ? timeChart(el.querySelector("#hist-chart"), [""], {
    onZoom: (a, b) => { zoom = [a, b]; redraw(); },
  }) : null;
  const redraw = () => showHistory().then(
    () => { el.querySelector("#hist-error").textContent = ""; },
    (e) => { el.querySelector("#hist-error").textContent = e.message; },
  );
  const showHistory = async () => {
    const end = zoom ? zoom[1] : Date.now();
    const start = zoom ? zoom[0] : end - RANGES[range];
    el.querySelector("#unzoom").hidden = !zoom;
    el.querySelectorAll("[data-range]").forEach((b) => b.setAttribute("aria-pressed", String(!zoom && b.dataset.range === range)));
    if (history && histSelect.value) {
      const s = numeric.find((x) => x.name === histSelect.value);
      const data = await get(`/api/v1/machines/${encodeURIComponent(id)}/signals/${encodeURIComponent(s.name)}`,
        { start, end, points: HISTORY_POINTS });
      history.plot.setSeries(1, { label: label(s) });
      history.plot.series[1].label = label(s);
      history.setData(data.points.map((p) => p[0]), data.points.map((p) => p[1]));
      history.plot.setScale("x", { min: start, max: end });
    }
    const states = await optional(`/api/v1/production/machines/${encodeURIComponent(id)}/states`, { start, end })
      .catch(() => null);
    const box = el.querySelector("#timeline");
    if (states) timeline(box, states.intervals, start, end);
    else box.innerHTML = `<p class="hint">${esc(t("overview.no_production"))}</p>`;
  };
  el.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => { range = b.dataset.range; zoom = null; redraw(); }));
  el.querySelector("#unzoom").addEventListener("click", () => { zoom = null; redraw(); });
  histSelect.addEventListener("change", redraw);
  await redraw();

  return () => { clearInterval(kpiTimer); stopLive(); if (live) live.destroy(); if (history) history.destroy(); };
}

