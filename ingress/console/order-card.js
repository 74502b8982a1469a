// One followed order: its status, a timeline of its events, the two venues' quotes, retries with a live
// countdown, and the outcome. `apply` takes the order's events one at a time, in seq order (stream.js sees
// to that); everything shown is derived from them.

import {
  CANCELLABLE,
  DEX_NAMES,
  TERMINAL,
  clock,
  h,
  seconds,
  shortId,
  statusBadge,
} from "./dom.js";

const HAPPY_PATH = ["pending", "routing", "building", "submitted", "confirmed"];
const BPS = 10000;

export class OrderCard {
  /**
   * summary: what is known of the order besides its events ({tokenIn, tokenOut, amountIn, slippage}),
   * possibly empty; actions: {onCancel(card), onDismiss(card)}.
   */
  constructor(orderId, summary, actions) {
    this.orderId = orderId;
    this.summary = summary;
    this.status = summary.status ?? "pending";
    this.firstAt = null; // the first event's time: the timeline shows each step's time since it
    this.quotes = null; // the latest building event's quotes, by venue, and the venue chosen
    this.chosenDex = null;
    this.skewMs = null; // this browser's clock minus the server's, estimated from live events
    this.countdown = null;

    const titleId = `order-${orderId}`;
    this.badgeSlot = h("span", { class: "badge-slot" }, statusBadge(this.status));
    this.connectionText = h("span", { class: "connection", testid: "connection" }, "connecting…");
    this.timeline = h("ol", { class: "timeline", testid: "timeline", "aria-label": "Status steps" });
    this.retry = h("div", { class: "retry", testid: "retry", hidden: true });
    this.quoteBoxes = h("div", { class: "quotes", testid: "dex-quotes", hidden: true });
    this.outcome = h("div", { class: "outcome", testid: "outcome", hidden: true });
    this.cancelButton = h(
      "button",
      { type: "button", class: "danger", testid: "cancel-button", onclick: () => actions.onCancel(this) },
      "Cancel order",
    );
    this.messageText = h("p", { class: "card-message", testid: "card-message", role: "status" });
    this.element = h(
      "article",
      { class: "card", testid: "order-card", dataset: { orderId }, "aria-labelledby": titleId },
      h(
        "header",
        { class: "card-head" },
        h("h3", { id: titleId }, this.#title()),
        this.badgeSlot,
      ),
      h(
        "p",
        { class: "meta" },
        "Order ",
        h("code", { testid: "order-id", title: orderId }, orderId),
        " · ",
        this.connectionText,
      ),
      this.timeline,
      this.retry,
      this.quoteBoxes,
      this.outcome,
      h(
        "div",
        { class: "card-actions" },
        this.cancelButton,
        h(
          "button",
          {
            type: "button",
            class: "quiet",
            testid: "dismiss-button",
            "aria-label": `Stop following order ${shortId(orderId)}`,
            onclick: () => actions.onDismiss(this),
          },
          "Stop following",
        ),
      ),
      this.messageText,
    );
    this.element.dataset.status = this.status;
    this.#renderUpcoming();
    this.#renderCancel();
  }

  #title() {
    const { tokenIn, tokenOut, amountIn } = this.summary;
    if (!tokenIn) return `Order ${shortId(this.orderId)}`;
    return `${amountIn} ${tokenIn} → ${tokenOut}`;
  }

  /** One status event, the next by seq. */
  apply(event, { live }) {
    if (live) {
      // Live events arrive a few ms after `at`: the smallest gap seen is the closest estimate of how far
      // this browser's clock is from the server's (used for the retry countdown).
      const gap = Date.now() - Date.parse(event.at);
      this.skewMs = this.skewMs === null ? gap : Math.min(this.skewMs, gap);
    }
    this.firstAt ??= Date.parse(event.at);
    this.#setStatus(event.status);
    this.timeline.append(this.#step(event));
    if (event.quotes) {
      this.quotes = event.quotes;
      this.chosenDex = event.dex;
      this.#renderQuotes();
    }
    this.#renderRetry(event);
    this.#renderOutcome(event);
    this.#renderUpcoming();
  }

  /** The snapshot's current status, for an order whose events were all shown already. */
  snapshot(message) {
    this.#setStatus(message.status);
    this.#renderUpcoming();
  }

  connection(state, detail) {
    const text = {
      connecting: "connecting…",
      live: "live",
      reconnecting: `connection lost, reconnecting in ${seconds(detail ?? 0)}`,
      closed: "finished",
      error: `stream closed: ${detail}`,
    }[state];
    this.connectionText.textContent = text;
    this.connectionText.dataset.state = state;
  }

  message(text, kind = "info") {
    this.messageText.textContent = text;
    this.messageText.dataset.kind = kind;
  }

  setBusy(busy) {
    this.cancelButton.disabled = busy;
  }

  dispose() {
    clearInterval(this.countdown);
  }

  #setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.element.dataset.status = status;
    this.badgeSlot.replaceChildren(statusBadge(status));
    this.#renderCancel();
  }

  #renderCancel() {
    this.cancelButton.hidden = !CANCELLABLE.has(this.status);
  }

  #step(event) {
    const since = Date.parse(event.at) - this.firstAt;
    return h(
      "li",
      { class: `step step-${event.status}`, testid: "timeline-step", dataset: { status: event.status, seq: event.seq } },
      h("span", { class: "step-status" }, event.status),
      h("time", { datetime: event.at, title: event.at }, clock(event.at)),
      h("span", { class: "since" }, since > 0 ? `+${seconds(since)}` : ""),
      h("span", { class: "step-detail" }, this.#detail(event)),
    );
  }

  #detail(event) {
    const dex = event.dex ?? this.chosenDex; // only building and confirmed events name the venue
    const venue = DEX_NAMES[dex] ?? dex;
    switch (event.status) {
      case "pending":
        return event.nextRetryAt
          ? `retry: attempt ${event.attempt} of ${event.maxAttempts} at ${clock(event.nextRetryAt)}, after ${event.error}`
          : "accepted";
      case "routing":
        return event.attempt > 1
          ? `asking both venues for quotes (attempt ${event.attempt})`
          : "asking both venues for quotes";
      case "building":
        return `best net amount on ${venue}`;
      case "submitted":
        return `swap sent to ${venue}`;
      case "confirmed":
        return `swapped on ${venue}`;
      case "failed":
        return event.error ?? "failed";
      case "cancelled":
        return "cancelled before submission";
      default:
        return "";
    }
  }

  /** The rest of the usual path, greyed, so the reader sees what is still to come. */
  #renderUpcoming() {
    for (const li of this.timeline.querySelectorAll(".upcoming")) li.remove();
    if (TERMINAL.has(this.status)) return;
    const seen = HAPPY_PATH.indexOf(this.status);
    for (const status of HAPPY_PATH.slice(seen + 1)) {
      this.timeline.append(
        h("li", { class: "step upcoming", "aria-hidden": "true" }, h("span", { class: "step-status" }, status)),
      );
    }
  }

  #renderQuotes() {
    const boxes = Object.keys(DEX_NAMES).map((dex) => {
      const quote = this.quotes[dex];
      const chosen = dex === this.chosenDex;
      if (!quote) {
        return h(
          "section",
          { class: "quote missing", testid: `quote-${dex}`, dataset: { chosen: "false" } },
          h("h4", {}, DEX_NAMES[dex]),
          h("p", {}, "no quote"),
        );
      }
      return h(
        "section",
        {
          class: chosen ? "quote chosen" : "quote",
          testid: `quote-${dex}`,
          dataset: { chosen: String(chosen) },
          "aria-label": `${DEX_NAMES[dex]} quote${chosen ? ", chosen" : ""}`,
        },
        h("h4", {}, DEX_NAMES[dex], chosen ? h("span", { class: "tag", testid: "quote-chosen" }, "✓ chosen") : null),
        h(
          "dl",
          {},
          h("dt", {}, "Price"),
          h("dd", { testid: "quote-price" }, quote.price),
          h("dt", {}, "Fee"),
          h("dd", {}, `${(Number(quote.fee) * 100).toFixed(2)} %`),
          h("dt", {}, "Amount out"),
          h("dd", { testid: "quote-amount-out" }, quote.amountOut),
        ),
      );
    });
    this.quoteBoxes.replaceChildren(h("h4", { class: "visually-hidden" }, "Quotes"), ...boxes);
    this.quoteBoxes.hidden = false;
  }

  #renderRetry(event) {
    clearInterval(this.countdown);
    if (event.status !== "pending" || !event.nextRetryAt) {
      this.retry.hidden = true;
      return;
    }
    // The server's nextRetryAt on this browser's clock.
    const due = Date.parse(event.nextRetryAt) + (this.skewMs ?? 0);
    const countdown = h("strong", { testid: "retry-countdown" });
    const tick = () => {
      const left = due - Date.now();
      countdown.textContent = left > 0 ? `in ${seconds(left)}` : "now";
      if (left <= 0) clearInterval(this.countdown);
    };
    this.retry.replaceChildren(
      h("p", {}, `Retrying: attempt ${event.attempt} of ${event.maxAttempts} `, countdown),
      h("p", {}, "Last error: ", h("code", { testid: "retry-error" }, event.error ?? "unknown")),
    );
    this.retry.hidden = false;
    tick();
    this.countdown = setInterval(tick, 200);
  }

  #renderOutcome(event) {
    if (event.status === "confirmed") {
      this.outcome.replaceChildren(this.#execution(event));
    } else if (event.status === "failed") {
      this.outcome.replaceChildren(
        h(
          "div",
          { class: "failure", testid: "failure", role: "alert" },
          h("p", {}, h("strong", {}, "Failed: "), h("code", { testid: "failure-error" }, event.error ?? "")),
          h("p", { testid: "failure-reason" }, event.failureReason ?? ""),
        ),
      );
    } else if (event.status === "cancelled") {
      this.outcome.replaceChildren(h("p", { class: "cancelled" }, "Cancelled before it was sent to a venue."));
    } else {
      return;
    }
    this.outcome.hidden = false;
  }

  #execution(event) {
    const quote = this.quotes?.[event.dex];
    const rows = [
      ["Transaction", h("code", { class: "hash", testid: "tx-hash" }, event.txHash ?? "")],
      ["Executed price", h("span", { testid: "executed-price" }, event.executedPrice ?? "")],
    ];
    if (quote) {
      const priceMove = ((Number(event.executedPrice) - Number(quote.price)) / Number(quote.price)) * 100;
      rows.push(["Quoted price", h("span", { testid: "quoted-price" }, `${quote.price} (moved ${signed(priceMove)} %)`)]);
      rows.push(["Amount out", h("span", { testid: "amount-out" }, `${event.amountOut} (quoted ${quote.amountOut})`)]);
    } else {
      rows.push(["Amount out", h("span", { testid: "amount-out" }, event.amountOut ?? "")]);
    }
    rows.push(["Realised slippage", h("span", { testid: "realised-slippage" }, this.#slippage(event, quote))]);
    return h(
      "dl",
      { class: "execution", testid: "execution" },
      rows.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
    );
  }

  /** (quoted amountOut − amountOut) / quoted amountOut in bps: positive is less than quoted. */
  #slippage(event, quote) {
    let bps;
    if (quote) {
      const quoted = Number(quote.amountOut);
      bps = ((quoted - Number(event.amountOut)) / quoted) * BPS;
    } else if (event.slippageBps != null) {
      bps = Number(event.slippageBps); // the building event is no longer in the order's log
    } else {
      return "unknown";
    }
    const side = bps > 0 ? "less than quoted" : bps < 0 ? "more than quoted" : "as quoted";
    const limit = this.summary.slippage ? `; limit ${(Number(this.summary.slippage) * BPS).toFixed(0)} bps` : "";
    return `${signed(bps)} bps (${side}${limit})`;
  }
}

function signed(value) {
  const text = Math.abs(value).toFixed(2);
  return value < 0 && text !== "0.00" ? `−${text}` : text;
}
