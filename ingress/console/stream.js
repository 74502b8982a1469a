// One order's live events over the WebSocket at /api/orders/execute, resumed after any abnormal close.
//
// Events are numbered by `seq` (1, 2, 3 … with no gap). The stream hands each one to `onEvent` exactly
// once and in order: on reconnect it asks for `lastSeq=<the last one shown>`, drops anything at or below
// it (a resend), and if a live event ever skips a number it reconnects to fetch what is missing.

import { apiKey } from "./api.js";
import { TERMINAL } from "./dom.js";

// The server refused the request itself (malformed id, unknown order): asking again cannot help.
const FINAL_CODES = new Set([4400, 4404]);
const RESYNC_CODE = 4000; // our own close, to ask again from lastSeq after a gap
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

export class OrderStream {
  /**
   * handlers: onEvent(event, {live}), onSnapshot(snapshot), onState(state, detail) with state one of
   * "connecting", "live", "reconnecting" (detail: delay in ms), "closed", "error" (detail: message).
   */
  constructor(orderId, handlers) {
    this.orderId = orderId;
    this.handlers = handlers;
    this.lastSeq = 0;
    this.finished = false;
    this.stopped = false;
    this.resync = false;
    this.failures = 0; // connections in a row that ended without a snapshot (for the backoff)
    this.lastError = null;
    this.ws = null;
    this.timer = null;
  }

  start() {
    this.#connect();
  }

  /** Stop for good (the card was closed). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.ws?.close(1000);
  }

  #url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ orderId: this.orderId });
    if (this.lastSeq > 0) query.set("lastSeq", String(this.lastSeq));
    return `${scheme}//${location.host}/api/orders/execute?${query}`;
  }

  /** With an API key, the subprotocols `bearer` (the one the engine selects) and `bearer.<key>`. */
  #protocols() {
    const key = apiKey();
    return key ? ["bearer", `bearer.${key}`] : [];
  }

  #connect() {
    this.handlers.onState("connecting");
    const ws = new WebSocket(this.#url(), this.#protocols());
    this.ws = ws;
    ws.onmessage = (message) => {
      if (ws === this.ws) this.#receive(JSON.parse(message.data));
    };
    ws.onclose = (event) => {
      if (ws === this.ws) this.#closed(event);
    };
  }

  #receive(message) {
    switch (message.type) {
      case "snapshot":
        this.failures = 0;
        this.handlers.onState("live");
        for (const event of message.logs) this.#offer(event, false);
        this.handlers.onSnapshot(message);
        if (TERMINAL.has(message.status) && message.seq <= this.lastSeq) this.finished = true;
        break;
      case "status": {
        const { type, ...event } = message;
        this.#offer(event, true);
        break;
      }
      case "ping":
        this.ws.send(JSON.stringify({ type: "pong" }));
        break;
      case "error":
        this.lastError = message; // the close follows
        break;
      default:
        break; // a newer server's message type: ignore it
    }
  }

  #offer(event, live) {
    if (event.seq <= this.lastSeq) return; // already shown: resent after a reconnect
    if (live && event.seq > this.lastSeq + 1) {
      // A live event skipped a number: reconnect and ask for everything after the last one shown. (A
      // snapshot may start after a gap only when the server's log no longer holds the older events.)
      this.resync = true;
      this.ws.close(RESYNC_CODE, "resync");
      return;
    }
    this.lastSeq = event.seq;
    if (TERMINAL.has(event.status)) this.finished = true;
    this.handlers.onEvent(event, { live });
  }

  #closed(event) {
    if (this.stopped) return;
    if (this.finished) {
      this.handlers.onState("closed");
      return;
    }
    if (FINAL_CODES.has(event.code)) {
      this.handlers.onState("error", this.lastError?.message ?? `closed with ${event.code}`);
      return;
    }
    // Anything else (a dropped connection 1006, a restart 1001/1011/1012, too slow 1013, a missed
    // heartbeat 4408, a refused handshake, or a 1000 before the order finished): the order is still
    // going, so resume after lastSeq, with an exponential backoff and jitter so that many consoles do not
    // come back at the same instant.
    let delay = 0;
    if (this.resync) {
      this.resync = false;
    } else {
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.failures);
      delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
      this.failures += 1;
    }
    this.handlers.onState("reconnecting", delay);
    this.timer = setTimeout(() => this.#connect(), delay);
  }
}
