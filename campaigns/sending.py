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
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from campaigns import followups, metrics
from campaigns.batches import Batch, BatchSteps, Job, LeaseKeeper, Recorder
from campaigns.delivery import DeliveryPolicy
from campaigns.grouping import GroupCommitter
from campaigns.planner import Planner
from campaigns.ratelimit import RateLimiter, Unlimited
from campaigns.rules import send_rules as rules
from campaigns.rules.clock import Clock
from campaigns.rules.content import ContentError, ContentRenderer, Recipient
from campaigns.rules.links import LinkSigner
from campaigns.rules.ports import (
    EmailSender,
    OutgoingEmail,
    OutgoingSms,
    ProviderError,
    SendReceipt,
    SmsSender,
)
from campaigns.rules.send_rules import Facts, Outcome, Verdict
from campaigns.rules.vocabulary import Channel, StepKind
from campaigns.rules.window import SendWindow
from campaigns.storage import outbox
from campaigns.storage.db import Database

log = logging.getLogger(__name__)
RECORD_TRIES = 3
#: The template_ref of a staff reply: no template, a person's words.
STAFF_REPLY_REF = "staff_reply"

__all__ = ["Deliverer", "Outcome"]


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
        self.steps = BatchSteps(
            db,
            clock,
            window,
            render=self.render,
            unlimited=lambda channel: isinstance(self.limiters[channel], Unlimited),
            concurrency=policy.send_concurrency,
        )
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
            log.exception(
                "a batch of %d messages could not be started",
                len(ids),
                extra={"event": "sending.batch_messages_could_not"},
            )
            return Counter({Outcome.NOT_CLAIMED: len(ids)})
        outcomes: Counter[Outcome] = Counter()
        if len(taken) < len(ids):
            outcomes[Outcome.NOT_CLAIMED] = len(ids) - len(taken)
        if not taken:
            self.steps.finish(batch, [], [])
            return outcomes
        self._leases.hold(batch.token)
        with self._active_lock:
            self._active[batch.token] = batch
        rest: list[tuple[Job, Verdict]] = []
        try:
            rest = self._run(batch, taken)
        except Exception:
            log.exception(
                "a batch of %d messages failed; unsent ones go back",
                len(taken),
                extra={"event": "sending.batch_messages_failed_unsent"},
            )
        finally:
            with self._active_lock:
                self._active.pop(batch.token, None)
            self._leases.drop(batch.token)
            self.steps.finish(batch, list(taken), rest)
        followups.apply_all(self.db, self.planner, batch.followups, self.clock.now())
        outcomes.update(batch.outcomes)
        for untried in (Outcome.NOT_CLAIMED, Outcome.RELEASED):
            if outcomes[untried]:  # never reached a provider: counted once here, not per row
                metrics.SENDS.labels("any", "none", untried.value).inc(outcomes[untried])
        return outcomes

    def _run(self, batch: Batch, taken: Mapping[int, int]) -> list[tuple[Job, Verdict]]:
        """Prepare, then every call; returns the outcomes not yet written."""
        jobs, granted = self.steps.prepare(batch, taken)
        if not jobs:
            return []
        batch.gate = GroupCommitter(lambda group: self.steps.go_ahead(batch, group))
        # Without a rate limit a batch is over in moments: one write at its end. Paced by a
        # rate limit it lasts longer: a write every second, so a crash loses little.
        unpaced = all(isinstance(self.limiters[j.facts.channel], Unlimited) for j in jobs)
        batch.recorder = Recorder(
            lambda items: self.steps.record(batch, items), every=len(jobs) if unpaced else 100
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

    def render(self, facts: Facts) -> Job:
        recipient = Recipient(facts.name.split()[0], facts.language, facts.discreet)
        said = facts.broadcast  # a broadcast's words, as staff wrote them
        if facts.kind is StepKind.STAFF_REPLY:
            # A staff member's words, as written (and checked) in the inbox: SMS only.
            assert facts.text is not None
            return self._sms_job(facts, facts.text, STAFF_REPLY_REF)
        if facts.channel is Channel.SMS:
            if said is not None:
                if said.sms is None:
                    raise ContentError(f"broadcast {said.id} has no text message")
                return self._sms_job(facts, said.sms, said.ref())
            sms = self.renderer.render_sms(
                facts.campaign, facts.step_key, recipient, facts.content_version
            )
            return self._sms_job(facts, sms.body, sms.template_ref)
        assert facts.email is not None
        unsubscribe = self.links.unsubscribe_url(facts.patient_id, facts.id)
        if said is not None:
            if said.subject is None:
                raise ContentError(f"broadcast {said.id} has no email")
            # In the shared layout, with her first name and her unsubscribe link.
            email = self.renderer.render_broadcast_email(
                said.subject, said.paragraphs, recipient, unsubscribe
            )
            category, ref = "broadcast", said.ref(email.template_ref)
        else:
            email = self.renderer.render_email(
                facts.campaign, facts.step_key, recipient, unsubscribe, facts.content_version
            )
            category, ref = f"{facts.campaign}:{facts.step_key}", email.template_ref
        return Job(
            facts,
            OutgoingEmail(
                facts.id, facts.email, email.subject, email.html, email.text, category, unsubscribe
            ),
            outbox.Content(facts.id, email.text, email.subject, ref),
        )

    def _sms_job(self, facts: Facts, body: str, ref: str) -> Job:
        assert facts.phone is not None
        deliver_by = rules.deliver_by(facts, self.clock.now(), self.window)
        return Job(
            facts,
            OutgoingSms(facts.id, facts.phone, body, deliver_by),
            outbox.Content(facts.id, body, None, ref),
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
                log.exception(
                    "message %d got no go-ahead; it goes back to pending",
                    job.id,
                    extra={"event": "sending.message_got_no_go"},
                )
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
                log.exception(
                    "message %d: unexpected error from %s",
                    job.id,
                    sender.name,
                    extra={"event": "sending.message_unexpected_error"},
                )
                verdict = rules.unexpected(
                    job.facts, sender.name, self.clock.now(), self.retry_policy
                )
        _log_outcome(job, verdict)
        batch.recorder.add((job, verdict))
        batch.note(verdict, job.facts, detail)

    def _call(self, job: Job) -> SendReceipt:
        started = time.perf_counter()
        sms = isinstance(job.outgoing, OutgoingSms)
        try:
            if isinstance(job.outgoing, OutgoingSms):
                return self.sms.send_sms(job.outgoing)
            return self.email.send_email(job.outgoing)
        finally:
            provider = self.sms.name if sms else self.email.name
            metrics.PROVIDER_SECONDS.labels(provider, "send").observe(time.perf_counter() - started)


def _worker() -> str:
    """Who holds a lease, for operators: host and process (after any fork)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def _log_outcome(job: Job, verdict: Verdict) -> None:
    if verdict.outcome is Outcome.SENT:
        log.info(
            "message %d sent by %s as %s",
            job.id,
            verdict.provider,
            verdict.provider_id,
            extra={"event": "sending.message_sent"},
        )
    else:
        log.warning(
            "message %d: %s (%s %s)",
            job.id,
            verdict.outcome,
            verdict.reason,
            verdict.error_code,
            extra={"event": "sending.message_not_sent"},
        )
