"""``ics-sms demo --console``: the demo's console answers with the printed login and shows
the demo's campaign; Ctrl-C ends it cleanly."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from tests.console.conftest import csrf_of

WAIT_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_demo_console_shows_the_demo_campaign() -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICS_SMS_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "ics_sms", "demo", "--messages", "200", "--json",
         "--console", str(port)], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert demo.stderr is not None
        lines = []
        deadline = time.monotonic() + WAIT_S
        while "stays up until Ctrl-C" not in "".join(lines):
            assert time.monotonic() < deadline and demo.poll() is None, "".join(lines)
            lines.append(demo.stderr.readline())
        login = re.search(r"console: (\S+)\s+log in as (\S+) / (\S+)", "".join(lines))
        assert login is not None, lines
        url, name, password = login.groups()
        assert url == f"http://127.0.0.1:{port}/"

        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(url + "login", timeout=10) as page:
            csrf = csrf_of(page.read().decode())
        form = urllib.parse.urlencode({"name": name, "password": password, "csrf": csrf})
        with opener.open(url + "login", data=form.encode(), timeout=10) as page:
            assert page.url.endswith("/senders")
            senders = page.read().decode()
        assert "demo-otp" in senders and "demo-offers" in senders
        with opener.open(url + "campaigns?refresh=0", timeout=10) as page:
            campaigns = page.read().decode()
        assert re.search(r'data-campaign="demo-\w+"', campaigns)
        assert "100 %" in campaigns
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 0
