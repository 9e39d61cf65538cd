import { html, useState, useEffect, useRef, useLayoutEffect, useCallback } from "../lib/html.js";
import { t } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { live } from "../lib/live.js";
import { shortTime, errorText } from "../lib/format.js";

function channelName(channel, me) {
  if (channel.kind === "direct") return channel.members?.filter((m) => m.id !== me.id).map((m) => m.name).join(", ") || channel.name;
  return `# ${channel.name}`;
}

export function TeamChat({ me, users, onClose }) {
  const [channels, setChannels] = useState(null);
  const [current, setCurrent] = useState(null);
  const [messages, setMessages] = useState([]);
  const [text, setText] = useState("");
  const [newName, setNewName] = useState("");
  const [error, setError] = useState(null);
  const list = useRef(null);
  const currentRef = useRef(null);
  currentRef.current = current;

  const loadChannels = useCallback(() => api.get("/api/chat/channels").then((r) => setChannels(r.items), (err) => { setChannels([]); setError(err); }), []);
  const loadMessages = useCallback(async (channelId) => {
    const page = await api.get(`/api/chat/channels/${channelId}/messages`, { limit: 50 });
    if (currentRef.current?.id === channelId) setMessages(page.items);
    api.post(`/api/chat/channels/${channelId}/read`).catch(() => {});
  }, []);

  useEffect(() => {
    loadChannels();
    const offs = [live.on("chat.message", (data) => {
      if (currentRef.current?.id === data.channel_id) loadMessages(data.channel_id).catch(() => {});
      loadChannels();
    }), live.on("reconnected", loadChannels)];
    return () => offs.forEach((off) => off());
  }, []);

  useLayoutEffect(() => { if (list.current) list.current.scrollTop = list.current.scrollHeight; }, [messages]);

  function openChannel(channel) {
    setCurrent(channel);
    setMessages([]);
    currentRef.current = channel;
    loadMessages(channel.id).catch(setError);
  }

  async function direct(userId) {
    if (!userId) return;
    try {
      const channel = await api.post("/api/chat/direct", { user_id: userId });
      await loadChannels();
      openChannel(channel);
    } catch (err) {
      setError(err);
    }
  }

  async function createChannel(event) {
    event.preventDefault();
    try {
      const channel = await api.post("/api/chat/channels", { name: newName.trim() });
      setNewName("");
      await loadChannels();
      openChannel(channel);
    } catch (err) {
      setError(err);
    }
  }

  async function send(event) {
    event.preventDefault();
    if (!text.trim()) return;
    try {
      const message = await api.post(`/api/chat/channels/${current.id}/messages`, { text: text.trim() });
      setMessages((m) => [...m.filter((x) => x.id !== message.id), message]);
      setText("");
    } catch (err) {
      setError(err);
    }
  }

  const authorName = (m) => m.author?.name || users.find((u) => u.id === (m.author_id || m.author?.id))?.name || "";
  return html`
    <aside class="side-panel" id="team-chat" aria-labelledby="chat-title">
      <header class="panel-head">
        ${current ? html`<button type="button" class="icon-button" aria-label=${t("chat.channels")} title=${t("chat.channels")}
                           onClick=${() => setCurrent(null)}><svg viewBox="0 0 24 24" aria-hidden="true"><path d="M15 5l-7 7 7 7" /></svg></button>` : ""}
        <h2 id="chat-title">${current ? channelName(current, me) : t("chat.title")}</h2>
        <button type="button" class="icon-button" aria-label=${t("action.close")} title=${t("action.close")} onClick=${onClose}>×</button>
      </header>
      ${error ? html`<p class="form-error" role="alert">${errorText(error)}</p>` : ""}
      ${!current ? html`
        <div class="panel-body">
          ${channels === null ? html`<p class="empty" role="status">${t("app.loading")}</p>` : html`
            <ul class="channels">
              ${channels.map((c) => html`<li><button type="button" class="channel" onClick=${() => openChannel(c)}>
                <span>${channelName(c, me)}</span>${c.unread ? html`<span class="badge">${c.unread}</span>` : ""}</button></li>`)}
            </ul>
            ${!channels.length ? html`<p class="muted">${t("chat.noChannels")}</p>` : ""}`}
          <label class="field"><span>${t("chat.direct")}</span>
            <select onChange=${(e) => direct(e.target.value)} value="">
              <option value="">${t("chat.pickColleague")}</option>
              ${users.filter((u) => u.id !== me.id && u.active !== false).map((u) => html`<option value=${u.id}>${u.name}</option>`)}
            </select>
          </label>
          <form class="inline-form" onSubmit=${createChannel}>
            <label class="field grow"><span>${t("chat.newChannel")}</span>
              <input value=${newName} onInput=${(e) => setNewName(e.target.value)} maxlength="80" /></label>
            <button type="submit" class="button" disabled=${!newName.trim()}>${t("chat.create")}</button>
          </form>
        </div>` : html`
        <div class="chat-log" ref=${list} role="log" aria-label=${t("chat.messages")}>
          ${messages.map((m) => html`
            <div class=${`chat-line ${(m.author?.id || m.author_id) === me.id ? "own" : ""}`}>
              <span class="author">${authorName(m)}</span>
              <time class="muted" datetime=${m.created_at}>${shortTime(m.created_at)}</time>
              <p class="text">${m.text}</p>
            </div>`)}
          ${!messages.length ? html`<p class="muted empty">${t("chat.empty")}</p>` : ""}
        </div>
        <form class="chat-composer" onSubmit=${send}>
          <label class="visually-hidden" for="chat-input">${t("chat.write")}</label>
          <input id="chat-input" value=${text} onInput=${(e) => setText(e.target.value)} placeholder=${t("chat.write")} />
          <button type="submit" class="button primary" disabled=${!text.trim()}>${t("composer.send")}</button>
        </form>`}
    </aside>`;
}
