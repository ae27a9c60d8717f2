"""The transport under the Twilio SDK: its `HttpClient` interface over a urllib3 pool.

The SDK still builds every request, signs it with the account's credentials and turns error
responses into `TwilioRestException`; this class only moves bytes. The SDK's default transport
goes through `requests`, whose per-call session merging, cookie handling and environment
lookups cost more CPU than the rest of a send (docs/performance.md); at hundreds of sends a
second per core that is the difference between being bound by the rate limit and by Python.

Never retries (a blind retry could text a patient twice) and never logs a request: bodies hold
phone numbers and message text.
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any

import certifi
import urllib3
from twilio.http import HttpClient
from twilio.http.response import Response

#: Connect quickly or give up: nothing has left yet, so the send is safely retried later.
CONNECT_TIMEOUT_SECONDS = 5.0


class PooledTwilioHttpClient(HttpClient):  # type: ignore[misc]
    """Keep-alive connections shared by every sending thread of a process (thread-safe).

    `base_url` (tests, the sandbox, benchmarks) sends every *.twilio.com request there instead.
    """

    def __init__(
        self, *, timeout: float, base_url: str | None = None, max_connections: int = 100
    ) -> None:
        super().__init__(logger=_SILENT, is_async=False, timeout=timeout)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            block=False,
            retries=False,
            timeout=_timeouts(timeout),
            ca_certs=certifi.where(),
        )
        self._timeouts = _timeouts(timeout)
        self._auth_headers: dict[tuple[str, str], str] = {}

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        target = self._target(url)
        if params:
            target += ("&" if "?" in target else "?") + urllib.parse.urlencode(params, doseq=True)
        sent = dict(headers or {})
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data, doseq=True).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if auth is not None:
            sent["Authorization"] = self._basic(auth)
        seconds = timeout if timeout is not None else self.timeout
        reply = self.pool.request(
            method.upper(),
            target,
            body=body,
            headers=sent,
            redirect=allow_redirects,
            timeout=self._timeouts if seconds == self.timeout else _timeouts(seconds),
        )
        return Response(reply.status, reply.data.decode("utf-8", "replace"), reply.headers)

    def _target(self, url: str) -> str:
        if self.base_url is None:
            return url
        parts = urllib.parse.urlsplit(url)
        if parts.hostname and parts.hostname.endswith("twilio.com"):
            return self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return url

    def _basic(self, auth: tuple[str, str]) -> str:
        header = self._auth_headers.get(auth)
        if header is None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            header = self._auth_headers[auth] = f"Basic {token}"
        return header


def _timeouts(seconds: float | None) -> urllib3.Timeout:
    if seconds is None:
        return urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=None)
    return urllib3.Timeout(connect=min(CONNECT_TIMEOUT_SECONDS, seconds), read=seconds)


class _Silent:
    """The SDK's HttpClient wants a logger; this transport has nothing safe to say."""

    def info(self, *args: Any, **kwargs: Any) -> None:
        return None

    debug = warning = error = info


_SILENT: Any = _Silent()
