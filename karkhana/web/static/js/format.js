// Small formatting helpers shared by the pages.
import { current, t } from "./i18n.js";

const locale = () => (current() === "ur" ? "ur-PK" : undefined);

// Times are shown in the plant's time zone (the browser's own where sites differ).
let zone;
export function setZone(timeZone) {
  try {
    zone = timeZone ? new Intl.DateTimeFormat("en", { timeZone }).resolvedOptions().timeZone : undefined;
  } catch {
    zone = undefined; // a zone this browser does not know
  }
}
export function timeZone() { return zone; }

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ESC[c]);

export function num(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return esc(v);
  return v.toLocaleString("en", { maximumFractionDigits: digits });
}

export const pct = (f) => (f === null || f === undefined ? "–" : `${(f * 100).toFixed(1)}%`);

export function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h) return t("unit.hm", { h, m });
  if (m) return t("unit.ms", { m, s: s % 60 });
  return t("unit.s", { s });
}

export function time(ms) {
  return ms ? new Date(ms).toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit", timeZone: zone }) : "–";
}

export function dateTime(ms) {
  return ms ? new Date(ms).toLocaleString(locale(), { dateStyle: "short", timeStyle: "short", timeZone: zone }) : "–";
}

export function today() {
  return new Intl.DateTimeFormat("en-CA", { timeZone: zone }).format(new Date()); // YYYY-MM-DD
}

export const STATES = ["running", "idle", "stopped", "fault", "planned_stop", "no_data"];

export function stateName(state) {
  return t(`state.${STATES.includes(state) || state === "utility" ? state : "no_data"}`);
}

export function html(el, markup) { el.innerHTML = markup; return el; }

export function errorBox(e) { return `<p class="error" role="alert">${esc(e.message || e)}</p>`; }
