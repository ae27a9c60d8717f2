"""Read a patient's reply: danger signs first, then loss, opt-out and the commands.

Pure: the word lists are data (templates/_keywords/<lang>.yaml, one file per language, each
checked on load) and `classify` does no I/O. Every shipped language is read on every message,
whatever language the patient enrolled with: the lists are merged into one `Reader`, so a
message costs one dictionary lookup per word however many languages there are.

How a message is read (docs/clinical-safety.md says why):
- normalised into words (emoji as words, accents and Arabic-script variants folded, repeated
  letters squeezed, text-speak and abbreviations spelt out) with sentence and clause marks;
- a word no list knows and that is not an English word is corrected to a listed word within an
  edit distance that grows with the word's length, or whose last letters were dropped;
- phrases are found anywhere (`words`, or the whole message for keywords such as STOP);
- a sign is also a body part (or the baby) and a change near each other in one sentence, in
  either order, with words between (`signs`): "face and hands have suddenly swollen up";
- a sign plainly negated ("no swelling") or gone ("the swelling went down") is set aside only
  where its group allows it and nothing in the sentence expresses doubt; what is set aside is
  still reported, and staff still see the text;
- a loss is a report (first person, now) or a mention (the past, a fear, a question, someone
  else, or negated), from the markers;
- a text that nothing reads and that is not English is `unreadable`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml


class Intent(StrEnum):
    """In priority order, highest first."""

    EMERGENCY = "emergency"
    MATERNITY = "maternity"
    PRE_ECLAMPSIA = "pre_eclampsia"
    LEG = "leg"
    LOSS = "loss"  # the patient reports her own loss, now
    LOSS_MENTION = "loss_mention"  # loss in the past, feared, asked about, or someone else's
    OPT_OUT = "opt_out"
    RESUBSCRIBE = "resubscribe"
    HELP = "help"
    BOOK = "book"
    CRAMP = "cramp"
    BORN = "born"
    UNREADABLE = "unreadable"  # not English, and no word list reads it
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
    Intent.PRE_ECLAMPSIA: Tier.AMBER,
    Intent.LEG: Tier.AMBER,
    Intent.LOSS: Tier.AMBER,
    Intent.LOSS_MENTION: Tier.ROUTINE,
    Intent.OPT_OUT: Tier.ADMIN,
    Intent.RESUBSCRIBE: Tier.ADMIN,
    Intent.HELP: Tier.ADMIN,
    Intent.BOOK: Tier.ADMIN,
    Intent.CRAMP: Tier.ROUTINE,
    Intent.BORN: Tier.ROUTINE,
    Intent.UNREADABLE: Tier.NONE,
    Intent.UNRECOGNISED: Tier.NONE,
}
#: Danger signs: a safety answer at once, whatever else the message holds.
SAFETY_INTENTS = frozenset({Intent.EMERGENCY, Intent.MATERNITY, Intent.PRE_ECLAMPSIA, Intent.LEG})
#: Intents a word list may name; the others are decided from what was found.
LISTED_INTENTS = tuple(
    i for i in Intent if i not in (Intent.LOSS_MENTION, Intent.UNREADABLE, Intent.UNRECOGNISED)
)
_RANK = {intent: rank for rank, intent in enumerate(Intent)}
MARKERS = (
    "negation",  # "no", "not": sets aside the sign right after it
    "gap",  # words that may stand between a negation and its sign ("no real swelling")
    "keep_after",  # a negated sign followed by these is still a sign ("not breathing properly")
    "now_after",  # a negated sign followed by these has gone ("no swelling now")
    "resolved",  # after a sign: it has gone ("went down", "has gone")
    "resolved_gap",  # words that may stand between a sign and "gone"
    "doubt",  # in the sentence: nothing is set aside ("not sure", "think")
    "question_start",  # a sentence that starts so and ends in "?" asks a question
    "loss_past",
    "loss_fear",
    "loss_question",
    "loss_others",
)
ORDERS = ("any", "change_first", "part_first")
REVIEW_PENDING = "pending clinical and native-speaker review"


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
    language: str  # the word list that read the top intent ("und": none could)
    set_aside: tuple[Match, ...] = ()  # danger signs negated or gone: not answered, shown

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
        return Classification(matches[0].intent, matches, self.language, self.set_aside)

    def match(self, intent: Intent) -> Match | None:
        return next((m for m in self.matches if m.intent is intent), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent.value,
            "tier": self.tier.value,
            "language": self.language,
            "matches": [_match_dict(m) for m in self.matches],
            "set_aside": [_match_dict(m) for m in self.set_aside],
        }


def _match_dict(match: Match) -> dict[str, Any]:
    return {"intent": match.intent.value, "reply": match.reply, "words": list(match.words)}


# --- one language's file ----------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Words that mean one intent and get one reply."""

    intent: Intent
    reply: str
    words: tuple[str, ...] = ()
    whole: tuple[str, ...] = ()
    whole_if_opted_out: tuple[str, ...] = ()
    negatable: bool = False  # "no bleeding" sets the sign aside
    resolvable: bool = False  # "the swelling went down" sets it aside


@dataclass(frozen=True)
class Sign:
    """A part (or the baby) and a change near each other mean this intent."""

    intent: Intent
    reply: str
    parts: frozenset[str]
    changes: frozenset[str]
    window: int = 5  # at most this many words between them
    order: str = "any"
    alone: bool = False  # the change with no part near it is this sign too
    negatable: bool = False
    resolvable: bool = False


@dataclass
class Lexicon:
    """One language's word lists, as written in its data file."""

    language: str
    version: str
    review: str
    emoji: dict[str, str] = field(default_factory=dict)
    spellings: dict[str, str] = field(default_factory=dict)
    filler: tuple[str, ...] = ()
    known: tuple[str, ...] = ()  # words that count as English (text-speak)
    benign: tuple[str, ...] = ()
    markers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    concepts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)
    signs: list[Sign] = field(default_factory=list)

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
        review = str(data.get("review") or "")
        if language != "en" and review != REVIEW_PENDING and not review.startswith("reviewed"):
            raise LexiconError(
                f"{where}: `review` must say {REVIEW_PENDING!r} (or `reviewed ...` once it is)"
            )
        lexicon = cls(
            language=language,
            version=str((data.get("reviewed") or {}).get("version", "")),
            review=review,
            emoji={str(k): str(v) for k, v in (data.get("emoji") or {}).items()},
            spellings={str(k): str(v) for k, v in (data.get("spellings") or {}).items()},
            filler=tuple(_strings(data.get("filler"), f"{where}.filler")),
            known=tuple(_strings(data.get("known_words"), f"{where}.known_words")),
            benign=tuple(_strings(data.get("benign"), f"{where}.benign")),
        )
        markers = data.get("markers") or {}
        if not isinstance(markers, dict) or set(markers) - set(MARKERS):
            raise LexiconError(f"{where}.markers: expected some of {', '.join(MARKERS)}")
        lexicon.markers = {
            name: tuple(_strings(markers.get(name), f"{where}.markers.{name}")) for name in MARKERS
        }
        concepts = data.get("concepts") or {}
        if not isinstance(concepts, dict):
            raise LexiconError(f"{where}.concepts: expected a mapping of names to words")
        lexicon.concepts = {
            str(name): tuple(_strings(words, f"{where}.concepts.{name}"))
            for name, words in concepts.items()
        }
        unknown = set(data["intents"]) - {i.value for i in LISTED_INTENTS}
        if unknown:
            raise LexiconError(f"{where}: unknown intents {sorted(unknown)}")
        for intent in LISTED_INTENTS:
            for number, group in enumerate(data["intents"].get(intent.value) or []):
                lexicon.groups.append(
                    _group(intent, group, f"{where}: intents.{intent.value}[{number}]")
                )
        for number, sign in enumerate(data.get("signs") or []):
            lexicon.signs.append(_sign(sign, lexicon.concepts, f"{where}: signs[{number}]"))
        return lexicon


def _group(intent: Intent, group: Any, where: str) -> Group:
    if not isinstance(group, dict) or not group.get("reply"):
        raise LexiconError(f"{where}: each group needs a `reply`")
    return Group(
        intent,
        str(group["reply"]),
        words=tuple(_strings(group.get("words"), f"{where}.words")),
        whole=tuple(_strings(group.get("whole"), f"{where}.whole")),
        whole_if_opted_out=tuple(
            _strings(group.get("whole_if_opted_out"), f"{where}.whole_if_opted_out")
        ),
        negatable=bool(group.get("negatable", False)),
        resolvable=bool(group.get("resolvable", False)),
    )


def _sign(sign: Any, concepts: Mapping[str, Sequence[str]], where: str) -> Sign:
    if not isinstance(sign, dict) or not sign.get("reply") or not sign.get("intent"):
        raise LexiconError(f"{where}: each sign needs an `intent` and a `reply`")
    try:
        intent = Intent(sign["intent"])
    except ValueError:
        raise LexiconError(f"{where}: unknown intent {sign['intent']!r}") from None
    if intent not in LISTED_INTENTS:
        raise LexiconError(f"{where}: intent {intent.value!r} is decided, not listed")
    parts = frozenset(_strings(sign.get("parts"), f"{where}.parts"))
    changes = frozenset(_strings(sign.get("changes"), f"{where}.changes"))
    if not changes or not (parts or sign.get("alone")):
        raise LexiconError(f"{where}: a sign needs `changes` and `parts` (or `alone: true`)")
    # Concepts may live in another language's file: the reader checks names once all are in.
    order = str(sign.get("order", "any"))
    if order not in ORDERS:
        raise LexiconError(f"{where}.order: one of {', '.join(ORDERS)}")
    window = sign.get("window", 5)
    if not isinstance(window, int) or not 0 <= window <= 10:
        raise LexiconError(f"{where}.window: a whole number from 0 to 10")
    if TIERS[intent] is Tier.RED and (sign.get("negatable") or sign.get("resolvable")):
        raise LexiconError(f"{where}: a RED sign is never set aside (no negatable/resolvable)")
    return Sign(
        intent,
        str(sign["reply"]),
        parts,
        changes,
        window=window,
        order=order,
        alone=bool(sign.get("alone", False)),
        negatable=bool(sign.get("negatable", False)),
        resolvable=bool(sign.get("resolvable", False)),
    )


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list) and any(isinstance(v, bool) for v in value):
        raise LexiconError(f'{where}: YAML read a word as true/false: quote it ("no", "yes")')
    if not isinstance(value, list) or not all(
        isinstance(v, (str, int)) and str(v).strip() for v in value
    ):
        raise LexiconError(f"{where}: expected a list of words or phrases")
    return [str(v) for v in value]


# --- normalisation ----------------------------------------------------------------------------

_COMBINING = re.compile(r"[\u0300-\u036f\u064b-\u065f\u0670\u0640]")  # accents, harakat, tatweel
# Arabic-script letters typed several ways (Arabic and Urdu keyboards): one form each.
_LETTERS = str.maketrans({"ي": "ی", "ى": "ی", "ك": "ک", "ه": "ہ", "ة": "ہ", "ł": "l", "ß": "ss"})
_APOSTROPHES = re.compile(r"['’‘`´]")
_SLASHED = re.compile(r"\b([a-z])/([a-z])\b")  # "m/c" -> "mc"
_REPEATS = re.compile(r"([^\W\d_])\1+")
# Words, with the combining marks of Indic and Arabic scripts (which \w leaves out, cutting a
# word in two); sentence ends; commas (they end a clause, so the scope of "no").
_MARKS = "\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0900-\u0963\u0966-\u0dff"
_ITEM = re.compile(rf"(?:[^\W_]|[{_MARKS}])+|[.!?;\n\u061f\u06d4\u0964\u0965]+|[,\u060c]")
_ASCII_ITEM = re.compile(r"[a-z0-9]+|[.!?;\n]+|,")
_SENTENCE_END = frozenset(".!?;\n\u061f\u06d4\u0964\u0965")
_YEAR = re.compile(r"(?:19|20)\d\d")
_STAR = "qxstarxq"  # stands in for "*" while a pattern is normalised


def _fold(text: str) -> str:
    return _COMBINING.sub("", unicodedata.normalize("NFKD", text.lower())).translate(_LETTERS)


def _squeeze(word: str) -> str:
    return _REPEATS.sub(r"\1", word)


@dataclass(frozen=True)
class Words:
    """A message as normalised words, each with its sentence and clause number."""

    words: list[str]
    sentences: list[int]
    clauses: list[int]
    question: frozenset[int]  # sentences that end with "?"


def _split(text: str, emoji: Mapping[str, str]) -> tuple[list[str], list[int], list[int], set[int]]:
    if text.isascii():
        text = text.lower()  # nothing to fold, and no emoji
        items = _ASCII_ITEM.findall(_SLASHED.sub(r"\1\2", _APOSTROPHES.sub("", text)))
    else:
        for symbol, word in emoji.items():
            if symbol in text:
                text = text.replace(symbol, f" {word} ")
        text = _SLASHED.sub(r"\1\2", _APOSTROPHES.sub("", _fold(text)))
        items = _ITEM.findall(text)
    words: list[str] = []
    sentences: list[int] = []
    clauses: list[int] = []
    questions: set[int] = set()
    sentence = clause = 0
    for item in items:
        first = item[0]
        if first in _SENTENCE_END:
            if "?" in item or "\u061f" in item:
                questions.add(sentence)
            sentence += 1
            clause += 1
        elif first in ",\u060c":
            clause += 1
        else:
            words.append(item)
            sentences.append(sentence)
            clauses.append(clause)
    return words, sentences, clauses, questions


# --- the merged reader ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pattern:
    kind: str  # "group", "concept", "marker", "benign"
    key: Any  # group index, concept or marker name
    tokens: tuple[str, ...]  # normalised; a token ending in "*" matches any ending
    text: str  # as written
    language: str


@dataclass(frozen=True)
class _Hit:
    pattern: _Pattern
    start: int
    end: int


@dataclass(frozen=True)
class _SignHit:
    intent: Intent
    reply: str
    words: str
    start: int
    end: int
    anchor: int  # where the change (or the phrase) starts: negation is looked for before it
    anchor_end: int
    negatable: bool
    resolvable: bool
    language: str
    concept: bool  # found as part and change


@dataclass
class Reader:
    """Every language's word lists, merged: what `classify` reads a message with."""

    languages: tuple[str, ...]
    emoji: dict[str, str]
    spellings: dict[str, tuple[str, ...]]
    filler: frozenset[str]
    english: frozenset[str]
    groups: list[Group]
    group_languages: list[str]
    signs: list[tuple[Sign, str]]
    signs_by_change: dict[str, list[int]]
    sign_parts: frozenset[str]  # every concept that serves as a part
    reply_rank: dict[str, int]
    by_first: dict[str, list[_Pattern]] = field(default_factory=dict)
    by_stem: dict[str, list[_Pattern]] = field(default_factory=dict)
    stem_lengths: tuple[int, ...] = ()
    whole: dict[tuple[str, ...], list[_Pattern]] = field(default_factory=dict)
    whole_if_opted_out: dict[tuple[str, ...], list[_Pattern]] = field(default_factory=dict)
    vocabulary: frozenset[str] = frozenset()
    deletions: dict[str, set[str]] = field(default_factory=dict)
    truncations: dict[str, str] = field(default_factory=dict)
    markers: dict[str, frozenset[str]] = field(default_factory=dict)
    #: memos: a written word's listed words, a word's corrected form, and the patterns that
    #: can start at a word
    _words: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _canon: dict[str, str] = field(default_factory=dict, repr=False)
    _starts: dict[str, tuple[_Pattern, ...]] = field(default_factory=dict, repr=False)

    @property
    def reply_keys(self) -> set[str]:
        return set(self.reply_rank)

    def tokens(self, text: str) -> list[str]:
        return self.read(text).words

    def read(self, text: str) -> Words:
        raw, sentences, clauses, questions = _split(text, self.emoji)
        words: list[str] = []
        kept_sentences: list[int] = []
        kept_clauses: list[int] = []
        memo = self._words
        for word, sentence, clause in zip(raw, sentences, clauses, strict=True):
            found = memo.get(word)
            if found is None:
                found = self._spelt(word)
                if len(memo) > 100_000:  # bounded: free text has a long tail of words
                    memo.clear()
                memo[word] = found
            for each in found:
                words.append(each)
                kept_sentences.append(sentence)
                kept_clauses.append(clause)
        return Words(words, kept_sentences, kept_clauses, frozenset(questions))

    def _spelt(self, word: str) -> tuple[str, ...]:
        """A written word as the listed words it stands for. Spellings are looked up before
        repeated letters are squeezed ("bby" is not "by"), then after."""
        replacement = self.spellings.get(word)
        if replacement is None:
            squeezed = _squeeze(word)
            replacement = self.spellings.get(squeezed) or (squeezed,)
        return tuple(self.canonical(each) for each in replacement)

    def canonical(self, word: str) -> str:
        """The listed word an unknown, misspelt word stands for; otherwise the word itself."""
        found = self._canon.get(word)
        if found is None:
            found = self._correct(word)
            if len(self._canon) > 100_000:  # bounded: free text has a long tail of words
                self._canon.clear()
            self._canon[word] = found
        return found

    def _correct(self, word: str) -> str:
        if word in self.vocabulary or word in self.english or len(word) < 4 or word.isdigit():
            return word
        if any(word[:length] in self.by_stem for length in self.stem_lengths):
            return word  # a listed stem's own word ("stillbirth" for "stillbirth*")
        truncated = self.truncations.get(word)
        if truncated is not None:
            return truncated
        if len(word) < 5:
            return word
        depth = 2 if len(word) >= 8 else 1
        best: tuple[int, str] | None = None
        for variant in _deletion_variants(word, depth):
            for candidate in self.deletions.get(variant, ()):
                limit = min(depth, 2 if len(candidate) >= 8 else 1)
                distance = _distance(word, candidate, limit)
                if distance <= limit and (best is None or (distance, candidate) < best):
                    best = (distance, candidate)
        return best[1] if best is not None else word

    def is_english(self, words: Sequence[str]) -> bool:
        """Whether most of the words are English (or the text has no words to judge)."""
        judged = [w for w in words if len(w) > 1 and not w.isdigit()]
        if not judged:
            return True
        known = sum(1 for w in judged if w in self.english)
        return known * 2 >= len(judged)


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


ENGLISH_WORDS = "english-words.txt"


def load_reader(folder: Path) -> Reader:
    """The reader for every word list in `folder`, with its English word list."""
    try:
        lines = (folder / ENGLISH_WORDS).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LexiconError(f"{folder / ENGLISH_WORDS}: cannot read ({exc})") from None
    english = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return build_reader(load_lexicons(folder), english)


def build_reader(lexicons: Mapping[str, Lexicon], english_words: Iterable[str]) -> Reader:
    ordered = [lexicons["en"], *(lexicons[k] for k in sorted(lexicons) if k != "en")]
    emoji: dict[str, str] = {}
    for lexicon in ordered:
        emoji.update(lexicon.emoji)
    spellings = _merged_spellings(ordered, emoji)
    groups = [g for lexicon in ordered for g in lexicon.groups]
    group_languages = [lexicon.language for lexicon in ordered for _ in lexicon.groups]
    signs = [(s, lexicon.language) for lexicon in ordered for s in lexicon.signs]
    concepts = {name for lexicon in ordered for name in lexicon.concepts}
    for sign, language in signs:
        missing = (sign.parts | sign.changes) - concepts
        if missing:
            raise LexiconError(f"{language}.yaml: signs name unknown concepts {sorted(missing)}")
    reply_rank = _reply_rank(groups, [s for s, _ in signs])
    signs_by_change: dict[str, list[int]] = {}
    for index, (sign, _) in enumerate(signs):
        for change in sign.changes:
            signs_by_change.setdefault(change, []).append(index)
    reader = Reader(
        languages=tuple(lexicon.language for lexicon in ordered),
        emoji=emoji,
        spellings=spellings,
        filler=frozenset(),
        english=frozenset(),
        groups=groups,
        group_languages=group_languages,
        signs=signs,
        signs_by_change=signs_by_change,
        sign_parts=frozenset(p for s, _ in signs for p in s.parts),
        reply_rank=reply_rank,
    )
    reader.filler = frozenset(w for x in ordered for f in x.filler for w in _plain(reader, f))
    known = {w for x in ordered for k in x.known for w in _plain(reader, k)}
    reader.english = frozenset({_squeeze(w) for w in english_words} | known | reader.filler)
    offset = 0
    for lexicon in ordered:
        _index(reader, lexicon, offset)
        offset += len(lexicon.groups)
    reader.stem_lengths = tuple(sorted({len(stem) for stem in reader.by_stem}))
    _index_corrections(reader)
    return reader


def _merged_spellings(
    ordered: Sequence[Lexicon], emoji: Mapping[str, str]
) -> dict[str, tuple[str, ...]]:
    """Every language's spellings (text-speak, misspellings) as one map; a word spelt out
    differently by two lists is refused, naming both."""
    spellings: dict[str, tuple[str, ...]] = {}
    where: dict[str, str] = {}
    for lexicon in ordered:
        for written, meant in lexicon.spellings.items():
            [key] = _split(written, emoji)[0] or [""]
            if not key:
                raise LexiconError(f"{lexicon.language}.yaml: spellings: {written!r} has no word")
            value = tuple(_squeeze(w) for w in _split(meant, emoji)[0])
            if key in spellings and spellings[key] != value:
                raise LexiconError(
                    f"{lexicon.language}.yaml: spellings: {written!r} is spelt out differently "
                    f"in {where[key]}.yaml"
                )
            spellings[key], where[key] = value, lexicon.language
    return spellings


def _reply_rank(groups: Sequence[Group], signs: Sequence[Sign]) -> dict[str, int]:
    """Most urgent first: by intent, then as the English list orders them."""
    rank: dict[str, int] = {}
    for intent in Intent:
        for reply in [g.reply for g in groups if g.intent is intent] + [
            s.reply for s in signs if s.intent is intent
        ]:
            rank.setdefault(reply, len(rank))
    return rank


def _plain(reader: Reader, text: str) -> list[str]:
    """Words of a pattern, spelt out but not corrected (the vocabulary is not ready yet)."""
    found: list[str] = []
    for word in _split(text.replace("*", f" {_STAR} "), reader.emoji)[0]:
        found.extend(reader.spellings.get(word) or (_squeeze(word),))
    return found


def _pattern(reader: Reader, kind: str, key: Any, text: str, language: str) -> _Pattern:
    merged: list[str] = []
    for token in _plain(reader, text):
        if token == _STAR and merged:
            merged[-1] += "*"  # the prefix marker goes back on the word it followed
        else:
            merged.append(token)
    if not merged or _STAR in merged:
        raise LexiconError(f"{language}.yaml: {text!r} has no words")
    return _Pattern(kind, key, tuple(merged), text, language)


def _index(reader: Reader, lexicon: Lexicon, offset: int) -> None:
    """The lexicon's patterns, by first word or stem; its groups start at `offset`."""
    language = lexicon.language
    entries: list[_Pattern] = []
    for number, group in enumerate(lexicon.groups):
        index = offset + number
        entries.extend(_pattern(reader, "group", index, w, language) for w in group.words)
        for key, target in (
            ("whole", reader.whole),
            ("whole_if_opted_out", reader.whole_if_opted_out),
        ):
            for text in getattr(group, key):
                pattern = _pattern(reader, "group", index, text, language)
                target.setdefault(pattern.tokens, []).append(pattern)
    for name, words in lexicon.concepts.items():
        entries.extend(_pattern(reader, "concept", name, w, language) for w in words)
    for name, words in lexicon.markers.items():
        entries.extend(_pattern(reader, "marker", name, w, language) for w in words)
    entries.extend(_pattern(reader, "benign", "benign", w, language) for w in lexicon.benign)
    for pattern in entries:
        first = pattern.tokens[0]
        if first.endswith("*"):
            reader.by_stem.setdefault(first[:-1], []).append(pattern)
        else:
            reader.by_first.setdefault(first, []).append(pattern)


def _index_corrections(reader: Reader) -> None:
    """Listed words that a misspelling may be corrected to: each word's deletion variants (one
    letter for words of 5 to 7 letters, two from 8), and its forms with the last one or two
    letters dropped ("bleedin", "movin")."""
    vocabulary: set[str] = set()
    patterns = [p for ps in reader.by_first.values() for p in ps] + [
        p for ps in reader.by_stem.values() for p in ps
    ]
    for ps in (*reader.whole.values(), *reader.whole_if_opted_out.values()):
        patterns.extend(ps)
    for pattern in patterns:
        vocabulary.update(t for t in pattern.tokens if not t.endswith("*"))
    reader.vocabulary = frozenset(vocabulary)
    for word in sorted(vocabulary):
        if len(word) < 5 or not word.isalpha():
            continue
        depth = 2 if len(word) >= 8 else 1
        for variant in _deletion_variants(word, depth):
            reader.deletions.setdefault(variant, set()).add(word)
        for cut in (1, 2):
            short = word[:-cut]
            if len(short) >= 4 and short not in vocabulary:
                reader.truncations.setdefault(short, word)
    reader.markers = {
        name: frozenset(
            " ".join(p.tokens) for p in patterns if p.kind == "marker" and p.key == name
        )
        for name in MARKERS
    }


def _deletion_variants(word: str, depth: int) -> set[str]:
    found = {word}
    frontier = {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        found |= frontier
    return found


def _distance(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance (a swap counts once), or limit + 1 when above it."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


# --- reading a message --------------------------------------------------------------------------


def tokens(text: str, reader: Reader) -> list[str]:
    """Normalised words: emoji as words, lower case, no accents or punctuation, repeats
    collapsed, text-speak spelt out, misspellings corrected."""
    return reader.tokens(text)


def classify(text: str, reader: Reader, *, opted_out: bool = False) -> Classification:
    """Every intent the text matches, highest first; `unrecognised` or `unreadable` when none
    does."""
    read = reader.read(text)
    words = read.words
    hits = _scan(words, reader)
    found = _Found()
    _whole(words, reader, opted_out, found)
    marks = _Marks.of(hits, read, reader)
    # Words of a benign phrase ("blood pressure", "of losing") are no sign by themselves; a
    # loss is always read (its markers decide report or mention).
    if marks.benign:
        hits = [h for h in hits if _always_read(h, reader) or not _masked(h, marks.benign)]
    _add_signs(found, _signs(hits, read, reader), marks)
    _add_groups(found, hits, reader, marks)
    matches = sorted(
        (Match(intent, reply, tuple(w)) for (intent, reply), w in found.matched.items()),
        key=lambda m: (_RANK[m.intent], reader.reply_rank.get(m.reply, 999)),
    )
    set_aside = tuple(Match(intent, reply, tuple(w)) for (intent, reply), w in found.aside.items())
    if matches:
        top = matches[0]
        language = found.languages[top.intent, top.reply]
        return Classification(top.intent, tuple(matches), language, set_aside)
    if _foreign_script(text) or not reader.is_english(words):
        return Classification(Intent.UNREADABLE, (), "und", set_aside)
    return Classification(Intent.UNRECOGNISED, (), "en", set_aside)


class _Found:
    """What one message matched (and set aside), by intent and reply, with the words."""

    __slots__ = ("aside", "languages", "matched")

    def __init__(self) -> None:
        self.matched: dict[tuple[Intent, str], list[str]] = {}
        self.aside: dict[tuple[Intent, str], list[str]] = {}
        self.languages: dict[tuple[Intent, str], str] = {}

    def add(
        self,
        target: dict[tuple[Intent, str], list[str]],
        key: tuple[Intent, str],
        word: str,
        language: str,
    ) -> None:
        seen = target.setdefault(key, [])
        if word not in seen:
            seen.append(word)
        self.languages.setdefault(key, language)


def _add_signs(found: _Found, signs: list[_SignHit], marks: _Marks) -> None:
    kept: list[_SignHit] = []
    dropped: list[_SignHit] = []
    for sign in signs:
        (dropped if marks.sets_aside(sign) else kept).append(sign)
    # A word of a sign that was set aside is not a sign on its own ("no pain in my chest").
    for sign in kept:
        if sign.concept or not any(
            d.concept and d.intent is sign.intent and d.start <= sign.start and sign.end <= d.end
            for d in dropped
        ):
            found.add(found.matched, (sign.intent, sign.reply), sign.words, sign.language)
    for sign in dropped:
        if (sign.intent, sign.reply) not in found.matched:
            found.add(found.aside, (sign.intent, sign.reply), sign.words, sign.language)


def _add_groups(found: _Found, hits: list[_Hit], reader: Reader, marks: _Marks) -> None:
    """Listed phrases (everything but the safety signs, read above with negation)."""
    for hit in hits:
        pattern = hit.pattern
        if pattern.kind != "group":
            continue
        group = reader.groups[pattern.key]
        if group.intent in SAFETY_INTENTS:
            continue
        intent = group.intent
        if intent is Intent.LOSS and not marks.loss_reported(hit):
            intent = Intent.LOSS_MENTION
        found.add(found.matched, (intent, group.reply), pattern.text, pattern.language)


def _masked(hit: _Hit, benign: Sequence[tuple[int, int]]) -> bool:
    """A hit that starts inside a benign phrase, unless it is that very phrase (the concept
    "blood pressure" stays, the word "blood" in it goes)."""
    return any(
        start <= hit.start < end and (hit.start, hit.end) != (start, end) for start, end in benign
    )


def _always_read(hit: _Hit, reader: Reader) -> bool:
    pattern = hit.pattern
    if pattern.kind == "marker":
        return True
    return pattern.kind == "group" and reader.groups[pattern.key].intent is Intent.LOSS


def _foreign_script(text: str) -> bool:
    """Letters of a script other than Latin (emoji are not letters)."""
    return not text.isascii() and any(c.isalpha() and ord(c) > 0x24F for c in text)


def _whole(words: list[str], reader: Reader, opted_out: bool, found: _Found) -> None:
    """Whole-message keywords: no filler words, no repeats ("STOP STOP")."""
    core = tuple(
        w for i, w in enumerate(words) if w not in reader.filler and (i == 0 or w != words[i - 1])
    )
    if not core:
        return
    patterns = reader.whole.get(core) or (
        reader.whole_if_opted_out.get(core) if opted_out else None
    )
    for pattern in patterns or ():
        group = reader.groups[pattern.key]
        found.add(found.matched, (group.intent, group.reply), pattern.text, pattern.language)


def _scan(words: list[str], reader: Reader) -> list[_Hit]:
    hits: list[_Hit] = []
    count = len(words)
    starts = reader._starts
    for i, word in enumerate(words):
        candidates = starts.get(word)
        if candidates is None:
            candidates = _starting_at(word, reader)
        for pattern in candidates:
            size = len(pattern.tokens)
            if size == 1 or _rest_matches(pattern.tokens, words, i, count):
                hits.append(_Hit(pattern, i, i + size))
    return hits


def _starting_at(word: str, reader: Reader) -> tuple[_Pattern, ...]:
    found: list[_Pattern] = list(reader.by_first.get(word, ()))
    for length in reader.stem_lengths:
        if length > len(word):
            break
        found.extend(reader.by_stem.get(word[:length], ()))
    result = tuple(found)
    if len(reader._starts) > 100_000:
        reader._starts.clear()
    reader._starts[word] = result
    return result


def _rest_matches(pattern: tuple[str, ...], words: list[str], start: int, count: int) -> bool:
    if start + len(pattern) > count:
        return False
    for offset in range(1, len(pattern)):
        token = pattern[offset]
        word = words[start + offset]
        if token.endswith("*"):
            if not word.startswith(token[:-1]):
                return False
        elif word != token:
            return False
    return True


def _signs(hits: list[_Hit], read: Words, reader: Reader) -> list[_SignHit]:
    """Danger signs: listed phrases, and parts with changes near them."""
    found: list[_SignHit] = []
    parts = [h for h in hits if h.pattern.kind == "concept" and h.pattern.key in reader.sign_parts]
    for hit in hits:
        pattern = hit.pattern
        if pattern.kind == "group":
            group = reader.groups[pattern.key]
            if group.intent in SAFETY_INTENTS:
                found.append(
                    _SignHit(
                        group.intent,
                        group.reply,
                        pattern.text,
                        hit.start,
                        hit.end,
                        hit.start,
                        hit.end,
                        group.negatable,
                        group.resolvable,
                        pattern.language,
                        concept=False,
                    )
                )
            continue
        if pattern.kind != "concept":
            continue
        rules = reader.signs_by_change.get(pattern.key)
        if not rules:
            continue
        sentence = read.sentences[hit.start]
        near = [p for p in parts if p is not hit and read.sentences[p.start] == sentence]
        attached = False
        for index in rules:
            sign, language = reader.signs[index]
            for part in near:
                if part.pattern.key not in sign.parts or not _close(sign, part, hit):
                    continue
                attached = True
                words = f"{part.pattern.text} + {pattern.text}"
                span = (min(part.start, hit.start), max(part.end, hit.end))
                found.append(_concept_hit(sign, language, words, span, hit))
        if not attached and not any(_close_any(p, hit) for p in near):
            for index in rules:
                sign, language = reader.signs[index]
                if sign.alone:
                    found.append(
                        _concept_hit(sign, language, pattern.text, (hit.start, hit.end), hit)
                    )
    return found


def _concept_hit(
    sign: Sign, language: str, words: str, span: tuple[int, int], change: _Hit
) -> _SignHit:
    return _SignHit(
        sign.intent,
        sign.reply,
        words,
        span[0],
        span[1],
        change.start,
        change.end,
        sign.negatable,
        sign.resolvable,
        language,
        concept=True,
    )


def _close(sign: Sign, part: _Hit, change: _Hit) -> bool:
    if part.start >= change.end:  # the part comes after the change
        return sign.order != "part_first" and part.start - change.end <= sign.window
    if change.start >= part.end:
        return sign.order != "change_first" and change.start - part.end <= sign.window
    return False  # overlapping: one phrase, not a part and a change


def _close_any(part: _Hit, change: _Hit) -> bool:
    """A part this near a change is what the change is about, even if no sign pairs them."""
    if part.start >= change.end:
        return part.start - change.end <= 3
    return change.start >= part.end and change.start - part.end <= 3


@dataclass(frozen=True)
class _Marks:
    """Where the markers are in one message, and what they mean for a sign or a loss."""

    words: list[str]
    read: Words
    at: dict[str, frozenset[int]]  # marker -> start positions
    ends: dict[str, frozenset[int]]  # marker -> end positions
    #: Where each negation ends, and the languages it is a negation in: "nu" is Romanian for
    #: "not" but "new" in an English text, so a negation counts only in its own language.
    negations: dict[int, frozenset[str]]
    benign: tuple[tuple[int, int], ...]  # spans of benign phrases
    doubtful: frozenset[int]  # sentences holding doubt
    gap: frozenset[str]
    resolved_gap: frozenset[str]
    keep_after: frozenset[str]
    now_after: frozenset[str]
    year: bool

    @classmethod
    def of(cls, hits: list[_Hit], read: Words, reader: Reader) -> _Marks:
        at: dict[str, set[int]] = {}
        ends: dict[str, set[int]] = {}
        negations: dict[int, set[str]] = {}
        benign: list[tuple[int, int]] = []
        for hit in hits:
            if hit.pattern.kind == "marker":
                at.setdefault(hit.pattern.key, set()).add(hit.start)
                ends.setdefault(hit.pattern.key, set()).add(hit.end)
                if hit.pattern.key == "negation":
                    negations.setdefault(hit.end, set()).add(hit.pattern.language)
            elif hit.pattern.kind == "benign":
                benign.append((hit.start, hit.end))
        doubtful = set(read.question) | {read.sentences[i] for i in at.get("doubt", ())}
        markers = reader.markers
        return cls(
            read.words,
            read,
            {k: frozenset(v) for k, v in at.items()},
            {k: frozenset(v) for k, v in ends.items()},
            {k: frozenset(v) for k, v in negations.items()},
            tuple(benign),
            frozenset(doubtful),
            markers["gap"],
            markers["resolved_gap"],
            markers["keep_after"],
            markers["now_after"],
            any(_YEAR.fullmatch(w) for w in read.words),
        )

    def _negated_before(self, start: int, language: str) -> bool:
        """A negation of this language ends just before `start` (only gap words between, in
        the same clause)."""
        clauses = self.read.clauses
        j = start
        while True:
            if language in self.negations.get(j, ()) and j > 0 and clauses[j - 1] == clauses[start]:
                return True
            if j == 0 or start - j >= 3 or clauses[j - 1] != clauses[start]:
                return False
            if self.words[j - 1] not in self.gap:
                return False
            j -= 1

    def _gone_after(self, end: int) -> bool:
        clauses = self.read.clauses
        starts = self.at.get("resolved", frozenset())
        count = len(self.words)
        j = end
        while j < count and clauses[j] == clauses[end - 1]:
            if j in starts:
                return True
            if j - end >= 3 or self.words[j] not in self.resolved_gap:
                return False
            j += 1
        return False

    def sets_aside(self, sign: _SignHit) -> bool:
        """Whether the sign is plainly negated or gone, where its group allows, without doubt.
        A RED sign is never set aside, whatever the word lists say: a negation word of another
        language can be an English word ("nu chest pain" is "new chest pain" in a hurried
        text), and an unneeded 999 line costs far less than a missed one."""
        if TIERS[sign.intent] is Tier.RED or not (sign.negatable or sign.resolvable):
            return False
        if self.read.sentences[sign.start] in self.doubtful:
            return False
        if self._negated_before(sign.anchor, sign.language) or self._negated_before(
            sign.start, sign.language
        ):
            following = self.words[sign.end] if sign.end < len(self.words) else ""
            if following in self.keep_after:
                return False  # "not breathing properly", "not bleeding much"
            if following in self.now_after:
                return sign.resolvable  # "no swelling now": it was there
            return sign.negatable
        if self._gone_after(sign.anchor_end) or self._gone_after(sign.end):
            return sign.resolvable
        return False

    def loss_reported(self, hit: _Hit) -> bool:
        """A loss told as the patient's own and now; anything else is a mention."""
        if self._negated_before(hit.start, hit.pattern.language) or self.year:
            return False
        for name in ("loss_past", "loss_fear", "loss_question", "loss_others", "doubt"):
            if self.at.get(name):
                return False
        sentence = self.read.sentences[hit.start]
        if sentence in self.read.question:
            first = self.read.sentences.index(sentence)
            if first in self.at.get("question_start", frozenset()):
                return False
        return True
