import { html, useState, useEffect } from "../lib/html.js";
import { t } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { contactHandle, shortTime, errorText, initials } from "../lib/format.js";

export function ContactPanel({ contactId, onClose, onOpen }) {
  const [contact, setContact] = useState(null);
  const [error, setError] = useState(null);
  const [draft, setDraft] = useState(null);
  const [saved, setSaved] = useState(false);

  useEffect(() => {
    api.get(`/api/contacts/${contactId}`).then((c) => { setContact(c); setDraft({ display_name: c.display_name || "", email: c.email || "", notes: c.notes || "" }); }, setError);
  }, [contactId]);

  async function save(event) {
    event.preventDefault();
    setError(null);
    try {
      const c = await api.patch(`/api/contacts/${contactId}`, draft);
      setContact({ ...contact, ...c });
      setSaved(true);
      setTimeout(() => setSaved(false), 2000);
    } catch (err) {
      setError(err);
    }
  }

  const name = contact?.display_name || contact?.profile_name || contactHandle(contact);
  return html`
    <aside class="side-panel" id="contact-panel" aria-labelledby="contact-title">
      <header class="panel-head">
        <h2 id="contact-title">${t("contact.title")}</h2>
        <button type="button" class="icon-button" aria-label=${t("action.close")} title=${t("action.close")} onClick=${onClose}>×</button>
      </header>
      ${!contact ? html`<p class="empty" role=${error ? "alert" : "status"}>${error ? errorText(error) : t("app.loading")}</p>` : html`
        <div class="panel-body">
          <div class="contact-card">
            <span class="avatar large" aria-hidden="true">${initials(name)}</span>
            <div>
              <p class="contact-name">${name}</p>
              <p class="muted">${contactHandle(contact)}</p>
              ${contact.profile_name && contact.profile_name !== name ? html`<p class="muted">${t("contact.profileName")}: ${contact.profile_name}</p>` : ""}
            </div>
          </div>
          <form class="contact-form" onSubmit=${save}>
            <label class="field"><span>${t("contact.displayName")}</span>
              <input value=${draft.display_name} onInput=${(e) => setDraft({ ...draft, display_name: e.target.value })} /></label>
            <label class="field"><span>${t("contact.email")}</span>
              <input type="email" value=${draft.email} onInput=${(e) => setDraft({ ...draft, email: e.target.value })} /></label>
            <label class="field"><span>${t("contact.notes")}</span>
              <textarea rows="3" value=${draft.notes} onInput=${(e) => setDraft({ ...draft, notes: e.target.value })}></textarea></label>
            <div class="form-error" role="alert">${error ? errorText(error) : ""}</div>
            <div class="row-end">
              ${saved ? html`<span class="muted" role="status">${t("contact.saved")}</span>` : ""}
              <button type="submit" class="button">${t("action.save")}</button>
            </div>
          </form>
          ${Object.keys(contact.attributes || {}).length ? html`
            <h3>${t("contact.attributes")}</h3>
            <dl class="attributes">${Object.entries(contact.attributes).map(([k, v]) => html`<div><dt>${k}</dt><dd>${String(v)}</dd></div>`)}</dl>` : ""}
          <h3>${t("contact.history")}</h3>
          <ul class="history">
            ${(contact.conversations || []).map((c) => html`
              <li><button type="button" class="link" onClick=${() => onOpen(c.id)}>
                <span class="chip subtle">${t(`status.${c.status}`)}</span> ${shortTime(c.last_message_at)}
              </button></li>`)}
          </ul>
        </div>`}
    </aside>`;
}
