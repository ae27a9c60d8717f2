"""A campaign as one value (campaigns.rules.bundles) and rendering from a version of it
(campaigns.rules.content): what a clinician signs off is exactly what is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns.bootstrap import clinic_from
from campaigns.rules.bundles import (
    Bundle,
    campaign_of,
    read_bundle,
    safe_template_name,
    write_bundle,
)
from campaigns.rules.catalog import CatalogError
from campaigns.rules.content import ContentError, ContentRenderer, Recipient, Version
from campaigns.settings import Settings

SETTINGS = Settings()
TEMPLATES = SETTINGS.templates_dir
CLINIC = clinic_from(SETTINGS)
SEED = read_bundle(TEMPLATES / "leg-cramps")
READER = Recipient("Alex", "en", False)


def version(number: int, templates: dict[str, str], id: int | None = None) -> Version:
    return Version(id, "leg-cramps", number, templates)


def test_the_hash_names_the_content_and_nothing_else(tmp_path: Path) -> None:
    write_bundle(SEED, tmp_path / "leg-cramps")
    again = read_bundle(tmp_path / "leg-cramps")
    assert again == SEED and again.content_hash() == SEED.content_hash()
    changed = Bundle(SEED.definition, {**SEED.templates, "en/welcome.sms.j2": "x"})
    assert changed.content_hash() != SEED.content_hash()
    reordered = Bundle(dict(reversed(SEED.definition.items())), SEED.templates)
    assert reordered.content_hash() == SEED.content_hash()


@pytest.mark.parametrize(
    "name", ["../x.j2", "en/../../x.j2", "en/a/b.j2", "en/x.txt", "/x.j2", "en\\x.j2"]
)
def test_a_template_name_cannot_leave_its_folder(name: str) -> None:
    with pytest.raises(CatalogError, match="expected <language>/<step>.<part>.j2"):
        safe_template_name(name)


def test_a_bundle_missing_a_template_names_the_step_and_file() -> None:
    templates = {k: v for k, v in SEED.templates.items() if k != "en/supplements.sms.j2"}
    with pytest.raises(
        CatalogError, match=r"step 'supplements' \(steps\[7\]\).*en/supplements.sms.j2"
    ):
        campaign_of(Bundle(SEED.definition, templates), "draft")


def test_a_version_renders_its_own_words_and_names_itself_in_the_record() -> None:
    words = "{{ clinic.short_name }}: new words. Reply STOP to end"
    renderer = ContentRenderer(
        TEMPLATES,
        CLINIC,
        lambda campaign, id: version(2, {**SEED.templates, "en/welcome.sms.j2": words}, 7),
    )
    from_files = ContentRenderer(TEMPLATES, CLINIC).render_sms("leg-cramps", "welcome", READER)
    sms = renderer.render_sms("leg-cramps", "welcome", READER, 7)
    assert sms.body == "Santi: new words. Reply STOP to end" != from_files.body
    assert sms.template_ref.startswith("leg-cramps/en/welcome.sms.j2@v2:")
    assert "@v" not in from_files.template_ref
    email = renderer.render_email("leg-cramps", "welcome", READER, "https://u.example", 7)
    assert email.template_ref.startswith("leg-cramps/en/welcome.subject.j2@v2:")
    assert "unsubscribe" in email.html.lower()  # the shared layout still wraps it


def test_a_step_the_version_lacks_is_missing_not_read_from_disk() -> None:
    without = {k: v for k, v in SEED.templates.items() if not k.startswith("en/welcome.")}
    renderer = ContentRenderer(TEMPLATES, CLINIC, lambda campaign, id: version(3, without, 9))
    with pytest.raises(ContentError, match="no template for leg-cramps/welcome"):
        renderer.render_sms("leg-cramps", "welcome", READER, 9)


def test_a_draft_is_rendered_afresh_each_time() -> None:
    renderer = ContentRenderer(TEMPLATES, CLINIC)
    first = version(4, {**SEED.templates, "en/welcome.sms.j2": "{{ clinic.short_name }}: one"})
    second = version(4, {**SEED.templates, "en/welcome.sms.j2": "{{ clinic.short_name }}: two"})
    assert renderer.render_sms("leg-cramps", "welcome", READER, draft=first).body == "Santi: one"
    assert renderer.render_sms("leg-cramps", "welcome", READER, draft=second).body == "Santi: two"
