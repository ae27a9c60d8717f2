"""The HTTP server both sandboxes share: threaded, keep-alive, with recorded messages and a
small pool that posts callbacks back to the service."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class Recorder:
    """Every accepted message, in order; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []

    def add(self, message: dict[str, Any]) -> None:
        with self._lock:
            self.messages.append(message)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            times = [m.get("received_at", 0.0) for m in self.messages]
        return {
            "count": len(times),
            "first": min(times, default=None),
            "last": max(times, default=None),
        }

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()


class CallbackPoster:
    """Posts callbacks after a delay, from a few threads, in the order they were scheduled."""

    def __init__(self, threads: int = 4) -> None:
        self._queue: queue.Queue[tuple[float, Callable[[], None]] | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()
        self.failures = 0

    def later(self, delay: float, action: Callable[[], None]) -> None:
        self._queue.put((time.monotonic() + delay, action))

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            due, action = item
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                action()
            except Exception as exc:  # the service may be down; a sandbox just notes it
                self.failures += 1
                log.warning("sandbox callback failed: %s", exc)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own URL
        return int(response.status)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' sessions expect
    # Headers and body leave in separate writes: without TCP_NODELAY each answer waited for
    # the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True
    server: SandboxServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a sandbox under load would print every request."""

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        if body:  # an empty answer (SendGrid's 202) declares no content type
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(status, json.dumps(data).encode(), headers=headers)

    def sandbox_get(self) -> bool:
        """GET /_sandbox/messages lists what was recorded (DELETE clears it);
        GET /_sandbox/stats says how many, and when the first and last arrived."""
        path = self.path.rstrip("/")
        if path == "/_sandbox/messages":
            self.reply_json(200, self.server.recorder.snapshot())
            return True
        if path == "/_sandbox/stats":
            self.reply_json(200, self.server.recorder.stats())
            return True
        return False

    def do_DELETE(self) -> None:
        if self.path.rstrip("/") == "/_sandbox/messages":
            self.server.recorder.clear()
            self.reply(204)
        else:
            self.reply(404)

    def do_GET(self) -> None:
        if not self.sandbox_get():
            self.reply(404)


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, port: int, handler: type[Handler], *, latency: float = 0.0) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.latency = latency
        self.recorder = Recorder()
        self.callbacks = CallbackPoster()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.callbacks.close()
