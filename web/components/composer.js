import { html, useState, useEffect, useLayoutEffect, useRef } from "../lib/html.js";
import { t } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { live } from "../lib/live.js";
import { errorText } from "../lib/format.js";

const EMOJI = ["😀", "😊", "😉", "😍", "🙂", "🤔", "😅", "😢", "🙏", "👍", "👌", "👏", "🎉", "❤️", "🔥", "✅",
  "❌", "⏰", "📦", "🚚", "📞", "📧", "💳", "🛒"];
const ACCEPT = "image/jpeg,image/png,image/webp,video/mp4,video/3gpp,audio/aac,audio/mpeg,audio/ogg,audio/amr,audio/mp4,application/pdf,text/plain,application/msword,application/vnd.openxmlformats-officedocument.wordprocessingml.document,application/vnd.ms-excel,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet,application/vnd.ms-powerpoint,application/vnd.openxmlformats-officedocument.presentationml.presentation";

/** A suggestion popup under the textarea: `/shortcut` canned replies, `@name` mentions. */
function Suggestions({ id, items, active, onPick, render }) {
  if (!items.length) return "";
  return html`
    <ul class="suggestions" id=${id} role="listbox" data-popover-open>
      ${items.map((item, i) => html`
        <li role="option" id=${`${id}-${i}`} aria-selected=${i === active} class=${i === active ? "active" : ""}
            onMouseDown=${(e) => { e.preventDefault(); onPick(item); }}>${render(item)}</li>`)}
    </ul>`;
}

function EmojiPicker({ onPick, onClose }) {
  const box = useRef(null);
  useEffect(() => {
    box.current?.querySelector("button")?.focus();
    const away = (e) => !box.current?.contains(e.target) && onClose();
    const esc = (e) => e.key === "Escape" && (e.stopPropagation(), onClose());
    document.addEventListener("mousedown", away);
    box.current?.addEventListener("keydown", esc);
    return () => document.removeEventListener("mousedown", away);
  }, []);
  return html`
    <div class="emoji-picker" role="group" aria-label=${t("composer.emoji")} ref=${box} data-popover-open>
      ${EMOJI.map((emoji) => html`<button type="button" onClick=${() => onPick(emoji)}>${emoji}</button>`)}
    </div>`;
}

/** `draft` ({text}, a new object each time): the AI panel's answer, put into the reply box to edit. */
export function Composer({ conversation, mode, setMode, replyTo, clearReply, users, windowOpen, onSent, onNote, draft,
  children }) {
  const [text, setText] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [upload, setUpload] = useState(null); // {name, progress}
  const [emoji, setEmoji] = useState(false);
  const [canned, setCanned] = useState([]);
  const [mention, setMention] = useState(null); // {query, start}
  const [active, setActive] = useState(0);
  const mentions = useRef(new Map()); // token → user id, for the note being written
  const input = useRef(null);
  const lastTyping = useRef(0);
  const note = mode === "note";

  // A layout effect, so the listener exists as soon as this thread is on screen: "r" pressed right after
  // switching conversations must not reach a composer that has not subscribed yet.
  useLayoutEffect(() => {
    const focus = (event) => {
      setMode(event.detail);
      requestAnimationFrame(() => input.current?.focus());
    };
    document.addEventListener("parlo:compose", focus);
    return () => document.removeEventListener("parlo:compose", focus);
  }, []);
  useEffect(() => { if (replyTo) input.current?.focus(); }, [replyTo]);
  useEffect(() => {
    if (!draft) return;
    setMode("reply");
    setText(draft.text);
    setError(null);
    requestAnimationFrame(() => {
      input.current?.focus();
      input.current?.setSelectionRange(draft.text.length, draft.text.length);
    });
  }, [draft]);

  // "/" at the start of a reply looks up canned replies
  const cannedQuery = !note && /^\/(\S*)$/.exec(text)?.[1];
  useEffect(() => {
    if (cannedQuery === undefined) { setCanned([]); return; }
    let alive = true;
    const timer = setTimeout(() => api.get("/api/canned", { q: cannedQuery }).then(
      (r) => { if (alive) { setCanned(r.items.slice(0, 8)); setActive(0); } }, () => alive && setCanned([])), 120);
    return () => { alive = false; clearTimeout(timer); };
  }, [cannedQuery]);

  const mentionItems = mention
    ? users.filter((u) => u.active !== false && (`${u.name} ${u.email}`).toLowerCase().includes(mention.query.toLowerCase())).slice(0, 8)
    : [];

  function onInput(event) {
    const value = event.target.value;
    setText(value);
    setError(null);
    if (note) {
      const caret = event.target.selectionStart;
      const match = /(^|\s)@([\p{L}\p{N}._+-]*)$/u.exec(value.slice(0, caret));
      setMention(match ? { query: match[2], start: caret - match[2].length - 1 } : null);
      setActive(0);
    } else if (Date.now() - lastTyping.current > 3000) {
      lastTyping.current = Date.now();
      live.send({ type: "typing", conversation_id: conversation.id });
    }
  }

  function pickCanned(item) {
    setText(item.body);
    setCanned([]);
    input.current?.focus();
  }

  function pickMention(user) {
    const token = `@${user.email.split("@")[0]}`;
    mentions.current.set(token.toLowerCase(), user.id);
    const caret = input.current.selectionStart;
    const next = `${text.slice(0, mention.start)}${token} ${text.slice(caret)}`;
    setText(next);
    setMention(null);
    requestAnimationFrame(() => {
      const at = mention.start + token.length + 1;
      input.current.focus();
      input.current.setSelectionRange(at, at);
    });
  }

  function onKeyDown(event) {
    const list = canned.length ? canned : mentionItems;
    if (list.length) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        setActive((a) => (a + (event.key === "ArrowDown" ? 1 : list.length - 1)) % list.length);
        return;
      }
      if (event.key === "Enter" || event.key === "Tab") {
        event.preventDefault();
        canned.length ? pickCanned(canned[active]) : pickMention(mentionItems[active]);
        return;
      }
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        setCanned([]);
        setMention(null);
        return;
      }
    }
    if (event.key === "Escape" && replyTo) {
      event.preventDefault();
      event.stopPropagation();
      clearReply();
      return;
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  }

  async function send() {
    const body = text.trim();
    if (!body || busy) return;
    setBusy(true);
    setError(null);
    try {
      if (note) {
        const ids = [...new Set([...body.toLowerCase().matchAll(/@[\p{L}\p{N}._+-]+/gu)]
          .map((m) => mentions.current.get(m[0])).filter(Boolean))];
        onNote(await api.post(`/api/conversations/${conversation.id}/notes`, { text: body, mentions: ids }));
        mentions.current.clear();
      } else {
        const payload = { type: "text", text: body };
        if (replyTo) payload.reply_to = replyTo.id;
        onSent(await api.post(`/api/conversations/${conversation.id}/messages`, payload));
        clearReply();
      }
      setText("");
    } catch (err) {
      setError(err);
      if (err.code === "ServiceWindowClosed") onSent(null);
    } finally {
      setBusy(false);
      input.current?.focus();
    }
  }

  async function attach(event) {
    const file = event.target.files?.[0];
    event.target.value = "";
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    if (text.trim()) form.append("caption", text.trim());
    setUpload({ name: file.name, progress: 0 });
    setError(null);
    try {
      onSent(await api.upload(`/api/conversations/${conversation.id}/media`, form,
        (progress) => setUpload({ name: file.name, progress })));
      setText("");
    } catch (err) {
      setError(err);
    } finally {
      setUpload(null);
    }
  }

  function insertEmoji(value) {
    const el = input.current;
    const start = el?.selectionStart ?? text.length;
    const end = el?.selectionEnd ?? text.length;
    setText(text.slice(0, start) + value + text.slice(end));
    setEmoji(false);
    requestAnimationFrame(() => {
      el?.focus();
      el?.setSelectionRange(start + value.length, start + value.length);
    });
  }

  const popup = canned.length ? "canned-list" : mentionItems.length ? "mention-list" : null;
  return html`
    <section class=${`composer ${note ? "note-mode" : ""}`} aria-label=${t("composer.label")}>
      <div class="composer-tabs" role="tablist" aria-label=${t("composer.mode")}>
        <button type="button" role="tab" id="tab-reply" aria-controls="composer-panel" aria-selected=${!note} onClick=${() => setMode("reply")}>${t("composer.reply")}</button>
        <button type="button" role="tab" id="tab-note" aria-controls="composer-panel" aria-selected=${note} onClick=${() => setMode("note")}>${t("composer.note")}</button>
      </div>
      <div role="tabpanel" id="composer-panel" aria-labelledby=${note ? "tab-note" : "tab-reply"}>
      ${!note && !windowOpen ? children : html`
        ${replyTo && !note ? html`
          <div class="reply-bar" id="reply-bar">
            <span class="quote-author">${t("composer.replyingTo")}</span>
            <span class="quote-text">${replyTo.text || t(`type.${replyTo.type}`)}</span>
            <button type="button" class="icon-button small" aria-label=${t("composer.cancelReply")} title=${t("composer.cancelReply")}
                    onClick=${clearReply}>×</button>
          </div>` : ""}
        <div class="composer-box">
          <label class="visually-hidden" for="composer-input">${note ? t("composer.noteLabel") : t("composer.replyLabel")}</label>
          <textarea id="composer-input" ref=${input} rows="3" value=${text} onInput=${onInput} onKeyDown=${onKeyDown}
                    placeholder=${note ? t("composer.notePlaceholder") : t("composer.placeholder")}
                    aria-autocomplete=${popup ? "list" : undefined} aria-controls=${popup || undefined}
                    aria-activedescendant=${popup ? `${popup}-${active}` : undefined}></textarea>
          <${Suggestions} id="canned-list" items=${canned} active=${active} onPick=${pickCanned}
            render=${(c) => html`<strong>/${c.shortcut}</strong> <span class="muted">${c.title}</span><span class="suggestion-body">${c.body}</span>`} />
          <${Suggestions} id="mention-list" items=${canned.length ? [] : mentionItems} active=${active} onPick=${pickMention}
            render=${(u) => html`<strong>${u.name}</strong> <span class="muted">${u.email}</span>`} />
        </div>
        ${upload ? html`
          <div class="upload" role="status">
            <span>${t("composer.uploading", { name: upload.name })}</span>
            <progress max="1" value=${upload.progress} aria-label=${t("composer.uploadProgress")}></progress>
          </div>` : ""}
        <div class="form-error" role="alert">${error ? errorText(error) : ""}</div>
        <div class="composer-actions">
          ${note ? html`<span class="muted hint">${t("composer.noteHint")}</span>` : html`
            <label class="icon-button" title=${t("composer.attach")}>
              <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M20 11.5l-8 8a5 5 0 0 1-7-7l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7L9.7 17.2a1.7 1.7 0 0 1-2.4-2.4L15 7" /></svg>
              <span class="visually-hidden">${t("composer.attach")}</span>
              <input type="file" class="visually-hidden" id="attach-input" accept=${ACCEPT} onChange=${attach} />
            </label>
            <span class="emoji-anchor">
              <button type="button" class="icon-button" aria-expanded=${emoji} aria-haspopup="true"
                      aria-label=${t("composer.emoji")} title=${t("composer.emoji")} onClick=${() => setEmoji(!emoji)}>
                <svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="9" /><path d="M8 14c1 1.5 2.3 2 4 2s3-.5 4-2M9 9.5v.5M15 9.5v.5" /></svg>
              </button>
              ${emoji ? html`<${EmojiPicker} onPick=${insertEmoji} onClose=${() => setEmoji(false)} />` : ""}
            </span>
            <span class="muted hint">${t("composer.hint")}</span>`}
          <button type="button" id="send-button" class="button primary" disabled=${busy || !text.trim()} onClick=${send}>
            ${note ? t("composer.addNote") : t("composer.send")}
          </button>
        </div>`}
      </div>
    </section>`;
}
