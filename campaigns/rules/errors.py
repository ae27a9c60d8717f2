"""Errors a user can cause, each naming the field (and row, for imports) that is wrong."""

from __future__ import annotations


class InputError(ValueError):
    def __init__(self, field: str, message: str, *, row: int | None = None) -> None:
        self.field = field
        self.message = message
        self.row = row
        where = f"row {row}: " if row is not None else ""
        super().__init__(f"{where}{field}: {message}")


class NotFoundError(LookupError):
    """A patient, enrollment or message that does not exist."""


class StateError(ValueError):
    """An action that the record's current state does not allow (e.g. resuming after a loss)."""
