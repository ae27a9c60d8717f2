"""What every request passes through, whichever part of the app answers it.

- Host check: a request naming a host that is not ours answers 400 (a forged Host header must
  not steer links or cookies).
- Body limit: a request body larger than the limit is refused with 413 while it arrives, so a
  huge (or endless, chunked) upload never sits in memory.
- Security headers on every response: no MIME sniffing; on HTML pages a Content-Security-Policy
  with no inline script and no framing, Referrer-Policy, and `no-store` on staff pages; HSTS
  when the public URL is https. A route that set its own value keeps it.
- The access log: one line per request with the method, the route *template* (so tokens in
  /b/<token> and /u/<token>, ids and query strings never reach the log), the status, the time
  taken and the signed-in staff member's id; and the same as metrics (requests by route,
  method and status; time by route).
- A request id: the caller's X-Request-ID if it is a plain token, else a new one; on every log
  line written while the request is answered (campaigns.logs), and on the response.

A pure ASGI middleware: it sits on the path of every patient's text, so it costs microseconds.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from campaigns import logs, metrics
from campaigns.settings import Settings

log = logging.getLogger("campaigns.access")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Header = tuple[bytes, bytes]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-src 'self'; "
    "frame-ancestors 'none'"
)
HSTS = "max-age=63072000; includeSubDomains"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class TooLarge(Exception):
    pass


class Protection:
    def __init__(
        self, app: ASGIApp, settings: Settings, body_limits: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.hosts = settings.hosts
        self.limit = settings.max_body_bytes
        self.body_limits = body_limits or {}
        self.https = settings.https or settings.public_https
        self._paths: dict[Any, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 0, "too_large": False, "replaced": False}
        given = _headers(scope).get("x-request-id", "")
        state["request_id"] = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        token = logs.REQUEST_ID.set(state["request_id"])
        try:
            await self._handle(scope, receive, send, state)
        finally:
            self._done(scope, state, started)
            logs.REQUEST_ID.reset(token)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, state: dict[str, Any]
    ) -> None:
        headers = _headers(scope)
        host = headers.get("host", "")
        if _hostname(host) not in self.hosts:
            state["status"] = 400
            await _plain(send, 400, "Unknown host.")
            return
        limit = self.body_limits.get(scope.get("path", ""), self.limit)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            state["status"] = 413
            await _plain(send, 413, "The request is too large.")
            return
        path = scope.get("path", "")
        staff = path.startswith("/staff") or path == "/metrics"
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    state["too_large"] = True
                    raise TooLarge
            return message

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                if state["too_large"]:  # the app turned our refusal into its own error
                    state["replaced"] = True
                    state["status"] = 413
                    await _plain(send, 413, "The request is too large.")
                    return
                state["status"] = message["status"]
                secured = self._secured(list(message.get("headers", [])), staff)
                message["headers"] = [*secured, (b"x-request-id", state["request_id"].encode())]
            elif state["replaced"]:
                return
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except TooLarge:
            if state["status"] == 0:
                state["status"] = 413
                await _plain(send, 413, "The request is too large.")

    def _secured(
        self, headers: list[tuple[bytes, bytes]], staff: bool
    ) -> list[tuple[bytes, bytes]]:
        present = {name.lower() for name, _ in headers}
        added = [(b"x-content-type-options", b"nosniff")]
        html = any(
            name.lower() == b"content-type" and value.startswith(b"text/html")
            for name, value in headers
        )
        if html:
            if b"content-security-policy" not in present:
                added.append((b"content-security-policy", CSP.encode()))
                added.append((b"x-frame-options", b"DENY"))
            if b"referrer-policy" not in present:
                added.append((b"referrer-policy", b"same-origin"))
        if staff and b"cache-control" not in present:
            added.append((b"cache-control", b"no-store"))
        if self.https:
            added.append((b"strict-transport-security", HSTS.encode()))
        return headers + [(name, value) for name, value in added if name not in present]

    def _done(self, scope: Scope, state: dict[str, Any], started: float) -> None:
        took = time.perf_counter() - started
        template = self._template(scope)
        route = template if template != "-" else "unmatched"
        method = scope.get("method", "?")
        metrics.HTTP_REQUESTS.labels(
            route, method if method in _METHODS else "other", str(state["status"])
        ).inc()
        metrics.HTTP_SECONDS.labels(route).observe(took)
        if not log.isEnabledFor(logging.INFO):
            return
        staff = (scope.get("state") or {}).get("staff")
        log.info(
            "%s %s %d %.1fms user=%s",
            method,
            template,
            state["status"],
            took * 1000,
            staff.user.id if staff is not None else "-",
            extra={"event": "http.request"},
        )

    def _template(self, scope: Scope) -> str:
        """The matched route's path template; never the path itself (it may hold a token)."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return "-"
        if endpoint not in self._paths:
            app = scope.get("app")
            routes = getattr(getattr(app, "router", None), "routes", [])
            found = next((r for r in routes if getattr(r, "endpoint", None) is endpoint), None)
            found = found or next((r for r in routes if getattr(r, "app", None) is endpoint), None)
            self._paths[endpoint] = getattr(found, "path", "-") or "-"
        return self._paths[endpoint]


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }


def _hostname(host: str) -> str:
    """The host name of a Host header (without its port; IPv6 without brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
