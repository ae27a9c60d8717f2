"""The tables. The scheduled_messages table is the outbox: the system of record for every send."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from campaigns.rules.vocabulary import (
    IN_FLIGHT,
    LIVE_ENROLLMENT,
    NOT_SENT_FINAL,
    EnrollmentStatus,
    MessageStatus,
)
from campaigns.storage.types import JsonText, StrEnumType, UTCDateTime, in_set

Id = BigInteger().with_variant(Integer(), "sqlite")
#: The audit action of a booking-link click (campaigns.web.links), indexed for reports.
BOOKING_CLICKED = "booking_link_clicked"
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
_PENDING = in_set("status", {MessageStatus.PENDING})
_LIVE = in_set("status", NOT_SENT_FINAL, negate=True)
_IN_FLIGHT = in_set("status", IN_FLIGHT)
_LIVE_ENROLLMENT = in_set("status", LIVE_ENROLLMENT)
_TO_RECONCILE = text(f"status = '{MessageStatus.UNKNOWN.value}' AND reconcile_at IS NOT NULL")
#: A broadcast's rows (campaigns.rules.broadcasts: step keys `broadcast:<id>`). Queries that
#: should use ix_scheduled_messages_broadcast repeat this condition as it is written here.
BROADCAST_ROWS = text("step_key LIKE 'broadcast:%'")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (
        Index(
            "uq_patients_phone",
            "phone",
            unique=True,
            postgresql_where=text("phone IS NOT NULL"),
            sqlite_where=text("phone IS NOT NULL"),
        ),
        Index("ix_patients_email", "email"),
        # A re-uploaded CSV matches patients on their phone or the clinic's reference.
        Index("ix_patients_clinic_ref", "clinic_ref"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    email: Mapped[str | None] = mapped_column(String(320))
    timezone: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(16), default="en")
    discreet: Mapped[bool] = mapped_column(Boolean, default=False)
    clinic_ref: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    # Set when a provider says the address cannot receive (e.g. Twilio 21211, a hard bounce).
    phone_invalid_at: Mapped[datetime | None]
    phone_invalid_reason: Mapped[str | None] = mapped_column(String(64))
    email_invalid_at: Mapped[datetime | None]
    email_invalid_reason: Mapped[str | None] = mapped_column(String(64))
    # Set by a safety reply (RED/AMBER): no marketing reaches the patient before this.
    marketing_hold_until: Mapped[datetime | None]
    #: Set when her personal data was erased on request (campaigns.subject_rights): the row
    #: stays, without contact details, so the ledger and the audit trail still refer to it.
    erased_at: Mapped[datetime | None]


class ConsentEvent(Base):
    """Append-only: every grant and withdrawal, with where it came from and what was said."""

    __tablename__ = "consent_events"
    __table_args__ = (
        Index("ix_consent_events_patient_id_id", "patient_id", "id"),
        # Reports: opt-outs (withdrawals) by when, a small share of the ledger.
        Index(
            "ix_consent_events_withdrawn_at",
            "occurred_at",
            postgresql_where=text("NOT granted"),
            sqlite_where=text("NOT granted"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    purpose: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str | None] = mapped_column(String(16))  # None: every channel
    granted: Mapped[bool] = mapped_column(Boolean)
    occurred_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(32))
    wording_version: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    #: The words shown or read to the patient, as staff recorded them (a consent taken by
    #: phone or in person); None: the standard wording of `wording_version`.
    wording: Mapped[str | None] = mapped_column(Text)


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (
        # One live enrollment per patient and campaign (one on a loss hold counts: it may
        # resume); ended ones stay as history.
        Index(
            "uq_enrollments_live",
            "patient_id",
            "campaign",
            unique=True,
            postgresql_where=_LIVE_ENROLLMENT,
            sqlite_where=_LIVE_ENROLLMENT,
        ),
        Index("ix_enrollments_patient_id", "patient_id"),
        # Reports: enrolments by day (campaigns.rollups).
        Index("ix_enrollments_enrolled_at", "enrolled_at"),
        # Serves the staff patient list filtered by status, newest first (keyset on id).
        Index("ix_enrollments_status_id", "status", "id"),
        # Serves extend_plans: active plans whose written horizon is running out.
        Index(
            "ix_enrollments_planned_until",
            "planned_until",
            postgresql_where=in_set("status", {EnrollmentStatus.ACTIVE}),
            sqlite_where=in_set("status", {EnrollmentStatus.ACTIVE}),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    campaign: Mapped[str] = mapped_column(String(64))
    edd: Mapped[date] = mapped_column(Date)
    edd_source: Mapped[str] = mapped_column(String(16))
    edd_set_at: Mapped[datetime]
    channels: Mapped[str] = mapped_column(String(32))  # "sms,email"
    status: Mapped[EnrollmentStatus] = mapped_column(StrEnumType(EnrollmentStatus))
    status_reason: Mapped[str | None] = mapped_column(String(64))
    enrolled_at: Mapped[datetime]
    enrolled_on: Mapped[date] = mapped_column(Date)  # the patient's local date of enrolment
    birth_date: Mapped[date | None] = mapped_column(Date)
    #: On a loss hold: the status to go back to if staff clear it (active or paused).
    held_from: Mapped[str | None] = mapped_column(String(16))
    ended_at: Mapped[datetime | None]
    schedule_version: Mapped[int] = mapped_column(Integer, default=1)
    #: Sends due before this are outbox rows; later ones are written as it approaches.
    planned_until: Mapped[datetime | None]
    #: Steps that will not be sent because their day had passed (or no marketing consent):
    #: [[version, step, channel, reason, due ISO 8601], ...], kept here, not as outbox rows.
    skipped: Mapped[list[list[Any]]] = mapped_column(JsonText, default=list)
    updated_at: Mapped[datetime]


class ScheduledMessage(Base):
    __tablename__ = "scheduled_messages"
    __table_args__ = (
        # Serves the dispatch tick: only pending rows, ordered by when they may go.
        Index(
            "ix_scheduled_messages_due",
            "next_attempt_at",
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        ),
        # A step goes at most once per channel: one live row, whatever the schedule version.
        Index(
            "uq_scheduled_messages_step",
            "enrollment_id",
            "step_key",
            "channel",
            unique=True,
            postgresql_where=_LIVE,
            sqlite_where=_LIVE,
        ),
        # Timelines and re-planning read every row of an enrollment, whatever its status.
        Index("ix_scheduled_messages_enrollment_id", "enrollment_id"),
        Index(
            "ix_scheduled_messages_in_flight",
            "status",
            "claimed_at",
            postgresql_where=_IN_FLIGHT,
            sqlite_where=_IN_FLIGHT,
        ),
        # Serves the reconciler: unknown sends whose provider is next to be asked.
        Index(
            "ix_scheduled_messages_reconcile",
            "reconcile_at",
            postgresql_where=_TO_RECONCILE,
            sqlite_where=_TO_RECONCILE,
        ),
        # Serves the ops page's provider error rates: sends accepted by time (written once
        # per row, so cheap to keep).
        Index(
            "ix_scheduled_messages_sent_at",
            "sent_at",
            postgresql_where=text("sent_at IS NOT NULL"),
            sqlite_where=text("sent_at IS NOT NULL"),
        ),
        # Serve the message log (docs/decisions.md, "Message log at 10 million rows"): each
        # status's rows newest first, and the due-date range filter.
        Index("ix_scheduled_messages_status_id", "status", "id"),
        Index("ix_scheduled_messages_due_at", "due_at"),
        Index(
            "ix_scheduled_messages_provider_id",
            "provider_id",
            postgresql_where=text("provider_id IS NOT NULL"),
            sqlite_where=text("provider_id IS NOT NULL"),
        ),
        # A broadcast's rows by status: its counts, its cancellation, its message log filter
        # (only broadcast rows are in it: campaign steps never pay for it).
        Index(
            "ix_scheduled_messages_broadcast",
            "step_key",
            "status",
            postgresql_where=BROADCAST_ROWS,
            sqlite_where=BROADCAST_ROWS,
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # No FOREIGN KEY: its per-row check was half the cost of bulk enrolment, and enrollments
    # are never deleted (erasure anonymises); rows are only written beside their enrollment.
    enrollment_id: Mapped[int] = mapped_column(Id)
    step_key: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    schedule_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[MessageStatus] = mapped_column(StrEnumType(MessageStatus))
    reason: Mapped[str | None] = mapped_column(String(64))
    due_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None]
    claim_token: Mapped[str | None] = mapped_column(String(36))
    send_started_at: Mapped[datetime | None]
    #: Committed just before the provider call may start: a row `sending` without it never
    #: reached a provider (safe to send again); with it, the call may have been accepted.
    call_started_at: Mapped[datetime | None]
    #: When the reconciler next asks the provider about an `unknown` send; None: not at all
    #: (resolved, or left for staff with reason `needs_review`).
    reconcile_at: Mapped[datetime | None]
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_id: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    # What the patient received (the clinical record keeps a copy of every message).
    template_ref: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(300))
    body: Mapped[str | None] = mapped_column(Text)
    #: A staff reply a clinician let go outside the send window (who: staff_replies).
    outside_window: Mapped[bool | None] = mapped_column(Boolean)
    #: The campaign version (campaign_versions.id) this step is rendered from, fixed when the
    #: row is written; None: the campaign's live version at send time (rows from before
    #: versions, staff replies).
    content_version: Mapped[int | None] = mapped_column(Id)


#: BROADCAST_ROWS as an expression, for queries (the same SQL, so PostgreSQL matches the index).
IS_BROADCAST: ColumnElement[bool] = ScheduledMessage.step_key.like(literal_column("'broadcast:%'"))


class SendLease(Base):
    """A batch a worker is sending, kept alive by its heartbeat. A `sending` row whose batch
    lease has lapsed belongs to a worker that died or lost the database: the reaper takes it."""

    __tablename__ = "send_leases"

    token: Mapped[str] = mapped_column(String(36), primary_key=True)  # the rows' claim_token
    worker: Mapped[str] = mapped_column(String(128))  # host:pid, for operators
    started_at: Mapped[datetime]
    renewed_at: Mapped[datetime]


class Suppression(Base):
    """Addresses never to message again on a channel, kept by hash so erasure does not undo it."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("channel", "address_hash"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    address_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]


class AuditEvent(Base):
    """Append-only record of who did what and when; details never hold message bodies."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_patient_id_id", "patient_id", "id"),
        # A message's page lists who retried or marked it.
        Index(
            "ix_audit_events_message_id",
            "message_id",
            postgresql_where=text("message_id IS NOT NULL"),
            sqlite_where=text("message_id IS NOT NULL"),
        ),
        # Reports: booking-link clicks by when (only those rows are in the index).
        Index(
            "ix_audit_events_booking_clicks",
            "occurred_at",
            postgresql_where=text(f"action = '{BOOKING_CLICKED}'"),
            sqlite_where=text(f"action = '{BOOKING_CLICKED}'"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    occurred_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[int | None] = mapped_column(Id)
    enrollment_id: Mapped[int | None] = mapped_column(Id)
    message_id: Mapped[int | None] = mapped_column(Id)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ProviderEvent(Base):
    """Every status callback and event webhook item, once: the key deduplicates replays."""

    __tablename__ = "provider_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_key"),
        # Retention deletes, and erasure scrubs, a message's events with it.
        Index(
            "ix_provider_events_message_id",
            "message_id",
            postgresql_where=text("message_id IS NOT NULL"),
            sqlite_where=text("message_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_key: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[int | None] = mapped_column(Id)
    kind: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ChannelHalt(Base):
    """A channel stopped because the provider account is misconfigured; an operator resumes it."""

    __tablename__ = "channel_halts"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(300))
    halted_at: Mapped[datetime]


class InboundMessage(Base):
    """Every reply a patient (or anyone) sent us, once, with how it was read and answered."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("provider", "provider_id"),
        Index("ix_inbound_messages_patient_id_id", "patient_id", "id"),
        # Reports: replies by day.
        Index("ix_inbound_messages_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_id: Mapped[str] = mapped_column(String(64))  # Twilio MessageSid
    sender: Mapped[str] = mapped_column(String(32))  # E.164 as the provider gave it
    patient_id: Mapped[int | None] = mapped_column(Id)
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    language: Mapped[str | None] = mapped_column(String(16))
    intent: Mapped[str | None] = mapped_column(String(32))
    tier: Mapped[str | None] = mapped_column(String(16))
    #: The classification: every intent that matched, with the words (as listed) that did.
    matched: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: What we answered (the TwiML messages, in order) and what we did.
    replies: Mapped[list[Any]] = mapped_column(JsonText, default=list)
    actions: Mapped[list[Any]] = mapped_column(JsonText, default=list)
    opt_out_type: Mapped[str | None] = mapped_column(String(16))


class Conversation(Base):
    """The inbox's view of the texts from one patient, or from one number we do not know:
    the newest text, and how far staff have handled them (a newer text makes it unread again).
    Written with each text (campaigns.answering), so the inbox never groups the whole table."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index(
            "uq_conversations_patient_id",
            "patient_id",
            unique=True,
            postgresql_where=text("patient_id IS NOT NULL"),
            sqlite_where=text("patient_id IS NOT NULL"),
        ),
        Index(
            "uq_conversations_sender",
            "sender",
            unique=True,
            postgresql_where=text("patient_id IS NULL"),
            sqlite_where=text("patient_id IS NULL"),
        ),
        # The inbox, newest first (and paged by it).
        Index("ix_conversations_last_inbound_id", "last_inbound_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    patient_id: Mapped[int | None] = mapped_column(Id)
    #: The number, for texts from a number no patient has (None once it is a patient's).
    sender: Mapped[str | None] = mapped_column(String(32))
    last_inbound_id: Mapped[int] = mapped_column(Id)
    last_at: Mapped[datetime]
    #: The newest text staff have handled: unread while a newer one exists.
    handled_through: Mapped[int | None] = mapped_column(Id)
    handled_at: Mapped[datetime | None]
    handled_by: Mapped[str | None] = mapped_column(String(128))
    wrong_number_at: Mapped[datetime | None]
    wrong_number_by: Mapped[str | None] = mapped_column(String(128))


class StaffReply(Base):
    """Who wrote a staff reply (an outbox row of kind staff_reply), and whether a clinician
    let it go outside the send window."""

    __tablename__ = "staff_replies"
    __table_args__ = (Index("ix_staff_replies_patient_id", "patient_id"),)

    message_id: Mapped[int] = mapped_column(Id, primary_key=True)
    patient_id: Mapped[int] = mapped_column(Id)
    author: Mapped[str] = mapped_column(String(128))
    outside_window: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class Alert(Base):
    """Something staff must look at: a danger sign, a loss, a birth to confirm, a reply to read.

    Waits in the staff inbox until someone acknowledges it; emailed to the clinic's alert
    address when it is RED or AMBER (`emailed_at` is set once that email went).
    """

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "ix_alerts_open",
            "created_at",
            postgresql_where=text("acknowledged_at IS NULL"),
            sqlite_where=text("acknowledged_at IS NULL"),
        ),
        Index("ix_alerts_patient_id_created_at", "patient_id", "created_at"),
        # Reports: alerts raised in a period.
        Index("ix_alerts_created_at", "created_at"),
        Index(
            "ix_alerts_unemailed",
            "id",
            postgresql_where=text("email_due AND emailed_at IS NULL"),
            sqlite_where=text("email_due AND emailed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    patient_id: Mapped[int | None] = mapped_column(Id)
    inbound_id: Mapped[int | None] = mapped_column(Id)
    severity: Mapped[str] = mapped_column(String(16))  # red, amber, routine, review
    kind: Mapped[str] = mapped_column(String(32))  # the intent (or what staff must do)
    matched: Mapped[list[Any]] = mapped_column(JsonText, default=list)
    #: The safety reply we sent, so a later BOOK within 24 hours gets the same answer.
    safety_reply: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    email_due: Mapped[bool] = mapped_column(Boolean, default=False)
    email_claimed_at: Mapped[datetime | None]
    emailed_at: Mapped[datetime | None]


class StaffUser(Base):
    """A person who signs in to the staff UI. No password or TOTP secret is stored in clear:
    the password as an argon2id hash, the TOTP secret sealed (campaigns.rules.secretbox)."""

    __tablename__ = "staff_users"
    __table_args__ = (Index("uq_staff_users_email", "email", unique=True),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))  # lower case: unique whatever the case
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    #: Set for a one-time password (new account, reset): changed at the next sign-in.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_secret_sealed: Mapped[str | None] = mapped_column(Text)
    #: The last TOTP time step used: a code is accepted once.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]


class StaffSession(Base):
    """A signed-in browser. The cookie holds a random token; the row is keyed by its SHA-256,
    so a copy of the database signs nobody in. Deleting the row ends the session."""

    __tablename__ = "staff_sessions"
    __table_args__ = (Index("ix_staff_sessions_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("staff_users.id", ondelete="CASCADE"))
    #: What the browser must do next: second_factor, change_password, setup_2fa, or active.
    stage: Mapped[str] = mapped_column(String(24))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]  # the absolute timeout, whatever the activity
    #: A WebAuthn challenge waiting for the browser's answer.
    challenge: Mapped[str | None] = mapped_column(String(128))
    #: Set while a TOTP secret is being enrolled, until the first code proves it.
    pending_totp_sealed: Mapped[str | None] = mapped_column(Text)
    #: The next page's notice (shown once), instead of text in the URL.
    flash: Mapped[dict[str, Any] | None] = mapped_column(JsonText)


class StaffPasskey(Base):
    """A security key or passkey (WebAuthn credential) registered by a staff user."""

    __tablename__ = "staff_passkeys"
    __table_args__ = (
        Index("uq_staff_passkeys_credential_id", "credential_id", unique=True),
        Index("ix_staff_passkeys_user_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("staff_users.id", ondelete="CASCADE"))
    credential_id: Mapped[str] = mapped_column(String(1400))  # base64url, as WebAuthn names it
    public_key: Mapped[str] = mapped_column(Text)  # base64url COSE key
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]


class StaffRecoveryCode(Base):
    """One-use codes for signing in without the second factor; stored as SHA-256 hashes."""

    __tablename__ = "staff_recovery_codes"
    __table_args__ = (UniqueConstraint("user_id", "code_hash"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("staff_users.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None]


class SignInThrottle(Base):
    """Failed sign-ins per account and per client address, where there is no Redis."""

    __tablename__ = "sign_in_throttle"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_ends_at: Mapped[datetime]


class Heartbeat(Base):
    """When each process kind was last seen doing its work: beat's ticks, each upkeep job's
    last success, each worker queue's last heartbeat task. A row per (kind, name, host), so
    the ops page shows every beat and worker; metrics and readiness take the newest."""

    __tablename__ = "heartbeats"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # beat, job, queue
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime]
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class PeriodicRun(Base):
    """Each periodic job's last start, so that two beats never run a job twice in a period:
    a run starts only by moving `started_at` forward past the period (campaigns.periodic)."""

    __tablename__ = "periodic_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime]
    runner: Mapped[str] = mapped_column(String(128))
    finished_at: Mapped[datetime | None]
    succeeded_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(String(200))


class PatientImport(Base):
    """A CSV of patients uploaded on the staff page (campaigns.importing): checked, shown to
    staff, then imported in one transaction. The file is kept only until it is imported or
    dropped; the report (every bad row, by line and field) until the import is a week old."""

    __tablename__ = "patient_imports"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # checking, checked, unreadable, importing, imported, failed, discarded
    status: Mapped[str] = mapped_column(String(16))
    file_name: Mapped[str] = mapped_column(String(200))
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    checked: Mapped[int] = mapped_column(Integer, default=0)
    ready: Mapped[int] = mapped_column(Integer, default=0)
    already: Mapped[int] = mapped_column(Integer, default=0)
    bad: Mapped[int] = mapped_column(Integer, default=0)
    written: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(String(500))


_ONE_LIVE = text("state = 'live'")
_ONE_DRAFT = text("state = 'draft'")


class CampaignVersion(Base):
    """One version of a campaign: its definition and templates (campaigns.rules.bundles).

    A draft is edited by staff; it goes live only when a clinician other than its author
    approves it, and the approval records the content hash it approved. Live and retired
    versions are never edited: each sent message names the version it was rendered from."""

    __tablename__ = "campaign_versions"
    __table_args__ = (
        UniqueConstraint("campaign", "number"),
        Index(
            "uq_campaign_versions_live",
            "campaign",
            unique=True,
            postgresql_where=_ONE_LIVE,
            sqlite_where=_ONE_LIVE,
        ),
        Index(
            "uq_campaign_versions_draft",
            "campaign",
            unique=True,
            postgresql_where=_ONE_DRAFT,
            sqlite_where=_ONE_DRAFT,
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    campaign: Mapped[str] = mapped_column(String(64))
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per campaign
    state: Mapped[str] = mapped_column(String(16))  # draft, live, retired, discarded
    source: Mapped[str] = mapped_column(String(16))  # seed, staff, import
    based_on: Mapped[int | None] = mapped_column(Id)
    definition: Mapped[dict[str, Any]] = mapped_column(JsonText)
    templates: Mapped[dict[str, Any]] = mapped_column(JsonText)
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(128))  # a staff email, or "repository"
    #: Everyone who started, imported or saved this version: none of them may approve it.
    editors: Mapped[list[str]] = mapped_column(JsonText, default=list)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    approved_by: Mapped[str | None] = mapped_column(String(128))
    approved_at: Mapped[datetime | None]
    approved_hash: Mapped[str | None] = mapped_column(String(64))
    approval_note: Mapped[str | None] = mapped_column(Text)
    live_from: Mapped[datetime | None]
    live_until: Mapped[datetime | None]


class CampaignState(Base):
    """A campaign paused or ended for everyone by staff (no row: running)."""

    __tablename__ = "campaign_states"

    campaign: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # running, paused, ended
    changed_at: Mapped[datetime]
    changed_by: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)


class ReportDaily(Base):
    """Reports' rollups (campaigns.rollups): a count a clinic-local day, campaign line, step,
    channel and metric ("msg:delivered", "click", "optout:keyword", "reply:book",
    "enrol:csv", "stage:second_trimester"). Counts only: nothing here names a patient.
    Rebuilt day by day from the source tables, so a run can be repeated or interrupted."""

    __tablename__ = "report_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    #: The campaign's key, or a line of its own: ":staff_replies", ":broadcasts", "" (none).
    campaign: Mapped[str] = mapped_column(String(64), primary_key=True)
    step_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # "" for none
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)  # "" for none
    metric: Mapped[str] = mapped_column(String(48), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class Broadcast(Base):
    """A one-off message to a cohort (campaigns.broadcasts): what it says, to whom, when, who
    wrote, asked for, approved or cancelled it. Its sends are outbox rows with the step key
    `broadcast:<id>`; how many went is read from them."""

    __tablename__ = "broadcasts"
    __table_args__ = (Index("ix_broadcasts_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))  # staff's name for it; never sent
    purpose: Mapped[str] = mapped_column(String(16))  # service or marketing
    # draft, awaiting_approval, scheduled, cancelled (campaigns.rules.broadcasts.Status)
    status: Mapped[str] = mapped_column(String(24))
    #: Who it is for (campaigns.rules.broadcasts.Cohort.as_json).
    cohort: Mapped[dict[str, Any]]
    #: The text message as patients get it (clinic name and opt-out included).
    sms: Mapped[str | None] = mapped_column(String(1000))
    email_subject: Mapped[str | None] = mapped_column(String(200))
    #: The email's paragraphs, plain text, separated by blank lines (escaped when rendered).
    email_body: Mapped[str | None] = mapped_column(Text)
    #: When it goes (moved into each patient's window); None: as soon as it is scheduled.
    send_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    requested_by: Mapped[str | None] = mapped_column(String(128))  # asked for approval
    requested_at: Mapped[datetime | None]
    approved_by: Mapped[str | None] = mapped_column(String(128))
    approved_at: Mapped[datetime | None]
    scheduled_by: Mapped[str | None] = mapped_column(String(128))
    scheduled_at: Mapped[datetime | None]  # its outbox rows were written
    cancelled_by: Mapped[str | None] = mapped_column(String(128))
    cancelled_at: Mapped[datetime | None]
    #: Patients matched and messages (rows) written when it was scheduled.
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]
