import { html } from "../lib/html.js";
import { t } from "../lib/i18n.js";

/** Only web links become links (a "javascript:" URL in a knowledge base must never run). */
export function safeUrl(url) {
  if (!url) return null;
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** The sources an AI answer cites: source name, the passage's title, a link when it has one. */
export function Citations({ citations, id }) {
  const seen = new Set();
  const items = (citations || []).filter((c) => {
    const key = `${c.source}\u0000${c.title}\u0000${c.url}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  if (!items.length) return "";
  return html`
    <div class="citations" id=${id}>
      <span class="citations-title">${t("ai.sources")}</span>
      <ol>
        ${items.map((c) => {
          const href = safeUrl(c.url);
          const title = c.title && c.title !== c.source ? c.title : "";
          return html`
            <li class="citation" data-source=${c.source}>
              <span class="citation-source">${c.source}</span>
              ${title ? html`<span class="muted"> · </span>` : ""}
              ${href ? html`<a href=${href} target="_blank" rel="noopener noreferrer">${title || href}</a>`
                : title ? html`<span>${title}</span>` : ""}
            </li>`;
        })}
      </ol>
    </div>`;
}
