import { html, useEffect, useRef } from "../lib/html.js";
import { t } from "../lib/i18n.js";

// Key bindings as data: the help dialog lists exactly what the handler knows.
export const SHORTCUTS = [
  { keys: ["j"], action: "next" },
  { keys: ["k"], action: "previous" },
  { keys: ["r"], action: "reply" },
  { keys: ["n"], action: "note" },
  { keys: ["e"], action: "resolve" },
  { keys: ["/"], action: "search" },
  { keys: ["?"], action: "help" },
  { keys: ["Escape"], action: "escape" },
];

const typing = (el) => el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));

export function useShortcuts(handlers) {
  const ref = useRef(handlers);
  ref.current = handlers;
  useEffect(() => {
    const onKey = (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
      const binding = SHORTCUTS.find((s) => s.keys.includes(event.key));
      if (!binding) return;
      if (binding.action !== "escape" && typing(event.target)) return;
      if (binding.action === "escape" && document.querySelector("[data-popover-open]")) return; // a popover closes first
      event.preventDefault();
      ref.current[binding.action]?.();
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, []);
}

/** A modal dialog with focus kept inside and returned where it was on close. */
export function Dialog({ title, onClose, children, id }) {
  const box = useRef(null);
  useEffect(() => {
    const before = document.activeElement;
    box.current?.querySelector("button, [href], input, select, textarea")?.focus();
    const trap = (event) => {
      if (event.key !== "Tab" || !box.current) return;
      const items = [...box.current.querySelectorAll("button, [href], input, select, textarea")];
      if (!items.length) return;
      const [first, last] = [items[0], items[items.length - 1]];
      if (event.shiftKey && document.activeElement === first) { last.focus(); event.preventDefault(); }
      else if (!event.shiftKey && document.activeElement === last) { first.focus(); event.preventDefault(); }
    };
    document.addEventListener("keydown", trap);
    return () => { document.removeEventListener("keydown", trap); before?.focus?.(); };
  }, []);
  return html`
    <div class="backdrop" onClick=${(e) => e.target === e.currentTarget && onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-labelledby=${`${id}-title`} id=${id} ref=${box}>
        <div class="dialog-head">
          <h2 id=${`${id}-title`}>${title}</h2>
          <button type="button" class="icon-button" aria-label=${t("action.close")} title=${t("action.close")} onClick=${onClose}>×</button>
        </div>
        ${children}
      </div>
    </div>`;
}

export function ShortcutHelp({ onClose }) {
  return html`
    <${Dialog} id="shortcut-help" title=${t("help.title")} onClose=${onClose}>
      <dl class="shortcut-list">
        ${SHORTCUTS.map((s) => html`
          <div><dt>${s.keys.map((k) => html`<kbd>${k === "Escape" ? t("key.escape") : k}</kbd>`)}</dt>
          <dd>${t(`shortcut.${s.action}`)}</dd></div>`)}
      </dl>
    <//>`;
}
