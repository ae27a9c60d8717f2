"""A campaign as one value: its definition (the campaign.yaml mapping) and its templates.

The repository keeps campaigns as folders (templates/<key>/campaign.yaml plus
<language>/<step>.<part>.j2 files) so content can be reviewed in git; the database keeps each
version of a campaign as a bundle. Both go through `campaign_of`, so the checks that stop a
bad definition at start-up stop a bad draft too. The hash names the exact content a clinician
signed off.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from campaigns.rules.catalog import (
    CAMPAIGN_FILE,
    DEFAULT_LANGUAGE,
    Campaign,
    CatalogError,
    describe_errors,
    template_names,
)

#: Template files a bundle may hold: <language>/<step>.<part>.j2, nothing else.
TEMPLATE_SUFFIX = ".j2"


@dataclass(frozen=True)
class Bundle:
    definition: dict[str, Any]
    #: "<language>/<step>.<part>.j2" -> template source.
    templates: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return str(self.definition.get("key", ""))

    def content_hash(self) -> str:
        """SHA-256 of the definition and every template, in a canonical form."""
        canonical = json.dumps(
            {"definition": self.definition, "templates": self.templates},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def read_bundle(folder: Path) -> Bundle:
    """A campaign folder as a bundle; raises CatalogError naming the file."""
    path = folder / CAMPAIGN_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: expected a mapping with key, name, send_time and steps")
    templates = {
        str(file.relative_to(folder)): file.read_text(encoding="utf-8")
        for file in sorted(folder.rglob(f"*{TEMPLATE_SUFFIX}"))
        if file.is_file()
    }
    return Bundle(raw, templates)


def write_bundle(bundle: Bundle, folder: Path) -> list[Path]:
    """Write a bundle as a campaign folder (the repository's format); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / CAMPAIGN_FILE]
    written[0].write_text(
        yaml.safe_dump(bundle.definition, sort_keys=False, allow_unicode=True, width=100),
        encoding="utf-8",
    )
    for name, source in sorted(bundle.templates.items()):
        target = folder / safe_template_name(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
        written.append(target)
    return written


def safe_template_name(name: str) -> str:
    """Refuse a template name that could leave its folder or is not <language>/<file>.j2."""
    parts = name.split("/")
    if (
        len(parts) != 2
        or not all(parts)
        or any(p in {".", ".."} or "\\" in p for p in parts)
        or not name.endswith(TEMPLATE_SUFFIX)
    ):
        raise CatalogError(f"template {name!r}: expected <language>/<step>.<part>.j2")
    return name


def campaign_of(bundle: Bundle, where: str, folder: Path | None = None) -> Campaign:
    """The checked campaign a bundle defines; every error names `where`, the step and field
    (and a missing template by its path in `folder`, when the bundle was read from one)."""
    try:
        campaign = Campaign.model_validate(bundle.definition)
    except ValidationError as exc:
        raise CatalogError(describe_errors(where, bundle.definition, exc)) from None
    for name in bundle.templates:
        safe_template_name(name)
    for index, step in enumerate(campaign.steps):
        for channel in step.channels:
            for name in template_names(campaign.key, step, channel, DEFAULT_LANGUAGE):
                local = name.removeprefix(f"{campaign.key}/")
                if local not in bundle.templates:
                    raise CatalogError(
                        f"{where}: step {step.key!r} (steps[{index}]), field 'channels': "
                        f"{channel} needs the template {folder / local if folder else local}, "
                        "which does not exist"
                    )
    return campaign


def load_folders(templates_dir: Path) -> dict[str, Campaign]:
    """Read and check every campaign folder; every error names the file, step and field."""
    campaigns = {}
    for folder in sorted(templates_dir.iterdir()):
        if folder.is_dir() and not folder.name.startswith(("_", ".")):
            campaign = load_campaign(folder)
            campaigns[campaign.key] = campaign
    if not campaigns:
        raise CatalogError(f"{templates_dir}: no campaign folders with a {CAMPAIGN_FILE}")
    return campaigns


def load_campaign(folder: Path) -> Campaign:
    """One campaign folder, checked; its key must be the folder's name."""
    path = folder / CAMPAIGN_FILE
    campaign = campaign_of(read_bundle(folder), str(path), folder)
    if campaign.key != folder.name:
        raise CatalogError(
            f"{path}: field 'key' is {campaign.key!r} but the folder is named "
            f"{folder.name!r}; they must match"
        )
    return campaign
