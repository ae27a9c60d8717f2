"""The embedded default: every message is accepted and kept in the database, nothing leaves.

The send path already records what each patient received on the message row; the outbox
provider only accepts the message and gives it an id, and the staff UI's outbox view shows it.
"""

from __future__ import annotations

import uuid

from campaigns.providers.base import OutgoingEmail, OutgoingSms, SendReceipt


class OutboxSmsSender:
    name = "outbox"

    def send_sms(self, message: OutgoingSms) -> SendReceipt:
        return SendReceipt(self.name, f"OBSM{uuid.uuid4().hex}")


class OutboxEmailSender:
    name = "outbox"

    def send_email(self, message: OutgoingEmail) -> SendReceipt:
        return SendReceipt(self.name, f"OBEM{uuid.uuid4().hex}")
