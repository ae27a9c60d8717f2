"""Group commit: many threads each need a short database step; one transaction serves all
that are waiting at that moment.

A thread calls `submit(item)`. If no flush is running it becomes the leader: it takes every
item waiting (its own included), runs `flush` on them once, and hands each caller its result.
Threads that arrive meanwhile wait; when the flush ends one of them leads the next. With 200
provider calls about to start together this is a handful of transactions, not 200; with calls
paced by a rate limit it is one small transaction per call, as soon as it is needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("error", "finished", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.finished = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommitter(Generic[T, R]):
    def __init__(self, flush: Callable[[Sequence[T]], Sequence[R]]) -> None:
        self._flush = flush
        self._cond = threading.Condition()
        self._waiting: list[_Slot[T, R]] = []
        self._busy = False

    def submit(self, item: T) -> R:
        """This item's result from the flush that took it; raises what that flush raised."""
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._waiting.append(slot)
            while self._busy and not slot.finished:
                self._cond.wait()
            if not slot.finished:
                self._busy = True
                group, self._waiting = self._waiting, []
        if not slot.finished:
            self._run(group)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _run(self, group: list[_Slot[T, R]]) -> None:
        results: Sequence[R] = ()
        error: BaseException | None = None
        try:
            results = self._flush([slot.item for slot in group])
            if len(results) != len(group):
                raise RuntimeError(f"flush returned {len(results)} results for {len(group)}")
        except BaseException as exc:  # every caller of this group gets the failure
            error = exc
        with self._cond:
            for index, slot in enumerate(group):
                if error is None:
                    slot.result = results[index]
                else:
                    slot.error = error
                slot.finished = True
            self._busy = False
            self._cond.notify_all()
