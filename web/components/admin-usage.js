// Admin page: what the assistant cost — this month's spend, then runs and cost per day, intent,
// handler (with tokens) and cited source over the chosen period.
import { html, useState, useEffect, useCallback } from "../lib/html.js";
import { t, locale } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { errorText } from "../lib/format.js";
import { named } from "./ai-panel.js";

const PERIODS = [7, 30, 90];

export function money(usd) {
  const value = Number(usd) || 0;
  const small = value !== 0 && Math.abs(value) < 1;
  return new Intl.NumberFormat(locale(), { style: "currency", currency: "USD", minimumFractionDigits: 2,
    maximumFractionDigits: small ? 4 : 2 }).format(value);
}

const count = (n) => new Intl.NumberFormat(locale()).format(Number(n) || 0);
const day = (iso) => new Date(`${String(iso).slice(0, 10)}T00:00:00Z`)
  .toLocaleDateString(locale(), { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" });

/** One table; `columns` are [heading key, cell(row), numeric?]. */
function Table({ id, caption, columns, rows }) {
  return html`
    <section class="admin-card usage-table" id=${id}>
      <h2 class="admin-section">${caption}</h2>
      ${rows?.length ? html`
        <div class="table-wrap">
          <table>
            <thead><tr>${columns.map(([key, , numeric]) => html`<th scope="col" class=${numeric ? "num" : ""}>${t(key)}</th>`)}</tr></thead>
            <tbody>
              ${rows.map((row) => html`<tr>${columns.map(([, cell, numeric]) => html`<td class=${numeric ? "num" : ""}>${cell(row)}</td>`)}</tr>`)}
            </tbody>
          </table>
        </div>` : html`<p class="muted">${t("usage.none")}</p>`}
    </section>`;
}

export function UsageAdmin() {
  const [days, setDays] = useState(30);
  const [report, setReport] = useState(null);
  const [error, setError] = useState(null);

  const load = useCallback(async () => {
    try {
      setReport(await api.get("/api/ai/usage", { days }));
      setError(null);
    } catch (err) {
      setError(err);
    }
  }, [days]);
  useEffect(() => { load(); }, [load]);

  const runs = (report?.day || []).reduce((sum, d) => sum + (Number(d.runs) || 0), 0);
  const cost = (report?.day || []).reduce((sum, d) => sum + (Number(d.cost_usd) || 0), 0);
  const cost_ = (row) => money(row.cost_usd);
  return html`
    <section class="admin-page" id="usage-page" aria-labelledby="usage-title">
      <header class="admin-head">
        <h1 id="usage-title">${t("usage.title")}</h1>
        <p class="muted">${t("usage.subtitle")}</p>
        <div class="admin-tools">
          <label>
            <span class="visually-hidden">${t("usage.period")}</span>
            <select id="usage-days" value=${days} title=${t("usage.period")} onChange=${(e) => setDays(Number(e.target.value))}>
              ${PERIODS.map((n) => html`<option value=${n}>${t("usage.lastDays", { n })}</option>`)}
            </select>
          </label>
          <button type="button" class="button" id="usage-refresh" onClick=${load}>${t("usage.refresh")}</button>
        </div>
      </header>
      ${error ? html`<p class="form-error" role="alert">${errorText(error)}</p>` : ""}
      ${!report && !error ? html`<p class="empty" role="status">${t("app.loading")}</p>` : ""}
      ${report ? html`
        <div class="usage-summary">
          <div class="admin-card stat" id="usage-month">
            <span class="stat-label">${t("usage.monthSpend")}</span>
            <strong class="stat-value" id="usage-month-spend">${money(report.month_spend_usd)}</strong>
          </div>
          <div class="admin-card stat">
            <span class="stat-label">${t("usage.periodRuns", { n: days })}</span>
            <strong class="stat-value" id="usage-runs">${count(runs)}</strong>
          </div>
          <div class="admin-card stat">
            <span class="stat-label">${t("usage.periodCost", { n: days })}</span>
            <strong class="stat-value" id="usage-cost">${money(cost)}</strong>
          </div>
        </div>
        <${Table} id="usage-by-day" caption=${t("usage.byDay")} rows=${report.day} columns=${[
          ["usage.day", (r) => day(r.day)], ["usage.runs", (r) => count(r.runs), true],
          ["usage.declined", (r) => count(r.declined), true], ["usage.cost", cost_, true]]} />
        <${Table} id="usage-by-handler" caption=${t("usage.byHandler")} rows=${report.handler} columns=${[
          ["usage.handler", (r) => named("ai.handler", r.handler)], ["usage.tier", (r) => named("ai.tier", r.route_tier)],
          ["usage.runs", (r) => count(r.runs), true], ["usage.inputTokens", (r) => count(r.input_tokens), true],
          ["usage.outputTokens", (r) => count(r.output_tokens), true],
          ["usage.cacheRead", (r) => count(r.cache_read_tokens), true],
          ["usage.cacheWrite", (r) => count(r.cache_write_tokens), true], ["usage.cost", cost_, true]]} />
        <${Table} id="usage-by-intent" caption=${t("usage.byIntent")} rows=${report.intent} columns=${[
          ["usage.intent", (r) => named("ai.intent", r.intent)], ["usage.runs", (r) => count(r.runs), true],
          ["usage.cost", cost_, true]]} />
        <${Table} id="usage-by-source" caption=${t("usage.bySource")} rows=${report.source} columns=${[
          ["usage.source", (r) => r.source], ["usage.runs", (r) => count(r.runs), true], ["usage.cost", cost_, true]]} />` : ""}
    </section>`;
}
