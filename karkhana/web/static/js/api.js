// Calls to the karkhana API with the browser session: the cookie travels by itself, changes carry
// the session's CSRF token, and every failure becomes an ApiError with the server's reason.
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

let csrf = null;
const listeners = { signedOut: [] };

export function onSignedOut(fn) { listeners.signedOut.push(fn); }

// The server could not be reached (factory networks drop): pages keep polling, the shell says so.
let online = true;
function connection(ok) {
  if (ok === online) return;
  online = ok;
  document.dispatchEvent(new CustomEvent("karkhana:connection", { detail: ok }));
}

export async function request(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const method = options.method || "GET";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const init = { method, headers, credentials: "same-origin" };
  if (options.body !== undefined) init.body = JSON.stringify(options.body);
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    connection(false);
    throw e;
  }
  connection(true);
  if (r.status === 401 && !options.quiet401) listeners.signedOut.forEach((fn) => fn());
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch { /* not JSON */ }
    throw new ApiError(r.status, detail);
  }
  return r.status === 204 ? null : r.json();
}

export const get = (path, params) => request(params ? `${path}?${query(params)}` : path);
export const post = (path, body) => request(path, { method: "POST", body });
export const put = (path, body) => request(path, { method: "PUT", body });
export const del = (path) => request(path, { method: "DELETE" });

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const one of Array.isArray(v) ? v : [v]) if (one !== undefined && one !== null && one !== "") q.append(k, one);
  }
  return q.toString();
}

// A route that is not there (a module not installed) answers the router's own 404, or 405 where
// another route's pattern matches the path: the page then shows what it can without it.
export async function optional(path, params) {
  try {
    return await get(path, params);
  } catch (e) {
    const absent = e instanceof ApiError && ((e.status === 404 && e.message === "Not Found") || e.status === 405);
    if (absent) return null;
    throw e;
  }
}

export async function session() {
  const me = await request("/api/v1/web/session", { quiet401: true });
  csrf = me.csrf_token;
  return me;
}

export async function login(username, password) {
  const r = await fetch("/api/v1/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password, session: true }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, body.detail || r.statusText);
  csrf = body.csrf_token;
  return body;
}

export async function logout() {
  await request("/api/v1/auth/logout", { method: "POST", quiet401: true }).catch(() => {});
  csrf = null;
}
