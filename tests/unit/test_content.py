"""The SMS segment estimator and the template fingerprint in campaigns.rules.content.

sms_encoding must give the same answer as every row of the verified table in docs/providers.md
("SMS encoding and segments": GSM-7 160/153, UCS-2 70/67, extension characters cost 2, a
character is never split across segments). template_ref is what the audit trail records, so it
must change when the wording changes and stay the same when it does not.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from jinja2 import DictLoader

from campaigns.bootstrap import clinic_from
from campaigns.rules.content import ContentRenderer, Recipient, SmsEncoding, sms_encoding
from campaigns.settings import Settings

GSM, UCS2 = "GSM-7", "UCS-2"
EMOJI = "\U0001f600"  # outside the BMP: a surrogate pair in UTF-16
EXTENSION = "\f^{}\\[~]|€"
SETTINGS = Settings()
CLINIC = clinic_from(SETTINGS)
UNSUBSCRIBE_URL = "https://santi.example/u/token"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a" * 160, SmsEncoding(GSM, 160, 1), id="160 a"),
        pytest.param("a" * 161, SmsEncoding(GSM, 161, 2), id="161 a"),
        pytest.param("a" * 306, SmsEncoding(GSM, 306, 2), id="306 a"),
        pytest.param("a" * 307, SmsEncoding(GSM, 307, 3), id="307 a"),
        pytest.param("a" * 152 + "€", SmsEncoding(GSM, 154, 1), id="152 a + euro"),
        pytest.param("€" * 80, SmsEncoding(GSM, 160, 1), id="80 euro"),
        pytest.param("ê" * 70, SmsEncoding(UCS2, 70, 1), id="70 e-circumflex"),
        pytest.param("ê" * 71, SmsEncoding(UCS2, 71, 2), id="71 e-circumflex"),
        pytest.param("ê" * 134, SmsEncoding(UCS2, 134, 2), id="134 e-circumflex"),
        pytest.param("ê" * 135, SmsEncoding(UCS2, 135, 3), id="135 e-circumflex"),
        pytest.param("Don’t forget…", SmsEncoding(UCS2, 13, 1), id="curly apostrophe"),
    ],
)
def test_matches_the_verified_table(text: str, expected: SmsEncoding) -> None:
    assert sms_encoding(text) == expected


def test_one_curly_quote_switches_the_whole_message_to_ucs2() -> None:
    assert sms_encoding("Don't forget").encoding == GSM
    assert sms_encoding("a" * 100 + "’").encoding == UCS2
    assert sms_encoding("a" * 100 + "’").segments == 2  # 101 > 70


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(EMOJI, SmsEncoding(UCS2, 2, 1), id="one emoji"),
        pytest.param(EMOJI * 35, SmsEncoding(UCS2, 70, 1), id="35 emoji fill one SMS"),
        pytest.param("a" * 69 + EMOJI, SmsEncoding(UCS2, 71, 2), id="69 a + emoji"),
        # 66 + [2 + 65] + 1: the emoji does not fit in the first part and is never split.
        pytest.param("ê" * 66 + EMOJI + "ê" * 66, SmsEncoding(UCS2, 134, 3), id="emoji at seam"),
    ],
)
def test_emoji_counts_as_two_utf16_units(text: str, expected: SmsEncoding) -> None:
    assert sms_encoding(text) == expected


def test_empty_text_is_no_segments() -> None:
    assert sms_encoding("") == SmsEncoding(GSM, 0, 0)


@pytest.mark.parametrize("char", list(EXTENSION), ids=[f"U+{ord(c):04X}" for c in EXTENSION])
def test_extension_characters_count_two_septets(char: str) -> None:
    assert sms_encoding(char) == SmsEncoding(GSM, 2, 1)
    assert sms_encoding("a" * 158 + char) == SmsEncoding(GSM, 160, 1)
    assert sms_encoding("a" * 159 + char) == SmsEncoding(GSM, 161, 2)


def test_extension_character_is_never_split_across_segments() -> None:
    # 152 + [2 + 151] + 1: ceil(306 / 153) would say 2.
    assert sms_encoding("a" * 152 + "€" + "a" * 152) == SmsEncoding(GSM, 306, 3)


@pytest.mark.parametrize(
    ("char", "encoding"),
    [("é", GSM), ("£", GSM), ("ê", UCS2), ("á", UCS2), ("í", UCS2), ("ó", UCS2), ("ú", UCS2)],
)
def test_accented_letters_follow_the_gsm_table(char: str, encoding: str) -> None:
    assert sms_encoding(f"Caf{char}").encoding == encoding


# --- template_ref ------------------------------------------------------------------------------


def _copy(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(SETTINGS.templates_dir / "leg-cramps", root / "leg-cramps")
    shutil.copytree(SETTINGS.templates_dir / "_layouts", root / "_layouts")
    return root


def _edit(root: Path, name: str) -> None:
    path = root / "leg-cramps/en" / name
    text = path.read_text(encoding="utf-8")
    assert "Welcome" in text
    path.write_text(text.replace("Welcome", "Hello", 1))


def _sms_ref(root: Path) -> str:
    rendered = ContentRenderer(root, CLINIC).render_sms(
        "leg-cramps", "welcome", Recipient("Zephyrine")
    )
    return rendered.template_ref


def _email_ref(root: Path) -> str:
    rendered = ContentRenderer(root, CLINIC).render_email(
        "leg-cramps", "welcome", Recipient("Zephyrine"), UNSUBSCRIBE_URL
    )
    return rendered.template_ref


def test_template_ref_names_the_file_and_a_content_hash(tmp_path: Path) -> None:
    root = _copy(tmp_path, "a")
    assert re.fullmatch(r"leg-cramps/en/welcome\.sms\.j2@[0-9a-f]{12}", _sms_ref(root))
    assert re.fullmatch(r"leg-cramps/en/welcome\.subject\.j2@[0-9a-f]{12}", _email_ref(root))


def test_template_ref_is_the_same_for_the_same_wording(tmp_path: Path) -> None:
    first, second = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    assert _sms_ref(first) == _sms_ref(second)
    assert _email_ref(first) == _email_ref(second)


def test_template_ref_changes_when_the_sms_wording_changes(tmp_path: Path) -> None:
    original, edited = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    path = edited / "leg-cramps/en/welcome.sms.j2"
    path.write_text(path.read_text(encoding="utf-8").replace("thanks", "thank you"))
    before, after = _sms_ref(original), _sms_ref(edited)
    assert before != after
    assert before.split("@")[0] == after.split("@")[0]


@pytest.mark.parametrize("part", ["subject", "email.md"])
def test_email_template_ref_changes_when_any_part_changes(tmp_path: Path, part: str) -> None:
    original, edited = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    _edit(edited, f"welcome.{part}.j2")
    assert _email_ref(original) != _email_ref(edited)


def test_template_ref_changes_when_a_file_is_edited_in_place(tmp_path: Path) -> None:
    root = _copy(tmp_path, "a")
    before = _sms_ref(root)
    path = root / "leg-cramps/en/welcome.sms.j2"
    path.write_text(path.read_text(encoding="utf-8").replace("thanks", "thank you"))
    renderer = ContentRenderer(root, CLINIC)
    rendered = renderer.render_sms("leg-cramps", "welcome", Recipient("Zephyrine"))
    assert "thank you" in rendered.body
    assert rendered.template_ref != before


def test_step_templates_are_read_through_the_loader_alone(tmp_path: Path) -> None:
    """Step templates may come from elsewhere than files (a database of versions): a renderer
    whose loader holds them renders and fingerprints them as from the files."""
    files = SETTINGS.templates_dir
    stored = {
        path.relative_to(files).as_posix(): path.read_text(encoding="utf-8")
        for folder in ("leg-cramps/en", "_layouts")
        for path in (files / folder).iterdir()
    }
    from_files = ContentRenderer(files, CLINIC)
    elsewhere = ContentRenderer(tmp_path, CLINIC)  # an empty folder
    elsewhere._env.loader = DictLoader(stored)
    for renderer in (from_files, elsewhere):
        assert (
            renderer.source("leg-cramps/en/welcome.sms.j2")
            == stored["leg-cramps/en/welcome.sms.j2"]
        )
    recipient = Recipient("Zephyrine", discreet=True)
    assert elsewhere.render_sms("leg-cramps", "welcome", recipient) == from_files.render_sms(
        "leg-cramps", "welcome", recipient
    )
    mail = elsewhere.render_email("leg-cramps", "welcome", recipient, UNSUBSCRIBE_URL)
    assert mail == from_files.render_email("leg-cramps", "welcome", recipient, UNSUBSCRIBE_URL)


def test_the_service_refuses_to_start_when_the_clinic_name_makes_a_text_too_long() -> None:
    from campaigns.bootstrap import build
    from campaigns.rules.catalog import CatalogError
    from campaigns.settings import Settings

    too_long = r"leg-cramps/easing-a-cramp, Text message: too long for one text: 16\d characters"
    with pytest.raises(CatalogError, match=too_long):
        build(Settings(clinic_short_name="Santiclinic", database_url="sqlite://"))
    build(Settings(clinic_short_name="Santi", database_url="sqlite://")).close()


def test_the_welcome_promises_the_hours_the_window_keeps() -> None:
    """The welcome says when texts come; a clinic that changes the window changes the words."""
    from campaigns.settings import PROJECT_ROOT

    templates = PROJECT_ROOT / "templates"
    for window, words in (
        ("Mon-Sat 09:00-20:00", "9am-8pm"),
        ("Mon-Fri 08:30-18:00", "8:30am-6pm"),
    ):
        clinic = clinic_from(Settings(send_window=window, holiday_region="none"))
        body = (
            ContentRenderer(templates, clinic)
            .render_sms("leg-cramps", "welcome", Recipient("Ada"))
            .body
        )
        assert f"sent {words}." in body
        assert sms_encoding(body).segments == 1
