"""Message text from Jinja2 templates, and how an SMS will be encoded and split.

Templates run in a sandbox with StrictUndefined (a missing variable is an error, never a blank),
HTML is autoescaped, and the patient's language falls back to English. SMS templates are given
no patient fields at all, so a text can never carry a name or a due date by mistake. An email is
one Markdown source (<step>.email.md.j2, campaigns.rules.email_markup) that gives both its HTML
and its text part inside the shared layouts; every template is read through the Jinja loader.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from campaigns.rules.catalog import DEFAULT_LANGUAGE, CatalogError
from campaigns.rules.email_markup import EmailBody, MarkupError, convert, escape_value
from campaigns.rules.errors import InputError

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")
RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur", "yi"})
_SPACES = re.compile(r"\s+")
REPLIES = "_replies"
EMAIL_LAYOUT_HTML = "_layouts/email.html.j2"
EMAIL_LAYOUT_TEXT = "_layouts/email.txt.j2"
#: The styles a step email's Markdown gives a heading and a paragraph (email_markup).
H1_STYLE = "margin:0 0 16px 0;font-size:24px;line-height:1.3;"
P_STYLE = "margin:0 0 16px 0;"


@dataclass(frozen=True)
class SmsEncoding:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def sms_encoding(text: str) -> SmsEncoding:
    """GSM-7 160/153 or UCS-2 70/67 per segment; a character is never split across segments."""
    gsm = all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text)
    if gsm:
        sizes = [2 if c in GSM7_EXTENDED else 1 for c in text]
        single, multi, name = 160, 153, "GSM-7"
    else:
        sizes = [len(c.encode("utf-16-le")) // 2 for c in text]
        single, multi, name = 70, 67, "UCS-2"
    total = sum(sizes)
    if total <= single:
        return SmsEncoding(name, total, 1 if total else 0)
    segments, used = 1, 0
    for size in sizes:
        if used + size > multi:
            segments, used = segments + 1, 0
        used += size
    return SmsEncoding(name, total, segments)


@dataclass(frozen=True)
class Clinic:
    name: str  # "Santi Clinic"
    short_name: str  # "Santi": starts every SMS
    phone: str
    email: str
    address: str
    website: str
    help_url: str
    #: When texts are sent, in words the welcome can use ("9am-8pm"), from the send window.
    send_hours: str = "9am-8pm"


@dataclass(frozen=True)
class Recipient:
    first_name: str
    language: str = DEFAULT_LANGUAGE
    discreet: bool = False


@dataclass(frozen=True)
class RenderedSms:
    body: str
    encoding: SmsEncoding
    language: str
    template_ref: str


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    language: str
    template_ref: str


class ContentError(LookupError):
    """A template that is missing or cannot render."""


def template_environment(loader: BaseLoader | None) -> SandboxedEnvironment:
    """How every template is rendered: sandboxed, a missing variable an error, HTML escaped in
    .html.j2 files, and a line holding only a {% tag %} leaves no blank line."""
    return SandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=select_autoescape(
            enabled_extensions=("html.j2",), default=False, default_for_string=False
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def markdown_environment(env: SandboxedEnvironment) -> SandboxedEnvironment:
    """For an email's Markdown source: the same loader and rules, but no HTML escaping (the
    Markdown is escaped as it becomes HTML), each placeholder's value plain text in the
    Markdown, and the line break after a {% tag %} kept (trimming it would join a paragraph
    to the next line)."""
    overlay = env.overlay(autoescape=False, trim_blocks=False, finalize=escape_value)
    assert isinstance(overlay, SandboxedEnvironment)
    return overlay


def render_email_body(template: Template, context: dict[str, Any]) -> EmailBody:
    """Jinja first (placeholders and discreet wording), then the Markdown into HTML and text.
    Raises MarkupError for a body that cannot become an email."""
    return convert(template.render(context))


@dataclass(frozen=True)
class Version:
    """One version of a campaign's templates (campaigns.rules.bundles): a live or retired
    version (`id` set; never changes once live) or a draft being previewed (`id` None)."""

    id: int | None
    campaign: str
    number: int
    #: "<language>/<step>.<part>.j2" -> source.
    templates: Mapping[str, str]

    @property
    def label(self) -> str:
        return f"v{self.number}"


#: Finds the version a message is rendered from: (campaign, version id or None for the
#: campaign's first version) -> the version, or None to render from the files.
VersionLookup = Callable[[str, int | None], Version | None]


class _VersionLoader(BaseLoader):
    """A version's step templates by their file names (<campaign>/<language>/<step>...); the
    shared layouts and replies (folders starting with "_") from the templates folder. Never a
    step file from disk: a step the version does not have is missing, not the seed's."""

    def __init__(self, version: Version, shared: FileSystemLoader) -> None:
        self.version = version
        self.shared = shared

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template.startswith("_"):
            return self.shared.get_source(environment, template)
        campaign, _, local = template.partition("/")
        source = self.version.templates.get(local) if campaign == self.version.campaign else None
        if source is None:
            raise TemplateNotFound(template)
        return source, None, lambda: True


@dataclass
class _Source:
    """One set of templates (the files, a version or a draft), compiled once."""

    version: Version | None
    env: SandboxedEnvironment
    fingerprints: dict[str, str] = field(default_factory=dict)

    @cached_property
    def markdown(self) -> SandboxedEnvironment:
        return markdown_environment(self.env)

    def source(self, name: str) -> str:
        assert self.env.loader is not None
        try:
            return self.env.loader.get_source(self.env, name)[0]
        except TemplateNotFound as exc:
            raise ContentError(f"template {exc.name} not found") from exc

    def fingerprint(self, name: str) -> str:
        """A short content hash, so the record says which wording a patient received."""
        found = self.fingerprints.get(name)
        if found is None:
            found = hashlib.sha256(self.source(name).encode("utf-8")).hexdigest()[:12]
            self.fingerprints[name] = found
        return found

    def ref(self, *names: str) -> str:
        """The first file's name, the version (when not the files) and a hash of the files."""
        digest = "".join(self.fingerprint(name) for name in names)
        if len(names) > 1:
            digest = hashlib.sha256(digest.encode()).hexdigest()[:12]
        version = f"{self.version.label}:" if self.version is not None else ""
        return f"{names[0]}@{version}{digest}"

    def render(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(name).render(context)
        except TemplateNotFound as exc:
            raise ContentError(f"template {exc.name} not found") from exc

    def resolve(self, campaign: str, step: str, part: str, language: str) -> tuple[str, str]:
        for candidate in dict.fromkeys((language, DEFAULT_LANGUAGE)):
            name = f"{campaign}/{candidate}/{step}.{part}.j2"
            try:  # through the loader (compiled once, then cached), wherever it reads from
                self.env.get_template(name)
            except TemplateNotFound:
                continue
            return candidate, name
        raise ContentError(f"no template for {campaign}/{step} ({part}) in {language!r} or English")


class ContentRenderer:
    def __init__(
        self, templates_dir: Path, clinic: Clinic, versions: VersionLookup | None = None
    ) -> None:
        self.templates_dir = templates_dir
        self.clinic = clinic
        self._files = FileSystemLoader(str(templates_dir))
        self._base = _Source(None, template_environment(self._files))
        self._env = self._base.env
        self._versions = versions
        # Per renderer, like the compiled templates: the hash always names the wording sent.
        self._by_version: dict[int, _Source] = {}
        self._sms: dict[tuple[str, str, str, bool, int | None], RenderedSms] = {}
        self._replies: dict[tuple[str, str], RenderedSms] = {}

    def version_of(self, campaign: str, version: int | None) -> Version | None:
        """The version a message of `campaign` renders from (None: the files)."""
        return self._versions(campaign, version) if self._versions else None

    def render_sms(
        self,
        campaign: str,
        step: str,
        recipient: Recipient,
        version: int | None = None,
        draft: Version | None = None,
    ) -> RenderedSms:
        """`version`: the campaign version the message was written with (None: the first);
        `draft`: an unsaved version to preview instead. An SMS is given no patient field,
        only the language and discreet wording: one render serves every patient who shares
        them."""
        chosen = draft or self.version_of(campaign, version)
        key = (campaign, step, recipient.language, recipient.discreet, _id(chosen))
        found = None if draft else self._sms.get(key)
        if found is None:
            source = self._source(chosen)
            language, name = source.resolve(campaign, step, "sms", recipient.language)
            context = {"clinic": self.clinic, "discreet": recipient.discreet}
            body = _one_line(source.render(name, context))
            found = RenderedSms(body, sms_encoding(body), language, source.ref(name))
            if not draft:
                self._sms[key] = found
        return found

    def render_email(
        self,
        campaign: str,
        step: str,
        recipient: Recipient,
        unsubscribe_url: str,
        version: int | None = None,
        draft: Version | None = None,
    ) -> RenderedEmail:
        """The subject, and the HTML and text parts from the step's one Markdown source
        (campaigns.rules.email_markup) inside the shared layouts."""
        source = self._source(draft or self.version_of(campaign, version))
        language, subject_name = source.resolve(campaign, step, "subject", recipient.language)
        body_name = subject_name.removesuffix(".subject.j2") + ".email.md.j2"
        wording = {"clinic": self.clinic, "discreet": recipient.discreet}
        subject = _one_line(source.render(subject_name, wording))
        try:
            body = render_email_body(
                source.markdown.get_template(body_name),
                {**wording, "first_name": recipient.first_name},
            )
        except TemplateNotFound as exc:
            raise ContentError(f"template {exc.name} not found") from exc
        except MarkupError as exc:
            raise ContentError(f"{body_name}: {exc}") from exc
        layout = {
            "clinic": self.clinic,
            "subject": subject,
            "unsubscribe_url": unsubscribe_url,
            "lang": language,
            "dir": "rtl" if language in RTL_LANGUAGES else "ltr",
        }
        html = Markup(body.html)  # noqa: S704 - email_markup escaped every word of it
        return RenderedEmail(
            subject=subject,
            html=source.render(EMAIL_LAYOUT_HTML, {**layout, "body": html}).strip() + "\n",
            text=source.render(EMAIL_LAYOUT_TEXT, {**layout, "body": body.text}).strip() + "\n",
            language=language,
            template_ref=source.ref(subject_name, body_name),
        )

    def render_broadcast_email(
        self,
        subject: str,
        paragraphs: Sequence[str],
        recipient: Recipient,
        unsubscribe_url: str,
    ) -> RenderedEmail:
        """A broadcast's email: staff's subject and paragraphs as plain words (escaped in the
        HTML: never markup from a browser), greeting the patient by her first name, inside
        the shared layouts as a step's email is."""
        language = recipient.language
        said = [_one_line(subject), f"Hello {recipient.first_name},", *paragraphs]
        html = Markup(  # noqa: S704 - every word is escaped here
            f'<h1 style="{H1_STYLE}">{escape(said[0])}</h1>\n'
            + "\n".join(f'<p style="{P_STYLE}">{escape(p)}</p>' for p in said[1:])
        )
        layout = {
            "clinic": self.clinic,
            "subject": said[0],
            "unsubscribe_url": unsubscribe_url,
            "lang": language,
            "dir": "rtl" if language in RTL_LANGUAGES else "ltr",
        }
        text = "\n\n".join(said)
        return RenderedEmail(
            subject=said[0],
            html=self._base.render(EMAIL_LAYOUT_HTML, {**layout, "body": html}).strip() + "\n",
            text=self._base.render(EMAIL_LAYOUT_TEXT, {**layout, "body": text}).strip() + "\n",
            language=language,
            template_ref=self._base.ref(EMAIL_LAYOUT_HTML, EMAIL_LAYOUT_TEXT),
        )

    def render_reply(self, key: str, language: str, link: str = "") -> RenderedSms:
        """An answer to a patient's text (templates/_replies/<language>/<key>.txt.j2). Answers
        without a link are the same for everyone, so each is rendered once."""
        if link:
            return self._render_reply(key, language, link)
        found = self._replies.get((key, language))
        if found is None:
            found = self._replies[key, language] = self._render_reply(key, language, "")
        return found

    def _render_reply(self, key: str, language: str, link: str) -> RenderedSms:
        for candidate in dict.fromkeys((language, DEFAULT_LANGUAGE)):
            name = f"{REPLIES}/{candidate}/{key}.txt.j2"
            try:
                self._env.get_template(name)
            except TemplateNotFound:
                continue
            body = _one_line(self._base.render(name, {"clinic": self.clinic, "link": link}))
            return RenderedSms(body, sms_encoding(body), candidate, self._base.ref(name))
        raise ContentError(f"no reply template {key!r} in {language!r} or English")

    def source(self, name: str, version: Version | None = None) -> str:
        """A template's source as the loader gives it (from the files, or from `version`):
        what is rendered, fingerprinted and checked (campaigns.rules.content_checks)."""
        return self._source(version).source(name)

    def _source(self, version: Version | None) -> _Source:
        if version is None:
            return self._base
        if version.id is None:  # a draft: compiled afresh, never kept
            return _Source(version, template_environment(_VersionLoader(version, self._files)))
        found = self._by_version.get(version.id)
        if found is None:
            loader = _VersionLoader(version, self._files)
            found = self._by_version[version.id] = _Source(version, template_environment(loader))
        return found


def _id(version: Version | None) -> int | None:
    return version.id if version is not None else None


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def check_reply_fit(renderer: ContentRenderer, keys: set[str], link: str) -> None:
    """Refuse to start if a reply is missing, or an English one needs more than one segment.

    `link` is the longest booking link this service makes (its public URL plus a token).
    """
    problems = []
    for key in sorted(keys):
        try:
            sms = renderer.render_reply(key, DEFAULT_LANGUAGE, link=link)
        except ContentError as exc:
            problems.append(str(exc))
            continue
        if sms.encoding.segments != 1 or sms.encoding.encoding != "GSM-7":
            problems.append(
                f"reply {key}: {sms.encoding.units} {sms.encoding.encoding} characters, "
                f"{sms.encoding.segments} segments"
            )
    if problems:
        raise CatalogError(
            "these replies do not fit one 160-character GSM-7 SMS (with the clinic name "
            f"{renderer.clinic.short_name!r} and booking links as long as {len(link)} "
            "characters): " + "; ".join(problems)
        )


#: The field a staff reply's problems name (campaigns.inbox, the inbox's reply box).
REPLY_FIELD = "Reply"


def staff_sms(clinic_short_name: str, words: str) -> RenderedSms:
    """A staff member's reply as the patient will get it: the clinic's name first, as every
    text of ours starts (so she knows who writes), on one line, in one SMS segment. Raises
    InputError, in staff words, for an empty reply or one that needs a second segment."""
    said = _one_line(words)
    if not said:
        raise InputError(REPLY_FIELD, "write the reply first")
    body = f"{clinic_short_name}: {said}"
    added = f"“{clinic_short_name}: ” in front ({len(clinic_short_name) + 2})"
    encoding = one_text(REPLY_FIELD, body, said, added)
    return RenderedSms(body, encoding, DEFAULT_LANGUAGE, "staff_reply")


def one_text(
    field: str, body: str, said: str, added: str, *, plain_only: bool = False
) -> SmsEncoding:
    """The encoding of `body` (the words `said` with what we add around them, described by
    `added` for the message), or an InputError naming `field` when it needs a second segment
    (or, with `plain_only`, when it leaves the plain text alphabet: English texts)."""
    encoding = sms_encoding(body)
    if encoding.segments <= 1 and not (plain_only and encoding.encoding != "GSM-7"):
        return encoding
    if encoding.encoding == "GSM-7":
        raise InputError(
            field,
            f"too long for one text: {encoding.units} characters of 160, counting {added}. "
            f"Shorten it by {encoding.units - 160}.",
        )
    odd = next(c for c in said if c not in GSM7_BASIC and c not in GSM7_EXTENDED)
    if plain_only:
        raise InputError(
            field,
            f"“{odd}” is not in the plain text alphabet, which English texts keep to (one "
            f"text then holds 160 characters, not 70). Replace “{odd}”.",
        )
    raise InputError(
        field,
        f"too long for one text: “{odd}” is not in the plain text alphabet, so a text holds "
        f"only 70 characters and this one has {encoding.units} (counting {added}). "
        f"Shorten it, or replace “{odd}”.",
    )
