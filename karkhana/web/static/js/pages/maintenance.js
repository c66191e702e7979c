// Maintenance: every machine's health worst first (#/maintenance), and one machine
// (#/maintenance/<machine>): health history, the signals driving it, MTBF/MTTR, work orders
// (raise, start, finish) and preventive schedules with what is due.
import { get, optional, post, request } from "../api.js";
import { t } from "../i18n.js";
import { dateTime, esc, errorBox, num, pct } from "../format.js";
import { timeChart } from "../charts.js";

const BASE = "/api/v1/maintenance";
const RANGES = { "24h": 86_400_000, "7d": 7 * 86_400_000 };
const HISTORY_POINTS = 600;
const NEXT = { open: "in_progress", in_progress: "done" }; // the button on each work order
const SCORED = ["ok", "alarm"];

// The colour band of a health reading: good, fair, poor, or a state without an index.
export function band(h) {
  if (!SCORED.includes(h.status) || h.index === null) return h.status;
  if (h.alarm || h.index < 50) return "poor";
  return h.index < 80 ? "fair" : "good";
}

// Worst first: scored machines by index, then learning, no data, not monitored.
const ORDER = ["alarm", "ok", "learning", "no_data", "not_monitored"];
function worstFirst(a, b) {
  const sa = ORDER.indexOf(a.alarm ? "alarm" : a.status);
  const sb = ORDER.indexOf(b.alarm ? "alarm" : b.status);
  if (SCORED.includes(a.status) && SCORED.includes(b.status)) return (a.index ?? 100) - (b.index ?? 100);
  return sa - sb;
}

function arrow(trend) {
  if (trend === null || trend === undefined) return "";
  if (trend <= -1) return `<span class="trend down" title="${esc(t("mnt.trend_down"))}">↓</span>`;
  if (trend >= 1) return `<span class="trend up" title="${esc(t("mnt.trend_up"))}">↑</span>`;
  return `<span class="trend flat" title="${esc(t("mnt.trend_flat"))}">→</span>`;
}

function indexText(h) {
  if (h.status === "learning") return esc(t("mnt.learning_pct", { pct: Math.round(h.learning_progress * 100) }));
  if (h.index === null) return "–";
  return `${num(h.index, 0)} ${arrow(h.trend_per_day)}`;
}

const statusName = (s) => t(`mnt.status.${s}`);

export async function render(el, params, ctx) {
  const health = await optional(`${BASE}/health`);
  if (!health) {
    el.innerHTML = `<h1>${esc(t("mnt.title"))}</h1><p class="hint">${esc(t("mnt.missing"))}</p>`;
    return null;
  }
  return params[0] ? machinePage(el, params[0], ctx) : plantPage(el, health, ctx);
}

async function plantPage(el, first, ctx) {
  const name = (id) => (ctx.machines.get(id) || { name: id }).name;
  el.innerHTML = `<h1>${esc(t("mnt.title"))}</h1><div class="tiles health" id="health"></div>
    <section class="panel"><h2>${esc(t("mnt.due_title"))}</h2><div id="due"></div></section>
    <section class="panel"><h2>${esc(t("mnt.orders_open"))}</h2><div id="orders"></div></section>`;
  const draw = (health, orders, due) => {
    const open = new Map();
    for (const o of orders) open.set(o.machine_id, (open.get(o.machine_id) || 0) + 1);
    el.querySelector("#health").innerHTML = [...health].sort(worstFirst).map((h) => `
      <a class="tile hb-${esc(band(h))}" data-machine="${esc(h.machine_id)}" data-status="${esc(h.status)}"
        href="#/maintenance/${encodeURIComponent(h.machine_id)}">
        <h3><bdi class="name" dir="auto">${esc(name(h.machine_id))}</bdi></h3>
        <b class="hi">${indexText(h)}</b>
        <dl><dt>${esc(t("mnt.state"))}</dt><dd class="status">${esc(statusName(h.alarm ? "alarm" : h.status))}</dd>
        ${h.contributions.length ? `<dt>${esc(t("mnt.top_signal"))}</dt><dd dir="auto">${esc(h.contributions[0].signal)}</dd>` : ""}
        ${h.rul ? `<dt>${esc(t("mnt.rul"))}</dt><dd class="rul">${esc(rulText(h.rul))}</dd>` : ""}
        ${open.get(h.machine_id) ? `<dt>${esc(t("mnt.orders_open"))}</dt><dd>${open.get(h.machine_id)}</dd>` : ""}</dl></a>`).join("")
      || `<p class="hint">${esc(t("mnt.no_machines"))}</p>`;
    el.querySelector("#due").innerHTML = due.length ? `<table class="values"><tbody>${due.map((s) => `<tr data-schedule="${esc(s.id)}" data-due="${esc(s.due.status)}">
      <td><a href="#/maintenance/${encodeURIComponent(s.machine_id)}" dir="auto">${esc(name(s.machine_id))}</a></td><td dir="auto">${esc(s.title)}</td>
      <td><span class="due ${esc(s.due.status)}">${esc(t(`mnt.due.${s.due.status}`))}</span></td><td class="v">${esc(left(s.due))}</td></tr>`).join("")}
      </tbody></table>` : `<p class="hint">${esc(t("mnt.due_none"))}</p>`;
    el.querySelector("#orders").innerHTML = orders.length ? orderTable(orders, name, false) : `<p class="hint">${esc(t("mnt.orders_none"))}</p>`;
  };
  const load = async (health) => {
    const [h, orders, due] = await Promise.all([
      health || get(`${BASE}/health`),
      get(`${BASE}/work-orders`, { status: ["open", "in_progress"] }),
      get(`${BASE}/schedules/due`),
    ]);
    draw(h, orders, due);
  };
  await load(first);
  const timer = setInterval(() => load().catch((e) => { el.querySelector("#health").innerHTML = errorBox(e); }), 30_000);
  return () => clearInterval(timer);
}

// A name inside a sentence of the other direction keeps its own (U+2068 ... U+2069): "Loom 10
// (shed 1)" in an Urdu title keeps its brackets the right way round.
const isolate = (text) => `\u2068${text}\u2069`;

// Remaining life in words: "about 30 h", or "more than 120 h" at the model's horizon.
function rulText(rul) {
  return rul.beyond_cap ? t("mnt.rul_beyond", { n: num(rul.horizon, 0) }) : t("mnt.rul_value", { n: num(rul.rul, 0) });
}

// Intervals and what is left: two digits below 1 (0.25 days), else one.
const amount = (v) => num(v, Math.abs(v) < 1 ? 2 : 1);

function left(due) {
  if (due.remaining === null || due.remaining === undefined) return "–";
  const unit = t(`mnt.unit.${["days", "hours", "counts"].includes(due.unit) ? due.unit : "counts"}`);
  const key = due.remaining < 0 ? "mnt.overdue_by" : "mnt.left";
  return t(key, { n: amount(Math.abs(due.remaining)), unit });
}

function orderTable(orders, name, actions) {
  return `<table class="values orders"><thead><tr><th>${esc(t("mnt.wo.title"))}</th>${name ? `<th>${esc(t("mnt.machine"))}</th>` : ""}
    <th>${esc(t("mnt.wo.assignee"))}</th><th>${esc(t("mnt.wo.status"))}</th><th>${esc(t("mnt.wo.created"))}</th>${actions ? "<th></th>" : ""}</tr></thead>
    <tbody>${orders.map((o) => `<tr data-order="${esc(o.id)}" data-status="${esc(o.status)}">
      <td dir="auto">${esc(o.title)}${o.notes ? `<br><span class="hint">${esc(o.notes)}</span>` : ""}</td>
      ${name ? `<td><a href="#/maintenance/${encodeURIComponent(o.machine_id)}" dir="auto">${esc(name(o.machine_id))}</a></td>` : ""}
      <td dir="auto">${esc(o.assignee || "–")}</td><td><span class="wo ${esc(o.status)}">${esc(t(`mnt.wo.${o.status}`))}</span></td>
      <td>${esc(dateTime(o.created_ms))}</td>
      ${actions ? `<td>${NEXT[o.status] ? `<button type="button" class="advance" data-to="${NEXT[o.status]}">${esc(t(`mnt.wo.to_${NEXT[o.status]}`))}</button>` : ""}</td>` : ""}
    </tr>`).join("")}</tbody></table>`;
}

async function machinePage(el, id, ctx) {
  const path = `${BASE}/machines/${encodeURIComponent(id)}`;
  const [machine, health] = await Promise.all([get(`/api/v1/machines/${encodeURIComponent(id)}`), get(`${path}/health`)]);
  const feature = machine.signals.find((s) => s.name === health.signals[0]) || machine.signals[0];
  const device = feature ? feature.device_id : null;
  el.innerHTML = `
    <div class="toolbar"><h1>${esc(t("mnt.machine_title", { name: isolate(machine.name) }))}</h1>
      <a href="#/maintenance">${esc(t("mnt.all_machines"))}</a> <a href="#/machine/${encodeURIComponent(id)}">${esc(t("mnt.machine_page"))}</a></div>
    <div class="kpis" id="mnt-kpis"></div>
    <section class="panel"><h2>${esc(t("mnt.history"))}</h2>
      <div class="toolbar"><span class="seg">${Object.keys(RANGES).map((r) => `<button type="button" data-range="${r}">${esc(t(`range.${r}`))}</button>`).join(" ")}</span></div>
      <p class="hint" id="hist-note"></p><p class="error" id="hist-error" role="alert"></p>
      <div class="chart" id="health-chart"></div></section>
    <section class="panel" id="rul-panel"><h2>${esc(t("mnt.rul_title"))}</h2><div id="rul"></div>
      <p id="rul-message" role="status"></p><div class="chart" id="rul-chart"></div></section>
    <section class="panel"><h2>${esc(t("mnt.signals"))}</h2><div id="signals"></div></section>
    <section class="panel"><h2>${esc(t("mnt.reliability"))}</h2><div class="kpis" id="reliability"></div>
      <p class="hint">${esc(t("mnt.reliability_hint"))}</p></section>
    <section class="panel"><h2>${esc(t("mnt.orders"))}</h2>
      <form class="form" id="wo-form">
        <label><span>${esc(t("mnt.wo.title"))}</span><input name="title" required maxlength="200"></label>
        <label><span>${esc(t("mnt.wo.assignee"))}</span><input name="assignee" maxlength="100"></label>
        <label><span>${esc(t("mnt.wo.notes"))}</span><input name="notes" maxlength="10000"></label>
        <button type="submit" class="primary">${esc(t("mnt.wo.raise"))}</button>
      </form><p id="wo-message" role="status"></p><div id="wo-list"></div></section>
    <section class="panel"><h2>${esc(t("mnt.schedules"))}</h2><div id="schedules"></div></section>`;

  const showHealth = (h) => {
    const box = (value, label, extra = "") => `<div class="kpi" ${extra}><b>${value}</b><span>${esc(label)}</span></div>`;
    const rul = h.rul && typeof h.rul.rul === "number" ? (h.rul.beyond_cap ? `&gt; ${num(h.rul.horizon, 0)}` : num(h.rul.rul, 0)) + (h.rul.unit ? ` <small>${esc(h.rul.unit)}</small>` : "") : "–";
    el.querySelector("#mnt-kpis").innerHTML = [
      box(indexText(h), t("mnt.index"), `id="kpi-health" class="kpi hb-${esc(band(h))}" data-status="${esc(h.status)}"`),
      box(esc(statusName(h.alarm ? "alarm" : h.status)) + (h.settling ? `<small class="settling">${esc(t("mnt.settling"))}</small>` : ""), t("mnt.state")),
      box(h.trend_per_day === null ? "–" : esc(t("mnt.per_day", { n: num(h.trend_per_day, 1) })), t("mnt.trend")),
      box(h.days_to_alarm === null ? "–" : num(h.days_to_alarm, 1), t("mnt.days_to_alarm")),
      box(num(h.run_hours, 1), t("mnt.run_hours")),
      box(rul, t("mnt.rul")),
    ].join("");
    el.querySelector("#signals").innerHTML = h.status === "learning"
      ? `<p class="hint">${esc(t("mnt.learning_hint"))}</p>`
      : h.contributions.length ? `<table class="values"><tbody>${h.contributions.map((c) => `<tr><td>${esc(c.signal)}</td>
        <td class="share"><span class="bar-out"><span class="bar-in" style="inline-size:${Math.round(c.share * 100)}%"></span></span></td>
        <td class="v">${pct(c.share)}</td></tr>`).join("")}</tbody></table>`
        : `<p class="hint">${esc(t("mnt.signals_none"))}</p>`;
    showRul(h.rul);
  };
  const showRul = (rul) => {
    const box = el.querySelector("#rul");
    el.querySelector("#rul-chart").hidden = !rul;
    if (!rul) {
      box.innerHTML = `<p class="hint">${esc(t("mnt.rul_none"))}</p>`;
      return;
    }
    box.innerHTML = `<p class="rul-estimate" data-hours="${esc(rul.rul)}"><b>${esc(rulText(rul))}</b>
      <span>${esc(t("mnt.rul_interval", { lo: num(rul.lower, 0), hi: num(rul.upper, 0), p: pct(rul.coverage) }))}</span></p>
      ${rul.beyond_cap ? "" : `<p>${esc(t("mnt.rul_failure_at", { when: dateTime(rul.failure_expected_ms) }))}</p>`}
      <p class="hint">${esc(t("mnt.rul_model", { model: rul.model, when: dateTime(rul.ts) }))}</p>
      <button type="button" id="rul-order">${esc(t("mnt.rul_order"))}</button>`;
    box.querySelector("#rul-order").addEventListener("click", async () => {
      const m = el.querySelector("#rul-message");
      try {
        const wo = await post(`${path}/rul/work-order`, {});
        m.className = "ok";
        m.textContent = t("mnt.wo.raised", { title: wo.title });
        await loadOrders();
      } catch (e) { m.className = "error"; m.textContent = e.message; }
    });
  };
  showHealth(health);

  const rel = await get(`${path}/reliability`, { days: 90 }).catch(() => null);
  el.querySelector("#reliability").innerHTML = rel ? [
    [rel.mtbf_h === null ? "–" : `${num(rel.mtbf_h, 1)} <small>h</small>`, "mnt.mtbf"],
    [rel.mttr_h === null ? "–" : `${num(rel.mttr_h, 2)} <small>h</small>`, "mnt.mttr"],
    [pct(rel.availability), "mnt.availability"],
    [num(rel.failures, 0), "mnt.failures"],
  ].map(([v, k]) => `<div class="kpi"><b>${v}</b><span>${esc(t(k))}</span></div>`).join("") : "–";

  // work orders: raise, start, finish
  const list = el.querySelector("#wo-list");
  const message = el.querySelector("#wo-message");
  const say = (ok, text) => { message.className = ok ? "ok" : "error"; message.textContent = text; };
  const loadOrders = async () => {
    const orders = await get(`${path}/work-orders`);
    list.innerHTML = orders.length ? orderTable(orders, null, true) : `<p class="hint">${esc(t("mnt.orders_none"))}</p>`;
    list.querySelectorAll("button.advance").forEach((b) => b.addEventListener("click", async () => {
      const row = b.closest("tr");
      try {
        await request(`${path}/work-orders/${encodeURIComponent(row.dataset.order)}`, { method: "PATCH", body: { status: b.dataset.to } });
        await loadOrders();
        await loadSchedules();
      } catch (e) { say(false, e.message); }
    }));
  };
  const form = el.querySelector("#wo-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { title: f.get("title").trim(), notes: f.get("notes") };
    if (f.get("assignee").trim()) body.assignee = f.get("assignee").trim();
    try {
      await post(`${path}/work-orders`, body);
      say(true, t("mnt.wo.raised", { title: body.title }));
      form.reset();
      await loadOrders();
    } catch (err) { say(false, err.message); }
  });

  const loadSchedules = async () => {
    const schedules = await get(`${path}/schedules`);
    el.querySelector("#schedules").innerHTML = schedules.length ? `<table class="values"><tbody>${schedules.map((s) => `<tr data-schedule="${esc(s.id)}" data-due="${esc(s.due.status)}">
      <td dir="auto">${esc(s.title)}</td><td>${esc(t("mnt.every", { n: amount(s.interval), unit: t(`mnt.unit.${{ calendar: "days", run_hours: "hours", count: "counts" }[s.basis] || "counts"}`) }))}</td>
      <td><span class="due ${esc(s.due.status)}">${esc(t(`mnt.due.${s.due.status}`))}</span></td><td class="v">${esc(left(s.due))}</td></tr>`).join("")}
      </tbody></table>` : `<p class="hint">${esc(t("mnt.schedules_none"))}</p>`;
  };

  // health index history: stored as telemetry of the machine's device
  let range = "24h";
  const chart = device ? timeChart(el.querySelector("#health-chart"), [t("mnt.index")]) : null;
  const showHistory = async () => {
    el.querySelectorAll("[data-range]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.range === range)));
    if (!chart) return;
    const end = Date.now();
    const start = end - RANGES[range];
    const data = await get(`/api/v1/telemetry/${encodeURIComponent(device)}/health_index`, { start, end, points: HISTORY_POINTS });
    chart.setData(data.points.map((p) => p[0]), data.points.map((p) => p[1]));
    chart.plot.setScale("x", { min: start, max: end });
    el.querySelector("#hist-error").textContent = "";
    el.querySelector("#hist-note").textContent = data.points.some((p) => p[1] !== null) ? "" : t("mnt.history_none");
  };
  // remaining life history: the hourly estimates and their interval, also telemetry
  const rulChart = device ? timeChart(el.querySelector("#rul-chart"), [t("mnt.rul_series"), t("mnt.rul_low"), t("mnt.rul_high")]) : null;
  const showRulHistory = async () => {
    if (!rulChart || !device) return;
    const end = Date.now();
    const start = end - RANGES[range];
    const keys = ["rul_hours", "rul_low_hours", "rul_high_hours"];
    const series = await Promise.all(keys.map((k) => get(`/api/v1/telemetry/${encodeURIComponent(device)}/${k}`, { start, end, points: HISTORY_POINTS })));
    const xs = series[0].points.map((p) => p[0]);
    const at = series.map((s) => new Map(s.points.map((p) => [p[0], p[1]])));
    rulChart.setData(xs, ...at.map((m) => xs.map((x) => (m.has(x) ? m.get(x) : null))));
    rulChart.plot.setScale("x", { min: start, max: end });
  };
  const redraw = () => Promise.all([
    showHistory().catch((e) => { el.querySelector("#hist-error").textContent = e.message; }),
    showRulHistory().catch(() => {}),
  ]);
  el.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => { range = b.dataset.range; redraw(); }));

  await Promise.all([
    loadOrders().catch((e) => { list.innerHTML = errorBox(e); }),
    loadSchedules().catch((e) => { el.querySelector("#schedules").innerHTML = errorBox(e); }),
    redraw(),
  ]);
  const timer = setInterval(() => {
    get(`${path}/health`).then(showHealth).catch(() => {});
    redraw();
  }, 60_000);
  return () => { clearInterval(timer); if (chart) chart.destroy(); if (rulChart) rulChart.destroy(); };
}
