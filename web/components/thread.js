import { html, useState, useEffect, useRef, useLayoutEffect, useCallback } from "../lib/html.js";
import { t } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { live } from "../lib/live.js";
import { clock, contactHandle, dayLabel, errorText, fullTime } from "../lib/format.js";
import { Message, Note } from "./message.js";
import { Composer } from "./composer.js";
import { TemplatePicker } from "./template-picker.js";
import { AiPanel } from "./ai-panel.js";

const PAGE = 50;

function useNow(ms) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(timer);
  }, [ms]);
  return now;
}

/** The 24-hour customer-service window, counting down each second. */
function WindowCountdown({ expiresAt, now }) {
  if (!expiresAt) return html`<span class="window closed" id="window-countdown" data-open="false">${t("window.never")}</span>`;
  const left = Date.parse(expiresAt) - now;
  if (left <= 0) return html`<span class="window closed" id="window-countdown" data-open="false" title=${t("window.closedHint")}>${t("window.closed")}</span>`;
  return html`
    <span class=${`window ${left < 2 * 3600_000 ? "closing" : "open"}`} id="window-countdown" data-open="true" title=${t("window.openHint")}>
      <span class="visually-hidden">${t("window.label")}</span>
      <svg viewBox="0 0 16 16" aria-hidden="true"><circle cx="8" cy="8" r="6" /><path d="M8 4.5V8l2.5 1.5" /></svg>
      <span role="timer">${t("window.left", { time: clock(left) })}</span>
    </span>`;
}

/** When a snooze chosen from the menu ends (the server wakes the conversation then). */
function snoozeUntil(choice) {
  const at = new Date();
  if (choice === "1h") at.setHours(at.getHours() + 1);
  else if (choice === "4h") at.setHours(at.getHours() + 4);
  else if (choice === "tomorrow") { at.setDate(at.getDate() + 1); at.setHours(9, 0, 0, 0); }
  else if (choice === "week") { at.setDate(at.getDate() + ((8 - at.getDay()) % 7 || 7)); at.setHours(9, 0, 0, 0); }
  else return null;
  return at.toISOString();
}

function mergeById(list, incoming) {
  const byId = new Map(list.map((m) => [m.id, m]));
  for (const m of incoming) byId.set(m.id, m);
  return [...byId.values()].sort((a, b) => a.id - b.id);
}

function LabelMenu({ conversation, labels, onChange }) {
  const [open, setOpen] = useState(false);
  const box = useRef(null);
  useEffect(() => {
    if (!open) return;
    const away = (e) => !box.current?.contains(e.target) && setOpen(false);
    document.addEventListener("mousedown", away);
    return () => document.removeEventListener("mousedown", away);
  }, [open]);
  const has = new Set((conversation.labels || []).map((l) => l.id));
  async function toggle(label) {
    const path = `/api/conversations/${conversation.id}/labels`;
    onChange(has.has(label.id) ? await api.delete(`${path}/${label.id}`) : await api.post(path, { label_id: label.id }));
  }
  return html`
    <span class="menu-anchor" ref=${box} onKeyDown=${(e) => e.key === "Escape" && open && (e.stopPropagation(), setOpen(false))}>
      <button type="button" class="button" aria-expanded=${open} aria-haspopup="true" onClick=${() => setOpen(!open)}>
        ${t("labels.button")}
      </button>
      ${open ? html`
        <div class="menu" role="group" aria-label=${t("labels.button")} data-popover-open>
          ${labels.length ? labels.map((l) => html`
            <label class="menu-item">
              <input type="checkbox" checked=${has.has(l.id)} onChange=${() => toggle(l).catch(() => {})} />
              <span class="label-dot" style=${{ "--label": l.color }}>${l.name}</span>
            </label>`) : html`<p class="muted menu-item">${t("labels.none")}</p>`}
        </div>` : ""}
    </span>`;
}

function AssignControl({ conversation, me, users, onChange }) {
  const [error, setError] = useState(null);
  const assign = async (assignee_id) => {
    setError(null);
    try {
      onChange(await api.post(`/api/conversations/${conversation.id}/assign`, { assignee_id: assignee_id || null }));
    } catch (err) {
      setError(err);
    }
  };
  const mayAssign = me.role !== "agent";
  return html`
    <span class="assign">
      ${mayAssign ? html`
        <label>
          <span class="visually-hidden">${t("assign.label")}</span>
          <select id="assign-select" value=${conversation.assignee?.id || ""} title=${t("assign.label")}
                  onChange=${(e) => assign(e.target.value)}>
            <option value="">${t("assign.nobody")}</option>
            ${users.filter((u) => u.active !== false || u.id === conversation.assignee?.id).map((u) => html`
              <option value=${u.id}>${u.id === me.id ? t("assign.meNamed", { name: u.name }) : u.name}</option>`)}
          </select>
        </label>`
      : conversation.assignee
        ? html`<span class="chip subtle">${conversation.assignee.id === me.id ? t("assign.me") : conversation.assignee.name}</span>`
        : html`<button type="button" class="button" onClick=${() => assign(me.id)}>${t("assign.take")}</button>`}
      ${error ? html`<span class="form-error" role="alert">${errorText(error)}</span>` : ""}
    </span>`;
}

export function Thread({ id, initial, me, users, labels, onChanged, onBack, contactOpen, onToggleContact }) {
  const [conversation, setConversation] = useState(initial);
  const [messages, setMessages] = useState([]);
  const [notes, setNotes] = useState([]);
  const [hasMore, setHasMore] = useState(false);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState(null);
  const [mode, setMode] = useState("reply");
  const [replyTo, setReplyTo] = useState(null);
  const [reacting, setReacting] = useState(null);
  const [typing, setTyping] = useState(null);
  const [unseen, setUnseen] = useState(0);
  const [announce, setAnnounce] = useState("");
  const [draft, setDraft] = useState(null); // the AI's text for the composer
  const [aiRound, setAiRound] = useState(0); // a sent reply starts the AI panel afresh
  const scroller = useRef(null);
  const messagesRef = useRef(messages);
  messagesRef.current = messages;
  const anchor = useRef(null); // how to restore the scroll position after the next render
  const now = useNow(1000);

  const nearBottom = () => {
    const el = scroller.current;
    return !el || el.scrollHeight - el.scrollTop - el.clientHeight < 120;
  };

  const loadConversation = useCallback(async () => {
    try {
      const c = await api.get(`/api/conversations/${id}`);
      setConversation(c);
      onChanged(c);
    } catch (err) {
      setError(err);
    }
  }, [id]);

  const markRead = useCallback(() => {
    if (document.visibilityState === "visible") api.post(`/api/conversations/${id}/read`).catch(() => {});
  }, [id]);

  const loadNotes = useCallback(() => api.get(`/api/conversations/${id}/notes`).then((r) => setNotes(r.items), () => {}), [id]);

  /** Everything after the newest message we hold (hint-driven; pages until caught up). */
  const catchUp = useCallback(async (since) => {
    let after = since ?? messagesRef.current.at(-1)?.id ?? 0;
    for (let pages = 0; pages < 20; pages += 1) {
      const page = await api.get(`/api/conversations/${id}/messages`, { after, limit: 100 });
      if (!page.items.length) break;
      const fresh = page.items.filter((m) => !messagesRef.current.some((x) => x.id === m.id));
      anchor.current = nearBottom() ? "bottom" : anchor.current;
      if (anchor.current !== "bottom" && fresh.length) setUnseen((n) => n + fresh.length);
      const inbound = fresh.filter((m) => m.direction === "inbound");
      if (inbound.length) {
        setAnnounce(t("thread.newMessages", { n: inbound.length }));
        markRead();
      }
      messagesRef.current = mergeById(messagesRef.current, page.items);
      setMessages(messagesRef.current);
      after = page.items.at(-1).id;
      if (!page.has_more) break;
    }
  }, [id, markRead]);

  useEffect(() => {
    let alive = true;
    (async () => {
      try {
        const [page] = await Promise.all([
          api.get(`/api/conversations/${id}/messages`, { limit: PAGE }), loadConversation(), loadNotes()]);
        if (!alive) return;
        anchor.current = "bottom";
        setMessages(page.items);
        setHasMore(page.has_more);
        markRead();
      } catch (err) {
        if (alive) setError(err);
      } finally {
        if (alive) setLoading(false);
      }
    })();
    return () => { alive = false; };
  }, [id]);

  useEffect(() => {
    const mine = (handler) => (data) => data?.conversation_id === id && handler(data);
    const offs = [
      live.on("message.created", mine(() => catchUp().catch(() => {}))),
      live.on("message.status", mine(async (data) => {
        // the hint names the message; re-read it (and anything newer) from the server
        const from = Number(data.message_id) - 1;
        const page = await api.get(`/api/conversations/${id}/messages`, { after: from, limit: 100 }).catch(() => null);
        if (page) { messagesRef.current = mergeById(messagesRef.current, page.items); setMessages(messagesRef.current); }
      })),
      live.on("conversation.updated", mine(loadConversation)),
      live.on("note.created", mine(loadNotes)),
      live.on("typing", mine((data) => {
        if (data.user_id === me.id) return;
        setTyping(data.name);
        clearTimeout(live.typingTimer);
        live.typingTimer = setTimeout(() => setTyping(null), 4000);
      })),
    ];
    const again = async () => {
      await Promise.all([loadConversation(), loadNotes(), catchUp().catch(() => {})]);
      // statuses may have moved while we were away: re-read the newest page
      const page = await api.get(`/api/conversations/${id}/messages`, { limit: PAGE }).catch(() => null);
      if (page) { messagesRef.current = mergeById(messagesRef.current, page.items); setMessages(messagesRef.current); }
    };
    offs.push(live.on("reconnected", again), live.on("resync", again));
    const visible = () => document.visibilityState === "visible" && markRead();
    document.addEventListener("visibilitychange", visible);
    return () => { offs.forEach((off) => off()); document.removeEventListener("visibilitychange", visible); };
  }, [id, catchUp, loadConversation, loadNotes]);

  useLayoutEffect(() => { // subscribed in the commit that shows this thread, like the composer's "r"
    const resolve = () => toggleResolved();
    document.addEventListener("parlo:resolve", resolve);
    return () => document.removeEventListener("parlo:resolve", resolve);
  });

  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (anchor.current === "bottom") el.scrollTop = el.scrollHeight;
    else if (anchor.current && typeof anchor.current === "object") el.scrollTop = el.scrollHeight - anchor.current.fromBottom;
    anchor.current = null;
  }, [messages, notes]);

  async function loadOlder() {
    if (!hasMore || !messages.length) return;
    const el = scroller.current;
    const page = await api.get(`/api/conversations/${id}/messages`, { before: messages[0].id, limit: PAGE });
    anchor.current = { fromBottom: el.scrollHeight - el.scrollTop };
    messagesRef.current = mergeById(messagesRef.current, page.items);
    setMessages(messagesRef.current);
    setHasMore(page.has_more);
  }

  const sentinel = useRef(null);
  useEffect(() => {
    if (!sentinel.current || !hasMore) return;
    const observer = new IntersectionObserver((entries) => entries[0].isIntersecting && loadOlder().catch(() => {}),
      { root: scroller.current });
    observer.observe(sentinel.current);
    return () => observer.disconnect();
  }, [hasMore, messages[0]?.id]);

  function sent(message) {
    if (!message) { loadConversation(); return; } // e.g. the window closed under us
    anchor.current = "bottom";
    messagesRef.current = mergeById(messagesRef.current, [message]);
    setMessages(messagesRef.current);
    if (message.type !== "reaction") setAiRound((n) => n + 1);
  }

  async function react(message, emoji) {
    try {
      await api.post(`/api/conversations/${id}/messages`, { type: "reaction", message_id: message.id, emoji });
      const page = await api.get(`/api/conversations/${id}/messages`, { after: message.id - 1, limit: 100 });
      messagesRef.current = mergeById(messagesRef.current, page.items);
      setMessages(messagesRef.current);
    } catch (err) {
      setError(err);
    }
  }

  async function patch(fields) {
    try {
      const c = await api.patch(`/api/conversations/${id}`, fields);
      setConversation(c);
      onChanged(c);
    } catch (err) {
      setError(err);
    }
  }

  async function toggleResolved() {
    if (!conversation) return;
    const status = conversation.status === "resolved" ? "open" : "resolved";
    try {
      const c = await api.patch(`/api/conversations/${id}`, { status });
      setConversation(c);
      onChanged(c);
    } catch (err) {
      setError(err);
    }
  }

  function jump(messageId) {
    const el = document.getElementById(`message-${messageId}`);
    if (el) {
      el.scrollIntoView({ block: "center", behavior: "smooth" });
      el.classList.add("flash");
      setTimeout(() => el.classList.remove("flash"), 1200);
    }
  }

  if (!conversation) {
    return html`<div class="placeholder" role=${error ? "alert" : "status"}>${error ? errorText(error) : t("app.loading")}</div>`;
  }
  const windowOpen = Boolean(conversation.window_expires_at) && Date.parse(conversation.window_expires_at) > now;
  const name = conversation.contact?.name || contactHandle(conversation.contact);

  // one timeline of messages and internal notes, with a separator per day
  const timeline = [...messages.map((m) => ({ kind: "message", at: m.created_at, item: m })),
    ...notes.map((n) => ({ kind: "note", at: n.created_at, item: n }))]
    .sort((a, b) => a.at.localeCompare(b.at) || (a.kind === b.kind ? a.item.id - b.item.id : a.kind === "message" ? -1 : 1));
  let lastDay = null;

  return html`
    <section class="thread" aria-labelledby="thread-title" data-conversation=${id} data-status=${conversation.status}>
      <header class="thread-header">
        <button type="button" class="icon-button back" onClick=${onBack} aria-label=${t("thread.back")} title=${t("thread.back")}>
          <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M15 5l-7 7 7 7" /></svg>
        </button>
        <div class="thread-title">
          <h2 id="thread-title">${name}</h2>
          <span class="muted">${contactHandle(conversation.contact)} · ${t(`status.${conversation.status}`)}</span>
        </div>
        <${WindowCountdown} expiresAt=${conversation.window_expires_at} now=${now} />
        <div class="thread-actions">
          <${AssignControl} conversation=${conversation} me=${me} users=${users} onChange=${(c) => { setConversation(c); onChanged(c); }} />
          <${LabelMenu} conversation=${conversation} labels=${labels} onChange=${(c) => { setConversation(c); onChanged(c); }} />
          <label>
            <span class="visually-hidden">${t("ai.label")}</span>
            <select id="ai-mode-select" value=${conversation.ai_mode} title=${t("ai.label")}
                    onChange=${(e) => patch({ ai_mode: e.target.value })}>
              ${["auto", "draft", "off"].map((mode) => html`<option value=${mode}>${t(`ai.${mode}`)}</option>`)}
            </select>
          </label>
          ${conversation.ai_mode === "auto" && ["paused", "handoff"].includes(conversation.ai_state) ? html`
            <span class=${`chip ${conversation.ai_state === "handoff" ? "danger" : "warning"}`} id="ai-state"
                  title=${t(`ai.state.${conversation.ai_state}Hint`)}>${t(`ai.state.${conversation.ai_state}`)}</span>` : ""}
          ${conversation.status !== "resolved" ? html`
            <label>
              <span class="visually-hidden">${t("snooze.label")}</span>
              <select id="snooze-select" value="" title=${t("snooze.label")}
                      onChange=${(e) => { const until = snoozeUntil(e.target.value); e.target.value = ""; if (until) patch({ status: "snoozed", snoozed_until: until }); }}>
                <option value="">${conversation.status === "snoozed" && conversation.snoozed_until
                  ? t("snooze.until", { time: fullTime(conversation.snoozed_until) }) : t("snooze.label")}</option>
                <option value="1h">${t("snooze.hour")}</option>
                <option value="4h">${t("snooze.hours4")}</option>
                <option value="tomorrow">${t("snooze.tomorrow")}</option>
                <option value="week">${t("snooze.nextWeek")}</option>
              </select>
            </label>` : ""}
          <button type="button" class="button" id="resolve-button" onClick=${toggleResolved}>
            ${conversation.status === "resolved" ? t("thread.reopen") : t("thread.resolve")}
          </button>
          <button type="button" class="icon-button" id="contact-toggle" aria-pressed=${contactOpen}
                  aria-label=${t("contact.open")} title=${t("contact.open")} onClick=${onToggleContact}>
            <svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="8" r="4" /><path d="M4 21c1-4 4.5-6 8-6s7 2 8 6" /></svg>
          </button>
        </div>
      </header>
      ${conversation.labels?.length ? html`
        <div class="thread-labels">${conversation.labels.map((l) => html`<span class="label-dot" style=${{ "--label": l.color }}>${l.name}</span>`)}</div>` : ""}
      <div class="timeline" ref=${scroller} id="timeline" role="log" aria-label=${t("thread.messages")} tabindex="0"
           onScroll=${() => nearBottom() && unseen && setUnseen(0)}>
        ${hasMore ? html`<div ref=${sentinel} class="older"><button type="button" class="button ghost" onClick=${loadOlder}>${t("thread.older")}</button></div>` : ""}
        ${loading ? html`<p class="empty" role="status">${t("app.loading")}</p>` : ""}
        ${!loading && !timeline.length ? html`<p class="empty">${t("thread.empty")}</p>` : ""}
        ${timeline.map((entry) => {
          const day = new Date(entry.at).toDateString();
          const separator = day !== lastDay ? html`<div class="day" role="separator"><span>${dayLabel(entry.at)}</span></div>` : "";
          lastDay = day;
          return html`${separator}${entry.kind === "note"
            ? html`<${Note} key=${`n${entry.item.id}`} note=${entry.item} users=${users} />`
            : html`<${Message} key=${`m${entry.item.id}`} message=${entry.item} onReply=${setReplyTo} onReact=${react}
                     onJump=${jump} reacting=${reacting === entry.item.id} setReacting=${setReacting} />`}`;
        })}
      </div>
      <div class="visually-hidden" aria-live="polite" id="thread-announcer">${announce}</div>
      ${unseen ? html`<button type="button" class="unseen" onClick=${() => { scroller.current.scrollTop = scroller.current.scrollHeight; setUnseen(0); }}>
        ${t("thread.unseen", { n: unseen })}</button>` : ""}
      ${typing ? html`<p class="typing" role="status">${t("thread.typing", { name: typing })}</p>` : ""}
      ${error && !loading ? html`<p class="form-error" role="alert">${errorText(error)}</p>` : ""}
      ${windowOpen ? html`<${AiPanel} key=${aiRound} conversationId=${id} onDraft=${(text) => setDraft({ text })}
        doneRunId=${messages.findLast((m) => m.ai?.run_id)?.ai.run_id} />` : ""}
      <${Composer} conversation=${conversation} mode=${mode} setMode=${setMode} replyTo=${replyTo} draft=${draft}
        clearReply=${() => setReplyTo(null)} users=${users} windowOpen=${windowOpen}
        onSent=${sent} onNote=${(note) => { anchor.current = "bottom"; setNotes((n) => [...n.filter((x) => x.id !== note.id), note]); }}>
        <${TemplatePicker} conversation=${conversation} onSent=${sent} />
      <//>
    </section>`;
}
