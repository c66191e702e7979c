// UI text from JSON catalogues (static/i18n/<lang>.json); the choice is remembered per browser.
const STORE = "karkhana-lang";
export const LANGUAGES = { en: { dir: "ltr", name: "English" }, ur: { dir: "rtl", name: "اردو" } };
let lang = "en";
let dict = {};
let fallback = {};

async function load(code) {
  const r = await fetch(`/static/i18n/${code}.json`);
  if (!r.ok) throw new Error(`no catalogue for ${code}`);
  return r.json();
}

export function current() { return lang; }

export function saved() {
  const code = localStorage.getItem(STORE);
  if (code && LANGUAGES[code]) return code;
  const browser = (navigator.language || "en").slice(0, 2);
  return LANGUAGES[browser] ? browser : "en";
}

export async function use(code) {
  if (!LANGUAGES[code]) code = "en";
  if (!Object.keys(fallback).length) fallback = await load("en");
  dict = code === "en" ? fallback : await load(code);
  lang = code;
  localStorage.setItem(STORE, code);
  document.documentElement.lang = code;
  document.documentElement.dir = LANGUAGES[code].dir;
  translate(document);
}

// t("pareto.count", {n: 3}) -> the catalogue's text with {n} filled in.
export function t(key, vars) {
  let text = dict[key] ?? fallback[key] ?? key;
  if (vars) for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`{${k}}`, v);
  return text;
}

// A label the API gives in both languages: {"en": ..., "ur": ...}.
export function pick(label) {
  if (!label) return "";
  if (typeof label === "string") return label;
  return label[lang] || label.en || "";
}

export function translate(root) {
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  root.querySelectorAll("[data-i18n-label]").forEach((el) => { el.setAttribute("aria-label", t(el.dataset.i18nLabel)); });
}
