"""The shipment tracking page in headless Chromium, through the front Envoy of the stack.

The browser is the system ``/usr/bin/chromium`` (Debian ``chromium``), driven by
Playwright without any browser download. Screenshots go to ``build/artifacts/tracking-page``
under the repository (``ENVIOS_ARTIFACTS_DIR`` overrides ``build/artifacts``).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ops.replay import ReplayOptions, Summary, replay_orders
from ops.stack import Stack
from ops.timeline import Order, expected_final_status, load_orders, timeline
from tests.conftest import DataTier

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "olist-sample" / "orders.csv"
ARTIFACTS = Path(os.environ.get("ENVIOS_ARTIFACTS_DIR") or ROOT / "build" / "artifacts")
CHROMIUM = Path(os.environ.get("ENVIOS_CHROMIUM") or "/usr/bin/chromium")
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
SETTLED_STATES = ("found", "not-found", "invalid", "unavailable")
"""Values of ``data-state`` on ``<main>`` once the page's script has finished a lookup."""
REFRESH_MS = 10_000
"""The page's refresh interval (``TrackingPage`` default), in milliseconds."""
WAIT_MS = 15_000
"""Maximum wait for the page to reach a state, in milliseconds."""
PHONE = {"width": 390, "height": 844}


def missing_browser(reason: str) -> None:
    """Fail under CI, where the browser must be installed; skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for the module; Playwright gives it a fresh temporary profile."""
    if not os.access(CHROMIUM, os.X_OK):
        missing_browser(
            f"no Chromium at {CHROMIUM}: install the Debian packages chromium and "
            "chromium-driver with `python -m ops provision --test-tools`"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_browser("Playwright is missing: run `pip install -e '.[dev]'`")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.front_http_url, timeout=30) as client:
        yield client


class TrackingTab:
    """One browser tab on the tracking page, with the console errors it logged."""

    def __init__(self, browser: Browser, base_url: str, locale: str, **options: Any) -> None:
        self.context = browser.new_context(base_url=base_url, locale=locale, **options)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: Any) -> None:
        # Failed lookups log "Failed to load resource"; anything else is a script problem.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def open(self, query: str = "") -> None:
        self.page.goto(f"/track{query}")

    def wait_state(self, *states: str) -> str:
        expected = list(states or SETTLED_STATES)
        self.page.wait_for_function(
            "states => states.includes(document.getElementById('tracking').dataset.state)",
            arg=expected,
            timeout=WAIT_MS,
        )
        return self.state

    @property
    def state(self) -> str:
        return self.page.get_attribute("#tracking", "data-state") or ""

    def visible(self, selector: str) -> bool:
        return self.page.is_visible(selector)

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector).strip()

    def wait_status(self, status: str) -> None:
        self.page.wait_for_function(
            "status => document.getElementById('status').dataset.status === status",
            arg=status,
            timeout=WAIT_MS,
        )

    def screenshot(self, name: str) -> Path:
        folder = ARTIFACTS / "tracking-page"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot saved to {path}")
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(browser: Browser, stack: Stack) -> Iterator[list[TrackingTab]]:
    """Tabs opened by ``open_tab``; closed after the test, which checks their errors."""
    opened: list[TrackingTab] = []
    yield opened
    for tab in opened:
        tab.close()


def open_tab(
    tabs: list[TrackingTab], browser: Browser, stack: Stack, locale: str = "es-AR", **options: Any
) -> TrackingTab:
    tab = TrackingTab(browser, stack.front_http_url, locale, **options)
    tabs.append(tab)
    return tab


def new_id(prefix: str) -> str:
    return f"e2e-page-{prefix}-{uuid.uuid4().hex[:10]}"


def create(http: httpx.Client, shipment_id: str, **fields: str) -> None:
    response = http.post("/v1/shipments", json={"id": shipment_id, **fields})
    assert response.status_code == 200, response.text


def move(http: httpx.Client, shipment_id: str, status: str) -> None:
    response = http.patch(f"/shippings/{shipment_id}", json={"status": status})
    assert response.status_code == 200, response.text


def delivered_sample_order() -> Order:
    orders = [order for order in load_orders(SAMPLE) if expected_final_status(order) == "delivered"]
    assert orders, f"{SAMPLE} has no delivered order"
    return orders[-1]


def replay(stack: Stack, order: Order) -> None:
    """Replay ``order`` through the front listener with the code of ``envios replay``."""

    async def run() -> Summary:
        async with httpx.AsyncClient(base_url=stack.front_http_url, timeout=30) as client:
            return await replay_orders([order], client, ReplayOptions(no_wait=True))

    # Playwright's sync API keeps an event loop running in this thread, so the replay
    # gets a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        summary = pool.submit(asyncio.run, run()).result()
    assert summary.errors == 0, summary.error_samples
    assert summary.mismatches == 0


def test_page_real_shipment_timeline(
    browser: Browser, stack: Stack, http: httpx.Client, tabs: list[TrackingTab]
) -> None:
    order = delivered_sample_order()
    replay(stack, order)
    history = http.get(f"/v1/shipments/{order.order_id}").json()["history"]
    applied = [e.status for e in timeline(order) if e.outcome in ("created", "applied")]
    tab = open_tab(tabs, browser, stack, "es-AR")

    tab.open(f"?id={order.order_id}")

    assert tab.wait_state() == "found"
    rows = tab.page.locator("#timeline li")
    assert rows.evaluate_all("rows => rows.map(row => row.dataset.status)") == [
        event["toStatus"] for event in history
    ]
    times = rows.evaluate_all("rows => rows.map(row => row.querySelector('time').dateTime)")
    assert times == [event["occurredAt"] for event in history]
    applied_rows = [event["toStatus"] for event in history if event["applied"]]
    assert applied_rows == applied
    assert tab.text("#status") == "Entregado"
    assert tab.text("#result-id") == order.order_id
    assert tab.text("#timeline li:first-child .event-status") == "Pedido recibido"
    assert not tab.visible("#refresh-note")
    assert not tab.visible("#state-degraded")
    assert tab.screenshot("real-shipment-desktop").stat().st_size > 0
    assert tab.errors == []


def test_page_phone_layout(
    browser: Browser, stack: Stack, http: httpx.Client, tabs: list[TrackingTab]
) -> None:
    shipment_id = new_id("phone")
    create(http, shipment_id, trackingNumber="TRK-PHONE-1")
    move(http, shipment_id, "handling")
    tab = open_tab(tabs, browser, stack, "es-AR", viewport=PHONE, is_mobile=True)

    tab.open(f"?id={shipment_id}")

    assert tab.wait_state() == "found"
    assert tab.text("#tracking-number") == "TRK-PHONE-1"
    overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    assert tab.screenshot("phone").stat().st_size > 0
    assert tab.errors == []


def test_page_unknown_id_not_found(browser: Browser, stack: Stack, tabs: list[TrackingTab]) -> None:
    tab = open_tab(tabs, browser, stack, "en-US")

    tab.open(f"?id={new_id('unknown')}")

    assert tab.wait_state() == "not-found"
    assert tab.visible("#state-not-found")
    assert "We found no shipment" in tab.text("#state-not-found")
    assert not tab.visible("#result")
    assert tab.errors == []


def test_page_invalid_id_form(browser: Browser, stack: Stack, tabs: list[TrackingTab]) -> None:
    tab = open_tab(tabs, browser, stack, "es-ES")
    tab.open()
    assert tab.state == "empty"

    tab.page.fill("#shipment-id", "no vale!")
    tab.page.press("#shipment-id", "Enter")
    tab.page.wait_for_url(re.compile(r"/track\?id=no"))

    assert tab.wait_state() == "invalid"
    assert "no es válido" in tab.text("#state-invalid")
    assert tab.page.input_value("#shipment-id") == "no vale!"
    assert not tab.visible("#result")
    assert tab.errors == []


def test_page_language_switch(
    browser: Browser, stack: Stack, http: httpx.Client, tabs: list[TrackingTab]
) -> None:
    shipment_id = new_id("lang")
    create(http, shipment_id)
    move(http, shipment_id, "handling")
    tab = open_tab(tabs, browser, stack, "es-MX")
    tab.open(f"?id={shipment_id}")
    assert tab.wait_state() == "found"
    assert tab.page.get_attribute("html", "lang") == "es"
    assert tab.text("#status") == "En preparación"

    tab.page.click("a[hreflang=en]")
    tab.page.wait_for_url(re.compile(r"lang=en"))

    assert tab.wait_state() == "found"
    assert tab.page.get_attribute("html", "lang") == "en"
    assert tab.text("#status") == "Being prepared"
    assert tab.text("h1") == "Where is my shipment?"
    tab.open(f"?id={shipment_id}")
    assert tab.wait_state() == "found"
    assert tab.page.get_attribute("html", "lang") == "en", "the cookie keeps the choice"
    tab.page.click("a[hreflang=es]")
    tab.page.wait_for_url(re.compile(r"lang=es"))
    assert tab.wait_state() == "found"
    assert tab.text("h1") == "¿Dónde está mi envío?"
    assert tab.errors == []


def test_page_english_browser(
    browser: Browser, stack: Stack, http: httpx.Client, tabs: list[TrackingTab]
) -> None:
    shipment_id = new_id("en")
    create(http, shipment_id)
    tab = open_tab(tabs, browser, stack, "en-GB")

    tab.open(f"?id={shipment_id}")

    assert tab.wait_state() == "found"
    assert tab.page.get_attribute("html", "lang") == "en"
    assert tab.text("#status") == "Order received"
    assert tab.errors == []


def test_page_refreshes_until_delivered(
    browser: Browser, stack: Stack, http: httpx.Client, tabs: list[TrackingTab]
) -> None:
    shipment_id = new_id("refresh")
    create(http, shipment_id)
    tab = open_tab(tabs, browser, stack, "en-US")
    tab.page.clock.install()
    tab.open(f"?id={shipment_id}")
    assert tab.wait_state() == "found"
    assert tab.visible("#refresh-note")

    for status in ("handling", "ready_to_ship", "shipped"):
        move(http, shipment_id, status)
        tab.page.clock.run_for(REFRESH_MS)
        tab.wait_status(status)
    move(http, shipment_id, "delivered")
    tab.page.clock.run_for(REFRESH_MS)
    tab.wait_status("delivered")

    assert not tab.visible("#refresh-note")
    refreshes = tab.page.get_attribute("#tracking", "data-refreshes")
    tab.page.clock.run_for(10 * REFRESH_MS)
    tab.page.wait_for_load_state("networkidle")
    assert tab.page.get_attribute("#tracking", "data-refreshes") == refreshes
    assert tab.text("#timeline li:last-child .event-status") == "Delivered"
    assert tab.errors == []


def test_page_shows_task(
    browser: Browser, stack: Stack, http: httpx.Client, tabs: list[TrackingTab]
) -> None:
    shipment_id = new_id("task")
    create(http, shipment_id)
    task = http.post(
        "/api/tarea-concurrente",
        json={
            "type": "transition",
            "shipmentIds": [shipment_id],
            "targetStatus": "handling",
            "targetSubstatus": "picking",
            "workDuration": "0.2s",
        },
    )
    assert task.status_code == 200, task.text
    task_id = task.json()["id"]
    wait_task_state(http, task_id, "SUCCEEDED")
    tab = open_tab(tabs, browser, stack, "es-AR")

    tab.open(f"?id={shipment_id}")

    assert tab.wait_state() == "found"
    assert tab.visible("#tasks-section")
    row = tab.page.locator("#tasks li")
    assert row.count() == 1
    assert row.get_attribute("data-state") == "SUCCEEDED"
    assert task_id in row.inner_text()
    assert "Completada" in row.inner_text()
    assert tab.text("#substatus") == "Preparando los productos"
    assert tab.errors == []


def wait_task_state(http: httpx.Client, task_id: str, state: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        current = http.get(f"/api/status/tasks/{task_id}").json()
        if current.get("state") == state:
            return
        assert current.get("state") not in ("FAILED", "CANCELLED"), current
        assert time.monotonic() < deadline, current
        time.sleep(0.1)


def test_page_everything_down(
    browser: Browser, stack: Stack, http: httpx.Client, tabs: list[TrackingTab]
) -> None:
    """API calls that fail as they do when every replica is down; the page recovers."""
    shipment_id = new_id("down")
    create(http, shipment_id)
    tab = open_tab(tabs, browser, stack, "es-AR")
    tab.page.clock.install()
    unavailable = '{"code":14,"message":"no healthy upstream","details":[]}'
    api = re.compile(r"/(api|v1)/")
    tab.page.route(
        api, lambda route: route.fulfill(status=503, body=unavailable, content_type="text/plain")
    )

    tab.open(f"?id={shipment_id}")

    assert tab.wait_state() == "unavailable"
    notice = tab.text("#state-unavailable")
    assert "No podemos consultar el envío" in notice
    assert "503" not in tab.text("main")
    assert "upstream" not in tab.text("main")
    tab.page.unroute(api)
    tab.page.clock.run_for(REFRESH_MS)
    assert tab.wait_state("found") == "found"
    assert not tab.visible("#state-unavailable")
    assert tab.errors == []


def test_page_gateway_killed(
    browser: Browser, stack: Stack, http: httpx.Client, tabs: list[TrackingTab]
) -> None:
    shipment_id = new_id("gw")
    create(http, shipment_id)
    tab = open_tab(tabs, browser, stack, "en-US")
    stack.kill_process("gateway-1")
    try:
        for _ in range(4):
            tab.open(f"?id={shipment_id}")
            assert tab.wait_state() == "found"
            assert tab.text("#status") == "Order received"
    finally:
        stack.start_process("gateway-1")
        stack.wait_ready(["gateway-1", "envoy"], timeout_s=60)
    assert tab.errors == []


def test_page_redis_down(
    browser: Browser,
    stack: Stack,
    data_tier: DataTier,
    http: httpx.Client,
    tabs: list[TrackingTab],
) -> None:
    if data_tier.stack is None:
        pytest.skip("REDIS_URL and AMQP_URL are given, so the tests cannot stop Redis")
    shipment_id = new_id("redis")
    create(http, shipment_id)
    tab = open_tab(tabs, browser, stack, "es-AR")
    data_tier.stack.stop_process("redis")
    try:
        tab.open(f"?id={shipment_id}")
        assert tab.wait_state() == "found"
        assert tab.visible("#state-degraded")
        assert "respaldo" in tab.text("#state-degraded")
        assert tab.text("#status") == "Pedido recibido"
        tab.screenshot("redis-down")
    finally:
        data_tier.stack.start_process("redis")
        data_tier.stack.wait_ready(["redis"], timeout_s=30)
        wait_cache_back(http, shipment_id)
    assert tab.errors == []


def wait_cache_back(http: httpx.Client, shipment_id: str) -> None:
    """Wait until status reads stop falling back to the database because Redis is down."""
    deadline = time.monotonic() + 30
    while True:
        response = http.get(f"/api/status/shipments/{shipment_id}")
        if response.status_code == 200 and response.json()["source"] != "SOURCE_FALLBACK":
            return
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)
