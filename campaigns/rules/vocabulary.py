"""The shared vocabulary of the domain: channels, step kinds, statuses and sources."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"


class StepKind(StrEnum):
    SERVICE = "service"  # administrative: opt-in confirmation, programme end
    EDUCATION = "education"
    SAFETY = "safety"  # warning signs; never carries promotion
    MARKETING = "marketing"  # needs the channel's separate marketing consent
    #: A text a staff member wrote in the inbox (campaigns.inbox), never a campaign step: sent
    #: through the outbox like any other SMS, its words stored on the row when it is written.
    STAFF_REPLY = "staff_reply"


class Anchor(StrEnum):
    ENROLMENT = "enrolment"  # days after enrolment
    EDD = "edd"  # gestational age, as dated by the EDD
    BIRTH = "birth"  # days after the recorded birth


class EddSource(StrEnum):
    SCAN = "scan"
    LMP = "lmp"
    PATIENT = "patient"
    CLINICIAN = "clinician"


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    LOSS_HOLD = "loss_hold"  # the patient told us of a loss: nothing goes until staff decide
    COMPLETED = "completed"
    ENDED_LOSS = "ended_loss"
    STOPPED = "stopped"


class MessageStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    BOUNCED = "bounced"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    FAILED = "failed"


#: Rows that will never be sent, so the same step may be planned again in a later version.
NOT_SENT_FINAL = frozenset({MessageStatus.CANCELLED, MessageStatus.SKIPPED, MessageStatus.EXPIRED})
#: Rows a cancellation can still stop before any provider call starts.
CANCELLABLE = frozenset({MessageStatus.PENDING, MessageStatus.CLAIMED})
#: Rows whose story is over: nothing moves them again, so retention may delete them once old.
#: Not failed (staff may requeue it) nor unknown (the reconciler or staff settle it).
FINISHED = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.UNDELIVERED,
        MessageStatus.BOUNCED,
        MessageStatus.CANCELLED,
        MessageStatus.SKIPPED,
        MessageStatus.EXPIRED,
    }
)
#: Handed to a worker and not yet recorded.
IN_FLIGHT = frozenset({MessageStatus.CLAIMED, MessageStatus.SENDING})
#: Enrollments that still have a programme (at most one per patient and campaign).
LIVE_ENROLLMENT = frozenset(
    {EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED, EnrollmentStatus.LOSS_HOLD}
)


class ConsentPurpose(StrEnum):
    PROGRAMME = "programme"  # the education programme (UK GDPR Art. 9 explicit consent)
    MARKETING_SMS = "marketing_sms"  # PECR consent, per channel
    MARKETING_EMAIL = "marketing_email"


class ConsentSource(StrEnum):
    FORM = "form"
    CSV = "csv"
    API = "api"
    CLI = "cli"
    KEYWORD = "keyword"
    LINK = "link"
    PROVIDER = "provider"
    STAFF = "staff"
    PHONE = "phone"  # told to staff on the telephone
    IN_PERSON = "in_person"  # told to staff face to face


MARKETING_PURPOSE = {
    Channel.SMS: ConsentPurpose.MARKETING_SMS,
    Channel.EMAIL: ConsentPurpose.MARKETING_EMAIL,
}
