import { html, useState, useEffect, useRef, useCallback } from "../lib/html.js";
import { t } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { live } from "../lib/live.js";
import { contactHandle, shortTime, initials, errorText } from "../lib/format.js";

const STATUSES = ["open", "pending", "snoozed", "resolved"];
const SCOPES = ["all", "mine", "unassigned"];
const byRecency = (a, b) => (b.last_message_at || "").localeCompare(a.last_message_at || "");

function matches(c, filters, me) {
  if (filters.status && c.status !== filters.status) return false;
  if (filters.scope === "mine" && c.assignee?.id !== me.id) return false;
  if (filters.scope === "unassigned" && c.assignee) return false;
  if (filters.label_id && !c.labels?.some((l) => l.id === filters.label_id)) return false;
  return true;
}

/** The filtered list, kept current by live events: each hint re-reads only the conversation it names. */
export function useConversations(filters, me) {
  const [items, setItems] = useState([]);
  const [cursor, setCursor] = useState(null);
  const [state, setState] = useState({ loading: true, error: null });
  const generation = useRef(0);
  const pending = useRef(new Set());
  const flushTimer = useRef(null);
  const filtersRef = useRef(filters);
  filtersRef.current = filters;

  const reload = useCallback(async () => {
    const mine = ++generation.current;
    setState((s) => ({ ...s, loading: true }));
    try {
      const page = await api.get("/api/conversations", { ...filtersRef.current, limit: 50 });
      if (mine !== generation.current) return;
      setItems(page.items);
      setCursor(page.next_cursor);
      setState({ loading: false, error: null });
    } catch (error) {
      if (mine === generation.current) setState({ loading: false, error });
    }
  }, []);

  const loadMore = useCallback(async () => {
    if (!cursor) return;
    const mine = generation.current;
    const page = await api.get("/api/conversations", { ...filtersRef.current, cursor, limit: 50 });
    if (mine !== generation.current) return;
    setItems((list) => {
      const known = new Set(list.map((c) => c.id));
      return [...list, ...page.items.filter((c) => !known.has(c.id))];
    });
    setCursor(page.next_cursor);
  }, [cursor]);

  /** Put the server's current view of a conversation into the list (or take it out). */
  const upsert = useCallback((conversation, removedId) => {
    setItems((list) => {
      const rest = list.filter((c) => c.id !== (conversation?.id ?? removedId));
      if (!conversation || !matches(conversation, filtersRef.current, me)) return rest;
      return [...rest, conversation].sort(byRecency);
    });
  }, [me]);

  const flush = useCallback(async () => {
    const ids = [...pending.current];
    pending.current.clear();
    if (filtersRef.current.q) return reload(); // text matches are the server's to decide
    await Promise.all(ids.map(async (id) => {
      try {
        upsert(await api.get(`/api/conversations/${id}`));
      } catch (error) {
        if (error.status === 404 || error.status === 403) upsert(null, id);
      }
    }));
  }, [reload, upsert]);

  useEffect(() => {
    reload();
  }, [filters.status, filters.scope, filters.label_id, filters.q]);

  useEffect(() => {
    const hint = (data) => {
      if (!data?.conversation_id) return;
      pending.current.add(data.conversation_id);
      clearTimeout(flushTimer.current);
      flushTimer.current = setTimeout(flush, 80); // a burst of hints, one read per conversation
    };
    const offs = ["message.created", "message.status", "conversation.updated", "conversation.created"]
      .map((type) => live.on(type, hint));
    offs.push(live.on("resync", reload), live.on("reconnected", reload));
    return () => offs.forEach((off) => off());
  }, [flush, reload]);

  return { items, cursor, state, reload, loadMore, upsert };
}

export function ConversationFilters({ filters, setFilters, labels }) {
  const [q, setQ] = useState(filters.q);
  useEffect(() => {
    const timer = setTimeout(() => q !== filters.q && setFilters({ ...filters, q }), 300);
    return () => clearTimeout(timer);
  }, [q]);
  return html`
    <div class="filters">
      <div class="search">
        <label class="visually-hidden" for="conversation-search">${t("filters.search")}</label>
        <input id="conversation-search" type="search" placeholder=${t("filters.searchPlaceholder")}
               value=${q} onInput=${(e) => setQ(e.target.value)} />
      </div>
      <div class="segmented" role="group" aria-label=${t("filters.scope")}>
        ${SCOPES.map((scope) => html`
          <button type="button" aria-pressed=${filters.scope === scope}
                  onClick=${() => setFilters({ ...filters, scope })}>${t(`scope.${scope}`)}</button>`)}
      </div>
      <div class="filter-row">
        <label class="compact">
          <span class="visually-hidden">${t("filters.status")}</span>
          <select id="filter-status" value=${filters.status} title=${t("filters.status")}
                  onChange=${(e) => setFilters({ ...filters, status: e.target.value })}>
            <option value="">${t("status.any")}</option>
            ${STATUSES.map((s) => html`<option value=${s}>${t(`status.${s}`)}</option>`)}
          </select>
        </label>
        <label class="compact">
          <span class="visually-hidden">${t("filters.label")}</span>
          <select id="filter-label" value=${filters.label_id} title=${t("filters.label")}
                  onChange=${(e) => setFilters({ ...filters, label_id: e.target.value })}>
            <option value="">${t("filters.anyLabel")}</option>
            ${labels.map((l) => html`<option value=${l.id}>${l.name}</option>`)}
          </select>
        </label>
      </div>
    </div>`;
}

export function preview(message) {
  if (!message) return "";
  if (message.text) return message.text;
  return t(`type.${message.type}`) === `type.${message.type}` ? t("type.unknown") : t(`type.${message.type}`);
}

export function ConversationList({ list, selectedId, onSelect, me }) {
  const { items, cursor, state, loadMore } = list;
  const sentinel = useRef(null);
  useEffect(() => {
    if (!sentinel.current || !cursor) return;
    const observer = new IntersectionObserver((entries) => entries[0].isIntersecting && loadMore());
    observer.observe(sentinel.current);
    return () => observer.disconnect();
  }, [cursor, loadMore]);

  if (state.error && !items.length) {
    return html`<p class="empty" role="alert">${errorText(state.error)}</p>`;
  }
  if (!items.length) {
    return html`<p class="empty" role="status">${state.loading ? t("app.loading") : t("list.empty")}</p>`;
  }
  return html`
    <ul class="conversation-list" aria-label=${t("list.label")} id="conversation-list">
      ${items.map((c) => {
        const selected = c.id === selectedId;
        const unread = selected ? 0 : c.unread_count;
        const name = c.contact?.name || contactHandle(c.contact);
        const last = c.last_message;
        return html`
          <li key=${c.id}>
            <button type="button" class=${`conversation ${selected ? "selected" : ""} ${unread ? "unread" : ""}`}
                    aria-current=${selected ? "true" : undefined} data-conversation=${c.id}
                    onClick=${() => onSelect(c.id)}>
              <span class="avatar" aria-hidden="true">${initials(name)}</span>
              <span class="conversation-main">
                <span class="conversation-top">
                  <span class="conversation-name">${name}</span>
                  <time datetime=${c.last_message_at}>${shortTime(c.last_message_at)}</time>
                </span>
                <span class="conversation-bottom">
                  <span class="conversation-preview">
                    ${last?.direction === "outbound" ? html`<span class="muted">${t("list.you")} </span>` : ""}
                    ${preview(last)}
                  </span>
                  ${unread ? html`<span class="badge" aria-label=${t("list.unread", { n: unread })}>${unread}</span>` : ""}
                </span>
                <span class="conversation-meta">
                  ${c.status !== "open" ? html`<span class="chip subtle">${t(`status.${c.status}`)}</span>` : ""}
                  ${c.assignee
                    ? html`<span class="chip subtle" title=${t("conversation.assignee")}>${c.assignee.id === me.id ? t("assign.me") : c.assignee.name}</span>`
                    : html`<span class="chip subtle">${t("assign.nobody")}</span>`}
                  ${(c.labels || []).map((l) => html`<span class="label-dot" style=${{ "--label": l.color }}>${l.name}</span>`)}
                </span>
              </span>
            </button>
          </li>`;
      })}
      ${cursor ? html`<li ref=${sentinel} class="list-more"><button type="button" class="button ghost" onClick=${loadMore}>${t("list.more")}</button></li>` : ""}
    </ul>`;
}
