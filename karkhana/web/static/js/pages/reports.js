// Report downloads: shift and daily reports as CSV and PDF.
import { t } from "../i18n.js";
import { esc, today } from "../format.js";

export async function render(el, params, ctx) {
  const siteSelect = ctx.sites.length > 1 ? `<label><span>${esc(t("common.site"))}</span><select name="site_id">${ctx.sites
    .map((s) => `<option value="${esc(s.id)}">${esc(s.name)}</option>`).join("")}</select></label>` : "";
  el.innerHTML = `<h1>${esc(t("reports.title"))}</h1>
    <section class="panel reports"><form class="form" id="report-form">
      <label><span>${esc(t("reports.date"))}</span><input type="date" name="date" value="${today()}" required></label>
      <label><span>${esc(t("reports.shift"))}</span><input name="shift" placeholder="${esc(t("reports.shift_hint"))}"></label>
      ${siteSelect}</form>
      <div id="links"></div></section>`;
  const form = el.querySelector("#report-form");
  const draw = () => {
    const data = new FormData(form);
    const q = new URLSearchParams();
    for (const [k, v] of data.entries()) if (v) q.set(k, v);
    const shift = new URLSearchParams(q);
    const daily = new URLSearchParams(q);
    daily.delete("shift");
    el.querySelector("#links").innerHTML = [
      ["reports.shift_csv", `shift.csv?${shift}`], ["reports.shift_pdf", `shift.pdf?${shift}`],
      ["reports.daily_csv", `daily.csv?${daily}`], ["reports.daily_pdf", `daily.pdf?${daily}`],
    ].map(([k, href]) => `<a class="dl" download data-report="${esc(href.split("?")[0])}" href="/api/v1/production/reports/${esc(href)}">${esc(t(k))}</a>`).join("");
  };
  form.addEventListener("input", draw);
  draw();
  return null;
}
