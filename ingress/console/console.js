// The console's entry point: the order form, the followed orders (one card and one WebSocket each), and
// the recent-orders list, wired together.

import { apiKey, call, cancelOrder, errorText, needsKey, retryAfterSeconds, storeApiKey } from "./api.js";
import { h, newIdempotencyKey, percentToFraction, shortId } from "./dom.js";
import { OrderCard } from "./order-card.js";
import { OrdersList } from "./orders-list.js";
import { OrderStream } from "./stream.js";

const REFRESH_MS = 10000; // the list's own refresh; a followed order's change refreshes it sooner
const CHANGE_REFRESH_DELAY_MS = 400; // several changes in a burst make one refresh

const $ = (id) => document.getElementById(id);
const form = $("order-form");
const fields = { tokenIn: $("token-in"), tokenOut: $("token-out"), amountIn: $("amount"), slippage: $("slippage") };
const submit = $("submit");
const formMessage = $("form-message");
const cooldownBox = $("cooldown");
const liveOrders = $("live-orders");
const liveEmpty = $("live-empty");
const listFeedback = $("list-feedback");
const keyInput = $("api-key");
const keyMessage = $("key-message");

const followed = new Map(); // orderId → {card, stream}
let tokensLoaded = false;
let coolingUntil = 0;
let cooldownTimer = null;
let refreshTimer = null;
// The key and body of a submission whose outcome is unknown (no answer came, or a 503): sending the same
// order again reuses its key, so the engine replays the order if it was placed and places it otherwise.
let unsure = null;

const list = new OrdersList(
  { body: $("orders-body"), filter: $("status-filter"), more: $("more"), message: $("list-message") },
  {
    onFollow: (order) => follow(order.orderId, order),
    onCancel: (orderId) => cancel(orderId),
    isFollowed: (orderId) => followed.has(orderId),
  },
);

// ---- the order form ----

function say(text, kind = "info") {
  formMessage.textContent = text;
  formMessage.dataset.kind = kind;
}

function updateSubmit(busy = false) {
  submit.disabled = busy || !tokensLoaded || Date.now() < coolingUntil;
}

async function loadTokens() {
  let answer;
  try {
    answer = await call("GET", "/api/tokens");
  } catch {
    answer = null;
  }
  if (needsKey(answer)) {
    say(`This engine needs an API key (${answer.data?.error ?? answer.status}): enter yours above.`, "error");
    keyInput.focus();
    return;
  }
  if (answer?.status !== 200) {
    say(`Could not load the token list (${answer ? errorText(answer) : "no answer"}). Reload to try again.`, "error");
    return;
  }
  const { tokens } = answer.data;
  for (const [select, preferred, fallback] of [
    [fields.tokenIn, "SOL", 0],
    [fields.tokenOut, "USDC", 1],
  ]) {
    select.replaceChildren(...tokens.map((token) => h("option", { value: token }, token)));
    select.value = tokens.includes(preferred) ? preferred : tokens[fallback];
  }
  tokensLoaded = true;
  updateSubmit();
}

function clearFieldErrors() {
  for (const [name, input] of Object.entries(fields)) {
    input.removeAttribute("aria-invalid");
    $(`error-${name}`).textContent = "";
  }
}

function fieldError(name, text) {
  const slot = $(`error-${name}`);
  slot.textContent = slot.textContent ? `${slot.textContent} ${text}` : text;
  fields[name].setAttribute("aria-invalid", "true");
}

function sameOrder(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

async function place() {
  clearFieldErrors();
  const slippage = percentToFraction(fields.slippage.value);
  if (slippage === null) {
    fieldError("slippage", "Enter a percentage such as 1 or 0.5.");
    say("Check the highlighted field.", "error");
    fields.slippage.focus();
    return;
  }
  const body = {
    type: "market",
    tokenIn: fields.tokenIn.value,
    tokenOut: fields.tokenOut.value,
    amountIn: fields.amountIn.value.trim(),
    slippage,
  };
  // A fresh Idempotency-Key for each submission, except to resend an order whose outcome is unknown.
  const key = unsure && sameOrder(unsure.body, body) ? unsure.key : newIdempotencyKey();
  unsure = null;
  updateSubmit(true);
  say("Placing the order…");
  let answer;
  try {
    answer = await call("POST", "/api/orders/execute", { body, headers: { "Idempotency-Key": key } });
  } catch {
    unsure = { key, body };
    say(
      "No answer from the engine, so the order may or may not have been placed. Submit the same order " +
        "again to find out: it cannot be placed twice.",
      "error",
    );
    return;
  } finally {
    updateSubmit();
  }
  onPlaced(answer, body, key);
}

function onPlaced(answer, body, key) {
  const envelope = answer.data ?? {};
  switch (answer.status) {
    case 202: {
      const replayed = answer.headers.get("idempotent-replayed") === "true";
      follow(envelope.orderId, { ...body, status: envelope.status });
      say(
        `Order ${shortId(envelope.orderId)} accepted${replayed ? " (it had been placed already)" : ""}: ` +
          "its progress is under Live orders.",
        "ok",
      );
      refreshSoon();
      return;
    }
    case 400:
      showDetails(envelope, body);
      return;
    case 409:
      if (envelope.error === "idempotency_in_progress") {
        unsure = { key, body };
        startCooldown(retryAfterSeconds(answer), "The same order is still being placed");
      } else {
        say(
          "This submission's Idempotency-Key was already used for a different order, so nothing was " +
            `placed (${envelope.error ?? "conflict"}). Submit again to send it with a new key.`,
          "error",
        );
      }
      return;
    case 429:
      startCooldown(
        retryAfterSeconds(answer),
        envelope.error === "queue_full"
          ? "The engine is at capacity and did not take the order (queue_full)"
          : "Too many orders from this client (rate_limited): the order was not placed",
      );
      return;
    case 401:
    case 403:
      say(`The order was not placed: ${errorText(answer)}. Enter a valid API key above.`, "error");
      return;
    case 503:
      unsure = { key, body };
      say(
        "The engine is briefly unavailable (service_unavailable): a service it needs did not answer. " +
          "Submit the same order again in a moment; it cannot be placed twice.",
        "error",
      );
      return;
    default:
      say(`The order was not placed: ${errorText(answer)}`, "error");
  }
}

/** A 400's details next to the fields they name; the others in the form's message. */
function showDetails(envelope, body) {
  const elsewhere = [];
  for (const { field, message } of envelope.details ?? []) {
    const name = field === "slippageBps" ? "slippage" : field;
    if (name in fields) {
      fieldError(name, name === "slippage" ? `${message} (sent as the fraction ${body.slippage}).` : `${message}.`);
    } else {
      elsewhere.push(`${field}: ${message}`);
    }
  }
  say(["The engine refused the order (invalid_body).", ...elsewhere].join(" "), "error");
  const first = Object.values(fields).find((input) => input.getAttribute("aria-invalid") === "true");
  first?.focus();
}

/** The submit button stays disabled, with a visible countdown, until the server's Retry-After has passed. */
function startCooldown(seconds, reason) {
  coolingUntil = Date.now() + seconds * 1000;
  clearInterval(cooldownTimer);
  say(`${reason}.`, "error");
  const count = $("cooldown-seconds");
  const tick = () => {
    const left = Math.ceil((coolingUntil - Date.now()) / 1000);
    if (left > 0) {
      count.textContent = String(left);
      cooldownBox.hidden = false;
    } else {
      clearInterval(cooldownTimer);
      cooldownBox.hidden = true;
      say("You can submit again.");
    }
    updateSubmit();
  };
  tick();
  cooldownTimer = setInterval(tick, 250);
}

// ---- followed orders ----

function follow(orderId, summary = {}) {
  const existing = followed.get(orderId);
  if (existing) {
    existing.card.element.scrollIntoView({ block: "nearest" });
    existing.card.element.focus();
    return;
  }
  const card = new OrderCard(orderId, summary, {
    onCancel: () => cancel(orderId),
    onDismiss: () => unfollow(orderId),
  });
  card.element.tabIndex = -1; // so that "Show" in the list can move the focus to it
  const whenChanged = (update) => {
    const before = card.status;
    update();
    if (card.status !== before) {
      list.updateStatus(orderId, card.status);
      refreshSoon();
    }
  };
  const stream = new OrderStream(orderId, {
    onEvent: (event, info) => whenChanged(() => card.apply(event, info)),
    onSnapshot: (message) => whenChanged(() => card.snapshot(message)),
    onState: (state, detail) => card.connection(state, detail),
  });
  followed.set(orderId, { card, stream });
  liveOrders.prepend(card.element);
  liveEmpty.hidden = true;
  list.updateFollowed();
  stream.start();
}

function unfollow(orderId) {
  const entry = followed.get(orderId);
  if (!entry) return;
  entry.stream.stop();
  entry.card.dispose();
  entry.card.element.remove();
  followed.delete(orderId);
  liveEmpty.hidden = followed.size > 0;
  list.updateFollowed();
  $("live-heading").focus(); // the focused button went with the card
}

async function cancel(orderId) {
  const card = followed.get(orderId)?.card;
  const tell = (text, kind) => {
    if (card) card.message(text, kind);
    else {
      listFeedback.textContent = `Order ${shortId(orderId)}: ${text}`;
      listFeedback.dataset.kind = kind;
    }
  };
  card?.setBusy(true);
  tell("Cancelling…", "info");
  let answer;
  try {
    answer = await cancelOrder(orderId);
  } catch {
    tell("No answer from the engine, so the order may not be cancelled. Try again.", "error");
    return;
  } finally {
    card?.setBusy(false);
  }
  const envelope = answer.data ?? {};
  if (answer.status === 200) {
    // The card shows `cancelled` when its event arrives on the socket, in its place in the timeline.
    tell("Cancelled: it will not be sent to a venue.", "ok");
    list.updateStatus(orderId, envelope.status ?? "cancelled");
  } else if (answer.status === 409 && envelope.error === "too_late_to_cancel") {
    tell(
      "Too late to cancel: the order has already been sent to the venue (too_late_to_cancel). " +
        "It will end confirmed or failed.",
      "error",
    );
  } else if (answer.status === 404) {
    tell("Not found: no such order among this client's orders (not_found).", "error");
  } else if (answer.status === 429) {
    tell(`Too many requests: try again in ${retryAfterSeconds(answer)} s (${envelope.error}).`, "error");
  } else {
    tell(`Could not cancel: ${errorText(answer)}`, "error");
  }
  refreshSoon();
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => list.refresh(), CHANGE_REFRESH_DELAY_MS);
}

// ---- the API key ----

function describeKey(text, kind = "info") {
  keyMessage.textContent =
    text ?? (apiKey() ? "A key is saved in this browser and sent with every request." : "No key saved.");
  keyMessage.dataset.kind = kind;
}

function useKey(value) {
  if (!storeApiKey(value)) {
    describeKey("That key cannot be sent as typed (no spaces or accents), or this browser refused to store it.", "error");
    return;
  }
  keyInput.value = ""; // the key is not shown again; it stays in this browser's storage
  describeKey();
  if (!tokensLoaded) {
    say("");
    loadTokens();
  }
  list.refresh();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  useKey(keyInput.value);
});
$("forget-key").addEventListener("click", () => useKey(""));

// ---- start ----

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!submit.disabled) place();
});
$("swap-pair").addEventListener("click", () => {
  [fields.tokenIn.value, fields.tokenOut.value] = [fields.tokenOut.value, fields.tokenIn.value];
});
$("refresh").addEventListener("click", () => list.refresh());
setInterval(() => {
  if (document.visibilityState === "visible") list.refresh();
}, REFRESH_MS);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") list.refresh();
});

describeKey();
updateSubmit();
loadTokens();
list.refresh();
