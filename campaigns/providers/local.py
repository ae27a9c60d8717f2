"""The embedded default: every message is accepted and kept in the database, nothing leaves.

The send path already records what each patient received on the message row; the local
provider only accepts the message and gives it an id, and the staff UI's outbox view shows it.
(Called "outbox" before: that word is the send table's, so the setting's old value is still
read as "local".)
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict

from campaigns.rules.ports import (
    Attempt,
    Lookup,
    LookupVerdict,
    OutgoingEmail,
    OutgoingSms,
    SendReceipt,
)

#: How many of our message ids each channel remembers: far more than can be in doubt at once.
REMEMBERED = 100_000


class _Issued:
    """The provider ids this process issued, by our message id; bounded, thread-safe."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self._lock = threading.Lock()
        self._ids: OrderedDict[int, str] = OrderedDict()
        self.limit = limit

    def add(self, message_id: int, provider_id: str) -> None:
        with self._lock:
            self._ids[message_id] = provider_id
            self._ids.move_to_end(message_id)
            while len(self._ids) > self.limit:
                self._ids.popitem(last=False)

    def get(self, message_id: int) -> str | None:
        with self._lock:
            return self._ids.get(message_id)


# Shared by every sender of the process, so a lookup finds what another instance issued.
_SMS, _EMAIL = _Issued(), _Issued()


def _find(issued: _Issued, attempt: Attempt) -> Lookup:
    provider_id = issued.get(attempt.message_id)
    if provider_id is not None:
        return Lookup(
            LookupVerdict.FOUND, provider_id, "accepted", evidence="outbox: issued by this process"
        )
    # Not remembered (another process, a restart, or never accepted). NOT_FOUND is safe here,
    # unlike for a real provider: the outbox never delivers anything to anyone, so "resending"
    # only records the message again and cannot reach a patient twice.
    return Lookup(
        LookupVerdict.NOT_FOUND,
        evidence="outbox: not issued by this process; the outbox delivers nothing",
    )


class LocalSmsSender:
    name = "local"

    def send_sms(self, message: OutgoingSms) -> SendReceipt:
        receipt = SendReceipt(self.name, f"OBSM{uuid.uuid4().hex}")
        _SMS.add(message.message_id, receipt.provider_id)
        return receipt

    def find_sms(self, attempt: Attempt) -> Lookup:
        return _find(_SMS, attempt)


class LocalEmailSender:
    name = "local"

    def send_email(self, message: OutgoingEmail) -> SendReceipt:
        receipt = SendReceipt(self.name, f"OBEM{uuid.uuid4().hex}")
        _EMAIL.add(message.message_id, receipt.provider_id)
        return receipt

    def find_email(self, attempt: Attempt) -> Lookup:
        return _find(_EMAIL, attempt)
