"""What a provider's answer asks for beyond the message itself: a halted channel (the account
is broken), an opt-out (the recipient blocked us), a dead address (the number or address
cannot receive). Each runs in its own transaction after the batch, under the patient's lock."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from campaigns import halts, reachability
from campaigns.planner import Planner
from campaigns.rules.send_rules import Facts, Followup, Verdict
from campaigns.rules.vocabulary import ConsentSource
from campaigns.storage.db import Database
from campaigns.storage.patients import lock_patient

log = logging.getLogger(__name__)


def apply_all(
    db: Database, planner: Planner, followups: Sequence[tuple[Facts, Verdict, str]], now: datetime
) -> None:
    """Each follow-up on its own: one failing does not stop the others."""
    for facts, verdict, detail in followups:
        try:
            apply(db, planner, facts, verdict, detail, now)
        except Exception:
            log.exception(
                "follow-up %s for message %d failed",
                verdict.followup,
                facts.id,
                extra={"event": "followups.follow_up_message_failed"},
            )


def apply(
    db: Database, planner: Planner, facts: Facts, verdict: Verdict, detail: str, now: datetime
) -> None:
    provider = verdict.provider or "?"
    code = verdict.error_code or ""
    if verdict.followup is Followup.HALT:
        halts.halt(db, facts.channel, provider, code, detail, now)
        return
    with db.session() as session:
        patient = lock_patient(session, facts.patient_id)
        if verdict.followup is Followup.OPT_OUT:
            reachability.opt_out(
                session,
                patient,
                facts.channel,
                now,
                source=ConsentSource.PROVIDER,
                reason=f"{provider}:{code}",
                actor=f"provider:{provider}",
            )
        elif verdict.followup is Followup.INVALID_ADDRESS:
            reachability.mark_invalid(
                session,
                planner,
                patient,
                facts.channel,
                now,
                reason=f"{provider}:{code}",
                actor=f"provider:{provider}",
            )
