"""The checks one step's words must pass, in staff words: start-up runs them on every step
(`check_campaigns`), and an editor can run `check_step` as staff type.

Each problem is an InputError naming its part: "sms", "subject" or "body" (campaigns.rules.wording
calls them "Text message", "Email subject", "Email body"). Every part is rendered in the usual
and the discreet wording with the clinic's real details, exactly as it will be sent
(campaigns.rules.content), and the SMS is measured in both. docs/content-format.md explains each
rule; docs/clinical-content.md (section 8) says why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from campaigns.rules.catalog import (
    DEFAULT_LANGUAGE,
    Campaign,
    Catalog,
    CatalogError,
    Step,
    template_names,
)
from campaigns.rules.content import (
    GSM7_BASIC,
    GSM7_EXTENDED,
    Clinic,
    ContentRenderer,
    SmsEncoding,
    Version,
    _one_line,
    markdown_environment,
    render_email_body,
    sms_encoding,
    template_environment,
)
from campaigns.rules.email_markup import MarkupError
from campaigns.rules.errors import InputError
from campaigns.rules.vocabulary import Channel, StepKind
from campaigns.rules.wording import label

SMS, SUBJECT, BODY = "sms", "subject", "body"
#: The placeholders each part may use. A text and a subject carry no patient detail at all
#: (both show on lock screens); the email body may greet her by first name.
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    SMS: ("clinic", "discreet"),
    SUBJECT: ("clinic", "discreet"),
    BODY: ("clinic", "discreet", "first_name"),
}
CLINIC_FIELDS = tuple(f.name for f in fields(Clinic))
#: A name to render the email body with: it must trip none of the word checks below.
SAMPLE_FIRST_NAME = "Sam"
#: Conditions a text never names (docs/clinical-content.md, section 8): a text can be read on
#: a shared phone or a lock screen. Emails may ("a blood clot in the leg (DVT)").
DIAGNOSIS_WORDS = re.compile(
    r"\b(?:dvt|thrombos[ie]s|embolism|pre-?eclampsia|eclampsia|vte|miscarriages?|"
    r"stillbirths?|ectopic|diabetes)\b",
    re.IGNORECASE,
)
#: What the discreet wording must never say (a substring: "pregnancies", "afterbirth").
PREGNANCY_WORDS = re.compile(r"pregnan|bab(?:y|ies)|bump|birth", re.IGNORECASE)
#: Every scheduled English text ends so ("Reply STOP to end", "... or STOP to end.").
OPT_OUT_END = re.compile(r"STOP to end\.?$")
STOP_WORD = re.compile(r"\bSTOP\b")
_WORDINGS = {False: "usual wording", True: "discreet wording"}


@dataclass(frozen=True)
class SafetyLine:
    """Words a safety message must keep: any one of `words`, each at the start of a word."""

    says: str
    words: tuple[str, ...]


_999 = SafetyLine("“999”", ("999",))
_CHEST_PAIN = SafetyLine("“chest pain” (when to call 999)", ("chest pain",))
_SAME_DAY = SafetyLine("“111” or “maternity unit”", ("111", "maternity unit"))
#: Per topic (a step's `topic`, or its key): the emergency lines its SMS and its email body must
#: both keep, in every wording. From the shipped safety texts and docs/clinical-content.md
#: sections 2 to 4 (V5, V6, P2, P3, M1, M4, M5); docs/content-format.md lists them.
SAFETY_LINES: dict[str, tuple[SafetyLine, ...]] = {
    "clot": (_999, _CHEST_PAIN, _SAME_DAY),
    "pre-eclampsia": (
        _SAME_DAY,
        SafetyLine("“headache”", ("headache",)),
        SafetyLine("“vision”", ("vision",)),
        SafetyLine("“ribs”", ("rib",)),
        SafetyLine("“vomiting”", ("vomit",)),
        SafetyLine("“swelling”", ("swelling",)),
    ),
    "after-birth": (
        _999,
        _CHEST_PAIN,
        _SAME_DAY,
        SafetyLine("“headache”", ("headache",)),
        SafetyLine("“swelling” or “swollen”", ("swelling", "swollen")),
    ),
}
#: A safety topic without a row, or a language other than English: where to get help, in the
#: digits every language shares.
ANY_SAFETY_ROUTE = (SafetyLine("“111” or “999”", ("111", "999")),)


@dataclass(frozen=True)
class StepContent:
    """One step's words as staff write them (template sources), and what the checks need."""

    kind: StepKind
    topic: str
    channels: tuple[Channel, ...]
    language: str
    sms: str = ""
    subject: str = ""
    body: str = ""


@dataclass(frozen=True)
class SmsMeasure:
    discreet: bool
    text: str
    encoding: SmsEncoding  # units (characters), encoding and segments


@dataclass(frozen=True)
class ContentReport:
    problems: tuple[InputError, ...]
    #: The text in the usual and the discreet wording, when it renders.
    sms: tuple[SmsMeasure, ...]


def check_step(content: StepContent, clinic: Clinic) -> ContentReport:
    """Every problem in one step's words, and the measured text."""
    found = _Problems()
    measures: tuple[SmsMeasure, ...] = ()
    if Channel.SMS in content.channels:
        texts = _render(SMS, content.sms, {"clinic": clinic}, found)
        if texts is not None:
            texts = {discreet: _one_line(text) for discreet, text in texts.items()}
            measures = tuple(SmsMeasure(d, t, sms_encoding(t)) for d, t in texts.items())
            _check_sms(content, measures, clinic, found)
    if Channel.EMAIL in content.channels:
        subjects = _render(SUBJECT, content.subject, {"clinic": clinic}, found)
        for discreet, subject in (subjects or {}).items():
            _check_discreet(SUBJECT, discreet, subject, found)
        context = {"clinic": clinic, "first_name": SAMPLE_FIRST_NAME}
        bodies = _render(BODY, content.body, context, found)
        for discreet, text in (bodies or {}).items():
            _check_discreet(BODY, discreet, text, found)
            _check_safety(BODY, content, discreet, text, found)
    return ContentReport(tuple(found.errors()), measures)


def step_content(
    campaign_key: str, step: Step, language: str, source: Callable[[str], str]
) -> StepContent:
    """A step's content as the templates hold it; `source` reads a template by name."""
    parts: dict[str, str] = {}
    for channel in step.channels:
        names = template_names(campaign_key, step, channel, language)
        keys = (SMS,) if channel is Channel.SMS else (SUBJECT, BODY)
        parts.update({key: source(name) for key, name in zip(keys, names, strict=True)})
    return StepContent(step.kind, step.catch_up_topic, step.channels, language, **parts)


def check_campaigns(
    campaigns: Iterable[Campaign], renderer: ContentRenderer, versions: Catalog | None = None
) -> None:
    """Refuse to start if any step's English words fail a check, as this clinic's details make
    them (its short name in every text). `versions` (a Catalog): check each campaign's live
    version, not the repository's files."""
    problems = []
    for campaign in campaigns:
        version = (
            renderer.version_of(
                campaign.key, versions.version(campaign.key) if versions is not None else None
            )
            if versions is not None
            else None
        )

        def source(name: str, version: Version | None = version) -> str:
            return renderer.source(name, version)

        for step in campaign.steps:
            content = step_content(campaign.key, step, DEFAULT_LANGUAGE, source)
            problems += [
                f"{campaign.key}/{step.key}, {label(problem.field)}: {problem.message}"
                for problem in check_step(content, renderer.clinic).problems
            ]
    if problems:
        raise CatalogError(
            "these steps' words fail the content checks (docs/content-format.md) with the clinic "
            f"name {renderer.clinic.short_name!r}: " + "; ".join(problems)
        )


class _Problems:
    """Problems in the order found, each said once: one found in a single wording says which."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], set[bool]] = {}

    def add(self, part: str, message: str, discreet: bool | None = None) -> None:
        wordings = self._found.setdefault((part, message), set())
        wordings.update((False, True) if discreet is None else (discreet,))

    def errors(self) -> list[InputError]:
        return [
            InputError(part, message if len(wordings) == 2 else _only(message, *wordings))
            for (part, message), wordings in self._found.items()
        ]


def _only(message: str, discreet: bool) -> str:
    stop = "." if message.endswith(".") else ""
    return f"{message.removesuffix('.')} ({_WORDINGS[discreet]} only){stop}"


@cache
def _environments() -> dict[str, SandboxedEnvironment]:
    plain = template_environment(None)
    return {SMS: plain, SUBJECT: plain, BODY: markdown_environment(plain)}


def _render(
    part: str, source: str, context: dict[str, Any], found: _Problems
) -> dict[bool, str] | None:
    """The part in the usual and the discreet wording (the email body as its plain text), or
    None when it cannot render, with the problems that stop it."""
    if not source.strip():
        found.add(part, "this is empty: write it first")
        return None
    env = _environments()[part]
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        found.add(
            part,
            f"line {exc.lineno}: a placeholder or {{% if %}} is not written right ({exc.message})",
        )
        return None
    wrong = _placeholder_problems(part, tree)
    for message in wrong:
        found.add(part, message)
    if wrong:
        return None
    template = env.from_string(tree)
    rendered = {}
    for discreet in (False, True):
        values = {**context, "discreet": discreet}
        try:
            if part == BODY:
                rendered[discreet] = render_email_body(template, values).text
            else:
                rendered[discreet] = template.render(values)
        except MarkupError as exc:
            found.add(part, f"line {exc.line}: {exc.message}", discreet)
        except Exception as exc:  # a template staff wrote: say why it fails, never crash
            found.add(part, f"this cannot be filled in: {exc}", discreet)
    return rendered if len(rendered) == 2 else None


def _placeholder_problems(part: str, tree: nodes.Template) -> list[str]:
    """Placeholders outside the part's allow-list, clinic details that do not exist, and
    other templates pulled in (whose words these checks would not see)."""
    allowed = PLACEHOLDERS[part]
    usable = "the clinic's details (such as {{ clinic.short_name }}) and discreet wording"
    if "first_name" in allowed:
        usable = "{{ first_name }}, " + usable
    problems = [
        f"“{name}” cannot be used here, so no personal detail slips in: use only {usable}"
        for name in sorted(meta.find_undeclared_variables(tree))
        if name not in allowed
    ]
    details = ", ".join(f"clinic.{name}" for name in CLINIC_FIELDS)
    named = set()
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "clinic":
            named.add(id(node.node))
            if node.attr not in CLINIC_FIELDS:
                problems.append(
                    f"line {node.lineno}: the clinic has no “{node.attr}”; it has {details}"
                )
    for name in tree.find_all(nodes.Name):
        if name.name == "clinic" and name.ctx == "load" and id(name) not in named:
            problems.append(f"line {name.lineno}: name one clinic detail, such as clinic.name")
    for tag in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        problems.append(f"line {tag.lineno}: write the words here, not another template's")
    return problems


def _check_sms(
    content: StepContent, measures: tuple[SmsMeasure, ...], clinic: Clinic, found: _Problems
) -> None:
    if not re.match(r"\{\{-?\s*clinic\.short_name\s*-?\}\}:", content.sms.lstrip()):
        found.add(
            SMS, "start with the clinic's name, “{{ clinic.short_name }}:”, so she knows who writes"
        )
    english = content.language == DEFAULT_LANGUAGE
    for measure in measures:
        discreet, text = measure.discreet, measure.text
        if english:
            _check_fit(measure, clinic, found)
            if not OPT_OUT_END.search(text):
                found.add(SMS, "end with the opt-out words “Reply STOP to end”", discreet)
            for word in dict.fromkeys(m.group(0) for m in DIAGNOSIS_WORDS.finditer(text)):
                found.add(
                    SMS,
                    f"do not name a condition in a text (“{word}”): texts are read on shared "
                    "phones and lock screens. Describe the signs instead.",
                    discreet,
                )
        elif not STOP_WORD.search(text):
            found.add(SMS, "keep the word STOP, so she can end the texts", discreet)
        _check_discreet(SMS, discreet, text, found)
        _check_safety(SMS, content, discreet, text, found)


def _check_fit(measure: SmsMeasure, clinic: Clinic, found: _Problems) -> None:
    """One GSM-7 segment: 160 plain characters, with the clinic's own short name."""
    encoding = measure.encoding
    if encoding.encoding != "GSM-7":
        odd = next(c for c in measure.text if c not in GSM7_BASIC and c not in GSM7_EXTENDED)
        found.add(
            SMS,
            f"“{odd}” is not in the plain text alphabet, so a text would hold only 70 characters "
            f"and this one would go as {encoding.segments}. Replace “{odd}” (a curly quote or a "
            "long dash with a straight one, for example).",
            measure.discreet,
        )
    elif encoding.segments > 1:
        found.add(
            SMS,
            f"too long for one text: {encoding.units} characters of 160, with "
            f"“{clinic.short_name}” as the clinic's name. Shorten it by {encoding.units - 160}.",
            measure.discreet,
        )


def _check_discreet(part: str, discreet: bool, text: str, found: _Problems) -> None:
    if not discreet:
        return
    for word in dict.fromkeys(m.group(0) for m in PREGNANCY_WORDS.finditer(text)):
        found.add(
            part,
            f"the discreet wording must not mention pregnancy (“{word}”): put those words "
            "between {% else %} and {% endif %}, after neutral ones in {% if discreet %}",
        )


def _check_safety(
    part: str, content: StepContent, discreet: bool, text: str, found: _Problems
) -> None:
    """A safety step keeps the emergency lines its topic needs (SAFETY_LINES)."""
    if content.kind is not StepKind.SAFETY:
        return
    lines: tuple[SafetyLine, ...] = ANY_SAFETY_ROUTE
    if content.language == DEFAULT_LANGUAGE:
        lines = SAFETY_LINES.get(content.topic, ANY_SAFETY_ROUTE)
    for line in lines:
        if not any(re.search(rf"(?<!\w){re.escape(w)}", text, re.IGNORECASE) for w in line.words):
            found.add(
                part,
                f"a safety message on “{content.topic}” must keep {line.says}: it is one of "
                "the lines that keep her safe",
                discreet,
            )
