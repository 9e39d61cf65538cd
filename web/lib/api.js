// The REST client. The access token lives only in this module's memory; the refresh token is an
// httpOnly cookie the browser sends to /api/auth/* by itself.

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || null;
    this.retryAfter = retryAfter;
  }
}

let access = null; // {token, expiresAt (ms)}
let user = null;
let refreshing = null;
let renewTimer = null;
const sessionListeners = new Set();
// Not a secret: only whether a refresh cookie is likely there, so a first visit skips a certain 401.
const SESSION_HINT = "parlo.session";

export const maybeSignedIn = () => localStorage.getItem(SESSION_HINT) === "1";

/** `listener(user|null)` whenever the session starts, renews into another user, or ends. */
export function onSession(listener) {
  sessionListeners.add(listener);
  return () => sessionListeners.delete(listener);
}

export const currentUser = () => user;
export const accessToken = () => access?.token ?? null;

function startSession(body) {
  const changed = user?.id !== body.user.id;
  access = { token: body.access_token, expiresAt: Date.parse(body.expires_at) };
  user = body.user;
  localStorage.setItem(SESSION_HINT, "1");
  clearTimeout(renewTimer);
  // renew a minute early (or halfway, for short lives) so requests rarely meet an expired token
  const life = access.expiresAt - Date.now();
  renewTimer = setTimeout(() => refresh().catch(() => {}), Math.max(5_000, Math.min(life - 60_000, life / 2)));
  if (changed) for (const listener of sessionListeners) listener(user);
}

function endSession() {
  const had = user !== null;
  access = null;
  user = null;
  localStorage.removeItem(SESSION_HINT);
  clearTimeout(renewTimer);
  if (had) for (const listener of sessionListeners) listener(null);
}

async function parse(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) throw new ApiError(response.status, body, Number(response.headers.get("retry-after")) || null);
  return body;
}

export async function login(tenant, email, password) {
  const response = await fetch("/api/auth/login", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ tenant, email, password }),
  });
  startSession(await parse(response));
  return user;
}

/** Rotates the refresh cookie into a new access token; one rotation at a time (a second
 *  concurrent rotation would present an already-used token and revoke the whole family). */
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const response = await fetch("/api/auth/refresh", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      try {
        startSession(await parse(response));
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) endSession();
        throw error;
      }
      return user;
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

export async function logout() {
  try {
    await fetch("/api/auth/logout", { method: "POST", credentials: "same-origin" });
  } finally {
    endSession();
  }
}

function url(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, value);
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function authorised(method, target, init) {
  if (!access) await refresh();
  else if (access.expiresAt - Date.now() < 5_000) await refresh().catch(() => {});
  const send = () => fetch(target, { ...init, method, headers: { ...init.headers, authorization: `Bearer ${access.token}` } });
  let response = await send();
  if (response.status === 401) {
    await refresh(); // throws (and ends the session) when the refresh token is gone too
    response = await send();
  }
  return response;
}

/** `api.get("/api/conversations", {status: "open"})`, `api.post(path, json)`, … */
export const api = {
  async request(method, path, { json, query, form } = {}) {
    const init = { headers: {} };
    if (json !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form) {
      init.body = form;
    }
    return parse(await authorised(method, url(path, query), init));
  },
  get: (path, query) => api.request("GET", path, { query }),
  post: (path, json) => api.request("POST", path, { json: json ?? {} }),
  patch: (path, json) => api.request("PATCH", path, { json }),
  put: (path, json) => api.request("PUT", path, { json }),
  delete: (path) => api.request("DELETE", path),

  /** Raw bytes (media) with the bearer token, as a Blob. */
  async blob(path) {
    const response = await authorised("GET", path, { headers: {} });
    if (!response.ok) throw new ApiError(response.status, null, null);
    return response.blob();
  },

  /** A POST whose answer is a stream (Server-Sent Events): the Response, once its status is 2xx
   *  (otherwise an ApiError). `signal` aborts it, which closes the stream on the server too. */
  async stream(path, json, signal) {
    const init = { headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(json ?? {}), signal };
    const response = await authorised("POST", path, init);
    if (!response.ok) await parse(response);
    return response;
  },

  /** A multipart upload with progress (fetch cannot report upload progress; XHR can). */
  async upload(path, form, onProgress, method = "POST") {
    if (!access || access.expiresAt - Date.now() < 5_000) await refresh();
    const attempt = () =>
      new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open(method, path);
        xhr.setRequestHeader("authorization", `Bearer ${access.token}`);
        xhr.upload.onprogress = (event) => event.lengthComputable && onProgress?.(event.loaded / event.total);
        xhr.onload = () => resolve(xhr);
        xhr.onerror = () => reject(new TypeError("network error"));
        xhr.send(form);
      });
    let xhr = await attempt();
    if (xhr.status === 401) {
      await refresh();
      xhr = await attempt();
    }
    let body = null;
    try {
      body = JSON.parse(xhr.responseText);
    } catch {
      body = null;
    }
    if (xhr.status < 200 || xhr.status >= 300) {
      throw new ApiError(xhr.status, body, Number(xhr.getResponseHeader("retry-after")) || null);
    }
    return body;
  },
};
