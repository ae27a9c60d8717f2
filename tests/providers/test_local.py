"""The embedded outbox provider remembers what it issued, so a lookup in the same process
finds it; what it does not remember was never delivered to anyone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from campaigns.providers.local import LocalEmailSender, LocalSmsSender, _Issued
from campaigns.rules.ports import Attempt, LookupVerdict, OutgoingEmail, OutgoingSms


def attempt(message_id: int) -> Attempt:
    return Attempt(message_id, "+447400000001", "Santi: a tip", None, datetime.now(UTC))


def test_every_sender_of_the_process_finds_what_one_issued() -> None:
    sms = LocalSmsSender().send_sms(
        OutgoingSms(9001, "+447400000001", "Santi: a tip", datetime.now(UTC) + timedelta(hours=1))
    )
    found = LocalSmsSender().find_sms(attempt(9001))
    assert (found.verdict, found.provider_id) == (LookupVerdict.FOUND, sms.provider_id)
    assert LocalSmsSender().find_sms(attempt(9002)).verdict is LookupVerdict.NOT_FOUND
    # Channels keep their own memory: an email with the same id is another message.
    assert LocalEmailSender().find_email(attempt(9001)).verdict is LookupVerdict.NOT_FOUND
    mail = LocalEmailSender().send_email(
        OutgoingEmail(9001, "a@example.com", "S", "<p>x</p>", "x", "c", "https://x/u/t")
    )
    assert LocalEmailSender().find_email(attempt(9001)).provider_id == mail.provider_id


def test_the_memory_is_bounded_and_keeps_the_latest() -> None:
    issued = _Issued(limit=3)
    for message_id in range(5):
        issued.add(message_id, f"OB{message_id}")
    issued.add(2, "OB2-again")  # a resend: the latest id, and it is fresh again
    issued.add(5, "OB5")
    assert [issued.get(i) for i in range(6)] == [None, None, "OB2-again", None, "OB4", "OB5"]
