"""A campaign draft as staff edit it: one step's form in and out of a bundle, what a draft
changes compared with the live version, and a bundle as a zip of the repository's folder.

Pure. A step's words are template sources (the SMS, the email subject and the email body in
constrained Markdown, docs/content-format.md), never HTML from the browser: the body is stored
as `<language>/<step>.email.md.j2` and rendered through the shared layout like every email.
Problems name the form field they are about, in staff words (campaigns.rules.wording).
"""

from __future__ import annotations

import io
import re
import stat
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from campaigns.rules.bundles import Bundle
from campaigns.rules.catalog import CAMPAIGN_FILE, DEFAULT_LANGUAGE, Step
from campaigns.rules.errors import InputError, InputErrors
from campaigns.rules.vocabulary import Anchor, Channel, StepKind

SMS, SUBJECT, BODY = "sms", "subject", "body"
#: Each part a step's form edits, and the file it is kept in (after the step's key).
PART_FILES = {SMS: "sms.j2", SUBJECT: "subject.j2", BODY: "email.md.j2"}
#: The parts each channel needs.
CHANNEL_PARTS = {Channel.SMS.value: (SMS,), Channel.EMAIL.value: (SUBJECT, BODY)}
#: Form fields, in the order of the form (problems are listed in it).
FIELDS = (
    "key",
    "anchor",
    "weeks",
    "days",
    "valid_days",
    "kind",
    "channels",
    "catch_up",
    "topic",
    SMS,
    SUBJECT,
    BODY,
)
#: A step definition's keys, and the form field a problem with each is shown by.
_FIELD_OF = {
    "key": "key",
    "anchor": "anchor",
    "offset": "weeks",
    "kind": "kind",
    "channels": "channels",
    "catch_up": "catch_up",
    "topic": "topic",
    "valid_for": "valid_days",
}
_ANCHOR_ORDER = {Anchor.ENROLMENT.value: 0, Anchor.EDD.value: 1, Anchor.BIRTH.value: 2}
#: The longest word a form field takes (a whole email body is well under it).
MAX_CHARS = 20_000


def template_name(step: str, part: str, language: str = DEFAULT_LANGUAGE) -> str:
    return f"{language}/{step}.{PART_FILES[part]}"


@dataclass(frozen=True)
class StepForm:
    """One step's form, as typed (strings), or as a bundle holds it."""

    key: str = ""
    anchor: str = Anchor.EDD.value
    weeks: str = "0"
    days: str = "0"
    valid_days: str = "7"
    kind: str = StepKind.EDUCATION.value
    channels: tuple[str, ...] = (Channel.SMS.value, Channel.EMAIL.value)
    catch_up: bool = False
    topic: str = ""
    sms: str = ""
    subject: str = ""
    body: str = ""


def step_form(bundle: Bundle, key: str) -> StepForm | None:
    """A step of the bundle as its form shows it; None when the bundle has no such step."""
    found = _step_dict(bundle.definition, key)
    if found is None:
        return None
    offset = found.get("offset") or {}
    valid = found.get("valid_for") or {}
    return StepForm(
        key=key,
        anchor=str(found.get("anchor", "")),
        weeks=str(offset.get("weeks", 0)),
        days=str(offset.get("days", 0)),
        valid_days=str(int(valid.get("weeks", 0)) * 7 + int(valid.get("days", 0))),
        kind=str(found.get("kind", "")),
        channels=tuple(str(c) for c in found.get("channels") or ()),
        catch_up=bool(found.get("catch_up", False)),
        topic=str(found.get("topic") or ""),
        **{part: bundle.templates.get(template_name(key, part), "") for part in PART_FILES},
    )


def read_form(values: Mapping[str, str], channels: Sequence[str]) -> StepForm:
    """The step form from a request's fields (missing ones empty)."""

    def text(name: str) -> str:
        return values.get(name, "")[:MAX_CHARS]

    return StepForm(
        key=text("key").strip(),
        anchor=text("anchor").strip(),
        weeks=text("weeks").strip() or "0",
        days=text("days").strip() or "0",
        valid_days=text("valid_days").strip(),
        kind=text("kind").strip(),
        channels=tuple(dict.fromkeys(c.strip() for c in channels if c.strip())),
        catch_up=text("catch_up") in {"yes", "on", "true", "1"},
        topic=text("topic").strip(),
        # Line ends as the browser sends them (CRLF) would change the content hash alone.
        sms=text(SMS).replace("\r\n", "\n"),
        subject=text(SUBJECT).replace("\r\n", "\n"),
        body=text(BODY).replace("\r\n", "\n"),
    )


def with_step(bundle: Bundle, form: StepForm, replacing: str | None) -> Bundle:
    """The bundle with this step put in (replacing the step `replacing`, or added in timeline
    order). Raises InputErrors naming each form field whose value the definition refuses."""
    existing = _step_dict(bundle.definition, replacing) if replacing else None
    if replacing and existing is None:
        raise InputErrors([InputError("key", f"this draft has no step “{replacing}” any more")])
    key = replacing or form.key
    step = _step_definition(form, key, existing)
    steps = [dict(s) for s in bundle.definition.get("steps") or []]
    if replacing:
        steps = [step if s.get("key") == replacing else s for s in steps]
    else:
        if any(s.get("key") == key for s in steps):
            raise InputErrors([InputError("key", f"there is already a step “{key}”")])
        steps.insert(_position(steps, step), step)
    # Other steps' words, and this step's other languages for the channels it still has.
    templates = {
        n: s for n, s in bundle.templates.items() if not _belongs(n, key) or _kept(n, key, step)
    }
    for channel in step["channels"]:
        for part in CHANNEL_PARTS[channel]:
            name, typed = template_name(key, part), getattr(form, part)
            old = templates.get(name)
            # A browser drops a one-line field's final line break: the same words, unchanged.
            templates[name] = old if old is not None and old.strip() == typed.strip() else typed
    return Bundle({**bundle.definition, "steps": steps}, dict(sorted(templates.items())))


def without_step(bundle: Bundle, key: str) -> Bundle:
    """The bundle without a step and its words (in every language)."""
    steps = [s for s in bundle.definition.get("steps") or [] if s.get("key") != key]
    if len(steps) == len(bundle.definition.get("steps") or []):
        raise InputErrors([InputError("key", f"this draft has no step “{key}”")])
    if not steps:
        raise InputErrors([InputError("key", "a campaign needs at least one step")])
    templates = {n: s for n, s in bundle.templates.items() if not _belongs(n, key)}
    return Bundle({**bundle.definition, "steps": steps}, templates)


def _step_dict(definition: Mapping[str, Any], key: str | None) -> dict[str, Any] | None:
    for step in definition.get("steps") or []:
        if isinstance(step, dict) and step.get("key") == key:
            return step
    return None


def _belongs(name: str, key: str) -> bool:
    """A template of this step, in any language (<language>/<key>.<part>.j2)."""
    return name.partition("/")[2].startswith(f"{key}.")


def _kept(name: str, key: str, step: Mapping[str, Any]) -> bool:
    part = name.partition("/")[2].removeprefix(f"{key}.")
    return any(
        part == PART_FILES[p] for channel in step["channels"] for p in CHANNEL_PARTS[channel]
    )


def _step_definition(
    form: StepForm, key: str, existing: Mapping[str, Any] | None
) -> dict[str, Any]:
    problems: list[InputError] = []
    weeks = _whole(form.weeks, "weeks", problems)
    days = _whole(form.days, "days", problems)
    valid = _whole(form.valid_days, "valid_days", problems)
    if not key:
        problems.append(InputError("key", "give the step a short name, like week-30-sleep"))
    if not form.channels:
        problems.append(InputError("channels", "tick at least one: text message or email"))
    step: dict[str, Any] = {"key": key, "anchor": form.anchor}
    step["offset"] = _same_length(existing, "offset", {"weeks": weeks, "days": days})
    step["kind"] = form.kind
    step["channels"] = list(form.channels)
    if form.catch_up:
        step["catch_up"] = True
    if form.topic:
        step["topic"] = form.topic
    step["valid_for"] = _same_length(existing, "valid_for", {"days": valid})
    if not problems:
        problems = _definition_problems(step)
    if problems:
        problems.sort(key=lambda p: FIELDS.index(p.field) if p.field in FIELDS else len(FIELDS))
        raise InputErrors(problems)
    return step


def _whole(value: str, field: str, problems: list[InputError]) -> int:
    if not re.fullmatch(r"\d{1,4}", value):
        problems.append(InputError(field, "write a whole number, like 0, 6 or 14"))
        return 0
    return int(value)


def _same_length(
    existing: Mapping[str, Any] | None, name: str, new: dict[str, int]
) -> dict[str, int]:
    """The step's own way of writing a length (weeks or days) when the length is unchanged,
    so a save that changes nothing shows no difference."""
    old = (existing or {}).get(name)
    if isinstance(old, dict):
        total = int(old.get("weeks", 0)) * 7 + int(old.get("days", 0))
        if total == new.get("weeks", 0) * 7 + new.get("days", 0):
            return dict(old)
    return {k: v for k, v in new.items() if v} or {"days": 0}


def _definition_problems(step: dict[str, Any]) -> list[InputError]:
    """What the campaign definition's own checks say about this step, by form field."""
    try:
        Step.model_validate(step)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            message = str(error["msg"]).removeprefix("Value error, ")
            if loc:
                field = (
                    loc[1] if loc[0] == "offset" and len(loc) > 1 else _FIELD_OF.get(loc[0], "kind")
                )
            else:  # the step as a whole: its message names the field ("catch_up: ...")
                field = message.split(":", 1)[0] if ":" in message else "kind"
            problems.append(InputError(field, _plain(field, message)))
        return problems
    return []


def _plain(field: str, message: str) -> str:
    """Pydantic's words, where they are not staff words."""
    if field == "key":
        return "use small letters, digits and dashes, starting with a letter or digit"
    if field == "anchor":
        return "choose when the step is counted from"
    if field == "kind":
        return "choose what kind of message this is"
    if field == "channels":
        return "choose text message, email or both"
    if field in {"weeks", "days"} and "less than" in message:
        return "that is too late for a programme: " + message
    if message.startswith("catch_up: "):
        return message.removeprefix("catch_up: ")
    return message


def _position(steps: list[dict[str, Any]], step: Mapping[str, Any]) -> int:
    def when(s: Mapping[str, Any]) -> tuple[int, int]:
        offset = s.get("offset") or {}
        days = int(offset.get("weeks", 0)) * 7 + int(offset.get("days", 0))
        return _ANCHOR_ORDER.get(str(s.get("anchor")), 3), days

    for index, other in enumerate(steps):
        if when(other) > when(step):
            return index
    return len(steps)


# --- What a draft changes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    what: str  # "Text message", "Timing" ...
    before: str
    after: str


@dataclass(frozen=True)
class StepDifference:
    key: str
    state: str  # "added", "removed" or "changed"
    changes: tuple[Change, ...]


def differences(before: Bundle | None, after: Bundle) -> list[StepDifference]:
    """What `after` changes compared with `before` (None: a new campaign), step by step, each
    step's fields before and after; the campaign's own fields first (key "campaign")."""
    old = before or Bundle({}, {})
    found = []
    campaign = tuple(
        Change(name, _shown(old.definition.get(field)), _shown(after.definition.get(field)))
        for field, name in (
            ("name", "Name"),
            ("description", "Description"),
            ("send_time", "Send time"),
        )
        if old.definition.get(field) != after.definition.get(field)
    )
    if campaign:
        found.append(StepDifference("campaign", "added" if before is None else "changed", campaign))
    old_keys = [str(s.get("key")) for s in old.definition.get("steps") or []]
    new_keys = [str(s.get("key")) for s in after.definition.get("steps") or []]
    for key in new_keys + [k for k in old_keys if k not in new_keys]:
        changes = tuple(_step_changes(old, after, key))
        if key not in old_keys:
            found.append(StepDifference(key, "added", changes))
        elif key not in new_keys:
            found.append(StepDifference(key, "removed", changes))
        elif changes:
            found.append(StepDifference(key, "changed", changes))
    return found


def _step_changes(old: Bundle, new: Bundle, key: str) -> Iterable[Change]:
    before = _step_dict(old.definition, key) or {}
    after = _step_dict(new.definition, key) or {}
    for name, read in _STEP_FACTS:
        was, now = read(before) if before else "", read(after) if after else ""
        if was != now:
            yield Change(name, was, now)
    names = sorted(n for n in set(old.templates) | set(new.templates) if _belongs(n, key))
    for name in names:
        was, now = old.templates.get(name, ""), new.templates.get(name, "")
        if was != now:
            yield Change(_part_name(name, key), was, now)


def timing(step: Mapping[str, Any]) -> str:
    """When a step goes, in staff words: "20 weeks of pregnancy", "3 days after the birth"."""
    offset = step.get("offset") or {}
    weeks, days = int(offset.get("weeks", 0)), int(offset.get("days", 0))
    length = _length(weeks, days)
    anchor = str(step.get("anchor"))
    if anchor == Anchor.EDD.value:
        return f"{weeks} weeks{f' {days} days' if days else ''} of pregnancy"
    if anchor == Anchor.BIRTH.value:
        return f"{length} after the birth" if weeks or days else "the day of the birth"
    return f"{length} after enrolment" if weeks or days else "the day of enrolment"


def _length(weeks: int, days: int) -> str:
    parts = [f"{weeks} week{'s' * (weeks != 1)}"] if weeks else []
    if days or not weeks:
        parts.append(f"{days} day{'s' * (days != 1)}")
    return " ".join(parts)


def _valid(step: Mapping[str, Any]) -> str:
    valid = step.get("valid_for") or {}
    return _length(int(valid.get("weeks", 0)), int(valid.get("days", 0)))


def _catch_up(step: Mapping[str, Any]) -> str:
    if not step.get("catch_up"):
        return "no"
    return f"yes (topic {step.get('topic') or step.get('key')})"


_STEP_FACTS = (
    ("Timing", timing),
    ("Valid for", _valid),
    ("Kind", lambda s: str(s.get("kind", ""))),
    ("Channels", lambda s: ", ".join(str(c) for c in s.get("channels") or ())),
    ("Sent late if missed", _catch_up),
    ("Topic", lambda s: str(s.get("topic") or "")),
)
_PART_NAMES = {
    "sms.j2": "Text message",
    "subject.j2": "Email subject",
    "email.md.j2": "Email body",
    "html.j2": "Email body (HTML)",
    "txt.j2": "Email body (plain text)",
}


def _part_name(name: str, key: str) -> str:
    language, _, rest = name.partition("/")
    part = _PART_NAMES.get(rest.removeprefix(f"{key}."), rest)
    return part if language == DEFAULT_LANGUAGE else f"{part} ({language})"


def _shown(value: Any) -> str:
    return "" if value is None else str(value)


# --- Zip files in the repository's folder format ------------------------------------------------

#: Limits on an uploaded zip: the file, each entry and all entries unpacked.
MAX_ZIP_BYTES = 512 * 1024
MAX_ENTRY_BYTES = 256 * 1024
MAX_TOTAL_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 400
_LANGUAGE = r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?"
_TEMPLATE = re.compile(rf"{_LANGUAGE}/[a-z0-9][a-z0-9-]{{0,62}}\.[a-z0-9.]{{1,20}}\.j2")
FILE = "file"


def zip_of(bundle: Bundle) -> bytes:
    """The bundle as a zip: <key>/campaign.yaml and <key>/<language>/<step>.<part>.j2, as the
    repository's templates folder holds it (unzip it in templates/ to review it in git)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        definition = yaml.safe_dump(
            bundle.definition, sort_keys=False, allow_unicode=True, width=100
        )
        archive.writestr(f"{bundle.key}/{CAMPAIGN_FILE}", definition)
        for name, source in sorted(bundle.templates.items()):
            archive.writestr(f"{bundle.key}/{name}", source)
    return out.getvalue()


def bundle_from_zip(data: bytes) -> Bundle:
    """A campaign folder from an uploaded zip. Refuses, naming the entry, anything but
    campaign.yaml and <language>/<step>.<part>.j2 (in one folder, or at the top), links,
    encrypted entries, and anything too large once unpacked. Raises InputError("file")."""
    if len(data) > MAX_ZIP_BYTES:
        raise InputError(FILE, f"the zip is larger than {MAX_ZIP_BYTES // 1024} KB")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [e for e in archive.infolist() if not e.is_dir()]
    except (zipfile.BadZipFile, ValueError):
        raise InputError(FILE, "this is not a zip file") from None
    if len(entries) > MAX_ENTRIES:
        raise InputError(FILE, f"the zip holds more than {MAX_ENTRIES} files")
    top = _common_folder([e.filename for e in entries])
    files: dict[str, str] = {}
    total = 0
    for entry in entries:
        name = _entry_name(entry, top)
        text = _entry_text(archive, entry, name)
        total += len(text)
        if total > MAX_TOTAL_BYTES:
            raise InputError(FILE, "the zip's files are too large together")
        if name in files:
            raise InputError(FILE, f"{name} is in the zip twice")
        files[name] = text
    return _bundle(files)


def _common_folder(names: list[str]) -> str:
    """The one folder every entry is in ("leg-cramps/"), or "" when campaign.yaml is at the
    top."""
    if CAMPAIGN_FILE in names:
        return ""
    firsts = {n.split("/", 1)[0] for n in names}
    top = f"{firsts.pop()}/" if len(firsts) == 1 else ""
    return top if f"{top}{CAMPAIGN_FILE}" in names else ""


def _entry_name(entry: zipfile.ZipInfo, top: str) -> str:
    raw = entry.filename
    name = raw.removeprefix(top)
    if entry.flag_bits & 0x1:
        raise InputError(FILE, f"{raw} is encrypted")
    if stat.S_ISLNK(entry.external_attr >> 16):
        raise InputError(FILE, f"{raw} is a link, not a file")
    if name != CAMPAIGN_FILE and not _TEMPLATE.fullmatch(name):
        raise InputError(
            FILE,
            f"{raw} is not part of a campaign folder: a zip may hold only {CAMPAIGN_FILE} and "
            "<language>/<step>.<part>.j2 files (like en/welcome.sms.j2)",
        )
    return name


def _entry_text(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, name: str) -> str:
    # Read no more than the limit, whatever the entry's header claims.
    with archive.open(entry) as stream:
        data = stream.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise InputError(FILE, f"{name} is larger than {MAX_ENTRY_BYTES // 1024} KB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(FILE, f"{name} is not UTF-8 text") from None


def _bundle(files: dict[str, str]) -> Bundle:
    source = files.pop(CAMPAIGN_FILE, None)
    if source is None:
        raise InputError(FILE, f"the zip has no {CAMPAIGN_FILE}")
    try:
        definition = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise InputError(FILE, f"{CAMPAIGN_FILE} is not valid YAML: {exc}") from None
    if not isinstance(definition, dict):
        raise InputError(FILE, f"{CAMPAIGN_FILE} must hold key, name, send_time and steps")
    return Bundle(definition, dict(sorted(files.items())))
