// Downtime Pareto by reason and by machine over a chosen period.
import { get, optional } from "../api.js";
import { pick, t } from "../i18n.js";
import { duration, esc, errorBox } from "../format.js";

const PERIODS = { "8h": 8 * 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000 };

function bars(items, labelOf) {
  if (!items.length) return `<p class="hint">${esc(t("pareto.empty"))}</p>`;
  const top = items[0].duration_ms || 1;
  const total = items.reduce((a, i) => a + i.duration_ms, 0) || 1;
  let running = 0;
  return `<div class="pareto">${items.map((i) => {
    running += i.duration_ms;
    return `<div class="row" data-key="${esc(i.key)}" data-ms="${i.duration_ms}">
      <span class="label">${esc(labelOf(i))}</span>
      <span class="bar-out"><span class="bar-in" style="display:block;width:${(i.duration_ms / top) * 100}%"></span></span>
      <span class="fig">${esc(duration(i.duration_ms))} · ${esc(t("pareto.count", { n: i.count }))} · ${Math.round((running / total) * 100)}%</span>
    </div>`;
  }).join("")}</div>`;
}

export async function render(el, params, ctx) {
  if (!(await optional("/api/v1/production/reasons"))) {
    el.innerHTML = `<h1>${esc(t("pareto.title"))}</h1><p class="hint">${esc(t("overview.no_production"))}</p>`;
    return null;
  }
  let period = params[0] && PERIODS[params[0]] ? params[0] : "24h";
  el.innerHTML = `<div class="toolbar"><h1>${esc(t("pareto.title"))}</h1><span class="spacer"></span>
      <span class="seg">${Object.keys(PERIODS).map((p) => `<button type="button" data-period="${p}">${esc(t(`range.${p}`))}</button>`).join(" ")}</span></div>
    <p class="hint">${esc(t("pareto.hint"))}</p>
    <section class="panel"><h2>${esc(t("pareto.by_reason"))}</h2><div id="by-reason"></div></section>
    <section class="panel"><h2>${esc(t("pareto.by_machine"))}</h2><div id="by-machine"></div></section>`;
  const show = async () => {
    el.querySelectorAll("[data-period]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.period === period)));
    const end = Date.now();
    const range = { start: end - PERIODS[period], end };
    for (const [by, box] of [["reason", "#by-reason"], ["machine", "#by-machine"]]) {
      try {
        const data = await get("/api/v1/production/pareto", { by, ...range });
        el.querySelector(box).innerHTML = bars(data.items, (i) => pick(i.label)
          || (by === "machine" ? (ctx.machines.get(i.key) || {}).name : null) || (i.key === null || i.key === "" ? t("operator.no_reason") : i.key));
      } catch (e) {
        el.querySelector(box).innerHTML = errorBox(e);
      }
    }
  };
  el.querySelectorAll("[data-period]").forEach((b) => b.addEventListener("click", () => { period = b.dataset.period; show(); }));
  await show();
  const timer = setInterval(() => show().catch(() => {}), 30_000);
  return () => clearInterval(timer);
}
