"""Content rules on every step and channel of every campaign in the catalog.

Guards the writing rules of docs/clinical-content.md (content rules, service vs marketing,
minimal and discreet SMS with neutral subjects, one GSM-7 segment, accessible HTML email), and
the renderer's own promises: SMS templates get no patient fields, HTML is escaped (and a first
name cannot make Markdown), and a missing translation falls back to English. Each message is
rendered in plain and discreet wording, with a distinctive first name and the default clinic
from settings.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import UndefinedError

from campaigns.bootstrap import clinic_from
from campaigns.rules.catalog import CAMPAIGN_FILE, DEFAULT_LANGUAGE, Catalog, Step, template_names
from campaigns.rules.content import (
    ContentRenderer,
    Recipient,
    RenderedEmail,
    RenderedSms,
    sms_encoding,
)
from campaigns.rules.vocabulary import Channel, StepKind
from campaigns.settings import Settings

SETTINGS = Settings()
TEMPLATES_DIR = SETTINGS.templates_dir
CATALOG = Catalog.load(TEMPLATES_DIR)
CLINIC = clinic_from(SETTINGS)
RENDERER = ContentRenderer(TEMPLATES_DIR, CLINIC)

FIRST_NAME = "Zephyrine"
HOSTILE_NAME = "<script>x</script>"
UNSUBSCRIBE_URL = "https://santi.example/u/7Qk2-xZ9_unsubscribe"
MAX_SUBJECT = 78

#: Education steps about relief and prevention: each email carries the same-day safety rider.
RIDER_STEPS = {
    ("leg-cramps", key)
    for key in (
        "easing-a-cramp",
        "prevention-exercises",
        "later-pregnancy",
        "cramps-what-to-expect",
        "daily-habits",
        "sleep-and-cramps",
    )
}


def _words(*words: str) -> re.Pattern[str]:
    """Whole words (and their plural), case-insensitive."""
    return re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")s?\b", re.IGNORECASE)


DIAGNOSIS = _words(
    "dvt",
    "thrombosis",
    "embolism",
    "pre-eclampsia",
    "preeclampsia",
    "eclampsia",
    "miscarriage",
    "vte",
    "stillbirth",
)
SMS_PROMOTION = _words(
    "book", "booking", "offer", "discount", "price", "appointment", "massage", "physio"
)
EMAIL_PROMOTION = _words("book", "booking", "offer", "discount", "price")
SAFETY_ROUTES = _words("111", "999", "GP")
SYMPTOMS = re.compile(
    r"\b(?:swollen|swelling|pains?|painful|headaches?|breathless(?:ness)?|chest)\b",
    re.IGNORECASE,
)
#: Substring, not word: "afterbirth" or "pregnancies" must fail a discreet message too.
PREGNANCY_WORDS = re.compile(r"pregnan|bab(?:y|ies)|bump|birth", re.IGNORECASE)
SUBJECT_BANNED = re.compile(
    r"pregnan|bab(?:y|ies)|birth|clot|dvt|thrombosis|eclampsia|miscarriage", re.IGNORECASE
)
QUININE = re.compile(r"quinine|\btonics?\b", re.IGNORECASE)
WEEK_NUMBER = re.compile(r"\b(?:week|wk)s?\s*\d", re.IGNORECASE)
GESTATION = re.compile(r"\d+\+\d")
SLASH_DATE = re.compile(r"\d{1,2}/\d{1,2}")
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
MONTH_DAY = re.compile(
    rf"\b(?:{_MONTHS})\.?\s+{_DAY}\b|\b{_DAY}\s+(?:of\s+)?(?:{_MONTHS})\b", re.IGNORECASE
)
OPT_OUT = re.compile(r"STOP to end\.?$")
H1 = re.compile(r"<h1[\s>]", re.IGNORECASE)
TABLE = re.compile(r"<table\b[^>]*>", re.IGNORECASE)
IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
TAG = re.compile(r"<[^>]+>")
STYLE = re.compile(r"<style\b.*?</style>", re.IGNORECASE | re.DOTALL)
#: The first sentence of the shared footer in _layouts/email.html.j2.
HTML_FOOTER = f"This message is from {CLINIC.name}"
TEXT_FOOTER = "\n--\n"


@dataclass(frozen=True)
class Case:
    campaign: str
    step: Step
    channel: Channel

    @property
    def id(self) -> str:
        return f"{self.campaign}/{self.step.key}/{self.channel}"

    @property
    def marketing(self) -> bool:
        return self.step.kind is StepKind.MARKETING


CASES = [
    Case(campaign.key, step, channel)
    for campaign in CATALOG.values()
    for step in campaign.steps
    for channel in step.channels
]


def _params(
    channel: Channel,
    *,
    marketing: bool | None = None,
    keep: Callable[[Case], bool] | None = None,
) -> list[Any]:
    return [
        pytest.param(case, id=case.id)
        for case in CASES
        if case.channel is channel
        and (marketing is None or case.marketing is marketing)
        and (keep is None or keep(case))
    ]


SMS = _params(Channel.SMS)
SMS_NOT_MARKETING = _params(Channel.SMS, marketing=False)
SMS_MARKETING = _params(Channel.SMS, marketing=True)
SMS_SAFETY = _params(Channel.SMS, keep=lambda c: c.step.kind is StepKind.SAFETY)
EMAIL = _params(Channel.EMAIL)
EMAIL_NOT_MARKETING = _params(Channel.EMAIL, marketing=False)
EMAIL_MARKETING = _params(Channel.EMAIL, marketing=True)
EMAIL_SAFETY = _params(Channel.EMAIL, keep=lambda c: c.step.kind is StepKind.SAFETY)
EMAIL_RIDER = _params(Channel.EMAIL, keep=lambda c: (c.campaign, c.step.key) in RIDER_STEPS)
BOTH_WORDINGS = pytest.mark.parametrize("discreet", [False, True], ids=["plain", "discreet"])


@cache
def render_sms(campaign: str, step: str, discreet: bool) -> RenderedSms:
    return RENDERER.render_sms(campaign, step, Recipient(FIRST_NAME, discreet=discreet))


@cache
def render_email(
    campaign: str, step: str, discreet: bool, first_name: str = FIRST_NAME
) -> RenderedEmail:
    recipient = Recipient(first_name, discreet=discreet)
    return RENDERER.render_email(campaign, step, recipient, UNSUBSCRIBE_URL)


def sms(case: Case, discreet: bool) -> str:
    return render_sms(case.campaign, case.step.key, discreet).body


def email(case: Case, discreet: bool) -> RenderedEmail:
    return render_email(case.campaign, case.step.key, discreet)


def text_body(message: RenderedEmail) -> str:
    """The text part without the shared footer (everything after the "--" line)."""
    body, separator, _ = message.text.partition(TEXT_FOOTER)
    assert separator, "the text part has no '--' line before its footer"
    return body


def visible_html(message: RenderedEmail) -> str:
    """The HTML as a reader sees it: no CSS, no tags, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(TAG.sub(" ", STYLE.sub(" ", message.html))).split())


def html_body(message: RenderedEmail) -> str:
    """The visible HTML before the shared footer."""
    body, separator, _ = visible_html(message).partition(HTML_FOOTER)
    assert separator, f"the HTML has no footer starting {HTML_FOOTER!r}"
    return body


def found(pattern: re.Pattern[str], text: str) -> list[str]:
    return [match.group(0) for match in pattern.finditer(text)]


# --- the catalog is what these tests iterate over --------------------------------------------


def test_catalog_has_messages_of_every_kind_to_check() -> None:
    for params in (SMS, SMS_MARKETING, SMS_SAFETY, EMAIL, EMAIL_MARKETING, EMAIL_SAFETY):
        assert params
    assert {case.id for case in CASES} >= {"leg-cramps/welcome/sms", "leg-cramps/welcome/email"}


def test_rider_steps_are_education_emails_in_the_catalog() -> None:
    for campaign, key in sorted(RIDER_STEPS):
        step = CATALOG[campaign].step(key)
        assert step.kind is StepKind.EDUCATION, key
        assert Channel.EMAIL in step.channels, key
    assert len(EMAIL_RIDER) == len(RIDER_STEPS)


# --- SMS ---------------------------------------------------------------------------------------


@BOTH_WORDINGS
@pytest.mark.parametrize("case", SMS)
def test_sms_fits_one_gsm7_segment(case: Case, discreet: bool) -> None:
    rendered = render_sms(case.campaign, case.step.key, discreet)
    assert rendered.encoding == sms_encoding(rendered.body)
    assert rendered.encoding.encoding == "GSM-7", rendered.body
    assert rendered.encoding.segments == 1, f"{rendered.encoding.units} units: {rendered.body}"


@BOTH_WORDINGS
@pytest.mark.parametrize("case", SMS)
def test_sms_names_the_sender_first_and_ends_with_the_opt_out(case: Case, discreet: bool) -> None:
    body = sms(case, discreet)
    assert body.startswith(f"{CLINIC.short_name}:"), body
    assert OPT_OUT.search(body), body


@BOTH_WORDINGS
@pytest.mark.parametrize("case", SMS)
def test_sms_carries_no_name_week_number_or_date(case: Case, discreet: bool) -> None:
    body = sms(case, discreet)
    assert FIRST_NAME.lower() not in body.lower()
    assert not found(WEEK_NUMBER, body), body
    assert not found(GESTATION, body), body
    assert not found(SLASH_DATE, body), body
    assert not found(MONTH_DAY, body), body


@BOTH_WORDINGS
@pytest.mark.parametrize("case", SMS)
def test_sms_has_no_diagnosis_words_quinine_or_non_ascii(case: Case, discreet: bool) -> None:
    body = sms(case, discreet)
    assert not found(DIAGNOSIS, body), body
    assert not found(QUININE, body), body
    assert body.isascii(), [c for c in body if not c.isascii()]


@BOTH_WORDINGS
@pytest.mark.parametrize("case", SMS_NOT_MARKETING)
def test_sms_promotes_nothing_unless_marketing(case: Case, discreet: bool) -> None:
    body = sms(case, discreet)
    assert not found(SMS_PROMOTION, body), body


@BOTH_WORDINGS
@pytest.mark.parametrize("case", SMS_MARKETING)
def test_marketing_sms_carries_no_safety_advice(case: Case, discreet: bool) -> None:
    body = sms(case, discreet)
    assert not found(SAFETY_ROUTES, body), body
    assert not found(SYMPTOMS, body), body


@BOTH_WORDINGS
@pytest.mark.parametrize("case", SMS_SAFETY)
def test_safety_sms_says_where_to_get_help(case: Case, discreet: bool) -> None:
    body = sms(case, discreet)
    assert re.search(r"\b(?:111|999)\b", body), body


@pytest.mark.parametrize("case", SMS)
def test_discreet_sms_does_not_mention_pregnancy(case: Case) -> None:
    body = sms(case, discreet=True)
    assert not found(PREGNANCY_WORDS, body), body


# --- email -------------------------------------------------------------------------------------


@BOTH_WORDINGS
@pytest.mark.parametrize("case", EMAIL)
def test_email_subject_is_short_neutral_and_one_line(case: Case, discreet: bool) -> None:
    subject = email(case, discreet).subject
    source = TEMPLATES_DIR / template_names(case.campaign, case.step, case.channel, "en")[0]
    assert "\n" not in source.read_text(encoding="utf-8").strip(), "subject template spans lines"
    assert subject.strip()
    assert "\n" not in subject
    assert len(subject) <= MAX_SUBJECT, subject
    assert not found(SUBJECT_BANNED, subject), subject
    assert not re.search(r"\d", subject), subject


@BOTH_WORDINGS
@pytest.mark.parametrize("case", EMAIL)
def test_email_html_is_accessible(case: Case, discreet: bool) -> None:
    page = email(case, discreet).html
    assert '<html lang="en" dir="ltr"' in page
    assert re.search(r'<div\b[^>]*\blang="en"[^>]*\bdir="ltr"', page), "no inner lang wrapper"
    assert len(H1.findall(page)) == 1
    tables = TABLE.findall(page)
    assert tables
    assert all('role="presentation"' in table for table in tables), tables
    assert all(re.search(r"\balt=", img) for img in IMG.findall(page)), IMG.findall(page)


@BOTH_WORDINGS
@pytest.mark.parametrize("case", EMAIL)
def test_email_names_the_clinic_and_offers_the_unsubscribe_link(case: Case, discreet: bool) -> None:
    message = email(case, discreet)
    for needle in (UNSUBSCRIBE_URL, CLINIC.name, CLINIC.address, CLINIC.phone):
        assert needle in message.html, needle
    assert message.text.strip()
    for needle in (UNSUBSCRIBE_URL, CLINIC.address):
        assert needle in message.text, needle


@pytest.mark.parametrize("case", EMAIL)
def test_email_html_escapes_the_first_name(case: Case) -> None:
    hostile = render_email(case.campaign, case.step.key, False, HOSTILE_NAME)
    assert "<script" not in hostile.html.lower()
    if FIRST_NAME in email(case, discreet=False).html:
        assert "&lt;script&gt;x&lt;/script&gt;" in hostile.html


def test_a_first_name_cannot_make_markdown_in_an_email() -> None:
    """The body's Markdown is converted after its placeholders are filled in: a name that looks
    like Markdown stays her name, in the HTML and in the text."""
    name = "**Ann** [x](https://evil.example)\n# Hi"
    message = render_email("leg-cramps", "welcome", False, name)
    assert "evil.example" not in message.html.replace("[x](https://evil.example)", "")
    assert "<strong>" not in message.html
    assert message.text.startswith("Welcome, **Ann** [x](https://evil.example) # Hi\n")


def test_some_email_greets_by_first_name() -> None:
    """Otherwise the escaping test above would check nothing."""
    assert any(FIRST_NAME in email(param.values[0], discreet=False).html for param in EMAIL)


@BOTH_WORDINGS
@pytest.mark.parametrize("case", EMAIL)
def test_email_is_plain_ascii_and_never_mentions_quinine(case: Case, discreet: bool) -> None:
    message = email(case, discreet)
    for part in (message.subject, message.html, message.text):
        assert part.isascii(), sorted({c for c in part if not c.isascii()})
        assert not found(QUININE, part)


@BOTH_WORDINGS
@pytest.mark.parametrize("case", EMAIL_NOT_MARKETING)
def test_email_promotes_nothing_unless_marketing(case: Case, discreet: bool) -> None:
    message = email(case, discreet)
    assert not found(EMAIL_PROMOTION, text_body(message)), text_body(message)
    assert not found(EMAIL_PROMOTION, html_body(message)), html_body(message)


@BOTH_WORDINGS
@pytest.mark.parametrize("case", EMAIL_MARKETING)
def test_marketing_email_carries_no_safety_advice(case: Case, discreet: bool) -> None:
    message = email(case, discreet)
    for body in (text_body(message), html_body(message)):
        assert not re.search(r"\b(?:111|999)\b", body), body
        assert not found(SYMPTOMS, body), body


@pytest.mark.parametrize("case", EMAIL)
def test_discreet_email_does_not_mention_pregnancy(case: Case) -> None:
    message = email(case, discreet=True)
    for part in (message.subject, message.text, visible_html(message)):
        assert not found(PREGNANCY_WORDS, part), part


@BOTH_WORDINGS
@pytest.mark.parametrize("case", EMAIL_RIDER)
def test_relief_and_prevention_emails_carry_the_same_day_rider(case: Case, discreet: bool) -> None:
    message = email(case, discreet)
    for body in (text_body(message), html_body(message)):
        assert "111" in body, "the body (not just the footer) must say when to call 111"
        assert "same day" in body.lower()


@BOTH_WORDINGS
@pytest.mark.parametrize("case", EMAIL_SAFETY)
def test_safety_email_puts_the_urgent_route_first(case: Case, discreet: bool) -> None:
    body = text_body(email(case, discreet))
    opening = body[: int(len(body) * 0.4)]
    assert re.search(r"\b(?:111|999)\b", opening), opening


# --- template files ------------------------------------------------------------------------------


def _languages(campaign: str) -> list[str]:
    return sorted(p.name for p in (TEMPLATES_DIR / campaign).iterdir() if p.is_dir())


@pytest.mark.parametrize("campaign", sorted(CATALOG))
def test_every_template_file_belongs_to_a_step_and_channel(campaign: str) -> None:
    expected = {f"{campaign}/{CAMPAIGN_FILE}"} | {
        name
        for language in _languages(campaign)
        for step in CATALOG[campaign].steps
        for channel in step.channels
        for name in template_names(campaign, step, channel, language)
    }
    files = {
        path.relative_to(TEMPLATES_DIR).as_posix()
        for path in (TEMPLATES_DIR / campaign).rglob("*")
        if path.is_file()
    }
    assert DEFAULT_LANGUAGE in _languages(campaign)
    assert sorted(files - expected) == []


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_every_step_channel_has_all_its_files(case: Case) -> None:
    for language in _languages(case.campaign):
        names = template_names(case.campaign, case.step, case.channel, language)
        present = [name for name in names if (TEMPLATES_DIR / name).is_file()]
        if language == DEFAULT_LANGUAGE:
            assert present == names
        else:  # a translation is all or nothing, or the email would mix languages
            assert present in ([], names), f"{language}: only {present}"


# --- renderer guarantees -----------------------------------------------------------------------


@pytest.fixture
def templates_copy(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR / "leg-cramps", root / "leg-cramps")
    shutil.copytree(TEMPLATES_DIR / "_layouts", root / "_layouts")
    return root


@pytest.mark.parametrize("variable", ["first_name", "unsubscribe_url", "due_date"])
def test_sms_template_gets_no_patient_fields(templates_copy: Path, variable: str) -> None:
    path = templates_copy / "leg-cramps/en/welcome.sms.j2"
    path.write_text(f"{{{{ clinic.short_name }}}}: hello {{{{ {variable} }}}}. STOP to end\n")
    renderer = ContentRenderer(templates_copy, CLINIC)
    with pytest.raises(UndefinedError, match=variable):
        renderer.render_sms("leg-cramps", "welcome", Recipient(FIRST_NAME))


def test_email_template_with_an_unknown_variable_fails(templates_copy: Path) -> None:
    path = templates_copy / "leg-cramps/en/welcome.email.md.j2"
    path.write_text(path.read_text(encoding="utf-8").replace("Welcome,", "Due {{ due_date }},"))
    renderer = ContentRenderer(templates_copy, CLINIC)
    with pytest.raises(UndefinedError, match="due_date"):
        renderer.render_email("leg-cramps", "welcome", Recipient(FIRST_NAME), UNSUBSCRIBE_URL)


def test_missing_translation_falls_back_to_english() -> None:
    polish = Recipient(FIRST_NAME, language="pl")
    text = RENDERER.render_sms("leg-cramps", "welcome", polish)
    assert text.language == "en"
    assert text.body == render_sms("leg-cramps", "welcome", False).body
    assert text.template_ref.startswith("leg-cramps/en/welcome.sms.j2@")
    mail = RENDERER.render_email("leg-cramps", "welcome", polish, UNSUBSCRIBE_URL)
    assert mail.language == "en"
    assert '<html lang="en"' in mail.html
    assert mail.text == render_email("leg-cramps", "welcome", False).text


def test_translation_is_used_when_present(templates_copy: Path) -> None:
    wording = "dziękujemy za dołączenie. Odpisz STOP, aby zakończyć"
    (templates_copy / "leg-cramps/pl").mkdir()
    (templates_copy / "leg-cramps/pl/welcome.sms.j2").write_text(
        f"{{{{ clinic.short_name }}}}: {wording}\n", encoding="utf-8"
    )
    renderer = ContentRenderer(templates_copy, CLINIC)
    polish = Recipient(FIRST_NAME, language="pl")

    text = renderer.render_sms("leg-cramps", "welcome", polish)
    assert text.language == "pl"
    assert text.body == f"{CLINIC.short_name}: {wording}"
    assert text.template_ref.startswith("leg-cramps/pl/welcome.sms.j2@")
    assert text.encoding.encoding == "UCS-2"  # ę, ł and ń are not GSM-7

    english = renderer.render_sms("leg-cramps", "welcome", Recipient(FIRST_NAME))
    assert english.language == "en"
    assert english.body == render_sms("leg-cramps", "welcome", False).body
    # Only the SMS is translated: the email still falls back to English.
    mail = renderer.render_email("leg-cramps", "welcome", polish, UNSUBSCRIBE_URL)
    assert mail.language == "en"
