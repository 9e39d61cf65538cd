import { html, useState, useEffect, useRef, useCallback } from "../lib/html.js";
import { t } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { live } from "../lib/live.js";
import { shortTime } from "../lib/format.js";

function describe(n) {
  const name = n.data?.by?.name || n.data?.author_name || "";
  const key = {
    mention: "notification.mention",
    assignment: name ? "notification.assignedBy" : "notification.assigned",
    new_conversation: "notification.newConversation",
    chat: "notification.chat",
  }[n.kind] || "notification.other";
  return t(key, { name: name || t("notification.someone") });
}

export function Notifications({ onOpen }) {
  const [open, setOpen] = useState(false);
  const [items, setItems] = useState([]);
  const [unread, setUnread] = useState(0);
  const box = useRef(null);

  const load = useCallback(() => api.get("/api/notifications").then((r) => {
    setItems(r.items);
    setUnread(r.unread_count ?? r.items.filter((n) => !n.read_at).length);
  }, () => {}), []);

  useEffect(() => {
    load();
    const offs = [live.on("notification.created", load), live.on("reconnected", load), live.on("resync", load)];
    return () => offs.forEach((off) => off());
  }, [load]);

  useEffect(() => {
    if (!open) return;
    const away = (e) => !box.current?.contains(e.target) && setOpen(false);
    document.addEventListener("mousedown", away);
    return () => document.removeEventListener("mousedown", away);
  }, [open]);

  async function choose(n) {
    setOpen(false);
    if (!n.read_at) await api.post(`/api/notifications/${n.id}/read`).catch(() => {});
    if (n.conversation_id) onOpen(n.conversation_id);
    load();
  }

  async function readAll() {
    await api.post("/api/notifications/read-all").catch(() => {});
    load();
  }

  const label = unread ? t("notification.bellUnread", { n: unread }) : t("notification.bell");
  return html`
    <span class="menu-anchor" ref=${box} onKeyDown=${(e) => e.key === "Escape" && open && (e.stopPropagation(), setOpen(false))}>
      <button type="button" class="icon-button bell" id="notifications-toggle" aria-expanded=${open} aria-haspopup="true"
              aria-label=${label} title=${label} onClick=${() => setOpen(!open)}>
        <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6 16V11a6 6 0 0 1 12 0v5l2 2H4z" /><path d="M10 20a2 2 0 0 0 4 0" /></svg>
        ${unread ? html`<span class="badge floating" aria-hidden="true">${unread > 99 ? "99+" : unread}</span>` : ""}
      </button>
      ${open ? html`
        <div class="menu notifications" role="region" aria-label=${t("notification.title")} data-popover-open>
          <div class="menu-head">
            <strong>${t("notification.title")}</strong>
            <button type="button" class="link" onClick=${readAll} disabled=${!unread}>${t("notification.readAll")}</button>
          </div>
          ${items.length ? html`<ul>${items.map((n) => html`
            <li><button type="button" class=${`notification ${n.read_at ? "" : "unread"}`} onClick=${() => choose(n)}>
              <span>${describe(n)}</span><time class="muted" datetime=${n.created_at}>${shortTime(n.created_at)}</time>
            </button></li>`)}</ul>` : html`<p class="muted menu-item">${t("notification.empty")}</p>`}
        </div>` : ""}
    </span>`;
}
