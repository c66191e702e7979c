// The plant's machines as the overview and line pages show them: state, speed, output, OEE,
// alarms; kept current by polling the production overview and by live samples.
import { ApiError, get, optional } from "./api.js";
import { pick, t } from "./i18n.js";
import { esc, num, pct, stateName, time } from "./format.js";
import { watch } from "./live.js";

const POLL_MS = 5000;

// Every machine of the asset model, with the production module's figures where it has them
// (without the module the tile shows "no data"; a machine it does not follow, such as a meter,
// a compressor or a room sensor, is shown as a utility outside OEE).
export async function overview(ctx, siteId) {
  const makes = await producingTemplates();
  const data = await optional("/api/v1/production/overview", siteId ? { site_id: siteId } : undefined)
    .catch((e) => {
      // a site the production module has not picked up yet (it looks for new ones every 30 s)
      if (e instanceof ApiError && e.status === 404) return { machines: [] };
      throw e;
    });
  const known = new Map((data ? data.machines : []).map((m) => [m.machine_id, m]));
  const machines = [...ctx.machines.values()]
    .filter((m) => !siteId || m.site_id === siteId)
    .map((m) => known.get(m.id) || { machine_id: m.id, name: m.name, line_id: m.line_id, site_id: m.site_id,
      template: m.template, state: data && !makes.has(m.template) ? "utility" : "no_data", state_since_ms: null, speed: null, shift: null, output: null,
      good: null, oee: null });
  return { production: Boolean(data), machines };
}

// Templates whose machines produce units (they have a count): the others are utilities.
let producing = null;
function producingTemplates() {
  if (!producing) {
    producing = get("/api/v1/templates")
      .then((list) => new Set(list.filter((tpl) => tpl.count_key).map((tpl) => tpl.id)))
      .catch(() => { producing = null; return new Set(); });
  }
  return producing;
}

export async function openAlarms(params) {
  const data = await optional("/api/v1/alarms", { state: "open", ...params });
  return data ? data.alarms : [];
}

const SEVERITY = { info: 0, warning: 1, critical: 2 };

function alarmBadge(alarms) {
  if (!alarms || !alarms.length) return "";
  const worst = alarms.reduce((a, b) => (SEVERITY[b.severity] > SEVERITY[a.severity] ? b : a));
  const title = alarms.map((a) => pick(a.message)).join("\n");
  return `<span class="badge ${esc(worst.severity)}" title="${esc(title)}">${alarms.length}</span>`;
}

export function tile(m, alarms) {
  const speed = m.speed ? `${num(m.speed.value)} ${esc(m.speed.unit)}` : "–";
  const since = m.state_since_ms ? ` · ${esc(t("common.since", { time: time(m.state_since_ms) }))}` : "";
  return `<a class="tile st-${esc(m.state)}" href="#/machine/${encodeURIComponent(m.machine_id)}"
      data-machine="${esc(m.machine_id)}" data-state="${esc(m.state)}">
    <h3><span class="name" dir="auto">${esc(m.name)}</span><span class="alarms">${alarmBadge(alarms)}</span></h3>
    <div class="state">${esc(stateName(m.state))}${since}</div>
    <dl><dt>${esc(t("tile.speed"))}</dt><dd class="speed">${speed}</dd>
      <dt>${esc(t("tile.output"))}</dt><dd class="output">${num(m.output, 0)}</dd>
      <dt>${esc(t("tile.oee"))}</dt><dd class="oee">${m.oee ? pct(m.oee.oee) : "–"}</dd></dl>
  </a>`;
}

export function legend() {
  return `<div class="legend">${["running", "idle", "stopped", "fault", "planned_stop", "no_data"]
    .map((s) => `<span><span class="dot" style="background:var(--${s})"></span> ${esc(stateName(s))}</span>`)
    .join("")}</div>`;
}

function byMachine(alarms) {
  const out = new Map();
  for (const a of alarms) {
    if (!out.has(a.machine_id)) out.set(a.machine_id, []);
    out.get(a.machine_id).push(a);
  }
  return out;
}

// The signal each template reports speed in: the one whose unit is the overview's speed unit.
const speedKeys = new Map();
async function speedKey(template, unit) {
  const id = `${template}|${unit}`;
  if (!speedKeys.has(id)) {
    speedKeys.set(id, get(`/api/v1/templates/${encodeURIComponent(template)}`)
      .then((tpl) => (tpl.signals.find((s) => s.unit === unit && s.kind === "number") || {}).key || null)
      .catch(() => null));
  }
  return speedKeys.get(id);
}

// Draw the tiles grouped by line into `el`, then keep them current. Returns a cleanup function.
export async function liveTiles(el, ctx, { siteId = null, lineId = null } = {}) {
  let { production, machines } = await overview(ctx, siteId);
  const keep = (m) => !lineId || m.line_id === lineId;
  let alarms = byMachine(await openAlarms(siteId ? { site_id: siteId } : {}));
  const groups = new Map();
  for (const m of machines.filter(keep)) {
    if (!groups.has(m.line_id)) groups.set(m.line_id, []);
    groups.get(m.line_id).push(m);
  }
  const parts = [];
  if (!production) parts.push(`<p class="hint">${esc(t("overview.no_production"))}</p>`);
  parts.push('<p class="hint" id="shift"></p>');
  for (const [line, list] of groups) {
    const info = ctx.lines.get(line);
    if (!lineId) {
      parts.push(`<div class="line-head"><h2>${esc(info ? info.name : line)}</h2>
        <a href="#/line/${encodeURIComponent(line)}">${esc(t("overview.open_line"))}</a></div>`);
    }
    parts.push(`<div class="tiles">${list.map((m) => tile(m, alarms.get(m.machine_id))).join("")}</div>`);
  }
  if (!groups.size) parts.push(`<p class="hint">${esc(t("overview.empty"))}</p>`);
  el.innerHTML = parts.join("");
  const showShift = () => {
    const shifts = new Map(machines.filter((m) => keep(m) && m.shift).map((m) => [m.shift.id, m.shift]));
    el.querySelector("#shift").textContent = [...shifts.values()]
      .map((s) => t("overview.shift", { name: s.name, start: time(s.start_ms), end: time(s.end_ms) })).join(" · ");
  };
  showShift();

  const tiles = new Map([...el.querySelectorAll(".tile")].map((n) => [n.dataset.machine, n]));
  const speedOf = new Map();
  const learnSpeeds = () => Promise.all(machines.filter((m) => m.speed && tiles.has(m.machine_id)).map(async (m) => {
    speedOf.set(m.machine_id, { key: await speedKey(m.template, m.speed.unit), unit: m.speed.unit });
  }));
  learnSpeeds();

  const refresh = async () => {
    ({ machines } = await overview(ctx, siteId));
    alarms = byMachine(await openAlarms(siteId ? { site_id: siteId } : {}));
    for (const m of machines) {
      const node = tiles.get(m.machine_id);
      if (!node) continue;
      const fresh = document.createElement("template");
      fresh.innerHTML = tile(m, alarms.get(m.machine_id)).trim();
      const next = fresh.content.firstElementChild;
      node.replaceWith(next);
      tiles.set(m.machine_id, next);
    }
    learnSpeeds();
    showShift();
  };
  const timer = setInterval(() => refresh().catch(() => {}), POLL_MS);

  // one stream for all sites: a browser keeps only a few connections to a server open
  const sites = siteId ? [siteId] : [...new Set(machines.filter(keep).map((m) => m.site_id))];
  const close = !sites.length ? () => {} : watch({ site_id: sites }, (samples) => {
    for (const s of samples) {
      const node = tiles.get(s.machine_id);
      if (!node) continue;
      const speed = speedOf.get(s.machine_id);
      if (speed && speed.key === s.signal && typeof s.value === "number") {
        node.querySelector(".speed").textContent = `${num(s.value)} ${speed.unit}`;
      }
      node.classList.remove("live");
      void node.offsetWidth;
      node.classList.add("live");
    }
  });
  return () => { clearInterval(timer); close(); };
}
