"""Group commit: every caller gets its own result, from one flush shared with whoever waited."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from campaigns.grouping import GroupCommitter


def test_one_caller_alone_is_one_flush_of_one() -> None:
    flushes: list[list[int]] = []

    def flush(items: Sequence[int]) -> list[int]:
        flushes.append(list(items))
        return [i * 10 for i in items]

    committer = GroupCommitter(flush)
    assert committer.submit(3) == 30
    assert committer.submit(4) == 40
    assert flushes == [[3], [4]]


def test_callers_waiting_during_a_flush_share_the_next_one_and_each_get_their_own_result() -> None:
    first_inside = threading.Event()
    release = threading.Event()
    flushes: list[list[int]] = []

    def flush(items: Sequence[int]) -> list[int]:
        flushes.append(list(items))
        if items == [0]:
            first_inside.set()
            assert release.wait(10)
        return [i * 10 for i in items]

    committer = GroupCommitter(flush)
    results: dict[int, int] = {}

    def call(i: int) -> None:
        results[i] = committer.submit(i)

    leader = threading.Thread(target=call, args=(0,))
    leader.start()
    assert first_inside.wait(10)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, 21)]
    for thread in others:
        thread.start()
    # All twenty are queued behind the running flush before it ends.
    while True:
        with committer._cond:  # the test looks inside: how many are waiting
            if len(committer._waiting) == 20:
                break
        time.sleep(0.001)
    release.set()
    for thread in [leader, *others]:
        thread.join(10)
    assert results == {i: i * 10 for i in range(21)}
    assert flushes[0] == [0]
    assert sorted(flushes[1]) == list(range(1, 21))  # one flush for everyone who waited
    assert len(flushes) == 2


def test_a_failed_flush_fails_every_caller_of_that_group_and_not_the_next() -> None:
    calls = 0

    def flush(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database gone")
        return list(items)

    committer = GroupCommitter(flush)
    with pytest.raises(ConnectionError):
        committer.submit(1)
    assert committer.submit(2) == 2


def test_a_flush_that_answers_the_wrong_number_of_results_is_an_error() -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1"):
        committer.submit(1)
