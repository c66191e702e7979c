// Plant overview: every machine as a tile, grouped by line, live.
import { t } from "../i18n.js";
import { esc } from "../format.js";
import { legend, liveTiles } from "../plant.js";

export async function render(el, params, ctx) {
  const siteSelect = ctx.sites.length > 1
    ? `<select id="site"><option value="">${esc(t("common.all_sites"))}</option>${ctx.sites
      .map((s) => `<option value="${esc(s.id)}">${esc(s.name)}</option>`).join("")}</select>` : "";
  el.innerHTML = `<div class="toolbar"><h1>${esc(t("overview.title"))}</h1><span class="spacer"></span>${siteSelect}</div>
    ${legend()}<div id="tiles"></div>`;
  let stop = await liveTiles(el.querySelector("#tiles"), ctx, { siteId: params[0] || null });
  const select = el.querySelector("#site");
  if (select) {
    select.value = params[0] || "";
    select.addEventListener("change", () => { location.hash = select.value ? `#/overview/${encodeURIComponent(select.value)}` : "#/"; });
  }
  return () => stop();
}
