// Small DOM and formatting helpers. Everything the server sends is put on the page as text (never as HTML),
// so an order's fields cannot inject markup.

/** h("p", {class: "x", testid: "y", onclick: fn}, "text", child) → an element. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export const STATUSES = ["pending", "routing", "building", "submitted", "confirmed", "failed", "cancelled"];
export const TERMINAL = new Set(["confirmed", "failed", "cancelled"]);
export const CANCELLABLE = new Set(["pending", "routing", "building"]);
export const DEX_NAMES = { raydium: "Raydium", meteora: "Meteora" };

/** The coloured status badge; the status is always written out, colour only repeats it. */
export function statusBadge(status, testid = "order-status") {
  return h("span", { class: `badge status-${status}`, testid, dataset: { status } }, status);
}

const clockFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  fractionalSecondDigits: 3,
  hour12: false,
});

/** "14:03:07.512" in the viewer's time zone. */
export function clock(iso) {
  return clockFormat.format(new Date(iso));
}

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });

export function dateTime(iso) {
  return dateTimeFormat.format(new Date(iso));
}

export function shortId(id) {
  return id.slice(0, 8);
}

export function seconds(ms) {
  return `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
}

/**
 * A percentage typed by the user ("1", "0.01") as the API's `slippage` fraction ("0.01", "0.0001"), or
 * null if it is not a plain decimal. The point is moved on the digits rather than divided as a float, so
 * what is sent is exactly what was typed (0.07 / 100 is 0.0007000000000000001 in floating point).
 */
export function percentToFraction(text) {
  const match = /^(\d+)(?:\.(\d+))?$/.exec(text.trim());
  if (!match) return null;
  const integer = match[1].padStart(2, "0");
  const whole = integer.slice(0, -2).replace(/^0+/, "") || "0";
  const fraction = (integer.slice(-2) + (match[2] ?? "")).replace(/0+$/, "");
  return fraction ? `${whole}.${fraction}` : whole;
}

/** An Idempotency-Key: crypto.randomUUID() where the page is a secure context, else the same from getRandomValues. */
export function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID exists only in secure contexts (https, localhost); over plain http to another host, build
  // the same version-4 UUID by hand.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
