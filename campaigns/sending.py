"""Sending a claimed batch: short checks under the patients' locks, a go-ahead per call, and
the record of every outcome. No transaction is open while a provider is called or while a
call waits for its rate-limit slot.

    start     claimed -> sending for the batch (compare-and-set on the claim token), under the
              batch's own token and a lease its worker renews while it sends;
    prepare   lock the patients FOR SHARE, read what decides each send, settle what may not go
              (cancelled, expired, window closed), render the rest; commit;
    per call  wait for the rate-limit slot; then the go-ahead: lock FOR SHARE again, re-read,
              re-check, and commit `call_started_at` (with what will be sent) for the rows
              still owned and allowed; only then call the provider;
    record    what the provider answered, fenced by the batch token (group commits);
    finish    rows whose call never started go back to pending; the lease ends.

Every change that can stop a send (loss, pause, STOP, a new due date) takes FOR UPDATE on the
patient and cancels the rows whose call has not started, so it waits at most for a go-ahead
transaction (milliseconds), never for a provider. The guarantee: a cancellation that commits
before a message's go-ahead commits stops that message; one that commits after it finds the
message already with the provider and lists it as in flight. A worker that dies leaves rows
`sending` under a lease nobody renews: the reaper returns those never started to pending and
marks the started ones `unknown`, which campaigns.reconciling settles with the provider.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from campaigns import halts, reachability
from campaigns import send_rules as rules
from campaigns.clock import Clock
from campaigns.content import ContentRenderer, Recipient
from campaigns.delivery import DeliveryPolicy
from campaigns.grouping import GroupCommitter
from campaigns.links import LinkSigner
from campaigns.planner import Planner
from campaigns.providers.base import (
    EmailSender,
    OutgoingEmail,
    OutgoingSms,
    ProviderError,
    SendReceipt,
    SmsSender,
)
from campaigns.ratelimit import RateLimiter, Unlimited
from campaigns.send_rules import Facts, Followup, Outcome, Verdict
from campaigns.storage import outbox
from campaigns.storage.db import Database
from campaigns.storage.patients import lock_patient
from campaigns.vocabulary import Channel, ConsentSource
from campaigns.window import SendWindow

log = logging.getLogger(__name__)
RECORD_TRIES = 3

__all__ = ["Deliverer", "Outcome"]


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
        with self.lock:
            self.outcomes[verdict.outcome] += 1
            if verdict.followup is not None and facts is not None:
                self.followups.append((facts, verdict, detail))


class Deliverer:
    def __init__(
        self,
        db: Database,
        renderer: ContentRenderer,
        window: SendWindow,
        links: LinkSigner,
        sms: SmsSender,
        email: EmailSender,
        clock: Clock,
        policy: DeliveryPolicy,
        planner: Planner,
        limiters: Mapping[Channel, RateLimiter],
    ) -> None:
        self.db, self.renderer, self.window, self.links = db, renderer, window, links
        self.sms, self.email, self.clock, self.policy = sms, email, clock, policy
        self.planner = planner
        self.limiters = dict(limiters)  # Unlimited where no rate is set
        self.retry_policy = rules.RetryPolicy(
            policy.max_attempts,
            policy.retry_base_seconds,
            policy.retry_max_seconds,
            timedelta(seconds=policy.reconcile_after_seconds),
        )
        # A go-ahead older than this is not used: the lease may have lapsed meanwhile (a
        # frozen process), and another worker may be sending the message again.
        self.go_ahead_valid = policy.send_lease_seconds / 2
        self._pool = ThreadPoolExecutor(policy.send_concurrency, thread_name_prefix="send")
        self._leases = LeaseKeeper(db, clock, policy.send_lease_seconds / 3)
        self._active: dict[str, Batch] = {}
        self._active_lock = threading.Lock()

    def close(self) -> None:
        with self._active_lock:
            for batch in self._active.values():
                batch.stopping.set()  # calls not yet started will not start
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._leases.close()

    def send_one(self, message_id: int, claim_token: str) -> Outcome:
        [(outcome, _)] = self.send_batch([message_id], claim_token).most_common(1)
        return outcome

    def send_batch(self, message_ids: Sequence[int], claim_token: str) -> Counter[Outcome]:
        ids = list(dict.fromkeys(int(i) for i in message_ids))
        batch = Batch(str(uuid.uuid4()))
        try:
            with self.db.session() as session:
                taken = outbox.start_batch(
                    session.connection(), ids, claim_token, batch.token, _worker(), self.clock.now()
                )
        except Exception:
            # Still claimed (or, if the commit did happen, sending under a lease nobody
            # renews): either way the reaper hands the rows back within a minute.
            log.exception("a batch of %d messages could not be started", len(ids))
            return Counter({Outcome.NOT_CLAIMED: len(ids)})
        outcomes: Counter[Outcome] = Counter()
        if len(taken) < len(ids):
            outcomes[Outcome.NOT_CLAIMED] = len(ids) - len(taken)
        if not taken:
            self._finish(batch, [], [])
            return outcomes
        self._leases.hold(batch.token)
        with self._active_lock:
            self._active[batch.token] = batch
        rest: list[tuple[Job, Verdict]] = []
        try:
            rest = self._run(batch, taken)
        except Exception:
            log.exception("a batch of %d messages failed; unsent ones go back", len(taken))
        finally:
            with self._active_lock:
                self._active.pop(batch.token, None)
            self._leases.drop(batch.token)
            self._finish(batch, list(taken), rest)
        self._follow_up(batch)
        outcomes.update(batch.outcomes)
        return outcomes

    def _run(self, batch: Batch, taken: Mapping[int, int]) -> list[tuple[Job, Verdict]]:
        """Prepare, then every call; returns the outcomes not yet written."""
        jobs, granted = self._prepare(batch, taken)
        if not jobs:
            return []
        batch.gate = GroupCommitter(lambda group: self._go_ahead(batch, group))
        # Without a rate limit a batch is over in moments: one write at its end. Paced by a
        # rate limit it lasts longer: a write every second, so a crash loses little.
        unpaced = all(isinstance(self.limiters[j.facts.channel], Unlimited) for j in jobs)
        batch.recorder = Recorder(
            lambda items: self._record(batch, items), every=len(jobs) if unpaced else 100
        )
        futures: list[Future[None]] = [
            self._pool.submit(self._send_one, batch, job, granted.get(job.id)) for job in jobs
        ]
        try:
            for future in futures:
                if not future.cancelled():
                    future.result()  # _send_one never raises
        finally:
            rest = batch.recorder.close()
        return rest

    def _prepare(
        self, batch: Batch, taken: Mapping[int, int]
    ) -> tuple[list[Job], dict[int, float]]:
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
                        jobs.append(self._render(facts))
                        continue
                    except Exception:
                        log.exception("message %d could not be rendered", facts.id)
                        verdict = rules.render_failed(facts)
                settled.append((facts, verdict))
            outbox.settle_unstarted(connection, batch.token, [(f.id, v) for f, v in settled], now)
            at_once = [
                job for job in jobs if isinstance(self.limiters[job.facts.channel], Unlimited)
            ][: self.policy.send_concurrency]
            allowed = outbox.allow_calls(connection, batch.token, [j.content for j in at_once], now)
        committed = time.monotonic()
        batch.finished(f.id for f, _ in settled)
        for facts, verdict in settled:
            batch.note(verdict, facts)
        return jobs, dict.fromkeys(allowed, committed)

    def _render(self, facts: Facts) -> Job:
        recipient = Recipient(facts.name.split()[0], facts.language, facts.discreet)
        if facts.channel is Channel.SMS:
            assert facts.phone is not None
            sms = self.renderer.render_sms(facts.campaign, facts.step_key, recipient)
            return Job(
                facts,
                OutgoingSms(facts.id, facts.phone, sms.body, facts.expires_at),
                outbox.Content(facts.id, sms.body, None, sms.template_ref),
            )
        assert facts.email is not None
        unsubscribe = self.links.unsubscribe_url(facts.patient_id, facts.id)
        email = self.renderer.render_email(facts.campaign, facts.step_key, recipient, unsubscribe)
        return Job(
            facts,
            OutgoingEmail(
                facts.id,
                facts.email,
                email.subject,
                email.html,
                email.text,
                f"{facts.campaign}:{facts.step_key}",
                unsubscribe,
            ),
            outbox.Content(facts.id, email.text, email.subject, email.template_ref),
        )

    def _send_one(self, batch: Batch, job: Job, allowed_at: float | None) -> None:
        """One message, in a pool thread: its slot, its go-ahead, its call, its record.
        Whatever fails here fails for this message only."""
        assert batch.gate is not None
        assert batch.recorder is not None
        if allowed_at is None:
            try:
                if batch.stopping.is_set():
                    return
                # The slot first: providers count requests as they arrive, and the go-ahead
                # must be the last thing before the call, however long the slot took.
                self.limiters[job.facts.channel].acquire()
                if batch.stopping.is_set():
                    return
                allowed_at = batch.gate.submit(job)
            except Exception:
                log.exception("message %d got no go-ahead; it goes back to pending", job.id)
                return
            if allowed_at is None:
                return  # cancelled, reaped or not allowed any more: settled by the go-ahead
        sender = self.sms if job.facts.channel is Channel.SMS else self.email
        detail = ""
        if time.monotonic() - allowed_at > self.go_ahead_valid:
            verdict = rules.release(job.facts, self.clock.now(), "go_ahead_expired")
        else:
            try:
                verdict = rules.delivered(job.facts, self._call(job), self.clock.now())
            except ProviderError as error:
                detail = error.detail
                verdict = rules.after_error(
                    job.facts, sender.name, error, self.clock.now(), self.window, self.retry_policy
                )
            except Exception:
                log.exception("message %d: unexpected error from %s", job.id, sender.name)
                verdict = rules.unexpected(
                    job.facts, sender.name, self.clock.now(), self.retry_policy
                )
        _log_outcome(job, verdict)
        batch.recorder.add((job, verdict))
        batch.note(verdict, job.facts, detail)

    def _call(self, job: Job) -> SendReceipt:
        if isinstance(job.outgoing, OutgoingSms):
            return self.sms.send_sms(job.outgoing)
        return self.email.send_email(job.outgoing)

    def _go_ahead(self, batch: Batch, jobs: Sequence[Job]) -> list[float | None]:
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

    def _record(self, batch: Batch, items: Sequence[tuple[Job, Verdict]]) -> None:
        """Outcomes of calls that happened, while the batch goes on."""
        self._write_end(batch, items, [], end=False)
        batch.finished(job.id for job, _ in items)

    def _finish(
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
            log.exception("the end of a batch was not recorded; its lease lapses")
            return
        if released:
            log.warning("%d messages of a batch did not start and went back to pending", released)
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
                log.warning("recording %d outcomes failed (try %d); again", len(items), attempt)
                time.sleep(0.2 * 3**attempt)
        raise AssertionError("unreachable")

    def _follow_up(self, batch: Batch) -> None:
        """What providers' answers asked for beyond the rows, each in its own transaction."""
        for facts, verdict, detail in batch.followups:
            try:
                self._apply(facts, verdict, detail)
            except Exception:
                log.exception("follow-up %s for message %d failed", verdict.followup, facts.id)

    def _apply(self, facts: Facts, verdict: Verdict, detail: str) -> None:
        provider = verdict.provider or "?"
        code = verdict.error_code or ""
        now = self.clock.now()
        if verdict.followup is Followup.HALT:
            halts.halt(self.db, facts.channel, provider, code, detail, now)
            return
        with self.db.session() as session:
            patient = lock_patient(session, facts.patient_id)
            if verdict.followup is Followup.OPT_OUT:
                reachability.opt_out(
                    session,
                    patient,
                    facts.channel,
                    now,
                    source=ConsentSource.PROVIDER,
                    reason=f"{provider}:{code}",
                    actor=f"provider:{provider}",
                )
            elif verdict.followup is Followup.INVALID_ADDRESS:
                reachability.mark_invalid(
                    session,
                    self.planner,
                    patient,
                    facts.channel,
                    now,
                    reason=f"{provider}:{code}",
                    actor=f"provider:{provider}",
                )


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
            log.exception("recording %d outcomes failed; the batch's end tries again", len(items))
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
                log.warning("could not renew %d batch leases; trying again", len(tokens))


def _worker() -> str:
    """Who holds a lease, for operators: host and process (after any fork)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def _log_outcome(job: Job, verdict: Verdict) -> None:
    if verdict.outcome is Outcome.SENT:
        log.info("message %d sent by %s as %s", job.id, verdict.provider, verdict.provider_id)
    else:
        log.warning(
            "message %d: %s (%s %s)", job.id, verdict.outcome, verdict.reason, verdict.error_code
        )
