"""Errors a user can cause, each naming the field (and row, for imports) that is wrong.

`field` is a key (`edd`, `tz`); each surface names it in its own words: the web and the CSV
preview use campaigns.rules.wording.label ("Due date"), the CLI its flag. `message` is safe to
log (contact details masked); `plain` is the same message with what the person typed, shown
only back to them, on their own page.
"""

from __future__ import annotations

from collections.abc import Sequence


class InputError(ValueError):
    def __init__(
        self, field: str, message: str, *, row: int | None = None, plain: str | None = None
    ) -> None:
        self.field = field
        self.message = message
        self.row = row
        self.plain = plain if plain is not None else message
        where = f"row {row}: " if row is not None else ""
        super().__init__(f"{where}{field}: {message}")


class NotFoundError(LookupError):
    """A patient, enrollment or message that does not exist."""


class StateError(ValueError):
    """An action that the record's current state does not allow (e.g. resuming after a loss)."""


class InputErrors(InputError):
    """Every problem found in one request, so a form can list them all at once. It is the
    first problem too (field, message, str), for callers that show one."""

    def __init__(self, problems: Sequence[InputError], *, row: int | None = None) -> None:
        if not problems:
            raise ValueError("InputErrors needs at least one problem")
        first = problems[0]
        super().__init__(first.field, first.message, row=row, plain=first.plain)
        self.problems = [InputError(p.field, p.message, row=row, plain=p.plain) for p in problems]


def by_field(error: InputError) -> dict[str, str]:
    """field -> message for each problem (the first problem of a field wins), in order: for
    the person's own form, so with what they typed (`plain`)."""
    found: dict[str, str] = {}
    for problem in error.problems if isinstance(error, InputErrors) else [error]:
        found.setdefault(problem.field, problem.plain)
    return found
