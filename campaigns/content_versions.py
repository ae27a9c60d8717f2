"""Campaign versions in the database: seeded from the repository, edited as drafts, made live
only by a second person's clinical sign-off (docs/decisions.md, "Campaign versions").

The repository's campaign folders are the seed and the exchange format: a campaign with no
version yet gets its folder as version 1 (approved by "repository", as its content was
reviewed in git). After that the database holds the live version, and a folder comes back
in only as a draft (`import_draft`), which needs sign-off like any other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from campaigns import audit
from campaigns.rules.bundles import Bundle, campaign_of, read_bundle
from campaigns.rules.catalog import CAMPAIGN_FILE, Campaign, Catalog, CatalogError
from campaigns.rules.clock import Clock
from campaigns.rules.content import Version
from campaigns.rules.errors import InputError, StateError
from campaigns.rules.roles import Role
from campaigns.rules.vocabulary import MessageStatus
from campaigns.storage.db import Database, insert_if_absent
from campaigns.storage.models import (
    CampaignState,
    CampaignVersion,
    Enrollment,
    ScheduledMessage,
)

log = logging.getLogger(__name__)

DRAFT, LIVE, RETIRED, DISCARDED = "draft", "live", "retired", "discarded"
SEED_AUTHOR = "repository"


class ApprovalError(StateError):
    """A sign-off the rules do not allow (own draft, not a clinician, content changed)."""


def seed(db: Database, templates_dir: Path, now: datetime) -> list[str]:
    """Make each repository campaign that has no version yet its version 1, live. Safe to run
    from every process at start-up: a campaign another process seeded first is left alone."""
    seeded = []
    for folder in sorted(templates_dir.iterdir()):
        if not (folder / CAMPAIGN_FILE).is_file() or folder.name.startswith(("_", ".")):
            continue
        bundle = read_bundle(folder)
        campaign_of(bundle, str(folder / CAMPAIGN_FILE), folder)
        try:
            with db.session() as session:
                if session.scalar(_count(bundle.key)):
                    continue
                # No audit row: the version itself says who (the repository) and when.
                session.add(_row(bundle, 1, LIVE, "seed", SEED_AUTHOR, now, approved=True))
                # A state row from the start: enrolments share-lock it (campaign_states).
                insert_if_absent(
                    session,
                    CampaignState,
                    campaign=bundle.key,
                    state="running",
                    changed_at=now,
                    changed_by=SEED_AUTHOR,
                )
        except IntegrityError:
            continue  # another process seeded it at the same moment
        seeded.append(bundle.key)
        log.info(
            "seeded campaign %s from the repository", bundle.key, extra={"event": "content.seeded"}
        )
    return seeded


def _count(campaign: str) -> Any:
    return (
        select(func.count())
        .select_from(CampaignVersion)
        .where(CampaignVersion.campaign == campaign)
    )


def _row(
    bundle: Bundle,
    number: int,
    state: str,
    source: str,
    author: str,
    now: datetime,
    *,
    approved: bool = False,
    based_on: int | None = None,
) -> CampaignVersion:
    digest = bundle.content_hash()
    return CampaignVersion(
        campaign=bundle.key,
        number=number,
        state=state,
        source=source,
        based_on=based_on,
        definition=bundle.definition,
        templates=bundle.templates,
        content_hash=digest,
        author=author,
        editors=[author],
        created_at=now,
        updated_at=now,
        approved_by=author if approved else None,
        approved_at=now if approved else None,
        approved_hash=digest if approved else None,
        approval_note="reviewed in the repository" if approved else None,
        live_from=now if state == LIVE else None,
    )


def bundle_of(row: CampaignVersion) -> Bundle:
    return Bundle(dict(row.definition), dict(row.templates))


# --- Reading live versions -------------------------------------------------------------------


@dataclass(frozen=True)
class Live:
    campaigns: dict[str, Campaign]
    versions: dict[str, int]


def load_live(db: Database) -> Live:
    """Every live version, checked as a campaign folder is checked at start-up."""
    with db.reading() as connection:
        rows = connection.execute(
            select(CampaignVersion.__table__).where(CampaignVersion.state == LIVE)
        ).all()
    campaigns, versions = {}, {}
    for row in sorted(rows, key=lambda r: r.campaign):
        bundle = Bundle(dict(row.definition), dict(row.templates))
        where = f"campaign {row.campaign!r} version {row.number}"
        campaigns[row.campaign] = campaign_of(bundle, where)
        versions[row.campaign] = row.id
    return Live(campaigns, versions)


class LiveCatalog(Catalog):
    """The live campaigns, kept current: each process sees a newly approved version within
    `ttl` seconds (one small read per `ttl`, never inside a transaction's lock), and at once
    in the process that approved it (docs/decisions.md, "Campaign versions")."""

    def __init__(self, db: Database, ttl: float = 1.0) -> None:
        super().__init__({})
        self._db, self._ttl = db, ttl
        self._checked_at = -1e9
        self._ids: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._checked_at < self._ttl:
            return
        with self._lock:
            with self._db.reading() as connection:
                ids = tuple(
                    connection.execute(
                        select(CampaignVersion.id)
                        .where(CampaignVersion.state == LIVE)
                        .order_by(CampaignVersion.id)
                    ).scalars()
                )
            if ids and ids != self._ids:
                live = load_live(self._db)
                self.replace(live.campaigns, live.versions)
                self._ids = tuple(sorted(live.versions.values()))
            self._checked_at = time.monotonic()

    def __getitem__(self, key: str) -> Campaign:
        self.refresh()
        return super().__getitem__(key)

    def snapshot(self) -> Catalog:
        self.refresh()
        return super().snapshot()

    def __iter__(self) -> Iterator[str]:
        self.refresh()
        return super().__iter__()

    def __len__(self) -> int:
        self.refresh()
        return super().__len__()


def live_catalog(db: Database, templates_dir: Path, clock: Clock) -> Catalog:
    """The database's live campaigns (seeding any the database does not have yet); the
    repository's folders where there is no versions table yet (before `campaigns migrate`)."""
    try:
        seed(db, templates_dir, clock.now())
    except (OperationalError, ProgrammingError):
        log.warning(
            "no campaign_versions table yet: campaigns come from the repository until the "
            "database is migrated",
            extra={"event": "content.versions_table_missing"},
        )
        return Catalog.load(templates_dir)
    catalog = LiveCatalog(db)
    catalog.refresh(force=True)
    return catalog


class VersionCache:
    """Versions by id for rendering: live and retired versions never change, so each is read
    once per process (with `Database.reading`, as rendering runs inside a batch's
    transaction). None asks for the campaign's first version."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._by_id: dict[int, Version] = {}
        self._first: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, campaign: str, version: int | None) -> Version | None:
        if version is None:
            version = self._first.get(campaign)
            if version is None:
                version = self._first_of(campaign)
                if version is None:
                    return None  # a database without versions: the files
                self._first[campaign] = version
        found = self._by_id.get(version)
        if found is None:
            with self._db.reading() as connection:
                row = connection.execute(
                    select(CampaignVersion.__table__).where(CampaignVersion.id == version)
                ).first()
            if row is None or row.state not in (LIVE, RETIRED):
                raise LookupError(f"campaign version {version} is not live or retired")
            found = Version(row.id, row.campaign, row.number, dict(row.templates))
            with self._lock:
                self._by_id[version] = found
        return found

    def _first_of(self, campaign: str) -> int | None:
        with self._db.reading() as connection:
            return connection.execute(
                select(func.min(CampaignVersion.id)).where(
                    CampaignVersion.campaign == campaign,
                    CampaignVersion.state.in_([LIVE, RETIRED]),
                )
            ).scalar()


def as_version(row: CampaignVersion, *, draft: bool = False) -> Version:
    return Version(None if draft else row.id, row.campaign, row.number, dict(row.templates))


# --- Drafts and sign-off ---------------------------------------------------------------------


def versions(session: Session, campaign: str) -> list[CampaignVersion]:
    """Every version of a campaign, newest first."""
    return list(
        session.scalars(
            select(CampaignVersion)
            .where(CampaignVersion.campaign == campaign)
            .order_by(CampaignVersion.number.desc())
        )
    )


def current(session: Session, campaign: str, state: str) -> CampaignVersion | None:
    return session.scalar(
        select(CampaignVersion).where(
            CampaignVersion.campaign == campaign, CampaignVersion.state == state
        )
    )


def open_draft(db: Database, campaign: str, actor: str, now: datetime) -> int:
    """The campaign's draft, started from its live version if there is none; returns its id."""
    with db.session() as session:
        found = current(session, campaign, DRAFT)
        if found is not None:
            return found.id
        live = current(session, campaign, LIVE)
        if live is None:
            raise StateError(f"campaign {campaign!r} has no live version to start a draft from")
        row = _row(
            bundle_of(live),
            _next_number(session, campaign),
            DRAFT,
            "staff",
            actor,
            now,
            based_on=live.id,
        )
        session.add(row)
        session.flush()
        audit.record(
            session, now, actor, "campaign_draft_started", campaign=campaign, version=row.id
        )
        return row.id


def _next_number(session: Session, campaign: str) -> int:
    top = session.scalar(
        select(func.max(CampaignVersion.number)).where(CampaignVersion.campaign == campaign)
    )
    return (top or 0) + 1


def save_draft(
    db: Database,
    version_id: int,
    bundle: Bundle,
    actor: str,
    now: datetime,
    expected_hash: str | None = None,
) -> CampaignVersion:
    """Replace a draft's content. The definition must still be a valid campaign (errors name
    the step and field); wording problems are shown beside the draft and stop only sign-off.
    `expected_hash`: the draft's hash when the editor opened it; refused if it changed since
    (someone else saved meanwhile), so no one's edit is silently overwritten."""
    campaign_of(bundle, "draft")
    with db.session() as session:
        row = _draft(session, version_id)
        if expected_hash is not None and row.content_hash != expected_hash:
            raise StateError(
                "someone else saved this draft after you opened it; open it again to see "
                "their changes, then make yours"
            )
        if bundle.key != row.campaign:
            raise InputError("key", f"a draft of {row.campaign!r} cannot change its key")
        row.definition, row.templates = bundle.definition, bundle.templates
        row.content_hash, row.updated_at = bundle.content_hash(), now
        # Whoever edits is an author too: none of them may approve it.
        row.author = actor
        if actor not in row.editors:
            row.editors = [*row.editors, actor]
        audit.record(
            session, now, actor, "campaign_draft_saved", campaign=row.campaign, version=row.id
        )
        return row


def authors(row: CampaignVersion) -> set[str]:
    """Everyone who wrote any of a draft: who started, imported or saved it."""
    return {row.author, *row.editors}


def _draft(session: Session, version_id: int) -> CampaignVersion:
    row = session.get(CampaignVersion, version_id, with_for_update=True)
    if row is None or row.state != DRAFT:
        raise StateError(
            "this draft has already been approved or discarded; open the campaign again"
        )
    return row


def discard_draft(db: Database, version_id: int, actor: str, now: datetime) -> None:
    with db.session() as session:
        row = _draft(session, version_id)
        row.state, row.updated_at = DISCARDED, now
        audit.record(
            session, now, actor, "campaign_draft_discarded", campaign=row.campaign, version=row.id
        )


@dataclass(frozen=True)
class Approval:
    version_id: int
    number: int
    retired: int | None
    repointed: int
    cancelled: int


def approve(
    db: Database,
    version_id: int,
    *,
    approver: str,
    role: Role,
    seen_hash: str,
    note: str,
    problems: list[str],
    apply_to_pending: bool,
    now: datetime,
) -> Approval:
    """Make a draft live. Only a clinician who is not its author may, only for the content
    they saw (`seen_hash`), and only when the checks found no problem."""
    if role is not Role.CLINICIAN:
        raise ApprovalError("only a clinician can approve campaign content")
    with db.session() as session:
        row = _draft(session, version_id)
        if approver in authors(row):
            raise ApprovalError(
                "you wrote or changed this draft: a different clinician must approve it"
            )
        if row.content_hash != seen_hash:
            raise ApprovalError(
                "the draft changed since you opened it; read it again before approving"
            )
        if problems:
            raise ApprovalError("the draft has problems to fix first: " + "; ".join(problems))
        live = current(session, row.campaign, LIVE)
        if live is not None:
            live.state, live.live_until = RETIRED, now
            session.flush()  # one live version at a time (a unique index says so)
        row.state, row.live_from = LIVE, now
        row.approved_by, row.approved_at, row.approved_hash = approver, now, row.content_hash
        row.approval_note = note.strip() or None
        repointed = cancelled = 0
        if apply_to_pending:
            repointed, cancelled = _apply_to_pending(session, row, now)
        audit.record(
            session,
            now,
            approver,
            "campaign_approved",
            campaign=row.campaign,
            version=row.id,
            number=row.number,
            content_hash=row.content_hash,
            applied_to_pending=apply_to_pending,
            repointed=repointed,
            cancelled=cancelled,
        )
        log.info(
            "campaign version approved", extra={"event": "content.approved", "version": row.id}
        )
        return Approval(row.id, row.number, live.id if live else None, repointed, cancelled)


def _apply_to_pending(session: Session, row: CampaignVersion, now: datetime) -> tuple[int, int]:
    """Pending sends of the campaign take the new version; those of steps (or channels) it no
    longer has are cancelled, and so are those whose step became another kind (education to
    marketing, say): consent and the safety hold are read from the row's kind. Their timing
    is not changed (docs/decisions.md)."""
    campaign = campaign_of(bundle_of(row), "approved version")
    kinds = {(s.key, c.value): s.kind.value for s in campaign.steps for c in s.channels}
    ids = select(Enrollment.id).where(Enrollment.campaign == row.campaign)
    still = ScheduledMessage.status == MessageStatus.PENDING.value
    pending = session.execute(
        select(
            ScheduledMessage.id,
            ScheduledMessage.step_key,
            ScheduledMessage.channel,
            ScheduledMessage.kind,
        ).where(
            ScheduledMessage.enrollment_id.in_(ids),
            still,
            # Campaign steps only: staff replies and broadcasts have "kind:id" keys.
            ScheduledMessage.step_key.not_like("%:%"),
        )
    ).all()
    keep = [p.id for p in pending if kinds.get((p.step_key, p.channel)) == p.kind]
    removed = [p.id for p in pending if (p.step_key, p.channel) not in kinds]
    changed = [p.id for p in pending if kinds.get((p.step_key, p.channel)) not in (None, p.kind)]
    for chunk in _chunks(keep):
        session.execute(
            update(ScheduledMessage)
            .where(ScheduledMessage.id.in_(chunk), still)
            .values(content_version=row.id, updated_at=now)
        )
    for reason, dropped in (("step_removed", removed), ("step_changed", changed)):
        for chunk in _chunks(dropped):
            session.execute(
                update(ScheduledMessage)
                .where(ScheduledMessage.id.in_(chunk), still)
                .values(status=MessageStatus.CANCELLED.value, reason=reason, updated_at=now)
            )
    return len(keep), len(removed) + len(changed)


def _chunks(ids: list[int], size: int = 5000) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def import_draft(db: Database, bundle: Bundle, actor: str, now: datetime) -> int:
    """A campaign folder (from git, or exported earlier) as a draft: a new campaign's first
    version, or the next version of a known one. It goes live only by sign-off."""
    campaign_of(bundle, "imported campaign")
    with db.session() as session:
        if current(session, bundle.key, DRAFT) is not None:
            raise StateError(
                f"campaign {bundle.key!r} already has a draft: approve or discard it first"
            )
        live = current(session, bundle.key, LIVE)
        row = _row(
            bundle,
            _next_number(session, bundle.key),
            DRAFT,
            "import",
            actor,
            now,
            based_on=live.id if live else None,
        )
        session.add(row)
        session.flush()
        audit.record(session, now, actor, "campaign_imported", campaign=bundle.key, version=row.id)
        return row.id


def export(
    db: Database, campaign: str, version_id: int | None = None
) -> tuple[CampaignVersion, Bundle]:
    """A version (the live one by default) as a bundle, to write as a campaign folder."""
    with db.session() as session:
        row = (
            session.get(CampaignVersion, version_id)
            if version_id is not None
            else current(session, campaign, LIVE)
        )
        if row is None or row.campaign != campaign:
            raise CatalogError(f"campaign {campaign!r} has no such version")
        return row, bundle_of(row)
