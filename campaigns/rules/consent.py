"""Consent rules: what a patient has agreed to now, derived from the append-only ledger.

Programme consent (UK GDPR Art. 9 explicit consent) may be given for every channel or one;
marketing consent (PECR) is per channel. The latest event that applies wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from campaigns.rules.vocabulary import MARKETING_PURPOSE, Channel, ConsentPurpose, StepKind

#: The wording shown when consent is taken; bump it whenever the words change.
WORDING_VERSION = "santi-2026-11-v1"


@dataclass(frozen=True)
class ConsentRecord:
    purpose: ConsentPurpose
    channel: Channel | None  # None: every channel
    granted: bool


@dataclass(frozen=True)
class ConsentState:
    programme: frozenset[Channel]
    marketing: frozenset[Channel]

    def allows(self, kind: StepKind, channel: Channel) -> bool:
        """May a message of this kind go on this channel?"""
        if channel not in self.programme:
            return False
        return kind is not StepKind.MARKETING or channel in self.marketing


def current(events: Iterable[ConsentRecord]) -> ConsentState:
    """Replay the ledger in order (oldest first) into today's consent."""
    programme: set[Channel] = set()
    marketing: set[Channel] = set()
    for event in events:
        if event.purpose is ConsentPurpose.PROGRAMME:
            target, channels = programme, _channels(event.channel)
        else:
            target = marketing
            channels = [c for c, p in MARKETING_PURPOSE.items() if p is event.purpose]
        if event.granted:
            target.update(channels)
        else:
            target.difference_update(channels)
    return ConsentState(frozenset(programme), frozenset(marketing))


def _channels(channel: Channel | None) -> list[Channel]:
    return list(Channel) if channel is None else [channel]


def usable_channels(
    enrolled: frozenset[Channel],
    consent: ConsentState,
    suppressed: frozenset[Channel],
    *,
    invalid: frozenset[Channel],
    has_email: bool,
) -> frozenset[Channel]:
    """The channels a plan may use now: enrolled (a dead phone number falls back to email),
    consented to, and neither suppressed nor known to be dead."""
    wanted = set(enrolled)
    if Channel.SMS in invalid and has_email:
        wanted.add(Channel.EMAIL)
    return frozenset(wanted & consent.programme) - suppressed - invalid
