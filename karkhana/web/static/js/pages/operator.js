// Operator page: pick a stop, then a reason from the reason tree with big buttons.
import { get, optional, put } from "../api.js";
import { pick, t } from "../i18n.js";
import { duration, esc, errorBox, stateName, time } from "../format.js";

const LOOKBACK_MS = 24 * 3_600_000;
const SHOWN = 40;
const OPERATE = ["admin", "manager", "engineer", "operator"]; // roles that may give reasons (the API decides)

export async function render(el, params, ctx) {
  const siteId = params[0] || (ctx.sites[0] || {}).id;
  const reasons = await optional("/api/v1/production/reasons");
  if (!reasons) { el.innerHTML = `<h1>${esc(t("operator.title"))}</h1><p class="hint">${esc(t("overview.no_production"))}</p>`; return null; }
  const siteSelect = ctx.sites.length > 1 ? `<select id="site">${ctx.sites
    .map((s) => `<option value="${esc(s.id)}">${esc(s.name)}</option>`).join("")}</select>` : "";
  el.innerHTML = `<div class="toolbar"><h1>${esc(t("operator.title"))}</h1><span class="spacer"></span>${siteSelect}</div>
    <p class="hint">${esc(t(OPERATE.includes(ctx.me.role) ? "operator.hint" : "operator.read_only"))}</p>
    <div class="stops" id="stops"></div>
    <section class="panel" id="reason-panel" hidden>
      <div class="toolbar"><h2 id="reason-title"></h2><span class="spacer"></span>
        <button type="button" id="back" hidden>${esc(t("operator.back"))}</button></div>
      <div class="reasons" id="reasons"></div></section>
    <p id="message" role="status"></p>`;
  const select = el.querySelector("#site");
  if (select) {
    select.value = siteId;
    select.addEventListener("change", () => { location.hash = `#/operator/${encodeURIComponent(select.value)}`; });
  }
  const machineName = (id) => (ctx.machines.get(id) || { name: id }).name;
  let stops = [];
  let chosen = null;
  let path = [];

  const drawStops = () => {
    const box = el.querySelector("#stops");
    if (!stops.length) { box.innerHTML = `<p class="hint">${esc(t("operator.none"))}</p>`; return; }
    box.innerHTML = stops.slice(0, SHOWN).map((s) => {
      const open = s.end_ms === null;
      const len = (open ? Date.now() : s.end_ms) - s.start_ms;
      return `<button type="button" class="stop ${esc(s.state)} ${s.reason_id ? "done" : ""}" data-stop="${esc(s.id)}"
          aria-pressed="${Boolean(chosen && chosen.id === s.id)}">
        <strong>${esc(machineName(s.machine_id))}</strong>
        <span>${esc(stateName(s.state))} · ${time(s.start_ms)} · ${esc(open ? t("operator.ongoing") : duration(len))}</span>
        <span class="reason">${s.reason ? esc(pick(s.reason)) + (s.auto ? ` (${esc(t("operator.auto"))})` : "") : `<em>${esc(t("operator.no_reason"))}</em>`}</span>
      </button>`;
    }).join("");
    if (!OPERATE.includes(ctx.me.role)) return;
    box.querySelectorAll("[data-stop]").forEach((b) => b.addEventListener("click", () => {
      chosen = stops.find((s) => String(s.id) === b.dataset.stop);
      path = [];
      drawStops();
      drawReasons();
    }));
  };

  const drawReasons = () => {
    const panel = el.querySelector("#reason-panel");
    panel.hidden = !chosen;
    if (!chosen) return;
    const level = path.length ? path[path.length - 1].children : reasons.reasons;
    el.querySelector("#reason-title").textContent = t("operator.reason_for", {
      machine: machineName(chosen.machine_id), time: time(chosen.start_ms) })
      + (path.length ? ` › ${path.map((r) => pick(r.label)).join(" › ")}` : "");
    el.querySelector("#back").hidden = !path.length;
    const box = el.querySelector("#reasons");
    box.innerHTML = level.map((r, i) => `<button type="button" data-i="${i}" data-reason="${esc(r.id)}"
      class="${r.children && r.children.length ? "branch" : ""}">${esc(pick(r.label))}</button>`).join("");
    box.querySelectorAll("button").forEach((b) => b.addEventListener("click", async () => {
      const reason = level[Number(b.dataset.i)];
      if (reason.children && reason.children.length) { path.push(reason); drawReasons(); return; }
      const message = el.querySelector("#message");
      try {
        await put(`/api/v1/production/stops/${encodeURIComponent(chosen.id)}/reason`, { reason_id: reason.id });
        message.className = "ok";
        message.textContent = t("operator.saved", { reason: pick(reason.label), machine: machineName(chosen.machine_id) });
        chosen = null;
        await load();
      } catch (e) {
        message.className = "error";
        message.textContent = e.message;
      }
    }));
  };
  el.querySelector("#back").addEventListener("click", () => { path.pop(); drawReasons(); });

  const load = async () => {
    const data = await get("/api/v1/production/stops", { site_id: siteId, start: Date.now() - LOOKBACK_MS });
    const rank = (s) => (s.end_ms === null ? 0 : s.reason_id ? 2 : 1);
    stops = data.stops.slice().sort((a, b) => rank(a) - rank(b) || b.start_ms - a.start_ms);
    if (chosen) chosen = stops.find((s) => s.id === chosen.id) || null;
    drawStops();
    drawReasons();
  };
  try { await load(); } catch (e) { el.querySelector("#stops").innerHTML = errorBox(e); }
  const timer = setInterval(() => load().catch(() => {}), 10_000);
  return () => clearInterval(timer);
}
