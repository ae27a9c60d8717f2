"""The reply corpora (tests/data/*.tsv) and their score by kind and by language.

    .venv/bin/python -m tests.corpus tests/data/reply_heldout.tsv   # the held-out score
    .venv/bin/python -m tests.corpus                                 # the tuning corpus

Columns: text, intent, tier, context ("opted_out": the patient had opted out), and for the
rows added with issue 10, kind (danger:<sign>, loss:report, loss:mention, lookalike, optout,
booking, ...) and language. A row passes when the top intent and its tier are as labelled.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from campaigns.rules.keywords import Reader, classify, load_reader

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TUNING = DATA / "reply_corpus.tsv"
HELD_OUT = DATA / "reply_heldout.tsv"


@dataclass(frozen=True)
class Case:
    text: str
    intent: str
    tier: str
    context: str
    kind: str
    language: str

    def passes(self, reader: Reader) -> bool:
        found = classify(self.text, reader, opted_out=self.context == "opted_out")
        return (found.intent.value, found.tier.value) == (self.intent, self.tier)


def cases(path: Path) -> list[Case]:
    found = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if not row or row[0].startswith("#") or row[0] == "text":
                continue
            text, intent, tier, *rest = row
            rest += [""] * (3 - len(rest))
            found.append(Case(text, intent, tier, rest[0], rest[1] or intent, rest[2] or "en"))
    return found


def score(path: Path, reader: Reader) -> str:
    """A table: passed/total overall, by kind and by language, then the failures."""
    rows = cases(path)
    results = [(case, case.passes(reader)) for case in rows]
    lines = [f"{path.name}: {sum(ok for _, ok in results)}/{len(results)} pass"]
    for label, key in (("kind", "kind"), ("language", "language")):
        totals: Counter[str] = Counter()
        passed: Counter[str] = Counter()
        for case, ok in results:
            totals[getattr(case, key)] += 1
            passed[getattr(case, key)] += ok
        lines.append(f"by {label}:")
        lines.extend(f"  {name:28} {passed[name]:3}/{totals[name]:<3}" for name in sorted(totals))
    failures = [case for case, ok in results if not ok]
    if failures:
        lines.append("failures:")
        for case in failures:
            found = classify(case.text, reader, opted_out=case.context == "opted_out")
            lines.append(f"  {case.text!r}: expected {case.intent}, read {found.intent.value}")
    return "\n".join(lines)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else TUNING
    print(score(target, load_reader(ROOT / "templates" / "_keywords")))
