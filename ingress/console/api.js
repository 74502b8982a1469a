// The HTTP side of the engine's API, on the page's own origin. Every error comes in one envelope:
// {error, message, details?, retryAfter?, correlationId}.
//
// An engine started with API_KEYS wants `Authorization: Bearer <key>` on every API request (401
// unauthorized without one, 403 forbidden for an unknown one). The console keeps the key the user enters in
// this browser's localStorage, sends it on every request, and offers it to the WebSocket as a subprotocol
// (stream.js): a browser cannot set headers on a WebSocket handshake.

const REQUEST_TIMEOUT_MS = 15000;
const KEY_STORAGE = "order-engine.api-key";
// What a key may contain to travel as a WebSocket subprotocol (an HTTP token); the engine's own keys do.
const KEY_CHARACTERS = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/** The stored API key, or "" (none, or storage refused by the browser). */
export function apiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) ?? "";
  } catch {
    return "";
  }
}

/** Stores `key` (or forgets the stored one when empty); false when it cannot be sent as given. */
export function storeApiKey(key) {
  const trimmed = key.trim();
  if (trimmed && !KEY_CHARACTERS.test(trimmed)) return false;
  try {
    if (trimmed) localStorage.setItem(KEY_STORAGE, trimmed);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    return false;
  }
  return true;
}

/** True for the answers that mean "no key, or not a key this engine knows". */
export function needsKey(answer) {
  return answer?.status === 401 || answer?.status === 403;
}

/**
 * Sends one request and returns {status, data, headers} for any HTTP answer (data: the parsed JSON, or
 * null). It throws only when no answer came: the network, or the timeout.
 */
export async function call(method, path, { body, headers = {} } = {}) {
  const init = {
    method,
    headers: { accept: "application/json", ...headers },
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  };
  const key = apiKey();
  if (key) init.headers.authorization = `Bearer ${key}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("content-type") ?? "";
  const data = type.includes("json") ? await response.json().catch(() => null) : null;
  return { status: response.status, data, headers: response.headers };
}

/** Seconds to wait before retrying a refused request: Retry-After, else the envelope's retryAfter. */
export function retryAfterSeconds(answer) {
  for (const value of [answer.headers.get("retry-after"), answer.data?.retryAfter]) {
    const n = Number(value);
    if (value !== null && value !== undefined && Number.isFinite(n) && n > 0) return Math.ceil(n);
  }
  return 1;
}

/** The envelope's message (with its code), or the bare status when the answer was not one. */
export function errorText(answer) {
  const envelope = answer.data;
  if (envelope && typeof envelope.message === "string") {
    return envelope.error ? `${envelope.message} (${envelope.error})` : envelope.message;
  }
  return `the server answered HTTP ${answer.status}`;
}

export function cancelOrder(orderId) {
  return call("DELETE", `/api/orders/${encodeURIComponent(orderId)}`);
}
