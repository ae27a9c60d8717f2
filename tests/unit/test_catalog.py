"""Campaign definitions (campaigns.rules.catalog): the real catalog loads, and a broken
definition stops loading with an error that names the file, the step (key and index) and the
field.

Each broken definition is a copy of templates/leg-cramps (plus _layouts) in tmp_path with one
change made to its campaign.yaml or its template files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from campaigns.rules.catalog import CAMPAIGN_FILE, Catalog, CatalogError, template_names
from campaigns.rules.vocabulary import StepKind
from campaigns.settings import Settings

REAL_TEMPLATES = Settings().templates_dir
CAMPAIGN = "leg-cramps"
Raw = dict[str, Any]


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(REAL_TEMPLATES / CAMPAIGN, root / CAMPAIGN)
    shutil.copytree(REAL_TEMPLATES / "_layouts", root / "_layouts")
    return root


def definition(templates: Path) -> Path:
    return templates / CAMPAIGN / CAMPAIGN_FILE


def edit(templates: Path, change: Callable[[Raw], None]) -> Path:
    path = definition(templates)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def step(raw: Raw, key: str) -> Raw:
    return next(s for s in raw["steps"] if s["key"] == key)


def where(templates: Path, key: str) -> str:
    """How an error names a step: "step 'x' (steps[i])", with i read from the real file."""
    raw = yaml.safe_load(definition(templates).read_text(encoding="utf-8"))
    index = [s["key"] for s in raw["steps"]].index(key)
    return f"step {key!r} (steps[{index}])"


def load_error(templates: Path) -> str:
    with pytest.raises(CatalogError) as info:
        Catalog.load(templates)
    return str(info.value)


# --- what loads ----------------------------------------------------------------------------------


def test_the_real_catalog_loads() -> None:
    catalog = Catalog.load(REAL_TEMPLATES)
    raw = yaml.safe_load((REAL_TEMPLATES / CAMPAIGN / CAMPAIGN_FILE).read_text(encoding="utf-8"))
    campaign = catalog[CAMPAIGN]
    assert campaign.key == CAMPAIGN
    assert [s.key for s in campaign.steps] == [s["key"] for s in raw["steps"]]
    assert campaign.send_minute == 10 * 60
    for s in campaign.steps:
        for channel in s.channels:
            for name in template_names(CAMPAIGN, s, channel, "en"):
                assert (REAL_TEMPLATES / name).is_file(), name
    assert all(s.catch_up for s in campaign.steps if s.kind is StepKind.SAFETY)
    assert not any(s.catch_up for s in campaign.steps if s.kind is StepKind.MARKETING)


def test_an_unedited_copy_loads(templates: Path) -> None:
    """So each error below comes from its one change, not from the copy."""
    assert list(Catalog.load(templates)) == [CAMPAIGN]
    edit(templates, lambda raw: None)  # a yaml round trip changes nothing that matters
    assert Catalog.load(templates)[CAMPAIGN] == Catalog.load(REAL_TEMPLATES)[CAMPAIGN]


def test_unknown_campaign_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown campaign 'nope' \\(known: leg-cramps\\)"):
        Catalog.load(REAL_TEMPLATES)["nope"]


def test_a_folder_without_campaigns_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "_layouts").mkdir()
    with pytest.raises(CatalogError, match="no campaign folders"):
        Catalog.load(tmp_path)


# --- what does not, and how it says so -----------------------------------------------------------


def test_invalid_yaml(templates: Path) -> None:
    path = definition(templates)
    path.write_text("key: leg-cramps\nsteps: [\n  - key: welcome\n", encoding="utf-8")
    message = load_error(templates)
    assert message.startswith(f"{path}: not valid YAML")


def test_step_without_kind(templates: Path) -> None:
    path = edit(templates, lambda raw: step(raw, "easing-a-cramp").pop("kind"))
    message = load_error(templates)
    assert f"{path}: {where(templates, 'easing-a-cramp')}, field 'kind': Field required" in message


def test_unknown_anchor(templates: Path) -> None:
    path = edit(templates, lambda raw: step(raw, "supplements").update(anchor="due-date"))
    message = load_error(templates)
    assert f"{path}: {where(templates, 'supplements')}, field 'anchor'" in message
    assert "'enrolment', 'edd' or 'birth'" in message


def test_negative_offset(templates: Path) -> None:
    path = edit(templates, lambda raw: step(raw, "daily-habits").update(offset={"weeks": -2}))
    message = load_error(templates)
    assert f"{path}: {where(templates, 'daily-habits')}, field 'offset.weeks'" in message
    assert "greater than or equal to 0" in message


def test_unknown_field_in_a_step(templates: Path) -> None:
    path = edit(templates, lambda raw: step(raw, "welcome").update(chanels=["sms"]))
    message = load_error(templates)
    assert f"{path}: {where(templates, 'welcome')}, field 'chanels'" in message
    assert "Extra inputs are not permitted" in message


def test_duplicate_step_keys(templates: Path) -> None:
    def duplicate(raw: Raw) -> None:
        step(raw, "daily-habits")["key"] = "later-pregnancy"

    path = edit(templates, duplicate)
    message = load_error(templates)
    assert message.startswith(f"{path}: field 'steps'")
    assert "use the same key" in message


def test_key_must_match_the_folder(templates: Path) -> None:
    path = edit(templates, lambda raw: raw.update(key="leg-cramp"))
    message = load_error(templates)
    assert message.startswith(f"{path}: field 'key' is 'leg-cramp'")
    assert "folder is named 'leg-cramps'" in message


def test_catch_up_on_a_marketing_step(templates: Path) -> None:
    path = edit(templates, lambda raw: step(raw, "physio-offer").update(catch_up=True))
    message = load_error(templates)
    assert f"{path}: {where(templates, 'physio-offer')}, field" in message
    assert "catch_up: a marketing step is never sent late" in message


@pytest.mark.parametrize("part", ["sms", "subject", "email.md"])
def test_channel_whose_template_is_missing(templates: Path, part: str) -> None:
    missing = templates / CAMPAIGN / "en" / f"supplements.{part}.j2"
    missing.unlink()
    message = load_error(templates)
    channel = "sms" if part == "sms" else "email"
    assert message.startswith(
        f"{definition(templates)}: {where(templates, 'supplements')}, field 'channels': "
        f"{channel} needs the template {missing}, which does not exist"
    )


def test_unknown_top_level_field(templates: Path) -> None:
    path = edit(templates, lambda raw: raw.update(colour="blue"))
    message = load_error(templates)
    assert f"{path}: field 'colour': Extra inputs are not permitted" in message


@pytest.mark.parametrize("send_time", ["25:00", "10:60", "9:00"])
def test_send_time_must_be_a_clock_time(templates: Path, send_time: str) -> None:
    path = edit(templates, lambda raw: raw.update(send_time=send_time))
    message = load_error(templates)
    assert f"{path}: field 'send_time'" in message
    assert "must be a local time like 10:00" in message


def test_every_error_is_reported_at_once(templates: Path) -> None:
    def break_two_steps(raw: Raw) -> None:
        step(raw, "welcome").pop("kind")
        step(raw, "programme-end").update(anchor="moon")

    edit(templates, break_two_steps)
    message = load_error(templates)
    assert f"{where(templates, 'welcome')}, field 'kind'" in message
    assert f"{where(templates, 'programme-end')}, field 'anchor'" in message


def test_duplicate_step_keys_name_both_steps(templates: Path) -> None:
    first = where(templates, "later-pregnancy")
    second = where(templates, "daily-habits").replace("daily-habits", "later-pregnancy")

    def duplicate(raw: Raw) -> None:
        step(raw, "daily-habits")["key"] = "later-pregnancy"

    edit(templates, duplicate)
    message = load_error(templates)
    assert first in message
    assert second in message
