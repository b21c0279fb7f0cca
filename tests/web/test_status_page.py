"""The status page in a real browser: headless Chromium against `turnout serve`'s demo.

One demo server and one browser serve the whole module; each test sets the
routing it needs first. Screenshots go to ``build/test-artifacts/status-page``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services import chromium_binaries

selenium = pytest.importorskip("selenium", reason="pip install -e '.[test]'")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TOKEN = "status-page-test-token-0123"
MODEL = "breast_cancer"
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "status-page"
DESKTOP = (1280, 800)
PHONE = (390, 844)

pytestmark = pytest.mark.timeout(180)


@dataclass
class Demo:
    """`turnout serve`'s demo: where it answers inference, the admin API and the page."""

    process: subprocess.Popen[str]
    url: str
    admin: str
    infer_body: bytes

    def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> Any:
        """Call the admin API; return the JSON answer, or raise HTTPError."""
        request = urllib.request.Request(
            self.admin + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def route(self, weights: list[float]) -> None:
        """Route the demo model by weights over v1 and v2, with v1 active."""
        self.call("PUT", f"/admin/models/{MODEL}/active", {"version": "v1"})
        params = {"versions": ["v1", "v2"], "weights": weights}
        routing = {"strategy": "weighted", "params": params}
        self.call("PUT", f"/admin/models/{MODEL}/routing", routing)

    def infer(self) -> int:
        """Send one V2 inference request; return its status."""
        request = urllib.request.Request(
            f"{self.url}/v2/models/{MODEL}/infer",
            data=self.infer_body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """`python -m turnout serve` with an admin token, as a user starts it."""
    with serving() as demo:
        yield demo


@contextlib.contextmanager
def serving(*args: str) -> Iterator[Demo]:
    """Run `python -m turnout serve *args` on free ports until the block ends."""
    command = [sys.executable, "-m", "turnout", "serve", "--port", "0", "--admin-port", "0"]
    process = subprocess.Popen(
        [*command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TURNOUT_ADMIN_TOKEN": TOKEN},
    )
    assert process.stdout is not None
    lines: list[str] = []
    drain = threading.Thread(target=process.stdout.read, daemon=True)  # once the banner is read
    try:
        while not lines or "Status page" not in lines[-1]:
            line = process.stdout.readline()
            if not line:
                raise AssertionError("turnout serve exited early:\n" + "".join(lines))
            lines.append(line)
        banner = "".join(lines)
        page = re.search(r"Status page \(asks for the token once\): (\S+)/ui/", banner)
        v2 = re.search(r"-d '(\{\"inputs\".*?)' (http://\S+)/v2/models/", banner)
        assert page, banner
        assert v2, banner
        drain.start()
        yield Demo(process, v2.group(2), page.group(1), v2.group(1).encode())
    finally:
        process.terminate()
        process.wait(30)
        if drain.is_alive():
            drain.join(10)
        process.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium, with its console log kept for the tests to read."""
    chromium, chromedriver = chromium_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        # This machine has no network: without these Chromium keeps dialling out.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(demo: Demo, browser: webdriver.Chrome) -> webdriver.Chrome:
    """The status page at desktop size, signed in with the admin token."""
    viewport(browser, *DESKTOP)
    browser.get(f"{demo.admin}/ui/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, f'[data-model="{MODEL}"]'))
    assert not browser.find_element(By.ID, "login").is_displayed()
    return browser


def viewport(browser: webdriver.Chrome, width: int, height: int) -> None:
    """Make the page's viewport exactly ``width`` by ``height`` CSS pixels."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def wait_for(browser: webdriver.Chrome, condition: Callable[[], Any], seconds: float = 10) -> Any:
    """Wait until ``condition()`` is truthy; return its value.

    An element the page redrew between finding it and reading it is read again.
    """
    waiting = WebDriverWait(
        browser, seconds, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
    )
    return waiting.until(lambda _: condition())


def console_errors(browser: webdriver.Chrome) -> list[str]:
    """The console's errors since last asked (reading the log empties it)."""
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def segments(browser: webdriver.Chrome) -> dict[str, str]:
    """The split bar's labels, by version."""
    found: list[WebElement] = browser.find_elements(By.CSS_SELECTOR, ".split .segment")
    return {s.get_attribute("data-version") or "": s.text for s in found}


def screenshot(browser: webdriver.Chrome, name: str) -> Path:
    """Save the page as build/test-artifacts/status-page/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def test_the_page_loads_with_no_console_errors_and_shows_the_demos_70_30_split(
    demo: Demo, page: webdriver.Chrome
) -> None:
    demo.route([0.7, 0.3])
    wait_for(page, lambda: segments(page) == {"v1": "v1 70%", "v2": "v2 30%"})
    rows = page.find_elements(By.CSS_SELECTOR, ".versions tbody tr")
    assert [r.get_attribute("data-version") for r in rows] == ["v1", "v2"]
    assert "active" in rows[0].text
    assert "closed" in rows[0].text  # the breaker
    assert page.find_element(By.CSS_SELECTOR, ".comparison h3").text == "A/B: v1 vs v2"
    time.sleep(1.5)  # a refresh or two more, which must not log errors either
    errors = console_errors(page)
    assert errors == [], f"{len(errors)} console errors: {errors}"


def test_a_routing_change_made_through_the_api_shows_within_3_s(
    demo: Demo, page: webdriver.Chrome
) -> None:
    demo.route([0.7, 0.3])
    wait_for(page, lambda: segments(page).get("v1") == "v1 70%")
    changed = time.monotonic()
    demo.route([0.45, 0.55])
    wait_for(page, lambda: segments(page) == {"v1": "v1 45%", "v2": "v2 55%"}, seconds=5)
    seen = time.monotonic() - changed
    assert seen < 3.0, f"the page showed the new split {seen:.2f} s after the change"


def test_a_canarys_steps_appear_as_they_happen(demo: Demo, page: webdriver.Chrome) -> None:
    demo.route([1.0, 0.0])
    plan = {
        "candidate": "v2",
        "baseline": "v1",
        "steps": [0.2, 0.6, 1.0],
        "min_requests": 10,
        # Longer than two refreshes of the page, so that each step is seen.
        "min_seconds": 2.5,
        # v2 is a forest, v1 a logistic regression: v2 is slower, and that is fine here.
        "max_latency_ratio": 1000.0,
    }
    demo.call("POST", f"/admin/models/{MODEL}/canary", plan)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            demo.infer()
            time.sleep(0.005)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    seen: list[str] = []
    try:

        def current() -> str:
            steps = page.find_elements(By.CSS_SELECTOR, ".steps li.current")
            events = page.find_elements(By.CSS_SELECTOR, ".events li")
            latest = events[0].get_attribute("data-event") if events else ""
            state = f"step {steps[0].get_attribute('data-step')}" if steps else f"{latest}"
            if not seen or seen[-1] != state:
                seen.append(state)
                if state == "step 1":
                    screenshot(page, "status-canary")
            return state

        wait_for(page, lambda: current() in {"promoted", "rolled_back"}, seconds=60)
    finally:
        stop.set()
        sender.join(10)
    steps = [state for state in seen if state.startswith("step") or state == "promoted"]
    assert steps == ["step 0", "step 1", "step 2", "promoted"], f"the page showed {seen}"
    events = page.find_elements(By.CSS_SELECTOR, ".events li")
    shown = [e.get_attribute("data-event") for e in events]
    assert shown[:4] == ["promoted", "step", "step", "started"], f"events, newest first: {shown}"
    history = demo.call("GET", f"/admin/models/{MODEL}/rollouts")["events"]
    assert [e["event"] for e in history][-1] == "promoted"


def confirm(page: webdriver.Chrome, answer: bool) -> str:
    """Answer the confirmation dialog; return the question it asked."""
    dialog = page.find_element(By.ID, "confirm")
    wait_for(page, lambda: dialog.get_attribute("open") is not None)
    question = dialog.find_element(By.ID, "confirm-text").text
    dialog.find_element(By.ID, "confirm-ok" if answer else "confirm-cancel").click()
    return question


def row_button(page: webdriver.Chrome, version: str, action: str) -> WebElement:
    """The button of ``action`` in the row of ``version``."""
    return page.find_element(
        By.CSS_SELECTOR, f'.versions tr[data-version="{version}"] [data-action="{action}"]'
    )


def test_actions_are_confirmed_first_and_then_done_with_the_token(
    demo: Demo, page: webdriver.Chrome
) -> None:
    demo.route([0.7, 0.3])
    wait_for(page, lambda: segments(page).get("v1") == "v1 70%")

    row_button(page, "v2", "set-active").click()
    assert confirm(page, answer=False) == f"Make v2 the active version of {MODEL}?"
    time.sleep(0.5)
    assert demo.call("GET", f"/admin/models/{MODEL}")["active"] == "v1", "cancelled, yet done"

    row_button(page, "v2", "set-active").click()
    confirm(page, answer=True)
    wait_for(page, lambda: demo.call("GET", f"/admin/models/{MODEL}")["active"] == "v2")
    wait_for(page, lambda: "Done" in page.find_element(By.ID, "toast").text)

    row_button(page, "v1", "reset-breaker").click()
    assert "circuit breaker" in confirm(page, answer=True)
    # Not the set-active's toast, still showing: this action's own.
    wait_for(page, lambda: "Done: Reset" in page.find_element(By.ID, "toast").text)

    page.find_element(By.CSS_SELECTOR, f'[data-model="{MODEL}"] header button').click()
    wait_for(page, lambda: page.find_element(By.ID, "confirm").get_attribute("open") is not None)
    for version, weight in (("v1", "80"), ("v2", "20")):
        field = page.find_element(By.CSS_SELECTOR, f'.weights input[name="{version}"]')
        field.clear()
        field.send_keys(weight)
    confirm(page, answer=True)
    wait_for(page, lambda: segments(page) == {"v1": "v1 80%", "v2": "v2 20%"})
    routing = demo.call("GET", f"/admin/models/{MODEL}/routing")
    assert routing["params"]["weights"] == pytest.approx([0.8, 0.2])
    assert console_errors(page) == []


def test_an_action_without_the_token_is_refused(demo: Demo, page: webdriver.Chrome) -> None:
    demo.route([0.7, 0.3])
    status = page.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch("/admin/models/breast_cancer/active", {method: "PUT",
              headers: {"Content-Type": "application/json"}, body: '{"version": "v2"}'})
          .then((r) => done(r.status));"""
    )
    assert status == 401
    assert demo.call("GET", f"/admin/models/{MODEL}")["active"] == "v1"

    page.find_element(By.ID, "forget").click()
    assert page.find_element(By.ID, "login").is_displayed()
    assert page.find_elements(By.CSS_SELECTOR, "[data-model]") == []
    page.find_element(By.ID, "token").send_keys("not-the-token-at-all-0123")
    page.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    message = wait_for(page, lambda: page.find_element(By.ID, "login-error").text)
    assert message == "the admin token is wrong"  # the 403, not a 401 of a poll left over
    assert page.find_elements(By.CSS_SELECTOR, "[data-model]") == []
    assert page.execute_script("return sessionStorage.length") == 0
    console_errors(page)  # the refusals are logged: empty the log for the next test


@pytest.mark.parametrize(("width", "height"), [DESKTOP, PHONE])
def test_it_is_readable_on_a_desktop_and_on_a_phone(
    demo: Demo, page: webdriver.Chrome, width: int, height: int
) -> None:
    demo.route([0.7, 0.3])
    for _ in range(20):
        demo.infer()
    viewport(page, width, height)
    wait_for(page, lambda: segments(page) == {"v1": "v1 70%", "v2": "v2 30%"})
    # Against the screen's width, not innerWidth: a phone's viewport grows to fit
    # content wider than the screen, and would hide the overflow it measures.
    wide = page.execute_script("return document.documentElement.scrollWidth")
    assert wide <= width, f"the page is {wide} px wide on a {width} px screen"
    for selector in (".split", ".versions", '[data-action="set-active"]', "h1"):
        box = page.find_element(By.CSS_SELECTOR, selector).rect
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= width + 0.5, f"{selector} overflows: {box}"
    font = page.execute_script(
        "return parseFloat(getComputedStyle(document.querySelector('.versions td')).fontSize)"
    )
    assert font >= 12, f"table text at {font} px"
    path = screenshot(page, f"status-{width}x{height}")
    assert path.stat().st_size > 10_000
    assert console_errors(page) == []


def test_a_shadow_shows_as_a_mirror_with_its_statistics(demo: Demo, page: webdriver.Chrome) -> None:
    demo.route([1.0, 0.0])
    shadow = {"strategy": "shadow", "params": {"primary": "v1", "mirrors": {"v2": 1.0}}}
    demo.call("PUT", f"/admin/models/{MODEL}/routing", shadow)
    for _ in range(30):
        assert demo.infer() == 200

    def shadow_row() -> str:
        rows = page.find_elements(By.CSS_SELECTOR, '.shadows tr[data-shadow="v2"]')
        return rows[0].text if rows else ""

    chip = wait_for(page, lambda: page.find_elements(By.CSS_SELECTOR, '.chip[data-shadow="v2"]'))
    assert chip[0].text == "shadow → v2 100%"
    assert segments(page) == {"v1": "v1 100%"}
    text = wait_for(page, lambda: "30" in shadow_row() and shadow_row())
    assert text.startswith("v2 of v1 30"), f"the shadow's row reads {text!r}"
    assert console_errors(page) == []


def test_with_workers_each_shows_its_heartbeat_and_revision(browser: webdriver.Chrome) -> None:
    with serving("--workers", "2") as fleet:
        viewport(browser, *DESKTOP)
        browser.get(f"{fleet.admin}/ui/")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()

        def servers() -> list[str]:
            rows = browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
            return [row.text for row in rows]

        def serving_the_demo() -> list[str]:
            shown = servers()
            loaded = [row for row in shown if re.search(rf"{MODEL} r\d+", row)]
            return shown if len(loaded) == 2 else []

        shown = wait_for(browser, serving_the_demo, seconds=60)
        for row in shown:
            assert re.search(r"\ds ago", row), f"no heartbeat in {row!r}"
        leaders = wait_for(browser, lambda: [row for row in servers() if "leader" in row])
        assert len(leaders) == 1, f"the fleet shows {servers()}"
        screenshot(browser, "status-workers")
        assert console_errors(browser) == []
