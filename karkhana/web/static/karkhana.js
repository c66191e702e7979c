"use strict";
const $ = (id) => document.getElementById(id);
// The session lives in an HttpOnly cookie that scripts cannot read; changes carry the CSRF token.
let csrf = sessionStorage.getItem("karkhana-csrf");

async function api(path, options = {}) {
  const headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
  if (options.method && options.method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) { showLogin(); throw new Error("signed out"); }
  if (!r.ok) throw new Error((await r.json()).detail || r.statusText);
  return r.status === 204 ? null : r.json();
}

function showLogin() {
  csrf = null; sessionStorage.removeItem("karkhana-csrf");
  $("login").hidden = false; $("live").hidden = true; $("logout").hidden = true; $("who").textContent = "";
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const r = await fetch("/api/v1/auth/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: form.get("username"), password: form.get("password"), session: true }),
  });
  if (r.status === 429) { $("login-error").textContent = (await r.json()).detail; return; }
  if (!r.ok) { $("login-error").textContent = "Wrong username or password"; return; }
  const body = await r.json();
  csrf = body.csrf_token; sessionStorage.setItem("karkhana-csrf", csrf);
  start();
});

$("logout").addEventListener("click", async () => { await api("/api/v1/auth/logout", { method: "POST" }).catch(() => {}); showLogin(); });

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
function fmt(v) { return typeof v === "number" ? (Math.round(v * 100) / 100).toLocaleString() : esc(v); }

async function refresh() {
  const devices = await api("/api/v1/devices");
  const now = Date.now();
  const cards = await Promise.all(devices.map(async (d) => {
    const latest = await api(`/api/v1/telemetry/${encodeURIComponent(d.id)}/latest`);
    const rows = Object.entries(latest).map(([k, x]) => {
      const stale = now - x.ts > 60000 ? " stale" : "";
      return `<tr><td>${esc(k)}</td><td class="v${stale}" title="${new Date(x.ts).toLocaleString()}">${fmt(x.value)}</td></tr>`;
    }).join("");
    return `<div class="card"><h2>${esc(d.name)} <small>${esc(d.template || "")}</small></h2><table>${rows || "<tr><td>no data yet</td></tr>"}</table></div>`;
  }));
  $("devices").innerHTML = cards.join("") || "<p>No devices yet. Register one through the API.</p>";
}

async function start() {
  const me = await api("/api/v1/auth/me");
  $("who").textContent = `${me.username} (${me.role})`;
  $("login").hidden = true; $("live").hidden = false; $("logout").hidden = false;
  await refresh();
  setInterval(() => refresh().catch(() => {}), 2000);
}

start().catch(showLogin);
