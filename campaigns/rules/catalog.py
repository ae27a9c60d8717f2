"""Campaign definitions: templates/<campaign>/campaign.yaml, validated before anything starts.

A definition that is wrong stops the service with an error naming the file, the step and the
field, because a silently dropped warning-signs step is worse than a service that will not start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from campaigns.rules.vocabulary import Anchor, Channel, StepKind

CAMPAIGN_FILE = "campaign.yaml"
DEFAULT_LANGUAGE = "en"
_KEY_RE = r"^[a-z0-9][a-z0-9-]{0,62}$"
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class CatalogError(ValueError):
    """A campaign definition that cannot be used."""


class Offset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    weeks: int = Field(default=0, ge=0, le=60)
    days: int = Field(default=0, ge=0, le=420)

    @property
    def total_days(self) -> int:
        return self.weeks * 7 + self.days

    def __str__(self) -> str:
        return f"{self.weeks}+{self.days}"


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=_KEY_RE)
    anchor: Anchor
    offset: Offset
    kind: StepKind
    channels: tuple[Channel, ...] = Field(min_length=1)
    catch_up: bool = False
    #: Catch-up sends only the latest missed step of each topic (e.g. one clot warning).
    topic: str | None = None
    #: How long after its due time the step is still worth sending.
    valid_for: Offset

    @field_validator("channels")
    @classmethod
    def _distinct_channels(cls, channels: tuple[Channel, ...]) -> tuple[Channel, ...]:
        if len(set(channels)) != len(channels):
            raise ValueError("lists a channel twice")
        return channels

    @field_validator("valid_for")
    @classmethod
    def _positive_validity(cls, valid_for: Offset) -> Offset:
        if valid_for.total_days < 1:
            raise ValueError("must be at least 1 day")
        return valid_for

    @model_validator(mode="after")
    def _rules(self) -> Step:
        if self.catch_up and self.kind is StepKind.MARKETING:
            raise ValueError("catch_up: a marketing step is never sent late")
        if self.kind is StepKind.STAFF_REPLY:
            raise ValueError("kind: staff_reply is a staff member's text, not a campaign step")
        return self

    @property
    def catch_up_topic(self) -> str:
        return self.topic or self.key

    @property
    def validity(self) -> timedelta:
        return timedelta(days=self.valid_for.total_days)


class Campaign(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=_KEY_RE)
    name: str = Field(min_length=1)
    description: str = ""
    send_time: str
    steps: tuple[Step, ...] = Field(min_length=1)

    @field_validator("send_time")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not _TIME_RE.match(value):
            raise ValueError("must be a local time like 10:00")
        return value

    @field_validator("steps")
    @classmethod
    def _distinct_keys(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        seen: dict[str, int] = {}
        for index, step in enumerate(steps):
            if step.key in seen:
                raise ValueError(
                    f"step {step.key!r} (steps[{seen[step.key]}]) and step {step.key!r} "
                    f"(steps[{index}]) use the same key"
                )
            seen[step.key] = index
        return steps

    @property
    def send_minute(self) -> int:
        hours, minutes = self.send_time.split(":")
        return int(hours) * 60 + int(minutes)

    def step(self, key: str) -> Step:
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(f"campaign {self.key!r} has no step {key!r}")


def template_names(campaign_key: str, step: Step, channel: Channel, language: str) -> list[str]:
    """The template files one step needs for one channel, relative to the templates folder."""
    base = f"{campaign_key}/{language}/{step.key}"
    if channel is Channel.SMS:
        return [f"{base}.sms.j2"]
    # One Markdown source gives the email's HTML and text parts (campaigns.rules.email_markup).
    return [f"{base}.subject.j2", f"{base}.email.md.j2"]


class Catalog(Mapping[str, Campaign]):
    """Every campaign found under the templates folder, by key."""

    def __init__(
        self, campaigns: Mapping[str, Campaign], versions: Mapping[str, int] | None = None
    ) -> None:
        # One attribute, swapped whole: a reader sees the old set or the new one, never half.
        self._state = (dict(campaigns), dict(versions or {}))

    def __getitem__(self, key: str) -> Campaign:
        try:
            return self._campaigns[key]
        except KeyError:
            known = ", ".join(sorted(self._campaigns)) or "none"
            raise KeyError(f"unknown campaign {key!r} (known: {known})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._campaigns)

    def __len__(self) -> int:
        return len(self._campaigns)

    @property
    def default(self) -> str:
        """The campaign a request that names none enrols into: the first by key (today's
        clinic has one)."""
        return min(self._campaigns)

    @classmethod
    def load(cls, templates_dir: Path) -> Catalog:
        """Every campaign folder under templates_dir (the repository's seed content)."""
        # Imported here: bundles builds on this module's Campaign.
        from campaigns.rules.bundles import load_folders

        return cls(load_folders(templates_dir))

    def version(self, key: str) -> int | None:
        """The content version (campaign_versions.id) of the definition last read; None: the
        repository's files."""
        return self._state[1].get(key)

    def snapshot(self) -> Catalog:
        """The definitions and versions as they are now, fixed: a plan and the version its rows
        are stamped with come from the same snapshot, whatever is approved meanwhile."""
        return Catalog(*self._state)

    def replace(self, campaigns: Mapping[str, Campaign], versions: Mapping[str, int]) -> None:
        """Swap in newly approved definitions."""
        self._state = (dict(campaigns), dict(versions))

    @property
    def _campaigns(self) -> dict[str, Campaign]:
        return self._state[0]


def describe_errors(path: str, raw: dict[str, Any], exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            index = loc[1]
            steps = raw.get("steps") or []
            key = (
                steps[index].get("key")
                if index < len(steps) and isinstance(steps[index], dict)
                else None
            )
            where = f"step {key!r} (steps[{index}]), " if key else f"steps[{index}], "
            loc = loc[2:]
        field = ".".join(str(part) for part in loc) or "(the step itself)"
        given = error.get("input")
        shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
        lines.append(f"{path}: {where}field {field!r}: {error['msg']}{shown}")
    return "\n".join(lines)
