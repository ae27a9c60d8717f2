"""Message text from Jinja2 templates, and how an SMS will be encoded and split.

Templates run in a sandbox with StrictUndefined (a missing variable is an error, never a blank),
HTML is autoescaped, and the patient's language falls back to English. SMS templates are given
no patient fields at all, so a text can never carry a name or a due date by mistake.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from campaigns.rules.catalog import DEFAULT_LANGUAGE, Campaign, CatalogError
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
BROADCAST_HTML = "_broadcast/email.html.j2"
BROADCAST_TEXT = "_broadcast/email.txt.j2"


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


class ContentRenderer:
    def __init__(self, templates_dir: Path, clinic: Clinic) -> None:
        self.templates_dir = templates_dir
        self.clinic = clinic
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(str(templates_dir)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(
                enabled_extensions=("html.j2",), default=False, default_for_string=False
            ),
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        # Per renderer, like the compiled templates: the hash always names the wording sent.
        self._fingerprints: dict[str, str] = {}
        self._sms: dict[tuple[str, str, str, bool], RenderedSms] = {}
        self._replies: dict[tuple[str, str], RenderedSms] = {}

    def render_sms(self, campaign: str, step: str, recipient: Recipient) -> RenderedSms:
        # An SMS is given no patient field, only the language and discreet wording: one render
        # serves every patient who shares them.
        key = (campaign, step, recipient.language, recipient.discreet)
        found = self._sms.get(key)
        if found is None:
            language, name = self._resolve(campaign, step, "sms", recipient.language)
            body = _one_line(
                self._render(name, {"clinic": self.clinic, "discreet": recipient.discreet})
            )
            found = self._sms[key] = RenderedSms(
                body, sms_encoding(body), language, self._ref(name)
            )
        return found

    def render_email(
        self, campaign: str, step: str, recipient: Recipient, unsubscribe_url: str
    ) -> RenderedEmail:
        language, subject_name = self._resolve(campaign, step, "subject", recipient.language)
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
            subject=_one_line(self._render(subject_name, context)),
            html=self._render(f"{base}.html.j2", context).strip() + "\n",
            text=self._render(f"{base}.txt.j2", context).strip() + "\n",
            language=language,
            template_ref=self._ref(subject_name, f"{base}.html.j2", f"{base}.txt.j2"),
        )

    def render_broadcast_email(
        self,
        subject: str,
        paragraphs: Sequence[str],
        recipient: Recipient,
        unsubscribe_url: str,
    ) -> RenderedEmail:
        """A broadcast's email (templates/_broadcast): staff's subject and paragraphs, as
        plain text in the shared layout (escaped in the HTML: never markup from a browser),
        greeting the patient by her first name."""
        language = recipient.language
        context = {
            "clinic": self.clinic,
            "first_name": recipient.first_name,
            "unsubscribe_url": unsubscribe_url,
            "lang": language,
            "dir": "rtl" if language in RTL_LANGUAGES else "ltr",
            "subject": subject,
            "paragraphs": list(paragraphs),
        }
        return RenderedEmail(
            subject=_one_line(subject),
            html=self._render(BROADCAST_HTML, context).strip() + "\n",
            text=self._render(BROADCAST_TEXT, context).strip() + "\n",
            language=language,
            template_ref=self._ref(BROADCAST_HTML, BROADCAST_TEXT),
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
                body = _one_line(self._render(name, {"clinic": self.clinic, "link": link}))
                return RenderedSms(body, sms_encoding(body), candidate, self._ref(name))
        raise ContentError(f"no reply template {key!r} in {language!r} or English")

    def _resolve(self, campaign: str, step: str, part: str, language: str) -> tuple[str, str]:
        for candidate in dict.fromkeys((language, DEFAULT_LANGUAGE)):
            name = f"{campaign}/{candidate}/{step}.{part}.j2"
            if (self.templates_dir / name).is_file():
                return candidate, name
        raise ContentError(f"no template for {campaign}/{step} ({part}) in {language!r} or English")

    def _fingerprint(self, name: str) -> str:
        """A short content hash, so the record says which wording a patient received."""
        found = self._fingerprints.get(name)
        if found is None:
            found = hashlib.sha256((self.templates_dir / name).read_bytes()).hexdigest()[:12]
            self._fingerprints[name] = found
        return found

    def _render(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self._env.get_template(name).render(context)
        except TemplateNotFound as exc:
            raise ContentError(f"template {exc.name} not found") from exc

    def _ref(self, *names: str) -> str:
        digest = "".join(self._fingerprint(name) for name in names)
        if len(names) > 1:
            digest = hashlib.sha256(digest.encode()).hexdigest()[:12]
        return f"{names[0]}@{digest}"


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def check_sms_fit(campaigns: list[Campaign], renderer: ContentRenderer) -> None:
    """Refuse to start if an English SMS, as this clinic's name makes it, needs 2 segments."""
    problems = []
    for campaign in campaigns:
        for step in campaign.steps:
            if Channel.SMS not in step.channels:
                continue
            for discreet in (False, True):
                sms = renderer.render_sms(
                    campaign.key, step.key, Recipient("-", DEFAULT_LANGUAGE, discreet)
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
