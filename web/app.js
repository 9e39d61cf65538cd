// The agents' web inbox: restores the session from the refresh cookie, then login or inbox.
import { html, render, useState, useEffect } from "./lib/html.js";
import { preferredLanguage, setLanguage, onLanguage, t } from "./lib/i18n.js";
import { refresh, onSession, currentUser, maybeSignedIn } from "./lib/api.js";
import { Login } from "./components/login.js";
import { Inbox } from "./components/inbox.js";

function App() {
  const [, setLang] = useState(null);
  const [user, setUser] = useState(undefined); // undefined while the session is being restored
  useEffect(() => onLanguage(setLang), []);
  useEffect(() => {
    const off = onSession(setUser);
    if (maybeSignedIn()) refresh().then(() => setUser(currentUser()), () => setUser(null));
    else setUser(null);
    return off;
  }, []);
  if (user === undefined) return html`<div class="splash" role="status">${t("app.loading")}</div>`;
  return user ? html`<${Inbox} key=${user.id} user=${user} />` : html`<${Login} />`;
}

await setLanguage(preferredLanguage());
render(html`<${App} />`, document.getElementById("app"));
