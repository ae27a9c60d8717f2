"""Who may do what in the staff UI: four roles, each a set of permissions.

Checked on the server for every staff route (campaigns.web.guard), never only by hiding buttons.
Operators run the service and see no patient names or contact details; clinicians act on
patients and sign off campaign content; viewers read; admins do everything else and manage
staff accounts.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    CLINICIAN = "clinician"
    OPERATOR = "operator"
    ADMIN = "admin"


class Permission(StrEnum):
    #: Any signed-in user: the dashboard's counts, the content preview, one's own account.
    SIGNED_IN = "signed_in"
    #: Patient pages, timelines, texts, alerts and the outbox (names and contact details).
    VIEW_PATIENTS = "view_patients"
    #: Enrol, change a due date, record a birth or loss, pause and resume, work alerts.
    ACT_ON_PATIENTS = "act_on_patients"
    #: Send a staff reply outside the send window (as safety answers go): clinicians' call.
    SEND_OUTSIDE_WINDOW = "send_outside_window"
    #: Operations: backlog, requeue, resume a halted channel, metrics.
    OPERATE = "operate"
    #: The message log: every outbox row's status, attempts, errors and delivery events (the
    #: patient's name, the text and the patient filter only with VIEW_PATIENTS as well).
    VIEW_MESSAGES = "view_messages"
    #: Fix messages that did not go: retry, mark sent or not sent, cancel (audited).
    FIX_MESSAGES = "fix_messages"
    #: Reports: counts by campaign, step and day, with no patient data (every role).
    VIEW_REPORTS = "view_reports"
    #: Write, schedule, approve (another member's) and cancel broadcasts to a cohort.
    #: Reading them is VIEW_PATIENTS: their words and their counts, never a patient.
    SEND_BROADCASTS = "send_broadcasts"
    #: Staff accounts.
    MANAGE_USERS = "manage_users"
    #: Campaigns' content, steps, versions and sign-offs (no patient data in them).
    VIEW_CONTENT = "view_content"
    #: Edit a campaign as a draft, import a campaign folder as a draft.
    EDIT_CONTENT = "edit_content"
    #: Approve a draft so it goes live: clinicians only (never the draft's author, which
    #: campaigns.content_versions checks), not even admins: it is a clinical sign-off.
    APPROVE_CONTENT = "approve_content"
    #: Pause, resume or end a whole campaign for everyone.
    RUN_CAMPAIGNS = "run_campaigns"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset(
        {
            Permission.SIGNED_IN,
            Permission.VIEW_PATIENTS,
            Permission.VIEW_MESSAGES,
            Permission.VIEW_CONTENT,
            Permission.VIEW_REPORTS,
        }
    ),
    Role.CLINICIAN: frozenset(
        {
            Permission.SIGNED_IN,
            Permission.VIEW_PATIENTS,
            Permission.ACT_ON_PATIENTS,
            Permission.SEND_OUTSIDE_WINDOW,
            Permission.VIEW_MESSAGES,
            Permission.FIX_MESSAGES,
            Permission.VIEW_CONTENT,
            Permission.EDIT_CONTENT,
            Permission.APPROVE_CONTENT,
            Permission.RUN_CAMPAIGNS,
            Permission.VIEW_REPORTS,
            Permission.SEND_BROADCASTS,
        }
    ),
    Role.OPERATOR: frozenset(
        {
            Permission.SIGNED_IN,
            Permission.OPERATE,
            Permission.VIEW_MESSAGES,
            Permission.FIX_MESSAGES,
            Permission.VIEW_CONTENT,
            Permission.VIEW_REPORTS,
        }
    ),
    Role.ADMIN: frozenset(Permission) - {Permission.APPROVE_CONTENT},
}


def may(role: Role | str, permission: Permission) -> bool:
    try:
        return permission in GRANTS[Role(role)]
    except ValueError:
        return False  # a role this version does not know grants nothing


def parse_role(value: str) -> Role:
    """The role named (any case), or a ValueError listing the roles there are."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ValueError(f"{value!r} is not a role (one of: {known})") from None
