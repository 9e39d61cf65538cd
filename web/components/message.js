import { html, useState, useEffect } from "../lib/html.js";
import { t } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { shortTime, fullTime, fileSize } from "../lib/format.js";
import { Citations } from "./citations.js";

export const REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
const AUTO_PREVIEW_BYTES = 16 * 1024 * 1024;

const icons = {
  clock: html`<svg viewBox="0 0 16 16" aria-hidden="true"><circle cx="8" cy="8" r="6" /><path d="M8 4.5V8l2.5 1.5" /></svg>`,
  one: html`<svg viewBox="0 0 16 16" aria-hidden="true"><path d="M3 8.5l3 3 7-7" /></svg>`,
  two: html`<svg viewBox="0 0 20 16" aria-hidden="true"><path d="M1.5 8.5l3 3 7-7" /><path d="M8 11.5l7-7" /><path d="M6.5 10l1.5 1.5" /></svg>`,
  failed: html`<svg viewBox="0 0 16 16" aria-hidden="true"><circle cx="8" cy="8" r="6.5" /><path d="M8 4.5v4M8 11v.5" /></svg>`,
};

/** sent ✓, delivered ✓✓, read ✓✓ (blue), failed ⚠ with Meta's reason in the tooltip. */
export function Ticks({ message }) {
  const status = message.status;
  let label = t(`tick.${status}`);
  if (status === "failed" && message.error) {
    const reason = message.error.reason || message.error.title || "";
    label = t("tick.failedBecause", { reason, code: message.error.code ?? "" });
  }
  const icon = { queued: icons.clock, sending: icons.clock, sent: icons.one, delivered: icons.two, read: icons.two,
    failed: icons.failed }[status] || icons.clock;
  return html`<span class=${`ticks ${status}`} data-status=${status} role="img" aria-label=${label} title=${label}>${icon}</span>`;
}

function useBlobUrl(path, enabled) {
  const [state, setState] = useState({ url: null, failed: false });
  useEffect(() => {
    if (!enabled || !path) return;
    let url = null;
    let alive = true;
    let timer = null;
    // an inbound file is downloaded from Meta after the message is stored: wait for it a little
    const attempt = (n) => api.blob(path).then(
      (blob) => {
        url = URL.createObjectURL(blob);
        if (alive) setState({ url, failed: false });
        else URL.revokeObjectURL(url);
      },
      (error) => {
        if (!alive) return;
        if (n < 6 && [404, 409, 425, 503].includes(error.status)) timer = setTimeout(() => attempt(n + 1), 500 * 2 ** n);
        else setState({ url: null, failed: true });
      },
    );
    attempt(0);
    return () => {
      alive = false;
      clearTimeout(timer);
      if (url) URL.revokeObjectURL(url);
    };
  }, [path, enabled]);
  return state;
}

/** Media are fetched with the bearer token and shown from a blob: URL (an <img src> cannot send it). */
export function MediaPreview({ message }) {
  const media = message.media;
  const kind = message.type;
  const visual = ["image", "sticker", "video", "audio"].includes(kind) && (media.size ?? 0) <= AUTO_PREVIEW_BYTES;
  const { url, failed } = useBlobUrl(media.url, visual);
  const name = media.filename || t(`type.${kind}`);

  async function download() {
    const blob = await api.blob(media.url);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = media.filename || "file";
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }

  if (failed) return html`<div class="media-missing">${t("media.unavailable")}</div>`;
  if (visual && !url) return html`<div class="media-loading" role="status">${t("media.loading")}</div>`;
  if (kind === "image" || kind === "sticker") {
    return html`<img class=${`media-image ${kind}`} src=${url} alt=${message.text || name} />`;
  }
  if (kind === "video") return html`<video class="media-video" src=${url} controls preload="metadata" aria-label=${name}></video>`;
  if (kind === "audio") return html`<audio class="media-audio" src=${url} controls aria-label=${name}></audio>`;
  return html`
    <button type="button" class="media-file" onClick=${download} title=${t("media.download")}>
      <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6 3h8l4 4v14H6z" /><path d="M14 3v4h4" /></svg>
      <span class="media-file-name">${name}</span>
      <span class="muted">${fileSize(media.size)}</span>
    </button>`;
}

function Body({ message }) {
  const payload = message.payload || {};
  if (message.type === "location") {
    const loc = payload.location || payload;
    return html`<p class="text">${t("type.location")}: ${loc.name || ""} ${loc.address || ""} (${loc.latitude}, ${loc.longitude})</p>`;
  }
  if (message.template && !message.text) {
    return html`<p class="text template-text">${t("message.template", { name: message.template.name })}
      ${message.template.params?.length ? html`<span class="muted"> · ${message.template.params.join(" · ")}</span>` : ""}</p>`;
  }
  if (message.text) return html`<p class="text">${message.text}</p>`;
  if (!message.media) return html`<p class="text muted">${t(`type.${message.type}`) === `type.${message.type}` ? t("type.unknown") : t(`type.${message.type}`)}</p>`;
  return "";
}

export function Message({ message, onReply, onReact, onJump, reacting, setReacting }) {
  const outbound = message.direction === "outbound";
  const own = (message.reactions || []).find((r) => r.direction === "outbound")?.emoji;
  return html`
    <article class=${`message ${outbound ? "outbound" : "inbound"} ${message.status === "failed" ? "failed" : ""} ${message.ai ? "ai" : ""}`}
             id=${`message-${message.id}`} data-message=${message.id} aria-label=${message.ai ? t("message.fromAi") : outbound ? t("message.fromUs") : t("message.fromCustomer")}>
      <div class="bubble">
        ${message.reply_to ? html`
          <button type="button" class="quote" onClick=${() => onJump(message.reply_to.id)} title=${t("message.jumpToQuoted")}>
            <span class="quote-author">${message.reply_to.direction === "outbound" ? t("message.you") : t("message.customer")}</span>
            <span class="quote-text">${message.reply_to.text || t("type.unknown")}</span>
          </button>` : ""}
        ${message.template ? html`<span class="chip subtle template-chip">${t("message.templateChip")}</span>` : ""}
        ${message.media ? html`<${MediaPreview} message=${message} />` : ""}
        <${Body} message=${message} />
        ${message.ai ? html`<${Citations} citations=${message.ai.citations} />` : ""}
        <footer class="message-meta">
          ${message.ai ? html`<span class="chip ai-chip" title=${t("message.aiWritten")}>${t("message.aiBadge")}</span>` : ""}
          ${outbound && message.author ? html`<span class="author">${message.author.name}</span>` : ""}
          <time datetime=${message.created_at} title=${fullTime(message.created_at)}>${shortTime(message.created_at)}</time>
          ${outbound ? html`<${Ticks} message=${message} />` : ""}
        </footer>
        ${message.status === "failed" && message.error ? html`
          <p class="message-error">${message.error.reason || message.error.title}</p>` : ""}
      </div>
      ${message.reactions?.length ? html`
        <ul class="reactions" aria-label=${t("message.reactions")}>
          ${message.reactions.map((r) => html`<li class=${r.direction === "outbound" ? "own" : ""}
              title=${r.direction === "outbound" ? t("message.reactionOurs") : t("message.reactionCustomer")}>${r.emoji}</li>`)}
        </ul>` : ""}
      <div class="message-actions">
        <button type="button" class="icon-button small" onClick=${() => onReply(message)}
                aria-label=${t("message.reply")} title=${t("message.reply")}>
          <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M10 8V4l-7 7 7 7v-4c5 0 8 1.5 11 5-1-5-4-10-11-11z" /></svg>
        </button>
        <button type="button" class="icon-button small" aria-expanded=${reacting} aria-haspopup="true"
                onClick=${() => setReacting(reacting ? null : message.id)} aria-label=${t("message.react")} title=${t("message.react")}>
          <svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="9" /><path d="M8 14c1 1.5 2.3 2 4 2s3-.5 4-2M9 9.5v.5M15 9.5v.5" /></svg>
        </button>
        ${reacting ? html`
          <div class="reaction-picker" role="group" aria-label=${t("message.react")} data-popover-open>
            ${REACTIONS.map((emoji) => html`
              <button type="button" class=${own === emoji ? "selected" : ""} aria-pressed=${own === emoji}
                      onClick=${() => { setReacting(null); onReact(message, own === emoji ? "" : emoji); }}>${emoji}</button>`)}
          </div>` : ""}
      </div>
    </article>`;
}

/** Mentions stand out; every piece stays a text node (never HTML). */
export function NoteText({ text, mentions, users = [] }) {
  const known = new Set();
  for (const m of mentions || []) {
    const user = users.find((u) => u.id === m.id);
    for (const token of [m.name, user?.name, user?.email?.split("@")[0]]) if (token) known.add(token.toLowerCase());
  }
  const parts = text.split(/(@[\p{L}\p{N}._+-]+)/u);
  return html`<p class="text">${parts.map((part, i) =>
    i % 2 === 1 ? html`<mark class=${known.has(part.slice(1).toLowerCase()) ? "mention" : "mention unknown"}>${part}</mark>` : part)}</p>`;
}

export function Note({ note, users }) {
  return html`
    <article class="note" id=${`note-${note.id}`} aria-label=${t("note.label")}>
      <div class="bubble">
        <span class="note-tag">${t("note.tag")}</span>
        <${NoteText} text=${note.text} mentions=${note.mentions} users=${users} />
        <footer class="message-meta">
          <span class="author">${note.author?.name}</span>
          <time datetime=${note.created_at} title=${fullTime(note.created_at)}>${shortTime(note.created_at)}</time>
        </footer>
      </div>
    </article>`;
}
