// Alarms: the open (or all) alarms with acknowledge and shelve, the rules, and a form to add one
// ("loom bearing temperature above 70 °C for 2 minutes").
import { del, get, optional, post } from "../api.js";
import { pick, t } from "../i18n.js";
import { dateTime, esc, errorBox, num } from "../format.js";

const OPS = [">", ">=", "<", "<="];
const SEVERITIES = ["info", "warning", "critical"];
const CONFIGURE = ["admin", "manager", "engineer"]; // roles that may change rules (the API decides)

export async function render(el, params, ctx) {
  const probe = await optional("/api/v1/alarms", { state: "open" });
  if (!probe) { el.innerHTML = `<h1>${esc(t("alarms.title"))}</h1><p class="hint">${esc(t("alarms.missing"))}</p>`; return null; }
  let which = params[0] === "all" ? "all" : "open";
  const machines = [...ctx.machines.values()];
  el.innerHTML = `<div class="toolbar"><h1>${esc(t("alarms.title"))}</h1><span class="spacer"></span>
      <span class="seg"><button type="button" data-which="open">${esc(t("alarms.open"))}</button>
      <button type="button" data-which="all">${esc(t("alarms.all"))}</button></span></div>
    <div id="alarm-list"></div>
    <section class="panel" id="rule-add" ${CONFIGURE.includes(ctx.me.role) ? "" : "hidden"}><h2>${esc(t("rules.add"))}</h2>
      <form class="form" id="rule-form">
        <label><span>${esc(t("rules.name"))}</span><input name="name" required maxlength="200" placeholder="${esc(t("rules.name_hint"))}"></label>
        <label><span>${esc(t("rules.machine"))}</span><select name="machine_id" required>${machines
          .map((m) => `<option value="${esc(m.id)}">${esc(m.name)}</option>`).join("")}</select></label>
        <label><span>${esc(t("rules.signal"))}</span><select name="signal" required></select></label>
        <label><span>${esc(t("rules.op"))}</span><select name="op">${OPS.map((o) => `<option value="${esc(o)}">${esc(t(`rules.op.${o}`))}</option>`).join("")}</select></label>
        <label><span>${esc(t("rules.value"))}</span><input name="value" type="number" step="any" required></label>
        <label><span>${esc(t("rules.for_min"))}</span><input name="for_min" type="number" min="0" step="any" value="0" required></label>
        <label><span>${esc(t("rules.deadband"))}</span><input name="deadband" type="number" min="0" step="any" value="0"></label>
        <label><span>${esc(t("rules.severity"))}</span><select name="severity">${SEVERITIES.map((s) => `<option value="${s}" ${s === "warning" ? "selected" : ""}>${esc(t(`severity.${s}`))}</option>`).join("")}</select></label>
        <button type="submit" class="primary">${esc(t("rules.create"))}</button>
      </form><p id="rule-message" role="status"></p></section>
    <section class="panel"><h2>${esc(t("rules.title"))}</h2><div id="rule-list"></div></section>`;

  const machineName = (id) => (ctx.machines.get(id) || { name: id }).name;
  const list = el.querySelector("#alarm-list");
  const drawAlarms = (alarms) => {
    el.querySelectorAll("[data-which]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.which === which)));
    if (!alarms.length) { list.innerHTML = `<p class="hint">${esc(t("alarms.none"))}</p>`; return; }
    list.innerHTML = alarms.map((a) => `<div class="panel alarm ${esc(a.severity)}" data-alarm="${esc(a.id)}" data-state="${esc(a.state)}">
      <span class="badge ${esc(a.severity)}">${esc(t(`severity.${a.severity}`))}</span>
      <span><strong>${esc(machineName(a.machine_id))}</strong> · ${esc(pick(a.message))}
        <br><span class="hint">${esc(t("alarms.value", { value: num(a.value, 2), limit: num(a.limit, 2) }))} ·
        ${esc(dateTime(a.raised_ms))}${a.count > 1 ? ` · ×${a.count}` : ""}</span>
        ${a.acked_by ? `<br><span class="hint">${esc(t("alarms.acked_by", { user: a.acked_by, time: dateTime(a.acked_ms) }))}${a.ack_comment ? `: ${esc(a.ack_comment)}` : ""}</span>` : ""}</span>
      <span class="state">${esc(t(`alarm_state.${a.state}`))}</span>
      ${["raised", "shelved"].includes(a.state) ? `<form class="ack"><input name="comment" maxlength="1000" placeholder="${esc(t("alarms.comment"))}" aria-label="${esc(t("alarms.comment"))}">
        <button type="submit" class="primary">${esc(t("alarms.ack"))}</button>
        ${a.state === "raised" ? `<button type="button" class="shelve">${esc(t("alarms.shelve"))}</button>` : ""}</form>` : ""}
    </div>`).join("");
    list.querySelectorAll("[data-alarm]").forEach((node) => {
      const form = node.querySelector("form.ack");
      if (!form) return;
      const id = encodeURIComponent(node.dataset.alarm);
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        await act(() => post(`/api/v1/alarms/${id}/ack`, { comment: form.comment.value }));
      });
      form.querySelector(".shelve")?.addEventListener("click", () => act(() => post(`/api/v1/alarms/${id}/shelve`, { minutes: 60 })));
    });
  };
  const act = async (call) => {
    try { await call(); await loadAlarms(); } catch (e) { list.insertAdjacentHTML("afterbegin", errorBox(e)); }
  };
  const loadAlarms = async () => drawAlarms((await get("/api/v1/alarms", { state: which })).alarms);
  el.querySelectorAll("[data-which]").forEach((b) => b.addEventListener("click", () => { which = b.dataset.which; loadAlarms(); }));

  // rule form: the signals of the chosen machine
  const form = el.querySelector("#rule-form");
  const fillSignals = async () => {
    const select = form.signal;
    select.innerHTML = "";
    if (!form.machine_id.value) return;
    const m = await get(`/api/v1/machines/${encodeURIComponent(form.machine_id.value)}`);
    const tpl = await get(`/api/v1/templates/${encodeURIComponent(m.template)}`).catch(() => ({ signals: [] }));
    const info = new Map(tpl.signals.map((s) => [s.key, s]));
    select.innerHTML = m.signals.filter((s) => (info.get(s.name) || {}).kind !== "string")
      .map((s) => `<option value="${esc(s.name)}">${esc((info.get(s.name) || {}).name || s.name)}${s.unit ? ` (${esc(s.unit)})` : ""}</option>`).join("");
  };
  form.machine_id.addEventListener("change", fillSignals);
  await fillSignals().catch(() => {});
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const rule = {
      name: f.get("name"), machine_id: f.get("machine_id"), severity: f.get("severity"),
      condition: { type: "threshold", signal: f.get("signal"), op: f.get("op"), value: Number(f.get("value")),
        deadband: Number(f.get("deadband") || 0) },
      for_s: Math.round(Number(f.get("for_min")) * 60),
    };
    const message = el.querySelector("#rule-message");
    try {
      await post("/api/v1/rules", rule);
      message.className = "ok";
      message.textContent = t("rules.created", { name: rule.name });
      form.name.value = "";
      await loadRules();
    } catch (err) {
      message.className = "error";
      message.textContent = err.message;
    }
  });

  const loadRules = async () => {
    const data = await get("/api/v1/rules");
    const rules = Array.isArray(data) ? data : data.rules || [];
    const box = el.querySelector("#rule-list");
    if (!rules.length) { box.innerHTML = `<p class="hint">${esc(t("rules.none"))}</p>`; return; }
    box.innerHTML = `<table class="values"><tbody>${rules.map((r) => {
      const c = r.condition || {};
      const what = c.type === "threshold" ? `${c.signal} ${c.op} ${c.value}${r.for_s ? ` · ${t("rules.for", { min: num(r.for_s / 60, 1) })}` : ""}` : (c.type || "");
      return `<tr data-rule="${esc(r.id)}"><td>${esc(r.name)}</td><td>${esc(r.machine_id ? machineName(r.machine_id) : r.template || "")}</td><td>${esc(what)}</td>
        <td>${esc(t(`severity.${r.severity}`))}</td><td><button type="button" class="delete">${esc(t("rules.delete"))}</button></td></tr>`;
    }).join("")}</tbody></table>`;
    box.querySelectorAll("[data-rule]").forEach((row) => row.querySelector(".delete").addEventListener("click", async () => {
      try { await del(`/api/v1/rules/${encodeURIComponent(row.dataset.rule)}`); await loadRules(); } catch (err) { box.insertAdjacentHTML("afterbegin", errorBox(err)); }
    }));
  };
  drawAlarms(which === "open" ? probe.alarms : (await get("/api/v1/alarms", { state: which })).alarms);
  await loadRules().catch((e) => { el.querySelector("#rule-list").innerHTML = errorBox(e); });
  // refresh, but never under someone typing a comment
  const busy = () => list.contains(document.activeElement)
    || [...list.querySelectorAll("input[name=comment]")].some((i) => i.value);
  const timer = setInterval(() => { if (!busy()) loadAlarms().catch((e) => { list.innerHTML = errorBox(e); }); }, 10_000);
  return () => clearInterval(timer);
}
