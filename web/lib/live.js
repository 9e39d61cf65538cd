// One WebSocket per page to /ws. It remembers the last event id and, after any drop, reconnects with
// backoff and resumes from it; {"type":"resync"} (we were away too long) tells the page to reload.
// Events are hints: listeners fetch the truth over REST.
import { accessToken, refresh } from "./api.js";

const PING_MS = 25_000;
const MAX_BACKOFF_MS = 15_000;

export class Live {
  constructor() {
    this.state = "offline"; // connecting | live | reconnecting | offline
    this.lastId = null;
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.pinger = null;
    this.stopped = true;
    this.connectedOnce = false;
    this.listeners = new Map(); // type → Set, "*" for every event
    this.stateListeners = new Set();
    // the browser knows first when the network is gone: drop the socket (it would linger half-open)
    // and wait for the network instead of retrying into the void
    window.addEventListener("online", () => this.stopped || this.reconnectNow());
    window.addEventListener("offline", () => {
      if (this.stopped) return;
      clearTimeout(this.timer);
      if (this.socket) this.socket.close(4000);
      this.setState("offline");
    });
  }

  on(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(listener);
    return () => this.listeners.get(type).delete(listener);
  }

  onState(listener) {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    for (const listener of this.stateListeners) listener(state);
  }

  emit(type, event) {
    for (const key of [type, "*"]) for (const listener of this.listeners.get(key) ?? []) {
      try {
        listener(event);
      } catch (error) {
        console.error("live listener", error);
      }
    }
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000);
      this.socket = null;
    }
    this.lastId = null;
    this.connectedOnce = false;
    this.setState("offline");
  }

  send(frame) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  reconnectNow() {
    clearTimeout(this.timer);
    this.attempt = 0;
    if (this.socket) this.socket.close(4000);
    else this.open();
  }

  open() {
    clearTimeout(this.timer);
    const token = accessToken();
    if (!token) {
      refresh().then(() => this.open(), () => this.scheduleReconnect());
      return;
    }
    this.setState(this.attempt === 0 && this.lastId === null ? "connecting" : "reconnecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const params = new URLSearchParams({ token });
    if (this.lastId) params.set("last_id", this.lastId);
    const socket = new WebSocket(`${scheme}://${location.host}/ws?${params}`);
    this.socket = socket;
    socket.onmessage = (message) => this.receive(message.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      clearInterval(this.pinger);
      if (this.stopped) return;
      if (event.code === 4401) {
        // our token expired or was refused: renew it, then come back
        refresh().then(() => this.scheduleReconnect(0), () => this.setState("offline"));
        return;
      }
      this.scheduleReconnect();
    };
  }

  scheduleReconnect(delay) {
    if (this.stopped) return;
    if (navigator.onLine === false) {
      this.setState("offline"); // the "online" event reconnects
      return;
    }
    this.setState("reconnecting");
    const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.open(), delay ?? backoff * (0.75 + Math.random() / 2));
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "hello") {
      const resumed = this.connectedOnce;
      this.connectedOnce = true;
      if (!this.lastId && frame.last_id) this.lastId = frame.last_id;
      this.attempt = 0;
      this.setState("live");
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: "ping" }), PING_MS);
      if (resumed) this.emit("reconnected", frame);
      return;
    }
    if (frame.type === "pong") return;
    if (frame.type === "resync") {
      if (frame.last_id) this.lastId = frame.last_id;
      this.emit("resync", frame);
      return;
    }
    if (frame.id) this.lastId = frame.id;
    this.emit(frame.type, frame.data ?? {});
  }
}

export const live = new Live();
