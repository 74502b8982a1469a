// The HTTP side of the engine's API, on the page's own origin. Every error comes in one envelope:
// {error, message, details?, retryAfter?, correlationId}.

const REQUEST_TIMEOUT_MS = 15000;

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
