"""Campaign content on the staff pages: every campaign at a glance, one campaign's steps as a
sample patient gets them, the checks a draft's words must pass (`draft_problems`, run as staff
type, when they save and again at sign-off), saving one step of a draft, and sign-off.

The versions themselves (drafts, approval, export) are campaigns.content_versions; pausing or
ending a campaign for everyone is campaigns.campaign_states; the step form and the zip format
are campaigns.rules.drafts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from sqlalchemy import func, select

from campaigns import campaign_states, content_versions
from campaigns.content_versions import DRAFT, LIVE, Approval
from campaigns.rules.bundles import Bundle, campaign_of
from campaigns.rules.catalog import DEFAULT_LANGUAGE, Campaign, Catalog, CatalogError, Step
from campaigns.rules.content import (
    Clinic,
    ContentError,
    ContentRenderer,
    Recipient,
    SmsEncoding,
    Version,
)
from campaigns.rules.content_checks import StepContent, check_step, step_content
from campaigns.rules.drafts import BODY, SMS, SUBJECT, StepForm, timing
from campaigns.rules.errors import StateError
from campaigns.rules.roles import Role
from campaigns.rules.vocabulary import Anchor, Channel, StepKind
from campaigns.rules.wording import label
from campaigns.storage.db import Database
from campaigns.storage.models import CampaignState, CampaignVersion, Enrollment

#: The sample patient every preview is written for (the email body greets her by name).
SAMPLE_FIRST_NAME = "Sam"
_ANCHOR_ORDER = {Anchor.ENROLMENT: 0, Anchor.EDD: 1, Anchor.BIRTH: 2}
#: Form fields' names on the page, for problems listed away from their field.
FIELD_WORDS = {
    SMS: "Text message",
    SUBJECT: "Email subject",
    BODY: "Email body",
    "weeks": "Weeks",
    "days": "Days",
    "valid_days": "Valid for (days)",
    "catch_up": "Send late if missed",
    "key": "Step name",
    "anchor": "Counted from",
    "kind": "Kind",
    "channels": "Send by",
    "topic": "Topic",
}


# --- Checks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmsCount:
    """One wording of a step's text, measured as the provider will count it."""

    discreet: bool
    text: str
    encoding: SmsEncoding

    @property
    def limit(self) -> int:
        return 160 if self.encoding.encoding == "GSM-7" else 70

    @property
    def over(self) -> bool:
        return self.encoding.segments > 1 or self.encoding.encoding != "GSM-7"

    @property
    def words(self) -> str:
        """142 of 160 characters, 1 text."""
        texts = f"{self.encoding.segments} text{'s' * (self.encoding.segments != 1)}"
        said = f"{self.encoding.units} of {self.limit} characters, {texts}"
        if self.encoding.encoding != "GSM-7":
            said += " (a special character or emoji limits a text to 70)"
        if self.over:
            said += ": too long for one text"
        return said

    def as_json(self) -> dict[str, Any]:
        return {
            "wording": "discreet" if self.discreet else "usual",
            "text": self.text,
            "units": self.encoding.units,
            "limit": self.limit,
            "segments": self.encoding.segments,
            "encoding": self.encoding.encoding,
            "over": self.over,
            "words": self.words,
        }


@dataclass(frozen=True)
class StepCheck:
    #: Form field ("sms", "subject", "body", "weeks" ...) -> its problems, in staff words.
    problems: dict[str, list[str]] = field(default_factory=dict)
    #: The text in the usual and the discreet wording, when it renders.
    sms: tuple[SmsCount, ...] = ()


@dataclass(frozen=True)
class DraftCheck:
    #: Problems of the campaign definition as a whole (it cannot be read as a campaign).
    definition: tuple[str, ...]
    steps: dict[str, StepCheck]

    def messages(self) -> list[str]:
        """Every problem on one line each, naming the step and field: what stops sign-off."""
        found = list(self.definition)
        for key, check in self.steps.items():
            for name, problems in check.problems.items():
                found += [
                    f"step {key}, {FIELD_WORDS.get(name, label(name))}: {p}" for p in problems
                ]
        return found


def draft_problems(renderer: ContentRenderer, bundle: Bundle) -> DraftCheck:
    """Every problem in a draft: its definition (as start-up checks a campaign folder), then
    each step's English words (campaigns.rules.content_checks: one GSM-7 text with the count,
    the clinic's name first, the opt-out words, known placeholders and no personal details, no
    condition names in texts, the safety lines), rendered as they will be sent in both
    wordings with this clinic's details."""
    try:
        campaign = campaign_of(bundle, "this draft")
    except CatalogError as exc:
        return DraftCheck(tuple(str(exc).splitlines()), {})
    return DraftCheck(
        (),
        {step.key: check_words(renderer.clinic, words_of(bundle, step)) for step in campaign.steps},
    )


def words_of(bundle: Bundle, step: Step) -> StepContent:
    """A step's English words as a bundle holds them (empty where a file is missing)."""
    prefix = f"{bundle.key}/"
    return step_content(
        bundle.key,
        step,
        DEFAULT_LANGUAGE,
        lambda name: bundle.templates.get(name.removeprefix(prefix), ""),
    )


def form_words(form: StepForm, key: str) -> StepContent:
    """The words of a step form being typed (its other fields may still be wrong)."""
    kinds = {k.value for k in StepKind}
    channels = tuple(Channel(c) for c in form.channels if c in {ch.value for ch in Channel})
    return StepContent(
        StepKind(form.kind) if form.kind in kinds else StepKind.EDUCATION,
        form.topic or key,
        channels,
        DEFAULT_LANGUAGE,
        form.sms,
        form.subject,
        form.body,
    )


def check_words(clinic: Clinic, words: StepContent) -> StepCheck:
    """A step's words checked, by the form field each problem is about, and its text counted
    in both wordings."""
    report = check_step(words, clinic)
    problems: dict[str, list[str]] = defaultdict(list)
    for problem in report.problems:
        problems[problem.field].append(problem.message)
    counts = tuple(SmsCount(m.discreet, m.text, m.encoding) for m in report.sms)
    return StepCheck(dict(problems), counts)


def _cannot(exc: Exception) -> str:
    return f"this cannot be filled in: {exc}"


# --- Campaigns at a glance ----------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    key: str
    name: str
    live: CampaignVersion | None
    draft: CampaignVersion | None
    state: str  # running, paused, ended
    #: Enrollment status -> how many.
    enrolments: dict[str, int]


def summaries(db: Database) -> list[Summary]:
    """Every campaign with a live version or a draft (a new one imported), by name."""
    with db.session() as session:
        rows = list(
            session.scalars(select(CampaignVersion).where(CampaignVersion.state.in_([LIVE, DRAFT])))
        )
        counts = session.execute(
            select(Enrollment.campaign, Enrollment.status, func.count()).group_by(
                Enrollment.campaign, Enrollment.status
            )
        ).all()
    states = campaign_states.states(db)
    live = {r.campaign: r for r in rows if r.state == LIVE}
    drafts = {r.campaign: r for r in rows if r.state == DRAFT}
    enrolments: dict[str, dict[str, int]] = defaultdict(dict)
    for campaign, status, count in counts:
        enrolments[campaign][status] = int(count)
    found = [
        Summary(
            key,
            _name(live.get(key) or drafts[key]),
            live.get(key),
            drafts.get(key),
            states.get(key, campaign_states.RUNNING),
            enrolments.get(key, {}),
        )
        for key in set(live) | set(drafts)
    ]
    return sorted(found, key=lambda s: (s.name.lower(), s.key))


@dataclass(frozen=True)
class Choice:
    """A campaign offered in the enrol forms."""

    key: str
    name: str
    #: "paused" or "ended" when it takes no new patients; "" when it does.
    closed: str


def choices(catalog: Catalog, closed: Mapping[str, str]) -> list[Choice]:
    """Every live campaign by name, those taking new patients first."""
    found = [Choice(key, catalog[key].name, closed.get(key, "")) for key in catalog]
    return sorted(found, key=lambda c: (bool(c.closed), c.name.lower(), c.key))


def _name(row: CampaignVersion) -> str:
    return str(row.definition.get("name") or row.campaign)


@dataclass(frozen=True)
class CampaignView:
    summary: Summary
    versions: list[CampaignVersion]
    #: Who paused, resumed or ended it last, when, and why (None: never).
    state_change: CampaignState | None


def campaign_view(db: Database, key: str) -> CampaignView | None:
    found = next((s for s in summaries(db) if s.key == key), None)
    if found is None:
        return None
    with db.session() as session:
        return CampaignView(
            found, content_versions.versions(session, key), session.get(CampaignState, key)
        )


# --- One campaign's steps for a sample patient --------------------------------------------------


@dataclass(frozen=True)
class StepSample:
    step: Step
    timing: str
    sms: tuple[SmsCount, ...]
    #: Subject in the usual and the discreet wording.
    subjects: tuple[str, ...]
    problem: str = ""


def timing_of(step: Step) -> str:
    """When the step goes, in staff words ("20 weeks of pregnancy")."""
    return timing(step.model_dump(mode="json"))


def ordered(steps: Iterable[Step]) -> list[Step]:
    """On the timeline: from enrolment, through the pregnancy, to after the birth."""
    return sorted(steps, key=lambda s: (_ANCHOR_ORDER[s.anchor], s.offset.total_days))


def samples(
    renderer: ContentRenderer, campaign: Campaign, version: int | None, draft: Version | None
) -> list[StepSample]:
    """Each step as the sample patient gets it, in the usual and the discreet wording, from a
    live or retired version (`version`) or a draft."""
    found = []
    for step in ordered(campaign.steps):
        sms: list[SmsCount] = []
        subjects: list[str] = []
        problem = ""
        for discreet in (False, True):
            recipient = Recipient(SAMPLE_FIRST_NAME, DEFAULT_LANGUAGE, discreet)
            try:
                if Channel.SMS in step.channels:
                    text = renderer.render_sms(campaign.key, step.key, recipient, version, draft)
                    sms.append(SmsCount(discreet, text.body, text.encoding))
                if Channel.EMAIL in step.channels:
                    subjects.append(
                        renderer.render_email(
                            campaign.key, step.key, recipient, "#", version, draft
                        ).subject
                    )
            except (ContentError, TemplateError) as exc:
                problem = _cannot(exc)
        found.append(StepSample(step, timing_of(step), tuple(sms), tuple(subjects), problem))
    return found


# --- Saving and signing off ---------------------------------------------------------------------


def draft_of(db: Database, key: str) -> tuple[CampaignVersion, Bundle] | None:
    """The campaign's open draft and its content, if it has one."""
    with db.session() as session:
        row = content_versions.current(session, key, DRAFT)
        return None if row is None else (row, content_versions.bundle_of(row))


def live_of(db: Database, key: str) -> tuple[CampaignVersion, Bundle] | None:
    with db.session() as session:
        row = content_versions.current(session, key, LIVE)
        return None if row is None else (row, content_versions.bundle_of(row))


def approve_draft(
    db: Database,
    renderer: ContentRenderer,
    catalog: Catalog,
    key: str,
    *,
    approver: str,
    role: Role,
    seen_hash: str,
    note: str,
    apply_to_pending: bool,
    now: datetime,
) -> Approval:
    """Sign off the campaign's draft: its checks are run again here, on what is stored."""
    found = draft_of(db, key)
    if found is None:
        raise StateError("this campaign has no draft to approve (approved or discarded already?)")
    row, bundle = found
    approval = content_versions.approve(
        db,
        row.id,
        approver=approver,
        role=role,
        seen_hash=seen_hash,
        note=note,
        problems=draft_problems(renderer, bundle).messages(),
        apply_to_pending=apply_to_pending,
        now=now,
    )
    refresh = getattr(catalog, "refresh", None)
    if callable(refresh):
        refresh(force=True)  # this process serves the new version at once
    return approval
