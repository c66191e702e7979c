// Energy (#/energy, #/energy/<site>, #/energy/<site>/<range>): what the electricity costs and
// where it goes: cost split by tariff period, demand, power factor, power source and load
// shedding, base load and peak-demand events, cost per shift, energy per unit produced, idle
// machines, savings advice, the hourly chart, meters, outages and the month's bill.
import { get, optional, post } from "../api.js";
import { pick, t } from "../i18n.js";
import { dateTime, esc, errorBox, num, pct, time, timeZone } from "../format.js";

const BASE = "/api/v1/energy/sites";
const DAY = 86_400_000;
const RANGES = { today: null, "7d": 7 * DAY, "30d": 30 * DAY };
const REFRESH_MS = 60_000;
const FULL_COVERAGE = 0.99; // below this the page says the figures miss part of the range
const OPERATE = ["admin", "manager", "engineer", "operator"]; // may compare bills (the API decides)
const SOURCES = [["energy.source.grid", "grid"], ["energy.source.generator", "generator"], ["energy.source.none", "none"],
  ["energy.source.solar", "solar"], ["energy.source.ups", "ups"], ["energy.source.unknown", "unknown"]];
const ROLES = [["energy.role.main", "main"], ["energy.role.sub", "sub"], ["energy.role.unmetered", "unmetered"]];
const EVIDENCE = [["energy.ev.source", "source"], ["energy.ev.start_ms", "start_ms"], ["energy.ev.end_ms", "end_ms"],
  ["energy.ev.windows", "windows"], ["energy.ev.note", "note"], ["energy.ev.figures", "figures"]];
const PERCENT_OF = ["tax", "pf_penalty"]; // bill lines charged as a share of other lines
const KINDS = [["energy.outage.grid_out", "grid_out"], ["energy.outage.no_supply", "no_supply"]];
const COLOURS = { peak: "#c62828", off_peak: "#1f5fbf", other: "#9aa3ad", cost: "#2e9d47" };

const label = (table, value) => {
  const hit = table.find(([, v]) => v === value);
  return hit ? t(hit[0]) : String(value ?? "–");
};

// Money in the tariff's currency: "PKR 12,345" (Urdu "12,345 روپے").
export function money(v, currency = "PKR", digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const n = num(v, digits);
  return currency === "PKR" ? t("energy.pkr", { n }) : `${currency} ${n}`;
}

const hours = (h) => (h === null || h === undefined ? "–" : t("energy.hours", { n: num(h, 1) }));
const kwh = (v) => (v === null || v === undefined ? "–" : t("energy.kwh", { n: num(v, 1) }));

// Meters in their tree: each main meter, its sub-meters, then the unmetered remainder.
export function meterOrder(meters) {
  const subs = (id) => meters.filter((m) => m.role === "sub" && m.parent === id);
  const out = [];
  const seen = new Set();
  for (const main of meters.filter((m) => m.role === "main")) {
    out.push(main); seen.add(main);
    for (const s of subs(main.machine_id)) { out.push(s); seen.add(s); }
  }
  for (const m of meters) if (!seen.has(m) && m.role !== "unmetered") out.push(m);
  return out.concat(meters.filter((m) => m.role === "unmetered"));
}

// The evidence of a recommendation, whatever its shape: spans as times, lists short.
function evidence(value, key = "", total = null) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    return key.endsWith("_ms") && value > 1e11 ? esc(dateTime(value)) : esc(num(value, 2));
  }
  if (typeof value === "string" || typeof value === "boolean") return `<bdi>${esc(String(value))}</bdi>`;
  if (Array.isArray(value)) {
    if (!value.length) return "–";
    const span = (v) => Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === "number" && x > 1e11);
    const shown = value.slice(0, 12).map((v) => (span(v)
      ? `<li>${esc(dateTime(v[0]))} – ${esc(time(v[1]))}</li>`
      : v && typeof v === "object" && "key" in v && "value" in v
        ? `<li><bdi>${esc(v.key)}</bdi>: ${esc(num(v.value, 2))} ${esc(v.unit || "")}</li>`
        : `<li>${evidence(v)}</li>`));
    const count = Math.max(total ?? 0, value.length);
    const more = count > shown.length ? `<li>${esc(t("energy.and_more", { n: count - shown.length }))}</li>` : "";
    return `<ul>${shown.join("")}${more}</ul>`;
  }
  // windows may come cut short, with window_count saying how many there were
  const shown = Object.entries(value).filter(([k, v]) => v !== "" && v !== null && v !== undefined && k !== "window_count"
    && !(Array.isArray(v) && !v.length));
  return `<dl>${shown.map(([k, v]) => `<dt><bdi>${esc(label(EVIDENCE, k))}</bdi></dt>
    <dd>${evidence(v, k, k === "windows" ? value.window_count : null)}</dd>`).join("")}</dl>`;
}

// Hourly energy as bars, peak and off-peak apart, and its cost as a line on its own axis.
function energyChart(el) {
  const size = () => ({ width: Math.max(280, el.clientWidth || 600), height: 260 });
  const bars = window.uPlot.paths && window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [0.9, 40], align: 1 }) : undefined;
  const bar = (text, colour) => ({ label: text, stroke: colour, fill: `${colour}cc`, width: 1, paths: bars, points: { show: false } });
  const opts = {
    ...size(),
    ms: 1,
    ...(timeZone() ? { tzDate: (ts) => window.uPlot.tzDate(new Date(ts), timeZone()) } : {}),
    series: [{},
      bar(t("energy.chart.peak"), COLOURS.peak),
      bar(t("energy.chart.off_peak"), COLOURS.off_peak),
      bar(t("energy.chart.other"), COLOURS.other),
      { label: t("energy.chart.cost"), stroke: COLOURS.cost, width: 2, scale: "money", spanGaps: false }],
    scales: { money: { auto: true } },
    axes: [{}, { size: 60, label: "kWh" }, { scale: "money", side: 1, size: 70, grid: { show: false } }],
    legend: { live: true },
  };
  const plot = new window.uPlot(opts, [[], [], [], [], []], el);
  const resize = new ResizeObserver(() => plot.setSize(size()));
  resize.observe(el);
  return {
    plot,
    draw(rows, start, end) {
      const xs = rows.map((r) => r.ts);
      const part = (test) => rows.map((r) => (test(r.period) ? r.kwh : null));
      plot.setData([xs, part((p) => p === "peak"), part((p) => p === "off_peak"),
        part((p) => p !== "peak" && p !== "off_peak"), rows.map((r) => r.cost)]);
      plot.setScale("x", { min: start, max: end });
    },
    destroy() { resize.disconnect(); plot.destroy(); },
  };
}

const kpi = (id, value, text, extra = "") => `<div class="kpi" id="${id}" ${extra}><b>${value}</b><span>${esc(text)}</span></div>`;

export async function render(el, params, ctx) {
  const siteId = params[0] || (ctx.sites[0] || {}).id;
  let range = params[1] && Object.hasOwn(RANGES, params[1]) ? params[1] : "today";
  if (!siteId) {
    el.innerHTML = `<h1>${esc(t("energy.title"))}</h1><p class="hint">${esc(t("energy.no_site"))}</p>`;
    return null;
  }
  const site = `${BASE}/${encodeURIComponent(siteId)}`;
  const first = await optional(`${site}/summary`);
  if (!first) {
    el.innerHTML = `<h1>${esc(t("energy.title"))}</h1><p class="hint">${esc(t("energy.missing"))}</p>`;
    return null;
  }
  const siteSelect = ctx.sites.length > 1 ? `<label><span class="sr">${esc(t("common.site"))}</span><select id="energy-site">${ctx.sites
    .map((s) => `<option value="${esc(s.id)}">${esc(s.name)}</option>`).join("")}</select></label>` : "";
  const mayCompare = OPERATE.includes(ctx.me.role);
  el.innerHTML = `
    <div class="toolbar"><h1>${esc(t("energy.title"))}</h1><span class="spacer"></span>${siteSelect}
      <span class="seg">${Object.keys(RANGES).map((r) => `<button type="button" data-range="${r}">${esc(t(`energy.range.${r}`))}</button>`).join(" ")}</span></div>
    <p class="hint" id="energy-tariff"></p>
    <p class="energy-warn" id="energy-coverage" role="status" hidden></p>
    <div class="kpis energy-kpis" id="energy-kpis"></div>
    <section class="panel"><h2>${esc(t("energy.sources_title"))}</h2><div class="kpis" id="energy-sources"></div></section>
    <section class="panel" id="energy-peaks-panel"><h2>${esc(t("energy.peaks_title"))}</h2><div class="kpis" id="energy-base"></div>
      <p class="hint">${esc(t("energy.peaks_hint"))}</p><div id="energy-peaks"></div></section>
    <section class="panel"><h2>${esc(t("energy.shifts_title"))}</h2><p class="hint">${esc(t("energy.shifts_hint"))}</p><div id="energy-shifts"></div></section>
    <section class="panel"><h2>${esc(t("energy.intensity_title"))}</h2><p class="hint" id="energy-intensity-hint"></p><div id="energy-intensity"></div></section>
    <section class="panel"><h2>${esc(t("energy.idle_title"))}</h2><p class="hint">${esc(t("energy.idle_hint"))}</p><div id="energy-idle"></div></section>
    <section class="panel"><h2>${esc(t("energy.advice_title"))}</h2><div id="energy-advice"></div></section>
    <section class="panel"><h2>${esc(t("energy.chart_title"))}</h2><p class="error" id="energy-chart-error" role="alert"></p>
      <div class="chart" id="energy-chart"></div></section>
    <section class="panel"><h2>${esc(t("energy.meters_title"))}</h2><div id="energy-meters"></div></section>
    <section class="panel"><h2>${esc(t("energy.outages_title"))}</h2><div id="energy-outages"></div></section>
    <section class="panel" id="energy-bill-panel"><h2>${esc(t("energy.bill_title"))}</h2>
      <form class="form" id="bill-month"><label><span>${esc(t("energy.bill_month"))}</span><input type="month" name="month" required></label></form>
      <div id="energy-bill"></div>
      ${mayCompare ? `<form class="form" id="bill-compare">
        <label><span>${esc(t("energy.bill_actual"))}</span><input type="number" name="actual_total" min="0" step="any" required inputmode="decimal"></label>
        <button type="submit" class="primary">${esc(t("energy.bill_compare"))}</button></form>
      <div id="bill-result" role="status"></div>` : ""}
      <div class="downloads" id="energy-downloads"></div></section>`;
  const $ = (sel) => el.querySelector(sel);
  const select = $("#energy-site");
  if (select) {
    select.value = siteId;
    select.addEventListener("change", () => { location.hash = `#/energy/${encodeURIComponent(select.value)}/${range}`; });
  }
  let disposed = false;
  let generation = 0;
  const chart = energyChart($("#energy-chart"));

  const rangeParams = () => {
    if (!RANGES[range]) return {}; // today: the API's default, the site's local midnight to now
    const end = Date.now();
    return { start: end - RANGES[range], end };
  };

  const showSummary = (s) => {
    const cur = s.currency || "PKR";
    const tariff = s.tariff || {};
    $("#energy-tariff").textContent = tariff.name ? t("energy.tariff", { name: tariff.name }) + (tariff.note ? ` · ${tariff.note}` : "") : "";
    const cov = $("#energy-coverage");
    cov.hidden = !(s.coverage < FULL_COVERAGE);
    cov.textContent = s.coverage > 0 ? t("energy.coverage_low", { pct: pct(s.coverage) }) : t("energy.coverage_none");
    const period = (p) => (s.by_period || []).find((b) => b.period === p);
    const peak = period("peak");
    const off = period("off_peak") || period("flat");
    const small = (x) => (x ? `<small class="under">${esc(kwh(x.kwh))}</small>` : "");
    $("#energy-kpis").innerHTML = [
      kpi("kpi-cost", esc(money(s.cost, cur)), t(`energy.cost_${range === "today" ? "today" : "range"}`), `data-value="${esc(s.cost)}"`),
      kpi("kpi-peak", (peak ? esc(money(peak.cost, cur)) : "–") + small(peak), t("energy.cost_peak"), `data-value="${esc(peak ? peak.cost : "")}"`),
      kpi("kpi-offpeak", (off ? esc(money(off.cost, cur)) : "–") + small(off), off && off.period === "flat" ? t("energy.cost_flat") : t("energy.cost_off_peak"),
        `data-value="${esc(off ? off.cost : "")}"`),
      kpi("kpi-kwh", esc(kwh(s.energy_kwh)), t("energy.energy"), `data-value="${esc(s.energy_kwh)}"`),
      kpi("kpi-demand", s.demand_kw_max === null || s.demand_kw_max === undefined ? "–"
        : `${esc(num(s.demand_kw_max, 1))} <small>kW${s.demand_max_at_ms ? ` · ${esc(time(s.demand_max_at_ms))}` : ""}</small>`,
      t("energy.demand_max"), `data-value="${esc(s.demand_kw_max)}"`),
      kpi("kpi-pf", s.power_factor === null || s.power_factor === undefined ? "–" : esc(num(s.power_factor, 2)), t("energy.power_factor"),
        `data-value="${esc(s.power_factor)}"`),
    ].join("");

    const hoursOf = (src) => ((s.sources || []).find((x) => x.source === src) || { hours: 0 }).hours;
    const others = (s.sources || []).filter((x) => !["grid", "generator", "none"].includes(x.source) && x.hours > 0);
    const o = s.outages || { count: 0, hours: 0, open: false };
    const g = s.generator;
    $("#energy-sources").innerHTML = [
      kpi("kpi-grid", esc(hours(hoursOf("grid"))), t("energy.on_grid")),
      kpi("kpi-generator", esc(hours(hoursOf("generator"))), t("energy.on_generator")),
      kpi("kpi-none", esc(hours(hoursOf("none"))), t("energy.on_none")),
      ...others.map((x) => kpi(`kpi-src-${esc(x.source)}`, esc(hours(x.hours)), label(SOURCES, x.source))),
      kpi("kpi-outages", `${esc(num(o.count, 0))} <small>· ${esc(hours(o.hours))}</small>`,
        o.open ? t("energy.outages_open") : t("energy.outages"), `data-open="${o.open ? "true" : "false"}"`),
      ...(g ? [
        kpi("kpi-gen-hours", esc(hours(g.run_hours)), t("energy.gen_run_hours")),
        kpi("kpi-diesel", `${esc(num(g.litres, 1))} <small>L</small>`, t("energy.diesel_litres")),
        kpi("kpi-diesel-cost", esc(money(g.cost, cur)), g.diesel_price_per_litre ? t("energy.diesel_cost_at", { price: money(g.diesel_price_per_litre, cur, 2) })
          : t("energy.diesel_cost")),
      ] : [`<p class="hint" id="no-generator">${esc(t("energy.no_generator"))}</p>`]),
    ].join("");

    $("#energy-base").innerHTML = kpi("kpi-base-load", s.base_load_kw === null || s.base_load_kw === undefined ? "–"
      : `${esc(num(s.base_load_kw, 1))} <small>kW</small>`, t("energy.base_load"), `data-value="${esc(s.base_load_kw ?? "")}"`);
    const events = s.peak_events || [];
    // up to five names; more as a count, the names in a <details> (a mill runs most machines at once)
    const names = (list) => {
      if (!list || !list.length) return "–";
      const shown = list.map((n) => `<bdi>${esc(n)}</bdi>`).join(", ");
      return list.length <= 5 ? shown : `<details><summary>${esc(t("energy.machines_n", { n: list.length }))}</summary>${shown}</details>`;
    };
    $("#energy-peaks").innerHTML = events.length ? `<table class="values" id="peak-events"><thead><tr><th>${esc(t("energy.peak_at"))}</th>
      <th class="v">${esc(t("energy.peak_kw"))}</th><th>${esc(t("energy.peak_running"))}</th><th>${esc(t("energy.peak_starting"))}</th></tr></thead>
      <tbody>${events.map((e) => `<tr data-start="${esc(e.start_ms)}"><td>${esc(dateTime(e.start_ms))} – ${esc(time(e.end_ms))}</td>
        <td class="v">${esc(num(e.kw, 1))} kW</td><td>${names(e.running)}</td><td>${names(e.starting)}</td></tr>`).join("")}</tbody></table>`
      : `<p class="hint" id="peaks-none">${esc(t("energy.peaks_none"))}</p>`;

    const idle = s.idle || { kwh: 0, cost: 0, machines: [] };
    const worst = [...(idle.machines || [])].sort((a, b) => (b.cost ?? 0) - (a.cost ?? 0) || (b.kwh ?? 0) - (a.kwh ?? 0));
    $("#energy-idle").innerHTML = `<div class="kpis">${kpi("kpi-idle-kwh", esc(kwh(idle.kwh)), t("energy.idle_kwh"))}
      ${kpi("kpi-idle-cost", esc(money(idle.cost, cur)), t("energy.idle_cost"))}</div>
      ${worst.length ? `<table class="values" id="idle-machines"><thead><tr><th>${esc(t("energy.machine"))}</th><th class="v">${esc(t("energy.idle_hours"))}</th>
        <th class="v">${esc(t("energy.energy"))}</th><th class="v">${esc(t("energy.cost"))}</th></tr></thead><tbody>${worst.map((m) => `<tr data-machine="${esc(m.machine_id)}">
        <td><a href="#/machine/${encodeURIComponent(m.machine_id)}"><bdi>${esc(m.name || (ctx.machines.get(m.machine_id) || {}).name || m.machine_id)}</bdi></a></td>
        <td class="v">${esc(num(m.idle_hours, m.idle_hours < 1 ? 2 : 1))}</td><td class="v">${esc(num(m.kwh, 1))}</td><td class="v">${esc(money(m.cost, cur))}</td></tr>`).join("")}</tbody></table>`
        : `<p class="hint">${esc(t("energy.idle_none"))}</p>`}`;
  };

  const showMeters = (meters, cur) => {
    if (!meters.length) { $("#energy-meters").innerHTML = `<p class="hint">${esc(t("energy.meters_none"))}</p>`; return; }
    const opt = (v, d) => (v === null || v === undefined ? "–" : esc(num(v, d)));
    $("#energy-meters").innerHTML = `<table class="values meters"><thead><tr><th>${esc(t("energy.meter"))}</th><th>${esc(t("energy.meter_role"))}</th>
      <th class="v">${esc(t("energy.energy"))}</th><th class="v">${esc(t("energy.cost"))}</th><th class="v">${esc(t("energy.kw_now"))}</th>
      <th class="v">${esc(t("energy.pf_short"))}</th><th class="v">${esc(t("energy.v_imbalance"))}</th><th class="v">${esc(t("energy.i_imbalance"))}</th></tr></thead>
      <tbody>${meterOrder(meters).map((m) => `<tr data-role="${esc(m.role)}" data-meter="${esc(m.machine_id ?? "")}">
        <td class="${m.role === "main" ? "" : "sub"}">${m.role === "unmetered" ? esc(t("energy.unmetered"))
          : `<a href="#/machine/${encodeURIComponent(m.machine_id)}"><bdi>${esc(m.name || m.machine_id)}</bdi></a>`}</td>
        <td>${esc(label(ROLES, m.role))}</td><td class="v">${opt(m.kwh, 1)}</td><td class="v">${esc(money(m.cost, cur))}</td>
        <td class="v">${opt(m.kw_now, 1)}</td><td class="v">${opt(m.power_factor, 2)}</td>
        <td class="v">${m.voltage_imbalance_pct === null || m.voltage_imbalance_pct === undefined ? "–" : `${esc(num(m.voltage_imbalance_pct, 1))}%`}</td>
        <td class="v">${m.current_imbalance_pct === null || m.current_imbalance_pct === undefined ? "–" : `${esc(num(m.current_imbalance_pct, 1))}%`}</td></tr>`).join("")}
      </tbody></table>`;
  };

  const showShifts = (rows, cur) => {
    const box = $("#energy-shifts");
    if (!rows.length) { box.innerHTML = `<p class="hint">${esc(t("energy.shifts_none"))}</p>`; return; }
    box.innerHTML = `<table class="values" id="shift-costs"><thead><tr><th>${esc(t("energy.shift"))}</th><th>${esc(t("energy.shift_time"))}</th>
      <th class="v">${esc(t("energy.energy"))}</th><th class="v">${esc(t("energy.cost_peak_part"))}</th>
      <th class="v">${esc(t("energy.cost_off_peak_part"))}</th><th class="v">${esc(t("energy.cost"))}</th></tr></thead>
      <tbody>${rows.map((r) => `<tr data-shift="${esc(r.shift_id)}" data-day="${esc(r.day)}"><td><bdi>${esc(r.shift_name || r.shift_id)}</bdi></td>
        <td>${esc(time(r.ts))} – ${esc(time(r.end_ms))}</td><td class="v">${esc(kwh(r.kwh))}${r.kwh_peak > 0 ? `<small class="under">${esc(t("energy.chart.peak"))}: ${esc(kwh(r.kwh_peak))}</small>` : ""}</td>
        <td class="v">${esc(money(r.cost_peak, cur))}</td><td class="v">${esc(money(r.cost_off_peak, cur))}</td>
        <td class="v" data-value="${esc(r.cost)}">${esc(money(r.cost, cur))}</td></tr>`).join("")}</tbody></table>`;
  };

  // Energy per unit: machine rows, then their line's total, for each shift (today) or day.
  const showIntensity = (rows, by) => {
    const box = $("#energy-intensity");
    $("#energy-intensity-hint").textContent = t(by === "shift" ? "energy.intensity_hint_shift" : "energy.intensity_hint_day");
    const shown = rows.filter((r) => r.kwh > 0 || r.units > 0);
    if (!shown.length) { box.innerHTML = `<p class="hint">${esc(t("energy.intensity_none"))}</p>`; return; }
    const when = (r) => (by === "shift" ? esc(r.shift_name || r.shift_id) : esc(r.day));
    const perUnit = (r) => (r.kwh_per_unit === null || r.kwh_per_unit === undefined ? "–"
      : esc(num(r.kwh_per_unit, r.kwh_per_unit < 0.01 ? 5 : r.kwh_per_unit < 1 ? 3 : 2)));
    box.innerHTML = `<table class="values" id="intensity" data-by="${esc(by)}"><thead><tr><th>${esc(t(by === "shift" ? "energy.shift" : "energy.day"))}</th>
      <th>${esc(t("energy.machine"))}</th><th class="v">${esc(t("energy.energy"))}</th><th class="v">${esc(t("energy.produced"))}</th>
      <th class="v">${esc(t("energy.per_unit"))}</th></tr></thead>
      <tbody>${shown.map((r) => `<tr data-level="${esc(r.level)}" data-machine="${esc(r.machine_id ?? "")}" data-line="${esc(r.line_id ?? "")}">
        <td>${when(r)}</td><td>${r.level === "line" ? `<b><bdi>${esc(t("energy.line_total", { name: r.name }))}</bdi></b>`
          : `<a href="#/machine/${encodeURIComponent(r.machine_id)}"><bdi>${esc(r.name)}</bdi></a>${r.estimated ? ` <small class="hint" title="${esc(t("energy.estimated"))}">*</small>` : ""}`}</td>
        <td class="v">${esc(kwh(r.kwh))}</td><td class="v">${r.units === null || r.units === undefined ? "–" : `${esc(num(r.units, 0))} <bdi>${esc(r.unit || "")}</bdi>`}</td>
        <td class="v">${perUnit(r)}</td></tr>`).join("")}</tbody></table>`;
  };

  const showOutages = (outages) => {
    const box = $("#energy-outages");
    if (!outages.length) { box.innerHTML = `<p class="hint">${esc(t("energy.outages_none"))}</p>`; return; }
    const latest = [...outages].sort((a, b) => b.start_ms - a.start_ms);
    box.innerHTML = `<table class="values" id="outage-log"><thead><tr><th>${esc(t("energy.outage_start"))}</th><th>${esc(t("energy.outage_end"))}</th>
      <th class="v">${esc(t("energy.outage_minutes"))}</th><th>${esc(t("energy.outage_kind"))}</th><th>${esc(t("energy.outage_covered"))}</th></tr></thead>
      <tbody>${latest.map((o) => `<tr data-open="${o.open ? "true" : "false"}"><td>${esc(dateTime(o.start_ms))}</td>
        <td>${o.open || o.end_ms === null ? `<span class="due overdue">${esc(t("energy.ongoing"))}</span>` : esc(time(o.end_ms))}</td>
        <td class="v">${esc(num(o.minutes, 0))}</td><td>${esc(label(KINDS, o.kind))}</td><td>${esc(label(SOURCES, o.covered_by))}</td></tr>`).join("")}
      </tbody></table>`;
  };

  const showAdvice = (items) => {
    const box = $("#energy-advice");
    const open = new Set([...box.querySelectorAll("details[open]")].map((d) => d.dataset.advice));
    if (!items.length) { box.innerHTML = `<p class="hint">${esc(t("energy.advice_none"))}</p>`; return; }
    box.innerHTML = `<p class="hint">${esc(t("energy.advice_hint"))}</p><ol class="advice">${items.map((a) => `
      <li data-advice="${esc(a.id)}" data-kind="${esc(a.kind)}"><div class="advice-head"><strong dir="auto">${esc(pick(a.title))}</strong>
        <b class="saving">${esc(t("energy.saving_month", { amount: money(a.saving_per_month, a.currency || "PKR") }))}</b></div>
        <p dir="auto">${esc(pick(a.text))}</p>
        <details data-advice="${esc(a.id)}"${open.has(String(a.id)) ? " open" : ""}><summary>${esc(t("energy.evidence"))}</summary>
          <div class="evidence">${evidence(a.evidence)}</div></details></li>`).join("")}</ol>`;
  };

  // The month's bill estimate, its comparison with the utility's bill, and the report downloads.
  const monthInput = $("#bill-month [name=month]");
  const links = (month) => {
    const q = month ? `?month=${encodeURIComponent(month)}` : "";
    $("#energy-downloads").innerHTML = [["energy.report_csv", "report.csv"], ["energy.report_pdf", "report.pdf"]]
      .map(([k, file]) => `<a class="dl" download data-report="${file}" href="${site}/${file}${q}">${esc(t(k))}</a>`).join("");
  };
  const showBill = (bill) => {
    const cur = bill.currency || first.currency || "PKR";
    if (!monthInput.value) monthInput.value = bill.month;
    links(bill.month);
    $("#energy-bill").innerHTML = `<table class="values bill" data-month="${esc(bill.month)}"><thead><tr><th>${esc(t("energy.bill_item"))}</th>
      <th class="v">${esc(t("energy.bill_quantity"))}</th><th class="v">${esc(t("energy.bill_rate"))}</th><th class="v">${esc(t("energy.bill_amount"))}</th></tr></thead>
      <tbody>${(bill.lines || []).map((l) => `<tr data-item="${esc(l.item)}"><td dir="auto">${esc(l.label)}</td>
        ${PERCENT_OF.includes(l.kind) || l.unit === cur // a charge on other lines: their amount at a percentage
    ? `<td class="v">${esc(money(l.quantity, cur))}</td><td class="v">${esc(pct(l.rate))}</td>`
    : `<td class="v">${esc(num(l.quantity, 2))} ${esc(l.unit || "")}</td><td class="v">${esc(num(l.rate, l.rate !== null && Math.abs(l.rate) < 1 ? 4 : 2))}</td>`}
        <td class="v">${esc(money(l.amount, cur))}</td></tr>`).join("")}</tbody>
      <tfoot><tr><th colspan="3">${esc(t("energy.bill_total"))}</th><td class="v" id="bill-total" data-value="${esc(bill.total)}"><b>${esc(money(bill.total, cur))}</b></td></tr></tfoot></table>
      <p class="hint">${esc(t("energy.bill_coverage", { pct: pct(bill.coverage) }))}</p>
      ${(bill.notes || []).length ? `<ul class="notes">${bill.notes.map((n) => `<li dir="auto">${esc(n)}</li>`).join("")}</ul>` : ""}`;
  };
  const loadBill = async () => {
    const month = monthInput.value;
    try {
      showBill(await get(`${site}/bill`, month ? { month } : undefined));
    } catch (e) {
      links(month);
      $("#energy-bill").innerHTML = errorBox(e);
    }
  };
  monthInput.addEventListener("change", () => { if (monthInput.value) loadBill(); });
  const compare = $("#bill-compare");
  if (compare) {
    compare.addEventListener("submit", async (e) => {
      e.preventDefault();
      const out = $("#bill-result");
      const actual = Number(new FormData(compare).get("actual_total"));
      const month = monthInput.value || ($(".bill") || { dataset: {} }).dataset.month;
      try {
        const r = await post(`${site}/bill/compare`, { month, actual_total: actual });
        const cur = first.currency || "PKR";
        const key = r.difference > 0 ? "energy.compare_over" : r.difference < 0 ? "energy.compare_under" : "energy.compare_equal";
        out.className = "compare";
        out.dataset.difference = String(r.difference);
        out.innerHTML = `<div class="kpis">${kpi("cmp-estimate", esc(money(r.estimate, cur)), t("energy.compare_estimate"))}
          ${kpi("cmp-actual", esc(money(r.actual, cur)), t("energy.compare_actual"))}
          ${kpi("cmp-difference", `${esc(money(r.difference, cur))}${r.percent === null || r.percent === undefined ? "" : ` <small>${esc(num(r.percent, 1))}%</small>`}`,
            t("energy.compare_difference"))}</div>
          <p>${esc(t(key, { amount: money(Math.abs(r.difference), cur), pct: num(Math.abs(r.percent ?? 0), 1) }))}</p>`;
      } catch (err) {
        out.className = "";
        delete out.dataset.difference;
        out.innerHTML = errorBox(err);
      }
    });
  }

  const load = async (summary) => {
    const token = ++generation;
    const q = rangeParams();
    el.querySelectorAll("[data-range]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.range === range)));
    const guard = (fn) => (v) => { if (!disposed && token === generation) fn(v); };
    const fail = (sel) => (e) => { if (!disposed && token === generation) $(sel).innerHTML = errorBox(e); };
    const s = summary || await get(`${site}/summary`, q).catch((e) => { fail("#energy-kpis")(e); return null; });
    if (disposed || token !== generation) return;
    if (s) showSummary(s);
    const cur = (s && s.currency) || first.currency || "PKR";
    const start = s ? s.start_ms : q.start;
    const end = s ? s.end_ms : q.end;
    await Promise.all([
      get(`${site}/series`, { ...q, bucket: "hour" }).then(guard((rows) => {
        $("#energy-chart-error").textContent = "";
        chart.draw(rows, start, end);
      })).catch((e) => { if (!disposed && token === generation) $("#energy-chart-error").textContent = e.message; }),
      get(`${site}/meters`, q).then(guard((m) => showMeters(m, cur))).catch(fail("#energy-meters")),
      get(`${site}/outages`, q).then(guard(showOutages)).catch(fail("#energy-outages")),
      get(`${site}/series`, { bucket: "shift" }).then(guard((rows) => showShifts(rows, cur))).catch(fail("#energy-shifts")),
      get(`${site}/intensity`, { ...q, by: range === "today" ? "shift" : "day" })
        .then(guard((rows) => showIntensity(rows, range === "today" ? "shift" : "day"))).catch(fail("#energy-intensity")),
    ]);
  };
  const loadAdvice = () => get(`${site}/advice`).then((a) => { if (!disposed) showAdvice(a); })
    .catch((e) => { if (!disposed) $("#energy-advice").innerHTML = errorBox(e); });

  el.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => {
    range = b.dataset.range;
    history.replaceState(null, "", `#/energy/${encodeURIComponent(siteId)}/${range}`);
    load().catch(() => {});
  }));

  await Promise.all([load(range === "today" ? first : null), loadAdvice(), loadBill()]).catch(() => {});
  const timer = setInterval(() => {
    Promise.all([load(), loadAdvice(), loadBill()]).catch(() => {});
  }, REFRESH_MS);
  return () => { disposed = true; clearInterval(timer); chart.destroy(); };
}
