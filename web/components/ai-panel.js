// The AI panel of a conversation: a draft on demand, streamed as Server-Sent Events from a POST
// (progress stages, then the tokens, then a final event with citations), cancellable; the final
// text goes into the composer, where the agent edits and sends it.
import { html, useState, useEffect, useRef, useLayoutEffect } from "../lib/html.js";
import { t, has } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { live } from "../lib/live.js";
import { readEvents } from "../lib/sse.js";
import { errorText } from "../lib/format.js";
import { Citations } from "./citations.js";

// a web search starts while the answer is being written; listed before it so "writing" stays the active stage
const STAGES = ["classifying", "searching", "found", "searching_web", "generating"];
// "[1]" markers become citations in the final event; while streaming they are noise
const MARKERS = /\s?\[\d+(?:,\s*\d+)*\]/g;

/** A label for a value the server names (handler, intent), translated when we know it. */
export function named(prefix, value) {
  if (!value) return "";
  return has(`${prefix}.${value}`) ? t(`${prefix}.${value}`) : value.replaceAll("_", " ");
}

function stageText(event) {
  if (event.stage === "found") {
    // several passages may come from one document: name the documents
    const sources = event.sources || [];
    if (!event.count && !sources.length) return t("ai.stage.foundNone");
    return t("ai.stage.found", { n: sources.length || event.count, names: sources.join(", ") });
  }
  return has(`ai.stage.${event.stage}`) ? t(`ai.stage.${event.stage}`) : event.stage;
}

function Stages({ stages, streaming }) {
  const ordered = [...stages].sort((a, b) => STAGES.indexOf(a.stage) - STAGES.indexOf(b.stage));
  return html`
    <ol class="ai-stages" id="ai-stages" role="status" aria-label=${t("ai.progress")}>
      ${ordered.map((event, i) => {
        const active = streaming && i === ordered.length - 1;
        return html`
          <li class=${`ai-stage ${active ? "active" : "done"}`} data-stage=${event.stage}>
            <span class="ai-stage-mark" aria-hidden="true">${active ? "" : "✓"}</span>
            <span class="ai-stage-text">${stageText(event)}</span>
          </li>`;
      })}
    </ol>`;
}

function refusal(error) {
  if (error.status === 409) return t("ai.nothingToAnswer");
  if (error.status === 429) return error.retryAfter ? t("ai.busyFor", { s: error.retryAfter }) : t("ai.busy");
  return errorText(error);
}

const AUTO_QUIET_MS = 20_000;

/** An auto-reply the assistant is writing in this conversation right now (the shard relays its
 *  progress and growing text as ai.progress / ai.draft), until the thread holds the message of
 *  that run (`doneRunId`) or a customer's message ends it; a relayed delta that arrives after
 *  that belongs to the run that ended and is ignored. */
function useAutoReply(conversationId, doneRunId) {
  const [auto, setAuto] = useState(null); // {run_id, stage, text, ended} | {skipped}
  useEffect(() => {
    let current = null;
    let timer = null;
    const set = (next) => {
      current = next;
      setAuto(next);
      clearTimeout(timer);
      if (next) timer = setTimeout(() => set(null), AUTO_QUIET_MS); // an answer that failed sends nothing
    };
    const mine = (handler) => (data) => String(data?.conversation_id) === String(conversationId) && handler(data);
    const running = () => (current && !current.ended && current.skipped === undefined ? current : null);
    const offs = [
      live.on("ai.progress", mine((d) => {
        if (d.run_id && d.run_id !== current?.run_id) set({ run_id: d.run_id, stage: d.stage });
        else if (!current?.ended) set({ ...running(), stage: d.stage });
      })),
      live.on("ai.draft", mine((d) => { if (!current?.ended) set({ ...running(), text: d.text }); })),
      live.on("ai.skipped", mine((d) => set({ skipped: d.reason || "" }))),
      live.on("message.created", mine(() => { if (current) set({ ...current, ended: true }); })),
    ];
    return () => { clearTimeout(timer); offs.forEach((off) => off()); };
  }, [conversationId]);
  return auto && !auto.ended && !(auto.run_id && auto.run_id === doneRunId) ? auto : null;
}

export function AiPanel({ conversationId, onDraft, doneRunId }) {
  const [run, setRun] = useState({ state: "idle" });
  const auto = useAutoReply(conversationId, doneRunId);
  const controller = useRef(null);
  const textBox = useRef(null);
  useEffect(() => () => controller.current?.abort(), []);
  useLayoutEffect(() => {
    if (textBox.current) textBox.current.scrollTop = textBox.current.scrollHeight;
  }, [run.text]);

  async function start() {
    controller.current?.abort();
    const abort = new AbortController();
    controller.current = abort;
    let current = { state: "streaming", stages: [], text: "" };
    const update = (patch) => {
      current = { ...current, ...patch };
      if (controller.current === abort) setRun(current);
    };
    update({});
    try {
      const response = await api.stream(`/api/conversations/${conversationId}/ai/draft`, {}, abort.signal);
      await readEvents(response, (event) => {
        if (current.state !== "streaming") return;
        if (event.type === "progress") {
          update({ stages: [...current.stages.filter((s) => s.stage !== event.stage), event] });
        } else if (event.type === "delta") {
          update({ text: current.text + (event.text || "") });
        } else if (event.type === "final") {
          update({ state: "final", final: event });
          if (event.text) onDraft(event.text);
        } else if (event.type === "error") {
          update({ state: "error", message: event.message || "", retryable: event.retryable !== false });
        }
      });
      if (current.state === "streaming") update({ state: "error", message: "", retryable: true }); // ended early
    } catch (error) {
      if (abort.signal.aborted) update({ state: "cancelled" });
      else if (error.status) update({ state: "refused", error });
      else update({ state: "error", error, message: "", retryable: true });
    } finally {
      if (controller.current === abort) controller.current = null;
    }
  }

  const cancel = () => controller.current?.abort();
  const dismiss = () => { controller.current = null; setRun({ state: "idle" }); };
  const streaming = run.state === "streaming";
  const final = run.final;

  return html`
    <section class=${`ai-panel ${run.state}`} id="ai-panel" data-state=${run.state} aria-label=${t("ai.panel")}>
      <div class="ai-bar">
        <span class="ai-title">
          <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 3l1.8 4.7L18.5 9.5l-4.7 1.8L12 16l-1.8-4.7L5.5 9.5l4.7-1.8z" /><path d="M18 15l.8 2.2L21 18l-2.2.8L18 21l-.8-2.2L15 18l2.2-.8z" /></svg>
          ${t("ai.panel")}
        </span>
        ${streaming ? html`
          <button type="button" class="button" id="ai-cancel" onClick=${cancel}>${t("ai.cancel")}</button>` : ""}
        ${["idle", "final", "cancelled"].includes(run.state) ? html`
          <button type="button" class="button ai-button" id="ai-draft-button" onClick=${start}
                  title=${t("ai.draftHint")}>${run.state === "idle" ? t("ai.draftButton") : t("ai.again")}</button>` : ""}
        ${run.state !== "idle" && !streaming ? html`
          <button type="button" class="icon-button small" aria-label=${t("ai.dismiss")} title=${t("ai.dismiss")}
                  onClick=${dismiss}>×</button>` : ""}
      </div>
      ${run.state === "idle" && auto ? html`
        <div class="ai-auto" id="ai-auto" role="status">
          ${auto.skipped !== undefined ? html`<p class="ai-note">${auto.skipped === "budget spent" ? t("ai.budgetSpent") : t("ai.autoSkipped")}</p>` : html`
            <p class="ai-note"><span class="ai-caret" aria-hidden="true"></span> ${t("ai.autoWriting")}
              ${auto.stage && has(`ai.stage.${auto.stage}`) && auto.stage !== "found" ? html` · ${t(`ai.stage.${auto.stage}`)}` : ""}</p>
            ${auto.text ? html`<p class="ai-draft-text text">${auto.text.replace(MARKERS, "")}</p>` : ""}`}
        </div>` : ""}
      ${run.state === "idle" ? "" : html`
        <div class="ai-body">
          ${run.stages?.length ? html`<${Stages} stages=${run.stages} streaming=${streaming} />` : ""}
          ${streaming && !run.stages?.length ? html`<p class="muted" role="status">${t("ai.starting")}</p>` : ""}
          ${streaming || (run.state !== "final" && run.text) ? html`
            <p class="ai-draft-text text" id="ai-draft-text" ref=${textBox} aria-busy=${streaming}
               aria-label=${t("ai.draftText")}>${(run.text || "").replace(MARKERS, "")}${streaming ? html`<span class="ai-caret" aria-hidden="true"></span>` : ""}</p>` : ""}
          ${run.state === "final" ? html`
            <div class="ai-final" id="ai-final">
              <div class="ai-badges">
                <span class="chip ai-chip" data-handler=${final.handler}>${named("ai.handler", final.handler)}</span>
                ${final.declined ? html`<span class="chip warning" id="ai-declined">${t("ai.declined")}</span>` : ""}
                ${final.handoff ? html`<span class="chip danger" id="ai-handoff">${t("ai.handoff")}</span>` : ""}
              </div>
              <p class="ai-note" role="status">${final.text ? t("ai.inComposer") : t("ai.empty")}</p>
              <${Citations} citations=${final.citations} id="ai-sources" />
            </div>` : ""}
          ${run.state === "cancelled" ? html`<p class="ai-note" role="status">${t("ai.cancelled")}</p>` : ""}
          ${run.state === "refused" ? html`<p class="form-error" role="alert" id="ai-error">${refusal(run.error)}</p>` : ""}
          ${run.state === "error" ? html`
            <div class="form-error" role="alert" id="ai-error">
              <p>${run.error && !run.error.status ? t("error.network") : t("ai.failed")}</p>
              ${run.message ? html`<p class="ai-error-detail">${run.message}</p>` : ""}
            </div>` : ""}
          ${run.state === "error" || run.state === "refused" ? html`
            <button type="button" class="button" id="ai-retry" onClick=${start}>${t("ai.retry")}</button>` : ""}
        </div>`}
    </section>`;
}
