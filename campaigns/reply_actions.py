"""What a patient's text makes us do, in its own transaction (campaigns.answering): raise an
alert, opt out or back in, hold marketing, hold the programme for a reported loss, note a
booking link sent, propose a birth date for staff to confirm."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session

from campaigns import alerts, audit, enrollments, reachability
from campaigns.planner import Planner
from campaigns.rules.keywords import Classification
from campaigns.rules.replies import Action, Decision, Inbound, Situation
from campaigns.rules.vocabulary import Channel, ConsentSource
from campaigns.storage.models import Alert, Patient

#: Who the audit trail says acted on a patient's text.
ACTOR = "patient:sms"
#: No marketing for this long after a safety answer (RED or AMBER).
MARKETING_HOLD = timedelta(days=30)


@dataclass(frozen=True)
class Reply:
    """Everything one text's actions need: its transaction, how it was read and decided."""

    session: Session
    decision: Decision
    found: Classification
    situation: Situation
    patient: Patient | None
    inbound: Inbound
    inbound_id: int
    waiting: Alert | None  # a birth alert waiting for the date this text gives
    now: datetime


def act(reply: Reply, planner: Planner) -> None:
    """Apply the decision's actions in the reply's transaction."""
    session, decision, situation = reply.session, reply.decision, reply.situation
    patient, sender, now = reply.patient, reply.inbound.sender, reply.now
    pid = patient.id if patient is not None else None
    for action in decision.actions:
        if action is Action.ALERT and decision.alert is not None:
            alerts.raise_alert(
                session,
                decision.alert,
                now,
                patient_id=pid,
                inbound_id=reply.inbound_id,
                matched=reply.found.words,
                **_birth_detail(decision, situation),
            )
        elif action is Action.OPT_OUT:
            _opt_out(session, patient, sender, situation, now)
        elif action is Action.RESUBSCRIBE:
            _resubscribe(session, planner, patient, sender, situation, now)
        elif patient is None:
            continue  # the rest concern a patient's own record
        elif action is Action.MARKETING_HOLD:
            until = now + MARKETING_HOLD
            if patient.marketing_hold_until is None or patient.marketing_hold_until < until:
                patient.marketing_hold_until = until
                audit.record(
                    session,
                    now,
                    "system",
                    "marketing_held",
                    patient_id=patient.id,
                    until=until.isoformat(),
                )
        elif action is Action.LOSS_HOLD:
            enrollments.hold_for_loss(session, patient, now, actor=ACTOR)
        elif action is Action.BOOKING_LINK:
            audit.record(session, now, ACTOR, "booking_link_sent", patient_id=patient.id)
        elif action is Action.BIRTH_DATE and reply.waiting and situation.birth_date:
            _propose_birth_date(session, reply.waiting, situation.birth_date, now)


def _opt_out(
    session: Session,
    patient: Patient | None,
    sender: str,
    situation: Situation,
    now: datetime,
) -> None:
    if situation.opted_out:
        return  # already withdrawn: no second consent event
    if patient is None:  # a stranger: their number is never texted again
        reachability.suppress(
            session, Channel.SMS, sender, now, source=ConsentSource.KEYWORD, reason="keyword"
        )
        return
    reachability.opt_out(
        session,
        patient,
        Channel.SMS,
        now,
        source=ConsentSource.KEYWORD,
        reason="keyword",
        actor=ACTOR,
    )


def _resubscribe(
    session: Session,
    planner: Planner,
    patient: Patient | None,
    sender: str,
    situation: Situation,
    now: datetime,
) -> None:
    if patient is None:
        reachability.lift_suppression(session, Channel.SMS, sender)
        return
    reachability.opt_in(
        session,
        planner,
        patient,
        Channel.SMS,
        now,
        source=ConsentSource.KEYWORD,
        actor=ACTOR,
        replan=situation.opted_out,
    )


def _birth_detail(decision: Decision, situation: Situation) -> dict[str, str]:
    if Action.BIRTH_REPORTED in decision.actions and situation.birth_date is not None:
        return {"birth_date": situation.birth_date.isoformat()}
    return {}


def _propose_birth_date(session: Session, alert: Alert, birth_date: date, now: datetime) -> None:
    alert.detail = {**alert.detail, "birth_date": birth_date.isoformat()}
    audit.record(
        session,
        now,
        ACTOR,
        "birth_date_reported",
        patient_id=alert.patient_id,
        alert=alert.id,
        birth_date=birth_date.isoformat(),
    )
