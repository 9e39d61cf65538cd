import { html, useState, useEffect } from "../lib/html.js";
import { t } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { errorText } from "../lib/format.js";

/** The preview without a round trip: {{n}} filled in the components' text (the server's preview wins). */
function localPreview(template, params) {
  const fill = (text) => (text || "").replace(/\{\{(\d+)\}\}/g, (all, n) => params[Number(n) - 1] || all);
  const part = (type) => (template.components || []).find((c) => (c.type || "").toUpperCase() === type);
  return {
    header: part("HEADER")?.format === "TEXT" || part("HEADER")?.text ? fill(part("HEADER").text) : null,
    body: fill(part("BODY")?.text),
    footer: part("FOOTER")?.text || null,
    buttons: (part("BUTTONS")?.buttons || []).map((b) => b.text),
  };
}

/** Shown instead of the composer once the 24-hour window is closed: only a template may be sent. */
export function TemplatePicker({ conversation, onSent }) {
  const [templates, setTemplates] = useState(null);
  const [chosen, setChosen] = useState(null);
  const [params, setParams] = useState([]);
  const [preview, setPreview] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    api.get("/api/templates", { status: "APPROVED" }).then((r) => setTemplates(r.items), (err) => { setTemplates([]); setError(err); });
  }, []);

  useEffect(() => {
    if (!chosen) { setPreview(null); return; }
    setPreview(localPreview(chosen, params));
    let alive = true;
    const timer = setTimeout(() => api.post(`/api/templates/${chosen.id}/preview`, { params })
      .then((p) => alive && setPreview(p), () => {}), 250);
    return () => { alive = false; clearTimeout(timer); };
  }, [chosen, params]);

  function choose(id) {
    const template = templates.find((x) => String(x.id) === id) || null;
    setChosen(template);
    setParams(Array.from({ length: template?.params || 0 }, () => ""));
    setError(null);
  }

  async function send(event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onSent(await api.post(`/api/conversations/${conversation.id}/messages`,
        { type: "template", name: chosen.name, language: chosen.language, params }));
      setChosen(null);
      setParams([]);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  const complete = chosen && params.every((p) => p.trim());
  return html`
    <form class="template-picker" id="template-picker" onSubmit=${send} aria-labelledby="template-title">
      <div class="window-closed-banner" role="status">
        <strong id="template-title">${t("template.windowClosed")}</strong>
        <span class="muted">${t("template.explain")}</span>
      </div>
      <label class="field">
        <span>${t("template.choose")}</span>
        <select id="template-select" value=${chosen ? String(chosen.id) : ""} onChange=${(e) => choose(e.target.value)}
                disabled=${!templates}>
          <option value="">${templates === null ? t("app.loading") : templates.length ? t("template.none") : t("template.empty")}</option>
          ${(templates || []).map((x) => html`<option value=${String(x.id)}>${x.name} · ${x.language}</option>`)}
        </select>
      </label>
      ${chosen ? html`
        <div class="template-params">
          ${params.map((value, i) => html`
            <label class="field">
              <span>${t("template.param", { n: i + 1 })}</span>
              <input class="template-param" value=${value}
                     onInput=${(e) => setParams(params.map((p, j) => (j === i ? e.target.value : p)))} />
            </label>`)}
        </div>
        <figure class="template-preview" aria-label=${t("template.preview")}>
          <figcaption class="muted">${t("template.preview")}</figcaption>
          <div class="bubble">
            ${preview?.header ? html`<p class="template-header">${preview.header}</p>` : ""}
            <p class="text">${preview?.body || ""}</p>
            ${preview?.footer ? html`<p class="template-footer muted">${preview.footer}</p>` : ""}
            ${preview?.buttons?.length ? html`<div class="template-buttons">${preview.buttons.map((b) => html`<span class="chip">${typeof b === "string" ? b : b.text}</span>`)}</div>` : ""}
          </div>
        </figure>` : ""}
      <div class="form-error" role="alert">${error ? errorText(error) : ""}</div>
      <div class="composer-actions">
        <span></span>
        <button type="submit" id="template-send" class="button primary" disabled=${!complete || busy}>${t("template.send")}</button>
      </div>
    </form>`;
}
