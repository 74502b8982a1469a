// Recent orders from GET /api/orders (this client's own, newest first): a status filter, "More" along
// nextCursor, and refreshes that keep what is on screen. Rows are updated in place, keyed by orderId, so a
// refresh neither loses the keyboard focus nor makes the table jump.

import { call, errorText } from "./api.js";
import { CANCELLABLE, dateTime, h, shortId, statusBadge } from "./dom.js";

const PAGE_SIZE = 20;
const MAX_PAGE = 100; // the API's cap on `limit`

export class OrdersList {
  /** elements: {body, filter, more, message}; actions: {onFollow(order), onCancel(orderId), isFollowed(id)}. */
  constructor(elements, actions) {
    Object.assign(this, elements);
    this.actions = actions;
    this.rows = new Map(); // orderId → row (see #row)
    this.nextCursor = null;
    this.ticket = 0; // answers to an older request (say, before the filter changed) are dropped
    this.filter.addEventListener("change", () => this.refresh({ reset: true }));
    this.more.addEventListener("click", () => this.loadMore());
  }

  /** Page one again, as long as what is shown now (at least a page), so "More" is not undone. */
  async refresh({ reset = false } = {}) {
    const limit = reset ? PAGE_SIZE : Math.min(MAX_PAGE, Math.max(PAGE_SIZE, this.rows.size));
    const page = await this.#fetch({ limit });
    if (page) this.#render(page.orders, page.nextCursor, { append: false });
  }

  async loadMore() {
    if (!this.nextCursor) return;
    const page = await this.#fetch({ limit: PAGE_SIZE, cursor: this.nextCursor });
    if (page) this.#render(page.orders, page.nextCursor, { append: true });
  }

  /** A followed order changed status: show it now, before the next refresh. */
  updateStatus(orderId, status) {
    const row = this.rows.get(orderId);
    if (row) this.#fill(row, { ...row.order, status });
  }

  /** The follow buttons' labels, after an order is followed or no longer. */
  updateFollowed() {
    for (const row of this.rows.values()) this.#fill(row, row.order);
  }

  async #fetch({ limit, cursor }) {
    const ticket = ++this.ticket;
    const query = new URLSearchParams({ limit: String(limit) });
    if (this.filter.value) query.set("status", this.filter.value);
    if (cursor) query.set("cursor", cursor);
    let answer;
    try {
      answer = await call("GET", `/api/orders?${query}`);
    } catch {
      if (ticket === this.ticket) this.say("Could not reach the engine to list orders; retrying shortly.", "error");
      return null;
    }
    if (ticket !== this.ticket) return null;
    if (answer.status !== 200) {
      this.say(`Could not list orders: ${errorText(answer)}`, "error");
      return null;
    }
    return answer.data;
  }

  #render(orders, nextCursor, { append }) {
    const wanted = append ? [...this.rows.values()] : [];
    for (const order of orders) {
      const row = this.rows.get(order.orderId) ?? this.#row(order.orderId);
      this.#fill(row, order);
      if (!wanted.includes(row)) wanted.push(row);
    }
    // Put rows in order, moving only the ones out of place (moving a row would drop the focus inside it).
    wanted.forEach((row, i) => {
      if (this.body.children[i] !== row.tr) this.body.insertBefore(row.tr, this.body.children[i] ?? null);
    });
    while (this.body.children.length > wanted.length) this.body.lastElementChild.remove();
    this.rows = new Map(wanted.map((row) => [row.order.orderId, row]));
    this.nextCursor = nextCursor;
    this.more.hidden = !nextCursor;
    const filter = this.filter.value ? ` ${this.filter.value}` : "";
    this.say(wanted.length ? "" : `No${filter} orders yet.`);
  }

  /** A row: its <tr>, its cells, the order it shows, and which buttons it has. */
  #row(orderId) {
    const cells = {
      placed: h("td", {}),
      pair: h("td", {}),
      amountIn: h("td", { class: "num" }),
      status: h("td", { testid: "order-row-status" }),
      venue: h("td", {}),
      amountOut: h("td", { class: "num" }),
      actions: h("td", { class: "row-actions" }),
    };
    const tr = h("tr", { testid: "order-row", dataset: { orderId } }, ...Object.values(cells));
    return { tr, cells, order: null, actionsKey: null };
  }

  #fill(row, order) {
    const { cells } = row;
    const before = row.order;
    row.order = order;
    cells.placed.replaceChildren(
      h("time", { datetime: order.createdAt }, dateTime(order.createdAt)),
      h("br"),
      h("code", { class: "small", title: order.orderId }, shortId(order.orderId)),
    );
    cells.pair.textContent = `${order.tokenIn} → ${order.tokenOut}`;
    cells.amountIn.textContent = order.amountIn;
    if (before?.status !== order.status) {
      cells.status.replaceChildren(statusBadge(order.status, "order-row-badge"));
    }
    cells.venue.textContent = order.dex ? order.dex : "—";
    cells.amountOut.textContent = order.amountOut ?? "—";
    this.#actions(row, order);
  }

  #actions(row, order) {
    // Kept as they are when nothing changed, so a focused button stays focused through a refresh.
    const followed = this.actions.isFollowed(order.orderId);
    const cancellable = CANCELLABLE.has(order.status);
    const key = `${followed}:${cancellable}`;
    if (row.actionsKey === key) return;
    row.actionsKey = key;
    const label = shortId(order.orderId);
    const buttons = [
      h(
        "button",
        {
          type: "button",
          class: "quiet",
          testid: "follow-button",
          "aria-label": `${followed ? "Show" : "Follow"} order ${label}`,
          onclick: () => this.actions.onFollow(row.order),
        },
        followed ? "Show" : "Follow",
      ),
      cancellable
        ? h(
            "button",
            {
              type: "button",
              class: "danger",
              testid: "row-cancel-button",
              "aria-label": `Cancel order ${label}`,
              onclick: () => this.actions.onCancel(order.orderId),
            },
            "Cancel",
          )
        : null,
    ];
    row.cells.actions.replaceChildren(...buttons.filter(Boolean));
  }

  say(text, kind = "info") {
    this.message.textContent = text;
    this.message.dataset.kind = kind;
  }
}
