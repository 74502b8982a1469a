"""The web console in a real browser (Debian's Chromium, headless, driven by Playwright) against the whole
running system: an order placed from the form is followed to `confirmed`, a seeded order that trips its
slippage shows why it failed, an order is cancelled while routing, the server's refusals (400 by field, 429
with its countdown) show on the form, and a retried order counts down to its next attempt and is followed
exactly (each event once) across a notifier restart. Each test leaves a full-page screenshot in
SCREENSHOTS."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Locator, Page, async_playwright, expect

from router.service import best_quote
from shared.domain.events import Dex
from shared.venue.mock import MockDex
from shared.venue.model import AMOUNT_PLACES, Latency
from shared.web.apikeys import key_line, new_key
from tests.fixtures.stack import ROOT, Stack, cancellable, running_stack
from tests.fixtures.venue import InMemoryLedger

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
# The machine has no network: without these Chromium stalls on lookups and background fetches.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / ".local" / "test-output" / "console"
LIVE_MS = 30_000  # longest wait for an order to reach a status on the page
HAPPY_PATH = ["pending", "routing", "building", "submitted", "confirmed"]
BASE58 = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{43,90}$")
DECIMAL = re.compile(r"^\d+(\.\d+)?$")
RETRIABLE = re.compile(r"^(venue_timeout|blockhash_expired)$")

SEED = "console-browser-test"
PRICE_MOVE_BPS = 5000  # the swap's price lands anywhere within ±50 % of the quote's
AMOUNT_IN = Decimal("1.5")
TIGHT_SLIPPAGE_PERCENT = "0.01"  # 1 bp: about half the swaps come in below it
TIGHT_SLIPPAGE = Decimal("0.0001")  # the fraction the page sends for it
MAX_ORDERS = 20  # each fails with p ≈ 0.5, so all 20 confirming is a one-in-a-million run


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (the tests never download a browser)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="module")
async def slow_quotes(infrastructure: object) -> AsyncIterator[Stack]:
    """Quotes slow enough (1-1.5 s) that an order waits in `routing` long enough for a click on Cancel (the
    integration tests' 300-600 ms leaves a browser too little); no price move, so an order that is not
    cancelled confirms at exactly its quote."""
    async with running_stack(**cancellable(1000, 1500)) as stack:
        yield stack


@pytest.fixture(scope="module")
async def seeded(infrastructure: object) -> AsyncIterator[Stack]:
    """A seeded mock whose prices move up to ±50 % between quote and swap: every order's fate is a pure
    function of its id (see `fails_on_slippage`)."""
    async with running_stack(MOCK_SEED=SEED, MOCK_PRICE_MOVE_BPS=str(PRICE_MOVE_BPS)) as stack:
        yield stack


@pytest.fixture(scope="module")
async def rate_limited(infrastructure: object) -> AsyncIterator[Stack]:
    """Two orders a minute per client: the third is refused with 429 and Retry-After 30."""
    async with running_stack(RATE_LIMIT="2") as stack:
        yield stack


@pytest.fixture(scope="module")
async def flaky_swaps(infrastructure: object) -> AsyncIterator[Stack]:
    """Every swap fails with a retriable error, and an order gets two attempts: it goes back to pending
    once (a 2 s wait, with its countdown) and then fails."""
    async with running_stack(MOCK_SWAP_TRANSIENT_ERROR_RATE="1", MAX_RETRIES="2") as stack:
        yield stack


@pytest.fixture(scope="module")
async def keyed(
    infrastructure: object, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, str]]:
    """An engine with API_KEYS that knows one key, the console's."""
    key = new_key()
    path = tmp_path_factory.mktemp("console-keys") / "api-keys"
    path.write_text(key_line("console", key) + "\n")
    async with running_stack(API_KEYS=str(path)) as stack:
        yield stack, key


@pytest.fixture
async def page(
    browser: Browser, request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> AsyncIterator[Page]:
    """A fresh browser context on a laptop-sized screen; its full-page screenshot is saved when the test
    ends (pass or fail), and the test fails on an uncaught script error or a CSP violation."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    opened = await context.new_page()
    problems: list[str] = []

    def on_page_error(error: Error) -> None:
        problems.append(f"uncaught: {error}")

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            problems.append(message.text)

    opened.on("pageerror", on_page_error)
    opened.on("console", on_console)
    try:
        yield opened
    finally:
        path = SCREENSHOTS / f"{request.node.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        await opened.screenshot(path=path, full_page=True)
        record_property("screenshot", str(path))
        await context.close()
    assert not problems, f"the page reported: {problems}"


async def open_console(page: Page, stack: Stack) -> None:
    response = await page.goto(stack.base_url)
    assert response is not None and response.status == 200
    assert "script-src 'self'" in (response.headers.get("content-security-policy") or "")
    await expect(page.get_by_test_id("submit-button")).to_be_enabled()  # the token list has loaded


async def place_order(
    page: Page, *, amount: str = "1.5", slippage_percent: str = "1", token_out: str = "USDC"
) -> tuple[Locator, str]:
    """Fill the form (SOL → token_out), submit, and return the new live card and its order id."""
    cards = page.get_by_test_id("order-card")
    before = await cards.count()
    await page.get_by_test_id("token-in").select_option("SOL")
    await page.get_by_test_id("token-out").select_option(token_out)
    await page.get_by_test_id("amount").fill(amount)
    await page.get_by_test_id("slippage").fill(slippage_percent)
    await page.get_by_test_id("submit-button").click()
    await expect(cards).to_have_count(before + 1)
    card = cards.first  # the newest is on top
    order_id = await card.get_attribute("data-order-id")
    assert order_id is not None
    await expect(page.get_by_test_id("form-message")).to_contain_text("accepted")
    return card, order_id


async def step_statuses(card: Locator) -> list[str]:
    """The timeline's steps, in order, by status."""
    statuses: list[str] = await card.get_by_test_id("timeline-step").evaluate_all(
        "steps => steps.map(step => step.dataset.status)"
    )
    return statuses


def list_row(page: Page, order_id: str) -> Locator:
    return page.locator(f"[data-testid=order-row][data-order-id='{order_id}']")


def fails_on_slippage(order_id: str, slippage: Decimal) -> tuple[bool, Dex]:
    """Whether the seeded venue refuses this order's swap, and the venue the router picks. Under MOCK_SEED
    the quotes and the swap's price are pure functions of (seed, orderId, attempt): what the router and the
    executor will do is known as soon as the page names the order."""
    venue = MockDex(
        InMemoryLedger(), seed=SEED, latency=Latency(), price_move=Decimal(PRICE_MOVE_BPS) / 10_000
    )
    oid = UUID(order_id)
    quotes = {
        dex: venue.quote_now(dex, order_id=oid, token_in="SOL", token_out="USDC", amount_in=AMOUNT_IN)
        for dex in Dex
    }
    best = best_quote(quotes)
    price = venue.execution_price(best, order_id=oid)
    amount_out = (AMOUNT_IN * price * (1 - best.fee)).quantize(AMOUNT_PLACES)
    return amount_out < best.amount_out * (1 - slippage), best.dex


async def test_an_order_placed_from_the_form_is_followed_to_confirmed(page: Page, slow_quotes: Stack) -> None:
    await open_console(page, slow_quotes)
    card, order_id = await place_order(page)

    await expect(card.get_by_test_id("order-status")).to_have_text("confirmed", timeout=LIVE_MS)
    assert await step_statuses(card) == HAPPY_PATH, "each step once, in order"
    await expect(card.get_by_test_id("tx-hash")).to_have_text(BASE58)
    for dex in ("raydium", "meteora"):
        await expect(card.get_by_test_id(f"quote-{dex}").get_by_test_id("quote-amount-out")).to_have_text(
            DECIMAL
        )
    chosen = card.locator("[data-testid^=quote-][data-chosen=true]")
    await expect(chosen).to_have_count(1)
    await expect(chosen.get_by_test_id("quote-chosen")).to_have_text("✓ chosen")
    # No price move on this stack: the swap executes at the chosen quote, to the last digit.
    quoted_price = await chosen.get_by_test_id("quote-price").inner_text()
    await expect(card.get_by_test_id("executed-price")).to_have_text(quoted_price)
    await expect(card.get_by_test_id("realised-slippage")).to_contain_text(
        "0.00 bps (as quoted; limit 100 bps)"
    )
    await expect(card.get_by_test_id("cancel-button")).to_be_hidden()
    await expect(card.get_by_test_id("connection")).to_have_text("finished")
    await expect(list_row(page, order_id).get_by_test_id("order-row-status")).to_have_text("confirmed")


async def test_an_order_cancelled_while_routing_shows_cancelled(page: Page, slow_quotes: Stack) -> None:
    await open_console(page, slow_quotes)
    card, order_id = await place_order(page)

    await card.locator("[data-testid=order-status][data-status=routing]").wait_for()
    await card.get_by_test_id("cancel-button").click()

    await expect(card.get_by_test_id("order-status")).to_have_text("cancelled", timeout=LIVE_MS)
    assert await step_statuses(card) == ["pending", "routing", "cancelled"]
    await expect(card.get_by_test_id("card-message")).to_contain_text("Cancelled")
    await expect(card.get_by_test_id("outcome")).to_contain_text("Cancelled before it was sent to a venue")
    await expect(card.get_by_test_id("cancel-button")).to_be_hidden()
    await expect(card.get_by_test_id("connection")).to_have_text("finished")
    await expect(list_row(page, order_id).get_by_test_id("order-row-status")).to_have_text("cancelled")


async def test_a_seeded_order_that_trips_its_slippage_shows_why_it_failed(page: Page, seeded: Stack) -> None:
    await open_console(page, seeded)
    # Place orders until one the seeded venue will refuse: each order's fate depends only on its id.
    for _ in range(MAX_ORDERS):
        card, order_id = await place_order(page, slippage_percent=TIGHT_SLIPPAGE_PERCENT)
        fails, dex = fails_on_slippage(order_id, TIGHT_SLIPPAGE)
        if fails:
            break
    else:
        pytest.fail(f"none of {MAX_ORDERS} seeded orders trips a 1 bp slippage: the mock has changed")

    await expect(card.get_by_test_id("order-status")).to_have_text("failed", timeout=LIVE_MS)
    assert await step_statuses(card) == ["pending", "routing", "building", "submitted", "failed"]
    await expect(card.get_by_test_id("failure-error")).to_have_text("slippage_exceeded")
    await expect(card.get_by_test_id("failure-reason")).to_contain_text("below the minimum")
    await expect(card.get_by_test_id(f"quote-{dex}")).to_have_attribute("data-chosen", "true")
    await expect(card.get_by_test_id("tx-hash")).to_have_count(0)

    # The recent orders, filtered to failed ones, list it and nothing else.
    await page.get_by_test_id("status-filter").select_option("failed")
    await expect(list_row(page, order_id).get_by_test_id("order-row-status")).to_have_text("failed")
    await expect(page.get_by_test_id("order-row-status").filter(has_not_text="failed")).to_have_count(0)


async def test_a_refused_order_shows_the_servers_reasons_by_its_fields(page: Page, seeded: Stack) -> None:
    await open_console(page, seeded)
    await page.get_by_test_id("token-out").select_option("SOL")  # the same as tokenIn
    await page.get_by_test_id("amount").fill("0")
    await page.get_by_test_id("slippage").fill("60")
    await page.get_by_test_id("submit-button").click()

    await expect(page.get_by_test_id("error-tokenOut")).to_have_text("must differ from tokenIn.")
    await expect(page.get_by_test_id("error-amountIn")).to_have_text("must be greater than 0.")
    await expect(page.get_by_test_id("error-slippage")).to_contain_text(
        "at most 0.5 (sent as the fraction 0.6)"
    )
    await expect(page.get_by_test_id("amount")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_test_id("token-out")).to_be_focused()  # the first field named
    await expect(page.get_by_test_id("form-message")).to_contain_text("invalid_body")
    await expect(page.get_by_test_id("order-card")).to_have_count(0)


async def test_a_rate_limited_order_disables_submit_for_the_retry_after(
    page: Page, rate_limited: Stack
) -> None:
    # The page's own clock, so the test can move it past Retry-After instead of waiting 30 s.
    await page.clock.install()
    await open_console(page, rate_limited)
    for _ in range(2):
        await place_order(page)
    await page.get_by_test_id("submit-button").click()

    await expect(page.get_by_test_id("form-message")).to_contain_text("rate_limited")
    await expect(page.get_by_test_id("cooldown")).to_be_visible()
    await expect(page.get_by_test_id("cooldown-seconds")).to_have_text(re.compile(r"^([12]\d|30)$"))
    await expect(page.get_by_test_id("submit-button")).to_be_disabled()
    await expect(page.get_by_test_id("order-card")).to_have_count(2)

    await page.clock.fast_forward(31_000)
    await expect(page.get_by_test_id("cooldown")).to_be_hidden()
    await expect(page.get_by_test_id("submit-button")).to_be_enabled()
    await expect(page.get_by_test_id("form-message")).to_have_text("You can submit again.")


async def test_a_retried_order_counts_down_and_resumes_exactly_after_a_notifier_restart(
    page: Page, flaky_swaps: Stack
) -> None:
    await open_console(page, flaky_swaps)
    card, _ = await place_order(page)

    # The first swap fails: back to pending, with the next attempt's countdown and the error.
    await expect(card.get_by_test_id("retry")).to_be_visible(timeout=LIVE_MS)
    await expect(card.get_by_test_id("retry")).to_contain_text("attempt 2 of 2")
    await expect(card.get_by_test_id("retry-countdown")).to_have_text(re.compile(r"^(in \d+\.\d s|now)$"))
    await expect(card.get_by_test_id("retry-error")).to_have_text(RETRIABLE)

    # Its WebSocket drops (1006) while the order goes on; the page reconnects on its own once the notifier
    # is back, asking for what came after the last event it showed.
    flaky_swaps.processes["notifier"].kill()
    await expect(card.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")
    flaky_swaps.start_service("notifier")
    await flaky_swaps.wait_ready(["notifier"])

    await expect(card.get_by_test_id("order-status")).to_have_text("failed", timeout=LIVE_MS)
    await expect(card.get_by_test_id("failure-error")).to_have_text(RETRIABLE)
    await expect(card.get_by_test_id("retry")).to_be_hidden()
    assert await step_statuses(card) == [*HAPPY_PATH[:4], *HAPPY_PATH[:4], "failed"]
    seqs = await card.get_by_test_id("timeline-step").evaluate_all("steps => steps.map(s => s.dataset.seq)")
    assert seqs == [str(n) for n in range(1, 10)], "every event once, none skipped, across the reconnect"
    await expect(card.get_by_test_id("connection")).to_have_text("finished")


async def test_an_engine_with_api_keys_asks_for_one_and_the_saved_key_follows_an_order(
    page: Page, keyed: tuple[Stack, str]
) -> None:
    """Without a key the page says the engine needs one; a wrong key is refused; the right one, saved in
    this browser, is sent with every request and offered to the WebSocket, which follows the order to
    confirmed; after a reload the key is still there, and it is never shown again."""
    stack, key = keyed
    response = await page.goto(stack.base_url)
    assert response is not None and response.status == 200
    message = page.get_by_test_id("form-message")
    await expect(message).to_contain_text("needs an API key (unauthorized)")
    await expect(page.get_by_test_id("submit-button")).to_be_disabled()

    await page.get_by_test_id("api-key").fill(new_key())
    await page.get_by_test_id("save-key").click()
    await expect(message).to_contain_text("needs an API key (forbidden)")

    await page.get_by_test_id("api-key").fill(key)
    await page.get_by_test_id("save-key").click()
    await expect(page.get_by_test_id("submit-button")).to_be_enabled()
    await expect(page.get_by_test_id("api-key")).to_have_value("")
    await expect(page.get_by_test_id("key-message")).to_contain_text("saved in this browser")
    card, order_id = await place_order(page)
    await expect(card.get_by_test_id("order-status")).to_have_text("confirmed", timeout=LIVE_MS)
    assert await step_statuses(card) == HAPPY_PATH
    await expect(list_row(page, order_id)).to_be_visible()  # the list, too, is read with the key

    await page.reload()
    await expect(page.get_by_test_id("submit-button")).to_be_enabled()
    assert key not in await page.content()
