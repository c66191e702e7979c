// The dashboard shell: sign-in, language, navigation between pages (hash routes).
import * as api from "./api.js";
import * as i18n from "./i18n.js";
import { t } from "./i18n.js";
import { errorBox, esc, setZone } from "./format.js";

// One module per page; each exports render(element, params, context) and may return a cleanup
// function (closing live streams and timers). A new page (maintenance, energy, ...) is one more
// entry here and one more link in index.html's <nav>.
const PAGES = {
  overview: () => import("./pages/overview.js"),
  line: () => import("./pages/line.js"),
  machine: () => import("./pages/machine.js"),
  operator: () => import("./pages/operator.js"),
  pareto: () => import("./pages/pareto.js"),
  alarms: () => import("./pages/alarms.js"),
  reports: () => import("./pages/reports.js"),
  maintenance: () => import("./pages/maintenance.js"),
  energy: () => import("./pages/energy.js"),
};

const $ = (id) => document.getElementById(id);
let cleanup = null;
let me = null;
let rendering = 0;

function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const page = PAGES[name] ? name : "overview";
  return { page, params: rest.map(decodeURIComponent) };
}

async function assets() {
  const tree = await api.get("/api/v1/assets");
  const machines = new Map();
  const lines = new Map();
  for (const site of tree) for (const area of site.areas) for (const line of area.lines) {
    lines.set(line.id, { ...line, site_id: site.id, area_id: area.id });
    for (const m of line.machines) machines.set(m.id, { ...m, line_id: line.id, site_id: site.id });
  }
  const zones = new Set(tree.map((s) => s.timezone));
  setZone(zones.size === 1 ? [...zones][0] : undefined);
  return { tree, machines, lines, sites: tree.map((s) => ({ id: s.id, name: s.name })) };
}

async function show() {
  if (!me) return;
  const token = ++rendering;
  if (cleanup) { cleanup(); cleanup = null; }
  const { page, params } = route();
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  const el = $("page");
  el.innerHTML = `<p class="hint">${esc(t("common.loading"))}</p>`;
  try {
    const [module, context] = await Promise.all([PAGES[page](), assets()]);
    if (token !== rendering) return;
    el.innerHTML = "";
    el.dataset.page = page;
    const done = await module.render(el, params, { me, ...context });
    if (token !== rendering) { if (done) done(); return; }
    cleanup = done || null;
  } catch (e) {
    if (token === rendering && !(e instanceof api.ApiError && e.status === 401)) el.innerHTML = errorBox(e);
  }
}

function signedIn(user) {
  me = user;
  $("who").textContent = `${user.username} · ${t(`role.${user.role}`)}`;
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
  show();
}

function signedOut() {
  me = null;
  if (cleanup) { cleanup(); cleanup = null; }
  $("page").innerHTML = "";
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  $("login-error").textContent = "";
  try {
    await api.login(form.get("username"), form.get("password"));
    e.target.reset();
    signedIn(await api.session());
  } catch (err) {
    $("login-error").textContent = err.status === 429 ? err.message : t("login.failed");
  }
});

$("logout").addEventListener("click", async () => { await api.logout(); signedOut(); });

$("lang").addEventListener("change", async (e) => {
  await i18n.use(e.target.value);
  if (me) signedIn(me);
});

api.onSignedOut(signedOut);
document.addEventListener("karkhana:connection", (e) => { $("offline").hidden = e.detail; });
window.addEventListener("hashchange", show);

async function start() {
  const lang = i18n.saved();
  $("lang").value = lang;
  await i18n.use(lang);
  try {
    signedIn(await api.session());
  } catch {
    signedOut();
  }
}

start();
