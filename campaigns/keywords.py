"""Classify a patient's reply: safety tiers first, then loss, opt-out and the commands.

Pure: a `Lexicon` is loaded once from a language's data file (templates/_keywords/<lang>.yaml)
and `classify` does no I/O. Matching works on normalised word tokens (see the data file's
header for the rules), through dictionaries keyed by a pattern's first word, so a message costs
a few dozen dictionary lookups whatever the size of the word lists.

Every intent that matched is reported, highest first: the highest decides the reply, and the
handler still applies an opt-out or a loss found beside a danger sign.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml


class Intent(StrEnum):
    """In priority order, highest first."""

    EMERGENCY = "emergency"
    MATERNITY = "maternity"
    LEG = "leg"
    PRE_ECLAMPSIA = "pre_eclampsia"
    LOSS = "loss"
    OPT_OUT = "opt_out"
    RESUBSCRIBE = "resubscribe"
    HELP = "help"
    BOOK = "book"
    CRAMP = "cramp"
    BORN = "born"
    UNRECOGNISED = "unrecognised"


class Tier(StrEnum):
    RED = "red"
    AMBER = "amber"
    ADMIN = "admin"
    ROUTINE = "routine"
    NONE = "none"


TIERS: Mapping[Intent, Tier] = {
    Intent.EMERGENCY: Tier.RED,
    Intent.MATERNITY: Tier.RED,
    Intent.LEG: Tier.AMBER,
    Intent.PRE_ECLAMPSIA: Tier.AMBER,
    Intent.LOSS: Tier.AMBER,
    Intent.OPT_OUT: Tier.ADMIN,
    Intent.RESUBSCRIBE: Tier.ADMIN,
    Intent.HELP: Tier.ADMIN,
    Intent.BOOK: Tier.ADMIN,
    Intent.CRAMP: Tier.ROUTINE,
    Intent.BORN: Tier.ROUTINE,
    Intent.UNRECOGNISED: Tier.NONE,
}
#: Danger signs: a safety answer at once, whatever else the message holds.
SAFETY_INTENTS = frozenset({Intent.EMERGENCY, Intent.MATERNITY, Intent.LEG, Intent.PRE_ECLAMPSIA})
_RANK = {intent: rank for rank, intent in enumerate(Intent)}


class LexiconError(ValueError):
    """A word list that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Match:
    intent: Intent
    reply: str  # the reply template for this group of words
    words: tuple[str, ...]  # the patterns that matched, as written in the word list


@dataclass(frozen=True)
class Classification:
    intent: Intent
    matches: tuple[Match, ...]  # every intent that matched, highest first
    language: str

    @property
    def tier(self) -> Tier:
        return TIERS[self.intent]

    @property
    def intents(self) -> frozenset[Intent]:
        return frozenset(m.intent for m in self.matches)

    @property
    def safety(self) -> bool:
        return self.intent in SAFETY_INTENTS

    @property
    def words(self) -> list[str]:
        return [word for match in self.matches for word in match.words]

    def with_match(self, match: Match) -> Classification:
        """The same reading with one more intent matched, ranked like the others."""
        matches = tuple(sorted((*self.matches, match), key=lambda m: _RANK[m.intent]))
        return Classification(matches[0].intent, matches, self.language)

    def match(self, intent: Intent) -> Match | None:
        return next((m for m in self.matches if m.intent is intent), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent.value,
            "tier": self.tier.value,
            "language": self.language,
            "matches": [
                {"intent": m.intent.value, "reply": m.reply, "words": list(m.words)}
                for m in self.matches
            ],
        }


@dataclass(frozen=True)
class _Pattern:
    group: int  # index into Lexicon.groups
    tokens: tuple[str, ...]  # normalised; a token ending in "*" matches any ending
    text: str  # as written in the data file


@dataclass
class Lexicon:
    language: str
    version: str
    emoji: dict[str, str]
    spellings: dict[str, str]
    filler: frozenset[str]
    groups: list[tuple[Intent, str]] = field(default_factory=list)  # (intent, reply)
    by_first: dict[str, list[_Pattern]] = field(default_factory=dict)
    by_stem: dict[str, list[_Pattern]] = field(default_factory=dict)
    whole: dict[tuple[str, ...], _Pattern] = field(default_factory=dict)
    whole_if_opted_out: dict[tuple[str, ...], _Pattern] = field(default_factory=dict)
    fuzzy: dict[str, list[_Pattern]] = field(default_factory=dict)  # deletion variant -> words
    stem_lengths: tuple[int, ...] = ()
    #: word -> the patterns that can start at it (a memo: replies reuse a small vocabulary)
    _starts: dict[str, tuple[_Pattern, ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: Path) -> Lexicon:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise LexiconError(f"{path}: cannot read the word list ({exc})") from None
        return cls.from_data(data, str(path))

    @classmethod
    def from_data(cls, data: Any, where: str = "word list") -> Lexicon:
        if not isinstance(data, dict) or not isinstance(data.get("intents"), dict):
            raise LexiconError(f"{where}: expected a mapping with `intents`")
        language = str(data.get("language") or "")
        if not language:
            raise LexiconError(f"{where}: `language` is missing")
        emoji = {str(k): str(v) for k, v in (data.get("emoji") or {}).items()}
        lexicon = cls(
            language=language,
            version=str((data.get("reviewed") or {}).get("version", "")),
            emoji=emoji,
            spellings={},
            filler=frozenset(),
        )
        lexicon.spellings = {
            _squeeze_word(_fold(str(k))): " ".join(tokens(str(v), lexicon))
            for k, v in (data.get("spellings") or {}).items()
        }
        lexicon.filler = frozenset(
            word for f in data.get("filler") or [] for word in tokens(str(f), lexicon)
        )
        unknown = set(data["intents"]) - {i.value for i in Intent}
        if unknown:
            raise LexiconError(f"{where}: unknown intents {sorted(unknown)}")
        for intent in Intent:
            for number, group in enumerate(data["intents"].get(intent.value) or []):
                lexicon._add_group(intent, group, f"{where}: intents.{intent.value}[{number}]")
        lexicon.stem_lengths = tuple(sorted({len(stem) for stem in lexicon.by_stem}))
        return lexicon

    def _add_group(self, intent: Intent, group: Any, where: str) -> None:
        if not isinstance(group, dict) or not group.get("reply"):
            raise LexiconError(f"{where}: each group needs a `reply`")
        index = len(self.groups)
        self.groups.append((intent, str(group["reply"])))
        for text in _strings(group.get("words"), f"{where}.words"):
            pattern = self._pattern(index, text, f"{where}.words")
            first = pattern.tokens[0]
            if first.endswith("*"):
                self.by_stem.setdefault(first[:-1], []).append(pattern)
            else:
                self.by_first.setdefault(first, []).append(pattern)
        for key, target in (("whole", self.whole), ("whole_if_opted_out", self.whole_if_opted_out)):
            for text in _strings(group.get(key), f"{where}.{key}"):
                pattern = self._pattern(index, text, f"{where}.{key}")
                target.setdefault(pattern.tokens, pattern)
        for text in _strings(group.get("fuzzy"), f"{where}.fuzzy"):
            pattern = self._pattern(index, text, f"{where}.fuzzy")
            if len(pattern.tokens) != 1 or pattern.tokens[0].endswith("*"):
                raise LexiconError(f"{where}.fuzzy: {text!r} must be one whole word")
            for variant in {pattern.tokens[0], *_deletions(pattern.tokens[0])}:
                self.fuzzy.setdefault(variant, []).append(pattern)

    def _pattern(self, group: int, text: str, where: str) -> _Pattern:
        found = tuple(tokens(text.replace("*", f" {_STAR} "), self))
        # Put the prefix marker back on the word it followed.
        merged: list[str] = []
        for token in found:
            if token == _STAR and merged:
                merged[-1] += "*"
            else:
                merged.append(token)
        if not merged or _STAR in merged:
            raise LexiconError(f"{where}: {text!r} has no words")
        return _Pattern(group, tuple(merged), text)


_STAR = "qxstarxq"  # stands in for "*" while a pattern is normalised
_COMBINING = re.compile(r"[\u0300-\u036f]")
_APOSTROPHES = re.compile(r"['’‘`´]")
_NON_WORD = re.compile(r"[\W_]+")
_REPEATS = re.compile(r"([^\W\d_])\1+")


def _fold(text: str) -> str:
    return _COMBINING.sub("", unicodedata.normalize("NFKD", text.lower()))


def _squeeze_word(word: str) -> str:
    return _REPEATS.sub(r"\1", word)


def tokens(text: str, lexicon: Lexicon) -> list[str]:
    """Normalised words: emoji as words, lower case, no accents or punctuation, repeats
    collapsed, known misspellings corrected."""
    if text.isascii():
        text = text.lower()  # nothing to fold, and no emoji
    else:
        for symbol, word in lexicon.emoji.items():
            if symbol in text:
                text = text.replace(symbol, f" {word} ")
        text = _fold(text)
    text = _REPEATS.sub(r"\1", _APOSTROPHES.sub("", text))
    words = _NON_WORD.sub(" ", text).split()
    spellings = lexicon.spellings
    if spellings:
        fixed = []
        for word in words:
            replacement = spellings.get(word)
            if replacement is None:
                fixed.append(word)
            else:
                fixed.extend(replacement.split())
        return fixed
    return words


def classify(text: str, lexicon: Lexicon, *, opted_out: bool = False) -> Classification:
    """Every intent the text matches, highest first; `unrecognised` when none does."""
    words = tokens(text, lexicon)
    found: dict[int, list[str]] = {}  # group -> matched patterns, in order found

    def hit(pattern: _Pattern) -> None:
        seen = found.setdefault(pattern.group, [])
        if pattern.text not in seen:
            seen.append(pattern.text)

    # The words that count for a whole-message keyword: no filler, no repeats ("STOP STOP").
    core = tuple(
        w for i, w in enumerate(words) if w not in lexicon.filler and (i == 0 or w != words[i - 1])
    )
    if core:
        whole = lexicon.whole.get(core) or (
            lexicon.whole_if_opted_out.get(core) if opted_out else None
        )
        if whole is not None:
            hit(whole)
    count = len(words)
    starts = lexicon._starts
    for i, word in enumerate(words):
        candidates = starts.get(word)
        if candidates is None:
            candidates = _starting_at(word, lexicon)
        for pattern in candidates:
            if len(pattern.tokens) == 1 or _rest_matches(pattern.tokens, words, i, count):
                hit(pattern)
    matches = _matches(found, lexicon)
    intent = matches[0].intent if matches else Intent.UNRECOGNISED
    return Classification(intent, tuple(matches), lexicon.language)


def _starting_at(word: str, lexicon: Lexicon) -> tuple[_Pattern, ...]:
    """Patterns whose first word matches `word`: exactly, by prefix, or one letter off."""
    found: list[_Pattern] = list(lexicon.by_first.get(word, ()))
    for length in lexicon.stem_lengths:
        if length > len(word):
            break
        found.extend(lexicon.by_stem.get(word[:length], ()))
    if len(word) >= 5:
        for variant in (word, *_deletions(word)):
            for pattern in lexicon.fuzzy.get(variant, ()):
                if pattern not in found and _within_one(word, pattern.tokens[0]):
                    found.append(pattern)
    result = tuple(found)
    if len(lexicon._starts) > 100_000:  # bounded: free text has a long tail of words
        lexicon._starts.clear()
    lexicon._starts[word] = result
    return result


def _rest_matches(pattern: tuple[str, ...], words: list[str], start: int, count: int) -> bool:
    if start + len(pattern) > count:
        return False
    for offset, token in enumerate(pattern):
        word = words[start + offset]
        if token.endswith("*"):
            if not word.startswith(token[:-1]):
                return False
        elif word != token:
            return False
    return True


def _matches(found: Mapping[int, list[str]], lexicon: Lexicon) -> list[Match]:
    best: dict[Intent, Match] = {}
    for group in sorted(found):  # groups are numbered in the data file's order
        intent, reply = lexicon.groups[group]
        if intent in best:  # the first group of an intent decides its reply
            previous = best[intent]
            best[intent] = Match(intent, previous.reply, (*previous.words, *found[group]))
        else:
            best[intent] = Match(intent, reply, tuple(found[group]))
    return sorted(best.values(), key=lambda m: _RANK[m.intent])


def _deletions(word: str) -> Iterable[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _within_one(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance at most 1 (one letter wrong, missing, extra or swapped)."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diffs = [i for i in range(la) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    short, long_ = (a, b) if la < lb else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise LexiconError(f"{where}: expected a list of words or phrases")
    return list(value)


def load_lexicons(folder: Path) -> dict[str, Lexicon]:
    """Every language's word list in `folder` (templates/_keywords), keyed by language."""
    lexicons: dict[str, Lexicon] = {}
    for path in sorted(folder.glob("*.yaml")):
        lexicon = Lexicon.load(path)
        if lexicon.language != path.stem:
            raise LexiconError(f"{path}: says language {lexicon.language!r}, file is {path.stem}")
        lexicons[lexicon.language] = lexicon
    if "en" not in lexicons:
        raise LexiconError(f"{folder}: no English word list (en.yaml)")
    return lexicons
