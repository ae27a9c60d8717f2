"""The send path under faults, end to end: the real worker, beat and web processes (the
docker-compose.yml commands), PostgreSQL, a Redis of its own and both provider sandboxes.

Each fault hits a fresh cohort while it is being sent, with STOP and loss texts and a staff
pause meanwhile. Asserted from the sandboxes' own record of every request and the database's
record of every row: nothing lost (every due row sent exactly once, or cancelled because its
patient asked), nothing sent twice, nothing started after a cancellation committed, patients'
texts answered within a second (p99) while it all happens, and sending back within a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.stack import FAULTS, Result, Run, Shape, Stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

#: Small and quick: 240 messages a fault, short timeouts, rates that keep a batch in flight
#: long enough for the fault to land in the middle of it.
CI = Shape(
    latency=0.05,
    sms_rate=40,
    email_rate=40,
    batch=25,
    concurrency=25,
    worker_processes=2,
    web_processes=2,
)
PATIENTS = 120


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(Path(tmp_path_factory.mktemp("faults")), CI)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_nothing_lost_nothing_twice_nothing_after_a_cancel(
    stack: Stack, fault: str, results: list[Result]
) -> None:
    result = Run(stack, fault, PATIENTS).go(lambda: FAULTS[fault](stack))
    results.append(result)
    assert result.problems == [], "\n".join(result.problems[:20])
    assert result.lost == 0
    assert result.duplicates == 0
    assert result.sends_after_cancel == 0
    assert result.sent_once + result.cancelled == result.due
    assert result.texts >= 30
    assert result.text_p99_ms < 1000, f"texts p99 {result.text_p99_ms} ms during {fault}"
    assert result.recovered_s is None or result.recovered_s < 60
