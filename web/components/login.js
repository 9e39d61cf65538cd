import { html, useState, useRef, useEffect } from "../lib/html.js";
import { t } from "../lib/i18n.js";
import { login, ApiError } from "../lib/api.js";
import { LanguageSwitch } from "./language-switch.js";

const TENANT_KEY = "parlo.tenant";

export function Login() {
  const [tenant, setTenant] = useState(localStorage.getItem(TENANT_KEY) || "");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const first = useRef(null);
  useEffect(() => first.current?.focus(), []);

  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      localStorage.setItem(TENANT_KEY, tenant.trim());
      await login(tenant.trim(), email.trim(), password);
    } catch (err) {
      if (err instanceof ApiError && err.status === 429) {
        setError(t("login.tooMany", { s: err.retryAfter || 60 }));
      } else if (err instanceof ApiError && (err.status === 401 || err.status === 422)) {
        setError(t("login.failed"));
      } else {
        setError(t("error.network"));
      }
      setBusy(false);
    }
  }

  return html`
    <main class="login">
      <form class="login-card" onSubmit=${submit} aria-labelledby="login-title" novalidate>
        <div class="login-brand">
          <span class="logo" aria-hidden="true">P</span>
          <h1 id="login-title">${t("login.title")}</h1>
        </div>
        <p class="muted">${t("login.subtitle")}</p>
        <label class="field">
          <span>${t("login.tenant")}</span>
          <input ref=${first} name="tenant" autocomplete="organization" required value=${tenant}
                 onInput=${(e) => setTenant(e.target.value)} />
        </label>
        <label class="field">
          <span>${t("login.email")}</span>
          <input name="email" type="email" autocomplete="username" required value=${email}
                 onInput=${(e) => setEmail(e.target.value)} />
        </label>
        <label class="field">
          <span>${t("login.password")}</span>
          <input name="password" type="password" autocomplete="current-password" required value=${password}
                 onInput=${(e) => setPassword(e.target.value)} />
        </label>
        <div class="form-error" role="alert" aria-live="assertive">${error || ""}</div>
        <button class="button primary wide" type="submit" disabled=${busy || !tenant || !email || !password}>
          ${busy ? t("login.signingIn") : t("login.submit")}
        </button>
        <div class="login-footer"><${LanguageSwitch} /></div>
      </form>
    </main>`;
}
