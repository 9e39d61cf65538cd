import { locale, t } from "./i18n.js";

const sameDay = (a, b) => a.toDateString() === b.toDateString();

/** "14:05" today, "lun 14:05" this week, "3 mar" before. */
export function shortTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const now = new Date();
  if (sameDay(date, now)) return date.toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit" });
  if (now - date < 6 * 86_400_000) {
    return date.toLocaleString(locale(), { weekday: "short", hour: "2-digit", minute: "2-digit" });
  }
  return date.toLocaleDateString(locale(), { day: "numeric", month: "short" });
}

export function fullTime(iso) {
  return iso ? new Date(iso).toLocaleString(locale(), { dateStyle: "medium", timeStyle: "short" }) : "";
}

export function dayLabel(iso) {
  const date = new Date(iso);
  const now = new Date();
  if (sameDay(date, now)) return t("day.today");
  if (sameDay(date, new Date(now - 86_400_000))) return t("day.yesterday");
  return date.toLocaleDateString(locale(), { weekday: "long", day: "numeric", month: "long" });
}

/** "23:59:12" for a countdown in milliseconds. */
export function clock(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(Math.floor(total / 3600))}:${pad(Math.floor((total % 3600) / 60))}:${pad(total % 60)}`;
}

export function fileSize(bytes) {
  if (bytes == null) return "";
  const units = ["B", "KB", "MB", "GB"];
  let n = bytes;
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return `${n.toLocaleString(locale(), { maximumFractionDigits: unit ? 1 : 0 })} ${units[unit]}`;
}

/** How WhatsApp names a contact: "+number", or "@username" for a customer who hides their number
 * behind a username, or (knowing neither) their business-scoped user id. */
export function contactHandle(contact) {
  if (!contact) return "";
  if (contact.wa_id) return `+${contact.wa_id}`;
  if (contact.username) return `@${contact.username}`;
  return contact.bsuid || "";
}

export function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
  return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || "?").slice(0, 2)).toUpperCase();
}

/** The readable words of an API failure, in the page's language. */
export function errorText(error) {
  if (!error) return "";
  const status = error.status;
  if (status === undefined) return t("error.network");
  if (error.code === "ServiceWindowClosed") return t("error.windowClosed");
  const key = { 401: "error.session", 403: "error.forbidden", 404: "error.notFound", 409: "error.conflict",
    413: "error.tooLarge", 415: "error.unsupportedType", 422: "error.invalid", 429: "error.rateLimited" }[status];
  if (key === "error.rateLimited" && error.retryAfter) return t("error.rateLimitedFor", { s: error.retryAfter });
  return t(key || "error.server");
}
