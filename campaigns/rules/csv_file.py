"""Reading a CSV file of patients to enrol: its header (documented names and staff words),
UTF-8 with or without a byte-order mark, Excel's quoting, a comma or semicolon between values.

Pure. `read` turns the file into rows of form fields, each with the line it starts on; what
cannot be read at all (not UTF-8, a column we do not know, a missing column) is a FileError
listing every such problem. Each row is then checked like the enrol form
(campaigns.rules.intake), and `check_rows` lists every problem of every row, by line and field.
docs/staff-import.md describes the file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from campaigns.rules.errors import InputError
from campaigns.rules.intake import EnrollmentRequest, IntakeRules, check_enrollment
from campaigns.rules.wording import label

#: Each column: the form field it fills, its documented header, and the other names accepted
#: (compared in lower case, with "_" and "-" read as spaces).
COLUMNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("name", "name", ("full name", "patient name", "patient")),
    ("phone", "phone", ("mobile", "mobile number", "phone number", "mobile phone", "telephone")),
    ("email", "email", ("email address", "e mail", "e mail address")),
    ("edd", "edd", ("due date", "estimated due date", "edd date")),
    (
        "edd_source",
        "edd_source",
        ("due date source", "where the due date comes from", "edd from", "source"),
    ),
    ("tz", "timezone", ("time zone", "tz")),
    ("language", "language", ("language code",)),
    ("channels", "channels", ("send tips by", "channel")),
    ("consent", "consents", ("consent",)),
    ("discreet", "discreet", ("discreet wording",)),
    ("clinic_ref", "clinic_ref", ("clinic reference", "clinic ref", "reference")),
    ("campaign", "campaign", ("programme", "program")),
)
HEADER = tuple(documented for _, documented, _ in COLUMNS)
REQUIRED = ("name", "edd", "edd_source", "consent")
_UK_DATE = re.compile(r"^(\d{1,2})[/.](\d{1,2})[/.](\d{4})$")
_LIST_SEPARATORS = re.compile(r"\s*(?:[;/|+&]|\band\b)\s*")


def _normal(header: str) -> str:
    return " ".join(header.strip().lower().replace("_", " ").replace("-", " ").split())


_BY_NAME: dict[str, str] = {
    _normal(name): field
    for field, documented, aliases in COLUMNS
    for name in (documented, label(field), *aliases)
}


class FileError(ValueError):
    """The file as a whole cannot be read; `problems` says every reason, in staff words."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Row:
    line: int  # the line of the file the row starts on (the header is line 1)
    fields: dict[str, str]  # form field -> value as typed
    extra: int = 0  # values beyond the header's columns (a problem)
    missing: int = 0  # columns the row stops short of (read as empty)


@dataclass(frozen=True)
class Problem:
    line: int
    field: str  # a field key (campaigns.rules.wording.label names it)
    message: str  # as shown to staff, with what the file says

    def __str__(self) -> str:
        return f"line {self.line}, {label(self.field)}: {self.message}"


@dataclass(frozen=True)
class Good:
    line: int
    request: EnrollmentRequest


@dataclass(frozen=True)
class Checked:
    good: list[Good]
    problems: list[Problem]
    bad_lines: int


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FileError(
            [
                "the file is not saved as UTF-8 text: in Excel choose Save As, "
                '"CSV UTF-8 (Comma delimited)"'
            ]
        ) from None


def read(text: str) -> tuple[list[str], Iterator[Row]]:
    """The columns (field keys) and the data rows; FileError if the header is not usable."""
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise FileError(["the file is empty"]) from None
    columns = _columns(header)
    return columns, _rows(reader, columns)


def _columns(header: list[str]) -> list[str]:
    problems: list[str] = []
    columns: list[str] = []
    seen: dict[str, str] = {}
    for number, name in enumerate(header, start=1):
        field = _BY_NAME.get(_normal(name))
        if not name.strip():
            field = f"_blank{number}"  # an empty header cell: its values must be empty too
        elif field is None:
            problems.append(
                f"column {number}, {name.strip()!r}, is not a column we read "
                f"(the columns are: {', '.join(HEADER)})"
            )
            field = f"_unknown{number}"
        elif field in seen:
            problems.append(
                f"columns {seen[field]!r} and {name.strip()!r} both give the {label(field)}"
            )
        else:
            seen[field] = name.strip()
        columns.append(field)
    missing = [f for f in REQUIRED if f not in seen]
    if "phone" not in seen and "email" not in seen:
        missing.append("phone")
    for field in missing:
        documented = next(d for f, d, _ in COLUMNS if f == field)
        problems.append(f"there is no {label(field)} column ({documented})")
    if problems:
        raise FileError(problems)
    return columns


def _rows(reader: Iterator[list[str]], columns: list[str]) -> Iterator[Row]:
    line = 1  # the header's last line
    assert isinstance(reader, type(csv.reader([])))
    for values in reader:
        start, line = line + 1, reader.line_num
        if not any(v.strip() for v in values):
            continue  # a blank line, or a row of empty cells Excel left behind
        fields: dict[str, str] = {}
        for field, value in zip(columns, values, strict=False):
            if not field.startswith("_"):
                fields[field] = value
        yield Row(
            start,
            fields,
            extra=sum(1 for v in values[len(columns) :] if v.strip())
            + sum(1 for f, v in zip(columns, values, strict=False) if f.startswith("_") and v),
            missing=max(0, len(columns) - len(values)),
        )


def as_form(fields: dict[str, str]) -> dict[str, str | None]:
    """A CSV row's values as the enrol form sends them: a UK date (14/05/2027) as ISO, lists
    with ";" or "and" as commas, "Yes"/"No" as they come."""
    form: dict[str, str | None] = dict(fields)
    found = _UK_DATE.match((fields.get("edd") or "").strip())
    if found:
        day_, month, year = found.groups()
        form["edd"] = f"{year}-{int(month):02d}-{int(day_):02d}"
    for key in ("channels", "consent"):
        if fields.get(key):
            form[key] = _LIST_SEPARATORS.sub(",", fields[key].strip())
    if fields.get("channels"):
        words = {"text": "sms", "texts": "sms", "text message": "sms", "e-mail": "email"}
        form["channels"] = ",".join(
            words.get(p.strip().lower(), p.strip()) for p in (form["channels"] or "").split(",")
        )
    return form


def check_rows(
    rows: Iterator[Row],
    rules: IntakeRules,
    now: datetime,
    *,
    progress: Callable[[int], None] | None = None,
    every: int = 1000,
) -> Checked:
    """Check every row like the enrol form; the same mobile number or clinic reference twice
    in the file is a problem on the later line. Lists every problem of every row."""
    good: list[Good] = []
    problems: list[Problem] = []
    bad_lines = 0
    phones: dict[str, int] = {}
    refs: dict[str, int] = {}
    count = 0
    for row in rows:
        count += 1
        found: list[Problem] = []
        if row.extra:
            found.append(Problem(row.line, "file", "has more values than the header has columns"))
        request, errors = check_enrollment(as_form(row.fields), rules, now)
        found.extend(_problems(row.line, errors))
        if request is not None:
            if request.phone is not None:
                first = phones.setdefault(request.phone, row.line)
                if first != row.line:
                    found.append(Problem(row.line, "phone", f"the same number is on line {first}"))
            if request.clinic_ref is not None:
                first = refs.setdefault(request.clinic_ref, row.line)
                if first != row.line:
                    found.append(
                        Problem(row.line, "clinic_ref", f"the same reference is on line {first}")
                    )
        if found or request is None:
            bad_lines += 1
            problems.extend(found)
        else:
            good.append(Good(row.line, request))
        if progress is not None and count % every == 0:
            progress(count)
    if progress is not None:
        progress(count)
    return Checked(good, problems, bad_lines)


def _problems(line: int, errors: list[InputError]) -> list[Problem]:
    return [Problem(line, e.field, e.plain) for e in errors]
