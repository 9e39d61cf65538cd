import { html, useState, useEffect, useRef, useCallback, useMemo } from "../lib/html.js";
import { t } from "../lib/i18n.js";
import { api, logout } from "../lib/api.js";
import { live } from "../lib/live.js";
import { initials } from "../lib/format.js";
import { useConversations, ConversationFilters, ConversationList } from "./conversation-list.js";
import { Thread } from "./thread.js";
import { ContactPanel } from "./contact-panel.js";
import { TeamChat } from "./team-chat.js";
import { Notifications } from "./notifications.js";
import { ShortcutHelp, useShortcuts } from "./shortcuts.js";
import { LanguageSwitch } from "./language-switch.js";
import { KnowledgeAdmin } from "./admin-knowledge.js";
import { UsageAdmin } from "./admin-usage.js";

// Admin pages, reached from the user menu and kept in the address (#knowledge) so a reload stays there.
const ADMIN_PAGES = ["knowledge", "usage"];
const mayAdminister = (user) => user.role === "admin" || user.role === "owner";

function usePage(user) {
  const read = () => {
    const wanted = location.hash.slice(1);
    return mayAdminister(user) && ADMIN_PAGES.includes(wanted) ? wanted : "inbox";
  };
  const [page, setPage] = useState(read);
  useEffect(() => {
    const follow = () => setPage(read());
    window.addEventListener("popstate", follow);
    window.addEventListener("hashchange", follow);
    return () => { window.removeEventListener("popstate", follow); window.removeEventListener("hashchange", follow); };
  }, []);
  const go = useCallback((next) => {
    if (next === read()) return setPage(next);
    history.pushState(null, "", next === "inbox" ? `${location.pathname}${location.search}` : `#${next}`);
    setPage(next);
  }, []);
  return [page, go];
}

function ConnectionIndicator() {
  const [state, setState] = useState(live.state);
  useEffect(() => live.onState(setState), []);
  return html`
    <span class=${`connection ${state}`} id="connection" data-state=${state} role="status"
          title=${t(`connection.${state}Hint`)}>
      <span class="dot" aria-hidden="true"></span>
      <span class="connection-text">${t(`connection.${state}`)}</span>
    </span>`;
}

async function signOut() {
  await api.put("/api/me/presence", { presence: "offline" }).catch(() => {});
  live.stop();
  await logout();
}

function UserMenu({ user, presence, onPresence, page, onPage }) {
  const [open, setOpen] = useState(false);
  const box = useRef(null);
  useEffect(() => {
    if (!open) return;
    const away = (e) => !box.current?.contains(e.target) && setOpen(false);
    document.addEventListener("mousedown", away);
    return () => document.removeEventListener("mousedown", away);
  }, [open]);
  return html`
    <span class="menu-anchor me" ref=${box} onKeyDown=${(e) => e.key === "Escape" && open && (e.stopPropagation(), setOpen(false))}>
      <button type="button" class="me-button" id="user-menu-toggle" aria-expanded=${open} aria-haspopup="true"
              title=${t("user.menu")} onClick=${() => setOpen(!open)}>
        <span class=${`avatar small presence-${presence}`} aria-hidden="true">${initials(user.name)}</span>
        <span class="me-name">${user.name}</span>
        <span class="visually-hidden">${t("user.menu")}</span>
      </button>
      ${open ? html`
        <div class="menu user-menu" role="group" aria-label=${t("user.menu")} data-popover-open>
          <p class="menu-item user-identity"><strong>${user.name}</strong><span class="muted">${user.email}</span>
            <span class="muted">${t(`role.${user.role}`)}</span></p>
          <label class="field">
            <span>${t("presence.label")}</span>
            <select id="presence" value=${presence} onChange=${(e) => onPresence(e.target.value)}>
              <option value="online">${t("presence.online")}</option>
              <option value="away">${t("presence.away")}</option>
            </select>
          </label>
          ${mayAdminister(user) ? html`
            <nav class="menu-nav" aria-label=${t("nav.label")}>
              ${[["inbox", "nav.inbox"], ["knowledge", "nav.knowledge"], ["usage", "nav.usage"]].map(([name, key]) => html`
                <button type="button" class="menu-item nav-item" id=${`nav-${name}`} aria-current=${page === name ? "page" : undefined}
                        onClick=${() => { setOpen(false); onPage(name); }}>${t(key)}</button>`)}
            </nav>` : ""}
          <div class="menu-language"><${LanguageSwitch} id="language-switch-menu" /></div>
          <button type="button" class="button wide" id="logout" onClick=${signOut}>${t("auth.logout")}</button>
        </div>` : ""}
    </span>`;
}

export function Inbox({ user }) {
  const [filters, setFilters] = useState({ status: "open", scope: "all", label_id: "", q: "" });
  const [selectedId, setSelectedId] = useState(null);
  const [panel, setPanel] = useState(null); // "contact" | "chat" | null
  const [help, setHelp] = useState(false);
  const [users, setUsers] = useState([]);
  const [labels, setLabels] = useState([]);
  const [presence, setPresence] = useState("online");
  const list = useConversations(filters, user);
  const [page, setPage] = usePage(user);
  const inbox = page === "inbox";
  const [current, setCurrent] = useState(null); // the open conversation as the thread last read it
  const selected = current?.id === selectedId ? current : list.items.find((c) => c.id === selectedId) || null;

  useEffect(() => {
    live.start();
    api.put("/api/me/presence", { presence: "online" }).catch(() => {});
    return () => live.stop();
  }, []);
  useEffect(() => {
    const loadUsers = () => api.get("/api/users").then((r) => setUsers(r.items), () => {});
    const loadLabels = () => api.get("/api/labels").then((r) => setLabels(r.items), () => {});
    loadUsers();
    loadLabels();
    return live.on("presence", loadUsers);
  }, []);

  const open = useCallback((id) => {
    setPage("inbox");
    setSelectedId(id);
  }, []);

  const move = useCallback((step) => {
    const ids = list.items.map((c) => c.id);
    if (!ids.length) return;
    const at = ids.indexOf(selectedId);
    const next = at < 0 ? (step > 0 ? 0 : ids.length - 1) : Math.min(ids.length - 1, Math.max(0, at + step));
    setSelectedId(ids[next]);
    requestAnimationFrame(() => document.querySelector(`[data-conversation="${ids[next]}"]`)?.scrollIntoView({ block: "nearest" }));
  }, [list.items, selectedId]);

  useShortcuts({
    next: () => inbox && move(1),
    previous: () => inbox && move(-1),
    reply: () => document.dispatchEvent(new CustomEvent("parlo:compose", { detail: "reply" })),
    note: () => document.dispatchEvent(new CustomEvent("parlo:compose", { detail: "note" })),
    resolve: () => document.dispatchEvent(new CustomEvent("parlo:resolve")),
    search: () => inbox && document.getElementById("conversation-search")?.focus(),
    help: () => setHelp(true),
    escape: () => {
      if (help) setHelp(false);
      else if (panel) setPanel(null);
      else if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
      else if (inbox) setSelectedId(null);
    },
  });

  async function changePresence(value) {
    setPresence(value);
    live.send({ type: "presence", presence: value });
    await api.put("/api/me/presence", { presence: value }).catch(() => {});
  }

  const togglePanel = (name) => setPanel((p) => (p === name ? null : name));
  const view = !inbox ? "admin" : selectedId ? "thread" : "list";

  return html`
    <div class="inbox" data-view=${view} data-panel=${(inbox || panel === "chat") && panel ? panel : "none"}>
      ${inbox ? html`<a class="skip-link" href="#thread-main">${t("a11y.skipToThread")}</a>` : ""}
      <header class="topbar">
        <div class="brand"><span class="logo" aria-hidden="true">P</span><span class="brand-name">${t("app.name")}</span></div>
        <${ConnectionIndicator} />
        <div class="topbar-actions">
          <button type="button" class="icon-button" id="team-chat-toggle" aria-pressed=${panel === "chat"}
                  aria-label=${t("chat.open")} title=${t("chat.open")} onClick=${() => togglePanel("chat")}>
            <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 5h16v10H8l-4 4z" /></svg>
          </button>
          <${Notifications} onOpen=${(id) => { open(id); }} />
          <button type="button" class="icon-button" aria-label=${t("help.open")} title=${t("help.open")}
                  onClick=${() => setHelp(true)}>?</button>
          <${LanguageSwitch} />
          <${UserMenu} user=${user} presence=${presence} onPresence=${changePresence} page=${page} onPage=${setPage} />
        </div>
      </header>
      ${inbox ? "" : html`
        <main class="admin-area" id="admin-main" tabindex="-1">
          <button type="button" class="button ghost admin-back" id="admin-back" onClick=${() => setPage("inbox")}>
            <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M15 5l-7 7 7 7" /></svg>${t("nav.backToInbox")}
          </button>
          ${page === "knowledge" ? html`<${KnowledgeAdmin} />` : html`<${UsageAdmin} />`}
        </main>`}
      ${inbox ? html`
      <nav class="sidebar" aria-label=${t("list.navigation")}>
        <h2 class="visually-hidden">${t("list.title")}</h2>
        <${ConversationFilters} filters=${filters} setFilters=${setFilters} labels=${labels} />
        <${ConversationList} list=${list} selectedId=${selectedId} onSelect=${open} me=${user} />
      </nav>
      <main class="thread-area" id="thread-main" tabindex="-1">
        ${selectedId
          ? html`<${Thread} key=${selectedId} id=${selectedId} initial=${selected} me=${user} users=${users}
                   labels=${labels} onChanged=${(c) => { list.upsert(c); setCurrent(c); }} onBack=${() => setSelectedId(null)}
                   contactOpen=${panel === "contact"} onToggleContact=${() => togglePanel("contact")} />`
          : html`<div class="placeholder"><p>${t("thread.none")}</p><p class="muted">${t("thread.noneHint")}</p></div>`}
      </main>` : ""}
      ${inbox && panel === "contact" && selected
        ? html`<${ContactPanel} key=${selected.contact.id} contactId=${selected.contact.id} onClose=${() => setPanel(null)} onOpen=${open} />`
        : ""}
      ${panel === "chat" ? html`<${TeamChat} me=${user} users=${users} onClose=${() => setPanel(null)} />` : ""}
      ${help ? html`<${ShortcutHelp} onClose=${() => setHelp(false)} />` : ""}
    </div>`;
}
