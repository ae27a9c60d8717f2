"""A send batch's own records and its transactions with the database, apart from the calls:

    start     claimed -> sending for the batch, under its own token and a lease (sending.py);
    prepare   lock the patients FOR SHARE, read what decides each send, settle what may not go,
              render the rest; commit;
    go-ahead  per call, after its rate-limit slot: lock FOR SHARE again, re-read, re-check,
              and commit `call_started_at` for the rows still owned and allowed;
    record    what the provider answered, fenced by the batch token (group commits);
    finish    rows whose call never started go back to pending; the lease ends.

campaigns.sending runs the calls between these steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError

from campaigns import metrics
from campaigns.grouping import GroupCommitter
from campaigns.rules import send_rules as rules
from campaigns.rules.clock import Clock
from campaigns.rules.ports import OutgoingEmail, OutgoingSms
from campaigns.rules.send_rules import Facts, Outcome, Verdict
from campaigns.rules.vocabulary import Channel
from campaigns.rules.window import SendWindow
from campaigns.storage import outbox
from campaigns.storage.db import Database

log = logging.getLogger(__name__)
RECORD_TRIES = 3


@dataclass(frozen=True)
class Job:
    """One message of the batch that may go: its facts at preparation and what to send."""

    facts: Facts
    outgoing: OutgoingSms | OutgoingEmail
    content: outbox.Content

    @property
    def id(self) -> int:
        return self.facts.id


@dataclass
class Batch:
    token: str
    stopping: threading.Event = field(default_factory=threading.Event)
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    followups: list[tuple[Facts, Verdict, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: GroupCommitter[Job, float | None] | None = None
    recorder: Recorder | None = None
    #: Rows whose verdict is written (or taken back by someone else): nothing to release.
    done: set[int] = field(default_factory=set)

    def finished(self, ids: Iterable[int]) -> None:
        with self.lock:
            self.done.update(ids)

    def note(self, verdict: Verdict, facts: Facts | None = None, detail: str = "") -> None:
        metrics.send_outcome(
            facts.channel.value if facts is not None else "any",
            verdict.provider or "none",
            verdict.outcome.value,
        )
        with self.lock:
            self.outcomes[verdict.outcome] += 1
            if verdict.followup is not None and facts is not None:
                self.followups.append((facts, verdict, detail))


@dataclass
class BatchSteps:
    """The database steps of every batch of one Deliverer, each a short transaction."""

    db: Database
    clock: Clock
    window: SendWindow
    render: Callable[[Facts], Job]
    #: Whether a channel's calls start without waiting for a rate-limit slot.
    unlimited: Callable[[Channel], bool]
    concurrency: int

    def prepare(self, batch: Batch, taken: Mapping[int, int]) -> tuple[list[Job], dict[int, float]]:
        """Settle what may not go and render the rest, in one short transaction. Calls that
        can start at once (no rate limit to wait for, a free thread) get their go-ahead in the
        same transaction: nothing more could change before they start. Returns the jobs, and
        when the go-ahead of those that have one committed."""
        now = self.clock.now()
        jobs: list[Job] = []
        settled: list[tuple[Facts, Verdict]] = []
        with self.db.session() as session:
            connection = session.connection()
            outbox.lock_patients(connection, list(taken.values()))
            for facts in outbox.load_facts(connection, list(taken), batch.token):
                verdict = rules.check(facts, now, self.window)
                if verdict is None:
                    try:
                        jobs.append(self.render(facts))
                        continue
                    except Exception:
                        log.exception(
                            "message %d could not be rendered",
                            facts.id,
                            extra={"event": "batches.message_could_not_be"},
                        )
                        verdict = rules.render_failed(facts)
                settled.append((facts, verdict))
            outbox.settle_unstarted(connection, batch.token, [(f.id, v) for f, v in settled], now)
            at_once = [job for job in jobs if self.unlimited(job.facts.channel)][: self.concurrency]
            allowed = outbox.allow_calls(connection, batch.token, [j.content for j in at_once], now)
        committed = time.monotonic()
        batch.finished(f.id for f, _ in settled)
        for facts, verdict in settled:
            batch.note(verdict, facts)
        return jobs, dict.fromkeys(allowed, committed)

    def go_ahead(self, batch: Batch, jobs: Sequence[Job]) -> list[float | None]:
        """The last check before calls start, for every job waiting for one, in one short
        transaction; returns, per job, when its go-ahead committed (None: not allowed)."""
        now = self.clock.now()
        settled: list[tuple[Facts, Verdict]] = []
        with self.db.session() as session:
            connection = session.connection()
            outbox.lock_patients(connection, [job.facts.patient_id for job in jobs])
            fresh = {
                f.id: f
                for f in outbox.load_facts(connection, [job.id for job in jobs], batch.token)
            }
            go: list[outbox.Content] = []
            for job in jobs:
                facts = fresh.get(job.id)
                if facts is None:
                    continue  # taken back: a cancellation or the reaper has it now
                verdict = rules.check(facts, now, self.window)
                if verdict is None and facts.content_inputs() != job.facts.content_inputs():
                    verdict = rules.changed_since_rendered(facts, now)
                if verdict is None:
                    go.append(job.content)
                else:
                    settled.append((facts, verdict))
            outbox.settle_unstarted(connection, batch.token, [(f.id, v) for f, v in settled], now)
            allowed = outbox.allow_calls(connection, batch.token, go, now)
        committed = time.monotonic()
        batch.finished([f.id for f, _ in settled] + [j.id for j in jobs if j.id not in fresh])
        for facts, verdict in settled:
            batch.note(verdict, facts)
        taken_back = sum(1 for job in jobs if job.id not in fresh)
        if taken_back:
            with batch.lock:
                batch.outcomes[Outcome.NOT_CLAIMED] += taken_back
        return [committed if job.id in allowed else None for job in jobs]

    def record(self, batch: Batch, items: Sequence[tuple[Job, Verdict]]) -> None:
        """Outcomes of calls that happened, while the batch goes on."""
        self._write_end(batch, items, [], end=False)
        batch.finished(job.id for job, _ in items)

    def finish(
        self, batch: Batch, taken: Sequence[int], rest: Sequence[tuple[Job, Verdict]]
    ) -> None:
        """The batch's end, in one transaction: the outcomes not yet written, rows whose call
        never started back to pending, the lease ended. If even that fails, the lease lapses
        and the reaper and the reconciler take the batch back."""
        with batch.lock:
            recorded = batch.done | {job.id for job, _ in rest}
        unstarted = [i for i in taken if i not in recorded]
        try:
            released = self._write_end(batch, rest, unstarted, end=True)
        except Exception:
            log.exception(
                "the end of a batch was not recorded; its lease lapses",
                extra={"event": "batches.end_batch_not_recorded"},
            )
            return
        if released:
            log.warning(
                "%d messages of a batch did not start and went back to pending",
                released,
                extra={"event": "batches.messages_batch_did_not"},
            )
            with batch.lock:
                batch.outcomes[Outcome.RELEASED] += released

    def _write_end(
        self,
        batch: Batch,
        items: Sequence[tuple[Job, Verdict]],
        unstarted: Sequence[int],
        *,
        end: bool,
    ) -> int:
        """Retried, because the alternative is asking the provider later; idempotent (a
        second run finds nothing left to fence). Returns how many rows were released."""
        verdicts = [(job.id, verdict) for job, verdict in items]
        for attempt in range(1, RECORD_TRIES + 1):
            try:
                with self.db.session() as session:
                    connection, now = session.connection(), self.clock.now()
                    outbox.record_calls(connection, batch.token, verdicts, now)
                    released = outbox.release_unstarted(connection, unstarted, batch.token, now)
                    if end:
                        outbox.end_lease(connection, batch.token)
                return released
            except SQLAlchemyError:
                if attempt == RECORD_TRIES:
                    raise
                log.warning(
                    "recording %d outcomes failed (try %d); again",
                    len(items),
                    attempt,
                    extra={"event": "batches.recording_outcomes_failed_try"},
                )
                time.sleep(0.2 * 3**attempt)
        raise AssertionError("unreachable")


class Recorder:
    """Outcomes of a batch's calls, written in groups. A call hands its outcome over and goes
    on; whichever call finds `every` outcomes waiting, or the last write `after` seconds old,
    writes what is waiting (one statement), and the batch's end writes the rest. So the
    database is not in the way of the calls, and a worker that dies leaves at most a few
    seconds of outcomes to reconcile."""

    def __init__(
        self,
        write: Callable[[Sequence[tuple[Job, Verdict]]], None],
        *,
        every: int = 100,
        after: float = 1.0,
    ) -> None:
        self._write, self.every, self.after = write, every, after
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._waiting: list[tuple[Job, Verdict]] = []
        self._writing = self._closed = False
        self._last = time.monotonic()

    def add(self, item: tuple[Job, Verdict]) -> None:
        with self._lock:
            self._waiting.append(item)
            due = len(self._waiting) >= self.every or time.monotonic() - self._last >= self.after
            if not due or self._writing:
                return
            if self._closed:
                return  # the batch's end writes it
            self._writing, items, self._waiting = True, self._waiting, []
        self._write_now(items)

    def close(self) -> list[tuple[Job, Verdict]]:
        """What is still waiting, once any group being written now is written: the batch's
        end writes it, in its own last transaction."""
        with self._lock:
            while self._writing:
                self._idle.wait()
            self._closed = True
            items, self._waiting = self._waiting, []
        return items

    def _write_now(self, items: list[tuple[Job, Verdict]]) -> None:
        try:
            self._write(items)
        except Exception:
            log.exception(
                "recording %d outcomes failed; the batch's end tries again",
                len(items),
                extra={"event": "batches.recording_outcomes_failed_batch"},
            )
            with self._lock:
                self._waiting[:0] = items
        finally:
            with self._lock:
                self._writing, self._last = False, time.monotonic()
                self._idle.notify_all()


class LeaseKeeper:
    """Renews the leases of this process's batches while they send, from one thread."""

    def __init__(self, db: Database, clock: Clock, every: float) -> None:
        self.db, self.clock, self.every = db, clock, every
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
                self._thread.start()

    def drop(self, token: str) -> None:
        with self._lock:
            self._tokens.discard(token)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                tokens = sorted(self._tokens)
            if not tokens:
                continue
            try:
                with self.db.session() as session:
                    outbox.renew_leases(session.connection(), tokens, self.clock.now())
            except Exception:
                # Sends go on; if renewals keep failing the leases lapse and, once the
                # database is back, the reaper takes the batches (their go-aheads stop).
                log.warning(
                    "could not renew %d batch leases; trying again",
                    len(tokens),
                    extra={"event": "batches.could_not_renew_batch"},
                )
