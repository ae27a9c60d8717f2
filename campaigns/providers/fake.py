"""Fakes for tests: they remember every message and fail on cue, like a provider would."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Callable

from campaigns.providers.base import OutgoingEmail, OutgoingSms, ProviderError, SendReceipt

Failure = Callable[[], ProviderError]


class _Recorder:
    name = "fake"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, list[ProviderError]] = defaultdict(list)
        self._next_failures: list[ProviderError] = []
        self.calls = 0

    def fail_next(self, error: ProviderError) -> None:
        """The next send (to anyone) raises `error`."""
        with self._lock:
            self._next_failures.append(error)

    def fail_for(self, address: str, error: ProviderError, times: int = 1) -> None:
        """The next `times` sends to `address` raise `error`."""
        with self._lock:
            self._failures[address].extend([error] * times)

    def _accept(self, address: str) -> SendReceipt:
        with self._lock:
            self.calls += 1
            if self._next_failures:
                raise self._next_failures.pop(0)
            if self._failures.get(address):
                raise self._failures[address].pop(0)
        return SendReceipt(self.name, f"FAKE{uuid.uuid4().hex}")


class FakeSmsSender(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[OutgoingSms] = []

    def send_sms(self, message: OutgoingSms) -> SendReceipt:
        receipt = self._accept(message.to)
        with self._lock:
            self.sent.append(message)
        return receipt


class FakeEmailSender(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[OutgoingEmail] = []

    def send_email(self, message: OutgoingEmail) -> SendReceipt:
        receipt = self._accept(message.to)
        with self._lock:
            self.sent.append(message)
        return receipt
