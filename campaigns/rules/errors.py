"""Errors a user can cause, each naming the field (and row, for imports) that is wrong.

`field` is a key (`edd`, `tz`); each surface names it in its own words: the web and the CSV
preview use campaigns.rules.wording.label ("Due date"), the CLI its flag. `message` is safe to
log (contact details masked); `plain` is the same message with what the person typed, shown
only back to them, on their own page.
"""

from __future__ import annotations


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
