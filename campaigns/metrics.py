"""What each process counts and times, for Prometheus (prometheus-client).

Labels are bounded: a channel, a provider, an outcome, a route template, an intent; never a
patient, a phone number, a message id or a path (which may hold a token).

Several processes of one container (the web listener's `--workers N`, the Celery pool) count
into one set of files when PROMETHEUS_MULTIPROC_DIR is set: the library's multiprocess mode,
summed by whoever serves the container's metrics (`serve_port`, or the staff listener's
/metrics). Without it (the embedded default, tests) the counts live in this process.

The gauges of the database's state (backlog, lag, heartbeats, open alerts) are not here:
the staff listener reads them at scrape time (campaigns.gauges), so they are right however
many processes run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROCESS_ENV):
    # The library writes its files there from its first metric on; the directory must exist.
    # It is not emptied between runs: every metric here is a counter or histogram, summed
    # over every file, so a restarted process's old counts carry on (never a stale gauge).
    Path(os.environ[MULTIPROCESS_ENV]).mkdir(parents=True, exist_ok=True)

from prometheus_client import (  # noqa: E402 - after the directory exists
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

log = logging.getLogger(__name__)

#: Provider calls take ~50 ms to seconds; a webhook answer a few ms to Twilio's 15 s limit.
_CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_REQUEST_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0)
#: Staff acknowledge a RED alert within minutes; anything past an hour is an incident.
_ACK_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 86400.0)

SENDS = Counter(
    "campaigns_sends",
    "Messages a worker finished with, by channel, provider and outcome.",
    ["channel", "provider", "outcome"],
)
PROVIDER_SECONDS = Histogram(
    "campaigns_provider_request_seconds",
    "Time of each call to a provider's API.",
    ["provider", "operation"],
    buckets=_CALL_BUCKETS,
)
RETRIES = Counter(
    "campaigns_send_retries",
    "Sends put back for another try after a transient provider error.",
    ["channel", "provider"],
)
UNKNOWN_RESULTS = Counter(
    "campaigns_unknown_results",
    "Sends whose call may or may not have reached the provider (to be reconciled).",
    ["channel", "provider"],
)
HTTP_REQUESTS = Counter(
    "campaigns_http_requests",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "campaigns_http_request_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
    buckets=_REQUEST_BUCKETS,
)
REPLIES = Counter(
    "campaigns_replies", "Patients' replies by what they were read as.", ["intent", "tier"]
)
ALERTS_RAISED = Counter("campaigns_alerts_raised", "Staff alerts raised.", ["severity"])
ALERT_ACK_SECONDS = Histogram(
    "campaigns_alert_acknowledge_seconds",
    "Time from an alert being raised to a member of staff acknowledging it.",
    ["severity"],
    buckets=_ACK_BUCKETS,
)
ENROLLMENTS = Counter("campaigns_enrollments", "Patients enrolled, by source.", ["source"])
HORIZON_EXTENDED = Counter(
    "campaigns_horizon_extended", "Enrollments whose written plan was extended."
)
HORIZON_ROWS = Counter("campaigns_horizon_rows", "Sends written by horizon extensions.")
JOB_RUNS = Counter(
    "campaigns_job_runs",
    "Periodic job runs by result (ok, error, or skipped: another run holds the job).",
    ["name", "result"],
)
JOB_SECONDS = Histogram(
    "campaigns_job_seconds", "Time of each periodic job run.", ["name"], buckets=_JOB_BUCKETS
)
BEAT_CLAIMS = Counter(
    "campaigns_beat_claims",
    "Periodic jobs a beat published (claimed) or left to another beat (taken).",
    ["name", "result"],
)


def send_outcome(channel: str, provider: str, outcome: str) -> None:
    SENDS.labels(channel, provider, outcome).inc()
    if outcome == "retry":
        RETRIES.labels(channel, provider).inc()
    elif outcome == "unknown":
        UNKNOWN_RESULTS.labels(channel, provider).inc()


def contract() -> dict[str, str]:
    """Every counter and histogram here, by the name Prometheus sees (a counter's ends in
    _total), with its type."""
    found: dict[str, str] = {}
    for value in globals().values():
        if isinstance(value, Counter | Histogram):
            [family] = value.describe()
            found[family.name + ("_total" if family.type == "counter" else "")] = family.type
    return found


def prime(providers: dict[str, str], routes: tuple[str, ...] = ()) -> None:
    """Create the series alerts watch at 0, so the first failure is an increase (a series
    that first appears at 1 shows none): each channel's outcomes, and each route's 500."""
    for channel, provider in providers.items():
        for outcome in ("sent", "failed", "retry", "unknown", "halted"):
            SENDS.labels(channel, provider, outcome)
        RETRIES.labels(channel, provider)
        UNKNOWN_RESULTS.labels(channel, provider)
    for route in routes:
        HTTP_REQUESTS.labels(route, "POST", "500")


def multiprocess_dir() -> Path | None:
    found = os.environ.get(MULTIPROCESS_ENV)
    return Path(found) if found else None


def process_registry() -> CollectorRegistry:
    """This container's counters: every process's files summed, or this process's own."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def exposition(*extra: Collector) -> bytes:
    """The Prometheus text format of this container's counters, then the `extra` collectors'."""
    text = generate_latest(process_registry())
    if extra:
        registry = CollectorRegistry(auto_describe=False)
        for collector in extra:
            registry.register(collector)
        text += generate_latest(registry)
    return text


def serve_port(port: int | None, host: str = "0.0.0.0") -> None:  # noqa: S104 - see below
    """Serve this container's counters on `port` (worker, beat and public web containers).
    Bound to every interface of the container: compose publishes no metrics port, so only
    the internal network (Prometheus) reaches it."""
    if port is None:
        return
    start_http_server(port, addr=host, registry=process_registry())
    log.info("metrics on port %d", port, extra={"event": "metrics.serving"})
