"""The HTTP server both sandboxes share: threaded, keep-alive, with recorded messages, a small
pool that posts callbacks back to the service, and faults injected on demand over HTTP.

Faults (`PUT /_sandbox/faults`, JSON below; `GET` shows it, `DELETE` clears it) apply to send
requests only; the same body on `/_sandbox/faults/lookups` applies to the lookup endpoints:

| field    | meaning                                                                     |
|----------|-----------------------------------------------------------------------------|
| status   | answer this HTTP status with the provider's error body; nothing is recorded |
| delay    | seconds to wait before answering (0)                                        |
| accept   | with a delay: the request is served as usual at once (a send is recorded,   |
|          | its callbacks scheduled) and only its answer waits; without: after the      |
|          | delay the provider's outage status is answered and nothing is recorded      |
| count    | how many requests to fault before the fault clears itself (null: until      |
|          | DELETE)                                                                     |
| fraction | the share of requests faulted, 0-1 (1)                                      |
"""

from __future__ import annotations

import json
import logging
import queue
import random
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

FAULTS_PATH = "/_sandbox/faults"
LOOKUP_FAULTS_PATH = "/_sandbox/faults/lookups"


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


@dataclass(frozen=True)
class Fault:
    status: int | None = None
    delay: float = 0.0
    accept: bool = False
    count: int | None = None
    fraction: float = 1.0

    @classmethod
    def parse(cls, data: Any) -> Fault:
        """A fault from its JSON; ValueError says what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError("a fault is a JSON object")
        unknown = set(data) - {"status", "delay", "accept", "count", "fraction"}
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        status, count = data.get("status"), data.get("count")
        delay, fraction = data.get("delay", 0.0), data.get("fraction", 1.0)
        accept = data.get("accept", False)
        if status is not None and not (_is_int(status) and 100 <= status <= 599):
            raise ValueError("status is an HTTP status (100-599) or null")
        if not (_is_number(delay) and delay >= 0):
            raise ValueError("delay is a number of seconds, 0 or more")
        if not isinstance(accept, bool):
            raise ValueError("accept is true or false")
        if count is not None and not (_is_int(count) and count >= 1):
            raise ValueError("count is a whole number, 1 or more, or null")
        if not (_is_number(fraction) and 0 <= fraction <= 1):
            raise ValueError("fraction is a number from 0 to 1")
        if status is None and not delay:
            raise ValueError("a fault needs a status or a delay")
        if status is not None and accept:
            raise ValueError("a fault with a status records nothing: accept must be false")
        return cls(status, float(delay), accept, count, float(fraction))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class FaultSlot:
    """The fault set for one kind of request; thread-safe, so concurrent requests share `count`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault: Fault | None = None
        self._left: int | None = None
        self._random = random.Random()

    def set(self, fault: Fault) -> None:
        with self._lock:
            self._fault, self._left = fault, fault.count

    def clear(self) -> None:
        with self._lock:
            self._fault = self._left = None

    def show(self) -> dict[str, Any] | None:
        with self._lock:
            if self._fault is None:
                return None
            return {**asdict(self._fault), "count": self._left}

    def take(self) -> Fault | None:
        """The fault for this request, if it is one of those faulted; counts it down."""
        with self._lock:
            fault = self._fault
            if fault is None or self._random.random() >= fault.fraction:
                return None
            if self._left is not None:
                self._left -= 1
                if self._left <= 0:
                    self._fault = self._left = None
            return fault


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
                log.warning(
                    "sandbox callback failed: %s",
                    exc,
                    extra={"event": "sandbox.common.sandbox_callback_failed"},
                )


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - our own URL
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own URL
        return int(response.status)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' sessions expect
    # Headers and body leave in separate writes: without TCP_NODELAY each answer waited for
    # the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True
    server: SandboxServer
    #: What a slow fault without `accept` answers once its delay is over (a provider outage).
    outage_status = 503

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a sandbox under load would print every request."""

    @property
    def route(self) -> str:
        return urllib.parse.urlsplit(self.path).path.rstrip("/")

    def query(self) -> dict[str, str]:
        """The query string's parameters, the first value of each."""
        pairs = urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query)
        return dict(reversed(pairs))

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
        try:
            self.send_response(status)
            if body:  # an empty answer (SendGrid's 202) declares no content type
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except ConnectionError:
            # The client gave up first (a slow fault outlasting its timeout): nobody to tell.
            self.close_connection = True

    def reply_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(status, json.dumps(data).encode(), headers=headers)

    def fault_reply(self, status: int) -> None:
        """Answer `status` with the provider's error body; each sandbox says it its way."""
        self.reply_json(status, {"status": status})

    def inject(self, faults: FaultSlot) -> float | None:
        """Apply the fault set on `faults` to this request.

        None: the fault answered already (nothing may be recorded). Otherwise the request goes
        on as usual, and its answer is to wait the seconds returned (0 for no fault)."""
        fault = faults.take()
        if fault is None:
            return 0.0
        if fault.accept:
            return fault.delay
        time.sleep(fault.delay)
        self.fault_reply(fault.status if fault.status is not None else self.outage_status)
        return None

    def sandbox_get(self) -> bool:
        """GET /_sandbox/messages lists what was recorded (DELETE clears it);
        GET /_sandbox/stats says how many, and when the first and last arrived;
        GET /_sandbox/faults (and /lookups) shows the fault set, or null."""
        path = self.route
        if path == "/_sandbox/messages":
            self.reply_json(200, self.server.recorder.snapshot())
            return True
        if path == "/_sandbox/stats":
            self.reply_json(200, self.server.recorder.stats())
            return True
        slot = self.server.fault_slot(path)
        if slot is not None:
            self.reply_json(200, slot.show())
            return True
        return False

    def do_PUT(self) -> None:
        body = self.body()
        slot = self.server.fault_slot(self.route)
        if slot is None:
            self.reply(404)
            return
        try:
            fault = Fault.parse(json.loads(body or b"null"))
        except ValueError as exc:
            self.reply_json(400, {"error": str(exc)})
            return
        slot.set(fault)
        self.reply_json(200, slot.show())

    def do_DELETE(self) -> None:
        path = self.route
        slot = self.server.fault_slot(path)
        if path == "/_sandbox/messages":
            self.server.clear()
            self.reply(204)
        elif slot is not None:
            slot.clear()
            self.reply(204)
        else:
            self.reply(404)

    def do_GET(self) -> None:
        if not self.sandbox_get():
            self.api_get()

    def api_get(self) -> None:
        """The provider's own GET endpoints; none by default."""
        self.reply(404)


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, port: int, handler: type[Handler], *, latency: float = 0.0) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.latency = latency
        self.recorder = Recorder()
        self.callbacks = CallbackPoster()
        self.faults = FaultSlot()  # on sends
        self.lookup_faults = FaultSlot()  # on the lookup endpoints

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def fault_slot(self, path: str) -> FaultSlot | None:
        return {FAULTS_PATH: self.faults, LOOKUP_FAULTS_PATH: self.lookup_faults}.get(path)

    def clear(self) -> None:
        """Forget every message (DELETE /_sandbox/messages); sandboxes add their own stores."""
        self.recorder.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up mid-answer is not the sandbox's error
        super().handle_error(request, client_address)

    def start(self) -> threading.Thread:
        # A short poll: stop() waits up to one interval, and tests stop a sandbox each.
        thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.callbacks.close()


def our_message_id(value: Any) -> int | None:
    """Our message id as an int, from a callback's `m=` or a custom arg; None if absent."""
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isdigit() else None
