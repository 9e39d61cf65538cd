// Every visible string comes from web/i18n/<lang>.json; Italian first, the choice kept in localStorage.
export const LANGUAGES = ["it", "en"];
const STORAGE_KEY = "parlo.lang";
const LOCALES = { it: "it-IT", en: "en-GB" };

let strings = {};
let current = "it";
const listeners = new Set();

export function preferredLanguage() {
  const saved = localStorage.getItem(STORAGE_KEY);
  return LANGUAGES.includes(saved) ? saved : "it";
}

export async function setLanguage(lang) {
  if (!LANGUAGES.includes(lang)) lang = "it";
  const response = await fetch(`/web/i18n/${lang}.json`);
  if (!response.ok) throw new Error(`i18n ${lang}: ${response.status}`);
  strings = await response.json();
  current = lang;
  localStorage.setItem(STORAGE_KEY, lang);
  document.documentElement.lang = lang;
  document.title = t("app.title");
  for (const listener of listeners) listener(lang);
}

export function onLanguage(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export const language = () => current;
export const locale = () => LOCALES[current];

/** The string for `key`, with `{name}` placeholders filled from `vars`; `{n}` picks `key.one`/`key.other`. */
export function t(key, vars) {
  let text = strings[key];
  if (text === undefined && vars && typeof vars.n === "number") {
    const form = new Intl.PluralRules(locale()).select(vars.n);
    text = strings[`${key}.${form}`] ?? strings[`${key}.other`];
  }
  if (text === undefined) {
    console.warn("missing string", key);
    return key;
  }
  if (vars) text = text.replace(/\{(\w+)\}/g, (all, name) => (name in vars ? String(vars[name]) : all));
  return text;
}

/** Whether there is a string for `key` (for values from the server that may or may not have one). */
export const has = (key) => key in strings;
