"""Message text from Jinja2 templates, and how an SMS will be encoded and split.

Templates run in a sandbox with StrictUndefined (a missing variable is an error, never a blank),
HTML is autoescaped, and the patient's language falls back to English. SMS templates are given
no patient fields at all, so a text can never carry a name or a due date by mistake.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment

from campaigns.rules.catalog import DEFAULT_LANGUAGE, Campaign, Catalog, CatalogError
from campaigns.rules.errors import InputError
from campaigns.rules.vocabulary import Channel

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")
RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur", "yi"})
_SPACES = re.compile(r"\s+")
REPLIES = "_replies"


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


def _environment(loader: BaseLoader) -> SandboxedEnvironment:
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


class ContentRenderer:
    def __init__(
        self, templates_dir: Path, clinic: Clinic, versions: VersionLookup | None = None
    ) -> None:
        self.templates_dir = templates_dir
        self.clinic = clinic
        self._files = FileSystemLoader(str(templates_dir))
        self._env = _environment(self._files)
        self._versions = versions
        # Per renderer, like the compiled templates: the hash always names the wording sent.
        self._fingerprints: dict[tuple[int | None, str], str] = {}
        self._version_envs: dict[int, SandboxedEnvironment] = {}
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
        `draft`: an unsaved version to preview instead."""
        source = draft or self.version_of(campaign, version)
        key = (campaign, step, recipient.language, recipient.discreet, _id(source))
        found = None if draft else self._sms.get(key)
        if found is None:
            env = self._env_for(source)
            language, name = self._resolve(env, campaign, step, "sms", recipient.language)
            context = {"clinic": self.clinic, "discreet": recipient.discreet}
            body = _one_line(self._render(env, name, context))
            found = RenderedSms(body, sms_encoding(body), language, self._ref(source, name))
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
        source = draft or self.version_of(campaign, version)
        env = self._env_for(source)
        language, subject_name = self._resolve(env, campaign, step, "subject", recipient.language)
        context = {
            "clinic": self.clinic,
            "discreet": recipient.discreet,
            "first_name": recipient.first_name,
            "unsubscribe_url": unsubscribe_url,
            "lang": language,
            "dir": "rtl" if language in RTL_LANGUAGES else "ltr",
        }
        base = subject_name.removesuffix(".subject.j2")
        return RenderedEmail(
            subject=_one_line(self._render(env, subject_name, context)),
            html=self._render(env, f"{base}.html.j2", context).strip() + "\n",
            text=self._render(env, f"{base}.txt.j2", context).strip() + "\n",
            language=language,
            template_ref=self._ref(source, subject_name, f"{base}.html.j2", f"{base}.txt.j2"),
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
            if (self.templates_dir / name).is_file():
                context = {"clinic": self.clinic, "link": link}
                body = _one_line(self._render(self._env, name, context))
                return RenderedSms(body, sms_encoding(body), candidate, self._ref(None, name))
        raise ContentError(f"no reply template {key!r} in {language!r} or English")

    def _env_for(self, source: Version | None) -> SandboxedEnvironment:
        if source is None:
            return self._env
        if source.id is None:  # a draft: compiled afresh, never kept
            return _environment(_VersionLoader(source, self._files))
        env = self._version_envs.get(source.id)
        if env is None:
            env = self._version_envs[source.id] = _environment(_VersionLoader(source, self._files))
        return env

    def _resolve(
        self, env: Environment, campaign: str, step: str, part: str, language: str
    ) -> tuple[str, str]:
        assert env.loader is not None
        for candidate in dict.fromkeys((language, DEFAULT_LANGUAGE)):
            name = f"{campaign}/{candidate}/{step}.{part}.j2"
            try:
                env.loader.get_source(env, name)
            except TemplateNotFound:
                continue
            return candidate, name
        raise ContentError(f"no template for {campaign}/{step} ({part}) in {language!r} or English")

    def _fingerprint(self, source: Version | None, name: str) -> str:
        """A short content hash, so the record says which wording a patient received."""
        key = (_id(source), name)
        found = None if source is not None and source.id is None else self._fingerprints.get(key)
        if found is None:
            env = self._env_for(source)
            assert env.loader is not None
            text = env.loader.get_source(env, name)[0]
            found = hashlib.sha256(text.encode()).hexdigest()[:12]
            self._fingerprints[key] = found
        return found

    def _render(self, env: Environment, name: str, context: dict[str, Any]) -> str:
        try:
            return env.get_template(name).render(context)
        except TemplateNotFound as exc:
            raise ContentError(f"template {exc.name} not found") from exc

    def _ref(self, source: Version | None, *names: str) -> str:
        """The first file's name, the version (when not the files) and a hash of the files."""
        digest = "".join(self._fingerprint(source, name) for name in names)
        if len(names) > 1:
            digest = hashlib.sha256(digest.encode()).hexdigest()[:12]
        version = f"{source.label}:" if source is not None else ""
        return f"{names[0]}@{version}{digest}"


def _id(source: Version | None) -> int | None:
    return source.id if source is not None else None


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def check_sms_fit(
    campaigns: list[Campaign],
    renderer: ContentRenderer,
    versions: Catalog | None = None,
) -> None:
    """Refuse to start if an English SMS, as this clinic's name makes it, needs 2 segments.
    `versions` (a Catalog): check each campaign's live version, not its first."""
    problems = []
    for campaign in campaigns:
        for step in campaign.steps:
            if Channel.SMS not in step.channels:
                continue
            for discreet in (False, True):
                version = versions.version(campaign.key) if versions is not None else None
                sms = renderer.render_sms(
                    campaign.key, step.key, Recipient("-", DEFAULT_LANGUAGE, discreet), version
                )
                if sms.encoding.segments != 1 or sms.encoding.encoding != "GSM-7":
                    problems.append(
                        f"{campaign.key}/{step.key} ({'discreet' if discreet else 'plain'}): "
                        f"{sms.encoding.units} {sms.encoding.encoding} characters, "
                        f"{sms.encoding.segments} segments"
                    )
    if problems:
        raise CatalogError(
            "these texts no longer fit one 160-character GSM-7 SMS with the clinic name "
            f"{renderer.clinic.short_name!r}; shorten them or the name: " + "; ".join(problems)
        )


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
    encoding = sms_encoding(body)
    if encoding.segments > 1:
        prefix = len(clinic_short_name) + 2
        if encoding.encoding == "GSM-7":
            raise InputError(
                REPLY_FIELD,
                f"too long for one text: {encoding.units} characters of 160, counting "
                f"“{clinic_short_name}: ” in front ({prefix}). Shorten it by "
                f"{encoding.units - 160}.",
            )
        odd = next(c for c in said if c not in GSM7_BASIC and c not in GSM7_EXTENDED)
        raise InputError(
            REPLY_FIELD,
            f"too long for one text: “{odd}” is not in the plain text alphabet, so a text holds "
            f"only 70 characters and this one has {encoding.units} (counting "
            f"“{clinic_short_name}: ” in front). Shorten it, or replace “{odd}”.",
        )
    return RenderedSms(body, encoding, DEFAULT_LANGUAGE, "staff_reply")
