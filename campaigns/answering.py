"""Answer a patient's text end to end: store it once, read it, act, and say what to reply.

One transaction per inbound message, holding the patient's row lock (the lock every change
that can stop a send takes, and that the send path holds FOR SHARE for its short go-aheads):
an opt-out or a loss hold commits together with the cancellation of everything not yet handed
to a provider, so no send can start after it unseen. The text is stored under its MessageSid
before anything is done, so a replayed webhook has no second effect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns import alerts, audit, inbox, metrics, reachability, reply_actions
from campaigns.planner import Planner
from campaigns.providers.twilio import ADVANCED_OPT_OUT
from campaigns.reply_actions import ACTOR
from campaigns.rules.content import ContentRenderer
from campaigns.rules.keywords import (
    Classification,
    Intent,
    Match,
    Reader,
    classify,
)
from campaigns.rules.links import LinkSigner
from campaigns.rules.replies import (
    UNRECOGNISED,
    Action,
    AlertSpec,
    Inbound,
    Severity,
    Situation,
    birth_date_in,
    decide,
    safety_replies,
)
from campaigns.rules.window import zone
from campaigns.storage.db import Database, insert_ignoring
from campaigns.storage.models import (
    Alert,
    InboundMessage,
    Patient,
)

log = logging.getLogger(__name__)
BIRTH_DATE_WAIT = timedelta(days=14)
#: The alert kind (and action) for a text whose handling failed: staff must do what it asked.
HANDLING_FAILED = "handling_failed"


@dataclass(frozen=True)
class Answer:
    replies: tuple[str, ...]  # the texts to send back, in order (none for a replay)


class Answerer:
    def __init__(
        self,
        db: Database,
        planner: Planner,
        renderer: ContentRenderer,
        links: LinkSigner,
        reader: Reader,
    ) -> None:
        self.db = db
        self.planner = planner
        self.renderer = renderer
        self.links = links
        self.reader = reader

    def handle(self, inbound: Inbound, now: datetime) -> Answer:
        with self.db.session() as session:
            patient, opted_out = reachability.sms_sender(session, inbound.sender)
            language = patient.language if patient is not None else "en"
            found = with_provider_keyword(
                classify(inbound.body, self.reader, opted_out=opted_out),
                inbound.opt_out_type,
            )
            situation, waiting = self._situation(session, patient, inbound, found, opted_out, now)
            decision = decide(found, situation)
            link = None
            if patient is not None and Action.BOOKING_LINK in decision.actions:
                link = self.links.booking_url(patient.id, now)
            texts = tuple(
                self.renderer.render_reply(key, language, link or "").body
                for key in decision.replies
            )
            patient_id = patient.id if patient is not None else None
            actions = [action.value for action in decision.actions]
            # Stored under its MessageSid, with how it was read and answered, before anything
            # is done: a replay stops here (its transaction rolls back), with no second effect.
            inbound_id = _claim(
                session, inbound, now, patient_id, found, decision.replies, texts, actions
            )
            if inbound_id is None:
                session.rollback()
                return Answer(())
            reply_actions.act(
                reply_actions.Reply(
                    session, decision, found, situation, patient, inbound, inbound_id, waiting, now
                ),
                self.planner,
            )
            # The text itself and the words that matched stay in inbound_messages; the audit
            # trail gets what was decided (never the text).
            audit.record(
                session,
                now,
                ACTOR if patient is not None else "sender:unknown",
                "reply_received",
                patient_id=patient_id,
                inbound=inbound_id,
                intent=found.intent.value,
                tier=found.tier.value,
                actions=actions,
                replies=list(decision.replies),
            )
            log.info(
                "reply %d (patient %s): %s/%s, actions %s, answered with %s",
                inbound_id,
                patient_id if patient_id is not None else "unknown",
                found.intent.value,
                found.tier.value,
                ",".join(actions) or "none",
                ",".join(decision.replies) or "nothing",
                extra={"event": "reply.handled"},
            )
            metrics.REPLIES.labels(found.intent.value, found.tier.value).inc()
            return Answer(texts)

    def fallback(self, inbound: Inbound, now: datetime) -> tuple[str, ...]:
        """When storing or acting failed: never leave a danger sign unanswered, and put the text
        in front of staff if the database will take it. Only safety answers or the generic one
        (111/999) go out: nothing was done, so nothing may be confirmed (no "unsubscribed")."""
        found: Classification | None = None
        try:
            found = classify(inbound.body, self.reader)
            keys = safety_replies(found)
        except Exception:  # the classifier itself failed: the safest generic answer
            log.exception(
                "classifying a reply failed; sending the generic safety answer",
                extra={"event": "answering.classifying_reply_failed_sending"},
            )
            keys = []
        keys = keys or [UNRECOGNISED]
        texts = tuple(self.renderer.render_reply(key, "en").body for key in keys)
        try:
            self._store_unhandled(inbound, found, keys, texts, now)
        except Exception:
            log.exception(
                "ALERT: an incoming message could not be handled or stored; it was answered "
                "with the fallback and nothing else was done (see the provider's message log)",
                extra={"event": "answering.incoming_message_could_not"},
            )
        return texts

    def _store_unhandled(
        self,
        inbound: Inbound,
        found: Classification | None,
        keys: list[str],
        texts: tuple[str, ...],
        now: datetime,
    ) -> None:
        """A second, minimal transaction: the text, what we answered, and an alert for staff."""
        with self.db.session() as session:
            patient_id = session.execute(
                select(Patient.id).where(Patient.phone == inbound.sender)
            ).scalar_one_or_none()
            inbound_id = _claim(
                session, inbound, now, patient_id, found, keys, texts, [HANDLING_FAILED]
            )
            if inbound_id is None:
                return  # the first attempt was stored after all
            severity = Severity.REVIEW
            if found is not None and found.safety:
                severity = Severity.of_tier(found.tier)
            alerts.raise_alert(
                session,
                AlertSpec(severity, HANDLING_FAILED, keys[0] if found and found.safety else None),
                now,
                patient_id=patient_id,
                inbound_id=inbound_id,
                matched=found.words if found else [],
            )

    def _situation(
        self,
        session: Session,
        patient: Patient | None,
        inbound: Inbound,
        found: Classification,
        opted_out: bool,
        now: datetime,
    ) -> tuple[Situation, Alert | None]:
        """What the rules need to know, and the birth alert waiting for a date, if any."""
        if patient is None:
            stranger = Situation(
                known=False, opted_out=opted_out, opt_out_type=inbound.opt_out_type
            )
            return stranger, None
        # Each fact is looked up only when the rules can use it: most texts need none.
        found_date: date | None = None
        waiting: Alert | None = None
        if found.intent in (Intent.BORN, Intent.UNRECOGNISED):
            found_date = birth_date_in(inbound.body, now.astimezone(zone(patient.timezone)).date())
            if found_date is not None and found.intent is Intent.UNRECOGNISED:
                waiting = _awaiting_birth_date(session, patient.id, now)
        recent = None
        if found.intent is Intent.BOOK:
            recent = alerts.recent_safety_reply(session, patient.id, now)
        situation = Situation(
            known=True,
            opted_out=opted_out,
            opt_out_type=inbound.opt_out_type,
            recent_safety_reply=recent,
            awaiting_birth_date=waiting is not None,
            birth_date=found_date,
        )
        return situation, waiting


def with_provider_keyword(found: Classification, opt_out_type: str | None) -> Classification:
    """Twilio already matched STOP/START/HELP (Advanced Opt-Out, any language): count it."""
    intent = ADVANCED_OPT_OUT.get(opt_out_type or "")
    if intent is None or intent in found.intents:
        return found
    return found.with_match(Match(intent, intent.value, (f"OptOutType={opt_out_type}",)))


def _claim(
    session: Session,
    inbound: Inbound,
    now: datetime,
    patient_id: int | None,
    found: Classification | None,
    keys: Sequence[str],
    texts: Sequence[str],
    actions: list[str],
) -> int | None:
    """Store the text under its MessageSid, with how it was read, what was answered and what
    was done (one INSERT ... ON CONFLICT DO NOTHING): the new row's id, or None for a replay."""
    values = {
        "provider": "twilio",
        "provider_id": inbound.provider_id,
        "sender": inbound.sender,
        "patient_id": patient_id,
        "body": inbound.body,
        "received_at": now,
        "language": found.language if found else "en",
        "intent": found.intent.value if found else None,
        "tier": found.tier.value if found else None,
        "matched": found.as_dict() if found else {},
        "replies": [{"template": k, "text": t} for k, t in zip(keys, texts, strict=True)],
        "actions": actions,
        "opt_out_type": inbound.opt_out_type,
    }
    statement = insert_ignoring(session, InboundMessage, tuple(values))
    found_id: int | None = session.connection().execute(statement, values).scalar_one_or_none()
    if found_id is not None:
        # The staff inbox's conversation: unread again, with this text the newest.
        inbox.note_inbound(session, found_id, patient_id, inbound.sender, now)
    return found_id


def _awaiting_birth_date(session: Session, patient_id: int, now: datetime) -> Alert | None:
    """A recent birth alert with no date yet, for a pregnancy with no birth recorded."""
    alert = session.execute(
        select(Alert)
        .where(
            Alert.patient_id == patient_id,
            Alert.kind == Intent.BORN.value,
            Alert.acknowledged_at.is_(None),
            Alert.created_at > now - BIRTH_DATE_WAIT,
        )
        .order_by(Alert.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if alert is None or alert.detail.get("birth_date"):
        return None
    return alert
