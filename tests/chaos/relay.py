"""An HTTP relay in front of the receiver that keeps a copy of every receipt POST.

The sandbox posts receipts to the relay (``ICS_SMS_PUBLIC_URL`` points at it); the relay
forwards each request unchanged to the receiver and records the request and the answer,
so a scenario can replay exactly what ICS sent. When the receiver cannot be reached the
relay answers 502, which ICS (the sandbox) retries like any 5xx.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.chaos.harness import http_request

__all__ = ["Captured", "ReceiptRelay"]


@dataclass(frozen=True, slots=True)
class Captured:
    path: str
    content_type: str
    body: bytes
    status: int
    answer: bytes


class ReceiptRelay:
    def __init__(self, target_port: int) -> None:
        self.target = f"http://127.0.0.1:{target_port}"
        self.captured: list[Captured] = []
        self._lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                content_type = self.headers.get("Content-Type", "application/json")
                try:
                    status, answer = http_request(relay.target + self.path, "POST", body,
                                                  {"Content-Type": content_type})
                except OSError as exc:
                    status, answer = 502, f'{{"relay": "{type(exc).__name__}"}}'.encode()
                with relay._lock:
                    relay.captured.append(Captured(self.path, content_type, body, status,
                                                   answer))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads the captures, not a log."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="relay",
                                        daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<ReceiptRelay {self.url} -> {self.target} captured={len(self.captured)}>"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def snapshot(self) -> list[Captured]:
        with self._lock:
            return list(self.captured)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
