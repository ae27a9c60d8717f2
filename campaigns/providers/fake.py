"""Fakes for tests: they remember every message and fail on cue, like a provider would."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Callable

from campaigns.rules.ports import (
    Attempt,
    Lookup,
    LookupVerdict,
    OutgoingEmail,
    OutgoingSms,
    ProviderError,
    SendReceipt,
)

Failure = Callable[[], ProviderError]


class _Recorder:
    name = "fake"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, list[ProviderError]] = defaultdict(list)
        self._next_failures: list[ProviderError] = []
        self._lookup_failures: list[ProviderError] = []
        self._receipts: dict[int, SendReceipt] = {}  # our message id -> its latest receipt
        self.calls = 0
        self.lookups = 0
        #: False: answer every lookup UNSUPPORTED, like an account that cannot be asked.
        self.lookups_supported = True

    def fail_next(self, error: ProviderError) -> None:
        """The next send (to anyone) raises `error`."""
        with self._lock:
            self._next_failures.append(error)

    def fail_for(self, address: str, error: ProviderError, times: int = 1) -> None:
        """The next `times` sends to `address` raise `error`."""
        with self._lock:
            self._failures[address].extend([error] * times)

    def fail_lookup_next(self, error: ProviderError) -> None:
        """The next lookup raises `error` (a RetryableError, say, for a provider outage)."""
        with self._lock:
            self._lookup_failures.append(error)

    def _accept(self, message_id: int, address: str) -> SendReceipt:
        with self._lock:
            self.calls += 1
            if self._next_failures:
                raise self._next_failures.pop(0)
            if self._failures.get(address):
                raise self._failures[address].pop(0)
            receipt = SendReceipt(self.name, f"FAKE{uuid.uuid4().hex}")
            self._receipts[message_id] = receipt
        return receipt

    def _find(self, attempt: Attempt) -> Lookup:
        with self._lock:
            self.lookups += 1
            if self._lookup_failures:
                raise self._lookup_failures.pop(0)
            if not self.lookups_supported:
                return Lookup(LookupVerdict.UNSUPPORTED, evidence="fake: lookups switched off")
            receipt = self._receipts.get(attempt.message_id)
        if receipt is None:
            return Lookup(LookupVerdict.NOT_FOUND, evidence="fake: never accepted this message")
        return Lookup(
            LookupVerdict.FOUND,
            receipt.provider_id,
            "accepted",
            evidence="fake: accepted this message",
        )


class FakeSmsSender(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[OutgoingSms] = []

    def send_sms(self, message: OutgoingSms) -> SendReceipt:
        receipt = self._accept(message.message_id, message.to)
        with self._lock:
            self.sent.append(message)
        return receipt

    def find_sms(self, attempt: Attempt) -> Lookup:
        return self._find(attempt)


class FakeEmailSender(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[OutgoingEmail] = []

    def send_email(self, message: OutgoingEmail) -> SendReceipt:
        receipt = self._accept(message.message_id, message.to)
        with self._lock:
            self.sent.append(message)
        return receipt

    def find_email(self, attempt: Attempt) -> Lookup:
        return self._find(attempt)
