"""The console in a real browser (Debian's chromium + chromium-driver, driven by selenium)
against real RabbitMQ, Redis, PostgreSQL, an ``ics-sms worker``, ``ics-sms receiver`` and
``ics-sms sandbox``, each its own process, as an operator meets them.

The browser is required under CI=true (a missing chromium fails, never skips). With
``ICS_SMS_CONSOLE_SCREENSHOTS=DIR`` the test saves every page at 1280 px and 390 px there
(the README's and docs/console's pictures come from that). With ``RABBITMQ_MANAGEMENT_URL``
(``.ci/run`` sets it when the plugin answers) the health page reads unacked counts too.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from redis import Redis

from ics_sms.broker.admin import declare_topology, delete_topology
from ics_sms.producers.publisher import Producer
from ics_sms.schemas.messages import SendRequest
from ics_sms.schemas.settings import Settings
from ics_sms.stores.senders import open_sender_source

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
PASSWORD = "operator password 1"
TOKEN = "ics-token-of-acme-0123456789"
ALERTS_TOKEN = "ics-token-of-alerts-987654"
ENTITY = "1201159100000000000"
CAMPAIGN_SIZE = 40
WAIT_S = 60.0
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    problem = _browser_missing()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs the browser: {problem}")
        pytest.skip(problem)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ics-sms-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_window_size(*WIDTHS["desktop"])
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Stack:
    """The services of one test and how to reach them."""

    settings: Settings
    env: dict[str, str]
    console_url: str
    processes: list[subprocess.Popen[bytes]]
    logs: Path

    def cli(self, *args: str, input: str | None = None) -> str:
        run = subprocess.run([sys.executable, "-m", "ics_sms", *args], env=self.env,
                             input=input, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return run.stdout

    def start(self, name: str, *args: str) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "ics_sms", *args], env=self.env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                         for p in sorted(self.logs.glob("*.log")))


def _wait_http(url: str, stack: Stack) -> None:
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + WAIT_S
    while True:
        for process in stack.processes:
            assert process.poll() is None, f"a service exited:\n{stack.output()}"
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=2)
        try:
            connection.request("GET", parts.path or "/")
            if connection.getresponse().status < 500:
                return
        except OSError:
            pass
        finally:
            connection.close()
        assert time.monotonic() < deadline, f"{url} never answered:\n{stack.output()}"
        time.sleep(0.2)


@pytest.fixture
def stack(rabbitmq_url: str, redis_url: str, postgres_url: str,
          tmp_path: Path) -> Iterator[Stack]:
    namespace = f"t{uuid.uuid4().hex[:10]}."
    ports = {name: _free_port() for name in ("sandbox", "receiver", "console", "metrics",
                                             "receiver_metrics")}
    settings = Settings(
        broker_url=rabbitmq_url, namespace=namespace, redis_url=redis_url,
        senders_url=postgres_url, senders_key=Fernet.generate_key().decode(),
        senders_file=tmp_path / "senders.toml", senders_reload_s=0.5,
        public_url=f"http://127.0.0.1:{ports['receiver']}",
        ics_url=f"http://127.0.0.1:{ports['sandbox']}",
        callback_secret="browser-test-callback-secret-of-32-bytes",
        console_port=ports["console"], metrics_port=ports["metrics"],
        receiver_metrics_port=ports["receiver_metrics"], linger_ms=5,
        sender_pause_s=0.2, sender_unauthorized_after_s=1.0, connect_retry_s=10,
        promo_window_start="00:00", promo_window_end="00:00", log_format="json",
        rabbitmq_management_url=os.environ.get("RABBITMQ_MANAGEMENT_URL") or None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICS_SMS_")}
    env.update(settings.to_environment())
    declare_topology(rabbitmq_url, settings.topology)
    logs = tmp_path / "logs"
    logs.mkdir()
    stack = Stack(settings, env, f"http://127.0.0.1:{ports['console']}", [], logs)
    try:
        stack.start("sandbox", "sandbox", "--port", str(ports["sandbox"]), "--no-senders",
                    "--account", f"acme:{TOKEN}", "--account", f"alerts:{ALERTS_TOKEN}",
                    "--receipt-delay-ms", "100", "--delivery-ratio", "1")
        stack.start("receiver", "receiver", "--port", str(ports["receiver"]))
        stack.start("worker", "worker")
        stack.cli("console", "users", "add", "ada", "--role", "admin", "--password-stdin",
                  input=f"{PASSWORD}\n")
        stack.cli("console", "users", "add", "vic", "--role", "viewer", "--password-stdin",
                  input=f"{PASSWORD}\n")
        stack.start("console", "console")
        _wait_http(settings.ics_url.unicode_string(), stack)
        _wait_http(f"{settings.public_url}healthz", stack)
        _wait_http(f"http://127.0.0.1:{ports['metrics']}/healthz", stack)
        _wait_http(f"{stack.console_url}/login", stack)
        yield stack
    finally:
        for process in stack.processes:
            process.terminate()
        for process in stack.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        delete_topology(rabbitmq_url, settings.topology)
        client = Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"ics-sms:{namespace}*", count=10_000))
        if keys:
            client.delete(*keys)
        client.close()


class Page:
    """The browser, with the few moves an operator makes."""

    def __init__(self, driver: Any, stack: Stack, shots: Path | None) -> None:
        from selenium.webdriver.common.by import By

        self.driver = driver
        self.stack = stack
        self.by = By
        self.shots = shots

    def open(self, path: str) -> None:
        self.driver.get(self.stack.console_url + path)

    def find(self, css: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def fill(self, values: dict[str, str]) -> None:
        for field, value in values.items():
            element = self.find(f"[name='{field}']")
            if element.get_attribute("type") == "radio":
                self.find(f"[name='{field}'][value='{value}']").click()
                continue
            element.clear()
            element.send_keys(value)

    def submit(self, button_css: str) -> None:
        """Click and wait until the next page replaced this one (a mark left on this
        document's window is gone, and the new document is loaded)."""
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.execute_script("window.icsOldPage = true;")
        self.find(button_css).click()
        WebDriverWait(self.driver, WAIT_S).until(lambda d: d.execute_script(
            "return window.icsOldPage === undefined && document.readyState === 'complete';"))

    def text(self) -> str:
        text: str = self.find("body").text
        return text

    def shows(self, css: str, text: str) -> bool:
        """Whether an element ``css`` is on the page and holds ``text``."""
        return any(text in e.text for e in self.driver.find_elements(self.by.CSS_SELECTOR, css))

    def until(self, check: Callable[[], bool], what: str, reload: bool = False) -> None:
        """Wait (up to WAIT_S) until ``check`` holds, reloading the page between looks."""
        deadline = time.monotonic() + WAIT_S
        while not check():
            assert time.monotonic() < deadline, \
                f"never saw {what}; page:\n{self.text()}\n{self.stack.output()}"
            time.sleep(0.3)
            if reload:
                self.driver.refresh()

    def shoot(self, name: str) -> None:
        """The page at each width, whole, into the screenshots folder (when asked)."""
        if self.shots is None:
            return
        for width_name, (width, height) in WIDTHS.items():
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1,
                       "mobile": width < 600}
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            full = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                        {**metrics, "height": max(int(full), height)})
            self.driver.save_screenshot(str(self.shots / f"{name}-{width_name}.png"))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _publish(stack: Stack, requests: list[SendRequest]) -> None:
    source = open_sender_source(stack.settings)
    try:
        senders = source.load().senders
    finally:
        source.close()
    with Producer(stack.settings.broker_urls[0], stack.settings.topology, senders) as producer:
        producer.publish_many(requests)


def _campaign(campaign_id: str, sender: str, count: int) -> list[SendRequest]:
    return [SendRequest(message_id=f"{campaign_id}-{i}", campaign_id=campaign_id,
                        to=f"+9198{i:08d}", text=f"Your code is {1000 + i}", sender=sender,
                        dlt_template_id="1207161234567890123") for i in range(count)]


def _raw_post(stack: Stack, path: str, body: str, cookie: str = "") -> int:
    parts = urllib.parse.urlsplit(stack.console_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    try:
        connection.request("POST", path, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_an_operator_configures_sends_watches_and_replays_in_the_browser(
        driver: Any, stack: Stack) -> None:
    shots_dir = os.environ.get("ICS_SMS_CONSOLE_SCREENSHOTS")
    shots = Path(shots_dir) if shots_dir else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    page = Page(driver, stack, shots)

    # Logged out: every page leads to the login; a POST without a session is refused.
    page.open("/senders")
    assert driver.current_url.endswith("/login")
    assert _raw_post(stack, "/senders/new", "name=x") == 403
    page.shoot("login")
    page.fill({"name": "ada", "password": PASSWORD})
    page.submit("main button[type=submit]")
    assert "No senders yet" in page.text()

    # A POST from this browser's session but without the form's CSRF token is refused.
    cookie = "ics_console=" + driver.get_cookie("ics_console")["value"]
    assert _raw_post(stack, "/senders/new", "name=x&type=transactional", cookie) == 403
    assert driver.get_cookie("ics_console")["httpOnly"] is True
    assert driver.get_cookie("ics_console")["sameSite"] == "Strict"

    # Add a sender: a bad Sender ID is refused next to its field, then fixed.
    page.submit("#add-sender")
    form = {"name": "acme-otp", "type": "service_implicit", "sender_id": "ACME12",
            "username": "acme", "token": TOKEN, "dlt_entity_id": ENTITY, "rate_per_s": "500"}
    page.fill(form)
    page.submit("#save-sender")
    error = page.find("#sender_id-error").text
    assert "header is exactly 6 letters A-Z (DLT)" in error
    assert page.find("#sender_id").get_attribute("aria-invalid") == "true"
    assert TOKEN not in driver.page_source
    page.shoot("sender-form-refused")
    page.fill({**form, "sender_id": "ACMEIN"})
    page.submit("#save-sender")
    tracking = page.find("#tracking-url").get_attribute("value")
    assert re.fullmatch(rf"{re.escape(str(stack.settings.public_url))}ics/[\w-]+/receipts",
                        tracking)
    assert TOKEN not in driver.page_source
    page.shoot("sender")

    # Send a test SMS and see ICS's answer.
    page.fill({"to": "+919812345678", "dlt_template_id": "1207161234567890123",
               "text": "console test"})
    page.submit("#test-form button[type=submit]")
    assert "accepted by ICS: mid=" in page.find("#test-answer").text

    # The running worker (started with no senders) sends with the new sender: a campaign
    # reaches 100 % on its page.
    _publish(stack, _campaign("spring", "acme-otp", CAMPAIGN_SIZE))
    page.open("/campaigns/spring?refresh=0")
    page.until(lambda: page.shows(".percent", "100 %"), "the campaign at 100 %",
               reload=True)
    assert f"{CAMPAIGN_SIZE}" in page.find("#states").text
    page.shoot("campaign")
    page.open("/campaigns?refresh=0")
    assert "spring" in page.text()
    page.shoot("campaigns")

    # Look up one message by id, then by phone number, and see its timeline.
    page.open("/messages")
    page.fill({"q": "spring-7"})
    page.submit("main form button[type=submit]")
    page.until(lambda: page.shows("#message-state", "delivered"),
               "message spring-7 delivered", reload=True)
    assert "submitted" in page.find("#timeline").text
    page.shoot("message")
    page.open("/messages")
    page.fill({"q": "+919800000007"})
    page.submit("main form button[type=submit]")
    assert "spring-7" in page.text()

    # A sender with a token ICS refuses: its messages end as dead letters; the operator
    # puts the right token in and replays them from the dead letters page.
    page.open("/senders/new")
    page.fill({"name": "alerts", "type": "transactional", "sender_id": "ALERTS",
               "username": "alerts", "token": "a-token-ics-refuses", "dlt_entity_id": ENTITY})
    page.submit("#save-sender")
    _publish(stack, _campaign("outage", "alerts", 2))
    page.open("/dead-letters")
    page.until(lambda: "sender_unauthorized" in page.text(), "the dead letters", reload=True)
    page.until(lambda: len(driver.find_elements(page.by.CSS_SELECTOR, "#letters tbody tr"))
               == 2, "both dead letters", reload=True)
    page.shoot("dead-letters")
    page.open("/senders/alerts/edit")
    page.fill({"token": ALERTS_TOKEN})
    page.submit("#save-sender")
    assert "updated sender alerts: token" in page.text()
    page.open("/dead-letters")
    page.submit("#reasons form.inline button")
    assert "replayed 2, kept 0" in page.text()
    page.open("/campaigns/outage?refresh=0")
    page.until(lambda: page.shows("#states", "delivered 2"),
               "the replayed messages delivered", reload=True)

    # Every change is audited and shown; the health page sees the worker and the receiver.
    page.open("/senders")
    history = page.find("#history").text
    assert "ada@console senders add acme-otp" in history
    assert "ada@console senders set alerts: token" in history
    page.shoot("senders")
    page.open("/health?refresh=0")
    page.until(lambda: page.shows("#workers", "consuming"), "the worker's heartbeat",
               reload=True)
    assert "alive" in page.find("#receiver").text
    queues = page.find("#queues").text
    if stack.settings.rabbitmq_management_url is None:
        assert "unknown" in queues  # passive declares cannot count unacked messages
    else:
        assert "unknown" not in queues and "RabbitMQ management API" in page.text()
    assert "Open around the clock" in page.find("#window").text
    page.shoot("health")

    # A viewer looks but cannot change senders.
    page.submit("header form.logout button")
    page.fill({"name": "vic", "password": PASSWORD})
    page.submit("main button[type=submit]")
    page.open("/senders/acme-otp")
    assert not driver.find_elements(page.by.CSS_SELECTOR, "#edit-sender")
    page.open("/senders/new")
    assert "admin role needed" in driver.page_source
