// Admin page: the knowledge base's sources (files, FAQ CSVs, WordPress sites), their sync state and
// a live progress bar per source from the tenant's kb.progress / kb.synced events.
import { html, useState, useEffect, useCallback, useRef } from "../lib/html.js";
import { t, has } from "../lib/i18n.js";
import { api } from "../lib/api.js";
import { live } from "../lib/live.js";
import { errorText, fullTime } from "../lib/format.js";
import { safeUrl } from "./citations.js";

export const KB_ACCEPT = ".md,.markdown,.txt,.html,.htm,.pdf,.docx,.csv";
const POLL_MS = 3000;

function StateBadge({ state }) {
  return html`<span class=${`state-badge state-${state}`} data-state=${state}>${has(`kb.state.${state}`) ? t(`kb.state.${state}`) : state}</span>`;
}

function SyncProgress({ progress }) {
  const { stage, done = 0, total = 0 } = progress;
  const label = has(`kb.stage.${stage}`) ? t(`kb.stage.${stage}`) : stage;
  return html`
    <div class="kb-progress" data-stage=${stage}>
      <span class="kb-progress-label">${label}${total ? html` <span class="muted">${t("kb.progressCount", { done, total })}</span>` : ""}</span>
      ${total ? html`<progress max=${total} value=${Math.min(done, total)} aria-label=${label}></progress>`
        : html`<progress aria-label=${label}></progress>`}
    </div>`;
}

function Stats({ source }) {
  const s = source.stats;
  return html`
    <p class="kb-counts muted">
      ${t("kb.documents", { n: source.documents ?? 0 })} · ${t("kb.chunks", { n: source.chunks ?? 0 })}
      ${s && source.last_sync_at ? html`<br /><span class="kb-stats">${t("kb.statsLine", { added: s.added ?? 0, updated: s.updated ?? 0,
        unchanged: s.unchanged ?? 0, removed: s.removed ?? 0 })}</span>` : ""}
    </p>`;
}

function SourceCard({ source, progress, embedder, onChanged }) {
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [upload, setUpload] = useState(null);
  const href = safeUrl(source.url);

  async function act(work) {
    setBusy(true);
    setError(null);
    try {
      await work();
      onChanged();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }
  const sync = () => act(() => api.post(`/api/kb/sources/${source.id}/sync`));
  const remove = () => act(() => api.delete(`/api/kb/sources/${source.id}`));
  function replace(event) {
    const file = event.target.files?.[0];
    event.target.value = "";
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    setUpload(0);
    act(() => api.upload(`/api/kb/sources/${source.id}/file`, form, setUpload, "PUT")).finally(() => setUpload(null));
  }

  const syncing = source.state === "syncing" || Boolean(progress);
  // a file embedded by another embedder than the configured one: its stored text is embedded again
  const stale = source.kind !== "wordpress" && Boolean(embedder) && (source.embedders || []).some((e) => e !== embedder);
  return html`
    <li class="kb-source" data-source-id=${source.id} data-state=${source.state} data-kind=${source.kind}>
      <div class="kb-source-head">
        <span class="chip subtle">${has(`kb.kind.${source.kind}`) ? t(`kb.kind.${source.kind}`) : source.kind}</span>
        <strong class="kb-source-name">${source.name}</strong>
        <${StateBadge} state=${source.state} />
      </div>
      ${href ? html`<a class="kb-source-url" href=${href} target="_blank" rel="noopener noreferrer">${source.url}</a>` : ""}
      <p class="muted kb-last-sync">${source.last_sync_at ? t("kb.lastSync", { time: fullTime(source.last_sync_at) }) : t("kb.neverSynced")}</p>
      <${Stats} source=${source} />
      ${progress ? html`<${SyncProgress} progress=${progress} />` : ""}
      ${source.last_error ? html`<p class="kb-error" role="note"><strong>${t("kb.lastError")}</strong> <span>${source.last_error}</span></p>` : ""}
      ${upload !== null ? html`<progress class="kb-upload-progress" max="1" value=${upload} aria-label=${t("kb.uploading")}></progress>` : ""}
      <div class="form-error" role="alert">${error ? errorText(error) : ""}</div>
      <div class="kb-actions">
        ${confirming ? html`
          <span class="kb-confirm" role="group" aria-label=${t("kb.remove")}>
            <span>${t("kb.removeConfirm", { name: source.name })}</span>
            <button type="button" class="button danger" onClick=${remove} disabled=${busy}>${t("kb.removeYes")}</button>
            <button type="button" class="button ghost" onClick=${() => setConfirming(false)}>${t("kb.removeNo")}</button>
          </span>` : html`
          ${source.kind === "wordpress" || stale ? html`
            <button type="button" class="button kb-sync" onClick=${sync} disabled=${busy || syncing}
                    title=${stale ? t("kb.reembedHint", { embedder }) : null}>${t(stale ? "kb.reembed" : "kb.syncNow")}</button>` : ""}
          ${source.kind !== "wordpress" ? html`
            <label class="button kb-replace">
              ${t("kb.replace")}
              <input type="file" class="visually-hidden" accept=${source.kind === "faq" ? ".csv" : KB_ACCEPT}
                     onChange=${replace} disabled=${busy || syncing} />
            </label>` : ""}
          <button type="button" class="button ghost kb-remove" onClick=${() => setConfirming(true)} disabled=${busy}>${t("kb.remove")}</button>`}
      </div>
    </li>`;
}

function AddSource({ onAdded }) {
  const [file, setFile] = useState(null);
  const [fileName, setFileName] = useState("");
  const [url, setUrl] = useState("");
  const [siteName, setSiteName] = useState("");
  const [upload, setUpload] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const fileInput = useRef(null);

  async function addFile(event) {
    event.preventDefault();
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    if (fileName.trim()) form.append("name", fileName.trim());
    setBusy(true);
    setError(null);
    setUpload(0);
    try {
      onAdded((await api.upload("/api/kb/sources", form, setUpload))?.source);
      setFile(null);
      setFileName("");
      if (fileInput.current) fileInput.current.value = "";
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
      setUpload(null);
    }
  }

  async function addSite(event) {
    event.preventDefault();
    if (!url.trim()) return;
    setBusy(true);
    setError(null);
    try {
      const body = { kind: "wordpress", url: url.trim() };
      if (siteName.trim()) body.name = siteName.trim();
      onAdded((await api.post("/api/kb/sources", body))?.source);
      setUrl("");
      setSiteName("");
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return html`
    <div class="kb-add">
      <form class="admin-card" id="kb-upload-form" onSubmit=${addFile}>
        <h3>${t("kb.addFile")}</h3>
        <p class="muted">${t("kb.addFileHint")}</p>
        <div class="field">
          <span id="kb-file-label">${t("kb.file")}</span>
          <div class="file-pick">
            <label class="button">
              ${t("kb.chooseFile")}
              <input type="file" class="visually-hidden" id="kb-file" ref=${fileInput} accept=${KB_ACCEPT}
                     aria-labelledby="kb-file-label" onChange=${(e) => setFile(e.target.files?.[0] || null)} />
            </label>
            <span class="file-pick-name" id="kb-file-chosen">${file ? file.name : t("kb.noFile")}</span>
          </div>
        </div>
        <label class="field">
          <span>${t("kb.nameOptional")}</span>
          <input type="text" id="kb-file-name" value=${fileName} maxlength="200" onInput=${(e) => setFileName(e.target.value)} />
        </label>
        ${upload !== null ? html`<progress max="1" value=${upload} aria-label=${t("kb.uploading")}></progress>` : ""}
        <div class="row-end"><button type="submit" class="button primary" id="kb-upload" disabled=${busy || !file}>${t("kb.upload")}</button></div>
      </form>
      <form class="admin-card" id="kb-wordpress-form" onSubmit=${addSite}>
        <h3>${t("kb.addSite")}</h3>
        <p class="muted">${t("kb.addSiteHint")}</p>
        <label class="field">
          <span>${t("kb.siteUrl")}</span>
          <input type="url" id="kb-wordpress-url" value=${url} required placeholder="https://" inputmode="url"
                 onInput=${(e) => setUrl(e.target.value)} />
        </label>
        <label class="field">
          <span>${t("kb.nameOptional")}</span>
          <input type="text" id="kb-wordpress-name" value=${siteName} maxlength="200" onInput=${(e) => setSiteName(e.target.value)} />
        </label>
        <div class="row-end"><button type="submit" class="button primary" id="kb-add-site" disabled=${busy || !url.trim()}>${t("kb.addSiteButton")}</button></div>
      </form>
      <div class="form-error" role="alert" id="kb-add-error">${error ? errorText(error) : ""}</div>
    </div>`;
}

export function KnowledgeAdmin() {
  const [sources, setSources] = useState(null); // null while loading
  const [embedder, setEmbedder] = useState(null); // what chunks are stored by now
  const [error, setError] = useState(null);
  const [progress, setProgress] = useState({}); // source id → the last kb.progress event
  const alive = useRef(true);

  const load = useCallback(async () => {
    try {
      const body = await api.get("/api/kb/sources");
      if (!alive.current) return;
      setSources(body.items || []);
      setEmbedder(body.embedder || null);
      setError(null);
    } catch (err) {
      if (alive.current) setError(err);
    }
  }, []);

  useEffect(() => {
    alive.current = true;
    load();
    const offs = [
      live.on("kb.progress", (data) => {
        setProgress((p) => ({ ...p, [data.source_id]: data }));
        setSources((list) => list && list.map((s) => (String(s.id) === String(data.source_id) && s.state !== "syncing"
          ? { ...s, state: "syncing" } : s)));
      }),
      live.on("kb.synced", (data) => {
        setProgress((p) => {
          const next = { ...p };
          delete next[data.source_id];
          return next;
        });
        load();
      }),
      live.on("reconnected", load),
      live.on("resync", load),
    ];
    return () => { alive.current = false; offs.forEach((off) => off()); };
  }, [load]);

  // events are hints: while a sync runs, read the truth again now and then (one read at a time)
  useEffect(() => {
    if (!sources?.some((s) => s.state === "syncing")) return;
    const timer = setTimeout(load, POLL_MS);
    return () => clearTimeout(timer);
  }, [sources]);

  function added(source) {
    if (source) setSources((list) => [source, ...(list || []).filter((s) => s.id !== source.id)]);
    load();
  }

  const unavailable = error && (error.status === 404 || error.status === 405);
  return html`
    <section class="admin-page" id="knowledge-page" aria-labelledby="knowledge-title">
      <header class="admin-head">
        <h1 id="knowledge-title">${t("kb.title")}</h1>
        <p class="muted">${t("kb.subtitle")}</p>
      </header>
      ${unavailable ? html`<p class="admin-card form-error" role="alert" id="kb-unavailable">${t("kb.unavailable")}</p>` : html`
        <h2 class="admin-section">${t("kb.sources")}</h2>
        ${error ? html`<p class="form-error" role="alert">${errorText(error)}</p>` : ""}
        ${sources === null && !error ? html`<p class="empty" role="status">${t("app.loading")}</p>` : ""}
        ${sources && !sources.length ? html`<p class="empty" id="kb-empty">${t("kb.empty")}</p>` : ""}
        ${sources?.length ? html`
          <ul class="kb-sources" id="kb-sources">
            ${sources.map((s) => html`<${SourceCard} key=${s.id} source=${s} progress=${progress[s.id]} embedder=${embedder} onChanged=${load} />`)}
          </ul>` : ""}
        <h2 class="admin-section">${t("kb.add")}</h2>
        <${AddSource} onAdded=${added} />`}
    </section>`;
}
