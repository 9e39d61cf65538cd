import { html } from "../lib/html.js";
import { t, language, setLanguage, LANGUAGES } from "../lib/i18n.js";

export function LanguageSwitch({ id = "language-switch" }) {
  return html`
    <label class="language-switch">
      <span class="visually-hidden">${t("language.label")}</span>
      <select id=${id} value=${language()} title=${t("language.label")}
              onChange=${(e) => setLanguage(e.target.value)}>
        ${LANGUAGES.map((code) => html`<option value=${code}>${t(`language.${code}`)}</option>`)}
      </select>
    </label>`;
}
