// One line: its machines as tiles, the line's OEE this shift, and a live chart of every machine's
// speed.
import { get, optional } from "../api.js";
import { t } from "../i18n.js";
import { esc, pct } from "../format.js";
import { watch } from "../live.js";
import { liveChart } from "../charts.js";
import { legend, liveTiles, overview } from "../plant.js";

export async function render(el, params, ctx) {
  const id = params[0];
  const line = ctx.lines.get(id);
  if (!line) throw new Error(t("line.unknown", { id }));
  el.innerHTML = `<div class="toolbar"><h1>${esc(line.name)}</h1></div>
    <div class="kpis" id="line-oee"></div>
    <section class="panel" id="line-live"><h2>${esc(t("line.speeds"))}</h2><div class="chart" id="line-chart"></div></section>
    ${legend()}<div id="tiles"></div>`;
  const oee = await optional("/api/v1/production/oee", { line_id: id, shift: "current" }).catch(() => null);
  el.querySelector("#line-oee").innerHTML = oee ? [["tile.oee", oee.oee], ["oee.availability", oee.availability],
    ["oee.performance", oee.performance], ["oee.quality", oee.quality]]
    .map(([k, v]) => `<div class="kpi"><b>${pct(v)}</b><span>${esc(t(k))}</span></div>`).join("") : "";
  const stopTiles = await liveTiles(el.querySelector("#tiles"), ctx, { siteId: line.site_id, lineId: id });

  // one series per machine: the signal its speed is reported in
  const { machines } = await overview(ctx, line.site_id);
  const mine = machines.filter((m) => m.line_id === id && m.speed);
  const keys = await Promise.all(mine.map(async (m) => {
    const tpl = await get(`/api/v1/templates/${encodeURIComponent(m.template)}`).catch(() => ({ signals: [] }));
    return (tpl.signals.find((s) => s.unit === m.speed.unit && s.kind === "number") || {}).key;
  }));
  const series = mine.map((m, i) => ({ machine: m.machine_id, key: keys[i], label: `${m.name} (${m.speed.unit})` }))
    .filter((s) => s.key);
  el.querySelector("#line-live").hidden = !series.length;
  const chart = series.length ? liveChart(el.querySelector("#line-chart"), series.map((s) => s.label), 10 * 60_000) : null;
  const stopLive = chart ? watch({ site_id: line.site_id }, (samples) => {
    for (const s of samples) {
      const i = series.findIndex((x) => x.machine === s.machine_id && x.key === s.signal);
      if (i >= 0 && typeof s.value === "number") chart.add(s.ts, series.map((_, k) => (k === i ? s.value : null)));
    }
  }) : () => {};
  return () => { stopTiles(); stopLive(); if (chart) chart.destroy(); };
}
