"""A draft's step form in and out of a bundle, what a draft changes, and campaign zip files
(campaigns.rules.drafts): problems name the form field, a save that changes nothing changes
no byte, and an uploaded zip can hold nothing but a campaign folder."""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from campaigns.rules.bundles import Bundle, campaign_of, read_bundle
from campaigns.rules.drafts import (
    MAX_ENTRY_BYTES,
    StepForm,
    bundle_from_zip,
    differences,
    read_form,
    step_form,
    with_step,
    without_step,
    zip_of,
)
from campaigns.rules.errors import InputError, InputErrors, by_field

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seed() -> Bundle:
    return read_bundle(ROOT / "templates" / "leg-cramps")


def test_a_step_saved_unchanged_changes_nothing(seed: Bundle) -> None:
    for step in seed.definition["steps"]:
        form = step_form(seed, step["key"])
        assert form is not None
        again = with_step(seed, form, step["key"])
        assert again.content_hash() == seed.content_hash(), step["key"]


def test_an_edited_step_keeps_its_place_and_drops_words_of_a_channel_it_no_longer_has(
    seed: Bundle,
) -> None:
    form = step_form(seed, "clot-warning-signs")
    assert form is not None
    edited = with_step(seed, replace(form, channels=("sms",), weeks="21"), "clot-warning-signs")
    keys = [s["key"] for s in edited.definition["steps"]]
    assert keys == [s["key"] for s in seed.definition["steps"]]
    step = edited.definition["steps"][keys.index("clot-warning-signs")]
    assert (step["offset"], step["channels"]) == ({"weeks": 21}, ["sms"])
    assert "en/clot-warning-signs.sms.j2" in edited.templates
    assert "en/clot-warning-signs.email.md.j2" not in edited.templates
    campaign_of(edited, "edited")  # still a valid campaign


def test_a_new_step_goes_in_timeline_order_and_a_removed_one_takes_its_words(
    seed: Bundle,
) -> None:
    form = StepForm(
        key="week-30-sleep",
        anchor="edd",
        weeks="30",
        valid_days="6",
        kind="education",
        channels=("sms",),
        sms="{{ clinic.short_name }}: sleep on your side. Reply STOP to end",
    )
    added = with_step(seed, form, None)
    keys = [s["key"] for s in added.definition["steps"]]
    before = [s for s in seed.definition["steps"] if s["anchor"] == "edd"]
    assert keys.index("week-30-sleep") == 1 + max(
        keys.index(s["key"]) for s in before if s["offset"].get("weeks", 0) <= 30
    )
    assert added.templates["en/week-30-sleep.sms.j2"] == form.sms
    campaign_of(added, "added")
    removed = without_step(added, "week-30-sleep")
    assert removed.content_hash() == seed.content_hash()
    with pytest.raises(InputErrors, match="already a step"):
        with_step(added, form, None)


def test_each_wrong_value_is_named_by_its_field(seed: Bundle) -> None:
    form = read_form(
        {
            "key": "Bad Key",
            "anchor": "edd",
            "weeks": "x",
            "days": "0",
            "valid_days": "0",
            "kind": "marketing",
            "catch_up": "yes",
        },
        [],
    )
    with pytest.raises(InputErrors) as first:
        with_step(seed, form, None)
    assert set(by_field(first.value)) == {"weeks", "channels"}
    fixed = replace(form, weeks="99", channels=("sms",))
    with pytest.raises(InputErrors) as second:
        with_step(seed, fixed, None)
    found = by_field(second.value)
    assert set(found) == {"key", "weeks", "valid_days"}
    assert "small letters" in found["key"]
    assert "at least 1 day" in found["valid_days"]
    # A rule over the whole step, once each field is right.
    with pytest.raises(InputErrors) as third:
        with_step(seed, replace(fixed, key="offer", weeks="20", valid_days="3"), None)
    assert by_field(third.value) == {"catch_up": "a marketing step is never sent late"}


def test_the_browsers_line_ends_do_not_change_the_words() -> None:
    form = read_form({"sms": "a\r\nb", "body": "# T\r\n\r\nx"}, ["sms", "sms", "email"])
    assert (form.sms, form.body, form.channels) == ("a\nb", "# T\n\nx", ("sms", "email"))


def test_differences_list_each_changed_field_before_and_after(seed: Bundle) -> None:
    form = step_form(seed, "welcome")
    assert form is not None
    changed = with_step(seed, replace(form, sms=form.sms + " Hi", valid_days="5"), "welcome")
    changed = without_step(changed, "supplements")
    found = {d.key: d for d in differences(seed, changed)}
    assert set(found) == {"welcome", "supplements"}
    assert found["supplements"].state == "removed"
    welcome = {c.what: c for c in found["welcome"].changes}
    assert set(welcome) == {"Valid for", "Text message"}
    assert (welcome["Valid for"].before, welcome["Valid for"].after) == ("3 days", "5 days")
    assert welcome["Text message"].after.endswith(" Hi")
    assert differences(seed, seed) == []
    assert {d.state for d in differences(None, seed)} == {"added"}


def test_a_zip_round_trips_in_the_repositorys_folder_format(seed: Bundle) -> None:
    data = zip_of(seed)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "leg-cramps/campaign.yaml" in names and "leg-cramps/en/welcome.sms.j2" in names
    assert bundle_from_zip(data).content_hash() == seed.content_hash()
    # Zipped from inside the folder (no top folder) reads the same.
    flat = _zip({n.removeprefix("leg-cramps/"): _read(data, n) for n in names})
    assert bundle_from_zip(flat).content_hash() == seed.content_hash()


def _read(data: bytes, name: str) -> bytes:
    return zipfile.ZipFile(io.BytesIO(data)).read(name)


def _zip(files: dict[str, bytes], link: str | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return out.getvalue()


YAML = b"key: x\nname: X\nsend_time: '10:00'\nsteps: []\n"


@pytest.mark.parametrize(
    ("files", "link", "said"),
    [
        ({"campaign.yaml": YAML, "../evil.j2": b"x"}, None, "not part of a campaign folder"),
        ({"campaign.yaml": YAML, "en/run.sh": b"x"}, None, "not part of a campaign folder"),
        ({"campaign.yaml": YAML, "/etc/en/x.sms.j2": b"x"}, None, "not part of a campaign"),
        ({"campaign.yaml": YAML}, "en/welcome.sms.j2", "is a link"),
        ({"en/welcome.sms.j2": b"x"}, None, "no campaign.yaml"),
        ({"campaign.yaml": b"key: [unclosed"}, None, "not valid YAML"),
        ({"campaign.yaml": YAML, "en/a.sms.j2": b"\xff\xfe"}, None, "not UTF-8"),
        ({"campaign.yaml": YAML, "en/a.sms.j2": b"x" * (MAX_ENTRY_BYTES + 1)}, None, "larger"),
    ],
)
def test_an_unsafe_or_broken_zip_is_refused_naming_the_entry(
    files: dict[str, bytes], link: str | None, said: str
) -> None:
    with pytest.raises(InputError, match=said) as refused:
        bundle_from_zip(_zip(files, link))
    assert refused.value.field == "file"


def test_not_a_zip_is_said_plainly() -> None:
    with pytest.raises(InputError, match="not a zip file"):
        bundle_from_zip(b"name,phone\n")
