"""The send path's statements on the outbox: a batch taken by a worker (with its lease), the
facts a send decision reads, the go-ahead that lets a provider call start, and the record of
what each message became.

Every write is fenced by the batch's token (`claim_token`): a row the batch no longer owns
(cancelled, reaped, reconciled) is never touched. Rows whose call has not started
(`call_started_at IS NULL`) and rows whose call has are written by different statements, so a
cancellation (which takes only the former) and the record of a call can never overwrite each
other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from campaigns.rules.contacts import address_hash
from campaigns.rules.send_rules import Facts, Verdict
from campaigns.rules.vocabulary import Channel, MessageStatus, StepKind
from campaigns.storage.broadcasts import texts_for_keys
from campaigns.storage.consents import consent_states, suppressions
from campaigns.storage.db import among
from campaigns.storage.models import Enrollment, Patient, ScheduledMessage, SendLease
from campaigns.storage.types import UTCDateTime

SM = ScheduledMessage
SENDING = MessageStatus.SENDING.value
#: States in which the batch still owns a started row (the reaper marks a dead batch's
#: started rows unknown but keeps their token, so a late record still lands).
_OWNED_STARTED = (SENDING, MessageStatus.UNKNOWN.value)


def start_batch(
    connection: Connection,
    ids: Sequence[int],
    claim_token: str,
    batch_token: str,
    worker: str,
    now: datetime,
) -> dict[int, int]:
    """claimed -> sending for the rows still claimed by `claim_token`, now owned by the batch's
    own token, with its lease; returns {message id: patient id} of the rows taken."""
    connection.execute(
        insert(SendLease).values(token=batch_token, worker=worker, started_at=now, renewed_at=now)
    )
    postgres = connection.dialect.name == "postgresql"
    taken = connection.execute(
        update(SM)
        .where(
            among(SM.id, ids, postgres=postgres),
            SM.status == MessageStatus.CLAIMED.value,
            SM.claim_token == claim_token,
        )
        .values(
            status=SENDING,
            claim_token=batch_token,
            attempts=SM.attempts + 1,
            send_started_at=now,
            call_started_at=None,
            updated_at=now,
        )
        .returning(
            SM.id,
            select(Enrollment.patient_id)
            .where(Enrollment.id == SM.enrollment_id)
            .scalar_subquery(),
        )
    ).all()
    return {int(message_id): int(patient_id) for message_id, patient_id in taken}


def lock_patients(connection: Connection, patient_ids: Sequence[int]) -> None:
    """FOR SHARE on the patients, in id order: a cancellation (FOR UPDATE) waits for this
    short transaction, and this one for it. READ COMMITTED gives every later statement a
    snapshot that includes whatever committed while we waited."""
    postgres = connection.dialect.name == "postgresql"
    connection.execute(
        select(Patient.id)
        .where(among(Patient.id, sorted(set(patient_ids)), postgres=postgres))
        .order_by(Patient.id)
        .with_for_update(read=True)
    ).all()


_FACTS = (
    select(
        SM.id.label("id"),
        SM.attempts.label("attempts"),
        SM.next_attempt_at.label("next_attempt_at"),
        SM.step_key.label("step_key"),
        SM.channel.label("channel"),
        SM.kind.label("kind"),
        SM.expires_at.label("expires_at"),
        Enrollment.status.label("enrollment_status"),
        Enrollment.campaign.label("campaign"),
        Patient.id.label("patient_id"),
        Patient.name.label("name"),
        Patient.phone.label("phone"),
        Patient.email.label("email"),
        Patient.timezone.label("timezone"),
        Patient.language.label("language"),
        Patient.discreet.label("discreet"),
        Patient.phone_invalid_at.label("phone_invalid_at"),
        Patient.email_invalid_at.label("email_invalid_at"),
        Patient.marketing_hold_until.label("marketing_hold_until"),
        SM.body.label("body"),
        SM.outside_window.label("outside_window"),
        SM.content_version.label("content_version"),
    )
    .join(Enrollment, Enrollment.id == SM.enrollment_id)
    .join(Patient, Patient.id == Enrollment.patient_id)
)


def load_facts(connection: Connection, ids: Sequence[int], batch_token: str) -> list[Facts]:
    """The batch's rows whose call has not started, with everything `send_rules.check` needs.
    Call it after `lock_patients` in the same transaction."""
    postgres = connection.dialect.name == "postgresql"
    rows = connection.execute(
        _FACTS.where(
            among(SM.id, ids, postgres=postgres),
            SM.status == SENDING,
            SM.claim_token == batch_token,
            SM.call_started_at.is_(None),
        )
    ).all()
    if not rows:
        return []
    consent = consent_states(connection, sorted({r.patient_id for r in rows}))
    addresses = {r.id: (r.phone if r.channel == Channel.SMS.value else r.email) for r in rows}
    hashes = {address_hash(a) for a in addresses.values() if a}
    found = suppressions(connection, hashes)
    said = texts_for_keys(connection, {r.step_key for r in rows})
    facts = []
    for r in rows:
        channel = Channel(r.channel)
        kind = StepKind(r.kind)
        address = addresses[r.id]
        invalid = r.phone_invalid_at if channel is Channel.SMS else r.email_invalid_at
        facts.append(
            Facts(
                id=r.id,
                attempts=r.attempts,
                next_attempt_at=r.next_attempt_at,
                step_key=r.step_key,
                channel=channel,
                kind=kind,
                expires_at=r.expires_at,
                enrollment_status=r.enrollment_status,
                campaign=r.campaign,
                patient_id=r.patient_id,
                name=r.name,
                phone=r.phone,
                email=r.email,
                timezone=r.timezone,
                language=r.language,
                discreet=r.discreet,
                address_invalid=invalid is not None,
                marketing_hold_until=r.marketing_hold_until,
                consent=consent[r.patient_id],
                suppressed=bool(address) and (channel.value, address_hash(address)) in found,
                # Only a staff reply's words are written with the row; others render now.
                text=r.body if kind is StepKind.STAFF_REPLY else None,
                outside_window=bool(r.outside_window),
                content_version=r.content_version,
                broadcast=said.get(r.step_key),
            )
        )
    return facts


@dataclass(frozen=True)
class Content:
    """What the patient is about to receive, stored with the go-ahead (the clinical record, and
    what reconciliation matches against the provider's copy)."""

    message_id: int
    body: str
    subject: str | None
    template_ref: str


def allow_calls(
    connection: Connection, batch_token: str, contents: Sequence[Content], now: datetime
) -> set[int]:
    """The go-ahead: mark the calls started, with what will be sent, for the rows the batch
    still owns and has not started; returns the ids allowed. Once this commits, a cancellation
    no longer takes these rows: they are with the provider."""
    if not contents:
        return set()
    fence = (
        SM.status == SENDING,
        SM.claim_token == batch_token,
        SM.call_started_at.is_(None),
    )
    rows = [
        {"id": c.message_id, "body": c.body, "subject": c.subject, "template_ref": c.template_ref}
        for c in contents
    ]
    if connection.dialect.name == "postgresql":
        # One statement: the fence, the mark and the content, for every call of the group.
        allowed = connection.execute(
            _allow_statement(),
            {"rows": _json(rows), "token": batch_token, "now": now},
        ).scalars()
        return {int(i) for i in allowed}
    ids = {
        int(i)
        for i in connection.execute(
            update(SM)
            .where(SM.id.in_([c.message_id for c in contents]), *fence)
            .values(call_started_at=now, updated_at=now)
            .returning(SM.id)
        ).scalars()
    }
    if ids:
        connection.execute(
            update(SM)
            .where(SM.id == bindparam("b_id"))
            .values(
                body=bindparam("b_body"),
                subject=bindparam("b_subject"),
                template_ref=bindparam("b_template_ref"),
            ),
            [{f"b_{k}": v for k, v in row.items()} for row in rows if row["id"] in ids],
        )
    return ids


_CONTENT_COLUMNS = [
    ("id", BigInteger()),
    ("body", String()),
    ("subject", String()),
    ("template_ref", String()),
]


#: The columns a verdict writes, with their types for PostgreSQL's recordset.
_VERDICT_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("id", BigInteger()),
    ("status", String()),
    ("reason", String()),
    ("attempts", Integer()),
    ("next_attempt_at", UTCDateTime()),
    ("error_code", String()),
    ("provider", String()),
    ("provider_id", String()),
    ("sent_at", UTCDateTime()),
    ("reconcile_at", UTCDateTime()),
)

_TYPES = dict(_VERDICT_COLUMNS)


def _verdict_row(message_id: int, verdict: Verdict) -> dict[str, Any]:
    return {
        "id": message_id,
        "status": verdict.status.value,
        "reason": verdict.reason,
        "attempts": verdict.attempts,
        "next_attempt_at": verdict.next_attempt_at,
        "error_code": verdict.error_code,
        "provider": verdict.provider,
        "provider_id": verdict.provider_id,
        "sent_at": verdict.sent_at,
        "reconcile_at": verdict.reconcile_at,
    }


def settle_unstarted(
    connection: Connection,
    batch_token: str,
    verdicts: Sequence[tuple[int, Verdict]],
    now: datetime,
) -> None:
    """Verdicts for rows whose call never started (cancelled, expired, deferred, released)."""
    _write_verdicts(connection, batch_token, verdicts, now, started=False)


def record_calls(
    connection: Connection,
    batch_token: str,
    verdicts: Sequence[tuple[int, Verdict]],
    now: datetime,
) -> None:
    """Verdicts for rows whose call started: what the provider answered (or did not)."""
    _write_verdicts(connection, batch_token, verdicts, now, started=True)


def _write_verdicts(
    connection: Connection,
    batch_token: str,
    verdicts: Sequence[tuple[int, Verdict]],
    now: datetime,
    *,
    started: bool,
) -> None:
    if not verdicts:
        return
    rows = [_verdict_row(message_id, verdict) for message_id, verdict in verdicts]
    postgres = connection.dialect.name == "postgresql"
    statement = _verdict_statement(postgres=postgres, started=started)
    if postgres:
        # One statement over one JSON parameter: far cheaper than a hundred bound UPDATEs.
        connection.execute(statement, {"rows": _json(rows), "token": batch_token, "now": now})
        return
    connection.execute(
        statement,
        [
            {"token": batch_token, "now": now, **{f"b_{k}": v for k, v in row.items()}}
            for row in rows
        ],
    )


# Built once each: building these statements cost more than running them.
_TOKEN = bindparam("token", type_=String())
_NOW = bindparam("now", type_=UTCDateTime())


@lru_cache(maxsize=4)
def _verdict_statement(*, postgres: bool, started: bool) -> Any:
    if postgres:
        source = _recordset(list(_VERDICT_COLUMNS))
        return (
            update(SM)
            .where(SM.id == source.c.id, *_fence(_TOKEN, started=started))
            .values(_assignments(lambda name: source.c[name], _NOW, started=started))
        )
    return (
        update(SM)
        .where(SM.id == bindparam("b_id"), *_fence(_TOKEN, started=started))
        .values(
            _assignments(
                lambda name: bindparam(f"b_{name}", type_=_TYPES[name]), _NOW, started=started
            )
        )
    )


@lru_cache(maxsize=1)
def _allow_statement() -> Any:
    source = _recordset(_CONTENT_COLUMNS)
    return (
        update(SM)
        .where(
            SM.id == source.c.id,
            SM.status == SENDING,
            SM.claim_token == _TOKEN,
            SM.call_started_at.is_(None),
        )
        .values(
            call_started_at=_NOW,
            updated_at=_NOW,
            body=source.c.body,
            subject=source.c.subject,
            template_ref=source.c.template_ref,
        )
        .returning(SM.id)
    )


def _fence(batch_token: Any, *, started: bool) -> list[ColumnElement[bool]]:
    if started:
        return [SM.claim_token == batch_token, SM.call_started_at.is_not(None)]
    return [SM.claim_token == batch_token, SM.status == SENDING, SM.call_started_at.is_(None)]


def _assignments(source: Callable[[str], Any], now: Any, *, started: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: source(name) for name, _ in _VERDICT_COLUMNS if name not in ("id",)
    }
    values["next_attempt_at"] = func.coalesce(source("next_attempt_at"), SM.next_attempt_at)
    values["claim_token"] = None
    values["updated_at"] = now
    if not started:
        return values
    # A status callback may have got there first (sent, delivered, even undelivered): then the
    # row keeps what the callback said, and only learns the provider's id if it lacks one.
    # Plain comparisons, not IN: SQLite's executemany cannot expand an IN list.
    live = or_(*(SM.status == status for status in _OWNED_STARTED))
    guarded: dict[str, Any] = {
        name: case((live, value), else_=getattr(SM, name))
        for name, value in values.items()
        if name not in ("claim_token", "updated_at", "provider", "provider_id", "sent_at")
    }
    guarded["provider"] = func.coalesce(SM.provider, values["provider"])
    guarded["provider_id"] = func.coalesce(SM.provider_id, values["provider_id"])
    guarded["sent_at"] = func.coalesce(SM.sent_at, values["sent_at"])
    # Nothing the provider accepted goes back to pending: a pending verdict after the call
    # started means it never got there (a retryable error, or the go-ahead came too late).
    guarded["call_started_at"] = case(
        (and_(live, source("status") == MessageStatus.PENDING.value), None),
        else_=SM.call_started_at,
    )
    guarded["claim_token"] = None
    guarded["updated_at"] = now
    return guarded


def _recordset(columns: Sequence[tuple[str, Any]]) -> Any:
    """PostgreSQL rows from the JSON array in the `rows` parameter, typed."""
    return (
        func.jsonb_to_recordset(cast(bindparam("rows", type_=String()), JSONB))
        .table_valued(*(column(name, type_) for name, type_ in columns))
        .render_derived(name="v", with_types=True)
    )


def _json(rows: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(rows, default=_iso, separators=(",", ":"))


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()  # aware UTC datetimes: the offset travels with them
    raise TypeError(f"cannot record a {type(value).__name__}")


def release_unstarted(
    connection: Connection, ids: Sequence[int], batch_token: str, now: datetime
) -> int:
    """The batch's rows whose call never started, back to pending, their attempt given back."""
    if not ids:
        return 0
    postgres = connection.dialect.name == "postgresql"
    result = connection.execute(
        update(SM)
        .where(
            among(SM.id, ids, postgres=postgres),
            SM.claim_token == batch_token,
            SM.status == SENDING,
            SM.call_started_at.is_(None),
        )
        .values(
            status=MessageStatus.PENDING.value,
            claim_token=None,
            attempts=case((SM.attempts > 0, SM.attempts - 1), else_=0),
            next_attempt_at=now,
            reason="released",
            updated_at=now,
        )
    )
    return int(result.rowcount)


def renew_leases(connection: Connection, tokens: Sequence[str], now: datetime) -> None:
    postgres = connection.dialect.name == "postgresql"
    connection.execute(
        update(SendLease)
        .where(among(SendLease.token, list(tokens), postgres=postgres))
        .values(renewed_at=now)
    )


def end_lease(connection: Connection, batch_token: str) -> None:
    connection.execute(delete(SendLease).where(SendLease.token == batch_token))


def lease_lapsed(cutoff: datetime) -> ColumnElement[bool]:
    """True for a `sending` row whose batch's lease was not renewed since `cutoff`."""
    alive = (
        select(SendLease.token)
        .where(SendLease.token == SM.claim_token, SendLease.renewed_at >= cutoff)
        .exists()
    )
    return or_(SM.claim_token.is_(None), ~alive)
