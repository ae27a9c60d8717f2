"""Test providers that watch the database and the send path from the inside."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, select

from campaigns.rules.ports import (
    Attempt,
    Lookup,
    LookupVerdict,
    OutgoingSms,
    SendReceipt,
)
from campaigns.storage.models import AuditEvent, Patient

#: Audit actions of the changes that stop a patient's texts; each lists (`in_flight`) the
#: messages it found already with a provider, which it could no longer stop.
CANCELLATIONS = ("loss_recorded", "loss_hold", "opted_out", "paused", "stopped")


class WatchingSms:
    """On every call, before anything else, looks (in its own connection) for cancellations of
    this patient's texts that have committed. Each must list this message as in flight: a
    cancellation that committed before the call's go-ahead, and does not, was not honoured.

    The call then takes a while (a random few milliseconds), as a real one does: a cancellation
    committing meanwhile is allowed, and lists the message itself.

    `hold`: the first call it picks stays inside the provider (so in flight, and its batch
    unfinished) until the test sets `resume`; `held` is set once it is there."""

    name = "watching"

    def __init__(
        self,
        url: str,
        delay: tuple[float, float] = (0.005, 0.02),
        hold: Callable[[OutgoingSms], bool] | None = None,
    ) -> None:
        self.engine = create_engine(
            url.replace("postgresql://", "postgresql+psycopg://", 1),
            isolation_level="AUTOCOMMIT",
            **({"pool_size": 16} if url.startswith("postgresql") else {}),
        )
        self.delay = delay
        self.violations: list[str] = []
        self.sent: list[OutgoingSms] = []
        self.calls = 0
        self.lock = threading.Lock()
        self._hold = hold
        self.held = threading.Event()
        self.held_message: OutgoingSms | None = None
        self.resume = threading.Event()

    def send_sms(self, message: OutgoingSms) -> SendReceipt:
        with self.engine.connect() as connection:
            found = connection.execute(
                select(AuditEvent.action, AuditEvent.detail)
                .join(Patient, Patient.id == AuditEvent.patient_id)
                .where(Patient.phone == message.to, AuditEvent.action.in_(CANCELLATIONS))
            ).all()
        breaches = [
            f"message {message.message_id} called after {action} (in flight: "
            f"{detail.get('in_flight')})"
            for action, detail in found
            if _stops_texts(action, detail)
            and message.message_id not in (detail.get("in_flight") or [])
        ]
        if self._hold is not None and not self.held.is_set() and self._hold(message):
            with self.lock:
                first = not self.held.is_set()
                if first:
                    self.held_message = message
                    self.held.set()
            if first:
                assert self.resume.wait(60), "the test never resumed the held call"
        time.sleep(random.uniform(*self.delay))
        with self.lock:
            self.calls += 1
            self.violations.extend(breaches)
            self.sent.append(message)
        return SendReceipt(self.name, f"W{message.message_id}")

    def find_sms(self, attempt: Attempt) -> Lookup:
        with self.lock:
            found = any(m.message_id == attempt.message_id for m in self.sent)
        verdict = LookupVerdict.FOUND if found else LookupVerdict.NOT_FOUND
        return Lookup(verdict, f"W{attempt.message_id}" if found else None)

    def close(self) -> None:
        self.engine.dispose()


def _stops_texts(action: str, detail: dict[str, Any]) -> bool:
    return action != "opted_out" or detail.get("channel") == "sms"


class HeldLimiter:
    """A rate limiter whose slots are all held until the test releases them."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.waiting = 0
        self.all_waiting = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        with self._lock:
            self.waiting += 1
            if self.waiting >= self.expected:
                self.all_waiting.set()
        assert self.release.wait(30), "the test never released the rate limit"
        return 0.0


class BlockingSms:
    """Holds every send inside the provider call until released."""

    name = "blocking"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sent: list[OutgoingSms] = []

    def send_sms(self, message: OutgoingSms) -> SendReceipt:
        self.entered.set()
        assert self.release.wait(30), "test never released the provider"
        self.sent.append(message)
        return SendReceipt(self.name, f"B{message.message_id}")

    def find_sms(self, attempt: Attempt) -> Lookup:
        found = any(m.message_id == attempt.message_id for m in self.sent)
        return Lookup(LookupVerdict.FOUND if found else LookupVerdict.NOT_FOUND)
