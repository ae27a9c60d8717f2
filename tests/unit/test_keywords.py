"""Classification of patients' replies: the regression corpus, properties that must hold for
any text (hypothesis), normalisation, and the word list's own checks."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.keywords import (
    SAFETY_INTENTS,
    TIERS,
    Intent,
    Lexicon,
    LexiconError,
    Tier,
    classify,
    load_lexicons,
    tokens,
)

ROOT = Path(__file__).resolve().parents[2]
LEXICON = load_lexicons(ROOT / "templates" / "_keywords")["en"]
CORPUS = ROOT / "tests" / "data" / "reply_corpus.tsv"


def corpus() -> list[tuple[str, str, str, str]]:
    cases = []
    with CORPUS.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if not row or row[0].startswith("#") or row[0] == "text":
                continue
            text, intent, tier, *rest = row
            cases.append((text, intent, tier, rest[0] if rest else ""))
    return cases


CASES = corpus()


def test_the_corpus_is_big_and_covers_every_intent() -> None:
    assert len(CASES) >= 300
    assert {intent for _, intent, _, _ in CASES} == {i.value for i in Intent}
    for text, intent, tier, _ in CASES:
        assert TIERS[Intent(intent)].value == tier, f"{text!r}: tier label disagrees with intent"


@pytest.mark.parametrize(
    ("text", "intent", "tier", "context"), CASES, ids=[c[0][:40] for c in CASES]
)
def test_corpus(text: str, intent: str, tier: str, context: str) -> None:
    found = classify(text, LEXICON, opted_out=context == "opted_out")
    assert (found.intent.value, found.tier.value) == (intent, tier), found.as_dict()


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("no swelling just cramp", Intent.LEG),  # no negation handling, on purpose
        ("STOP!!", Intent.OPT_OUT),
        ("stop sending me these", Intent.OPT_OUT),
        ("my cramps wont stop", Intent.CRAMP),  # "stop" inside a sentence is not an opt-out
        ("Book pls", Intent.BOOK),
        ("my calf is red n hot", Intent.LEG),
        ("I'm bleeding and want to book", Intent.MATERNITY),
        ("YES", Intent.UNRECOGNISED),  # YES re-subscribes only after an opt-out
        ("🩸", Intent.MATERNITY),
        ("BrEaThInG is hard", Intent.EMERGENCY),
        ("bleeeeeding", Intent.MATERNITY),
        ("breathng", Intent.EMERGENCY),  # one letter missing
        ("", Intent.UNRECOGNISED),
    ],
)
def test_examples_from_the_issue(text: str, intent: Intent) -> None:
    assert classify(text, LEXICON).intent is intent


def test_yes_resubscribes_only_after_an_opt_out() -> None:
    assert classify("yes", LEXICON, opted_out=True).intent is Intent.RESUBSCRIBE
    assert classify("yes", LEXICON, opted_out=False).intent is Intent.UNRECOGNISED


def test_every_intent_that_matched_is_reported_highest_first() -> None:
    found = classify("stop texting me. my leg is swollen and I have a headache", LEXICON)
    assert [m.intent for m in found.matches] == [Intent.LEG, Intent.PRE_ECLAMPSIA, Intent.OPT_OUT]
    assert "swollen" in found.words and "headache*" in found.words


def test_normalisation() -> None:
    assert tokens("Can’t BREATHE!!! 😵", LEXICON) == ["can", "not", "breathe", "faint"]
    assert tokens("baby isnt moving", LEXICON) == tokens("baby is not moving", LEXICON)
    assert tokens("Crème brûlée", LEXICON) == ["creme", "brule"]  # repeats collapse too
    assert tokens("hedache", LEXICON) == ["headache"]
    assert tokens("stoppp", LEXICON) == ["stop"]


RED_WORDS = [
    "chest pain",
    "cant breathe",
    "coughing blood",
    "collapsed",
    "baby not moving",
    "bleeding",
    "waters broke",
    "contractions",
    "unconscious",
]
ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)


@settings(max_examples=400, deadline=None)
@given(ANY_TEXT, st.booleans())
def test_classification_never_fails(text: str, opted_out: bool) -> None:
    found = classify(text, LEXICON, opted_out=opted_out)
    assert found.intent in Intent
    assert found.tier is TIERS[found.intent]


@settings(max_examples=400, deadline=None)
@given(ANY_TEXT, st.sampled_from(RED_WORDS), ANY_TEXT)
def test_a_red_word_makes_any_text_red(before: str, word: str, after: str) -> None:
    found = classify(f"{before} {word} {after}", LEXICON)
    assert found.tier is Tier.RED, found.as_dict()


@settings(max_examples=300, deadline=None)
@given(
    ANY_TEXT,
    st.sampled_from(["book", "BOOK pls", "appointment", "appt"]),
    st.sampled_from(["my leg is swollen", "headache", "bleeding", "chest pain", "calf is hot"]),
)
def test_book_never_outranks_a_safety_tier(noise: str, book: str, danger: str) -> None:
    for text in (f"{book} {noise} {danger}", f"{danger} {noise} {book}"):
        found = classify(text, LEXICON)
        assert found.intent in SAFETY_INTENTS, found.as_dict()
        assert found.intent is not Intent.BOOK


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"language": "en"}, "expected a mapping with `intents`"),
        ({"intents": {}}, "`language` is missing"),
        ({"language": "en", "intents": {"gossip": []}}, "unknown intents ['gossip']"),
        ({"language": "en", "intents": {"help": [{"words": ["help"]}]}}, "intents.help[0]"),
        (
            {"language": "en", "intents": {"help": [{"reply": "help", "fuzzy": ["two words"]}]}},
            "must be one whole word",
        ),
        ({"language": "en", "intents": {"help": [{"reply": "help", "words": [""]}]}}, "words"),
    ],
)
def test_a_bad_word_list_is_refused_naming_the_entry(data: object, problem: str) -> None:
    with pytest.raises(LexiconError, match="test.yaml") as caught:
        Lexicon.from_data(data, "test.yaml")
    assert problem in str(caught.value)


def test_a_word_list_for_another_language_has_the_same_shape(tmp_path: Path) -> None:
    (tmp_path / "en.yaml").write_text((ROOT / "templates/_keywords/en.yaml").read_text("utf-8"))
    (tmp_path / "pl.yaml").write_text(
        "language: pl\nintents:\n  opt_out:\n    - reply: opt_out\n      whole: [stop, koniec]\n"
        "  maternity:\n    - reply: maternity_bleeding\n      words: [krwawienie]\n",
        encoding="utf-8",
    )
    lexicons = load_lexicons(tmp_path)
    assert classify("Krwawienie!", lexicons["pl"]).intent is Intent.MATERNITY
    assert classify("KONIEC", lexicons["pl"]).intent is Intent.OPT_OUT
    (tmp_path / "de.yaml").write_text("language: fr\nintents: {}\n", encoding="utf-8")
    with pytest.raises(LexiconError, match="says language 'fr'"):
        load_lexicons(tmp_path)
